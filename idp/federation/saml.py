"""python3-saml as our SP: settings per connection, AuthnRequest, SP metadata, the ACS checks.

The ACS accepts a Response only when all of these hold (python3-saml strict mode does the
protocol checks; the rest is here):

* the raw message is base64 of at most MAX_RESPONSE_BYTES of well-formed XML without DOCTYPE,
  entity declarations or comments (no entity expansion; comments are how NameID values are
  truncated by a comment-blind reader, CVE-2017-11427, so we refuse them outright);
* the Response (enveloped signature covering the whole message, assertion included) or the
  Assertion, or both, is signed by a certificate in the IdP metadata (RSA-SHA256 or better;
  SHA-1 refused; every signature present must verify), exactly one Assertion anywhere in the
  message, and the element read is the signed one or inside it (signature wrapping);
* Destination, Recipient and Audience are ours; InResponseTo is the AuthnRequest this browser
  sent (or, only when the connection allows it, absent: IdP-initiated);
* NotBefore / NotOnOrAfter / IssueInstant hold within the clock skew (clock.py);
* the Assertion ID has not been accepted before (replay cache in the store until it expires);
* the subject is not empty.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import zlib
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from lxml import etree
from onelogin.saml2.auth import OneLogin_Saml2_Auth
from onelogin.saml2.constants import OneLogin_Saml2_Constants as C
from onelogin.saml2.errors import OneLogin_Saml2_ValidationError
from onelogin.saml2.metadata import OneLogin_Saml2_Metadata
from onelogin.saml2.settings import OneLogin_Saml2_Settings
from onelogin.saml2.utils import OneLogin_Saml2_Utils

from ..errors import IdpError, InvalidInput
from ..storage.federation_models import SamlConnection
from . import clock, connections
from .identity import ExternalIdentity
from .mapping import map_identity

logger = logging.getLogger("idp.federation")

MAX_RESPONSE_BYTES = 256 * 1024
REPLAY_MIN_TTL = 600
REPLAY_MAX_TTL = 7 * 24 * 3600
SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"


class SamlRefused(IdpError):
    """The ACS refused a response. `reason` is a short code for the page and the audit log;
    `detail` (library text, ids) goes only to the log."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class Endpoints:
    entity_id: str
    acs: str
    slo: str


def endpoints(issuer: str, conn: SamlConnection) -> Endpoints:
    base = f"{issuer}/saml/{conn.name}"
    return Endpoints(f"{base}/metadata", f"{base}/acs", f"{base}/slo")


def _cert_body(pem: str) -> str:
    return "".join(line for line in pem.splitlines() if "-----" not in line)


def settings_dict(conn: SamlConnection, issuer: str, kek: bytes) -> dict:
    ends = endpoints(issuer, conn)
    current, previous = connections.sp_keys(conn)
    sp = {"entityId": ends.entity_id,
          "assertionConsumerService": {"url": ends.acs, "binding": C.BINDING_HTTP_POST},
          "singleLogoutService": {"url": ends.slo, "binding": C.BINDING_HTTP_REDIRECT},
          "NameIDFormat": C.NAMEID_UNSPECIFIED,
          "x509cert": _cert_body(current.certificate_pem),
          "privateKey": connections.private_key_pem(kek, current)}
    if previous:
        # python3-saml's "new" certificate slot: a second KeyDescriptor in our metadata, which is
        # what a rotation needs (the IdP may still hold the previous one).
        sp["x509certNew"] = _cert_body(previous[0].certificate_pem)
    return {
        "strict": True,
        "debug": False,
        "sp": sp,
        "idp": connections.parse_idp_metadata(conn.idp_metadata_xml),
        "security": {
            "authnRequestsSigned": conn.sign_requests,
            "logoutRequestSigned": True,
            "logoutResponseSigned": True,
            # A signature on the Response or on the Assertion (or both), as IdPs are configured
            # to do: ADFS and Okta can sign only the message, many others sign only the assertion.
            # python3-saml then refuses a response with neither ("No Signature found"), checks
            # every signature present, and reads the assertion only as covered by one of them
            # (the signed Response's child, or the Assertion whose signature it verified).
            "wantAssertionsSigned": False,
            "wantMessagesSigned": False,
            "wantNameId": True,
            "wantAttributeStatement": False,
            "requestedAuthnContext": False,   # let the IdP choose; we report what it says in acr
            "signatureAlgorithm": C.RSA_SHA256,
            "digestAlgorithm": C.SHA256,
            "rejectDeprecatedAlgorithm": True,
            "rejectUnsolicitedResponsesWithInResponseTo": True,
            "allowRepeatAttributeName": True,
        },
    }


