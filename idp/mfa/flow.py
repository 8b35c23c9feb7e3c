"""The MFA step of every login: the pending authentication between the first factor and the
SSO session. No session exists, so no consent and no code, until every required factor passed.

    first factor (password, SAML, passkey)      /authorize in a session whose acr is too low
            | first_factor_passed()                     | (interaction policy: MFA step)
            v                                           v  start_step_up()
       MFA required? --no--> session + continue     pending authentication (store, TTL
            | yes                                   IDP_MFA_PENDING_TTL, cookie idp_mfa)
            +-------------------------------------> /login/mfa: choose a method
                                                        | TOTP, recovery code, email code, passkey
                            5 wrong attempts            v
            pending cancelled <------------------- verify view --ok--> second_factor_passed()
            (start the login again)                                     session (amr + "mfa",
                                                                        acr urn:idp:acr:mfa)
                                                                        + continue

The seam, for every first factor and every second factor (passkeys: idp/mfa/passkey_views.py;
SAML: idp/federation/views.py):

* `first_factor_passed(user, amr=[...], acr=..., then={...}, require_mfa=False)` after a first
  factor. `then` says where to go once signed in: {"interaction": id} resumes that OIDC
  interaction (its cookie must be this browser's), {"endpoint": "account.account"} redirects
  to a view, {"url": "/local/path"} to a local path. `require_mfa=True` asks for a second factor
  whatever the policy says (a SAML connection that requires MFA). An `amr` that already holds
  "mfa" (a user-verified passkey used passwordless) is a complete multi-factor login.
* `load_pending()` -> (pending_id, pending) or (None, None): the pending login of this browser;
  pending["user_id"] is the user to check a factor for.
* `consume_attempt(pending_id)` before checking a code (-1: locked), or `record_failure(pending_id)`
  after a failed check; both count toward the MAX_ATTEMPTS lock, which cancels the pending login.
* `second_factor_passed(pending_id, pending, amr=["otp"], trust_browser=None)` once the factor
  checked out: single use (an atomic take of the pending login), merges amr, adds "mfa", sets
  acr urn:idp:acr:mfa and auth_time now, and continues. `trust_browser=None` reads the form's
  `trust_browser` checkbox.
* `methods.register_method(...)` (idp/mfa/methods.py) adds a method to the choice page.

Counters are per pending login and separate from the password lockout (services/protection.py):
password spraying cannot lock the second factor, and wrong codes cannot lock the account.
"""

from __future__ import annotations

import hashlib
import secrets
import time

from flask import current_app, redirect, request, url_for

from ..services import audit, sessions
from ..storage.models import User, db
from . import methods, trusted
from .policy import MFA_ACR, MfaSituation, mfa_required, requested_acr

PENDING_COOKIE = "idp_mfa"
MAX_ATTEMPTS = 5          # per pending login: then it is cancelled
USER_MAX_ATTEMPTS = 20    # per user over USER_WINDOW_TTL, all pending logins together
USER_WINDOW_TTL = 900
REVOKED_MEMORY_TTL = 86400  # longer than any pending login (IDP_MFA_PENDING_TTL is at most 3600)


def _idp():
    return current_app.extensions["idp"]


def _key(pending_id: str) -> str:
    # Only a hash in the store, as for sessions: a store dump yields no usable cookie.
    return "mfa-pending:" + hashlib.sha256(pending_id.encode()).hexdigest()


def _web():
    from ..interaction import web

    return web


# --- is MFA needed? --------------------------------------------------------------------------

def mfa_needed(user: User, *, client=None, requested: frozenset[str] = frozenset(), require_mfa: bool = False) -> bool:
    """Gather the facts for idp/mfa/policy.py: enrolled factors, the client's and the user's
    roles' requirements, the requested acr, and this browser's trust cookie."""
    idp = _idp()
    settings = idp.settings
    situation = MfaSituation(
        requested_acr=requested,
        trusted_browser=trusted.is_trusted(_secret_key(), _web().get_cookie(trusted.COOKIE), user.id,
                                           settings.trusted_browser_ttl),
        enrolled=methods.enrolled_count(user) > 0,
        client_requires=bool(client is not None and getattr(client, "require_mfa", False)),
        connection_requires=require_mfa,
        role_requires=bool(settings.mfa_roles) and bool(settings.mfa_roles & _role_names(user)))
    return mfa_required(situation)


def _secret_key() -> str:
    return current_app.config["SECRET_KEY"]


def _role_names(user: User) -> set[str]:
    """Unexpired direct and group roles (idp/policy)."""
    from ..policy.store import load_subject

    subject = load_subject(user)
    return set(subject.roles) | {r for roles in subject.group_roles.values() for r in roles}


