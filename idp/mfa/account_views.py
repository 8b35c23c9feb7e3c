"""Two-step verification on the account side: enrol an authenticator app, rename or remove
factors, regenerate recovery codes, forget trusted browsers.

    /account/mfa                       factors, recovery codes left, trusted browsers
    /account/mfa/totp (GET, POST)      QR code + secret; the factor is stored after a valid code;
                                       the first factor also makes 10 recovery codes (shown once)
    /account/mfa/totp/<id>/rename      POST label
    /account/mfa/totp/<id>/remove      POST; the last factor needs the password again
    /account/mfa/recovery-codes        POST: 10 new codes, the old ones die
    /account/mfa/trusted-browsers/forget  POST

Every POST checks a CSRF token bound to the session's sid; every change is mailed and audited
(notify.py).
"""

from __future__ import annotations

from flask import Blueprint, current_app, make_response, redirect, render_template, request, url_for

from ..errors import InvalidCredentials
from ..interaction.web import check_csrf, csrf_token, current_session
from ..protocol.authorize import error_page
from ..protocol.params import malformed_reason
from ..services.accounts import RateLimited, check_password_again
from ..storage.mfa_models import TotpFactor
from ..storage.models import User, db
from . import recovery, totp, trusted
from .methods import FactorChangeBusy, enrolled_count, factor_change_lock
from .notify import notify
from .views import kek

bp = Blueprint("mfa_account", __name__)

NOTICES = {"renamed": "The authenticator app was renamed.", "removed": "The authenticator app was removed.",
           "forgotten": "Every trusted browser must pass two-step verification again."}


def _idp():
    return current_app.extensions["idp"]


def _signed_in():
    """(session, user) of the account page, or a response (sign in first / bad form)."""
    reason = malformed_reason(request, form_required=request.method == "POST")
    if reason:
        return None, None, error_page("invalid_request", reason)
    _, session = current_session()
    user = db.session.get(User, session["user_id"]) if session else None
    if user is None or not user.active:
        return None, None, redirect(url_for("account.account_login"))
    if request.method == "POST" and not check_csrf("mfa-account", session["sid"], request.form.get("csrf_token")):
        return None, None, error_page("invalid_request", "The form expired. Reload the page and try again.")
    return session, user, None


def _page(template: str, status: int = 200, **context):
    response = make_response(render_template(template, **context), status)
    response.headers["Cache-Control"] = "no-store"  # secrets and recovery codes
    return response


def summary(user: User) -> dict:
    """What the account page shows about two-step verification."""
    from .passkeys import count_passkeys

    return {"factors": totp.list_factors(user.id), "passkeys": count_passkeys(user.id),
            "recovery_left": recovery.remaining(user.id), "trusted_browsers": len(trusted.list_trusted(user.id))}


@bp.get("/account/mfa")
def manage():
    session, user, refused = _signed_in()
    if refused is not None:
        return refused
    return _page("mfa/manage.html", user=user, csrf_token=csrf_token("mfa-account", session["sid"]),
                 notice=NOTICES.get(request.args.get("done", "")), **summary(user))


@bp.route("/account/mfa/totp", methods=["GET", "POST"])
def enrol_totp():
    session, user, refused = _signed_in()
    if refused is not None:
        return refused
    store, key = _idp().store, kek()
    error, status, label = None, 200, "Authenticator app"
    if request.method == "POST":
        label = " ".join(request.form.get("label", "").split())[:100] or label
        factor = totp.finish_enrolment(key, store, session["sid"], user.id, request.form.get("code"), label)
        if factor is not None:
            first = enrolled_count(user) == 1 and recovery.remaining(user.id) == 0
            notify(user, "mfa_enrol", f"An authenticator app ({label}) was added to your account.")
            if first:  # the first factor: recovery codes, shown once
                return _page("mfa/recovery_codes.html", codes=recovery.generate(key, user.id), first=True)
            return redirect(url_for("mfa_account.manage"))
        error, status = "That code is not right. Check the time on your phone and try the next code.", 400
    secret = totp.enrolment_secret(key, store, session["sid"]) if request.method == "POST" else None
    secret = secret or totp.start_enrolment(key, store, session["sid"])
    uri = totp.provisioning_uri(secret, user.email, _issuer_name())
    return _page("mfa/enrol_totp.html", status, qr=totp.qr_svg(uri), secret=secret, label=label, error=error,
                 csrf_token=csrf_token("mfa-account", session["sid"]))


