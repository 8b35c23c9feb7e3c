"""Models of multi-factor authentication (TOTP factors, recovery codes, trusted browsers).
Passkeys live in passkey_models.py. The per-client switch is `Client.require_mfa`."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from .models import AwareDateTime, db, new_id, utcnow


class TotpFactor(db.Model):
    """An authenticator app (RFC 6238). Only confirmed factors are stored: enrolment keeps the
    candidate secret in the store until the user proves it with a valid code."""

    __tablename__ = "mfa_totp_factors"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    label: Mapped[str] = mapped_column(String(100))
    # AES-256-GCM with the key-encryption key (services/keys.py), bound to the factor id.
    secret_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(AwareDateTime())


class RecoveryCode(db.Model):
    """One single-use recovery code; only a keyed hash is stored (the codes carry 50 random
    bits, so a fast hash is enough: no per-code argon2)."""

    __tablename__ = "mfa_recovery_codes"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
    used_at: Mapped[datetime | None] = mapped_column(AwareDateTime())


class TrustedBrowser(db.Model):
    """"Trust this browser": the cookie holds a random id; only its SHA-256 is stored, so
    deleting the row (log out everywhere, password reset, account page) revokes it."""

    __tablename__ = "mfa_trusted_browsers"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    user_agent: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(AwareDateTime())