def _request_data(issuer: str, path: str, post: dict | None = None, get: dict | None = None) -> dict:
    """python3-saml compares Destination with the URL it thinks it serves: take it from our
    issuer (what the IdP was told), never from the Host header."""
    parts = urlsplit(issuer)
    return {"https": "on" if parts.scheme == "https" else "off", "http_host": parts.netloc,
            "script_name": (parts.path.rstrip("/") + path), "get_data": get or {}, "post_data": post or {}}


def sp_metadata(conn: SamlConnection, issuer: str, kek: bytes) -> bytes:
    """Our SP metadata for this connection, signed with the current SP key."""
    data = settings_dict(conn, issuer, kek)
    # WantAssertionsSigned="true" in our metadata: an IdP that reads it (Shibboleth) then signs
    # the assertion too, which is what we prefer; the ACS also accepts a Response-only signature.
    data["security"] = {**data["security"], "wantAssertionsSigned": True}
    settings = OneLogin_Saml2_Settings(data, sp_validation_only=True)
    metadata = settings.get_sp_metadata()
    return OneLogin_Saml2_Metadata.sign_metadata(metadata, data["sp"]["privateKey"], data["sp"]["x509cert"],
                                                 C.RSA_SHA256, C.SHA256)


def authn_request_url(conn: SamlConnection, issuer: str, kek: bytes, relay_state: str) -> tuple[str, str]:
    """(redirect URL to the IdP's SSO service, AuthnRequest ID). HTTP-Redirect binding; the
    query is signed (SigAlg + Signature) when the connection signs requests."""
    data = settings_dict(conn, issuer, kek)
    auth = OneLogin_Saml2_Auth(_request_data(issuer, f"/saml/{conn.name}/login"), data)
    url = auth.login(return_to=relay_state)
    return url, auth.get_last_request_id()


# --- ACS --------------------------------------------------------------------------------------

def decode_response(raw: str | None, root: str = "Response", inflate: bool = False) -> bytes:
    """Base64 (and, HTTP-Redirect binding, DEFLATE) -> XML bytes after the pre-checks (size,
    DOCTYPE/entities, comments, root element samlp:`root`)."""
    if not raw:
        raise SamlRefused("no_response", f"SAML {root} missing")
    if len(raw) > MAX_RESPONSE_BYTES * 4 // 3 + 4:
        raise SamlRefused("too_large", f"{len(raw)} base64 characters")
    try:
        xml = base64.b64decode(raw.encode("ascii"), validate=False)
        if inflate:  # bounded: a DEFLATE bomb stops at the size limit
            inflater = zlib.decompressobj(-15)
            xml = inflater.decompress(xml, MAX_RESPONSE_BYTES + 1)
    except (binascii.Error, ValueError, UnicodeEncodeError, zlib.error):
        raise SamlRefused("malformed", "not base64" + (" DEFLATE" if inflate else "")) from None
    if len(xml) > MAX_RESPONSE_BYTES:
        raise SamlRefused("too_large", f"{len(xml)} bytes")
    lowered = xml.lower()
    if b"<!doctype" in lowered or b"<!entity" in lowered:
        raise SamlRefused("dtd_forbidden", "DOCTYPE or ENTITY declaration")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, load_dtd=False,
                             remove_comments=False)
    try:
        document = etree.fromstring(xml, parser)
    except etree.XMLSyntaxError as exc:
        raise SamlRefused("malformed", str(exc)[:200]) from None
    if any(True for _ in document.iter(etree.Comment)) or b"<!--" in xml:
        raise SamlRefused("comments_forbidden", "XML comment in the response")
    if document.tag != f"{{{SAMLP}}}{root}":
        raise SamlRefused("malformed", f"root element {str(document.tag)[:100]}")
    return xml


def clock_skew(conn: SamlConnection, default: int) -> int:
    """Seconds of skew for this IdP: its own setting, else IDP_SAML_CLOCK_SKEW."""
    return default if conn.clock_skew_ttl is None else conn.clock_skew_ttl


def checked_times(xml: bytes, skew: int) -> tuple[int, SamlRefused | None]:
    """(the moment python3-saml validates at, our time refusal or None). A time refusal is
    reported only after the signature checks, so a forged message is called forged."""
    root = etree.fromstring(xml, etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False))
    try:
        return clock.check_times(root, skew), None
    except clock.ClockRefused as exc:
        return exc.moment, SamlRefused(exc.reason, str(exc))


