"""Login protection: per-account lockout with exponential back-off, per-IP rate limits, and
the audited login that the hosted pages call.

Counters live in the store and change only through its atomic `incr` (one round trip that
the database or Redis executes atomically), so concurrent attempts are counted exactly, on
every worker and node.

Per account (keyed by a hash of the normalised email, known or not: the answers for an
unknown email are the same as for a real one, so they reveal nothing):

    failures within lockout_window_ttl --reaches lockout_threshold--> locked for
    lockout_ttl * 2**(level-1), capped at lockout_max_ttl; level counts the locks within
    BACKOFF_MEMORY_TTL. A lock always ends (no permanent lock-out an attacker could impose);
    a successful login resets the failure count.

While locked, the password is not even checked (the right one is refused too).

Per IP: `check_rate_limit(name)` counts requests in a fixed window of rate_limit_window_ttl
seconds; over the limit it raises RateLimited with the seconds until the window ends
(answered as 429 with Retry-After by idp/rate_limit.py).
"""

from __future__ import annotations

import hashlib
import logging
import math
from datetime import UTC, datetime

from sqlalchemy import select

from ..errors import IdpError, InvalidCredentials, InvalidInput
from ..settings import Settings
from ..storage.models import User, db
from ..storage.store import Store
from . import audit, users

logger = logging.getLogger("idp.protection")

BACKOFF_MEMORY_TTL = 86400  # a lock's level is remembered this long (then it starts at 1 again)
MAX_DOUBLINGS = 20


class AccountLocked(IdpError):
    """Too many failed passwords for this email; try again in `retry_after` seconds."""

    def __init__(self, retry_after: int):
        super().__init__("too many failed sign-in attempts")
        self.retry_after = retry_after


class RateLimited(IdpError):
    def __init__(self, retry_after: int):
        super().__init__("too many requests")
        self.retry_after = retry_after


def _limit(settings: Settings, name: str) -> int:
    return {"login": settings.login_rate_limit, "signup": settings.signup_rate_limit,
            "reset": settings.reset_rate_limit, "token": settings.token_rate_limit}[name]


def check_rate_limit(store: Store, settings: Settings, name: str, ip: str | None) -> None:
    """Count one request of kind `name` (login, signup, reset, token) from `ip`. Raises
    RateLimited past the limit. Exact under concurrency: of N simultaneous requests with L
    left, exactly L pass."""
    limit = _limit(settings, name)
    if not limit:
        return
    key = f"rate:{name}:{ip or 'unknown'}"
    count = store.incr(key, settings.rate_limit_window_ttl)
    if count > limit:
        raise RateLimited(_seconds(store.ttl(key), settings.rate_limit_window_ttl))


def _seconds(ttl: float | None, fallback: int) -> int:
    return max(1, math.ceil(ttl if ttl is not None else fallback))


def _account_key(email: str) -> str:
    try:
        email = users.normalize_email(email)
    except InvalidInput:
        email = (email or "").strip().lower()
    return hashlib.sha256(email.encode()).hexdigest()


def lock_remaining(store: Store, email: str) -> int | None:
    """Seconds left on this email's lock, or None when it is not locked."""
    ttl = store.ttl("lockout:lock:" + _account_key(email))
    return None if ttl is None else _seconds(ttl, 1)


def record_failure(store: Store, settings: Settings, email: str) -> int | None:
    """Count one failed password. Returns the lock duration when this failure locked the
    account (exactly one of concurrent failures reaches the threshold), else None."""
    key = _account_key(email)
    failures = store.incr("lockout:fail:" + key, settings.lockout_window_ttl)
    if failures != settings.lockout_threshold:
        return None
    level = store.incr("lockout:level:" + key, BACKOFF_MEMORY_TTL)
    duration = min(settings.lockout_ttl * 2 ** min(level - 1, MAX_DOUBLINGS), settings.lockout_max_ttl)
    store.set("lockout:lock:" + key, str(level).encode(), duration)
    # The next lock needs a full new series of failures.
    store.delete("lockout:fail:" + key)
    return duration


def reset_failures(store: Store, email: str) -> None:
    store.delete("lockout:fail:" + _account_key(email))


def _user_id_for(email: str) -> tuple[str | None, str]:
    """(user id or None, reason a failed login gets in the audit trail)."""
    try:
        normalized = users.normalize_email(email)
    except InvalidInput:
        return None, "unknown_email"
    user = db.session.scalar(select(User).where(User.email == normalized))
    if user is None:
        return None, "unknown_email"
    return user.id, ("disabled" if not user.active else "bad_password")


def login(store: Store, settings: Settings, email: str, password: str, *, ip: str | None,
          user_agent: str | None) -> User:
    """Check a password with lockout and audit. Raises AccountLocked or InvalidCredentials
    (the same for unknown emails as for real ones). On success, resets the failure count and
    mails the user if the device or IP is new to this account."""
    email = (email or "")[:320]
    remaining = lock_remaining(store, email)
    if remaining is not None:
        user_id, _ = _user_id_for(email)
        audit.record_event("login", "failure", user_id=user_id, email=email, reason="locked", ip=ip,
                           user_agent=user_agent)
        raise AccountLocked(remaining)
    try:
        user = users.authenticate(email, password)
    except InvalidCredentials:
        user_id, reason = _user_id_for(email)
        audit.record_event("login", "failure", user_id=user_id, email=email, reason=reason, ip=ip,
                           user_agent=user_agent)
        duration = record_failure(store, settings, email)
        if duration is not None:
            audit.record_event("lockout", "failure", user_id=user_id, email=email, reason=f"locked {duration}s",
                               ip=ip, user_agent=user_agent)
            raise AccountLocked(duration) from None
        raise
    reset_failures(store, email)
    known, ip_seen, device_seen = audit.seen_before(user.id, ip, user_agent)
    audit.record_event("login", "success", user_id=user.id, email=user.email, ip=ip, user_agent=user_agent)
    if known and not (ip_seen and device_seen):
        notify_new_sign_in(settings, user, ip, user_agent)
    return user


def notify_new_sign_in(settings: Settings, user: User, ip: str | None, user_agent: str | None) -> None:
    """The new_sign_in mail (part of the account mails, idp/services/mail.py). A relay that is
    down must not block the login: the failure is logged and audited."""
    from .mail import MailError, send_mail

    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    try:
        send_mail(settings, user.email, "new_sign_in", name=user.name, when=when, ip=ip or "unknown",
                  device=audit.describe_device(user_agent))
    except MailError as exc:
        logger.warning("new sign-in mail not sent: %s", exc)
        audit.record_event("new_device_mail", "failure", user_id=user.id, reason="smtp_error")
    else:
        audit.record_event("new_device_mail", "success", user_id=user.id, ip=ip, user_agent=user_agent)
