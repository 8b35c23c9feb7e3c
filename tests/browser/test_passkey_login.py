"""Passkeys in Debian's Chromium with a virtual authenticator (DevTools protocol WebAuthn
domain) against gunicorn: register one from the account page, sign out, sign in to a client
with the password and the passkey as second factor, then passwordless with the passkey alone
(amr in the ID token each time); rename and remove it; a replayed assertion is refused.

The server runs with the issuer http://localhost:PORT (`localhost_server`): a WebAuthn rp id
must be a host name, never an IP address, and Chromium treats http://localhost as a secure
context, so no TLS is needed."""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qsl, urlencode

import requests
from playwright.sync_api import Error as PlaywrightError

from tests.factories import PASSWORD, REDIRECT_URI, auth_params, make_client, make_user, pkce_pair, query


def _virtual_authenticator(page, **over) -> dict:
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    options = {"protocol": "ctap2", "transport": "internal", "hasResidentKey": True, "hasUserVerification": True,
               "isUserVerified": True, "automaticPresenceSimulation": True, **over}
    authenticator_id = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": options})["authenticatorId"]
    return {"cdp": cdp, "id": authenticator_id}


def _authorize(server, client_id: str) -> tuple[str, dict, str]:
    verifier, challenge = pkce_pair()
    params = auth_params(client_id, challenge)
    return f"{server.url}/authorize?{urlencode(params)}", params, verifier


def _callback(page):
    return page.expect_request(lambda r: r.url.startswith(REDIRECT_URI))


