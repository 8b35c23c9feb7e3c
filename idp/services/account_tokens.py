"""Single-use links sent by mail: email verification (24 h) and password reset (30 min).

The token is 256 random bits in the link; the database keeps only its SHA-256 (like refresh
tokens), so a dump of the table opens nothing. Consumption is one atomic
`UPDATE ... SET used_at = now WHERE token_hash = ? AND used_at IS NULL AND expires_at > now`:
of concurrent requests with the same link, exactly one sees rowcount 1.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import select, update

from ..storage.account_models import AccountToken
from ..storage.models import User, db, utcnow

VERIFY_EMAIL = "verify_email"
RESET_PASSWORD = "reset_password"
MAX_TOKEN_LENGTH = 100


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(user_id: str, purpose: str, ttl: int) -> str:
    """Store a new token's hash; returns the token (put it in the link, nowhere else)."""
    token = secrets.token_urlsafe(32)
    db.session.add(AccountToken(token_hash=_hash(token), user_id=user_id, purpose=purpose,
                                expires_at=utcnow() + timedelta(seconds=ttl)))
    db.session.commit()
    return token


def _valid(token: str | None, purpose: str):
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    return (AccountToken.token_hash == _hash(token), AccountToken.purpose == purpose,
            AccountToken.used_at.is_(None), AccountToken.expires_at > utcnow())


def load_token_user(token: str | None, purpose: str) -> User | None:
    """The user of a live (unused, unexpired) token, without consuming it: for showing the
    form behind a link (mail scanners open links; only the POST consumes)."""
    where = _valid(token, purpose)
    if where is None:
        return None
    user_id = db.session.scalar(select(AccountToken.user_id).where(*where))
    user = db.session.get(User, user_id) if user_id else None
    return user if user is not None and user.active else None


def consume_token(token: str | None, purpose: str) -> User | None:
    """Mark the token used and return its user; None if unknown, used, expired or of another
    purpose. Atomic: of concurrent callers with one token, at most one gets the user."""
    where = _valid(token, purpose)
    if where is None:
        return None
    user_id = db.session.scalar(select(AccountToken.user_id).where(*where))
    if user_id is None:
        return None
    result = db.session.execute(update(AccountToken).where(*where).values(used_at=utcnow()))
    db.session.commit()
    if result.rowcount != 1:
        return None
    user = db.session.get(User, user_id)
    return user if user is not None and user.active else None


def revoke_tokens(user_id: str, purpose: str) -> None:
    """Every outstanding token of this purpose dies (a new password makes old reset links moot)."""
    db.session.execute(update(AccountToken).where(AccountToken.user_id == user_id, AccountToken.purpose == purpose,
                                                  AccountToken.used_at.is_(None)).values(used_at=utcnow()))
    db.session.commit()
