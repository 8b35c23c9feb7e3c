"""Email one-time codes for the MFA step: 6 digits, valid 10 minutes, single use, at most 3
tries per code; sending again is rate-limited. Mailed to the user's verified address only.

A code belongs to one pending login (its id), so a code mailed for one sign-in attempt
cannot finish another. The store keeps only its HMAC (keyed with SECRET_KEY): 6 digits are
a small space, but 3 tries per code and 5 attempts per pending login bound the guessing.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets

from ..storage.store import Store

TTL = 600
MAX_TRIES = 3
RESEND_AFTER = 30      # seconds between two mails for one pending login
PER_USER_HOUR = 5      # mails per user per hour


class RateLimited(Exception):
    def __init__(self, retry_after: int):
        super().__init__("too many codes requested")
        self.retry_after = retry_after


def _digest(secret_key: str, pending_key: str, code: str) -> str:
    return hmac.new(secret_key.encode(), f"mfa-email:{pending_key}:{code}".encode(), hashlib.sha256).hexdigest()


def _key(pending_key: str) -> str:
    return "mfa-email:" + hashlib.sha256(pending_key.encode()).hexdigest()


def issue(store: Store, secret_key: str, pending_key: str, user_id: str) -> str:
    """A new code for this pending login (the previous one dies). Raises RateLimited."""
    if not store.add(_key(pending_key) + ":resend", b"1", RESEND_AFTER):
        raise RateLimited(math.ceil(store.ttl(_key(pending_key) + ":resend") or RESEND_AFTER))
    count = store.incr("mfa-email-user:" + user_id, 3600)
    if count > PER_USER_HOUR:
        raise RateLimited(math.ceil(store.ttl("mfa-email-user:" + user_id) or 3600))
    code = f"{secrets.randbelow(10 ** 6):06d}"
    store.set(_key(pending_key), _digest(secret_key, pending_key, code).encode(), TTL)
    store.delete(_key(pending_key) + ":tries")
    return code


def sent(store: Store, pending_key: str) -> bool:
    return store.ttl(_key(pending_key)) is not None


def check(store: Store, secret_key: str, pending_key: str, raw: str | None) -> bool:
    """True once for the right code (atomic take); the 3rd wrong try kills the code."""
    code = "".join((raw or "")[:32].split())
    tries = store.incr(_key(pending_key) + ":tries", TTL)
    if tries > MAX_TRIES:
        store.delete(_key(pending_key))
        return False
    stored = store.get(_key(pending_key))
    if stored is None or not (len(code) == 6 and code.isdigit()):
        ok = False
    else:
        ok = hmac.compare_digest(stored.decode(), _digest(secret_key, pending_key, code))
    if ok:
        return store.take(_key(pending_key)) is not None
    if tries >= MAX_TRIES:
        store.delete(_key(pending_key))
    return False
