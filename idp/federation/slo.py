"""python3-saml as our SP for Single Logout (SAML 2.0 Profiles §4.4): the messages only.

Incoming LogoutRequest (the IdP ends the user's session everywhere), HTTP-Redirect or HTTP-POST
binding, is accepted only when all of these hold; the answer is a LogoutResponse signed with our
SP key, sent over HTTP-Redirect to the IdP's SingleLogoutService (ResponseLocation):

* the message passes the ACS's pre-checks (size, no DOCTYPE/entities/comments, DEFLATE bounded);
* it is signed with a certificate from the IdP metadata, RSA-SHA256 or better (SHA-1 refused):
  the query signature (Redirect) or an enveloped signature of the LogoutRequest itself (POST);
* Destination is our /saml/NAME/slo and Issuer the IdP's entity ID (both required);
* NotOnOrAfter / IssueInstant hold within the clock skew (clock.py);
* its ID was not accepted before (replay cache in the store);
* it names a subject (NameID); SessionIndex values, if any, narrow the sessions ended.

Outgoing LogoutRequest (our logout of a session that came from this IdP): signed over
HTTP-Redirect; the IdP's LogoutResponse comes back to /saml/NAME/slo and is checked the same way
(signature, Destination, Issuer, InResponseTo = the request we sent, status).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from lxml import etree
from onelogin.saml2.auth import OneLogin_Saml2_Auth
from onelogin.saml2.constants import OneLogin_Saml2_Constants as C
from onelogin.saml2.logout_request import OneLogin_Saml2_Logout_Request
from onelogin.saml2.logout_response import OneLogin_Saml2_Logout_Response
from onelogin.saml2.utils import OneLogin_Saml2_Utils

from ..storage.federation_models import SamlConnection
from . import clock
from .saml import (
    SamlRefused,
    _reason,
    _request_data,
    checked_times,
    decode_response,
    endpoints,
    settings_dict,
)

REPLAY_TTL = 3600
DS = {"ds": "http://www.w3.org/2000/09/xmldsig#"}
WEAK_DIGESTS = {C.SHA1, "http://www.w3.org/2000/09/xmldsig#sha1"}


@dataclass(frozen=True)
class LogoutRequest:
    id: str
    name_id: str
    name_id_format: str | None
    session_indexes: tuple[str, ...]


def _slo_settings(conn: SamlConnection, issuer: str, kek: bytes) -> dict:
    """The SP settings, with signed messages required (python3-saml's is_valid checks only
    that a Redirect signature is *present* when this is set; we verify it ourselves)."""
    data = settings_dict(conn, issuer, kek)
    data["security"]["wantMessagesSigned"] = True
    return data


def has_slo(conn: SamlConnection) -> bool:
    from .connections import parse_idp_metadata

    return bool((parse_idp_metadata(conn.idp_metadata_xml).get("singleLogoutService") or {}).get("url"))


def _check_envelope(conn: SamlConnection, xml: bytes, element: str, issuer: str, skew: int):
    """Destination, Issuer, time and the root element: shared by both message kinds."""
    root = etree.fromstring(xml)
    expected = endpoints(issuer, conn).slo
    if root.get("Destination") != expected:
        raise SamlRefused("wrong_destination", f"Destination {str(root.get('Destination'))[:200]}")
    sent_by = root.findtext("{urn:oasis:names:tc:SAML:2.0:assertion}Issuer")
    if (sent_by or "").strip() != conn.idp_entity_id:
        raise SamlRefused("wrong_issuer", f"Issuer {str(sent_by)[:200]}")
    if not root.get("ID"):
        raise SamlRefused("malformed", f"{element} without ID")
    return root


def _check_message(conn: SamlConnection, xml: bytes, message, issuer: str, skew: int, *is_valid_args) -> None:
    """After the signature: Destination, Issuer, time (ours), then python3-saml's is_valid
    (schema, ...) at a moment inside the message's windows."""
    _check_envelope(conn, xml, etree.QName(etree.fromstring(xml)).localname, issuer, skew)
    moment, late = checked_times(xml, skew)
    if late is not None:
        raise late
    with clock.library_clock(moment):
        valid = message.is_valid(*is_valid_args)
    if not valid:
        raise SamlRefused(_reason(message.get_error() or ""), message.get_error() or "")


def _check_post_signature(data: dict, root, xml: bytes) -> None:
    """HTTP-POST: exactly one enveloped signature, over the root element (no wrapping), with
    a strong algorithm, verifying with one of the IdP's certificates."""
    signatures = root.findall("ds:Signature", DS)
    if not signatures:
        raise SamlRefused("unsigned", "no enveloped signature")
    refs = root.findall("ds:Signature/ds:SignedInfo/ds:Reference", DS)
    if len(signatures) != 1 or len(refs) != 1 or refs[0].get("URI") != "#" + root.get("ID"):
        raise SamlRefused("invalid_signature", "the signature does not cover the message")
    method = root.find("ds:Signature/ds:SignedInfo/ds:SignatureMethod", DS)
    digest = refs[0].find("ds:DigestMethod", DS)
    if method is None or method.get("Algorithm") in C.DEPRECATED_ALGORITHMS or \
            digest is None or digest.get("Algorithm") in WEAK_DIGESTS:
        raise SamlRefused("weak_algorithm", "SHA-1 or no signature method")
    idp = data["idp"]
    certs = (idp.get("x509certMulti") or {}).get("signing") or [idp.get("x509cert")]
    try:
        # raise_exceptions: without it validate_sign returns False (never raises) on a bad signature.
        valid = OneLogin_Saml2_Utils.validate_sign(xml, multicerts=[c for c in certs if c], raise_exceptions=True,
                                                   xpath=f"/samlp:{etree.QName(root).localname}/ds:Signature")
    except Exception as exc:
        raise SamlRefused("invalid_signature", str(exc)[:200]) from None
    if valid is not True:
        raise SamlRefused("invalid_signature", "signature does not verify")


