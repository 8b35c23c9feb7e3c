"""The ACS refuses every classic SAML attack (issue 7): each test takes a REAL response built
and signed by the independent pysaml2 IdP, tampers with it, and checks the refusal: an error
page (no stack trace), no SSO session, no account, and an audit event."""

from __future__ import annotations

import copy
import time

import pytest
from lxml import etree
from onelogin.saml2.utils import OneLogin_Saml2_Utils
from sqlalchemy import func, select

from idp.storage.models import User, db
from idp.storage.security_models import AuthEvent

from .conftest import Flow, add_connection
from .saml_idp import TestIdP, b64

NS = {"samlp": "urn:oasis:names:tc:SAML:2.0:protocol", "saml": "urn:oasis:names:tc:SAML:2.0:assertion",
      "ds": "http://www.w3.org/2000/09/xmldsig#"}


def audit_reasons(app) -> list[str]:
    """The reasons of the saml_login failure events."""
    with app.app_context():
        return list(db.session.scalars(select(AuthEvent.reason).where(AuthEvent.event == "saml_login",
                                                                        AuthEvent.result == "failure")))


def assert_refused(app, flow: Flow, response, reason: str | None = None, status: int = 400, accounts: int = 0):
    """The refusal page with `reason`, no SSO session in this browser, no account made (beyond
    `accounts` that existed before), and the audit event saml_login / failure NAME:reason."""
    body = response.get_data(as_text=True)
    assert response.status_code == status, body[:400]
    assert "Traceback" not in body and "Sign-in refused" in body
    if reason:
        assert f"<code>{reason}</code>" in body, body
    assert not flow.has_session()
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(User)) == accounts
    reasons = audit_reasons(app)
    assert reasons, "no audit event for the refusal"
    if reason:
        assert f"{flow.name}:{reason}" in reasons, reasons


def parse(xml: str):
    return etree.fromstring(xml.encode())


def serialize(root) -> bytes:
    return etree.tostring(root)


# --- signatures -----------------------------------------------------------------------------

def signed_elements(xml) -> list[str]:
    """Local names of the elements that carry a ds:Signature (what the IdP signed)."""
    root = parse(xml) if isinstance(xml, str) else etree.fromstring(xml)
    return sorted(etree.QName(sig.getparent()).localname for sig in root.iter(f"{{{NS['ds']}}}Signature"))


# Each way an IdP signs (issue 7: "the signature on the Response or Assertion"): both; only the
# Response, covering the assertion (ADFS, Okta set to sign the message); only the Assertion.
SIGNS = {"both": ["Assertion", "Response"], "response": ["Response"], "assertion": ["Assertion"]}


@pytest.mark.parametrize("signs", SIGNS)
def test_unsigned_assertion_is_refused(app, flow, signs):
    """Whatever else the IdP usually signs: a response without any signature is refused."""
    flow.idp.signs = signs
    request, relay = flow.start()
    xml = flow.idp.response_xml(request, sign_response=False, sign_assertion=False)
    assert signed_elements(xml) == []
    assert_refused(app, flow, flow.post(xml, relay), "unsigned")


@pytest.mark.parametrize("signs", SIGNS)
def test_signature_by_another_key_is_refused(app, flow, tmp_path, other_key_pair, signs):
    request, relay = flow.start()
    attacker = TestIdP(tmp_path / "attacker", other_key_pair)  # same entity ID, its own key
    attacker.signs = signs
    attacker.trust_sp(app.test_client().get("/saml/testidp/metadata").get_data(as_text=True))
    xml = attacker.response_xml(request)
    assert signed_elements(xml) == SIGNS[signs]
    assert_refused(app, flow, flow.post(xml, relay), "invalid_signature")


@pytest.mark.parametrize("signs", SIGNS)
def test_sha1_signature_is_refused(app, flow, signs):
    flow.idp.signs = signs
    request, relay = flow.start()
    xml = flow.idp.response_xml(request, sha1=True)
    assert "rsa-sha1" in xml and signed_elements(xml) == SIGNS[signs]
    assert_refused(app, flow, flow.post(xml, relay), "weak_algorithm")


