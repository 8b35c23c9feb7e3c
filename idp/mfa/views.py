"""The MFA step's pages (login side): choose a method, then type a code.

    /login/mfa/step-up?interaction=X   /authorize found the session's acr too low (step-up)
    /login/mfa                          the methods this user can use (idp/mfa/methods.py)
    /login/mfa/totp | /recovery | /email  one form each; POST checks the code

Every POST checks the CSRF token (bound to the pending login) and counts one attempt before
the code is checked (flow.consume_attempt: 5 per pending login, exact under concurrency).
"""

from __future__ import annotations

from flask import Blueprint, current_app, redirect, render_template, request, url_for

from ..interaction.web import (
    INTERACTION_COOKIE,
    allow_form_redirect,
    check_csrf,
    csrf_token,
    current_session,
    get_cookie,
)
from ..protocol.authorize import error_page
from ..protocol.params import malformed_reason
from ..rate_limit import too_many_requests
from ..services import audit
from ..settings import decode_kek
from ..storage.models import User, db
from . import email_codes, flow, recovery, totp
from .methods import available_methods, enrolled_count, register_method

bp = Blueprint("mfa", __name__)


def _idp():
    return current_app.extensions["idp"]


def kek() -> bytes:
    return decode_kek(_idp().settings.key_encryption_key)


def email_code_available(user: User) -> bool:
    return user.email_verified and enrolled_count(user) == 0


register_method("totp", "Use your authenticator app", available=lambda u: totp.count_factors(u.id) > 0,
                endpoint="mfa.totp_code", enrolled=lambda u: totp.count_factors(u.id), order=10)
# Only for users who enrolled no factor (their way to meet a client's or role's requirement):
# for the others it would let whoever reads the mailbox, which can also reset the password,
# past the authenticator app or passkey.
register_method("email", "Email me a code", available=email_code_available, endpoint="mfa.email_code", order=80)
register_method("recovery", "Use a recovery code", available=lambda u: recovery.remaining(u.id) > 0,
                endpoint="mfa.recovery_code", order=90)


def _refused():
    reason = malformed_reason(request, form_required=request.method == "POST")
    return error_page("invalid_request", reason) if reason else None


def _pending_user():
    pending_id, pending = flow.load_pending()
    user = db.session.get(User, pending["user_id"]) if pending else None
    if user is None or not user.active:
        return None, None, None
    return pending_id, pending, user


def _page(template: str, pending: dict, status: int = 200, **context):
    """A page whose form may end in a redirect to the client (CSP form-action)."""
    response = current_app.make_response((render_template(template, **context), status))
    interaction_id = pending["then"].get("interaction")
    if interaction_id:
        interaction = _idp().store.get_json("interaction:" + interaction_id) or {}
        response = allow_form_redirect(response, (interaction.get("params") or {}).get("redirect_uri"))
    response.headers["Cache-Control"] = "no-store"
    return response


def _locked():
    return error_page("mfa_locked", "Too many wrong codes. For your security this sign-in was stopped: "
                      "go back to the application and sign in again (after several stopped sign-ins, "
                      "wait 15 minutes).", 429)


@bp.get("/login/mfa/step-up")
def step_up():
    """The session is valid but the request needs a second factor (acr_values, client, role)."""
    if (refused := _refused()) is not None:
        return refused
    interaction_id = request.args.get("interaction", "")
    _, session = current_session()
    if not interaction_id or len(interaction_id) > 64 or get_cookie(INTERACTION_COOKIE) != interaction_id \
            or session is None or not _idp().store.get_json("interaction:" + interaction_id):
        return flow.expired_page()
    user = db.session.get(User, session["user_id"])
    if user is None or not user.active:
        return flow.expired_page()
    return flow.start_step_up(user, session, then={"interaction": interaction_id})