def process_response(conn: SamlConnection, issuer: str, kek: bytes, store, raw_response: str | None,
                     request_id: str | None, skew: int = 120) -> ExternalIdentity:
    """Validate a POSTed SAMLResponse; returns the mapped identity. Raises SamlRefused.
    `request_id` is the AuthnRequest this browser's RelayState was bound to (None: IdP-initiated)."""
    xml = decode_response(raw_response)
    moment, late = checked_times(xml, skew)
    data = settings_dict(conn, issuer, kek)
    encoded = base64.b64encode(xml).decode()
    auth = OneLogin_Saml2_Auth(_request_data(issuer, f"/saml/{conn.name}/acs", post={"SAMLResponse": encoded}), data)
    try:
        with clock.library_clock(moment):
            auth.process_response(request_id=request_id)
    except OneLogin_Saml2_ValidationError as exc:  # raised, not collected: e.g. an empty NameID
        raise SamlRefused(_reason(str(exc)), str(exc)[:200]) from None
    except Exception as exc:  # python3-saml raises on some malformed inputs instead of collecting errors
        raise SamlRefused("invalid_response", f"{type(exc).__name__}: {str(exc)[:200]}") from None
    if auth.get_errors() or not auth.is_authenticated():
        raise SamlRefused(_reason(auth.get_last_error_reason() or ""), auth.get_last_error_reason() or "")
    if late is not None:
        raise late
    if request_id is None and auth.get_last_response_in_response_to():
        raise SamlRefused("unsolicited", "InResponseTo without a pending AuthnRequest")
    _check_not_replayed(conn, store, auth, skew)
    try:
        identity = map_identity(conn.attribute_map or {}, provider=conn.name, protocol="saml",
                                name_id=auth.get_nameid(), attributes=auth.get_attributes(),
                                acr=(auth.get_last_authn_contexts() or [None])[0],
                                session_index=auth.get_session_index())
    except InvalidInput as exc:
        raise SamlRefused("no_subject", str(exc)) from None
    # For single logout (slo.py): the LogoutRequest names the subject exactly as the IdP did.
    return replace(identity, upstream_session={
        "name_id": auth.get_nameid(), "name_id_format": auth.get_nameid_format(), "nq": auth.get_nameid_nq(),
        "spnq": auth.get_nameid_spnq(), "session_index": auth.get_session_index()})


def _check_not_replayed(conn: SamlConnection, store, auth: OneLogin_Saml2_Auth, skew: int) -> None:
    assertion_id = auth.get_last_assertion_id()
    if not assertion_id:
        raise SamlRefused("invalid_response", "assertion without ID")
    not_on_or_after = auth.get_last_assertion_not_on_or_after() or 0
    ttl = min(max(not_on_or_after - clock.wall_time() + skew, REPLAY_MIN_TTL), REPLAY_MAX_TTL)
    key = "saml:assertion:" + hashlib.sha256(f"{conn.id}:{assertion_id}".encode()).hexdigest()
    if not store.add(key, b"1", ttl):
        raise SamlRefused("replayed", f"assertion {assertion_id[:80]} seen before")


# python3-saml's messages (onelogin/saml2/response.py) -> short reasons for the page and audit log;
# first match wins.
_REASONS = [
    ("deprecated", "weak_algorithm"),
    ("was received at", "wrong_destination"), ("empty destination", "wrong_destination"),
    ("audience", "wrong_audience"),
    ("inresponseto", "wrong_in_response_to"),
    ("expired", "expired"), ("not yet valid", "not_yet_valid"),
    ("issuer", "wrong_issuer"),
    ("subjectconfirmation", "wrong_destination"),
    ("nameid", "no_subject"),
    ("must contain 1 assertion", "invalid_assertion"),
    ("not signed", "unsigned"), ("no signature found", "unsigned"),
    ("signature", "invalid_signature"), ("signed", "invalid_signature"),
]


def _reason(message: str) -> str:
    lowered = message.lower()
    return next((reason for needle, reason in _REASONS if needle in lowered), "invalid_response")


def sign_check_cert(conn: SamlConnection) -> list[str]:
    """The IdP signing certificates we trust for this connection (for `show`)."""
    idp = connections.parse_idp_metadata(conn.idp_metadata_xml)
    certs = (idp.get("x509certMulti") or {}).get("signing") or [idp.get("x509cert")]
    return [OneLogin_Saml2_Utils.calculate_x509_fingerprint(OneLogin_Saml2_Utils.format_cert(c), "sha256")
            for c in certs if c]
