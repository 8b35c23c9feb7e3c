"""Signing in with a passkey: passwordless (first step) and as the second factor.

    passwordless   login page "Sign in with a passkey" --POST /login/passkey/options {interaction}
                   (or {account: 1} on /account/login)--> get() with user verification required
                   --form POST /login/passkey--> flow.first_factor_passed(amr [hwk|swk, mfa])
    second factor  MFA choice page --GET /login/passkey/second-factor--> options for the pending
                   user's passkeys --form POST--> flow.second_factor_passed(amr [hwk|swk]);
                   each assertion is one of the pending login's attempts (counted before the check)

Routes live on the passkeys blueprint (idp/mfa/passkey_views.py). A passkey without user
verification is refused passwordless: possession alone is one factor, and the email+password
page is where one-factor sign-ins begin.
"""

from __future__ import annotations

from flask import current_app, render_template, request

from ..errors import InvalidInput
from ..interaction.account import LOGIN_COOKIE
from ..interaction.web import INTERACTION_COOKIE, allow_form_redirect, check_csrf, csrf_token, get_cookie
from ..protocol.authorize import error_page
from ..protocol.params import malformed_reason
from ..rate_limit import rate_limited
from ..services import audit
from ..storage.models import User, db
from . import flow, passkeys
from .passkey_views import (
    JsonRefused,
    bp,
    check_csrf_header,
    current_rp,
    json_body,
    json_error,
    options_response,
    read_json,
    require_rp,
)
from .policy import MFA_ACR


def _client_info() -> dict:
    return {"ip": request.remote_addr, "user_agent": request.user_agent.string[:512] or None}


def _first_factor_context(fields) -> tuple[str, str, str, dict] | None:
    """(ceremony binding, CSRF purpose, CSRF binding, where to go after) of a passwordless
    sign-in: an OIDC interaction of this browser, or the account page's own sign-in."""
    interaction_id = fields.get("interaction")
    if isinstance(interaction_id, str) and interaction_id:
        if len(interaction_id) > 64 or get_cookie(INTERACTION_COOKIE) != interaction_id:
            return None
        if current_app.extensions["idp"].store.get_json("interaction:" + interaction_id) is None:
            return None
        return "first:" + interaction_id, "login", interaction_id, {"interaction": interaction_id}
    binding = get_cookie(LOGIN_COOKIE)
    if fields.get("account") and binding and len(binding) <= 64:
        return "first-account:" + binding, "account-login", binding, {"endpoint": "account.account"}
    return None


@bp.post("/login/passkey/options")
@rate_limited("login", as_json=True)  # the same budget as the sign-in forms; the script reads JSON
def login_options():
    try:
        context = _first_factor_context(read_json())
        if context is None:
            raise JsonRefused(400, "interaction_expired", "This sign-in expired. Go back to the application.")
        ceremony, purpose, binding, _ = context
        check_csrf_header(purpose, binding)
        return options_response(passkeys.begin_authentication(_store(), require_rp(), ceremony))
    except JsonRefused as exc:
        return json_error(exc.status, exc.error, exc.description)


@bp.post("/login/passkey")
@rate_limited("login")
def login():
    if (reason := malformed_reason(request, form_required=True)) is not None:
        return error_page("invalid_request", reason)
    context = _first_factor_context(request.form)
    if context is None:
        return flow.expired_page()
    ceremony, purpose, binding, then = context
    if not check_csrf(purpose, binding, request.form.get("csrf_token")):
        return error_page("invalid_request", "The form expired. Go back and try again.")
    rp = current_rp()
    if rp is None:
        return error_page("invalid_request", "Passkeys are not available on this server.")
    try:
        assertion = passkeys.finish_authentication(_store(), rp, ceremony,
                                                   passkeys.parse_credential(request.form.get("credential")))
        user = db.session.get(User, assertion.credential.user_id)
        if user is None or not user.active:
            raise passkeys.PasskeyRejected("This account cannot sign in.")
    except (passkeys.PasskeyRejected, InvalidInput) as exc:
        audit.record_event("login", "failure", reason="bad_passkey", **_client_info())
        return _first_factor_page(then, csrf_token(purpose, binding), str(exc), 401)
    if "interaction" in then:
        from ..interaction.accounts import verification_required

        interaction = _store().get_json("interaction:" + then["interaction"]) or {}
        if (unverified := verification_required(then["interaction"], interaction, user)) is not None:
            return unverified
    audit.record_event("login", "success", user_id=user.id, email=user.email, reason="passkey", **_client_info())
    return flow.first_factor_passed(user, amr=assertion.amr, acr=MFA_ACR, then=then)