@bp.get("/login/mfa")
def choose():
    if (refused := _refused()) is not None:
        return refused
    _, pending, user = _pending_user()
    if pending is None:
        return flow.expired_page()
    choices = available_methods(user)
    if not choices:
        return error_page("mfa_unavailable", "This sign-in needs a second factor, and your account has none it "
                          "can use. Confirm your email address or ask your administrator.", 403)
    if len(choices) == 1:
        return redirect(url_for(choices[0].endpoint))
    return _page("mfa/choose.html", pending, choices=[(m.label, url_for(m.endpoint)) for m in choices])


def _code_form(method: str, pending_id: str, pending: dict, status: int = 200, error: str | None = None, **extra):
    return _page("mfa/code.html", pending, status, method=method, error=error,
                 csrf_token=csrf_token("mfa", pending_id), action=url_for(request.endpoint),
                 trust_days=_idp().settings.trusted_browser_ttl // 86400, **extra)


def _verify(method: str, check, amr: list[str], **extra):
    """GET: the form. POST: CSRF, one attempt counted, then `check(user, code) -> bool`."""
    if (refused := _refused()) is not None:
        return refused
    pending_id, pending, user = _pending_user()
    if pending is None:
        return flow.expired_page()
    if request.method == "GET":
        return _code_form(method, pending_id, pending, **extra)
    if not check_csrf("mfa", pending_id, request.form.get("csrf_token")):
        return error_page("invalid_request", "The form expired. Go back and try again.")
    left = flow.consume_attempt(pending_id)
    if left < 0:
        return _locked()
    if check(user, request.form.get("code", "")[:64]):
        return flow.second_factor_passed(pending_id, pending, amr=amr)
    audit.record_event("mfa", "failure", user_id=user.id, reason=method, ip=request.remote_addr,
                       user_agent=request.user_agent.string or None)
    if left == 0:
        flow.cancel(pending_id)
        return _locked()
    error = f"That code is not right. {left} attempt{'s' if left > 1 else ''} left."
    return _code_form(method, pending_id, pending, 401, error=error, **extra)


@bp.route("/login/mfa/totp", methods=["GET", "POST"])
def totp_code():
    # RFC 8176 §2: "otp" (one-time password), for TOTP, recovery and email codes alike.
    return _verify("totp", lambda user, code: totp.verify(kek(), _idp().store, user.id, code) is not None, ["otp"])


@bp.route("/login/mfa/recovery", methods=["GET", "POST"])
def recovery_code():
    def check(user, code):
        if not recovery.consume(kek(), user.id, code):
            return False
        from .notify import notify

        notify(user, "recovery_code_used", "A recovery code was used to sign in.",
               remaining=recovery.remaining(user.id))
        return True

    return _verify("recovery", check, ["otp"])


@bp.route("/login/mfa/email", methods=["GET", "POST"])
def email_code():
    pending_id, pending, user = _pending_user()
    if pending is not None and request.method == "POST" and request.form.get("action") == "send":
        return _send_email_code(pending_id, pending, user)
    sent = pending is not None and email_codes.sent(_idp().store, pending_id)
    return _verify("email", lambda user, code: email_code_available(user) and email_codes.check(
                       _idp().store, current_app.config["SECRET_KEY"], pending_id, code),
                   ["otp"], sent=sent, email=user.email if user else "")


def _send_email_code(pending_id: str, pending: dict, user: User):
    if (refused := _refused()) is not None:
        return refused
    if not check_csrf("mfa", pending_id, request.form.get("csrf_token")):
        return error_page("invalid_request", "The form expired. Go back and try again.")
    if not email_code_available(user):
        return error_page("mfa_unavailable", "Use your authenticator app, passkey or a recovery code.", 403)
    try:
        code = email_codes.issue(_idp().store, current_app.config["SECRET_KEY"], pending_id, user.id)
    except email_codes.RateLimited as exc:
        return too_many_requests(exc.retry_after, message=f"A code was sent recently. Wait {exc.retry_after} "
                                 "seconds before asking for another one.")
    from .notify import send_now

    send_now(user, "mfa_email_code", code=code, minutes=email_codes.TTL // 60)
    return redirect(url_for("mfa.email_code"), code=303)
