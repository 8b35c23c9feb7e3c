"""The SAML round trip in a real browser (Chromium via Playwright), with screenshots: the
application's /authorize -> login page -> "Sign in with testidp" -> a pysaml2 IdP served on
loopback (its page posts the signed Response) -> ACS -> consent -> back to the application."""

from __future__ import annotations

import html
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from tests.conftest import free_port
from tests.factories import pkce_pair
from tests.federation.saml_idp import TestIdP, b64, make_key_pair

REDIRECT_URI = "https://rp.saml-browser.test/callback"


class IdPServer:
    """Serves the test IdP's SSO page (parse the AuthnRequest, show a button that POSTs the
    Response) and its SLO service (answers our LogoutRequest with a redirect)."""

    def __init__(self, idp: TestIdP, port: int, sp_slo: str = ""):
        outer = self
        self.idp, self.sp_slo = idp, sp_slo

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path.startswith("/bye"):  # plays the application's post-logout page
                    self.send_response(200)
                    self.send_header("Content-Length", "7")
                    self.end_headers()
                    self.wfile.write(b"RP page")
                    return
                if self.path.startswith("/sso/slo"):  # single logout: answer our LogoutRequest at once
                    request, relay = outer.idp.parse_logout_request(self.path)
                    back = outer.idp.logout_response_url(request, relay, outer.sp_slo)
                    self.send_response(302)
                    self.send_header("Location", back)
                    self.end_headers()
                    return
                request, relay = outer.idp.parse_request(self.path)
                xml = outer.idp.response_xml(request, email="ines@corp.example.test", identity={
                    "mail": ["ines@corp.example.test"], "displayName": ["Ines Browser"]})
                acs = request.message.assertion_consumer_service_url
                body = (f'<!doctype html><title>Test IdP</title><h1>Test IdP</h1><p>Signed in as ines</p>'
                        f'<form method="post" action="{html.escape(acs)}">'
                        f'<input type="hidden" name="SAMLResponse" value="{b64(xml)}">'
                        f'<input type="hidden" name="RelayState" value="{html.escape(relay)}">'
                        f'<button type="submit">Continue to the service</button></form>').encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def start_idp(app, live_server, tmp_path, email_domains=()):
    """The pysaml2 IdP on a free loopback port, connected as "testidp", serving its pages, and a
    client whose post-logout page the IdP server also plays. Returns (server, client_id, port)."""
    from idp.federation import connections
    from idp.services.clients import ClientSpec, create_client
    from idp.settings import decode_kek

    port = free_port()
    idp = TestIdP(tmp_path / "idp", make_key_pair("idp.example.test"), sso_url=f"http://127.0.0.1:{port}/sso")
    with app.app_context():
        kek = decode_kek(app.extensions["idp"].settings.key_encryption_key)
        connections.create_connection(kek, name="testidp", metadata_xml=idp.metadata(), email_domains=email_domains)
        client, _ = create_client(ClientSpec(name="Browser RP", redirect_uris=[REDIRECT_URI],
                                             post_logout_redirect_uris=[f"http://127.0.0.1:{port}/bye"],
                                             grant_types=["authorization_code"], scope="openid email profile"))
        client_id = client.client_id
    idp.trust_sp(requests.get(live_server.url + "/saml/testidp/metadata", timeout=10).text)
    return IdPServer(idp, port, sp_slo=live_server.url + "/saml/testidp/slo"), client_id, port


@pytest.mark.timeout(120)
def test_saml_round_trip_in_the_browser(app, live_server, page, tmp_path):
    server, client_id, _ = start_idp(app, live_server, tmp_path)
    page.route("https://rp.saml-browser.test/**", lambda route: route.fulfill(body="RP callback", status=200))
    try:
        _, challenge = pkce_pair()
        page.goto(live_server.url + "/authorize?" + urlencode({
            "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI, "scope": "openid email",
            "state": "s-123", "nonce": "n-456", "code_challenge": challenge, "code_challenge_method": "S256"}))
        page.get_by_role("link", name="Sign in with testidp").wait_for()
        page.shot("login-page")
        page.get_by_role("link", name="Sign in with testidp").click()
        page.get_by_role("button", name="Continue to the service").wait_for()
        page.shot("test-idp")
        page.get_by_role("button", name="Continue to the service").click()
        page.get_by_role("button", name="Allow").wait_for()
        page.shot("consent")
        page.get_by_role("button", name="Allow").click()
        page.wait_for_url("https://rp.saml-browser.test/**")
        page.shot("back-at-the-application")
        q = {k: v[0] for k, v in parse_qs(urlsplit(page.url).query).items()}
        assert q["state"] == "s-123" and q["code"] and q["iss"] == live_server.url
    finally:
        server.httpd.shutdown()


@pytest.mark.timeout(120)
def test_email_domain_routing_and_single_logout_in_the_browser(app, live_server, page, tmp_path):
    """An email of a routed domain goes to the IdP without a password page (the Refresh after
    the form POST is not blocked by CSP form-action); the RP-initiated logout then passes
    through the IdP's single logout and back to the application."""
    server, client_id, port = start_idp(app, live_server, tmp_path, email_domains=["corp.example.test"])
    page.route("https://rp.saml-browser.test/**", lambda route: route.fulfill(body="RP page", status=200))
    try:
        _, challenge = pkce_pair()
        page.goto(live_server.url + "/authorize?" + urlencode({
            "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI, "scope": "openid email",
            "state": "s-1", "nonce": "n-1", "code_challenge": challenge, "code_challenge_method": "S256"}))
        page.get_by_label("Email").fill("ines@Corp.Example.Test")
        page.shot("login-page-email-only")
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("button", name="Continue to the service").wait_for()
        page.shot("routed-to-the-idp")
        page.get_by_role("button", name="Continue to the service").click()
        page.get_by_role("button", name="Allow").click()
        page.wait_for_url(REDIRECT_URI + "**")
        page.goto(live_server.url + "/logout?" + urlencode({
            "client_id": client_id, "post_logout_redirect_uri": f"http://127.0.0.1:{port}/bye", "state": "bye-1"}))
        page.shot("logout-confirmation")
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url(f"http://127.0.0.1:{port}/bye**")
        page.shot("back-at-the-application-signed-out")
        assert parse_qs(urlsplit(page.url).query) == {"state": ["bye-1"]}
        assert not [c for c in page.context.cookies() if c["name"] == "idp_session"]
    finally:
        server.httpd.shutdown()
