"""The account page: profile, active sessions ("end this session", "log out everywhere"), and
a plain sign-in for it that needs no OIDC interaction.

    /account/login  --password (protection.login: rate limit, lockout, audit)--> [MFA step, idp/mfa]
                    --> SSO session --> /account
    /account/login?connection=NAME --> /saml/NAME/login (an interaction that ends at /account)
    /account        profile form, session list; forms POST back here (CSRF bound to the session's sid)

Every POST checks a CSRF token: on /account/login one bound to a random pre-login cookie of
this browser, on the other forms one bound to the session's sid.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from flask import Blueprint, current_app, make_response, redirect, render_template, request, url_for

from .. import federation
from ..errors import InvalidCredentials
from ..mfa import flow
from ..mfa.account_views import summary as mfa_summary
from ..mfa.policy import PWD_ACR
from ..protocol.authorize import error_page
from ..protocol.params import malformed_reason
from ..rate_limit import locked_message, rate_limited
from ..services import audit, backchannel, protection, sessions, tokens
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

bp = Blueprint("account", __name__)

LOGIN_COOKIE = "idp_account_login"
NOTICES = {"profile": "Your profile was saved.", "ended": "The session was ended.",
           "everywhere": "You were signed out everywhere.", "signed_out": "You are signed out."}


def init_app(app) -> None:
    app.register_blueprint(bp)
    # Back-channel logout deliveries: this process's delivery thread (idp/services/backchannel.py).
    app.before_request(lambda: backchannel.ensure_worker(app))


def _idp():
    return current_app.extensions["idp"]


def _client_info() -> dict:
    return {"ip": request.remote_addr, "user_agent": request.user_agent.string[:512] or None}


def _refused():
    """The protocol endpoints' malformed-input checks apply here too: 400, never a 500."""
    reason = malformed_reason(request, form_required=request.method == "POST")
    return error_page("invalid_request", reason) if reason else None


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


@bp.route("/account/login", methods=["GET", "POST"])
@rate_limited("login")
def account_login():
    if (refused := _refused()) is not None:
        return refused
    if request.method == "GET" and request.args.get("connection"):
        return _saml_sign_in(request.args["connection"][:64])
    # ?reauth=1: sign in again although signed in (a recent sign-in confirms a change of an
    # account without a password, services.accounts.check_password_again).
    if current_session()[1] and request.method == "GET" and not request.args.get("reauth"):
        return redirect(url_for("account.account"))
    binding = get_cookie(LOGIN_COOKIE)
    error, status, retry_after, email = None, 200, None, ""
    if request.method == "POST":
        email = request.form.get("email", "")[:320]
        if not binding or not check_csrf("account-login", binding, request.form.get("csrf_token")):
            return error_page("invalid_request", "The form expired. Reload the page and try again.")
        try:
            user = protection.login(_idp().store, _idp().settings, email, request.form.get("password", ""),
                                    **_client_info())
        except protection.AccountLocked as exc:
            error, status, retry_after = locked_message(exc.retry_after), 429, exc.retry_after
        except InvalidCredentials:
            error, status = "Invalid email or password.", 401
        else:
            return _signed_in(user)
    binding = binding or secrets.token_urlsafe(24)
    response = make_response(render_template(
        "account_login.html", csrf_token=csrf_token("account-login", binding), email=email, error=error,
        notice=NOTICES.get(request.args.get("done", ""))), status)
    if retry_after:
        response.headers["Retry-After"] = str(retry_after)
    set_cookie(response, LOGIN_COOKIE, binding, 3600)
    return response


def _saml_sign_in(name: str):
    """"Sign in with NAME" for the account pages: /saml/NAME/login needs an interaction bound
    to this browser, so make one that is no authorization request; after the IdP (and any
    second factor) protocol/authorize.resume() sends it on to /account."""
    idp = _idp()
    interaction_id = secrets.token_urlsafe(24)
    idp.store.set_json("interaction:" + interaction_id, {"account": True, "params": {}}, idp.settings.interaction_ttl)
    response = redirect(url_for("saml.login", name=name, interaction=interaction_id))
    set_cookie(response, INTERACTION_COOKIE, interaction_id, idp.settings.interaction_ttl)
    return response


def _signed_in(user: User):
    # The session starts here, or after the second factor (idp/mfa/flow.py).
    response = flow.first_factor_passed(user, amr=["pwd"], acr=PWD_ACR, then={"endpoint": "account.account"})
    clear_cookie(response, LOGIN_COOKIE)
    return response


def _account_user():
    _, session = current_session()
    user = db.session.get(User, session["user_id"]) if session else None
    return (session, user) if user is not None and user.active else (None, None)


@bp.get("/account")
def account():
    if (refused := _refused()) is not None:
        return refused
    session, user = _account_user()
    if session is None:
        return redirect(url_for("account.account_login"))
    rows = [{"sid": s["sid"], "device": audit.describe_device(s.get("user_agent")), "ip": s.get("ip") or "unknown",
             "created": _when(s["created_at"]), "last_seen": _when(s["last_seen"]),
             "current": s["sid"] == session["sid"]}
            for s in sessions.list_sessions(_idp().store, user.id)]
    return render_template("account.html", user=user, sessions=rows, csrf_token=csrf_token("account", session["sid"]),
                           notice=NOTICES.get(request.args.get("done", "")), mfa=mfa_summary(user))


def _checked_post():
    """(session, user) for a POST with a valid CSRF token, else an error response."""
    if (refused := _refused()) is not None:
        return None, refused
    session, user = _account_user()
    if session is None:
        return None, redirect(url_for("account.account_login"))
    if not check_csrf("account", session["sid"], request.form.get("csrf_token")):
        return None, error_page("invalid_request", "The form expired. Reload the page and try again.")
    return (session, user), None


@bp.post("/account/profile")
def profile():
    found, refused = _checked_post()
    if refused is not None:
        return refused
    _, user = found
    name = " ".join(request.form.get("name", "").split())[:200]
    user.name = name or None
    db.session.commit()
    return redirect(url_for("account.account", done="profile"))


@bp.post("/account/sessions/end")
def end_session():
    found, refused = _checked_post()
    if refused is not None:
        return refused
    session, user = found
    sid = request.form.get("sid", "")[:64]
    ended = sessions.end_session_by_sid(_idp().store, user.id, sid)
    if ended is not None:
        audit.record_event("logout", "success", user_id=user.id, reason="account_page", **_client_info())
    then = url_for("account.account_login", done="signed_out") if sid == session["sid"] else \
        url_for("account.account", done="ended")
    # This browser's session from a SAML IdP with single logout: the IdP is told too
    # (idp/federation/slo_views.py). Not for another device's session: the redirect binding
    # goes through the browser that holds the IdP session, and this one does not.
    upstream = federation.upstream_logout(ended, then) if sid == session["sid"] else None
    response = upstream or redirect(then)
    if sid == session["sid"]:
        clear_cookie(response, SESSION_COOKIE)
    return response


@bp.post("/account/logout-everywhere")
def logout_everywhere():
    found, refused = _checked_post()
    if refused is not None:
        return refused
    session, user = found
    idp = _idp()
    sessions.end_all_sessions(idp.store, user.id)
    tokens.revoke_user_tokens(idp.store, user.id, idp.settings.refresh_token_ttl)
    audit.record_event("logout", "success", user_id=user.id, reason="everywhere", **_client_info())
    then = url_for("account.account_login", done="everywhere")
    # This browser's session came from a SAML IdP with single logout: the IdP is told too.
    response = federation.upstream_logout(session, then) or redirect(then)
    clear_cookie(response, SESSION_COOKIE)
    return response
