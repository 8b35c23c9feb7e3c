"""SAML connections (one per upstream IdP): create, read, delete, SP keys, IdP metadata.

SP key life cycle per connection (the same idea as services/keys.py, for XML signatures):

    created "current" (signs AuthnRequests, metadata; published)
    "current" --rotate--> "previous" (still published in SP metadata, no longer signs)
    "previous" --remove-previous-keys--> deleted (once the IdP has the new certificate)

IdP metadata: parsed once on `add` (nothing stored if it does not parse); with a URL it is
fetched again on demand (`refresh-metadata`) and in the background (metadata_refresh.py).
A failed fetch or parse keeps the last good copy and records the error.
"""

from __future__ import annotations

import logging
import re
import secrets
import urllib.request
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from onelogin.saml2.constants import OneLogin_Saml2_Constants as C
from onelogin.saml2.idp_metadata_parser import OneLogin_Saml2_IdPMetadataParser
from sqlalchemy import select

from ..errors import Conflict, InvalidInput, NotFound
from ..services.keys import decrypt_private_key, encrypt_private_key
from ..settings import is_loopback_host
from ..storage.federation_models import SamlConnection, SamlSpKey
from ..storage.models import db, utcnow
from .mapping import check_map

logger = logging.getLogger("idp.federation")

NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
PROVISIONING = ("jit", "link-by-email", "existing-only")
CURRENT, PREVIOUS = "current", "previous"
METADATA_MAX_BYTES = 2 * 1024 * 1024
FETCH_TIMEOUT = 10
CERT_DAYS = 5 * 365
MAX_CLOCK_SKEW = 900
DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9-]{1,63}\.)+[a-z]{2,63}$")


# --- IdP metadata -----------------------------------------------------------------------------

@lru_cache(maxsize=64)
def parse_idp_metadata(xml: str) -> dict:
    """The `idp` part of python3-saml settings from IdP metadata. Raises InvalidInput.
    python3-saml parses with lxml, DTDs and entities forbidden (no entity expansion)."""
    if len(xml) > METADATA_MAX_BYTES:
        raise InvalidInput("IdP metadata is too large")
    try:
        parsed = OneLogin_Saml2_IdPMetadataParser.parse(xml, required_sso_binding=C.BINDING_HTTP_REDIRECT)
    except Exception as exc:  # lxml syntax errors, DTD forbidden, ...: all "does not parse"
        raise InvalidInput(f"IdP metadata does not parse: {str(exc).splitlines()[0][:200]}") from None
    idp = parsed.get("idp") or {}
    if not idp.get("entityId"):
        raise InvalidInput("IdP metadata has no IDPSSODescriptor with an entityID")
    if not (idp.get("singleSignOnService") or {}).get("url"):
        raise InvalidInput("IdP metadata has no SingleSignOnService with the HTTP-Redirect binding")
    if not idp.get("x509cert") and not (idp.get("x509certMulti") or {}).get("signing"):
        raise InvalidInput("IdP metadata has no signing certificate")
    return idp


def check_metadata_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "https" and not (parts.scheme == "http" and is_loopback_host(parts.hostname)):
        raise InvalidInput("metadata URL must be https (plain http only on loopback)")
    return url


def fetch_metadata(url: str) -> str:
    """GET the metadata (TLS verified, size-capped). Raises InvalidInput."""
    check_metadata_url(url)
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"Accept": "application/samlmetadata+xml"}),
                                    timeout=FETCH_TIMEOUT) as response:
            body = response.read(METADATA_MAX_BYTES + 1)
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"cannot fetch metadata from {url}: {exc}") from None
    if len(body) > METADATA_MAX_BYTES:
        raise InvalidInput("IdP metadata is too large")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("IdP metadata is not UTF-8") from None


def refresh_metadata(conn: SamlConnection) -> bool:
    """Fetch and parse the metadata again; True when it was replaced. On failure the last good
    copy stays and the error is recorded (and raised as InvalidInput)."""
    if not conn.metadata_url:
        raise InvalidInput(f"connection {conn.name} has no metadata URL (it was added from a file)")
    conn.metadata_checked_at = utcnow()
    try:
        xml = fetch_metadata(conn.metadata_url)
        idp = parse_idp_metadata(xml)
    except InvalidInput as exc:
        conn.metadata_error = str(exc)
        db.session.commit()
        logger.warning("saml metadata refresh failed", extra={"fields": {"connection": conn.name}})
        raise
    conn.metadata_error = None
    conn.metadata_fetched_at = conn.metadata_checked_at
    changed = xml != conn.idp_metadata_xml
    conn.idp_metadata_xml, conn.idp_entity_id = xml, idp["entityId"]
    db.session.commit()
    return changed


