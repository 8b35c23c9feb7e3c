"""Models of SAML federation (upstream identity providers).

    saml_connections   one upstream IdP: its metadata (last good copy), mapping, provisioning mode
    saml_sp_keys       our SP key pairs for that connection: "current" signs; "previous" stays in
                       the SP metadata after a rotation until the operator removes it
    federated_identities  (connection, subject at the IdP) -> local user: the account link
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from .models import AwareDateTime, db, utcnow


class SamlConnection(db.Model):
    __tablename__ = "saml_connections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Used in URLs (/saml/NAME/...): lower-case letters, digits and dashes.
    name: Mapped[str] = mapped_column(String(64), unique=True)
    idp_entity_id: Mapped[str] = mapped_column(String(1024))
    # The last IdP metadata that parsed; a failed refresh never replaces it.
    idp_metadata_xml: Mapped[str] = mapped_column(Text)
    metadata_url: Mapped[str | None] = mapped_column(String(2048))
    metadata_fetched_at: Mapped[datetime | None] = mapped_column(AwareDateTime())
    metadata_checked_at: Mapped[datetime | None] = mapped_column(AwareDateTime())
    metadata_error: Mapped[str | None] = mapped_column(Text)
    attribute_map: Mapped[dict] = mapped_column(JSON, default=dict)
    provisioning: Mapped[str] = mapped_column(String(32), default="jit")
    sign_requests: Mapped[bool] = mapped_column(Boolean, default=True)
    allow_idp_initiated: Mapped[bool] = mapped_column(Boolean, default=False)
    email_domains: Mapped[list] = mapped_column(JSON, default=list)
    # The ACS hands the user to the MFA step (idp/mfa/flow.py) instead of starting the session.
    require_mfa: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Seconds of clock skew allowed on this IdP's timestamps; None: IDP_SAML_CLOCK_SKEW.
    clock_skew_ttl: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)


class SamlSpKey(db.Model):
    __tablename__ = "saml_sp_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("saml_connections.id", ondelete="CASCADE"), index=True)
    kid: Mapped[str] = mapped_column(String(64), unique=True)
    state: Mapped[str] = mapped_column(String(16))
    certificate_pem: Mapped[str] = mapped_column(Text)
    # AES-256-GCM with the key-encryption key (services.keys.encrypt_private_key), kid as AAD.
    private_key_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)


class FederatedIdentity(db.Model):
    __tablename__ = "federated_identities"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("saml_connections.id", ondelete="CASCADE"))
    subject: Mapped[str] = mapped_column(String(512))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(AwareDateTime())
    # Role names this link granted (attribute map `roles`): only these are removed when the
    # upstream stops sending the matching group; roles assigned otherwise are left alone.
    granted_roles: Mapped[list] = mapped_column(JSON, default=list, server_default="[]")

    __table_args__ = (UniqueConstraint("connection_id", "subject", name="uq_federated_identities_subject"),)
