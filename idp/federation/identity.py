"""The protocol-neutral user record that every upstream login produces.

A SAML response (and, later, an upstream OIDC ID token) is turned into an `ExternalIdentity`
by the protocol module plus `mapping.py`; provisioning, linking and session start only ever
see this record (the shape of SATOSA's `InternalData`).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ExternalIdentity:
    provider: str                 # connection name, e.g. "corp"
    protocol: str                 # "saml" (later "oidc")
    subject: str                  # stable id at the upstream provider (NameID or a mapped attribute)
    email: str | None = None
    email_verified: bool = False
    # OIDC standard claims we keep on the account: name, given_name, family_name.
    claims: dict = field(default_factory=dict)
    # Scalar user attributes for the policy module (idp/policy), e.g. department.
    attributes: dict = field(default_factory=dict)
    groups: tuple[str, ...] = ()
    # Roles the connection's map grants (policy module); synced at each login, see provisioning.
    roles: tuple[str, ...] = ()
    acr: str | None = None        # e.g. the SAML AuthnContextClassRef
    session_index: str | None = None
    # What the protocol module needs to log this session out upstream (SAML: NameID, its format
    # and qualifiers, SessionIndex); opaque to everything else.
    upstream_session: dict = field(default_factory=dict)