# --- SP keys ----------------------------------------------------------------------------------

def _new_sp_key(kek: bytes, name: str) -> SamlSpKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"idp SAML SP {name}")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(private.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=CERT_DAYS))
            .sign(private, hashes.SHA256()))
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    kid = secrets.token_urlsafe(12)
    return SamlSpKey(kid=kid, state=CURRENT, certificate_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
                     private_key_encrypted=encrypt_private_key(kek, kid, pem))


def sp_keys(conn: SamlConnection) -> tuple[SamlSpKey, list[SamlSpKey]]:
    """(current key, previous keys still published)."""
    rows = list(db.session.scalars(select(SamlSpKey).where(SamlSpKey.connection_id == conn.id)
                                   .order_by(SamlSpKey.created_at.desc(), SamlSpKey.id.desc())))
    current = next(r for r in rows if r.state == CURRENT)
    return current, [r for r in rows if r.state != CURRENT]


def private_key_pem(kek: bytes, key: SamlSpKey) -> str:
    return decrypt_private_key(kek, key.kid, key.private_key_encrypted).decode()


def rotate_sp_key(conn: SamlConnection, kek: bytes) -> SamlSpKey:
    current, _ = sp_keys(conn)
    current.state = PREVIOUS
    new = _new_sp_key(kek, conn.name)
    new.connection_id = conn.id
    db.session.add(new)
    db.session.commit()
    return new


def remove_previous_sp_keys(conn: SamlConnection) -> list[str]:
    _, previous = sp_keys(conn)
    for row in previous:
        db.session.delete(row)
    db.session.commit()
    return [r.kid for r in previous]


# --- connections ------------------------------------------------------------------------------

def check_domains(domains) -> list[str]:
    out = []
    for d in domains:
        d = d.strip().lower().lstrip("@")
        if not DOMAIN.match(d):
            raise InvalidInput(f"invalid email domain: {d!r}")
        out.append(d)
    return sorted(set(out))


def create_connection(kek: bytes, *, name: str, metadata_xml: str | None = None, metadata_url: str | None = None,
                      attribute_map: dict | None = None, provisioning: str = "jit", sign_requests: bool = True,
                      allow_idp_initiated: bool = False, email_domains=(), require_mfa: bool = False,
                      clock_skew_ttl: int | None = None) -> SamlConnection:
    """Validate everything first (metadata parses, map is sound, name is free); write once."""
    if not NAME.match(name or ""):
        raise InvalidInput("name must be 1-63 lower-case letters, digits or dashes (it appears in URLs)")
    if provisioning not in PROVISIONING:
        raise InvalidInput(f"provisioning must be one of {', '.join(PROVISIONING)}")
    if (metadata_xml is None) == (metadata_url is None):
        raise InvalidInput("give exactly one of --metadata-file and --metadata-url")
    if db.session.scalar(select(SamlConnection.id).where(SamlConnection.name == name)):
        raise Conflict(f"a SAML connection named {name} already exists")
    domains = check_domains(email_domains)
    for other in list_connections():
        if taken := set(domains) & set(other.email_domains or ()):
            raise Conflict(f"email domain {sorted(taken)[0]} already routes to {other.name}")
    mapping = check_map(attribute_map or {})
    check_clock_skew(clock_skew_ttl)
    fetched_at = None
    if metadata_url is not None:
        metadata_xml = fetch_metadata(metadata_url)
        fetched_at = utcnow()
    idp = parse_idp_metadata(metadata_xml)
    conn = SamlConnection(name=name, idp_entity_id=idp["entityId"], idp_metadata_xml=metadata_xml,
                          metadata_url=metadata_url, metadata_fetched_at=fetched_at, metadata_checked_at=fetched_at,
                          attribute_map=mapping, provisioning=provisioning, sign_requests=sign_requests,
                          allow_idp_initiated=allow_idp_initiated, email_domains=domains, require_mfa=require_mfa,
                          clock_skew_ttl=clock_skew_ttl)
    key = _new_sp_key(kek, name)
    db.session.add(conn)
    db.session.flush()
    key.connection_id = conn.id
    db.session.add(key)
    db.session.commit()
    return conn


