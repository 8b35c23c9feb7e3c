"""Models of WebAuthn passkeys."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from .models import AwareDateTime, db, new_id, utcnow


class WebAuthnCredential(db.Model):
    """One registered passkey (a WebAuthn public key credential, W3C WebAuthn Level 3 §4).

    `credential_id` is the authenticator's id, base64url (at most 1023 bytes, §5.8.3), unique
    across users: an assertion names it and we find the user from it (passwordless sign-in).
    `user_handle` is the random per-user id the authenticator stores with a discoverable
    credential (§14.6.1: never the email); all of a user's rows carry the same value.
    `backup_eligible` / `backed_up` are the BE and BS flags of the signed authenticator data
    (§6.1): they decide whether the key is hardware-bound (amr "hwk") or synced ("swk")."""

    __tablename__ = "webauthn_credentials"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    credential_id: Mapped[str] = mapped_column(String(1400), unique=True)
    user_handle: Mapped[bytes] = mapped_column(LargeBinary)
    public_key: Mapped[bytes] = mapped_column(LargeBinary)  # COSE_Key (RFC 9052 §7)
    # uint32 in the authenticator data (§6.1.1): BigInteger so that values past 2**31 fit.
    sign_count: Mapped[int] = mapped_column(BigInteger, default=0)
    transports: Mapped[list] = mapped_column(JSON, default=list)
    aaguid: Mapped[str] = mapped_column(String(36))
    # What the browser reported at registration ("platform" / "cross-platform"); not signed,
    # so shown to the user but never used for a security decision.
    attachment: Mapped[str | None] = mapped_column(String(16))
    backup_eligible: Mapped[bool] = mapped_column(Boolean, default=False)
    backed_up: Mapped[bool] = mapped_column(Boolean, default=False)
    name: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(AwareDateTime())
