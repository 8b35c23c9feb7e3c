"""Models of login protection, audit and back-channel logout.

Lockout and rate-limit counters are not here: they live in the ephemeral store (atomic incr
with a TTL). What must survive a restart is: the audit trail, and the queue of back-channel
logout deliveries (OpenID Back-Channel Logout 1.0 §2.7: the OP keeps trying).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .models import AwareDateTime, db, new_id, utcnow


class AuthEvent(db.Model):
    """One row per authentication-relevant event: login attempts (success or failure, with the
    reason), lockouts, logouts, password changes, sessions ended. `user_id` is set when the
    account is known; `email` is what was typed. On account deletion the row is kept but made
    pseudonymous (audit.pseudonymize_user_events): user_id, email, ip, user agent cleared and
    `pseudonym` set to a keyed hash of the old user id."""

    __tablename__ = "auth_events"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    email: Mapped[str | None] = mapped_column(String(320))
    event: Mapped[str] = mapped_column(String(32))
    result: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(64))
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    pseudonym: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow, index=True)


class BackchannelDelivery(db.Model):
    """A logout token owed to a client (OpenID Back-Channel Logout 1.0 §2.5).

    pending --POST 2xx--> delivered
    pending --error--> pending (next_attempt_at pushed back, doubling) --max attempts / 4xx--> failed

    A worker claims a due row by one conditional UPDATE (claimed_until in the past), so of
    several workers exactly one sends it at a time."""

    __tablename__ = "backchannel_deliveries"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id", ondelete="CASCADE"), index=True)
    uri: Mapped[str] = mapped_column(Text)
    # Logout token claims without iat/exp (added, and signed, at each attempt); iss is that of the
    # session (older rows have none: the delivering node's issuer is used).
    claims: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
    claimed_until: Mapped[datetime | None] = mapped_column(AwareDateTime())
    last_attempt_at: Mapped[datetime | None] = mapped_column(AwareDateTime())
    last_result: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)

    __table_args__ = (Index("ix_backchannel_deliveries_status_next", "status", "next_attempt_at"),)
