"""Hosted login and consent pages. Each POST checks the CSRF token and that the interaction
belongs to this browser (the interaction cookie), then resumes /authorize."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template, request

from ..errors import InvalidCredentials
from ..federation.routing import login_redirect
from ..mfa import flow
from ..mfa.policy import PWD_ACR
from ..protocol import authorize
from ..protocol.claims import SCOPE_DESCRIPTIONS
from ..protocol.clients import query_client
from ..protocol.params import malformed_reason
from ..rate_limit import locked_message, rate_limited  # part B: login protection
from ..services import protection
from ..services.consents import grant_consent
from .web import (
    INTERACTION_COOKIE,
    allow_form_redirect,
    check_csrf,
    csrf_token,
    current_session,
    get_cookie,
)

bp = Blueprint("interaction", __name__)


def _load_interaction() -> tuple[str | None, dict | None]:
    interaction_id = (request.form if request.method == "POST" else request.args).get("interaction", "")
    if not interaction_id or len(interaction_id) > 64 or get_cookie(INTERACTION_COOKIE) != interaction_id:
        return None, None
    interaction = current_app.extensions["idp"].store.get_json("interaction:" + interaction_id)
    return (interaction_id, interaction) if interaction else (None, None)


def _expired():
    return authorize.error_page("interaction_expired", "This sign-in request has expired or was opened in "
                                "another browser. Go back to the application and start again.")


def _client_name(interaction: dict) -> str:
    client = query_client(interaction["params"].get("client_id"))
    return client.name if client else "the application"


def _malformed():
    """The protocol endpoints' input checks (repeated, huge, non-UTF-8 or NUL-bearing
    parameters, a body that is not a form) apply to the hosted pages too: 400, not a
    half-read form."""
    reason = malformed_reason(request, form_required=True)
    return authorize.error_page("invalid_request", reason) if reason else None


@bp.route("/login", methods=["GET", "POST"])
@rate_limited("login")  # per-IP limit: 429 + Retry-After
def login():
    if (refused := _malformed()) is not None:
        return refused
    interaction_id, interaction = _load_interaction()
    if not interaction:
        return _expired()
    error = retry_after = None
    email = ""
    if request.method == "POST":
        email = request.form.get("email", "")[:320]
        if not check_csrf("login", interaction_id, request.form.get("csrf_token")):
            return authorize.error_page("invalid_request", "The form expired. Go back and try again.")
        # An email domain routed to a SAML IdP goes there; no password is asked (idp/federation/routing.py).
        if (routed := login_redirect(email, interaction_id)) is not None:
            return routed
        idp = current_app.extensions["idp"]
        try:
            # Lockout with back-off, audit trail, new-device mail (services/protection.py).
            user = protection.login(idp.store, idp.settings, email, request.form.get("password", ""),
                                    ip=request.remote_addr, user_agent=request.user_agent.string or None)
        except protection.AccountLocked as exc:
            error, retry_after = locked_message(exc.retry_after), exc.retry_after
        except InvalidCredentials:
            error = "Invalid email or password."
        else:
            return _logged_in(interaction_id, interaction, user)
    response = current_app.make_response(render_template(
        "login.html", interaction=interaction_id, csrf_token=csrf_token("login", interaction_id),
        client_name=_client_name(interaction), email=email, error=error))
    if error:
        response.status_code = 401
    if retry_after:  # a locked account (services/protection.py)
        response.status_code = 429
        response.headers["Retry-After"] = str(retry_after)
    return allow_form_redirect(response, interaction["params"].get("redirect_uri"))


def _logged_in(interaction_id: str, interaction: dict, user):
    from .accounts import verification_required

    # IDP_REQUIRE_VERIFIED_EMAIL: no session until the email is confirmed (page to resend the mail).
    if (unverified := verification_required(interaction_id, interaction, user)) is not None:
        return unverified
    # The session starts here, or after the second factor (idp/mfa/flow.py).
    return flow.first_factor_passed(user, amr=["pwd"], acr=PWD_ACR, then={"interaction": interaction_id})


@bp.route("/consent", methods=["GET", "POST"])
def consent():
    if (refused := _malformed()) is not None:
        return refused
    interaction_id, interaction = _load_interaction()
    _, session = current_session()
    if not interaction or not session:
        return _expired()
    params = interaction["params"]
    client = query_client(params.get("client_id"))
    if client is None:
        return _expired()
    scope = client.get_allowed_scope(params.get("scope")) or ""
    if request.method == "POST":
        if not check_csrf("consent", interaction_id, request.form.get("csrf_token")):
            return authorize.error_page("invalid_request", "The form expired. Go back and try again.")
        if request.form.get("decision") != "allow":
            return authorize.deny(interaction_id, interaction)
        grant_consent(session["user_id"], client.client_id, set(scope.split()))
        interaction["consented"] = True
        idp = current_app.extensions["idp"]
        idp.store.set_json("interaction:" + interaction_id, interaction, idp.settings.interaction_ttl)
        return authorize.resume(interaction_id, interaction)
    scopes = [(s, SCOPE_DESCRIPTIONS.get(s, s)) for s in scope.split()]
    return allow_form_redirect(current_app.make_response(render_template(
        "consent.html", interaction=interaction_id, csrf_token=csrf_token("consent", interaction_id),
        client_name=client.name, scopes=scopes)), params.get("redirect_uri"))
