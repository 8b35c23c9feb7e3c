"""Sign-up and password reset in Debian's Chromium against gunicorn, with the mail read from
a real SMTP server: sign up -> open the link in the mail and confirm -> OIDC login ->
consent -> the client gets its code; forgot password -> reset link -> new password -> the
session of the old password is gone (prompt=none answers login_required)."""

from __future__ import annotations

import re
from urllib.parse import urlencode

import requests
from playwright.sync_api import Error as PlaywrightError

from tests.factories import REDIRECT_URI, auth_params, make_client, make_user, pkce_pair, query
from tests.mailbox import body_text

PASSWORD = "a sturdy browser passphrase"


def _link(message, path: str) -> str:
    found = re.search(r"(https?://\S+" + re.escape(path) + r"\?token=[A-Za-z0-9_-]+)", body_text(message))
    assert found, body_text(message)
    return found.group(1)


def _callback(page):
    """Wait for the browser's request to the client's redirect_uri: an unreachable loopback URL
    (port 9, which Chromium refuses to load anyway), so the request is what the client gets."""
    return page.expect_request(lambda r: r.url.startswith(REDIRECT_URI))


def _authorize_url(live_server, client_id: str, **over) -> tuple[str, dict, str]:
    verifier, challenge = pkce_pair()
    params = auth_params(client_id, challenge, **over)
    return f"{live_server.url}/authorize?{urlencode(params)}", params, verifier


def test_sign_up_verify_then_oidc_login_and_consent(app, live_server, mailbox, page):
    with app.app_context():
        client_id, secret = make_client()

    page.goto(live_server.url + "/signup")
    page.shot("signup-form")
    page.get_by_label("Name").fill("Bea Browser")
    page.get_by_label("Email").fill("Bea@Example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    page.get_by_role("heading", name="Check your email").wait_for()
    page.shot("signup-sent")

    page.goto(_link(mailbox.wait_for("bea@example.com", "Confirm your email"), "/verify-email"))
    page.get_by_role("heading", name="Confirm this email address").wait_for()
    page.shot("email-confirm")
    page.get_by_role("button", name="Confirm my email address").click()
    page.get_by_role("heading", name="Email address confirmed").wait_for()
    page.shot("email-confirmed")

    url, params, verifier = _authorize_url(live_server, client_id)
    page.goto(url)
    page.get_by_role("heading", name="Sign in").wait_for()
    page.shot("login")
    page.get_by_label("Email").fill("bea@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("button", name="Allow").wait_for()
    page.shot("consent")
    with _callback(page) as callback:
        page.get_by_role("button", name="Allow").click()
    answer = query(callback.value.url)
    assert answer["state"] == params["state"] and answer["iss"] == live_server.url
    tokens = requests.post(live_server.url + "/token", auth=(client_id, secret), timeout=10, data={
        "grant_type": "authorization_code", "code": answer["code"], "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier}).json()
    assert tokens["token_type"].lower() == "bearer" and tokens["id_token"]


def test_unverified_sign_in_asks_to_confirm_the_email_first(app, live_server, mailbox, page):
    with app.app_context():
        client_id, _ = make_client()
        make_user("una@example.com", password=PASSWORD, verified=False)
    page.goto(_authorize_url(live_server, client_id)[0])
    page.get_by_label("Email").fill("una@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Confirm your email address").wait_for()
    page.get_by_role("button", name="Send the link again").click()
    page.get_by_text("We sent a new link").wait_for()
    page.shot("verify-required-resent")
    page.goto(_link(mailbox.wait_for("una@example.com", "Confirm your email"), "/verify-email"))
    page.get_by_role("button", name="Confirm my email address").click()
    page.get_by_role("heading", name="Email address confirmed").wait_for()


def test_forgot_password_reset_ends_the_old_session(app, live_server, mailbox, page, browser):
    with app.app_context():
        client_id, _ = make_client()
        make_user("rita@example.com", password=PASSWORD)
    # Another browser signed in with the old password: its session must end.
    old = browser.new_context()
    old_page = old.new_page()
    old_page.goto(_authorize_url(live_server, client_id)[0])
    old_page.get_by_label("Email").fill("rita@example.com")
    old_page.get_by_label("Password").fill(PASSWORD)
    old_page.get_by_role("button", name="Sign in").click()
    with _callback(old_page) as callback:
        old_page.get_by_role("button", name="Allow").click()
    assert "code" in query(callback.value.url)

    page.goto(_authorize_url(live_server, client_id)[0])
    page.get_by_role("link", name="Forgot password?").click()
    page.get_by_role("heading", name="Forgot your password?").wait_for()
    page.shot("forgot-form")
    page.get_by_label("Email").fill("rita@example.com")
    page.get_by_role("button", name="Send the link").click()
    page.get_by_role("heading", name="Check your email").wait_for()
    page.shot("forgot-sent")

    page.goto(_link(mailbox.wait_for("rita@example.com", "Reset your password"), "/reset-password"))
    page.get_by_label("New password").fill("password")
    page.get_by_role("button", name="Set the new password").click()
    page.get_by_text("most commonly used").wait_for()
    page.shot("reset-weak-password")
    page.get_by_label("New password").fill("a new and longer browser passphrase")
    page.get_by_role("button", name="Set the new password").click()
    page.get_by_role("heading", name="Password changed").wait_for()
    page.shot("reset-done")
    assert "password was changed" in str(mailbox.wait_for("rita@example.com", "password was changed")["Subject"])

    with _callback(old_page) as callback:
        try:
            old_page.goto(_authorize_url(live_server, client_id, prompt="none")[0])
        except PlaywrightError:  # the navigation ends at the unreachable redirect_uri
            pass
    assert query(callback.value.url)["error"] == "login_required"
    old.close()