def _needed_for_then(user: User, then: dict, require_mfa: bool) -> bool:
    client, requested = None, frozenset()
    if "interaction" in then:
        from authlib.oauth2.rfc6749 import InvalidRequestError

        from ..protocol.claims import parse_claims_parameter
        from ..protocol.clients import query_client

        interaction = _idp().store.get_json("interaction:" + then["interaction"]) or {}
        params = interaction.get("params") or {}
        client = query_client(params.get("client_id"))
        try:
            claims = parse_claims_parameter(params.get("claims"))
        except InvalidRequestError:  # /authorize already refused a bad one; nothing to add here
            claims = None
        requested = requested_acr(params, claims)
    return mfa_needed(user, client=client, requested=requested, require_mfa=require_mfa)


# --- the seam --------------------------------------------------------------------------------

def first_factor_passed(user: User, *, amr: list[str], acr: str | None, then: dict, require_mfa: bool = False):
    """Establish the session and continue, or (MFA required) store a pending login bound to
    this browser and send it to the MFA step."""
    amr = list(dict.fromkeys(amr))
    if "mfa" in amr:
        return establish(user, amr=amr, acr=MFA_ACR, then=then)
    if not _needed_for_then(user, then, require_mfa):
        return establish(user, amr=amr, acr=acr, then=then)
    return _pending(user.id, {"amr": amr, "acr": acr, "then": then})


def start_step_up(user: User, session: dict, then: dict):
    """The session is valid but its acr is too low for this request: ask for a second factor;
    on success the same session (same sid) is upgraded under a new cookie key."""
    return _pending(user.id, {"amr": session.get("amr") or [], "acr": session.get("acr"), "then": then,
                              "step_up_sid": session["sid"]})


def _pending(user_id: str, fields: dict):
    idp = _idp()
    pending_id = secrets.token_urlsafe(24)
    idp.store.set_json(_key(pending_id), {"user_id": user_id, "created_at": time.time(), **fields},
                       idp.settings.mfa_pending_ttl)
    response = redirect(url_for("mfa.choose"))
    _web().set_cookie(response, PENDING_COOKIE, pending_id, idp.settings.mfa_pending_ttl)
    return response


def load_pending() -> tuple[str | None, dict | None]:
    pending_id = _web().get_cookie(PENDING_COOKIE)
    if not pending_id or len(pending_id) > 64:
        return None, None
    store = _idp().store
    pending = store.get_json(_key(pending_id))
    if pending and pending["created_at"] <= float(store.get(_revoked_key(pending["user_id"])) or 0):
        cancel(pending_id)  # begun before a password reset or "log out everywhere"
        pending = None
    return (pending_id, pending) if pending else (None, None)


def _revoked_key(user_id: str) -> str:
    return "mfa-pending-revoked:" + user_id


def revoke_pending_logins(store, user_id: str) -> None:
    """Every login of the user waiting at the MFA step dies (called with "log out everywhere",
    password reset or change, admin disable: services/sessions.end_all_sessions). A password
    phished before the reset must not finish its login after it."""
    store.set(_revoked_key(user_id), repr(time.time()).encode(), REVOKED_MEMORY_TTL)


def consume_attempt(pending_id: str) -> int:
    """Count one attempt (atomic `incr`: of concurrent attempts exactly MAX_ATTEMPTS get
    through). Returns the attempts left after this one, or -1 when the challenge is locked;
    then the pending login is cancelled and the user must sign in again.

    Per user too: at most USER_MAX_ATTEMPTS attempts per USER_WINDOW_TTL over all pending
    logins, so that someone who knows the password cannot get 5 new guesses by signing in
    again and again. This slows down only the second factor of that user, for a while."""
    idp = _idp()
    pending = idp.store.get_json(_key(pending_id))
    if pending is None:
        return -1
    count = idp.store.incr("mfa-attempts:" + _key(pending_id), idp.settings.mfa_pending_ttl)
    user_count = idp.store.incr("mfa-user-attempts:" + pending["user_id"], USER_WINDOW_TTL)
    if count > MAX_ATTEMPTS or user_count > USER_MAX_ATTEMPTS:
        cancel(pending_id)
        return -1
    return MAX_ATTEMPTS - count


def record_failure(pending_id: str) -> int:
    """For a factor checked before counting (a passkey assertion): count the failure. Returns
    the attempts left; at 0 the pending login is cancelled."""
    left = consume_attempt(pending_id)
    if left <= 0:
        cancel(pending_id)
    return max(left, 0)


def cancel(pending_id: str) -> None:
    _idp().store.delete(_key(pending_id))


