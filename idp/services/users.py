"""User accounts: creation, lookup, passwords (argon2id through libpass), roles."""

from __future__ import annotations

from functools import lru_cache

from passlib.context import CryptContext
from sqlalchemy import select

from ..errors import Conflict, InvalidCredentials, InvalidInput, NotFound
from ..storage.models import Role, User, db, utcnow

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024


# OWASP Password Storage Cheat Sheet: argon2id, m=19 MiB, t=2, p=1. Settable with
# IDP_ARGON2_* (create_app calls configure_password_hashing); hashes made with other
# parameters or schemes verify and are re-hashed at the next successful login.
_ARGON2 = {"memory_cost": 19456, "time_cost": 2, "parallelism": 1}


def configure_password_hashing(memory_cost: int, time_cost: int, parallelism: int) -> None:
    _ARGON2.update(memory_cost=memory_cost, time_cost=time_cost, parallelism=parallelism)


def password_context() -> CryptContext:
    return _context(**_ARGON2)


@lru_cache(maxsize=8)
def _context(memory_cost: int, time_cost: int, parallelism: int) -> CryptContext:
    return CryptContext(schemes=["argon2", "pbkdf2_sha256"], deprecated="auto",
                        argon2__type="ID", argon2__memory_cost=memory_cost,
                        argon2__rounds=time_cost, argon2__parallelism=parallelism)


def normalize_email(email: str) -> str:
    email = (email or "").strip().lower()
    local, at, domain = email.partition("@")
    if not at or not local or "." not in domain or any(c.isspace() for c in email) or len(email) > 320:
        raise InvalidInput(f"invalid email address: {email!r}")
    return email


def check_password_rules(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"password must have at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(f"password must have at most {MAX_PASSWORD_LENGTH} characters")


def hash_password(password: str) -> str:
    return password_context().hash(password)


def get_role(name: str) -> Role:
    role = db.session.scalar(select(Role).where(Role.name == name))
    if role is None:
        raise NotFound(f"no role {name}")
    return role


def create_user(email: str, password: str | None, *, name: str | None = None, verified: bool = False,
                roles: list[str] = ()) -> User:
    """Raises InvalidInput or Conflict before writing anything."""
    email = normalize_email(email)
    if password is not None:
        check_password_rules(password)
    if db.session.scalar(select(User.id).where(User.email == email)):
        raise Conflict(f"a user with email {email} already exists")
    role_rows = [_get_or_create_role(r) for r in dict.fromkeys(roles)]
    user = User(email=email, name=name, email_verified=verified,
                password_hash=hash_password(password) if password is not None else None,
                roles=role_rows)
    db.session.add(user)
    db.session.commit()
    return user


def _get_or_create_role(name: str) -> Role:
    name = name.strip()
    if not name:
        raise InvalidInput("role name must not be empty")
    role = db.session.scalar(select(Role).where(Role.name == name))
    return role or Role(name=name)


def find_user(email_or_id: str) -> User:
    user = db.session.get(User, email_or_id)
    if user is None:
        try:
            email = normalize_email(email_or_id)
        except InvalidInput:
            email = None
        user = email and db.session.scalar(select(User).where(User.email == email))
    if not user:
        raise NotFound(f"no user {email_or_id}")
    return user


def list_users() -> list[User]:
    return list(db.session.scalars(select(User).order_by(User.created_at)))


def set_password(user: User, password: str) -> None:
    check_password_rules(password)
    user.password_hash = hash_password(password)
    db.session.commit()


def disable_user(user: User) -> None:
    if user.disabled_at is None:
        user.disabled_at = utcnow()
        db.session.commit()


def delete_user(user: User, *, store=None, refresh_token_ttl: int | None = None) -> None:
    """Delete the user and revoke everything first: every SSO session, every refresh token and
    the access tokens they carried (rows cascade away, but tokens already handed out would stay
    valid until they expire). The audit trail keeps a pseudonymous record. Defaults to the
    app's store and settings (the CLI runs in an app context)."""
    from . import audit, sessions, tokens

    if store is None or refresh_token_ttl is None:
        from flask import current_app

        idp = current_app.extensions["idp"]
        store, refresh_token_ttl = store or idp.store, refresh_token_ttl or idp.settings.refresh_token_ttl
    user_id = user.id
    sessions.end_all_sessions(store, user_id)
    tokens.revoke_user_tokens(store, user_id, refresh_token_ttl)
    audit.record_event("account_delete", "success", user_id=user_id, email=user.email)
    audit.pseudonymize_user_events(user_id)
    db.session.delete(user)
    db.session.commit()


# A hash of a random password: verifying against it costs the same as a real account, so
# response time does not tell whether an email is registered.
_DUMMY_HASH: list[str] = []


def authenticate(email: str, password: str) -> User:
    """Check an email and password. Raises InvalidCredentials (same message for unknown email,
    wrong password and disabled account). Upgrades outdated hashes transparently."""
    try:
        email = normalize_email(email)
    except InvalidInput:
        email = None
    user = email and db.session.scalar(select(User).where(User.email == email))
    context = password_context()
    if not user or not user.password_hash:
        if not _DUMMY_HASH:
            _DUMMY_HASH.append(context.hash("dummy-password-for-timing"))
        context.verify(password[:MAX_PASSWORD_LENGTH], _DUMMY_HASH[0])
        raise InvalidCredentials("invalid email or password")
    ok, new_hash = context.verify_and_update(password[:MAX_PASSWORD_LENGTH], user.password_hash)
    if not ok or not user.active:
        raise InvalidCredentials("invalid email or password")
    if new_hash:
        user.password_hash = new_hash
        db.session.commit()
    return user


def describe(user: User) -> dict:
    return {"id": user.id, "email": user.email, "email_verified": user.email_verified, "name": user.name,
            "roles": sorted(r.name for r in user.roles), "disabled": not user.active,
            "created_at": user.created_at.isoformat()}
