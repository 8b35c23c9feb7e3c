"""Recovery codes: 10 single-use codes, made when the first factor is enrolled and shown once.

Each code is 10 characters from a 32-letter alphabet (50 random bits), shown as xxxxx-xxxxx.
Only an HMAC-SHA-256 of it is stored, keyed with a key derived from the key-encryption key
and bound to the user: with that much entropy a slow hash (argon2 per code) would buy nothing,
and a database dump alone does not allow testing guesses. Regenerating deletes every old code.
Use is single and atomic: `UPDATE ... SET used_at WHERE used_at IS NULL` (one winner among
concurrent requests).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import delete, func, select, update

from ..storage.mfa_models import RecoveryCode
from ..storage.models import db, utcnow

COUNT = 10
ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford's base32: no i, l, o, u (misread)
LENGTH = 10


def _hash(kek: bytes, user_id: str, code: str) -> str:
    key = hmac.new(kek, b"idp recovery codes", hashlib.sha256).digest()
    return hmac.new(key, f"{user_id}:{code}".encode(), hashlib.sha256).hexdigest()


def normalize(raw: str | None) -> str | None:
    code = "".join((raw or "")[:64].split()).replace("-", "").lower()
    return code if len(code) == LENGTH and all(c in ALPHABET for c in code) else None


def generate(kek: bytes, user_id: str) -> list[str]:
    """Replace the user's codes with COUNT new ones; returns them (to be shown once)."""
    codes = ["".join(secrets.choice(ALPHABET) for _ in range(LENGTH)) for _ in range(COUNT)]
    db.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
    db.session.add_all(RecoveryCode(user_id=user_id, code_hash=_hash(kek, user_id, c)) for c in codes)
    db.session.commit()
    return [f"{c[:5]}-{c[5:]}" for c in codes]


def consume(kek: bytes, user_id: str, raw: str | None) -> bool:
    """Use one code: True for exactly one of concurrent uses of a valid unused code."""
    code = normalize(raw)
    if code is None:
        return False
    result = db.session.execute(update(RecoveryCode)
                                .where(RecoveryCode.user_id == user_id,
                                       RecoveryCode.code_hash == _hash(kek, user_id, code),
                                       RecoveryCode.used_at.is_(None))
                                .values(used_at=utcnow()))
    db.session.commit()
    return result.rowcount == 1


def remaining(user_id: str) -> int:
    return db.session.scalar(select(func.count()).select_from(RecoveryCode)
                             .where(RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None)))


def delete_all(user_id: str) -> None:
    db.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
    db.session.commit()