def _id_token_claims(page, server, client_id, secret, callback_url, verifier) -> dict:
    answer = query(callback_url)
    tokens = requests.post(server.url + "/token", auth=(client_id, secret), timeout=10, data={
        "grant_type": "authorization_code", "code": answer["code"], "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier}).json()
    payload = tokens["id_token"].split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def _goto(page, url: str):
    """page.goto, which Chromium's error page for the client's redirect_uri (nothing listens
    there) may interrupt while it is still loading."""
    for attempt in range(3):
        try:
            page.goto(url)
            return
        except PlaywrightError:
            if attempt == 2:
                raise
            page.wait_for_load_state()


def _sign_out(page, server):
    _goto(page, server.url + "/account")
    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("heading", name="Sign in to your account").wait_for()


def test_passkey_register_second_factor_passwordless_rename_remove(app, localhost_server, page):
    server = localhost_server
    with app.app_context():
        make_user("pia@example.com", password=PASSWORD, name="Pia Passkey")
        client_id, secret = make_client()
    page.goto(server.url + "/account/login")
    page.get_by_label("Email").fill("pia@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.get_by_role("heading", name="Your account").wait_for()
    virtual = _virtual_authenticator(page)

    # Register from the account page.
    page.get_by_label("Name of the new passkey (optional)").fill("Virtual key")
    page.shot("account-before")
    page.get_by_role("button", name="Add a passkey").click()
    page.get_by_role("heading", name="Your recovery codes").wait_for()  # the first factor: shown once
    page.shot("recovery-codes")
    page.goto(server.url + "/account?passkey=added")
    page.get_by_text("device-bound passkey").wait_for()
    page.shot("passkey-added")
    credentials = virtual["cdp"].send("WebAuthn.getCredentials", {"authenticatorId": virtual["id"]})["credentials"]
    assert len(credentials) == 1 and credentials[0]["isResidentCredential"]
    _sign_out(page, server)

    # Password, then the passkey as second factor.
    url, params, verifier = _authorize(server, client_id)
    page.goto(url)
    page.get_by_label("Email").fill("pia@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.get_by_role("link", name="Use a passkey").click()
    page.get_by_role("heading", name="Confirm it is you").wait_for()
    page.shot("second-factor")
    page.get_by_role("button", name="Use a passkey").click()
    page.get_by_role("button", name="Allow").wait_for()
    page.shot("consent")
    with _callback(page) as callback:
        page.get_by_role("button", name="Allow").click()
    claims = _id_token_claims(page, server, client_id, secret, callback.value.url, verifier)
    assert claims["amr"] == ["pwd", "hwk", "mfa"] and claims["acr"] == "urn:idp:acr:mfa"
    _sign_out(page, server)

    # Passwordless: the passkey alone (user verified by the authenticator: multi-factor).
    url, params, verifier = _authorize(server, client_id)
    _goto(page, url)
    page.get_by_role("heading", name="Sign in").wait_for()
    page.shot("login-with-passkey-button")
    with page.expect_request(lambda r: r.url.endswith("/login/passkey") and r.method == "POST") as sent, \
            _callback(page) as callback:
        page.get_by_role("button", name="Sign in with a passkey").click()
    first_assertion = dict(parse_qsl(sent.value.post_data))["credential"]
    claims = _id_token_claims(page, server, client_id, secret, callback.value.url, verifier)
    assert claims["amr"] == ["hwk", "mfa"] and claims["acr"] == "urn:idp:acr:mfa"
    _sign_out(page, server)

    # A replayed assertion: the browser's next sign-in posts the earlier answer instead.
    def replay(route):
        fields = dict(parse_qsl(route.request.post_data))
        fields["credential"] = first_assertion
        route.continue_(post_data=urlencode(fields))

    page.route("**/login/passkey", replay)
    url, _, _ = _authorize(server, client_id)
    _goto(page, url)
    page.get_by_role("button", name="Sign in with a passkey").click()
    page.get_by_text("The passkey could not be verified.").wait_for()
    page.shot("replay-refused")
    page.unroute("**/login/passkey")

    # Try again for real (the refusal page offers it), then rename and remove on the account page.
    with _callback(page):
        page.get_by_role("button", name="Try again").click()
    _goto(page, server.url + "/account")
    page.get_by_label("New name").fill("Renamed key")
    page.get_by_role("button", name="Rename").click()
    page.get_by_text("The passkey was renamed.").wait_for()
    page.get_by_text("Renamed key").first.wait_for()
    page.shot("renamed")
    page.get_by_role("button", name="Remove").click()
    page.get_by_role("heading", name="Remove “Renamed key”?").wait_for()
    page.shot("remove-needs-password")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Remove passkey").click()
    page.get_by_text("The passkey was removed.").wait_for()
    page.get_by_text("No passkeys yet.").wait_for()
    page.shot("removed")


def test_synced_passkey_is_swk_and_signs_in_to_the_account_page(app, localhost_server, page):
    """A backup-eligible credential (a synced passkey) is "swk" (RFC 8176): passwordless on the
    account sign-in page, then at a client."""
    server = localhost_server
    with app.app_context():
        make_user("sam@example.com", password=PASSWORD, name="Sam Synced")
        client_id, secret = make_client(skip_consent=True)
    page.goto(server.url + "/account/login")
    page.get_by_label("Email").fill("sam@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    _virtual_authenticator(page, defaultBackupEligibility=True, defaultBackupState=True)
    page.get_by_role("button", name="Add a passkey").click()
    page.get_by_role("heading", name="Your recovery codes").wait_for()
    page.goto(server.url + "/account")
    page.get_by_text("synced passkey").wait_for()
    _sign_out(page, server)

    page.get_by_role("button", name="Sign in with a passkey").click()
    page.get_by_role("heading", name="Your account").wait_for()
    page.get_by_text("Passkey 1").wait_for()
    page.shot("account-passwordless")
    _sign_out(page, server)

    url, _, verifier = _authorize(server, client_id)
    _goto(page, url)
    with _callback(page) as callback:
        page.get_by_role("button", name="Sign in with a passkey").click()
    claims = _id_token_claims(page, server, client_id, secret, callback.value.url, verifier)
    assert claims["amr"] == ["swk", "mfa"] and claims["acr"] == "urn:idp:acr:mfa"


def test_a_rate_limited_passkey_sign_in_says_how_long_to_wait(app, localhost_server, page):
    """A 429 from /login/passkey/options (the per-IP sign-in limit, RFC 6585 §4) is a readable
    message with the Retry-After time, not "The request failed (429)". The answer is faked here
    (the shared server's real budget stays untouched; tests/security/test_rate_limits.py checks
    the server's JSON 429)."""
    with app.app_context():
        client_id, _ = make_client()
    page.route("**/login/passkey/options", lambda route: route.fulfill(
        status=429, headers={"Retry-After": "120", "Content-Type": "application/json"},
        body='{"error": "invalid_request", "error_description": "Too many requests; retry later."}'))
    url, _, _ = _authorize(localhost_server, client_id)
    _goto(page, url)
    page.get_by_role("button", name="Sign in with a passkey").click()
    page.get_by_text("Too many attempts. Try again in 2 minutes.").wait_for()
    page.shot("passkey-rate-limited")
    assert page.get_by_role("button", name="Sign in with a passkey").is_enabled()
