"""An independent SAML IdP for the tests: pysaml2 (its own XML stack, signing through Debian's
`xmlsec1` binary), with keys made here. It answers the AuthnRequest our SP sent with a real
signed Response; tests then tamper with it."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import shutil
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

IDP_ENTITY = "https://idp.example.test/metadata"
IDP_SSO = "https://idp.example.test/sso"
AUTHN_PASSWORD = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"


def make_key_pair(cn: str) -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2)).sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()).decode()
    return key_pem, cert.public_bytes(serialization.Encoding.PEM).decode()


def redirect_query(url: str) -> dict:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


class TestIdP:
    __test__ = False

    def __init__(self, workdir: Path, key_pair: tuple[str, str], entity_id: str = IDP_ENTITY,
                 sso_url: str = IDP_SSO):
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "idp.key").write_text(key_pair[0])
        (self.dir / "idp.crt").write_text(key_pair[1])
        self.entity_id = entity_id
        self.sso_url = sso_url
        self.server = None
        self.sp_metadata: list[str] = []
        self.lifetime_minutes = 5  # of assertions (NotOnOrAfter); set before trust_sp
        # What response_xml signs unless told: both, or only the "response" (an ADFS or Okta
        # configured to sign the message), or only the "assertion".
        self.signs = "both"

    def _config(self, sp_metadata: list[str] | None):
        from saml2 import BINDING_HTTP_REDIRECT
        from saml2.config import IdPConfig
        from saml2.saml import NAMEID_FORMAT_EMAILADDRESS, NAMEID_FORMAT_UNSPECIFIED

        conf = IdPConfig()
        conf.load({
            "entityid": self.entity_id,
            "xmlsec_binary": shutil.which("xmlsec1"),
            "key_file": str(self.dir / "idp.key"),
            "cert_file": str(self.dir / "idp.crt"),
            "metadata": {"inline": sp_metadata} if sp_metadata else {},
            "service": {"idp": {
                "endpoints": {"single_sign_on_service": [(self.sso_url, BINDING_HTTP_REDIRECT)],
                              "single_logout_service": [(self.sso_url + "/slo", BINDING_HTTP_REDIRECT)]},
                "name_id_format": [NAMEID_FORMAT_EMAILADDRESS, NAMEID_FORMAT_UNSPECIFIED],
                "want_authn_requests_signed": True,
                "policy": {"default": {"lifetime": {"minutes": self.lifetime_minutes}, "attribute_restrictions": None,
                                       "name_form": "urn:oasis:names:tc:SAML:2.0:attrname-format:uri"}},
            }},
        })
        return conf

    def metadata(self) -> str:
        from saml2.metadata import create_metadata_string

        return create_metadata_string(None, config=self._config(None), valid=24).decode()

    def trust_sp(self, sp_metadata: str) -> None:
        from saml2.server import Server

        self.sp_metadata.append(sp_metadata)
        self.server = Server(config=self._config(self.sp_metadata))

    def parse_request(self, redirect_url: str):
        """Parse and verify (signature included) the AuthnRequest our SP redirected to."""
        from saml2 import BINDING_HTTP_REDIRECT

        q = redirect_query(redirect_url)
        req = self.server.parse_authn_request(q["SAMLRequest"], BINDING_HTTP_REDIRECT,
                                              relay_state=q.get("RelayState"), sigalg=q.get("SigAlg"),
                                              signature=q.get("Signature"))
        return req, q.get("RelayState")

    def response_xml(self, request=None, *, email: str = "alice@corp.example.test", name_id: str | None = None,
                     identity: dict | None = None, sign_response: bool | None = None,
                     sign_assertion: bool | None = None, sha1: bool = False, recipient: str | None = None,
                     not_before_delay: int = 0, **overrides) -> str:
        """A Response to `request` (a parsed AuthnRequest) or, without one, an unsolicited one.
        Signed as `self.signs` says, unless sign_response / sign_assertion say otherwise.
        `recipient`: another SubjectConfirmationData Recipient than the ACS URL (the Response's
        Destination stays). `not_before_delay`: the Conditions' NotBefore that many seconds after
        the IssueInstant (pysaml2 makes them equal). Both are signed like the rest."""
        from saml2 import BINDING_HTTP_POST
        from saml2.saml import NAMEID_FORMAT_EMAILADDRESS, NameID
        from saml2.xmldsig import DIGEST_SHA1, DIGEST_SHA256, SIG_RSA_SHA1, SIG_RSA_SHA256

        assert self.signs in ("both", "response", "assertion"), self.signs
        if sign_response is None:
            sign_response = self.signs in ("both", "response")
        if sign_assertion is None:
            sign_assertion = self.signs in ("both", "assertion")
        if request is not None:
            args = self.server.response_args(request.message, [BINDING_HTTP_POST])
            args.pop("binding", None)
        else:
            args = {"in_response_to": None, "destination": overrides.pop("destination"),
                    "sp_entity_id": overrides.pop("sp_entity_id"), "name_id_policy": None}
        args.update(overrides)
        if recipient is not None:
            args["farg"] = {"assertion": {"subject": {"subject_confirmation": {
                "subject_confirmation_data": {"recipient": recipient}}}}}
        if not_before_delay:
            args["release_policy"] = self._delayed_policy(not_before_delay)
        identity = identity if identity is not None else {
            "mail": [email], "givenName": ["Alice"], "sn": ["Cooper"], "displayName": ["Alice Cooper"]}
        response = self.server.create_authn_response(
            identity=identity, userid=email,
            name_id=NameID(format=NAMEID_FORMAT_EMAILADDRESS, text=email if name_id is None else name_id),
            authn={"class_ref": AUTHN_PASSWORD, "authn_auth": self.entity_id},
            sign_response=sign_response, sign_assertion=sign_assertion,
            sign_alg=SIG_RSA_SHA1 if sha1 else SIG_RSA_SHA256, digest_alg=DIGEST_SHA1 if sha1 else DIGEST_SHA256,
            **args)
        return str(response)


    def sign_response_again(self, xml: str | bytes) -> str:
        """Sign the Response element of `xml` (which must carry its signature, e.g. one from
        response_xml, as the template) anew with this IdP's key, over whatever it now holds."""
        from lxml import etree

        text = xml.decode() if isinstance(xml, bytes) else xml
        return self.server.sec.sign_statement(text, "urn:oasis:names:tc:SAML:2.0:protocol:Response",
                                              node_id=etree.fromstring(text.encode()).get("ID"))

    def _delayed_policy(self, seconds: int):
        """The IdP's release policy, but its Conditions start `seconds` from now."""
        from saml2 import saml
        from saml2.time_util import in_a_while

        policy = copy.copy(self.server.config.getattr("policy", "idp"))
        made = policy.conditions

        def conditions(sp_entity_id):
            result = made(sp_entity_id)
            result.not_before = in_a_while(seconds=seconds)
            assert isinstance(result, saml.Conditions)
            return result

        policy.conditions = conditions
        return policy

    # --- single logout (SAML Profiles §4.4) ---------------------------------------------------

    def parse_logout_request(self, redirect_url: str):
        """Parse and verify (query signature included) a LogoutRequest our SP redirected to."""
        from saml2 import BINDING_HTTP_REDIRECT

        q = redirect_query(redirect_url)
        req = self.server.parse_logout_request(q["SAMLRequest"], BINDING_HTTP_REDIRECT, relay_state=q.get("RelayState"),
                                               sigalg=q.get("SigAlg"), signature=q.get("Signature"))
        return req, q.get("RelayState")

    def logout_response_url(self, request, relay_state: str | None, destination: str, *, sign: bool = True,
                            status=None) -> str:
        """Our SP's SLO URL with the IdP's LogoutResponse to `request` (HTTP-Redirect, query signed)."""
        from saml2 import BINDING_HTTP_REDIRECT

        response = self.server.create_logout_response(request.message, [BINDING_HTTP_REDIRECT], status=status,
                                                      sign=False)
        info = self.server.apply_binding(BINDING_HTTP_REDIRECT, str(response), destination, relay_state or "",
                                         response=True, sign=sign, sigalg=_sig_algs(False)[0])
        return dict(info["headers"])["Location"]

    def logout_request(self, destination: str, sp_entity_id: str, name_id: str, *, session_index: str | None = None,
                       binding: str = "redirect", sign: bool = True, sha1: bool = False, relay_state: str = "r1",
                       **overrides):
        """A LogoutRequest from the IdP to our SP: the redirect URL (binding "redirect") or the form
        fields (binding "post", enveloped signature). Returns (message id, URL or form dict, XML)."""
        from saml2 import BINDING_HTTP_REDIRECT
        from saml2.saml import NAMEID_FORMAT_EMAILADDRESS, NameID

        sigalg, digest = _sig_algs(sha1)
        post = binding == "post"
        req_id, req = self.server.create_logout_request(
            destination, sp_entity_id, name_id=NameID(format=NAMEID_FORMAT_EMAILADDRESS, text=name_id),
            session_indexes=[session_index] if session_index else None, sign=post and sign,
            sign_alg=sigalg, digest_alg=digest, **overrides)
        xml = str(req)
        if post:
            return req_id, {"SAMLRequest": b64(xml), "RelayState": relay_state}, xml
        info = self.server.apply_binding(BINDING_HTTP_REDIRECT, xml, destination, relay_state, sign=sign, sigalg=sigalg)
        return req_id, dict(info["headers"])["Location"], xml


def _sig_algs(sha1: bool):
    from saml2.xmldsig import DIGEST_SHA1, DIGEST_SHA256, SIG_RSA_SHA1, SIG_RSA_SHA256

    return (SIG_RSA_SHA1, DIGEST_SHA1) if sha1 else (SIG_RSA_SHA256, DIGEST_SHA256)


def b64(xml: str | bytes) -> str:
    return base64.b64encode(xml.encode() if isinstance(xml, str) else xml).decode()

