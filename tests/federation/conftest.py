"""SAML fixtures: a pysaml2 IdP with real keys, a connection to it, and helpers that drive
the login page -> /saml/NAME/login -> IdP -> ACS legs through Flask's test client."""

from __future__ import annotations

import re
import shutil

import pytest

from tests.factories import auth_params, make_client, pkce_pair

from .saml_idp import TestIdP, b64, make_key_pair

NAME = "testidp"

if not shutil.which("xmlsec1"):
    pytest.fail("the xmlsec1 binary is missing: `make test` installs Debian's xmlsec1", pytrace=False)


@pytest.fixture(scope="session")
def idp_key_pair():
    return make_key_pair("idp.example.test")


@pytest.fixture(scope="session")
def other_key_pair():
    return make_key_pair("attacker.example.test")


@pytest.fixture()
def test_idp(tmp_path, idp_key_pair):
    return TestIdP(tmp_path / "idp", idp_key_pair)


def add_connection(app, test_idp, name=NAME, **over):
    from idp.federation import connections
    from idp.settings import decode_kek

    kek = decode_kek(app.extensions["idp"].settings.key_encryption_key)
    with app.app_context():
        connections.create_connection(kek, name=name, metadata_xml=test_idp.metadata(), **over)
    sp_metadata = app.test_client().get(f"/saml/{name}/metadata").get_data(as_text=True)
    test_idp.trust_sp(sp_metadata)


@pytest.fixture()
def connection(app, test_idp):
    add_connection(app, test_idp)
    return NAME


class Flow:
    """One browser (test client) in one OIDC authorization that signs in through the IdP."""

    def __init__(self, app, test_idp, name=NAME, client_id=None):
        self.app, self.idp, self.name = app, test_idp, name
        self.browser = app.test_client()
        if client_id is None:
            with app.app_context():
                client_id, self.secret = make_client()
        self.client_id = client_id
        self.verifier, challenge = pkce_pair()
        self.params = auth_params(client_id, challenge)

    def login_page(self) -> str:
        response = self.browser.get("/authorize", query_string=self.params)
        assert response.status_code == 302 and response.headers["Location"].startswith("/login"), response.status
        return self.browser.get(response.headers["Location"]).get_data(as_text=True)

    def start(self):
        """Login page -> our /saml/NAME/login -> the IdP's SSO URL. Returns (parsed request, RelayState)."""
        page = self.login_page()
        link = re.search(rf'href="(/saml/{self.name}/login\?[^"]+)"', page)
        assert link, page
        response = self.browser.get(link.group(1).replace("&amp;", "&"))
        assert response.status_code == 302, response.get_data(as_text=True)[:300]
        self.redirect_url = response.headers["Location"]
        return self.idp.parse_request(self.redirect_url)

    def post(self, xml, relay_state):
        data = {"SAMLResponse": b64(xml) if isinstance(xml, str | bytes) else xml}
        if relay_state is not None:
            data["RelayState"] = relay_state
        return self.browser.post(f"/saml/{self.name}/acs", data=data)

    def finish(self, acs_response):
        """Follow the 303 to /saml/continue, then consent. Returns the redirect to the client."""
        assert acs_response.status_code == 303, acs_response.get_data(as_text=True)[:500]
        response = self.browser.get(acs_response.headers["Location"])
        if response.status_code == 302 and response.headers["Location"].startswith("/consent"):
            page = self.browser.get(response.headers["Location"]).get_data(as_text=True)
            fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page))
            response = self.browser.post("/consent", data={**fields, "decision": "allow"})
        return response

    def has_session(self) -> bool:
        return any(c.key.endswith("idp_session") for c in self.browser._cookies.values())


@pytest.fixture()
def flow(app, test_idp, connection):
    return Flow(app, test_idp)
