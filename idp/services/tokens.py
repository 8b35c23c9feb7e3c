"""Access, refresh and ID tokens: issue, verify, rotate, revoke.

Access tokens are RFC 9068 JWTs (`typ: at+jwt`, RS256, `kid`, `jti`); revoking one puts its
jti on a denylist in the store until it expires (honoured by userinfo and introspection).

Refresh tokens are opaque (256 bits), stored as SHA-256, rotated on every use:

    issued --use--> used (successor issued)     a used token presented again:
       |                                          inside the grace window -> the same successor
       +--revoke--> revoked                       otherwise -> the whole family is revoked
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from joserfc import jwt
from sqlalchemy import select, update

from ..storage.models import RefreshToken, db, utcnow
from ..storage.store import Store
from .keys import KeyRing

MAX_TOKEN_LENGTH = 8192


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class TokenSettings:
    issuer: str
    access_token_ttl: int
    id_token_ttl: int
    refresh_token_ttl: int
    refresh_token_grace_ttl: int


# --- JWTs -------------------------------------------------------------------------------------

def sign_jwt(keyring: KeyRing, claims: dict, typ: str = "JWT") -> str:
    key = keyring.signing_key()
    header = {"alg": "RS256", "kid": key.kid, "typ": typ}
    return jwt.encode(header, claims, key, algorithms=["RS256"])


def issue_access_token(keyring: KeyRing, settings: TokenSettings, *, client_id: str, sub: str, scope: str,
                       jti: str | None = None, extra: dict | None = None) -> tuple[str, dict]:
    now = int(time.time())
    claims = {"iss": settings.issuer, "sub": sub, "aud": settings.issuer, "client_id": client_id,
              "iat": now, "exp": now + settings.access_token_ttl, "jti": jti or secrets.token_urlsafe(16),
              "scope": scope}
    if extra:
        claims.update({k: v for k, v in extra.items() if v is not None})
    return sign_jwt(keyring, claims, typ="at+jwt"), claims


def verify_access_token(keyring: KeyRing, store: Store, issuer: str, token: str | None) -> dict | None:
    """Claims of a valid, unexpired, unrevoked access token of ours; None for anything else."""
    if not token or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
        return None
    try:
        decoded = jwt.decode(token, keyring.public_keys(), algorithms=["RS256"])
    except Exception:  # any malformed or forged token is simply not active
        return None
    claims = decoded.claims
    if decoded.header.get("typ", "").lower() not in ("at+jwt", "application/at+jwt"):
        return None  # RFC 9068 §4: an ID token is not an access token
    exp = claims.get("exp")
    if claims.get("iss") != issuer or not isinstance(exp, int) or exp <= time.time():
        return None
    if not isinstance(claims.get("jti"), str) or store.get("revoked-jti:" + claims["jti"]) is not None:
        return None
    return claims


def revoke_access_token(store: Store, jti: str, exp: float) -> None:
    remaining = exp - time.time()
    if remaining > 0:
        store.set("revoked-jti:" + jti, b"1", remaining + 1)


# --- refresh tokens ---------------------------------------------------------------------------

def create_refresh_token(*, client_id: str, user_id: str, scope: str, grant: dict, family_id: str,
                         family_expires_at: datetime, access_jti: str, access_exp: float) -> str:
    token = secrets.token_urlsafe(32)
    db.session.add(RefreshToken(token_hash=token_hash(token), family_id=family_id, client_id=client_id,
                                user_id=user_id, scope=scope, grant=grant, access_jti=access_jti,
                                access_expires_at=access_exp, expires_at=family_expires_at))
    db.session.commit()
    return token


def find_refresh_token(token: str | None) -> RefreshToken | None:
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    return db.session.scalar(select(RefreshToken).where(RefreshToken.token_hash == token_hash(token)))


def refresh_token_usable(row: RefreshToken, store: Store) -> bool:
    """Not revoked, not past the family's absolute lifetime (it may have been used: rotation
    decides what a used token gets)."""
    return (row.revoked_at is None and row.expires_at > utcnow()
            and store.get("family-revoked:" + row.family_id) is None)


def refresh_token_active(row: RefreshToken, store: Store) -> bool:
    return row.used_at is None and refresh_token_usable(row, store)


def claim_refresh_token(row: RefreshToken) -> bool:
    """Mark the token used. Atomic: of concurrent callers exactly one gets True."""
    result = db.session.execute(
        update(RefreshToken).where(RefreshToken.id == row.id, RefreshToken.used_at.is_(None),
                                   RefreshToken.revoked_at.is_(None)).values(used_at=utcnow()))
    db.session.commit()
    return result.rowcount == 1


def revoke_family(store: Store, family_id: str, ttl: int) -> None:
    """Revoke every refresh token of a family and the access tokens they carried."""
    now = utcnow()
    # Marker first: covers tokens of the family still being issued by a concurrent request.
    store.set("family-revoked:" + family_id, b"1", ttl)
    db.session.execute(update(RefreshToken).where(RefreshToken.family_id == family_id,
                                                  RefreshToken.revoked_at.is_(None)).values(revoked_at=now))
    db.session.commit()
    for jti, exp in db.session.execute(select(RefreshToken.access_jti, RefreshToken.access_expires_at)
                                       .where(RefreshToken.family_id == family_id)):
        if jti and exp:
            revoke_access_token(store, jti, exp)


def revoke_user_tokens(store: Store, user_id: str, ttl: int, client_id: str | None = None) -> None:
    query = select(RefreshToken.family_id).where(RefreshToken.user_id == user_id,
                                                 RefreshToken.revoked_at.is_(None)).distinct()
    if client_id:
        query = query.where(RefreshToken.client_id == client_id)
    for family_id in list(db.session.scalars(query)):
        revoke_family(store, family_id, ttl)


def family_expiry(ttl: int) -> datetime:
    return utcnow() + timedelta(seconds=ttl)


# --- the grace window: a replay shortly after rotation gets the same successor ----------------

def _grace_cipher(old_token: str) -> AESGCM:
    # Keyed by the old token itself: only its holder can read the successor from the store.
    return AESGCM(hashlib.sha256(b"idp-refresh-grace:" + old_token.encode()).digest())


def remember_successor(store: Store, old_token: str, response: dict, ttl: int) -> None:
    nonce = secrets.token_bytes(12)
    blob = nonce + _grace_cipher(old_token).encrypt(nonce, json.dumps(response).encode(), None)
    store.set("refresh-grace:" + token_hash(old_token), blob, ttl)


def recall_successor(store: Store, old_token: str, wait: float = 3.0) -> dict | None:
    """The successor response issued for `old_token`, waiting briefly for a concurrent
    rotation that is still issuing it."""
    deadline = time.monotonic() + wait
    while True:
        blob = store.get("refresh-grace:" + token_hash(old_token))
        if blob is not None:
            return json.loads(_grace_cipher(old_token).decrypt(blob[:12], blob[12:], None))
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)