def second_factor_passed(pending_id: str, pending: dict, *, amr: list[str], trust_browser: bool | None = None):
    """The factor checked out: establish (or upgrade) the session with acr urn:idp:acr:mfa."""
    from ..protocol.authorize import error_page

    idp = _idp()
    web = _web()
    # Single use: of two concurrent successes only one takes the pending login.
    taken = idp.store.take_json(_key(pending_id))
    if taken and taken["created_at"] <= float(idp.store.get(_revoked_key(taken["user_id"])) or 0):
        taken = None  # revoked between load_pending() and here
    user = db.session.get(User, pending["user_id"]) if taken else None
    if user is None or not user.active:
        return expired_page()
    # A success gives its attempt back: only wrong codes add up toward USER_MAX_ATTEMPTS.
    idp.store.incr("mfa-user-attempts:" + user.id, USER_WINDOW_TTL, amount=-1)
    merged = list(dict.fromkeys([*pending["amr"], *amr, "mfa"]))
    audit.record_event("mfa", "success", user_id=user.id, reason=",".join(amr)[:64], ip=request.remote_addr,
                       user_agent=request.user_agent.string or None)
    if pending.get("step_up_sid"):
        cookie, session = web.current_session()
        if session is None or session["sid"] != pending["step_up_sid"]:
            return error_page("interaction_expired", "Your session ended. Go back to the application and sign in.")
        response = _upgrade(cookie, session, merged, pending["then"])
    else:
        response = establish(user, amr=merged, acr=MFA_ACR, then=pending["then"])
    web.clear_cookie(response, PENDING_COOKIE)
    if trust_browser is None:
        trust_browser = request.form.get("trust_browser") == "yes"
    ttl = idp.settings.trusted_browser_ttl
    if trust_browser and ttl > 0:
        value = trusted.create_trust(_secret_key(), user.id, ttl, request.user_agent.string or None)
        web.set_cookie(response, trusted.COOKIE, value, ttl)
    return response


# Called as listener(session, then) when establish() starts a session: a first factor keeps
# what it needs beside the session (SAML single logout: idp/federation/upstream_sessions.py,
# which reads then["saml"]).
SESSION_STARTED: list = []


def on_session_started(listener) -> None:
    if listener not in SESSION_STARTED:
        SESSION_STARTED.append(listener)


def establish(user: User, *, amr: list[str], acr: str | None, then: dict):
    """A new SSO session (new key, no fixation; this browser's previous session ends), then
    continue to `then`."""
    idp = _idp()
    web = _web()
    settings = idp.settings
    sessions.end_session(idp.store, web.get_cookie(web.SESSION_COOKIE))
    cookie, session = sessions.create_session(idp.store, user.id, amr=amr, acr=acr, idle_ttl=settings.session_idle_ttl,
                                              absolute_ttl=settings.session_ttl, ip=request.remote_addr,
                                              user_agent=request.user_agent.string or None)
    for listener in SESSION_STARTED:
        listener(session, then)
    response = _continue(then, (cookie, session))
    web.set_cookie(response, web.SESSION_COOKIE, cookie, settings.session_ttl)
    return response


def _upgrade(cookie: str, session: dict, amr: list[str], then: dict):
    idp = _idp()
    web = _web()
    new_cookie, upgraded = sessions.upgrade_session(idp.store, cookie, amr=amr, acr=MFA_ACR,
                                                    idle_ttl=idp.settings.session_idle_ttl)
    if upgraded is None:
        return expired_page()
    response = _continue(then, (new_cookie, upgraded))
    web.set_cookie(response, web.SESSION_COOKIE, new_cookie, idp.settings.session_ttl)
    return response


def _continue(then: dict, session_override):
    from ..protocol import authorize

    web = _web()
    if "interaction" in then:
        interaction_id = then["interaction"]
        store = _idp().store
        interaction = None
        if web.get_cookie(web.INTERACTION_COOKIE) == interaction_id:
            interaction = store.get_json("interaction:" + interaction_id)
        if not interaction:
            return expired_page()
        interaction["logged_in"] = True
        store.set_json("interaction:" + interaction_id, interaction, _idp().settings.interaction_ttl)
        return authorize.resume(interaction_id, interaction, session_override=session_override)
    if "endpoint" in then:
        return redirect(url_for(then["endpoint"]))
    url = then.get("url") or "/account"
    # Only a local path: `then` must never become an open redirect.
    if not url.startswith("/") or url.startswith("//") or "\\" in url:
        url = "/account"
    return redirect(url)


def expired_page():
    from ..protocol.authorize import error_page

    return error_page("interaction_expired", "This sign-in has expired or was opened in another browser. "
                      "Go back to the application and start again.")
