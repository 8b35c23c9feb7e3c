"""From an ExternalIdentity to a local account, as the connection's provisioning mode says.

    linked already (connection, subject)  -> that account
    jit             -> a new account; refused if the email belongs to an unlinked account
                       (no silent takeover of a password account)
    link-by-email   -> the account with that (verified upstream) email, else a new one
    existing-only   -> the account with that (verified upstream) email, else refused

Protocol-neutral: it sees only the ExternalIdentity, never SAML.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..errors import IdpError, InvalidInput
from ..services.users import create_user, normalize_email
from ..storage.federation_models import FederatedIdentity
from ..storage.models import User, db, utcnow
from .identity import ExternalIdentity

logger = logging.getLogger("idp.federation")


class ProvisioningRefused(IdpError):
    pass


def provision_user(connection, identity: ExternalIdentity) -> User:
    """Find, link or create the account. Raises ProvisioningRefused (message safe to show)."""
    link = db.session.scalar(select(FederatedIdentity).where(
        FederatedIdentity.connection_id == connection.id, FederatedIdentity.subject == identity.subject))
    if link is not None:
        user = db.session.get(User, link.user_id)
    else:
        user = _find_or_create(connection, identity)
        link = FederatedIdentity(connection_id=connection.id, subject=identity.subject, user_id=user.id)
        db.session.add(link)
    if user is None or not user.active:
        db.session.rollback()
        raise ProvisioningRefused("This account is disabled.")
    _update_profile(user, identity)
    link.last_login_at = utcnow()
    try:
        db.session.commit()
    except IntegrityError:  # two first logins of the same subject at once: the other one linked
        db.session.rollback()
        return provision_user(connection, identity)
    _set_attributes(user, identity)
    _sync_roles(user, link, identity)
    return user


def _find_or_create(connection, identity: ExternalIdentity) -> User:
    if not identity.email:
        raise ProvisioningRefused("The identity provider did not send an email address.")
    try:
        email = normalize_email(identity.email)
    except InvalidInput:
        raise ProvisioningRefused("The identity provider sent an invalid email address.") from None
    existing = db.session.scalar(select(User).where(User.email == email))
    mode = connection.provisioning
    if existing is not None:
        if mode == "jit":
            raise ProvisioningRefused("An account with this email address already exists and is not linked to "
                                      "this identity provider. Ask the administrator to link it.")
        if not identity.email_verified:
            raise ProvisioningRefused("The identity provider's email address is not trusted for linking.")
        return existing
    if mode == "existing-only":
        raise ProvisioningRefused("There is no account for this user here. Ask the administrator for access.")
    try:
        return create_user(email, None, name=identity.claims.get("name"), verified=identity.email_verified)
    except IdpError:
        db.session.rollback()
        raise ProvisioningRefused("The account could not be created.") from None


def _update_profile(user: User, identity: ExternalIdentity) -> None:
    """The IdP is the source of truth for what it sends: names follow it at each login."""
    if name := identity.claims.get("name"):
        user.name = name
    profile = dict(user.profile or {})
    for claim in ("given_name", "family_name"):
        if value := identity.claims.get(claim):
            profile[claim] = value
    if profile != (user.profile or {}):
        user.profile = profile


def _sync_roles(user: User, link: FederatedIdentity, identity: ExternalIdentity) -> None:
    """Roles the connection's map grants follow the IdP at each login: added when the upstream
    sends the matching group, removed when it stops; roles assigned otherwise are untouched."""
    before = set(link.granted_roles or ())
    if not identity.roles and not before:
        return
    from ..policy import admin

    granted = admin.sync_granted_roles(user, set(identity.roles), before)
    if unknown := set(identity.roles) - granted - {r.name for r in user.roles}:
        logger.warning("saml role mapping names unknown roles", extra={"fields": {"roles": sorted(unknown)[:10]}})
    if granted != before:
        link.granted_roles = sorted(granted)
        db.session.commit()


def _set_attributes(user: User, identity: ExternalIdentity) -> None:
    """Mapped attributes feed the policy module (idp/policy) as user attributes."""
    if not identity.attributes:
        return
    try:
        from ..policy import admin
    except ImportError:
        return
    import json

    pairs = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in identity.attributes.items()]
    try:
        admin.set_attributes(user, pairs)
    except IdpError as exc:
        db.session.rollback()
        logger.warning("saml attribute not stored", extra={"fields": {"error": str(exc)[:200]}})
