"""In Debian's Chromium: wrong passwords until the account locks (then even the right one is
refused, until the lock ends), and the account page ending another browser's session."""

from __future__ import annotations

import time

import pytest

from idp.storage.models import db
from tests.browser.conftest import ARTIFACTS
from tests.factories import PASSWORD, make_user
from tests.security.servers import start_server

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def short_lock_server(app, settings, base_dir):
    """gunicorn with a 3-failure threshold and a 3 s lock."""
    server = start_server(settings, base_dir, IDP_LOCKOUT_THRESHOLD="3", IDP_LOCKOUT_TTL="3",
                          IDP_LOCKOUT_MAX_TTL="12")
    yield server
    server.stop()


@pytest.fixture()
def alice(app):
    with app.app_context():
        make_user()
        db.session.remove()


def sign_in(page, url: str, password: str = PASSWORD) -> None:
    page.goto(url + "/account/login")
    page.get_by_label("Email").fill("alice@example.com")
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_wrong_password_until_lockout(page, short_lock_server, alice):
    url = short_lock_server.url
    for _ in range(2):
        sign_in(page, url, "not my password")
        assert page.get_by_role("alert").inner_text() == "Invalid email or password."
    page.shot("wrong-password")
    sign_in(page, url, "not my password")
    assert "Too many failed sign-in attempts" in page.get_by_role("alert").inner_text()
    page.shot("locked")
    sign_in(page, url)  # the right password, still locked
    assert "Too many failed sign-in attempts" in page.get_by_role("alert").inner_text()
    page.shot("locked-right-password")
    time.sleep(3.2)  # the lock ends by itself, and the failure count starts again
    sign_in(page, url)
    page.get_by_role("heading", name="Your account").wait_for()
    page.shot("signed-in-after-lock")


def test_account_page_ends_another_session(browser, page, live_server, alice):
    url = live_server.url
    other = browser.new_context()
    second = other.new_page()
    second.set_default_timeout(15000)
    try:
        sign_in(second, url)
        second.get_by_role("heading", name="Your account").wait_for()
        sign_in(page, url)
        page.get_by_role("heading", name="Your account").wait_for()
        sessions = page.locator("li.session")
        assert sessions.count() == 2
        assert page.locator("li.session.current").count() == 1
        page.shot("two-sessions")
        page.locator("li.session:not(.current)").get_by_role("button", name="End this session").click()
        assert page.get_by_role("status").inner_text() == "The session was ended."
        assert page.locator("li.session").count() == 1
        page.shot("one-ended")
        second.reload()
        second.get_by_role("heading", name="Sign in to your account").wait_for()  # logged out
        second.screenshot(path=str(ARTIFACTS / "test_account_page_ends_another_session-second-browser-logged-out.png"))
    finally:
        other.close()