@pytest.mark.parametrize("signs", SIGNS)
def test_modified_signed_content_is_refused(app, flow, signs):
    """Signed element changed: the Signature still points at the signed ID, the content changed."""
    flow.idp.signs = signs
    request, relay = flow.start()
    root = parse(flow.idp.response_xml(request, email="mallory@corp.example.test"))
    for name_id in root.iter(f"{{{NS['saml']}}}NameID"):
        name_id.text = "alice@corp.example.test"
    assert_refused(app, flow, flow.post(serialize(root), relay), "invalid_signature")


def test_one_good_signature_does_not_excuse_a_bad_one(app, flow, tmp_path, other_key_pair):
    """The IdP's own valid signature on the Response, over an Assertion signed by another key:
    refused (every signature present must verify, not just one of them)."""
    request, relay = flow.start()
    attacker = TestIdP(tmp_path / "attacker", other_key_pair)
    attacker.trust_sp(app.test_client().get("/saml/testidp/metadata").get_data(as_text=True))
    forged = parse(attacker.response_xml(request, email="admin@corp.example.test", sign_response=False))
    root = parse(flow.idp.response_xml(request, sign_assertion=False))
    root.replace(root.find("saml:Assertion", NS), forged.find("saml:Assertion", NS))
    xml = flow.idp.sign_response_again(serialize(root))  # the genuine key signs the Response
    assert signed_elements(xml) == ["Assertion", "Response"]
    assert_refused(app, flow, flow.post(xml, relay), "invalid_signature")


# --- XML signature wrapping -----------------------------------------------------------------

def _evil_copy(assertion, email="admin@corp.example.test", same_id=True):
    evil = copy.deepcopy(assertion)
    for sig in evil.findall("ds:Signature", NS):
        evil.remove(sig)
    evil.find(".//saml:NameID", NS).text = email
    for value in evil.iterfind(".//saml:AttributeValue", NS):
        if "@" in (value.text or ""):
            value.text = email
    if not same_id:
        evil.set("ID", "_evil" + assertion.get("ID")[1:])
    return evil


def test_xsw_duplicated_assertion_is_refused(app, flow):
    request, relay = flow.start()
    root = parse(flow.idp.response_xml(request))
    signed = root.find("saml:Assertion", NS)
    root.insert(root.index(signed), _evil_copy(signed, same_id=False))
    assert_refused(app, flow, flow.post(serialize(root), relay), "invalid_assertion")


def test_xsw_signed_assertion_moved_into_extensions_is_refused(app, flow):
    request, relay = flow.start()
    root = parse(flow.idp.response_xml(request, sign_response=False))
    signed = root.find("saml:Assertion", NS)
    evil = _evil_copy(signed, same_id=True)
    extensions = etree.Element(f"{{{NS['samlp']}}}Extensions")
    root.replace(signed, evil)
    extensions.append(signed)
    root.insert(root.index(root.find("saml:Issuer", NS)) + 1, extensions)
    assert_refused(app, flow, flow.post(serialize(root), relay), "invalid_assertion")


def test_xsw_evil_assertion_wrapping_the_signed_one_is_refused(app, flow):
    request, relay = flow.start()
    root = parse(flow.idp.response_xml(request, sign_response=False))
    signed = root.find("saml:Assertion", NS)
    evil = _evil_copy(signed, same_id=False)
    root.replace(signed, evil)
    # The signed original hidden inside the evil assertion's Subject (SubjectConfirmationData).
    evil.find(".//saml:SubjectConfirmationData", NS).append(signed)
    assert_refused(app, flow, flow.post(serialize(root), relay), "invalid_assertion")


# --- XML signature wrapping when only the Response is signed (ADFS, Okta) ----------------------

@pytest.fixture()
def response_signed(flow):
    """The IdP signs only the Response; returns (genuine Response for alice, RelayState)."""
    flow.idp.signs = "response"
    request, relay = flow.start()
    xml = flow.idp.response_xml(request)
    assert signed_elements(xml) == ["Response"]
    return parse(xml), relay, request


