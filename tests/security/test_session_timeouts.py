"""SSO session timeouts (idp/services/sessions.py): the idle one (IDP_SESSION_IDLE_TTL) is the
store's expiry of the session key, refreshed by use at most every TOUCH_EVERY seconds; the
absolute one (IDP_SESSION_TTL) is the session's `expires_at`, which use never moves, and also
caps the store expiry. On an app built with small TTLs, on both store backends."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from idp.services import sessions
from tests.factories import make_user
from tests.security.helpers import account_login


def _signed_in(test_app):
    with test_app.app_context():
        make_user()
    browser = test_app.test_client()
    assert account_login(browser).status_code == 302
    assert browser.get("/account").status_code == 200
    cookie = next(c.value for c in browser._cookies.values() if c.key.endswith("idp_session"))
    return browser, sessions._key(cookie)


def test_session_unused_for_the_idle_ttl_is_gone(build_app):
    test_app = build_app(session_idle_ttl=2, session_ttl=3600)
    store = test_app.extensions["idp"].store
    started = time.monotonic()
    browser, key = _signed_in(test_app)
    assert 0 < store.ttl(key) <= 2  # the store's own expiry is the idle TTL, not the absolute one
    time.sleep(max(0.0, 1.2 - (time.monotonic() - started)))
    # Used here, but within TOUCH_EVERY of the sign-in: the idle expiry is not pushed back (the
    # README's "between IDP_SESSION_IDLE_TTL - 60 and IDP_SESSION_IDLE_TTL seconds").
    assert browser.get("/account").status_code == 200
    time.sleep(max(0.0, 2.3 - (time.monotonic() - started)))
    assert store.get_json(key) is None  # expired in the store itself
    response = browser.get("/account")
    assert response.status_code == 302 and response.headers["Location"].endswith("/account/login")


def test_session_used_continually_ends_at_the_absolute_ttl(build_app, monkeypatch):
    """The clock of sessions.py jumps past TOUCH_EVERY before each request: every request
    refreshes the idle expiry, yet the session ends at IDP_SESSION_TTL after the sign-in."""
    test_app = build_app(session_idle_ttl=100, session_ttl=250)
    store = test_app.extensions["idp"].store
    browser, key = _signed_in(test_app)
    signed_in_at = store.get_json(key)["created_at"]
    offset = 0.0
    real = time.time
    monkeypatch.setattr(sessions, "time", SimpleNamespace(time=lambda: real() + offset,
                                                          monotonic=time.monotonic, sleep=time.sleep))
    for step in (1, 2, 3, 4):  # 61, 122, 183, 244 s after the sign-in: each one a touch
        offset = step * (sessions.TOUCH_EVERY + 1)
        assert browser.get("/account").status_code == 200, offset
        assert store.get_json(key)["last_seen"] == pytest.approx(real() + offset, abs=2)
    # The last touch (at 244 s) set the store expiry to what was left of the 250 s, not 100 s.
    assert 0 < store.ttl(key) <= 250 - 4 * (sessions.TOUCH_EVERY + 1)
    offset = 250 + 1
    response = browser.get("/account")
    assert response.status_code == 302 and response.headers["Location"].endswith("/account/login")
    assert store.get_json(key) is None  # the expires_at check deleted it
    assert signed_in_at + 250 <= real() + offset
