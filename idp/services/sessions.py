"""SSO sessions at the IdP, kept in the store.

The cookie holds a random session key; the store holds only its SHA-256, so a store dump
does not yield usable cookies. The public `sid` (OIDC Front/Back-Channel Logout) is a
separate random value, never the cookie.
"""

from __future__ import annotations

import hashlib
import secrets
import time

from ..storage.store import Store

TOUCH_EVERY = 60  # seconds: refresh last_seen and the idle TTL at most this often


def _key(cookie_value: str) -> str:
    return "session:" + hashlib.sha256(cookie_value.encode()).hexdigest()


def create_session(store: Store, user_id: str, *, amr: list[str], acr: str, idle_ttl: int,
                   absolute_ttl: int) -> tuple[str, dict]:
    """Returns (cookie value, session). A new key on every login: no session fixation."""
    cookie_value = secrets.token_urlsafe(32)
    now = time.time()
    session = {"user_id": user_id, "sid": secrets.token_urlsafe(16), "auth_time": int(now), "amr": amr,
               "acr": acr, "created_at": now, "last_seen": now, "expires_at": now + absolute_ttl}
    store.set_json(_key(cookie_value), session, min(idle_ttl, absolute_ttl))
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


def end_session(store: Store, cookie_value: str | None) -> dict | None:
    if not cookie_value or len(cookie_value) > 200:
        return None
    return store.take_json(_key(cookie_value))