def test_xsw_response_signed_with_its_assertion_swapped_is_refused(app, flow, response_signed):
    """The assertion under a signed Response replaced by the IdP's own signed assertion for
    someone else: the assertion's signature verifies, the Response's no longer does."""
    root, relay, request = response_signed
    other = parse(flow.idp.response_xml(request, email="admin@corp.example.test", sign_response=False,
                                        sign_assertion=True))
    root.replace(root.find("saml:Assertion", NS), other.find("saml:Assertion", NS))
    assert signed_elements(serialize(root)) == ["Assertion", "Response"]
    assert_refused(app, flow, flow.post(serialize(root), relay), "invalid_signature")


def test_xsw_response_signed_with_an_edited_copy_of_its_assertion_is_refused(app, flow, response_signed):
    root, relay, _ = response_signed
    signed = root.find("saml:Assertion", NS)
    root.replace(signed, _evil_copy(signed, same_id=True))
    assert_refused(app, flow, flow.post(serialize(root), relay), "invalid_signature")


@pytest.mark.parametrize("where", ["before", "after", "extensions", "inside"])
def test_xsw_response_signed_with_a_second_assertion_injected_is_refused(app, flow, response_signed, where):
    """An unsigned evil assertion added beside (or inside) the signed Response's own."""
    root, relay, _ = response_signed
    signed = root.find("saml:Assertion", NS)
    evil = _evil_copy(signed, same_id=False)
    if where == "before":
        root.insert(root.index(signed), evil)
    elif where == "after":
        root.insert(root.index(signed) + 1, evil)
    elif where == "extensions":
        extensions = etree.Element(f"{{{NS['samlp']}}}Extensions")
        extensions.append(evil)
        root.insert(root.index(root.find("saml:Issuer", NS)) + 1, extensions)
    else:
        signed.find(".//saml:SubjectConfirmationData", NS).append(evil)
    assert_refused(app, flow, flow.post(serialize(root), relay), "invalid_assertion")


@pytest.mark.parametrize("same_id", [True, False])
def test_xsw_signed_response_wrapped_in_an_evil_response_is_refused(app, flow, response_signed, same_id):
    """An evil unsigned Response (root) with an evil assertion, the genuine signed Response
    hidden in its Extensions (the signature still verifies there; with the same ID, the
    Reference could be resolved to either)."""
    genuine, relay, _ = response_signed
    evil = copy.deepcopy(genuine)
    evil.remove(evil.find("ds:Signature", NS))
    evil.replace(evil.find("saml:Assertion", NS), _evil_copy(genuine.find("saml:Assertion", NS), same_id=False))
    if not same_id:
        evil.set("ID", "_evil" + genuine.get("ID"))
    extensions = etree.Element(f"{{{NS['samlp']}}}Extensions")
    extensions.append(genuine)
    evil.insert(evil.index(evil.find("saml:Issuer", NS)) + 1, extensions)
    assert_refused(app, flow, flow.post(serialize(evil), relay), "invalid_assertion")


def test_xsw_response_signed_with_its_signature_stripped_is_refused(app, flow, response_signed):
    root, relay, _ = response_signed
    root.remove(root.find("ds:Signature", NS))
    assert_refused(app, flow, flow.post(serialize(root), relay), "unsigned")


def test_comment_injection_in_name_id_is_refused(app, flow):
    """CVE-2017-11427: c14n drops comments, so the signature still verifies; a comment-blind
    reader would see alice@corp.example.test. We refuse comments outright."""
    request, relay = flow.start()
    xml = flow.idp.response_xml(request, email="alice@corp.example.test.evil.test")
    xml = xml.replace(">alice@corp.example.test.evil.test<", ">alice@corp.example.test<!---->.evil.test<")
    assert "<!---->" in xml
    assert_refused(app, flow, flow.post(xml, relay), "comments_forbidden")


# --- conditions -----------------------------------------------------------------------------

def test_wrong_audience_is_refused(app, flow):
    """A response meant for another SP the IdP knows (here: our own "other" connection)."""
    add_connection(app, flow.idp, name="other")
    request, relay = flow.start()
    xml = flow.idp.response_xml(request, sp_entity_id="http://127.0.0.1:5000/saml/other/metadata")
    assert "saml/other/metadata" in xml
    assert_refused(app, flow, flow.post(xml, relay), "wrong_audience")


def test_wrong_destination_is_refused(app, flow):
    request, relay = flow.start()
    xml = flow.idp.response_xml(request, destination="https://other-sp.example.test/acs")
    assert_refused(app, flow, flow.post(xml, relay), "wrong_destination")