def _issuer_name() -> str:
    from urllib.parse import urlsplit

    return urlsplit(_idp().settings.issuer).hostname or "idp"


def _own_factor(user: User, factor_id: str) -> TotpFactor | None:
    factor = db.session.get(TotpFactor, factor_id[:64])
    return factor if factor is not None and factor.user_id == user.id else None


@bp.post("/account/mfa/totp/<factor_id>/rename")
def rename_totp(factor_id: str):
    _, user, refused = _signed_in()
    if refused is not None:
        return refused
    factor = _own_factor(user, factor_id)
    label = " ".join(request.form.get("label", "").split())[:100]
    if factor is None or not label:
        return error_page("invalid_request", "Unknown authenticator app, or an empty name.")
    old, factor.label = factor.label, label
    db.session.commit()
    notify(user, "mfa_rename", f"The authenticator app {old} was renamed to {label}.")
    return redirect(url_for("mfa_account.manage", done="renamed"))


@bp.post("/account/mfa/totp/<factor_id>/remove")
def remove_totp(factor_id: str):
    session, user, refused = _signed_in()
    if refused is not None:
        return refused
    try:
        with factor_change_lock(_idp().store, user.id):
            return _remove_totp(session, user, factor_id)
    except FactorChangeBusy:
        return error_page("conflict", "Another change to your two-step verification is in progress. "
                          "Reload the page and try again.", 409)


def _remove_totp(session: dict, user: User, factor_id: str):
    factor = _own_factor(user, factor_id)
    if factor is None:
        return error_page("invalid_request", "Unknown authenticator app.", 404)
    last = enrolled_count(user) <= 1
    if last and (refused := _reauthenticate(session, user)) is not None:
        return refused
    label = factor.label
    db.session.delete(factor)
    db.session.commit()
    if last:
        recovery.delete_all(user.id)  # without a factor, recovery codes would recover nothing
    notify(user, "mfa_remove", f"The authenticator app {label} was removed from your account."
           + (" Two-step verification is now off." if last else ""))
    return redirect(url_for("mfa_account.manage", done="removed"))


def _reauthenticate(session: dict, user: User):
    """Turning two-step verification off: the password again, within the one re-authentication
    budget every sensitive account change shares (services/accounts.py), so that a stolen
    session is no password oracle. None when it is right."""
    error, status, headers = "Enter your password to remove your last second factor.", 400, {}
    try:
        check_password_again(_idp().store, user, request.form.get("password", ""), event="mfa_remove",
                             session=session, ip=request.remote_addr, user_agent=request.user_agent.string or None)
        return None
    except RateLimited as exc:
        error, status, headers = "Too many attempts. Try again later.", 429, {"Retry-After": str(exc.retry_after)}
    except InvalidCredentials:
        pass
    response = _page("mfa/manage.html", status, user=user, csrf_token=csrf_token("mfa-account", session["sid"]),
                     error=error, **summary(user))
    response.headers.update(headers)
    return response


@bp.post("/account/mfa/recovery-codes")
def regenerate_codes():
    _, user, refused = _signed_in()
    if refused is not None:
        return refused
    if enrolled_count(user) == 0:
        return error_page("invalid_request", "Add an authenticator app or a passkey first.")
    codes = recovery.generate(kek(), user.id)
    notify(user, "mfa_recovery_codes", "New recovery codes were made; the old ones no longer work.")
    return _page("mfa/recovery_codes.html", codes=codes, first=False)


@bp.post("/account/mfa/trusted-browsers/forget")
def forget_browsers():
    _, user, refused = _signed_in()
    if refused is not None:
        return refused
    trusted.revoke_all(user.id)
    notify(user, "mfa_untrust", "Every browser you trusted must pass two-step verification again.")
    return redirect(url_for("mfa_account.manage", done="forgotten"))
