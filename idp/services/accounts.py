"""Self-service accounts: sign-up, email verification, password reset and change, export and
deletion. Plain functions: they return the mail to send (`Mail`) instead of sending it, so the
edge decides when (the hosted pages send in the background, see interaction/accounts.py).

    sign-up --(new email)--> user (unverified) + verify_email mail
            --(known email)--> nothing changes + account_exists mail to the owner
    verify link --(consume once)--> email_verified
    forgot password --(known email)--> reset_password mail;   unknown: nothing, same answer
                    --(SAML-linked, no password)--> federated_account mail ("Sign in with NAME"),
                                                    no link: the mailbox must not become a way
                                                    around the upstream IdP
    reset link + new password --(consume once)--> new hash, every session and refresh token
                                                  revoked, password_changed mail
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..errors import Conflict, IdpError, InvalidCredentials, InvalidInput
from ..settings import Settings
from ..storage.federation_models import FederatedIdentity, SamlConnection
from ..storage.models import Consent, RefreshToken, User, db, utcnow
from ..storage.passkey_models import WebAuthnCredential
from ..storage.store import Store
from . import account_tokens, audit, sessions, tokens, users
from .account_tokens import RESET_PASSWORD, VERIFY_EMAIL
from .passwords import check_new_password

MAX_NAME_LENGTH = 200
# Re-entering the password on a signed-in page (change it, delete the account, remove the last
# second factor): tries per user per window, one budget for all those forms together.
REAUTH_LIMIT, REAUTH_WINDOW = 5, 900
# A user without a password (SAML-provisioned, passkey-only) re-authenticates by signing in
# again: the session's auth_time (OIDC Core §2: the last interactive sign-in) may be at most
# this many seconds old.
RECENT_SIGN_IN_TTL = 300


class RateLimited(IdpError):
    """Too many attempts; `retry_after` seconds until the window resets (HTTP 429)."""

    def __init__(self, retry_after: int):
        super().__init__("too many attempts, try again later")
        self.retry_after = retry_after


@dataclass
class Mail:
    to: str
    template: str
    context: dict = field(default_factory=dict)


def check_rate(store: Store, key: str, limit: int, window: int) -> None:
    """Count one attempt in a fixed window (the store's atomic incr: exact under concurrent
    requests on every worker); raise RateLimited past `limit`."""
    count = store.incr("rate:" + key, window)
    if count > limit:
        raise RateLimited(max(1, math.ceil(store.ttl("rate:" + key) or window)))


class ReauthRequired(IdpError):
    """A user without a password whose sign-in is older than RECENT_SIGN_IN_TTL: they must sign
    in again. `connection` names the SAML connection the account signs in through, if any."""

    def __init__(self, connection: str | None):
        super().__init__("sign in again to confirm this change")
        self.connection = connection


def federated_connection(user: User) -> str | None:
    """The SAML connection a password-less account signs in through (its newest link), or None
    (the account has a password, or no link)."""
    if user.password_hash is not None:
        return None
    return db.session.scalar(
        select(SamlConnection.name).join(FederatedIdentity, FederatedIdentity.connection_id == SamlConnection.id)
        .where(FederatedIdentity.user_id == user.id).order_by(FederatedIdentity.id.desc()).limit(1))


def check_password_again(store: Store, user: User, password: str, *, event: str, session: dict | None = None,
                         ip: str | None = None, user_agent: str | None = None) -> None:
    """Re-authentication of a signed-in user before a sensitive change. Counted before the
    check (exact under concurrency), REAUTH_LIMIT per REAUTH_WINDOW per user, so that a stolen
    session is no password oracle. Raises RateLimited, or InvalidCredentials after auditing
    `event` failure bad_password.

    A user without a password has none to re-enter: their `session` (the current SSO session)
    must have signed in at most RECENT_SIGN_IN_TTL seconds ago, else ReauthRequired (audited
    `event` failure stale_sign_in; no try of the budget is used, there is nothing to guess)."""
    if user.password_hash is None:
        auth_time = (session or {}).get("auth_time")
        if (session is None or session.get("user_id") != user.id or not isinstance(auth_time, int | float)
                or time.time() - auth_time > RECENT_SIGN_IN_TTL):
            audit.record_event(event, "failure", user_id=user.id, reason="stale_sign_in", ip=ip,
                               user_agent=user_agent)
            raise ReauthRequired(federated_connection(user))
        return
    check_rate(store, "reauth:" + user.id, REAUTH_LIMIT, REAUTH_WINDOW)
    try:
        users.authenticate(user.email, password)
    except InvalidCredentials:
        audit.record_event(event, "failure", user_id=user.id, reason="bad_password", ip=ip, user_agent=user_agent)
        raise


def when() -> str:
    return utcnow().strftime("%Y-%m-%d %H:%M UTC")


# --- sign-up and verification ---------------------------------------------------------------

def check_signup(settings: Settings, name: str, email: str, password: str) -> tuple[str, dict[str, str]]:
    """(normalised email, {field: message}); an empty dict means the form is acceptable."""
    errors: dict[str, str] = {}
    name = name.strip()
    if not name:
        errors["name"] = "Enter your name."
    elif len(name) > MAX_NAME_LENGTH:
        errors["name"] = f"Use at most {MAX_NAME_LENGTH} characters."
    try:
        email = users.normalize_email(email)
    except InvalidInput:
        errors["email"] = "Enter an email address like name@example.com."
    try:
        check_new_password(password, email=email, min_length=settings.password_min_length)
    except InvalidInput as exc:
        errors["password"] = str(exc)
    return email, errors


def sign_up(settings: Settings, *, name: str, email: str, password: str) -> Mail:
    """Create an unverified user, or (email already registered) change nothing. The caller
    answers the same in both cases (no account enumeration); the mail tells the owner.
    Expects check_signup() to have passed."""
    existing = db.session.scalar(select(User).where(User.email == email))
    if existing is None:
        try:
            user = users.create_user(email, password, name=name.strip(), verified=False)
        except (Conflict, IntegrityError):  # a concurrent sign-up with the same email won
            db.session.rollback()
            existing = db.session.scalar(select(User).where(User.email == email))
        else:
            return verification_mail(settings, user)
    else:
        users.hash_password(password)  # the same argon2 cost as creating an account: same timing
    return Mail(existing.email, "account_exists", {"name": existing.name, "link": settings.issuer + "/forgot-password"})


def verification_mail(settings: Settings, user: User) -> Mail:
    token = account_tokens.create_token(user.id, VERIFY_EMAIL, settings.verify_email_ttl)
    return Mail(user.email, "verify_email", {"name": user.name, "hours": settings.verify_email_ttl // 3600 or 1,
                                             "link": f"{settings.issuer}/verify-email?token={token}"})


def verify_email(token: str | None) -> User | None:
    """Consume a verification link (single use, atomic); the user, or None if it is invalid."""
    user = account_tokens.consume_token(token, VERIFY_EMAIL)
    if user is not None and not user.email_verified:
        user.email_verified = True
        db.session.commit()
    return user


# --- password reset and change ---------------------------------------------------------------

def reset_mail(settings: Settings, email: str) -> Mail | None:
    """The reset mail for a registered, active account; None otherwise (the caller answers the
    same either way and runs this off the request, so timing says nothing)."""
    try:
        email = users.normalize_email(email)
    except InvalidInput:
        return None
    user = db.session.scalar(select(User).where(User.email == email))
    if user is None or not user.active:
        return None
    if (connection := federated_connection(user)) is not None:
        # Keycloak's rule: an account that signs in through an upstream IdP gets no local
        # password by mail, or whoever reads the mailbox could keep signing in after the IdP
        # disabled the user. The mail says where to sign in instead.
        return Mail(user.email, "federated_account", {
            "name": user.name, "connection": connection,
            "link": f"{settings.issuer}/account/login?connection={connection}"})
    token = account_tokens.create_token(user.id, RESET_PASSWORD, settings.reset_password_ttl)
    return Mail(user.email, "reset_password", {"name": user.name, "minutes": settings.reset_password_ttl // 60 or 1,
                                               "link": f"{settings.issuer}/reset-password?token={token}"})


def reset_password(settings: Settings, store: Store, token: str | None, password: str) -> tuple[User | None, Mail | None]:
    """Set a new password through a reset link. Raises InvalidInput (weak password) before the
    link is used; returns (None, None) if the link is unknown, used or expired. On success every
    session and refresh token of the user is revoked and other reset links die."""
    user = account_tokens.load_token_user(token, RESET_PASSWORD)
    if user is None or federated_connection(user) is not None:  # a link made before the account was linked
        return None, None
    check_new_password(password, email=user.email, min_length=settings.password_min_length)
    user = account_tokens.consume_token(token, RESET_PASSWORD)
    if user is None:  # a concurrent request used it first
        return None, None
    _store_password(user, password)
    # Following the link proved control of the mailbox.
    user.email_verified = True
    db.session.commit()
    revoke_everything(settings, store, user.id)
    audit.record_event("password_change", "success", user_id=user.id, email=user.email, reason="reset_link")
    return user, Mail(user.email, "password_changed", {"name": user.name, "when": when()})


def change_password(settings: Settings, store: Store, user: User, current: str, new: str, *,
                    session: dict | None = None, ip: str | None = None, user_agent: str | None = None) -> Mail:
    """Raises InvalidInput (weak new password), RateLimited, InvalidCredentials or
    ReauthRequired (check_password_again: the current one, or a recent sign-in). Every session and refresh token is revoked; the
    caller gives this browser a new session."""
    if (connection := federated_connection(user)) is not None:
        # Its IdP holds the credentials: a local password would outlive a disable there (and
        # reopen the mailbox reset that reset_mail refuses such accounts).
        raise InvalidInput(f"Your account signs in through {connection}; its password is managed there.")
    # The new password first: a weak one is refused without using up a try of the current one.
    check_new_password(new, email=user.email, min_length=settings.password_min_length)
    check_password_again(store, user, current, event="password_change", session=session, ip=ip,
                         user_agent=user_agent)
    _store_password(user, new)
    revoke_everything(settings, store, user.id)
    audit.record_event("password_change", "success", user_id=user.id, email=user.email, reason="account_page")
    return Mail(user.email, "password_changed", {"name": user.name, "when": when()})


def _store_password(user: User, password: str) -> None:
    user.password_hash = users.hash_password(password)
    db.session.commit()
    account_tokens.revoke_tokens(user.id, RESET_PASSWORD)


def revoke_everything(settings: Settings, store: Store, user_id: str) -> None:
    """End every SSO session and revoke every refresh token (and the access tokens they
    carried) of the user."""
    sessions.end_all_sessions(store, user_id)
    tokens.revoke_user_tokens(store, user_id, settings.refresh_token_ttl)


# --- privacy: export and deletion ------------------------------------------------------------

def export_user(store: Store, user: User) -> dict:
    """Everything we hold about the user, as JSON-ready data (GDPR Art. 15 and 20)."""
    consents = db.session.scalars(select(Consent).where(Consent.user_id == user.id).order_by(Consent.client_id))
    grants = db.session.scalars(select(RefreshToken).where(RefreshToken.user_id == user.id,
                                                           RefreshToken.revoked_at.is_(None))
                                .order_by(RefreshToken.created_at))
    data = {
        "profile": {**users.describe(user), "profile": user.profile or {},
                    "updated_at": user.updated_at.isoformat()},
        "sessions": [_session_view(s) for s in sessions.list_sessions(store, user.id)],
        "consents": [{"client_id": c.client_id, "scope": c.scope, "created_at": c.created_at.isoformat(),
                      "updated_at": c.updated_at.isoformat()} for c in consents],
        "refresh_tokens": [{"client_id": r.client_id, "scope": r.scope, "created_at": r.created_at.isoformat(),
                            "expires_at": r.expires_at.isoformat(), "used": r.used_at is not None}
                           for r in grants],
    }
    data["passkeys"] = [_passkey_view(p) for p in db.session.scalars(
        select(WebAuthnCredential).where(WebAuthnCredential.user_id == user.id).order_by(WebAuthnCredential.created_at))]
    data["audit_events"] = [audit.describe_event(e) for e in audit.list_events(user.id, limit=10000)]
    return data


def _passkey_view(p: WebAuthnCredential) -> dict:
    # The public key and user handle are opaque to the user; what identifies the passkey is here.
    return {"id": p.id, "name": p.name, "credential_id": p.credential_id, "aaguid": p.aaguid,
            "backup_eligible": p.backup_eligible, "transports": p.transports, "created_at": p.created_at.isoformat(),
            "last_used_at": p.last_used_at.isoformat() if p.last_used_at else None}


def _session_view(session: dict) -> dict:
    keep = ("sid", "created_at", "last_seen", "expires_at", "ip", "user_agent", "device", "amr", "acr")
    return {k: session[k] for k in keep if k in session}


def delete_account(settings: Settings, store: Store, user: User, password: str, *, session: dict | None = None,
                   ip: str | None = None, user_agent: str | None = None) -> Mail:
    """Delete the account after checking its password (check_password_again: raises
    RateLimited, InvalidCredentials or ReauthRequired)."""
    check_password_again(store, user, password, event="account_delete", session=session, ip=ip,
                         user_agent=user_agent)
    mail = Mail(user.email, "account_deleted", {"name": user.name, "when": when()})
    users.delete_user(user, store=store, refresh_token_ttl=settings.refresh_token_ttl)
    return mail


__all__ = ["InvalidCredentials", "Mail", "RateLimited", "ReauthRequired", "RECENT_SIGN_IN_TTL", "check_rate",
           "check_password_again", "federated_connection", "check_signup",
           "sign_up", "verify_email", "verification_mail", "reset_mail", "reset_password", "change_password",
           "export_user", "delete_account", "revoke_everything"]