def _first_factor_page(then: dict, token: str, error: str, status: int):
    interaction_id = then.get("interaction")
    response = current_app.make_response((render_template(
        "mfa/passkey_login.html", mode="first", interaction=interaction_id, error=error, csrf_token=token), status))
    if interaction_id:
        interaction = _store().get_json("interaction:" + interaction_id) or {}
        return allow_form_redirect(response, (interaction.get("params") or {}).get("redirect_uri"))
    return response


# --- second factor ------------------------------------------------------------------------------

@bp.route("/login/passkey/second-factor", methods=["GET", "POST"])
def second_factor():
    if (reason := malformed_reason(request, form_required=True)) is not None:
        return error_page("invalid_request", reason)
    pending_id, pending = flow.load_pending()
    user = db.session.get(User, pending["user_id"]) if pending else None
    rp = current_rp()
    if user is None or rp is None or not passkeys.count_passkeys(user.id):
        return flow.expired_page()
    error, status = None, 200
    if request.method == "POST":
        if not check_csrf("mfa-passkey", pending_id, request.form.get("csrf_token")):
            return error_page("invalid_request", "The form expired. Go back and try again.")
        # Counted before the check, like the codes (idp/mfa/views.py): exact under concurrency.
        left = flow.consume_attempt(pending_id)
        if left < 0:
            return _locked()
        try:
            assertion = passkeys.finish_authentication(_store(), rp, "second:" + pending_id,
                                                       passkeys.parse_credential(request.form.get("credential")),
                                                       user=user)
        except (passkeys.PasskeyRejected, InvalidInput) as exc:
            audit.record_event("mfa", "failure", user_id=user.id, reason="passkey", **_client_info())
            if left == 0:
                flow.cancel(pending_id)
                return _locked()
            error, status = f"{exc} {left} attempt{'s' if left > 1 else ''} left.", 401
        else:
            return flow.second_factor_passed(pending_id, pending, amr=assertion.amr[:1])
    return _second_factor_page(pending, pending_id, error, status)


def _locked():
    return error_page("mfa_locked", "Too many failed attempts. For your security this sign-in was stopped: "
                      "go back to the application and sign in again.", 429)


def _second_factor_page(pending: dict, pending_id: str, error: str | None, status: int):
    then = pending.get("then") or {}
    response = current_app.make_response((render_template(
        "mfa/passkey_login.html", mode="second", error=error, csrf_token=csrf_token("mfa-passkey", pending_id),
        trust_ttl=current_app.extensions["idp"].settings.trusted_browser_ttl), status))
    if "interaction" in then:
        interaction = _store().get_json("interaction:" + then["interaction"]) or {}
        return allow_form_redirect(response, (interaction.get("params") or {}).get("redirect_uri"))
    return response


@bp.post("/login/passkey/second-factor/options")
def second_factor_options():
    pending_id, pending = flow.load_pending()
    user = db.session.get(User, pending["user_id"]) if pending else None
    if user is None:
        return json_error(400, "interaction_expired", "This sign-in expired. Start again.")
    try:
        json_body("mfa-passkey", pending_id)
        return options_response(passkeys.begin_authentication(_store(), require_rp(), "second:" + pending_id,
                                                               user=user))
    except JsonRefused as exc:
        return json_error(exc.status, exc.error, exc.description)


def _store():
    return current_app.extensions["idp"].store
