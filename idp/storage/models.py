"""SQLAlchemy 2 typed models. Migrations in migrations/ must match these exactly
(tests/unit/test_migrations.py runs autogenerate and expects no diff)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    LargeBinary,
    MetaData,
    String,
    Text,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

# Stable constraint names, so that migrations are identical on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


db = SQLAlchemy(model_class=Base)


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class AwareDateTime(TypeDecorator):
    """Timezone-aware in Python; SQLite stores naive values, so put UTC back on read."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to an aware column")
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class User(db.Model):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    # Normalised (trimmed, lower-cased) so that uniqueness is case-insensitive.
    email: Mapped[str] = mapped_column(String(320), unique=True)
    email_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    name: Mapped[str | None] = mapped_column(String(200))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    # Other OIDC standard claims (given_name, phone_number, address, locale, ...).
    profile: Mapped[dict] = mapped_column(JSON, default=dict)
    disabled_at: Mapped[datetime | None] = mapped_column(AwareDateTime())
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow, onupdate=utcnow)

    # Loaded when used (CLI, policy): not a second query on every user load (userinfo, login).
    roles: Mapped[list[Role]] = relationship(secondary="user_roles", lazy="select")

    def get_user_id(self) -> str:  # Authlib's user protocol
        return self.id

    @property
    def active(self) -> bool:
        return self.disabled_at is None


class Role(db.Model):
    __tablename__ = "roles"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)


class UserRole(db.Model):
    __tablename__ = "user_roles"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    role_id: Mapped[int] = mapped_column(ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
    # Authorization policy (idp/policy): an assignment stops counting at this instant.
    expires_at: Mapped[datetime | None] = mapped_column(AwareDateTime())


class Client(db.Model):
    """A registered OAuth client. Its protocol behaviour lives in protocol/clients.py;
    `client_metadata` holds RFC 7591 metadata (redirect_uris, grant_types, scope, ...)."""

    __tablename__ = "clients"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # SHA-256 of a 256-bit random secret: a slow hash would buy nothing and cost the token path.
    client_secret_hash: Mapped[str | None] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    client_metadata: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
    secret_rotated_at: Mapped[datetime | None] = mapped_column(AwareDateTime())
    # idp clients create --require-mfa: every login to this client passes a second factor (idp/mfa).
    require_mfa: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class SigningKey(db.Model):
    """RS256 keys: next (published, not signing) -> current (signing) -> retired (published
    until every token it signed has expired) -> deleted."""

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    alg: Mapped[str] = mapped_column(String(16), default="RS256")
    state: Mapped[str] = mapped_column(String(16))
    public_jwk: Mapped[dict] = mapped_column(JSON)
    # AES-256-GCM with the key-encryption key; nonce || ciphertext.
    private_key_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
    activated_at: Mapped[datetime | None] = mapped_column(AwareDateTime())
    retired_at: Mapped[datetime | None] = mapped_column(AwareDateTime())
    # After this instant no unexpired token can carry this key's signature.
    remove_after: Mapped[datetime | None] = mapped_column(AwareDateTime())


class RefreshToken(db.Model):
    """One row per refresh token; a login's successive tokens share a family.

    issued --(used once: rotated)--> used      reuse of a used token revokes the family
    issued --(revoke / logout / reuse)--> revoked
    Only the SHA-256 of the token is stored."""

    __tablename__ = "refresh_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    family_id: Mapped[str] = mapped_column(String(36), index=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    scope: Mapped[str] = mapped_column(Text)
    # What the ID token and userinfo need again at refresh time.
    grant: Mapped[dict] = mapped_column(JSON, default=dict)
    access_jti: Mapped[str | None] = mapped_column(String(64))
    access_expires_at: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
    # Absolute lifetime of the whole family: rotation does not extend it.
    expires_at: Mapped[datetime] = mapped_column(AwareDateTime())
    used_at: Mapped[datetime | None] = mapped_column(AwareDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(AwareDateTime())

    # Authlib's TokenMixin, as its RefreshTokenGrant needs it.
    def get_scope(self) -> str:
        return self.scope

    def check_client(self, client) -> bool:
        return self.client_id == client.get_client_id()


class Consent(db.Model):
    """Scopes a user granted to a client; asked again only for scopes not in this set."""

    __tablename__ = "consents"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id", ondelete="CASCADE"), primary_key=True)
    scope: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow, onupdate=utcnow)


class StoreEntry(db.Model):
    """The SQL backend of the ephemeral store (storage/store.py)."""

    __tablename__ = "store_entries"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[bytes | None] = mapped_column(LargeBinary)
    counter: Mapped[int] = mapped_column(BigInteger, default=0)
    # Unix time (seconds, float): cheap to compare in one SQL expression on every dialect.
    expires_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (Index("ix_store_entries_expires_at", "expires_at"),)


__all__ = [
    "Base", "db", "User", "Role", "UserRole", "Client", "SigningKey", "RefreshToken", "Consent", "StoreEntry",
    "utcnow", "new_id",
]


# Feature models live in their own modules; importing them here registers them on the
# shared metadata (Alembic and the app see one schema).
from . import (  # noqa: E402,F401
    account_models,
    federation_models,
    mfa_models,
    passkey_models,
    policy_models,
    security_models,
)
