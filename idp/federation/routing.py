"""Email-domain routing: an email whose domain an operator gave to a connection
(`idp saml add/update --email-domain`) goes straight to that IdP from the login page.

Only the domain decides, never whether an account exists, so the login page still tells
nothing about which emails have accounts. Reads the model only: python3-saml stays unloaded.
"""

from __future__ import annotations

from sqlalchemy import select

from ..storage.federation_models import SamlConnection
from ..storage.models import db


def connection_name_for_email(email: str | None) -> str | None:
    """The connection that serves this email's domain, or None."""
    local, at, domain = (email or "").strip().rpartition("@")
    domain = domain.lower().rstrip(".")
    if not (local and at and domain) or len(domain) > 253:
        return None
    for name, domains in db.session.execute(select(SamlConnection.name, SamlConnection.email_domains)):
        if domain in (domains or ()):
            return name
    return None


def login_redirect(email: str | None, interaction_id: str):
    """When the domain is routed: a page that moves on to /saml/NAME/login for this interaction
    (the same start, and so the same RelayState binding, as the "Sign in with NAME" button);
    else None. Not a 303: CSP form-action also governs the redirects after a form POST
    (CSP Level 3 §6.3.1), so the IdP's origin would be blocked; a Refresh is a navigation of
    its own, and the link is there for browsers that ignore it."""
    from flask import url_for

    name = connection_name_for_email(email)
    if name is None:
        return None
    return continue_page(url_for("saml.login", name=name, interaction=interaction_id),
                         f"Continue to {name}", f"Your organisation signs you in with {name}.")


def continue_page(target: str, heading: str, message: str):
    """A page that moves on to `target` at once (Refresh) after a form POST, with a link."""
    from flask import make_response, render_template

    response = make_response(render_template("saml/continue.html", heading=heading, message=message, target=target))
    response.headers["Refresh"] = f"0; url={target}"
    response.headers["Cache-Control"] = "no-store"
    return response
