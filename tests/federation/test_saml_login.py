"""SP-initiated SAML login bridged into the OIDC authorization code flow (issue 7)."""

from __future__ import annotations

import pytest
from lxml import etree
from sqlalchemy import select

from idp.storage.federation_models import FederatedIdentity
from idp.storage.models import User, db
from tests.factories import exchange, query

from .saml_idp import AUTHN_PASSWORD, redirect_query

DS = "http://www.w3.org/2000/09/xmldsig#"
MD = "urn:oasis:names:tc:SAML:2.0:metadata"


def test_login_page_offers_each_connection(flow):
    assert 'Sign in with testidp' in flow.login_page()


def test_authn_request_is_signed_and_relay_state_opaque(flow):
    request, relay = flow.start()
    q = redirect_query(flow.redirect_url)
    assert q["SigAlg"] == "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256" and q["Signature"]
    assert request.message.assertion_consumer_service_url == "http://127.0.0.1:5000/saml/testidp/acs"
    assert len(relay) >= 40 and flow.params["state"] not in relay


@pytest.mark.parametrize("signs", ["both", "response", "assertion"])
def test_round_trip_gives_code_and_id_token_with_mapped_claims(app, flow, signs):
    """Whichever the IdP signs: the Response (ADFS, Okta set to sign the message), the
    Assertion, or both (issue 7: "the signature on the Response or Assertion")."""
    flow.idp.signs = signs
    request, relay = flow.start()
    xml = flow.idp.response_xml(request)
    root = etree.fromstring(xml.encode())
    signed = sorted(etree.QName(s.getparent()).localname for s in root.iter(f"{{{DS}}}Signature"))
    assert signed == {"both": ["Assertion", "Response"], "response": ["Response"], "assertion": ["Assertion"]}[signs]
    response = flow.finish(flow.post(xml, relay))
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    q = query(response.headers["Location"])
    assert q["state"] == flow.params["state"]
    token = exchange(flow.browser, flow.client_id, flow.secret, q["code"], flow.verifier)
    assert token.status_code == 200, token.get_json()
    from joserfc import jwt

    claims = jwt.decode(token.get_json()["id_token"], app.extensions["idp"].keyring.public_keys()).claims
    assert claims["amr"] == ["ext"] and claims["acr"] == AUTHN_PASSWORD
    assert claims["email"] == "alice@corp.example.test" and claims["name"] == "Alice Cooper"
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == "alice@corp.example.test"))
        assert user.profile == {"given_name": "Alice", "family_name": "Cooper"}
        link = db.session.scalar(select(FederatedIdentity))
        assert link.user_id == user.id and link.subject == "alice@corp.example.test"


def verify_metadata_signature(xml: bytes, cert_pem: str) -> None:
    """Verify the enveloped signature on an EntityDescriptor with xmlsec directly (not through
    python3-saml, which made it): it must cover the whole document. Raises on failure."""
    import xmlsec

    root = etree.fromstring(xml)
    signatures = root.findall(f"{{{DS}}}Signature")
    assert len(signatures) == 1 and len(list(root.iter(f"{{{DS}}}Signature"))) == 1
    reference = signatures[0].find(f"{{{DS}}}SignedInfo/{{{DS}}}Reference")
    assert reference.get("URI") == "#" + root.get("ID")
    assert signatures[0].find(f"{{{DS}}}SignedInfo/{{{DS}}}SignatureMethod").get("Algorithm") == \
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
    assert reference.find(f"{{{DS}}}DigestMethod").get("Algorithm") == "http://www.w3.org/2001/04/xmlenc#sha256"
    xmlsec.tree.add_ids(root, ["ID"])
    context = xmlsec.SignatureContext()
    context.key = xmlsec.Key.from_memory(cert_pem.encode(), xmlsec.KeyFormat.CERT_PEM, None)
    context.verify(signatures[0])


def test_sp_metadata_is_signed_with_acs_and_slo(app, client, connection, other_key_pair):
    import xmlsec

    from idp.federation import connections

    response = client.get("/saml/testidp/metadata")
    body = response.get_data()
    assert response.status_code == 200 and response.mimetype == "application/samlmetadata+xml"
    assert b'Location="http://127.0.0.1:5000/saml/testidp/acs"' in body
    assert b'Location="http://127.0.0.1:5000/saml/testidp/slo"' in body
    with app.app_context():
        current, _ = connections.sp_keys(connections.get_connection("testidp"))
    # Signed with the connection's SP key: verifies with its certificate (the one published in
    # the metadata's KeyDescriptor), and not with another, nor once the ACS URL is changed.
    verify_metadata_signature(body, current.certificate_pem)
    published = etree.fromstring(body).find(f".//{{{MD}}}KeyDescriptor[@use='signing']//{{{DS}}}X509Certificate")
    assert "".join(published.text.split()) == "".join(line for line in current.certificate_pem.splitlines()
                                                     if "-----" not in line)
    with pytest.raises(xmlsec.Error):
        verify_metadata_signature(body, other_key_pair[1])
    with pytest.raises(xmlsec.Error):
        verify_metadata_signature(body.replace(b"/saml/testidp/acs", b"/saml/evil/acs"), current.certificate_pem)
    assert client.get("/saml/nope/metadata").status_code == 404


def test_continue_in_another_browser_is_refused(app, flow):
    """Login CSRF: the step back to /authorize needs this browser's interaction cookie."""
    request, relay = flow.start()
    acs = flow.post(flow.idp.response_xml(request), relay)
    assert acs.status_code == 303
    other = app.test_client()
    response = other.get(acs.headers["Location"])
    assert response.status_code == 400 and "interaction_expired" in response.get_data(as_text=True)
    # The ticket was single use: the right browser cannot use it afterwards either.
    assert flow.browser.get(acs.headers["Location"]).status_code == 400
    assert not flow.has_session()


def test_saml_login_without_the_interaction_cookie_is_refused(app, flow):
    flow.login_page()
    other = app.test_client()
    response = other.get("/saml/testidp/login", query_string={"interaction": "x" * 32})
    assert response.status_code == 400
    assert other.get("/saml/unknown/login").status_code == 404
    assert other.post("/saml/unknown/acs", data={"SAMLResponse": "x"}).status_code == 404
    assert other.get("/saml/testidp/acs").status_code == 405
