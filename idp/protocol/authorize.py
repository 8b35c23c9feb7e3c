"""The authorization endpoint (RFC 6749 §4.1.1, OIDC Core §3.1.2).

    /authorize --validate (Authlib: client, exact redirect_uri, response_type, scope, PKCE)
               --check our extras (response_mode, prompt, max_age, claims, acr_values)
               --policy.next_step(): LOGIN | MFA | CONSENT -> store an interaction, show the page
                                     DONE -> issue the code, answer by query or form_post

The login and consent pages call `resume()` with the interaction when their step is done.
Errors before the redirect_uri is trusted render the error page (400); after, they go back
to the client with `error`, `state` and `iss` (RFC 6749 §4.1.2.1, RFC 9207).
"""

from __future__ import annotations

import secrets
import time
from urllib.parse import parse_qsl, urlencode, urlsplit

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import InvalidRequestError
from authlib.oidc.core.errors import ConsentRequiredError, LoginRequiredError
from flask import Blueprint, current_app, make_response, redirect, render_template, request, url_for
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from ..interaction import policy
from ..interaction.web import INTERACTION_COOKIE, clear_cookie, current_session, set_cookie
from ..mfa.flow import mfa_needed
from ..mfa.policy import MFA_ACR, requested_acr
from ..services import sessions
from ..services.consents import granted_scopes
from ..storage.models import User, db
from .claims import parse_claims_parameter
from .discovery import ACR_VALUES
from .params import malformed_reason
from .server import get_server

bp = Blueprint("authorize", __name__)

PROMPTS = {"none", "login", "consent"}


@bp.route("/authorize", methods=["GET", "POST"])
def authorize():
    if request.method == "POST" and request.mimetype != "application/x-www-form-urlencoded":
        return error_page("invalid_request", "The request body must be application/x-www-form-urlencoded.")
    if reason := malformed_reason(request):
        return error_page("invalid_request", reason)
    params = dict((request.form if request.method == "POST" else request.args).items())
    return run(params, interaction_id=None, interaction=None)


def run(params: dict, interaction_id: str | None, interaction: dict | None, session_override=None):
    """Validate the request, then take the next step. `session_override` is a session
    created by this very request (its cookie is not back from the browser yet)."""
    _, session = session_override or current_session()
    user = _session_user(session)
    if user is None:
        session = None
    oauth_request = _as_request(params)
    server = get_server()
    try:
        grant = server.get_consent_grant(request=oauth_request, end_user=user)
        extras = _check_extras(grant, params)
    except OAuth2Error as error:
        error.state = params.get("state")
        return authorization_error(error, params)
    interaction = interaction or {}
    mfa_missing = session is not None and session.get("acr") != MFA_ACR and mfa_needed(
        user, client=grant.client, requested=requested_acr(params, extras["claims"]))
    situation = policy.Situation(
        prompts=extras["prompts"], max_age=extras["max_age"],
        session_auth_time=session["auth_time"] if session else None,
        logged_in_here=bool(interaction.get("logged_in")), consented_here=bool(interaction.get("consented")),
        requested_scopes=frozenset(grant.request.scope.split()),
        granted_scopes=frozenset(granted_scopes(user.id, grant.client.client_id) if user else ()),
        skip_consent=grant.client.skip_consent, now=time.time(), mfa_missing=mfa_missing)
    step = policy.next_step(situation)
    if step != policy.DONE and "none" in extras["prompts"]:
        # A missing second factor is missing authentication: login_required (OIDC Core §3.1.2.6).
        error = ConsentRequiredError() if step == policy.CONSENT else LoginRequiredError()
        error.redirect_uri, error.state = grant.redirect_uri, params.get("state")
        return authorization_error(error, params)
    if step == policy.LOGIN:
        return _start_interaction("interaction.login", params, interaction_id, interaction)
    if step == policy.MFA:  # step-up inside the session (idp/mfa/views.py step_up)
        return _start_interaction("mfa.step_up", params, interaction_id, interaction)
    if step == policy.CONSENT:
        return _start_interaction("interaction.consent", params, interaction_id, interaction)
    grant.authentication = {"auth_time": session["auth_time"], "acr": session["acr"], "amr": session["amr"],
                            "sid": session["sid"], "claims": extras["claims"] or None}
    # Back-Channel Logout 1.0 §2.6: the clients to notify when this session ends.
    sessions.record_client(current_app.extensions["idp"].store, session, grant.client.client_id)
    response = server.create_authorization_response(request=oauth_request, grant_user=user, grant=grant)
    response = _deliver(response, params)
    if interaction_id:
        current_app.extensions["idp"].store.delete("interaction:" + interaction_id)
        clear_cookie(response, INTERACTION_COOKIE)
    return response


def resume(interaction_id: str, interaction: dict, session_override=None):
    if interaction.get("account"):
        # Not an authorization request: "Sign in with NAME" from the account pages
        # (interaction/account.py). Signed in: on to /account, no client, no code.
        current_app.extensions["idp"].store.delete("interaction:" + interaction_id)
        response = redirect(url_for("account.account"))
        clear_cookie(response, INTERACTION_COOKIE)
        return response
    return run(interaction["params"], interaction_id, interaction, session_override)


def deny(interaction_id: str, interaction: dict):
    """The user said no: access_denied back to the client (RFC 6749 §4.1.2.1)."""
    params = interaction["params"]
    oauth_request = _as_request(params)
    server = get_server()
    try:
        grant = server.get_consent_grant(request=oauth_request, end_user=None)
    except OAuth2Error as error:
        error.state = params.get("state")
        return authorization_error(error, params)
    response = _deliver(server.create_authorization_response(request=oauth_request, grant_user=None, grant=grant),
                        params)
    current_app.extensions["idp"].store.delete("interaction:" + interaction_id)
    clear_cookie(response, INTERACTION_COOKIE)
    return response


