"""Passkey pages and JSON endpoints (the ceremonies themselves are in idp/mfa/passkeys.py).

    account page   POST /account/passkeys/register/options  JSON -> creation options
                   POST /account/passkeys/register/verify   JSON {credential, name} -> {redirect}
                   POST /account/passkeys/<id>/rename       form -> /account
                   POST /account/passkeys/<id>/remove       form (+ password when it is the last factor)
    sign-in        POST /login/passkey/options               JSON {interaction} -> request options (passwordless)
                   POST /login/passkey                       form {interaction, credential} -> first_factor_passed
                   GET|POST /login/passkey/second-factor     the MFA step's passkey page -> second_factor_passed
                   POST /login/passkey/second-factor/options JSON -> request options for the pending user

JSON endpoints take `application/json` with the page's CSRF token in `X-CSRF-Token` (a cross-site
page can send neither without a CORS preflight), answer JSON errors with a 4xx status, and never
read more than MAX_JSON_BYTES. The ceremonies' verify steps that sign someone in are plain form
POSTs (the script fills in the credential), so the answer can be whatever the login flow
answers: a redirect to consent, to the client, or a form_post page.
"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, make_response, redirect, render_template, request, url_for
from werkzeug.exceptions import RequestEntityTooLarge

from ..errors import Conflict, InvalidCredentials, InvalidInput, NotFound
from ..interaction.account import _account_user, _checked_post, _client_info
from ..interaction.web import check_csrf
from ..jsonsafe import loads_untrusted
from ..protocol.authorize import error_page
from ..services.accounts import RateLimited, check_password_again
from . import passkeys, recovery
from .methods import FactorChangeBusy, enrolled_count, factor_change_lock, register_method
from .notify import notify

bp = Blueprint("passkeys", __name__)

MAX_JSON_BYTES = 64 * 1024  # a registration with a packed attestation chain is a few KB
CODES_TTL = 300  # seconds: the first passkey's recovery codes are shown on the next page within this
NOTICES = {"added": "The passkey was added.", "renamed": "The passkey was renamed.",
           "removed": "The passkey was removed.", "bad_name": "Use a name of 1 to 64 printable characters."}


def init_app(app) -> None:
    from . import passkey_login  # noqa: F401  (its routes are on this blueprint)

    app.register_blueprint(bp)
    app.jinja_env.globals.update(passkey_rows=passkey_rows, passkey_notice=lambda key: NOTICES.get(key or ""),
                                 passkeys_available=lambda: current_rp() is not None)
    register_method("passkey", "Use a passkey", available=lambda user: current_rp() is not None and bool(
        passkeys.count_passkeys(user.id)), endpoint="passkeys.second_factor",
        enrolled=lambda user: passkeys.count_passkeys(user.id), order=10)


def _idp():
    return current_app.extensions["idp"]


def current_rp() -> passkeys.RelyingParty | None:
    try:
        return passkeys.relying_party(_idp().settings.issuer)
    except passkeys.PasskeysUnavailable:
        return None


def passkey_rows(user) -> list[dict]:
    """The account page's list (a Jinja global, so the account view needs no change)."""
    return [{"id": p.id, "name": p.name, "kind": "synced passkey" if p.backup_eligible else "device-bound passkey",
             "created": p.created_at.strftime("%Y-%m-%d"),
             "last_used": p.last_used_at.strftime("%Y-%m-%d %H:%M UTC") if p.last_used_at else "never"}
            for p in passkeys.list_passkeys(user.id)]


# --- JSON plumbing ---------------------------------------------------------------------------------

class JsonRefused(Exception):
    def __init__(self, status: int, error: str, description: str):
        super().__init__(description)
        self.status, self.error, self.description = status, error, description


def json_error(status: int, error: str, description: str):
    response = jsonify(error=error, error_description=description)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def json_body(csrf_purpose: str, csrf_binding: str | None) -> dict:
    """The request's JSON object after the content-type, size and CSRF checks (JsonRefused)."""
    body = read_json()
    check_csrf_header(csrf_purpose, csrf_binding)
    return body


