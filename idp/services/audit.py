"""The audit trail (`auth_events`): every login attempt and the other events that change who
is signed in (lockout, logout, sessions ended, password changes, account deletion).

Events and results in use:

    login            success | failure (reason: bad_password, unknown_email, disabled, locked)
    lockout          failure (reason: the lock duration)
    logout           success (reason: rp_initiated, account_page, everywhere, admin_disable, ...)
    password_change  success | failure (reason: bad_password, the current one on the account page)
    account_delete   success | failure (reason: bad_password)
    new_device_mail  success | failure

Rows are written in their own short transaction (committed at once): an audit record must
not be lost because a later step of the same request fails.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from flask import current_app
from sqlalchemy import select, update

from ..storage.models import db
from ..storage.security_models import AuthEvent


def record_event(event: str, result: str, *, user_id: str | None = None, email: str | None = None,
                 reason: str | None = None, ip: str | None = None, user_agent: str | None = None) -> AuthEvent:
    """Write one audit row and commit. Values are truncated to their columns; never pass a
    password or token here."""
    row = AuthEvent(event=event[:32], result=result[:16], user_id=user_id, email=(email or None) and email[:320],
                    reason=reason and reason[:64], ip=ip and ip[:64], user_agent=user_agent and user_agent[:512])
    db.session.add(row)
    db.session.commit()
    return row


def list_events(user_id: str, limit: int = 100) -> list[AuthEvent]:
    return list(db.session.scalars(select(AuthEvent).where(AuthEvent.user_id == user_id)
                                   .order_by(AuthEvent.created_at.desc()).limit(limit)))


def describe_event(row: AuthEvent) -> dict:
    return {"event": row.event, "result": row.result, "reason": row.reason, "email": row.email, "ip": row.ip,
            "user_agent": row.user_agent, "created_at": row.created_at.isoformat()}


def pseudonym(user_id: str) -> str:
    """A keyed hash of a user id: the same deleted user's rows stay linkable to each other,
    but not to a person without the server's SECRET_KEY."""
    key = current_app.config["SECRET_KEY"].encode()
    return hmac.new(key, b"audit:" + user_id.encode(), hashlib.sha256).hexdigest()


def pseudonymize_user_events(user_id: str) -> int:
    """Call before deleting an account (GDPR Art. 17): the user's rows stay, with the user id,
    email, IP and user agent removed and a pseudonym in their place. Returns the row count."""
    result = db.session.execute(
        update(AuthEvent).where(AuthEvent.user_id == user_id)
        .values(user_id=None, email=None, ip=None, user_agent=None, pseudonym=pseudonym(user_id)))
    db.session.commit()
    return result.rowcount


def seen_before(user_id: str, ip: str | None, user_agent: str | None) -> tuple[bool, bool, bool]:
    """(any earlier successful login, this IP seen in one, this user agent seen in one)."""
    base = select(AuthEvent.id).where(AuthEvent.user_id == user_id, AuthEvent.event == "login",
                                      AuthEvent.result == "success").limit(1)
    any_login = db.session.scalar(base) is not None
    if not any_login:
        return False, False, False
    ip_seen = db.session.scalar(base.where(AuthEvent.ip == (ip and ip[:64]))) is not None
    ua_seen = db.session.scalar(base.where(AuthEvent.user_agent == (user_agent and user_agent[:512]))) is not None
    return True, ip_seen, ua_seen


_BROWSERS = [("Edg/", "Edge"), ("OPR/", "Opera"), ("Firefox/", "Firefox"), ("Chrome/", "Chrome"),
             ("Chromium/", "Chromium"), ("Safari/", "Safari"), ("curl/", "curl"), ("python-requests", "Python")]
_SYSTEMS = [("Windows", "Windows"), ("Android", "Android"), ("iPhone", "iOS"), ("iPad", "iPadOS"),
            ("Mac OS X", "macOS"), ("CrOS", "ChromeOS"), ("Linux", "Linux")]


def describe_device(user_agent: str | None) -> str:
    """A short human label for a User-Agent ("Chrome on Linux"); never the raw string."""
    ua = user_agent or ""
    browser = next((name for token, name in _BROWSERS if token in ua), None)
    system = next((name for token, name in _SYSTEMS if token in ua), None)
    if browser and system:
        return f"{browser} on {system}"
    if browser or system:
        return browser or system
    word = re.match(r"[A-Za-z][A-Za-z0-9._-]{0,30}", ua)
    return word.group(0) if word else "Unknown device"