def _check_redirect_signature(auth: OneLogin_Saml2_Auth, params: dict, kind: str) -> None:
    if not params.get("Signature"):
        raise SamlRefused("unsigned", "no Signature parameter")
    check = auth.validate_request_signature if kind == "SAMLRequest" else auth.validate_response_signature
    if not check(params):
        raise SamlRefused(_reason(auth.get_last_error_reason() or "signature"), auth.get_last_error_reason() or "")


def _auth(conn, issuer, kek, params: dict, query_string: str | None, post: bool):
    request_data = _request_data(issuer, f"/saml/{conn.name}/slo", get={} if post else params,
                                 post=params if post else None)
    if query_string:
        # Verify the signature over the query exactly as the IdP encoded it (SAML Bindings §3.4.4.1).
        request_data.update(query_string=query_string, validate_signature_from_qs=True)
    data = _slo_settings(conn, issuer, kek)
    return data, request_data, OneLogin_Saml2_Auth(request_data, data)


def process_logout_request(conn: SamlConnection, issuer: str, kek: bytes, store, params: dict,
                           query_string: str | None, post: bool, skew: int) -> LogoutRequest:
    """Validate an incoming LogoutRequest (either binding). Raises SamlRefused."""
    xml = decode_response(params.get("SAMLRequest"), root="LogoutRequest", inflate=not post)
    data, request_data, auth = _auth(conn, issuer, kek, params, None if post else query_string, post)
    root = etree.fromstring(xml)
    if post:
        _check_post_signature(data, root, xml)
    else:
        _check_redirect_signature(auth, params, "SAMLRequest")
    message = OneLogin_Saml2_Logout_Request(auth.get_settings(), base64.b64encode(xml).decode())
    # python3-saml's "signed" check only looks for a Signature parameter: verified above.
    _check_message(conn, xml, message, issuer, skew, {**request_data, "get_data": {"Signature": "checked"}})
    try:
        name_id = OneLogin_Saml2_Logout_Request.get_nameid_data(xml)
    except Exception as exc:
        raise SamlRefused("no_subject", str(exc)[:200]) from None
    if not (name_id.get("Value") or "").strip():
        raise SamlRefused("no_subject", "empty NameID")
    request_id = root.get("ID")
    key = "saml:logout-request:" + hashlib.sha256(f"{conn.id}:{request_id}".encode()).hexdigest()
    if not store.add(key, b"1", REPLAY_TTL + skew):
        raise SamlRefused("replayed", f"LogoutRequest {request_id[:80]} seen before")
    return LogoutRequest(id=request_id, name_id=name_id["Value"].strip(), name_id_format=name_id.get("Format"),
                         session_indexes=tuple(OneLogin_Saml2_Logout_Request.get_session_indexes(xml)))


def logout_response_url(conn: SamlConnection, issuer: str, kek: bytes, in_response_to: str,
                        relay_state: str | None, status: str = C.STATUS_SUCCESS) -> str:
    """The IdP's SLO (response) URL with our signed LogoutResponse (HTTP-Redirect)."""
    data = _slo_settings(conn, issuer, kek)
    auth = OneLogin_Saml2_Auth(_request_data(issuer, f"/saml/{conn.name}/slo"), data)
    builder = OneLogin_Saml2_Logout_Response(auth.get_settings())
    builder.build(in_response_to, status=status)
    parameters = {"SAMLResponse": builder.get_response()}
    if relay_state:
        parameters["RelayState"] = relay_state
    auth.add_response_signature(parameters, C.RSA_SHA256)
    return auth.redirect_to(auth.get_slo_response_url(), parameters)


def logout_request_url(conn: SamlConnection, issuer: str, kek: bytes, record: dict,
                       relay_state: str) -> tuple[str, str]:
    """(URL of the IdP's SLO service with our signed LogoutRequest, its ID) for the session
    described by `record` (NameID, its format and qualifiers, SessionIndex)."""
    data = _slo_settings(conn, issuer, kek)
    auth = OneLogin_Saml2_Auth(_request_data(issuer, f"/saml/{conn.name}/slo"), data)
    url = auth.logout(return_to=relay_state, name_id=record["name_id"], session_index=record.get("session_index"),
                      nq=record.get("nq"), name_id_format=record.get("name_id_format"), spnq=record.get("spnq"))
    return url, auth.get_last_request_id()


def process_logout_response(conn: SamlConnection, issuer: str, kek: bytes, params: dict, query_string: str | None,
                            request_id: str, skew: int) -> None:
    """Validate the IdP's answer to our LogoutRequest (HTTP-Redirect). Raises SamlRefused."""
    xml = decode_response(params.get("SAMLResponse"), root="LogoutResponse", inflate=True)
    _, request_data, auth = _auth(conn, issuer, kek, params, query_string, post=False)
    _check_redirect_signature(auth, params, "SAMLResponse")
    message = OneLogin_Saml2_Logout_Response(auth.get_settings(), base64.b64encode(xml).decode())
    if message.get_in_response_to() != request_id:
        raise SamlRefused("wrong_in_response_to", f"InResponseTo {str(message.get_in_response_to())[:80]}")
    _check_message(conn, xml, message, issuer, skew, request_data, request_id)
    if message.get_status() != C.STATUS_SUCCESS:
        raise SamlRefused("logout_not_success", f"status {message.get_status()}")