# --- pieces ---------------------------------------------------------------------------------

def _session_user(session: dict | None) -> User | None:
    if not session:
        return None
    user = db.session.get(User, session["user_id"])
    return user if user is not None and user.active else None


def _as_request(params: dict) -> Request:
    """A request object for Authlib built from the original parameters, so that a resumed
    interaction is validated exactly like the first time (nothing carried through forms)."""
    issuer = current_app.extensions["idp"].settings.issuer
    environ = EnvironBuilder(method="GET", path="/authorize", base_url=issuer, query_string=params).get_environ()
    return Request(environ)


def _check_extras(grant, params: dict) -> dict:
    """What Authlib leaves to us: response_mode, prompt values, max_age, claims, and the
    redirect_uri that OIDC requires in every authentication request."""
    redirect_uri = grant.redirect_uri
    openid = "openid" in grant.request.scope.split()
    if params.get("response_mode") not in (None, "query", "form_post"):
        raise InvalidRequestError("Unsupported response_mode.", redirect_uri=redirect_uri)
    if openid and not params.get("redirect_uri"):
        # OIDC Core §3.1.2.1: REQUIRED. Not redirected: the client did not name a URI.
        raise InvalidRequestError("redirect_uri is required for OpenID Connect requests.")
    if len(params.get("acr_values", "")) > 1000:
        raise InvalidRequestError("acr_values is too long.", redirect_uri=redirect_uri)
    prompts = frozenset(params.get("prompt", "").split())
    if not prompts <= PROMPTS or ("none" in prompts and len(prompts) > 1):
        raise InvalidRequestError("Unsupported or conflicting prompt value.", redirect_uri=redirect_uri)
    max_age = params.get("max_age")
    if max_age is not None:
        if not max_age.isdigit() or len(max_age) > 10:
            raise InvalidRequestError("max_age must be a non-negative integer.", redirect_uri=redirect_uri)
        max_age = int(max_age)
    try:
        claims = parse_claims_parameter(params.get("claims"))
    except InvalidRequestError as error:
        error.redirect_uri = redirect_uri
        raise
    acr = (claims.get("id_token") or {}).get("acr") or {}
    if acr.get("essential") and not set(acr.get("values") or [acr.get("value")]) & set(ACR_VALUES):
        # OIDC Core §5.5.1.1: an essential acr we cannot satisfy fails the authentication.
        raise InvalidRequestError("The requested acr cannot be satisfied.", redirect_uri=redirect_uri)
    return {"prompts": prompts, "max_age": max_age, "claims": claims}


def _start_interaction(endpoint: str, params: dict, interaction_id: str | None, interaction: dict | None):
    idp = current_app.extensions["idp"]
    if not interaction_id:
        interaction_id = secrets.token_urlsafe(24)
        interaction = {"params": params, "created_at": time.time()}
        idp.store.set_json("interaction:" + interaction_id, interaction, idp.settings.interaction_ttl)
    response = redirect(url_for(endpoint, interaction=interaction_id))
    # Binds the interaction to this browser: a link to it opened elsewhere is refused.
    set_cookie(response, INTERACTION_COOKIE, interaction_id, idp.settings.interaction_ttl)
    return response


# Authlib raises these without error_description (e.g. OpenIDCode's prompt=none check);
# the client gets one with every error, like all our other errors.
DEFAULT_DESCRIPTIONS = {
    "login_required": "The end-user must sign in, and prompt=none forbids asking.",
    "consent_required": "The end-user must consent, and prompt=none forbids asking.",
}


def authorization_error(error: OAuth2Error, params: dict):
    if not error.description:
        error.description = DEFAULT_DESCRIPTIONS.get(error.error)
    if not error.redirect_uri:
        return error_page(error.error, error.get_error_description() or "The request is not valid.")
    status, body, headers = error(None)
    response = make_response(body, status, headers)
    return _deliver(response, params, add_issuer=True)


def _deliver(response, params: dict, add_issuer: bool = False):
    """Add `iss` (RFC 9207) where Authlib did not, and turn the redirect into an
    auto-submitted form for response_mode=form_post (OAuth 2.0 Form Post Response Mode)."""
    location = response.headers.get("Location")
    if not location:
        return response
    parts = urlsplit(location)
    query = parse_qsl(parts.query, keep_blank_values=True)
    issuer = current_app.extensions["idp"].settings.issuer
    if add_issuer and not any(k == "iss" for k, _ in query):
        query.append(("iss", issuer))
    if params.get("response_mode") == "form_post":
        target = parts._replace(query="").geturl()
        # The client's own query parameters stay in the action URL; ours go in the form.
        own = set(parse_qsl(urlsplit(params.get("redirect_uri", "")).query, keep_blank_values=True))
        fields = [(k, v) for k, v in query if (k, v) not in own]
        if own:
            target = parts._replace(query=urlencode(sorted(own))).geturl()
        page = make_response(render_template("form_post.html", action=target, fields=fields))
        origin = f"{parts.scheme}://{parts.netloc}"
        # No inline script: the auto-submit is a static file from our own origin.
        page.headers["Content-Security-Policy"] = (
            f"default-src 'none'; script-src 'self'; form-action {origin}; frame-ancestors 'none'; base-uri 'none'")
        page.headers["Cache-Control"] = "no-store"
        return page
    response.headers["Location"] = parts._replace(query=urlencode(query)).geturl()
    return response


def error_page(error: str, description: str, status: int = 400):
    response = make_response(render_template("error.html", error=error, description=description), status)
    response.headers["Cache-Control"] = "no-store"
    return response
