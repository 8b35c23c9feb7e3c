"""SSO sessions at the IdP, kept in the store.

The cookie holds a random session key; the store holds only its SHA-256, so a store dump
does not yield usable cookies. The public `sid` (OIDC Front/Back-Channel Logout) is a
separate random value, never the cookie.

Each user's sessions are listed in a per-user index in the store (`user-sessions:<user id>`:
{sid: store key}), so that the account page can list them and "log out everywhere" (and a
password reset or an admin disable) can end them all. The index is updated under a short
per-user lock (store `add`); entries whose session expired on its own are pruned when read.
The clients that received a code in a session are kept beside it (`session-clients:<sid>`):
when the session ends, each of them with a back-channel logout URI gets a logout token
(idp/services/backchannel.py).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from contextlib import contextmanager

from ..storage.store import Store

TOUCH_EVERY = 60  # seconds: refresh last_seen and the idle TTL at most this often


def _key(cookie_value: str) -> str:
    return "session:" + hashlib.sha256(cookie_value.encode()).hexdigest()


def create_session(store: Store, user_id: str, *, amr: list[str], acr: str, idle_ttl: int,
                   absolute_ttl: int, ip: str | None = None, user_agent: str | None = None) -> tuple[str, dict]:
    """Returns (cookie value, session). A new key on every login: no session fixation.
    `ip` and `user_agent` are shown on the account page's session list."""
    cookie_value = secrets.token_urlsafe(32)
    now = time.time()
    session = {"user_id": user_id, "sid": secrets.token_urlsafe(16), "auth_time": int(now), "amr": amr,
               "acr": acr, "created_at": now, "last_seen": now, "expires_at": now + absolute_ttl,
               "ip": ip and ip[:64], "user_agent": user_agent and user_agent[:512]}
    store.set_json(_key(cookie_value), session, min(idle_ttl, absolute_ttl))
    with _index(store, user_id, absolute_ttl) as index:
        index[session["sid"]] = _key(cookie_value)
    return cookie_value, session


def load_session(store: Store, cookie_value: str | None, idle_ttl: int) -> dict | None:
    if not cookie_value or len(cookie_value) > 200:
        return None
    session = store.get_json(_key(cookie_value))
    if session is None:
        return None
    now = time.time()
    if now >= session["expires_at"]:
        store.delete(_key(cookie_value))
        return None
    if now - session["last_seen"] > TOUCH_EVERY:
        session["last_seen"] = now
        store.set_json(_key(cookie_value), session, min(idle_ttl, session["expires_at"] - now))
    return session


def upgrade_session(store: Store, cookie_value: str, *, amr: list[str], acr: str,
                    idle_ttl: int) -> tuple[str | None, dict | None]:
    """Step-up (idp/mfa): the session now has stronger authentication. It keeps its `sid`
    (the clients that got tokens in it are not logged out) but moves to a new cookie key
    (no fixation of the stronger session); auth_time becomes now (OIDC Core §2: the time of
    the last interactive authentication). (None, None) if the session is gone. Atomic take."""
    session = store.take_json(_key(cookie_value))
    now = time.time()
    if session is None or now >= session["expires_at"]:
        return None, None
    session.update(amr=amr, acr=acr, auth_time=int(now), last_seen=now)
    new_cookie = secrets.token_urlsafe(32)
    store.set_json(_key(new_cookie), session, min(idle_ttl, session["expires_at"] - now))
    with _index(store, session["user_id"]) as index:
        index[session["sid"]] = _key(new_cookie)
    return new_cookie, session


def end_session(store: Store, cookie_value: str | None) -> dict | None:
    """End the session of this cookie (atomic take: ended once). Its clients are sent a
    back-channel logout token."""
    if not cookie_value or len(cookie_value) > 200:
        return None
    session = store.take_json(_key(cookie_value))
    if session is not None:
        _ended(store, session)
    return session


# --- the per-user index -----------------------------------------------------------------------

INDEX_TTL_FLOOR = 86400
LOCK_TTL = 5


@contextmanager
def _locked(store: Store, name: str):
    """A short lock in the store: read-modify-write of one JSON value by one worker at a time."""
    deadline = time.monotonic() + LOCK_TTL
    token = secrets.token_bytes(8)
    while not store.add("lock:" + name, token, LOCK_TTL):
        if time.monotonic() > deadline:
            break  # a crashed holder: its lock expires anyway; go on rather than fail the login
        time.sleep(0.01)
    try:
        yield
    finally:
        if store.get("lock:" + name) == token:
            store.delete("lock:" + name)


@contextmanager
def _index(store: Store, user_id: str, ttl: float | None = None):
    """The user's {sid: store key} index, written back after the block."""
    name = "user-sessions:" + user_id
    with _locked(store, name):
        index = store.get_json(name) or {}
        before = dict(index)
        yield index
        if index != before or ttl:
            if index:
                current = store.ttl(name) or 0
                store.set_json(name, index, max(current, ttl or 0, INDEX_TTL_FLOOR))
            else:
                store.delete(name)


def list_sessions(store: Store, user_id: str) -> list[dict]:
    """The user's live sessions, newest first (each a session dict with its `sid`)."""
    found = []
    with _index(store, user_id) as index:
        now = time.time()
        for sid, key in list(index.items()):
            session = store.get_json(key)
            if session is None or now >= session["expires_at"]:
                del index[sid]
            else:
                found.append(session)
    return sorted(found, key=lambda s: s["created_at"], reverse=True)


def end_session_by_sid(store: Store, user_id: str, sid: str) -> dict | None:
    """End one of this user's sessions by its sid (account page); None if it is not theirs."""
    with _index(store, user_id) as index:
        key = index.pop(sid, None) if isinstance(sid, str) else None
    session = store.take_json(key) if key else None
    if session is None or session.get("user_id") != user_id:
        return None
    _ended(store, session)
    return session


def end_all_sessions(store: Store, user_id: str) -> int:
    """End every session of the user (log out everywhere, password reset, admin disable);
    their clients get back-channel logout tokens. Returns how many were live."""
    with _index(store, user_id) as index:
        keys = list(index.values())
        index.clear()
    # "Log out everywhere" also forgets the browsers trusted to skip MFA (idp/mfa/trusted.py)
    # and ends the logins waiting at the MFA step (idp/mfa/flow.py).
    from ..mfa.flow import revoke_pending_logins
    from ..mfa.trusted import revoke_all

    revoke_all(user_id)
    revoke_pending_logins(store, user_id)
    ended = 0
    for key in keys:
        session = store.take_json(key)
        if session is not None:
            ended += 1
            _ended(store, session, indexed=False)
    return ended


def record_client(store: Store, session: dict, client_id: str) -> None:
    """Remember that `client_id` got a code in this session (OpenID Back-Channel Logout 1.0
    §2.6: the RPs to notify when it ends)."""
    name = "session-clients:" + session["sid"]
    ttl = max(1.0, session["expires_at"] - time.time())
    with _locked(store, name):
        clients = store.get_json(name) or []
        if client_id not in clients:
            store.set_json(name, [*clients, client_id], ttl)


def _ended(store: Store, session: dict, indexed: bool = True) -> None:
    if indexed:
        with _index(store, session["user_id"]) as index:
            index.pop(session["sid"], None)
    clients = store.take_json("session-clients:" + session["sid"])
    if clients:
        from . import backchannel

        backchannel.enqueue_logout(clients, sub=session["user_id"], sid=session["sid"])
