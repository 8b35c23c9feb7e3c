"""End to end across both protocols (issue 7): an independent OIDC client library (Python `oic`)
-> /authorize on the live gunicorn server -> "Sign in with testidp" -> the pysaml2 IdP answers
the AuthnRequest our SP produced -> ACS -> consent -> code -> an ID token, verified by oic,
whose claims come from the mapped SAML attributes."""

from __future__ import annotations

import re
from html import unescape
from urllib.parse import urljoin

import requests
from oic import rndstr
from oic.oic import Client
from oic.oic.message import AccessTokenResponse, AuthorizationResponse, RegistrationResponse
from oic.utils.authn.client import CLIENT_AUTHN_METHOD

from idp.federation import connections
from idp.services.clients import ClientSpec, create_client
from idp.settings import decode_kek

from .saml_idp import b64

REDIRECT_URI = "https://rp.saml-e2e.test/callback"


def test_oic_client_signs_in_through_the_saml_idp(app, live_server, test_idp):
    with app.app_context():
        kek = decode_kek(app.extensions["idp"].settings.key_encryption_key)
        connections.create_connection(kek, name="testidp", metadata_xml=test_idp.metadata())
        client, secret = create_client(ClientSpec(name="SAML e2e RP", redirect_uris=[REDIRECT_URI],
                                                  grant_types=["authorization_code"],
                                                  scope="openid profile email"))
        client_id = client.client_id
    test_idp.trust_sp(requests.get(live_server.url + "/saml/testidp/metadata", timeout=10).text)

    rp = Client(client_authn_method=CLIENT_AUTHN_METHOD)
    rp.provider_config(live_server.url)
    rp.store_registration_info(RegistrationResponse(client_id=client_id, client_secret=secret,
                                                    redirect_uris=[REDIRECT_URI],
                                                    token_endpoint_auth_method="client_secret_basic"))
    state, nonce = rndstr(24), rndstr(24)
    pkce, verifier = rp.add_code_challenge()
    url, _, _, _ = rp.authorization_request_info(request_args={
        "response_type": "code", "scope": "openid profile email", "redirect_uri": REDIRECT_URI,
        "state": state, "nonce": nonce, **pkce})

    browser = requests.Session()
    response = browser.get(url, allow_redirects=False, timeout=10)
    login_page = browser.get(urljoin(live_server.url, response.headers["Location"]), timeout=10).text
    link = unescape(re.search(r'href="(/saml/testidp/login\?[^"]+)"[^>]*>Sign in with testidp', login_page).group(1))
    to_idp = browser.get(live_server.url + link, allow_redirects=False, timeout=10)
    assert to_idp.status_code == 302 and to_idp.headers["Location"].startswith("https://idp.example.test/sso")

    request, relay = test_idp.parse_request(to_idp.headers["Location"])  # verifies our signature
    xml = test_idp.response_xml(request, email="grace@corp.example.test", identity={
        "mail": ["grace@corp.example.test"], "givenName": ["Grace"], "sn": ["Hopper"],
        "displayName": ["Grace Hopper"]})
    acs = browser.post(live_server.url + "/saml/testidp/acs", data={"SAMLResponse": b64(xml), "RelayState": relay},
                       allow_redirects=False, timeout=10)
    assert acs.status_code == 303, acs.text[:500]
    response = browser.get(urljoin(live_server.url, acs.headers["Location"]), allow_redirects=False, timeout=10)
    assert response.headers["Location"].startswith("/consent"), response.headers
    consent = browser.get(urljoin(live_server.url, response.headers["Location"]), timeout=10).text
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', consent))
    callback = browser.post(live_server.url + "/consent", data={**fields, "decision": "allow"},
                            allow_redirects=False, timeout=10).headers["Location"]
    assert callback.startswith(REDIRECT_URI)

    aresp = rp.parse_response(AuthorizationResponse, info=callback.split("?", 1)[1], sformat="urlencoded")
    assert aresp["state"] == state and aresp["iss"] == live_server.url
    atr = rp.do_access_token_request(state=state, request_args={
        "code": aresp["code"], "code_verifier": verifier, "redirect_uri": REDIRECT_URI},
        authn_method="client_secret_basic")
    assert isinstance(atr, AccessTokenResponse), atr.to_dict()
    id_token = atr["id_token"]  # oic verified signature (JWKS by kid), iss, aud, exp and nonce
    assert id_token["nonce"] == nonce and id_token["amr"] == ["ext"]
    assert id_token["acr"] == "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"
    assert (id_token["email"], id_token["name"]) == ("grace@corp.example.test", "Grace Hopper")
    assert (id_token["given_name"], id_token["family_name"]) == ("Grace", "Hopper")
