"""Signing keys: generate, encrypt at rest, rotate, publish.

    created as "next" --(key_prepublish_ttl: every cached JWKS has it)--> "current" (signs)
    "current" --(a newer key is promoted)--> "retired" (still published)
    "retired" --(remove_after: every token it signed has expired)--> deleted

Private keys are stored AES-256-GCM encrypted with the key-encryption key (KEK) from the
settings. Every process keeps a `KeyRing`: the decrypted signing key and the public JWKS,
reloaded at most every `key_refresh_ttl` seconds, so a rotation reaches every worker and node
within that time, and no request pays for key loading or decryption.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from joserfc.jwk import KeySet, RSAKey
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from ..storage.models import SigningKey, db, utcnow

NEXT, CURRENT, RETIRED = "next", "current", "retired"


@dataclass(frozen=True)
class KeyPolicy:
    rotation_days: int
    prepublish_ttl: int
    # Longest lifetime of anything signed (ID or access token) plus the JWKS cache time.
    retire_ttl: int


def encrypt_private_key(kek: bytes, kid: str, pem: bytes) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(kek).encrypt(nonce, pem, kid.encode())


def decrypt_private_key(kek: bytes, kid: str, blob: bytes) -> bytes:
    return AESGCM(kek).decrypt(blob[:12], blob[12:], kid.encode())


def _new_key(kek: bytes, state: str, now: datetime) -> SigningKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    kid = secrets.token_urlsafe(12)
    public = RSAKey.import_key(pem).as_dict(private=False)
    public.update(kid=kid, use="sig", alg="RS256")
    return SigningKey(kid=kid, alg="RS256", state=state, public_jwk=public,
                      private_key_encrypted=encrypt_private_key(kek, kid, pem), created_at=now,
                      activated_at=now if state == CURRENT else None)


def list_keys(session=None) -> list[SigningKey]:
    session = session or db.session
    return list(session.scalars(select(SigningKey).order_by(SigningKey.created_at)))


def ensure_signing_key(kek: bytes) -> SigningKey | None:
    """First start: create a current key if there is none. Returns the new key, if any."""
    if db.session.scalar(select(SigningKey).where(SigningKey.state == CURRENT)):
        return None
    key = _new_key(kek, CURRENT, utcnow())
    db.session.add(key)
    db.session.commit()
    return key


def rotate(kek: bytes, immediate: bool = False, policy: KeyPolicy | None = None, session=None,
           now: datetime | None = None) -> SigningKey:
    """Create the next key. It signs once published for `prepublish_ttl` (see maintain());
    `immediate` promotes it at once (for a compromised key: caches may briefly miss it)."""
    session = session or db.session
    now = now or utcnow()
    has_current = session.scalar(select(SigningKey.kid).where(SigningKey.state == CURRENT))
    key = _new_key(kek, NEXT if has_current else CURRENT, now)
    session.add(key)
    session.commit()
    if has_current and immediate:
        _promote(session, key.kid, now, policy.retire_ttl if policy else 86400)
    return key


def _promote(session, kid: str, now: datetime, retire_ttl: int) -> None:
    session.execute(
        update(SigningKey).where(SigningKey.state == CURRENT).values(
            state=RETIRED, retired_at=now, remove_after=now + timedelta(seconds=retire_ttl))
    )
    session.execute(update(SigningKey).where(SigningKey.kid == kid).values(state=CURRENT, activated_at=now))
    session.commit()


def maintain(kek: bytes, policy: KeyPolicy, now: datetime | None = None, session=None) -> list[str]:
    """Advance the key life cycle; safe to run from every process (idempotent). Returns what changed."""
    session = session or db.session
    now = now or utcnow()
    changes = []
    for key in list(session.scalars(select(SigningKey).where(SigningKey.state == NEXT)
                                    .order_by(SigningKey.created_at))):
        if key.created_at + timedelta(seconds=policy.prepublish_ttl) <= now:
            _promote(session, key.kid, now, policy.retire_ttl)
            changes.append(f"promoted {key.kid}")
    # Read before writing: most calls change nothing and should not take SQLite's write lock.
    if session.scalar(select(SigningKey.kid).where(SigningKey.state == RETIRED, SigningKey.remove_after <= now)):
        gone = session.execute(
            delete(SigningKey).where(SigningKey.state == RETIRED, SigningKey.remove_after <= now)
            .returning(SigningKey.kid)
        ).scalars().all()
        session.commit()
        changes += [f"removed {kid}" for kid in gone]
    current = session.scalar(select(SigningKey).where(SigningKey.state == CURRENT))
    has_next = session.scalar(select(SigningKey.kid).where(SigningKey.state == NEXT))
    due = current and current.activated_at + timedelta(days=policy.rotation_days) <= now
    if due and not has_next:
        # Same clock as the rest of this pass: the new key's pre-publication counts from `now`.
        changes.append(f"created {rotate(kek, session=session, now=now).kid}")
    return changes


class KeyRing:
    """Per-process cache of the signing key and the JWKS (thread-safe)."""

    def __init__(self, kek: bytes, policy: KeyPolicy, refresh_ttl: int, lock=None):
        self.kek = kek
        self.policy = policy
        self.refresh_ttl = refresh_ttl
        # A store-based lock so that one process at a time runs maintain() (optional).
        self.maintenance_lock = lock
        self._lock = threading.Lock()
        self._loaded_at = 0.0
        self._signing: RSAKey | None = None
        self._public: KeySet = KeySet([])
        self._jwks: dict = {"keys": []}

    def _refresh_if_stale(self) -> None:
        if time.monotonic() - self._loaded_at < self.refresh_ttl:
            return
        with self._lock:
            if time.monotonic() - self._loaded_at < self.refresh_ttl:
                return
            self.reload()

    def reload(self) -> None:
        # A session of its own: this runs in the middle of whatever request needed a key.
        with Session(db.engine) as session:
            if self.maintenance_lock is None or self.maintenance_lock():
                maintain(self.kek, self.policy, session=session)
            keys = list_keys(session)
            self._load(keys)

    def _load(self, keys: list[SigningKey]) -> None:
        # Importing an RSA private key validates it (~50 ms in cryptography): only a key this
        # process has not seen yet is decrypted and imported; the periodic reload reuses it.
        signing = None
        for key in keys:
            if key.state == CURRENT:
                if self._signing is not None and self._signing.kid == key.kid:
                    signing = self._signing
                else:
                    pem = decrypt_private_key(self.kek, key.kid, key.private_key_encrypted)
                    signing = RSAKey.import_key(pem, {"kid": key.kid, "use": "sig", "alg": key.alg})
        # Newest first: clients that pick the first matching key get the current one.
        order = {CURRENT: 0, NEXT: 1, RETIRED: 2}
        public = [k.public_jwk for k in sorted(keys, key=lambda k: order.get(k.state, 3))]
        if public != self._jwks["keys"]:
            self._public = KeySet([RSAKey.import_key(jwk) for jwk in public])
            self._jwks = {"keys": public}
        self._signing = signing
        self._loaded_at = time.monotonic()

    def invalidate(self) -> None:
        self._loaded_at = 0.0

    def signing_key(self) -> RSAKey:
        self._refresh_if_stale()
        if self._signing is None:
            raise RuntimeError("no current signing key: run `idp keys rotate`")
        return self._signing

    def public_keys(self) -> KeySet:
        self._refresh_if_stale()
        return self._public

    def jwks(self) -> dict:
        self._refresh_if_stale()
        return self._jwks
