"""Models of the account features (verification, reset, audit, back-channel logout)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from .models import AwareDateTime, db, new_id, utcnow


class AccountToken(db.Model):
    """A single-use link sent by mail (email verification, password reset).

    issued --(consumed once: UPDATE ... WHERE used_at IS NULL)--> used
    issued --(expires_at passes, or a newer password makes it moot)--> dead
    Only the SHA-256 of the token is stored: a database dump yields no usable link."""

    __tablename__ = "account_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # "verify_email" or "reset_password": a token of one purpose is useless for the other.
    purpose: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(AwareDateTime())
    used_at: Mapped[datetime | None] = mapped_column(AwareDateTime())
