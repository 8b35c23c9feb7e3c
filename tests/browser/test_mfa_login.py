"""Two-step verification in Debian's Chromium against gunicorn, mail read from a real SMTP
server: enrol an authenticator app from the account page (the secret read from the page, codes
computed with pyotp), then OIDC logins with a TOTP code, a recovery code, an email code, and
"trust this browser"; each ends with the ID token's acr/amr checked."""

from __future__ import annotations

import base64
import json
import re
import time
from urllib.parse import urlencode

import pyotp
import requests

from idp.mfa import recovery, totp
from idp.settings import decode_kek
from tests.factories import REDIRECT_URI, auth_params, make_client, make_user, pkce_pair, query
from tests.mailbox import body_text

PASSWORD = "a sturdy browser passphrase"


def _authorize_url(live_server, client_id: str, **over) -> tuple[str, dict, str]:
    verifier, challenge = pkce_pair()
    params = auth_params(client_id, challenge, **over)
    return f"{live_server.url}/authorize?{urlencode(params)}", params, verifier


def _password(page, email: str) -> None:
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def _id_token(live_server, client_id, secret, callback_url, params, verifier) -> dict:
    answer = query(callback_url)
    assert answer["state"] == params["state"]
    tokens = requests.post(live_server.url + "/token", auth=(client_id, secret), timeout=10, data={
        "grant_type": "authorization_code", "code": answer["code"], "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier}).json()
    payload = tokens["id_token"].split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def _allow(page):
    with page.expect_request(lambda r: r.url.startswith(REDIRECT_URI)) as callback:
        page.get_by_role("button", name="Allow").click()
    return callback.value.url


def _enrolled(app, email: str) -> str:
    with app.app_context():
        user = make_user(email, password=PASSWORD)
        secret = totp.new_secret()
        kek = decode_kek(app.extensions["idp"].settings.key_encryption_key)
        totp.create_factor(kek, user.id, secret, "Phone")
        recovery.generate(kek, user.id)
    return secret


def test_enrol_totp_on_the_account_page_then_sign_in_with_it(app, live_server, mailbox, page, browser):
    with app.app_context():
        make_user("tom@example.com", password=PASSWORD)
        client_id, secret = make_client()
    page.goto(live_server.url + "/account/login")
    _password(page, "tom@example.com")
    page.get_by_role("link", name="Manage two-step verification").click()
    page.get_by_role("link", name="Add an authenticator app").click()
    page.locator("figure.qr svg").wait_for()
    page.shot("enrol-qr-code")
    totp_secret = page.locator("#totp-secret").get_attribute("data-secret")
    page.get_by_label("Name").fill("Tom's phone")
    page.get_by_label("Code from the app").fill("000000" if pyotp.TOTP(totp_secret).now() != "000000" else "111111")
    page.get_by_role("button", name="Turn on").click()
    page.get_by_text("That code is not right").wait_for()
    page.shot("enrol-wrong-code")
    page.get_by_label("Code from the app").fill(pyotp.TOTP(totp_secret).now())
    page.get_by_role("button", name="Turn on").click()
    page.get_by_role("heading", name="Your recovery codes").wait_for()
    codes = re.findall(r"[0-9a-z]{5}-[0-9a-z]{5}", page.locator("ul.recovery-codes").inner_text())
    assert len(codes) == 10
    page.shot("recovery-codes")
    page.get_by_role("link", name="I saved them").click()
    page.get_by_text("Tom's phone").first.wait_for()
    page.shot("manage")
    assert "authenticator app (Tom's phone) was added" in body_text(mailbox.wait_for("tom@example.com", "security"))

    # An OIDC login in another browser: password, then the code from the app.
    context = browser.new_context()
    other = context.new_page()
    url, params, verifier = _authorize_url(live_server, client_id)
    other.goto(url)
    _password(other, "tom@example.com")
    other.get_by_role("heading", name="Two-step verification").wait_for()
    other.screenshot(path=str(page.shot("manage-again").with_name(
        "test_enrol_totp_on_the_account_page_then_sign_in_with_it-login-choose.png")), full_page=True)
    other.get_by_role("link", name="Use your authenticator app").click()
    # The enrolment code was used: the next step's code (one step of skew is accepted).
    other.get_by_label("Code").fill(pyotp.TOTP(totp_secret).at(time.time(), counter_offset=1))
    other.get_by_role("button", name="Verify").click()
    claims = _id_token(live_server, client_id, secret, _allow(other), params, verifier)
    assert claims["acr"] == "urn:idp:acr:mfa" and claims["amr"] == ["pwd", "otp", "mfa"]
    context.close()


def test_recovery_code_in_the_browser(app, live_server, mailbox, page):
    _enrolled(app, "rob@example.com")
    with app.app_context():
        from idp.storage.models import User, db

        user = db.session.query(User).filter_by(email="rob@example.com").one()
        codes = recovery.generate(decode_kek(app.extensions["idp"].settings.key_encryption_key), user.id)
        client_id, secret = make_client()
    url, params, verifier = _authorize_url(live_server, client_id)
    page.goto(url)
    _password(page, "rob@example.com")
    page.get_by_role("link", name="Use a recovery code").click()
    page.get_by_label("Recovery code").fill(codes[0])
    page.shot("recovery-code")
    page.get_by_role("button", name="Verify").click()
    claims = _id_token(live_server, client_id, secret, _allow(page), params, verifier)
    assert claims["acr"] == "urn:idp:acr:mfa"
    assert "recovery code was used" in body_text(mailbox.wait_for("rob@example.com", "security"))


def test_email_code_for_a_client_that_requires_mfa(app, live_server, mailbox, page):
    with app.app_context():
        make_user("eve@example.com", password=PASSWORD)
        client_id, secret = make_client(require_mfa=True)
    url, params, verifier = _authorize_url(live_server, client_id)
    page.goto(url)
    _password(page, "eve@example.com")
    page.get_by_role("button", name="Email me a code").click()
    page.get_by_text("We sent a 6-digit code").wait_for()
    page.shot("email-code-sent")
    code = re.search(r"\b(\d{6})\b", body_text(mailbox.wait_for("eve@example.com", "sign-in code"))).group(1)
    page.get_by_label("Code").fill(code)
    page.get_by_role("button", name="Verify").click()
    claims = _id_token(live_server, client_id, secret, _allow(page), params, verifier)
    assert claims["acr"] == "urn:idp:acr:mfa" and claims["amr"] == ["pwd", "otp", "mfa"]


def test_trust_this_browser_skips_the_second_step_next_time(app, live_server, page):
    totp_secret = _enrolled(app, "tia@example.com")
    with app.app_context():
        client_id, secret = make_client(skip_consent=True)
    url, params, verifier = _authorize_url(live_server, client_id)
    page.goto(url)
    _password(page, "tia@example.com")
    page.get_by_role("link", name="Use your authenticator app").click()
    page.get_by_label("Code").fill(pyotp.TOTP(totp_secret).now())
    page.get_by_label("Trust this browser for 30 days").check()
    page.shot("trust-this-browser")
    with page.expect_request(lambda r: r.url.startswith(REDIRECT_URI)) as callback:
        page.get_by_role("button", name="Verify").click()
    assert _id_token(live_server, client_id, secret, callback.value.url, params, verifier)["acr"] == "urn:idp:acr:mfa"

    # prompt=login: the password again, but no second step in this trusted browser.
    url, params, verifier = _authorize_url(live_server, client_id, prompt="login")
    page = page.context.new_page()  # the first tab is still on the unreachable callback
    page.goto(url)
    with page.expect_request(lambda r: r.url.startswith(REDIRECT_URI)) as callback:
        _password(page, "tia@example.com")
    claims = _id_token(live_server, client_id, secret, callback.value.url, params, verifier)
    assert claims["acr"] == "urn:idp:acr:pwd" and claims["amr"] == ["pwd"]