UNCHANGED = object()


def update_connection(name: str, *, attribute_map=UNCHANGED, provisioning=UNCHANGED, sign_requests=UNCHANGED,
                      allow_idp_initiated=UNCHANGED, email_domains=UNCHANGED, require_mfa=UNCHANGED,
                      clock_skew_ttl=UNCHANGED) -> SamlConnection:
    """Change what was given (UNCHANGED leaves a field alone); all checks first, one commit.
    `email_domains` replaces the list. Raises InvalidInput, Conflict, NotFound."""
    conn = get_connection(name)
    if provisioning is not UNCHANGED and provisioning not in PROVISIONING:
        raise InvalidInput(f"provisioning must be one of {', '.join(PROVISIONING)}")
    changes = {"provisioning": provisioning, "sign_requests": sign_requests,
               "allow_idp_initiated": allow_idp_initiated, "require_mfa": require_mfa,
               "clock_skew_ttl": check_clock_skew(clock_skew_ttl) if clock_skew_ttl is not UNCHANGED else UNCHANGED}
    if attribute_map is not UNCHANGED:
        changes["attribute_map"] = check_map(attribute_map or {})
    if email_domains is not UNCHANGED:
        domains = check_domains(email_domains)
        for other in list_connections():
            if other.id != conn.id and (taken := set(domains) & set(other.email_domains or ())):
                raise Conflict(f"email domain {sorted(taken)[0]} already routes to {other.name}")
        changes["email_domains"] = domains
    for field, value in changes.items():
        if value is not UNCHANGED:
            setattr(conn, field, value)
    db.session.commit()
    return conn


def check_clock_skew(value: int | None) -> int | None:
    """A per-connection clock skew in seconds (None: IDP_SAML_CLOCK_SKEW)."""
    if value is not None and not 0 <= value <= MAX_CLOCK_SKEW:
        raise InvalidInput(f"clock skew must be 0..{MAX_CLOCK_SKEW} seconds")
    return value


def list_connections() -> list[SamlConnection]:
    return list(db.session.scalars(select(SamlConnection).order_by(SamlConnection.name)))


def get_connection(name: str) -> SamlConnection:
    conn = db.session.scalar(select(SamlConnection).where(SamlConnection.name == name)) if name else None
    if conn is None:
        raise NotFound(f"no SAML connection {name}")
    return conn


def find_connection(name: str) -> SamlConnection | None:
    if not NAME.match(name or ""):
        return None
    return db.session.scalar(select(SamlConnection).where(SamlConnection.name == name))


def connection_for_email(email: str) -> SamlConnection | None:
    domain = (email or "").rpartition("@")[2].strip().lower()
    if not domain:
        return None
    return next((c for c in list_connections() if domain in (c.email_domains or ())), None)


def _idp_slo_url(conn: SamlConnection) -> str | None:
    try:
        return (parse_idp_metadata(conn.idp_metadata_xml).get("singleLogoutService") or {}).get("url") or None
    except InvalidInput:
        return None


def delete_connection(name: str) -> None:
    conn = get_connection(name)
    db.session.delete(conn)
    db.session.commit()


def describe(conn: SamlConnection, issuer: str) -> dict:
    current, previous = sp_keys(conn)
    base = f"{issuer}/saml/{conn.name}"
    return {"name": conn.name, "idp_entity_id": conn.idp_entity_id, "metadata_url": conn.metadata_url,
            "metadata_fetched_at": conn.metadata_fetched_at, "metadata_error": conn.metadata_error,
            "provisioning": conn.provisioning, "sign_requests": conn.sign_requests,
            "allow_idp_initiated": conn.allow_idp_initiated, "email_domains": conn.email_domains or [],
            "require_mfa": bool(conn.require_mfa), "clock_skew_ttl": conn.clock_skew_ttl,
            "attribute_map": conn.attribute_map,
            "sp_entity_id": f"{base}/metadata", "sp_metadata_url": f"{base}/metadata",
            "acs_url": f"{base}/acs", "slo_url": f"{base}/slo",
            "idp_slo_url": _idp_slo_url(conn),
            "sp_keys": [{"kid": k.kid, "state": k.state, "created_at": k.created_at} for k in [current, *previous]]}