def read_json() -> dict:
    """The JSON object of the body: 415 unless application/json, 413 past MAX_JSON_BYTES,
    400 unless it parses to an object (JsonRefused)."""
    if request.mimetype != "application/json":
        raise JsonRefused(415, "invalid_request", "The body must be application/json.")
    if (request.content_length or 0) > MAX_JSON_BYTES:
        raise JsonRefused(413, "invalid_request", "The body is too large.")
    request.max_content_length = MAX_JSON_BYTES  # also for a chunked body without Content-Length
    try:
        body = loads_untrusted(request.get_data(cache=True), max_bytes=MAX_JSON_BYTES)
    except RequestEntityTooLarge:
        raise JsonRefused(413, "invalid_request", "The body is too large.") from None
    except ValueError:  # not JSON, or nested too deeply (jsonsafe)
        body = None
    if not isinstance(body, dict):
        raise JsonRefused(400, "invalid_request", "The body is not a JSON object.")
    return body


def check_csrf_header(purpose: str, binding: str | None) -> None:
    if not binding or not check_csrf(purpose, binding, request.headers.get("X-CSRF-Token")):
        raise JsonRefused(403, "invalid_request", "The page expired. Reload it and try again.")


def options_response(options_json: str):
    response = current_app.response_class(options_json, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


# --- account page: register, rename, remove ------------------------------------------------------

@bp.post("/account/passkeys/register/options")
def register_options():
    session, user = _account_user()
    if session is None:
        return json_error(401, "login_required", "Sign in again.")
    try:
        json_body("account", session["sid"])
        rp = require_rp()
        return options_response(passkeys.begin_registration(_idp().store, rp, user, session["sid"]))
    except JsonRefused as exc:
        return json_error(exc.status, exc.error, exc.description)
    except Conflict as exc:
        return json_error(409, "too_many_passkeys", str(exc))


@bp.post("/account/passkeys/register/verify")
def register_verify():
    session, user = _account_user()
    if session is None:
        return json_error(401, "login_required", "Sign in again.")
    try:
        body = json_body("account", session["sid"])
        credential, name = body.get("credential"), body.get("name")
        if not isinstance(credential, dict) or not isinstance(name, str | None):
            raise JsonRefused(400, "invalid_request", "Send {credential, name}.")
        row = passkeys.finish_registration(_idp().store, require_rp(), user, session["sid"], credential, name,
                                           attachment_hint=credential.get("authenticatorAttachment"))
    except JsonRefused as exc:
        return json_error(exc.status, exc.error, exc.description)
    except InvalidInput as exc:
        return json_error(400, "invalid_name", str(exc))
    except passkeys.PasskeyRejected as exc:
        return json_error(400, "passkey_rejected", str(exc))
    except Conflict as exc:
        return json_error(409, "already_registered", str(exc))
    _changed(user, "passkey_added", row)
    redirect_to = url_for("account.account", passkey="added")
    if enrolled_count(user) == 1 and recovery.remaining(user.id) == 0:
        # The first factor: recovery codes, made and shown once by the next page (as for TOTP).
        _idp().store.set("passkey-first:" + session["sid"], b"1", CODES_TTL)
        redirect_to = url_for("passkeys.first_recovery_codes")
    return jsonify(id=row.id, name=row.name, redirect=redirect_to)


@bp.get("/account/passkeys/recovery-codes")
def first_recovery_codes():
    """Once, right after the first passkey: the recovery codes (generated here, so that they
    never sit in the store in clear). Taking the flag is atomic: a reload shows the account page."""
    from .views import kek

    session, user = _account_user()
    if session is None:
        return redirect(url_for("account.account_login"))
    if _idp().store.take("passkey-first:" + session["sid"]) is None or recovery.remaining(user.id):
        return redirect(url_for("account.account", passkey="added"))
    response = make_response(render_template("mfa/recovery_codes.html", codes=recovery.generate(kek(), user.id),
                                             first=True))
    response.headers["Cache-Control"] = "no-store"
    return response


def require_rp() -> passkeys.RelyingParty:
    rp = current_rp()
    if rp is None:
        raise JsonRefused(400, "passkeys_unavailable", "Passkeys need the server to have a host name, "
                          "not an IP address, in its issuer URL.")
    return rp


def _posted_passkey(passkey_id: str):
    """(user, passkey, None) for an account-page POST with a valid CSRF token about one of the
    user's passkeys, else (None, None, the error response)."""
    found, refused = _checked_post()
    if refused is not None:
        return None, None, refused
    _, user = found
    try:
        return user, passkeys.get_passkey(user.id, passkey_id), None
    except NotFound:
        return None, None, error_page("not_found", "This passkey does not exist (any more).", 404)


@bp.post("/account/passkeys/<passkey_id>/rename")
def rename(passkey_id: str):
    user, row, refused = _posted_passkey(passkey_id)
    if refused is not None:
        return refused
    try:
        passkeys.rename_passkey(user.id, row.id, request.form.get("name", ""))
    except InvalidInput:
        return redirect(url_for("account.account", passkey="bad_name"))
    _changed(user, "passkey_renamed", row)
    return redirect(url_for("account.account", passkey="renamed"))


@bp.post("/account/passkeys/<passkey_id>/remove")
def remove(passkey_id: str):
    user, row, refused = _posted_passkey(passkey_id)
    if refused is not None:
        return refused
    # The same per-user lock as the TOTP removal (mfa/account_views.py): "is it the last
    # factor?" and the delete do not interleave with another factor's removal, or a TOTP app
    # and a passkey removed at once would each see two factors and skip the password.
    try:
        with factor_change_lock(_idp().store, user.id):
            return _remove(user, row)
    except FactorChangeBusy:
        return error_page("conflict", "Another change to your two-step verification is in progress. "
                          "Reload the page and try again.", 409)


def _remove(user, row):
    try:
        row = passkeys.get_passkey(user.id, row.id)  # again under the lock: a concurrent removal may have won
    except NotFound:
        return error_page("not_found", "This passkey does not exist (any more).", 404)
    last = enrolled_count(user) <= 1  # every kind of factor (TOTP apps and passkeys)
    # Issue 5: removing the last factor needs re-authentication (the password, again).
    if last and (confirm := _reauthenticate(user, row)) is not None:
        return confirm
    passkeys.remove_passkey(user.id, row.id)
    if last:
        recovery.delete_all(user.id)  # without a factor, recovery codes would recover nothing
    _changed(user, "passkey_removed", row, " Two-step verification is now off." if last else "")
    return redirect(url_for("account.account", passkey="removed"))


def _reauthenticate(user, row):
    """None when the form carries the user's password; else the confirmation page."""
    password = request.form.get("password")
    error, status, headers = None, 200, {}
    if password is not None or user.password_hash is None:  # without a password: a recent sign-in
        try:
            check_password_again(_idp().store, user, password or "", event="passkey_removed",
                                 session=_account_user()[0], **_client_info())
            return None
        except RateLimited as exc:
            error, status, headers = "Too many attempts. Try again later.", 429, {"Retry-After": str(exc.retry_after)}
        except InvalidCredentials:
            error, status = "This is not your password.", 401
    token = request.form.get("csrf_token", "")
    return render_template("mfa/passkey_remove.html", passkey=row, csrf_token=token, error=error), status, headers


WHAT = {"passkey_added": 'A passkey named "{}" was added to your account. It can now be used to sign in.',
        "passkey_renamed": 'A passkey of your account was renamed to "{}".',
        "passkey_removed": 'The passkey "{}" was removed from your account. It can no longer be used to sign in.'}


def _changed(user, event: str, row, more: str = "") -> None:
    """Every change: an audit row and a notification mail (sent after the response)."""
    notify(user, event, WHAT[event].format(row.name) + more)
