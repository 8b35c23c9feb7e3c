"""Account pages: sign-up, email verification, password reset and change, data export and
account deletion. Views parse the form and answer; the rules live in services/accounts.py.

Forms without a login interaction bind their CSRF token to a random per-browser cookie
(`idp_form`, HttpOnly, SameSite=Lax); account pages bind it to the SSO session's `sid`.
Mails go out on a small background pool, so that a request whose email is registered takes
the same time as one whose email is not (no account enumeration by timing).
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait

from flask import Blueprint, current_app, jsonify, make_response, render_template, request, url_for

from ..errors import InvalidCredentials, InvalidInput
from ..protocol.params import malformed_reason
from ..rate_limit import rate_limited
from ..services import account_tokens, accounts
from ..services.accounts import RECENT_SIGN_IN_TTL, RateLimited, ReauthRequired
from ..services.mail import MailError, send_mail
from ..storage.models import User, db
from .web import (
    INTERACTION_COOKIE,
    SESSION_COOKIE,
    check_csrf,
    clear_cookie,
    csrf_token,
    current_session,
    get_cookie,
    set_cookie,
)

logger = logging.getLogger("idp.accounts")
bp = Blueprint("accounts", __name__)

FORM_COOKIE = "idp_form"
RESEND_PER_HOUR = 3        # verification mails a user can ask for again, per hour
RESET_PER_EMAIL_HOUR = 3   # reset mails per email address, per hour


def init_app(app) -> None:
    app.register_blueprint(bp)
    # Raised by check_password_again() on every page that asks for it (here, idp/mfa).
    app.register_error_handler(ReauthRequired, reauth_required)
    from . import account  # part B: /account (profile, sessions), back-channel logout worker
    account.init_app(app)


# --- background mail --------------------------------------------------------------------

_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="idp-mail")
_pending: set[Future] = set()
_pending_lock = threading.Lock()


def in_background(fn, *args) -> None:
    """Run fn(*args) in an app context after the response (errors are logged, never shown)."""
    app = current_app._get_current_object()

    def run():
        with app.app_context():
            try:
                fn(*args)
            except Exception:
                logger.exception("background account job %s failed", getattr(fn, "__name__", fn))

    future = _pool.submit(run)
    with _pending_lock:
        _pending.add(future)
    future.add_done_callback(lambda f: _discard(f))


def _discard(future: Future) -> None:
    with _pending_lock:
        _pending.discard(future)


def drain_background(timeout: float = 10.0) -> None:
    """Wait for queued mails (tests; also handy before a worker exits)."""
    with _pending_lock:
        futures = list(_pending)
    wait(futures, timeout=timeout)


def _deliver(mail: accounts.Mail | None) -> None:
    if mail is None:
        return
    try:
        send_mail(current_app.extensions["idp"].settings, mail.to, mail.template, **mail.context)
    except MailError as exc:
        # Not queued or retried: the user asks again ("Send the link again", "Forgot password?").
        # The error names the relay and its reply, never the link or the SMTP password.
        logger.error("mail %s not delivered: %s", mail.template, exc)


def _send_reset_mail(email: str) -> None:
    _deliver(accounts.reset_mail(current_app.extensions["idp"].settings, email))


# --- helpers -----------------------------------------------------------------------------

def _idp():
    return current_app.extensions["idp"]


def _page(template: str, status: int = 200, **context):
    response = make_response(render_template(template, **context), status)
    response.headers["Cache-Control"] = "no-store"
    return response


def _message(title: str, message: str, status: int = 200, link: tuple[str, str] | None = None):
    return _page("account/message.html", status, title=title, message=message, link=link)


def _refused():
    """Malformed input (the protocol endpoints' checks) or a form whose CSRF token is stale."""
    reason = malformed_reason(request, form_required=True)
    return _message("Something is not right", reason, 400) if reason else None


def _expired_form():
    return _message("The form expired", "Go back, reload the page and try again.", 400)


def _client_info() -> dict:
    return {"ip": request.remote_addr, "user_agent": request.user_agent.string[:512] or None}


def _too_many(exc: RateLimited):
    response = _message("Too many attempts", "Please wait a while and try again.", 429)
    response.headers["Retry-After"] = str(exc.retry_after)
    return response


def reauth_required(exc: ReauthRequired):
    """A user without a password, signed in longer ago than RECENT_SIGN_IN_TTL: sign in again
    (through their SAML connection when they have one), then repeat the change."""
    if exc.connection:
        link = (url_for("account.account_login", connection=exc.connection), f"Sign in with {exc.connection}")
    else:
        link = (url_for("account.account_login", reauth="1"), "Sign in again")
    message = (f"Your account has no password, so this change needs a sign-in from the last "
               f"{RECENT_SIGN_IN_TTL // 60} minutes. Sign in again, then repeat it.")
    if request.is_json or request.accept_mimetypes.best == "application/json":
        response = jsonify(error="login_required", error_description=message, sign_in_uri=link[0])
        response.status_code = 401
        response.headers["Cache-Control"] = "no-store"
        return response
    return _message("Sign in again", message, 401, link=link)


def _form_binding() -> tuple[str, bool]:
    value = get_cookie(FORM_COOKIE)
    if value and 20 <= len(value) <= 64:
        return value, False
    return secrets.token_urlsafe(24), True


def _form_page(template: str, purpose: str, status: int = 200, **context):
    binding, new = _form_binding()
    response = _page(template, status, csrf_token=csrf_token(purpose, binding), **context)
    if new:
        set_cookie(response, FORM_COOKIE, binding, None)
    return response


def _form_csrf_ok(purpose: str) -> bool:
    binding = get_cookie(FORM_COOKIE)
    return bool(binding) and check_csrf(purpose, binding, request.form.get("csrf_token"))


# --- sign-up and verification -------------------------------------------------------------

@bp.route("/signup", methods=["GET", "POST"])
@rate_limited("signup")
def signup():
    if (refused := _refused()) is not None:
        return refused
    form = {"name": request.form.get("name", "")[:400], "email": request.form.get("email", "")[:400]}
    if request.method == "GET":
        return _form_page("signup.html", "signup", form=form, errors={}, min_length=_idp().settings.password_min_length)
    if not _form_csrf_ok("signup"):
        return _expired_form()
    settings = _idp().settings
    email, errors = accounts.check_signup(settings, form["name"], form["email"], request.form.get("password", ""))
    if errors:
        return _form_page("signup.html", "signup", 400, form=form, errors=errors,
                          min_length=settings.password_min_length)
    # The same page whether the email was new or already registered; only the mail differs.
    in_background(_deliver, accounts.sign_up(settings, name=form["name"], email=email,
                                             password=request.form.get("password", "")))
    return _message("Check your email", f"We sent a message to {email}. Follow the link in it to confirm "
                    "your address, then go back to the application and sign in.")


@bp.route("/verify-email", methods=["GET", "POST"])
def verify_email():
    """GET shows a confirm button and changes nothing (mail scanners and link previews open
    links); the POST of that form consumes the single-use link."""
    if (refused := _refused()) is not None:
        return refused
    token = (request.form if request.method == "POST" else request.args).get("token", "")
    if request.method == "POST" and not _form_csrf_ok("verify"):
        return _expired_form()
    if request.method == "GET":
        user = account_tokens.load_token_user(token, account_tokens.VERIFY_EMAIL)
        if user is None:
            return _verify_link_dead()
        return _form_page("account/verify_email.html", "verify", token=token, email=user.email)
    if accounts.verify_email(token) is None:  # used (perhaps by a concurrent POST), expired or unknown
        return _verify_link_dead()
    return _message("Email address confirmed", "Thank you. Go back to the application and sign in.")


def _verify_link_dead():
    return _message("This link does not work", "The confirmation link was already used or has expired. "
                    "Sign in to get a new one.", 400)


def verification_required(interaction_id: str, interaction: dict, user: User):
    """Called by the login page after a correct password: None if the user may go on, else the
    page that asks to confirm the email first (with a form to resend the mail)."""
    settings = _idp().settings
    if user.email_verified or not settings.require_verified_email:
        return None
    interaction["unverified_user_id"] = user.id
    _idp().store.set_json("interaction:" + interaction_id, interaction, settings.interaction_ttl)
    return _verify_page(interaction_id, user.email, sent=False, status=403)


def _verify_page(interaction_id: str, email: str, sent: bool, status: int = 200):
    return _page("account/verify_required.html", status, interaction=interaction_id, email=email, sent=sent,
                 csrf_token=csrf_token("resend", interaction_id))


@bp.route("/verify-email/resend", methods=["POST"])
def resend_verification():
    if (refused := _refused()) is not None:
        return refused
    interaction_id = request.form.get("interaction", "")
    interaction = None
    if interaction_id and len(interaction_id) <= 64 and get_cookie(INTERACTION_COOKIE) == interaction_id:
        interaction = _idp().store.get_json("interaction:" + interaction_id)
    if not interaction or not interaction.get("unverified_user_id"):
        return _message("This sign-in has expired", "Go back to the application and start again.", 400)
    if not check_csrf("resend", interaction_id, request.form.get("csrf_token")):
        return _expired_form()
    user = db.session.get(User, interaction["unverified_user_id"])
    if user is None or not user.active:
        return _message("This sign-in has expired", "Go back to the application and start again.", 400)
    try:
        accounts.check_rate(_idp().store, "resend-verify:" + user.id, RESEND_PER_HOUR, 3600)
    except RateLimited as exc:
        return _too_many(exc)
    if not user.email_verified:
        in_background(_deliver, accounts.verification_mail(_idp().settings, user))
    return _verify_page(interaction_id, user.email, sent=True)


# --- password reset -----------------------------------------------------------------------

@bp.route("/forgot-password", methods=["GET", "POST"])
@rate_limited("reset")
def forgot_password():
    if (refused := _refused()) is not None:
        return refused
    if request.method == "GET":
        return _form_page("account/forgot_password.html", "forgot", email="", error=None)
    if not _form_csrf_ok("forgot"):
        return _expired_form()
    email = request.form.get("email", "").strip().lower()[:320]
    if not email or "@" not in email:
        return _form_page("account/forgot_password.html", "forgot", 400, email=email,
                          error="Enter an email address like name@example.com.")
    try:
        accounts.check_rate(_idp().store, "reset-email:" + email, RESET_PER_EMAIL_HOUR, 3600)
    except RateLimited as exc:
        return _too_many(exc)
    # Per IP (the decorator, IDP_RESET_RATE_LIMIT) and per email address (a mailbox is not
    # flooded). Looking the email up, making the link and sending happen after the response: the answer
    # and its timing are the same for a registered and an unknown address.
    in_background(_send_reset_mail, email)
    return _message("Check your email", "If an account uses this address, we sent it a link to choose a new "
                    "password. The link works once and expires in "
                    f"{_idp().settings.reset_password_ttl // 60} minutes.")


@bp.route("/reset-password", methods=["GET", "POST"])
def reset_password():
    if (refused := _refused()) is not None:
        return refused
    token = (request.form if request.method == "POST" else request.args).get("token", "")
    if request.method == "POST" and not _form_csrf_ok("reset"):
        return _expired_form()
    if account_tokens.load_token_user(token, account_tokens.RESET_PASSWORD) is None:
        return _message("This link does not work", "The reset link was already used or has expired.", 400,
                        link=(url_for("accounts.forgot_password"), "Ask for a new link"))
    if request.method == "GET":
        return _form_page("account/reset_password.html", "reset", token=token, error=None)
    try:
        user, mail = accounts.reset_password(_idp().settings, _idp().store, token, request.form.get("password", ""))
    except InvalidInput as exc:
        return _form_page("account/reset_password.html", "reset", 400, token=token, error=str(exc))
    if user is None:
        return _message("This link does not work", "The reset link was already used or has expired.", 400)
    in_background(_deliver, mail)
    response = _message("Password changed", "Your password was changed and every session was signed out. "
                        "Go back to the application and sign in with the new password.")
    clear_cookie(response, SESSION_COOKIE)
    return response


# --- signed-in account pages ----------------------------------------------------------------

def _signed_in() -> tuple[dict, User] | tuple[None, None]:
    _, session = current_session()
    user = db.session.get(User, session["user_id"]) if session else None
    if user is None or not user.active:
        return None, None
    return session, user


def _not_signed_in():
    link = (url_for("account.account_login"), "Sign in") if "account.account_login" in current_app.view_functions else None
    return _message("You are not signed in", "Sign in first, then come back here.", 401, link=link)


@bp.route("/account/password", methods=["GET", "POST"])
def change_password():
    if (refused := _refused()) is not None:
        return refused
    session, user = _signed_in()
    if user is None:
        return _not_signed_in()
    if (connection := accounts.federated_connection(user)) is not None:
        return _message("Password managed by your organisation",
                        f"Your account signs in through {connection}, so it has no password here: change it "
                        f"with your organisation.", 200 if request.method == "GET" else 400)
    token = csrf_token("password", session["sid"])
    has_password = user.password_hash is not None  # without one, a recent sign-in confirms
    if request.method == "GET":
        return _page("account/change_password.html", csrf_token=token, errors={}, has_password=has_password)
    if not check_csrf("password", session["sid"], request.form.get("csrf_token")):
        return _expired_form()
    idp = _idp()
    try:
        mail = accounts.change_password(idp.settings, idp.store, user, request.form.get("current_password", ""),
                                        request.form.get("password", ""), session=session, **_client_info())
    except RateLimited as exc:
        return _too_many(exc)
    except InvalidCredentials:
        return _page("account/change_password.html", 400, csrf_token=token, has_password=has_password,
                     errors={"current_password": "This is not your current password."})
    except InvalidInput as exc:
        return _page("account/change_password.html", 400, csrf_token=token, has_password=has_password,
                     errors={"password": str(exc)})
    in_background(_deliver, mail)
    return _fresh_session(user, session, _message("Password changed", "Your password was changed. Every other "
                                                  "session was signed out and applications must sign in again."))


def _fresh_session(user: User, old: dict, response):
    """Every session was revoked; this browser proved the password, so it gets a new one."""
    from ..services import sessions

    settings = _idp().settings
    cookie, _ = sessions.create_session(_idp().store, user.id, amr=old.get("amr", ["pwd"]),
                                        acr=old.get("acr", "urn:idp:acr:pwd"),
                                        idle_ttl=settings.session_idle_ttl, absolute_ttl=settings.session_ttl)
    set_cookie(response, SESSION_COOKIE, cookie, settings.session_ttl)
    return response


@bp.route("/account/export")
def export():
    if (refused := _refused()) is not None:
        return refused
    _, user = _signed_in()
    if user is None:
        return _not_signed_in()
    body = json.dumps(accounts.export_user(_idp().store, user), indent=2, ensure_ascii=False, default=str)
    response = make_response(body, 200)
    response.headers["Content-Type"] = "application/json; charset=utf-8"
    response.headers["Content-Disposition"] = 'attachment; filename="my-account.json"'
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/account/delete", methods=["GET", "POST"])
def delete_account():
    if (refused := _refused()) is not None:
        return refused
    session, user = _signed_in()
    if user is None:
        return _not_signed_in()
    token = csrf_token("delete", session["sid"])
    if request.method == "GET":
        return _page("account/delete.html", csrf_token=token, error=None, has_password=user.password_hash is not None)
    if not check_csrf("delete", session["sid"], request.form.get("csrf_token")):
        return _expired_form()
    idp = _idp()
    try:
        mail = accounts.delete_account(idp.settings, idp.store, user, request.form.get("password", ""),
                                       session=session, **_client_info())
    except RateLimited as exc:
        return _too_many(exc)
    except InvalidCredentials:
        return _page("account/delete.html", 400, csrf_token=token, error="This is not your password.",
                     has_password=True)
    in_background(_deliver, mail)
    response = _message("Account deleted", "Your account and its data were deleted, and every application's "
                        "access was revoked.")
    clear_cookie(response, SESSION_COOKIE)
    return response