def test_wrong_recipient_is_refused(app, flow):
    """The Response's Destination is our ACS, but the assertion's bearer SubjectConfirmationData
    names another Recipient (an assertion issued for another SP's ACS, rewrapped)."""
    request, relay = flow.start()
    xml = flow.idp.response_xml(request, recipient="https://other-sp.example.test/acs")
    root = parse(xml)
    assert root.get("Destination") == "http://127.0.0.1:5000/saml/testidp/acs"
    assert root.find(".//saml:SubjectConfirmationData", NS).get("Recipient") == "https://other-sp.example.test/acs"
    assert_refused(app, flow, flow.post(xml, relay), "wrong_destination")


@pytest.mark.parametrize("delay", [60, 200, 900])
def test_not_before_in_the_future(app, test_idp, delay):
    """Issued now, valid only from `delay` seconds on, until an hour from now (signed so by the
    IdP): within the clock skew (120 s) it is accepted, beyond it refused as not_yet_valid."""
    test_idp.lifetime_minutes = 60
    add_connection(app, test_idp)
    flow = Flow(app, test_idp)
    request, relay = flow.start()
    root = parse(xml := test_idp.response_xml(request, not_before_delay=delay))
    conditions = root.find(".//saml:Conditions", NS)
    issued = OneLogin_Saml2_Utils.parse_SAML_to_time(root.get("IssueInstant"))
    assert abs(issued - time.time()) < 5
    assert OneLogin_Saml2_Utils.parse_SAML_to_time(conditions.get("NotBefore")) - issued in (delay, delay + 1)
    assert OneLogin_Saml2_Utils.parse_SAML_to_time(conditions.get("NotOnOrAfter")) - issued >= 3599
    response = flow.post(xml, relay)
    if delay < 120:
        assert response.status_code == 303, response.get_data(as_text=True)[:400]
    else:
        assert_refused(app, flow, response, "not_yet_valid")


@pytest.mark.parametrize("name_id", ["", "   "])
def test_empty_subject_is_refused(app, flow, name_id):
    request, relay = flow.start()
    xml = flow.idp.response_xml(request, name_id=name_id)
    assert parse(xml).find(".//saml:Subject/saml:NameID", NS).text in (None, name_id)
    assert_refused(app, flow, flow.post(xml, relay), "no_subject")


def test_missing_subject_attribute_is_refused(app, test_idp):
    """The map takes the subject from an attribute (a persistent id) the IdP did not send."""
    add_connection(app, test_idp, attribute_map={"subject": "eduPersonUniqueId"})
    flow = Flow(app, test_idp)
    request, relay = flow.start()
    assert_refused(app, flow, flow.post(test_idp.response_xml(request), relay), "no_subject")


def test_expired_response_is_refused(app, flow, monkeypatch):
    request, relay = flow.start()
    xml = flow.idp.response_xml(request)  # valid 5 minutes; we are 2 hours later
    monkeypatch.setattr(OneLogin_Saml2_Utils, "now", staticmethod(lambda: int(time.time()) + 7200))
    assert_refused(app, flow, flow.post(xml, relay), "expired")


# --- replay and unsolicited -----------------------------------------------------------------

def test_replayed_response_is_refused(app, flow):
    request, relay = flow.start()
    xml = flow.idp.response_xml(request)
    assert flow.post(xml, relay).status_code == 303
    again = Flow(app, flow.idp, client_id=flow.client_id)
    assert_refused_after_first(app, again, again.post(xml, relay), "unsolicited")


def assert_refused_after_first(app, flow, response, reason):
    """assert_refused for a second use, after a first one signed in (and made the account)."""
    assert_refused(app, flow, response, reason, accounts=1)


def test_replayed_in_response_to_with_a_new_relay_state_is_refused(app, flow):
    request, relay = flow.start()
    xml = flow.idp.response_xml(request)
    assert flow.finish(flow.post(xml, relay)).status_code == 302
    # Same browser starts again; the old request's response (a fresh one, new assertion ID) is
    # posted with the new RelayState.
    second = Flow(app, flow.idp, client_id=flow.client_id)
    _, relay2 = second.start()
    response = second.post(flow.idp.response_xml(request), relay2)
    assert_refused_after_first(app, second, response, "wrong_in_response_to")


