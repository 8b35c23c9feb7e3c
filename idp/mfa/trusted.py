""""Trust this browser": after a second factor the user may let this browser skip the MFA
prompts that policy adds (never an explicit acr_values step-up: see idp/mfa/policy.py) for
IDP_TRUSTED_BROWSER_TTL seconds (30 days by default).

The cookie is signed (itsdangerous, SECRET_KEY) and carries the user id and a random id; the
database keeps only the SHA-256 of the random id, per user, so the trust is revocable: one
browser from the account page, all of them by "log out everywhere", a password reset or
change, or an admin disable (services/sessions.end_all_sessions calls revoke_all).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import delete, select

from ..storage.mfa_models import TrustedBrowser
from ..storage.models import db, utcnow

COOKIE = "idp_trusted_browser"
_SALT = "idp.mfa.trusted-browser"


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _serializer(secret_key: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret_key, salt=_SALT)


def create_trust(secret_key: str, user_id: str, ttl: int, user_agent: str | None) -> str:
    """Record a trusted browser; returns the signed cookie value."""
    browser_id = secrets.token_urlsafe(32)
    db.session.add(TrustedBrowser(id_hash=_hash(browser_id), user_id=user_id,
                                  user_agent=user_agent and user_agent[:512],
                                  expires_at=utcnow() + timedelta(seconds=ttl)))
    db.session.commit()
    return _serializer(secret_key).dumps({"u": user_id, "b": browser_id})


def is_trusted(secret_key: str, cookie_value: str | None, user_id: str, ttl: int) -> bool:
    """True when the cookie is ours, for this user, not older than `ttl` and not revoked."""
    if not cookie_value or len(cookie_value) > 400 or ttl <= 0:
        return False
    try:
        data = _serializer(secret_key).loads(cookie_value, max_age=ttl)
    except BadSignature:
        return False
    if not isinstance(data, dict) or data.get("u") != user_id or not isinstance(data.get("b"), str):
        return False
    row = db.session.get(TrustedBrowser, _hash(data["b"]))
    return row is not None and row.user_id == user_id and row.expires_at > utcnow()


def list_trusted(user_id: str) -> list[TrustedBrowser]:
    return list(db.session.scalars(select(TrustedBrowser).where(TrustedBrowser.user_id == user_id,
                                                                TrustedBrowser.expires_at > utcnow())
                                   .order_by(TrustedBrowser.created_at.desc())))


def revoke_all(user_id: str) -> int:
    """Forget every trusted browser of the user; returns how many there were."""
    count = db.session.execute(delete(TrustedBrowser).where(TrustedBrowser.user_id == user_id)).rowcount
    db.session.commit()
    return count
