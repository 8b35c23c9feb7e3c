"""RP-Initiated Logout 1.0 (end_session_endpoint).

GET or POST /logout with id_token_hint, client_id, post_logout_redirect_uri, state: the
request is validated and kept in the store, the user confirms (a form bound to the session
by its CSRF token), the SSO session ends, and the browser goes back to the client only if
the post_logout_redirect_uri exactly matches one the client registered (§3, §2.1)."""

from __future__ import annotations

import secrets
from urllib.parse import urlencode, urlsplit

from flask import Blueprint, current_app, redirect, render_template, request
from joserfc import jwt

from .. import federation
from ..interaction.web import (
    SESSION_COOKIE,
    allow_form_redirect,
    check_csrf,
    clear_cookie,
    csrf_token,
    current_session,
    get_cookie,
)
from ..services import sessions
from .authorize import error_page
from .clients import query_client
from .params import malformed_reason

bp = Blueprint("logout", __name__)

LOGOUT_TTL = 600


def _hint_claims(id_token_hint: str | None) -> dict | None:
    """Claims of an ID token we issued; expired ones are fine as a hint (§2)."""
    if not id_token_hint or len(id_token_hint) > 8192:
        return None
    idp = current_app.extensions["idp"]
    try:
        token = jwt.decode(id_token_hint, idp.keyring.public_keys(), algorithms=["RS256"])
    except Exception:
        return None
    # The same keys sign access tokens (typ at+jwt, RFC 9068 §2.1): only ID tokens
    # (typ JWT, tokens.sign_jwt's default) are hints.
    if token.header.get("typ") != "JWT":
        return None
    claims = token.claims
    return claims if claims.get("iss") == idp.settings.issuer else None


@bp.route("/logout", methods=["GET", "POST"])
def logout():
    # First, and for the confirmation form too: a POST must be a well-formed form body
    # (a JSON or empty body would otherwise read as a logout request without parameters).
    if reason := malformed_reason(request, form_required=True):
        return error_page("invalid_request", reason)
    if request.method == "POST" and "logout_id" in request.form:
        return confirm()
    params = request.form if request.method == "POST" else request.args
    hint = params.get("id_token_hint")
    claims = _hint_claims(hint)
    if hint and claims is None:
        return error_page("invalid_request", "The id_token_hint is not an ID token issued here.")
    client_id = params.get("client_id")
    audience = claims.get("aud") if claims else None
    audiences = audience if isinstance(audience, list) else [audience] if audience else []
    if client_id and audiences and client_id not in audiences:
        return error_page("invalid_request", "client_id does not match the id_token_hint.")
    client = query_client(client_id or (audiences[0] if len(audiences) == 1 else None))
    target = None
    uri = params.get("post_logout_redirect_uri")
    if uri and client and client.check_post_logout_redirect_uri(uri):
        target = uri
        if params.get("state"):
            parts = urlsplit(uri)
            query = (parts.query + "&" if parts.query else "") + urlencode({"state": params["state"]})
            target = parts._replace(query=query).geturl()
    idp = current_app.extensions["idp"]
    logout_id = secrets.token_urlsafe(24)
    idp.store.set_json("logout:" + logout_id, {"target": target}, LOGOUT_TTL)
    page = current_app.make_response(render_template(
        "logout.html", logout_id=logout_id, client_name=client.name if client else None,
        csrf_token=csrf_token("logout", logout_id + (get_cookie(SESSION_COOKIE) or ""))))
    # The confirmation POST ends in a redirect to the client: CSP form-action must allow it.
    return allow_form_redirect(page, target)


def confirm():
    idp = current_app.extensions["idp"]
    logout_id = request.form.get("logout_id", "")[:64]
    cookie = get_cookie(SESSION_COOKIE)
    if not check_csrf("logout", logout_id + (cookie or ""), request.form.get("csrf_token")):
        return error_page("invalid_request", "The logout form expired. Try again from the application.")
    pending = idp.store.take_json("logout:" + logout_id)
    if pending is None:
        return error_page("invalid_request", "The logout request expired. Try again from the application.")
    upstream = None
    if request.form.get("logout") == "yes":
        _, session = current_session()
        if session:
            sessions.end_session(idp.store, cookie)
            # A session from a SAML IdP with single logout: tell the IdP too, then on to the target.
            upstream = federation.upstream_logout(session, pending["target"])
    response = upstream or (redirect(pending["target"]) if pending["target"] else current_app.make_response(
        render_template("logged_out.html")))
    if request.form.get("logout") == "yes":
        clear_cookie(response, SESSION_COOKIE)
    return response