def test_unsolicited_response_is_refused_by_default(app, flow):
    xml = flow.idp.response_xml(None, destination="http://127.0.0.1:5000/saml/testidp/acs",
                                sp_entity_id="http://127.0.0.1:5000/saml/testidp/metadata")
    assert_refused(app, flow, flow.post(xml, None), "unsolicited")


def test_idp_initiated_when_enabled_and_assertion_replay_cache(app, tmp_path, idp_key_pair):
    idp = TestIdP(tmp_path / "idp2", idp_key_pair)
    add_connection(app, idp, name="open", allow_idp_initiated=True)
    xml = idp.response_xml(None, destination="http://127.0.0.1:5000/saml/open/acs",
                           sp_entity_id="http://127.0.0.1:5000/saml/open/metadata")
    first = Flow(app, idp, name="open")
    response = first.post(xml, None)
    # No application to go back to: the account page, as after signing in there.
    assert response.status_code == 302 and response.headers["Location"] == "/account"
    assert first.has_session()
    second = Flow(app, idp, name="open")
    assert_refused_after_first(app, second, second.post(xml, None), "replayed")


def test_relay_state_of_an_unknown_request_is_refused(app, flow):
    request, relay = flow.start()
    xml = flow.idp.response_xml(request)
    assert_refused(app, flow, flow.post(xml, "not-the-relay-state"), "unsolicited")


# --- bad XML --------------------------------------------------------------------------------

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]>
<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" ID="_x" Version="2.0">&lol4;</samlp:Response>"""


def test_xml_entities_are_not_expanded(app, flow):
    _, relay = flow.start()
    started = time.monotonic()
    assert_refused(app, flow, flow.post(BILLION_LAUGHS, relay), "dtd_forbidden")
    assert time.monotonic() - started < 2


def test_external_entity_in_a_signed_response_is_refused(app, flow):
    request, relay = flow.start()
    xml = flow.idp.response_xml(request)
    body = xml[xml.index("<samlp:Response") if "<samlp:Response" in xml else xml.index("<ns0:Response"):]
    xxe = '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>' + body
    assert_refused(app, flow, flow.post(xxe, relay), "dtd_forbidden")


def test_python3_saml_parser_resolves_no_entities():
    """Defence in depth: python3-saml's own parser refuses DTDs (its metadata parser too)."""
    from onelogin.saml2.xml_utils import OneLogin_Saml2_XML
    from onelogin.saml2.xmlparser import DTDForbidden

    with pytest.raises(DTDForbidden):
        OneLogin_Saml2_XML.to_etree(BILLION_LAUGHS.encode())


@pytest.mark.parametrize("raw,reason", [
    ("!!!not base64!!!", None),
    (b64("<samlp:Response xmlns:samlp='urn:oasis:names:tc:SAML:2.0:protocol'"), "malformed"),
    (b64("<html><body>hello</body></html>"), "malformed"),
    (b64("\xff\xfe garbage"), "malformed"),
    ("", "no_response"),
])
def test_malformed_responses_are_refused(app, flow, raw, reason):
    _, relay = flow.start()
    response = flow.browser.post("/saml/testidp/acs", data={"SAMLResponse": raw, "RelayState": relay})
    assert_refused(app, flow, response, reason)


def test_huge_response_is_refused(app, flow):
    request, relay = flow.start()
    xml = flow.idp.response_xml(request, identity={"mail": ["alice@corp.example.test"],
                                                   "description": ["x" * 300_000]})
    assert_refused(app, flow, flow.post(xml, relay), "too_large")


def test_body_over_the_request_limit_is_an_error_page_not_a_500(app, flow):
    _, relay = flow.start()
    response = flow.browser.post("/saml/testidp/acs", data={"SAMLResponse": "A" * 1_200_000, "RelayState": relay})
    assert response.status_code == 413 and "Traceback" not in response.get_data(as_text=True)
    assert not flow.has_session()


def test_wrong_content_type_is_refused(app, flow):
    response = flow.browser.post("/saml/testidp/acs", data=b"{}", content_type="application/json")
    assert_refused(app, flow, response, "malformed")
