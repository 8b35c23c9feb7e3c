"""The per-user session index and the /account page: list, end one, log out everywhere
(sessions and refresh tokens), profile; CSRF on every form; never another user's session."""

from __future__ import annotations

import re

from idp.services import sessions
from idp.storage.models import User, db
from tests.factories import exchange, form_fields, get_code, make_client, make_user
from tests.security.helpers import account_login

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


def _csrf(test_client) -> str:
    page = test_client.get("/account")
    assert page.status_code == 200
    return form_fields(page.get_data(as_text=True))["csrf_token"]


def _sids(html: str) -> list[str]:
    return re.findall(r'data-sid="([^"]+)"', html)


def test_account_needs_a_session(ctx, client):
    response = client.get("/account")
    assert response.status_code == 302 and response.headers["Location"].endswith("/account/login")


def test_sessions_are_listed_with_device_ip_and_the_current_one_marked(ctx, app):
    make_user()
    first, second = app.test_client(), app.test_client()
    account_login(first, HTTP_USER_AGENT=FIREFOX, REMOTE_ADDR="192.0.2.4")
    account_login(second)
    html = first.get("/account").get_data(as_text=True)
    assert len(_sids(html)) == 2
    assert "Firefox on Linux" in html and "IP 192.0.2.4" in html
    assert html.count('<span class="badge">this device</span>') == 1
    current = re.search(r'class="session current" data-sid="([^"]+)"', html).group(1)
    user = db.session.query(User).one()
    listed = sessions.list_sessions(ctx.extensions["idp"].store, user.id)
    assert [s["sid"] for s in listed][-1] == current  # newest first: the second login is first


def test_ending_another_session_logs_that_browser_out(ctx, app):
    make_user()
    first, second = app.test_client(), app.test_client()
    account_login(first)
    account_login(second)
    html = first.get("/account").get_data(as_text=True)
    other = re.search(r'class="session" data-sid="([^"]+)"', html).group(1)
    response = first.post("/account/sessions/end", data={"csrf_token": _csrf(first), "sid": other})
    assert response.status_code == 302 and response.headers["Location"].endswith("/account?done=ended")
    assert second.get("/account").status_code == 302  # logged out
    assert first.get("/account").status_code == 200
    assert len(_sids(first.get("/account").get_data(as_text=True))) == 1


def test_log_out_everywhere_ends_all_sessions_and_revokes_refresh_tokens(ctx, app):
    make_user()
    cid, secret = make_client()
    first, second = app.test_client(), app.test_client()
    code, verifier, _ = get_code(first, cid)
    refresh = exchange(first, cid, secret, code, verifier).get_json()["refresh_token"]
    account_login(second)
    response = first.post("/account/logout-everywhere", data={"csrf_token": _csrf(first)})
    assert response.status_code == 302 and "/account/login" in response.headers["Location"]
    assert first.get("/account").status_code == 302 and second.get("/account").status_code == 302
    refreshed = first.post("/token", data={"grant_type": "refresh_token", "refresh_token": refresh},
                           auth=(cid, secret))
    assert refreshed.status_code == 400 and refreshed.get_json()["error"] == "invalid_grant"
    user = db.session.query(User).one()
    assert sessions.list_sessions(ctx.extensions["idp"].store, user.id) == []


def test_forms_need_the_csrf_token_of_this_session(ctx, app):
    make_user()
    first, second = app.test_client(), app.test_client()
    account_login(first)
    account_login(second)
    for path in ("/account/logout-everywhere", "/account/profile", "/account/sessions/end"):
        assert first.post(path, data={"csrf_token": _csrf(second)}).status_code == 400
        assert first.post(path, data={}).status_code == 400
    assert second.get("/account").status_code == 200  # nothing was ended
    fields = form_fields(first.get("/account/login").get_data(as_text=True))
    assert first.post("/account/login", data={**fields, "csrf_token": "x" * 64, "email": "a@b.c",
                                              "password": "p"}).status_code == 400


def test_a_session_of_another_user_cannot_be_ended(ctx, app):
    make_user()
    make_user("bob@example.com")
    alice, bob = app.test_client(), app.test_client()
    account_login(alice)
    account_login(bob, email="bob@example.com")
    bob_sid = _sids(bob.get("/account").get_data(as_text=True))[0]
    alice.post("/account/sessions/end", data={"csrf_token": _csrf(alice), "sid": bob_sid})
    assert bob.get("/account").status_code == 200


def test_profile_name_is_saved(ctx, client):
    make_user()
    account_login(client)
    response = client.post("/account/profile", data={"csrf_token": _csrf(client), "name": "  Alice   B. "})
    assert response.status_code == 302
    db.session.expire_all()
    assert db.session.query(User).one().name == "Alice B."
    assert "Your profile was saved." in client.get("/account?done=profile").get_data(as_text=True)


def test_malformed_input_is_a_400_never_a_500(ctx, client):
    make_user()
    account_login(client)
    assert client.post("/account/profile", data="{}", content_type="application/json").status_code == 400
    assert client.post("/account/login", data={"email": "a\x00b"}).status_code == 400
    assert client.get("/account?done=" + "x" * 9000).status_code == 400


def test_pages_have_no_inline_script_and_strict_headers(ctx, client):
    make_user()
    page = client.get("/account/login")
    assert_no_inline_script(page)
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["Cache-Control"] == "no-store"
    account_login(client)
    page = client.get("/account")
    assert_no_inline_script(page)
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]


def assert_no_inline_script(page):
    """Scripts come only from this origin's static files (the passkey ceremony): CSP
    script-src 'self' alone, and every <script> tag has a /static/ src and no body."""
    csp = dict(d.strip().split(" ", 1) for d in page.headers["Content-Security-Policy"].split(";"))
    assert csp["script-src"] == "'self'" and csp["connect-src"] == "'self'"
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page.get_data(as_text=True), re.S)
    assert all(re.search(r'src="/static/[\w.-]+\.js"', attrs) and not body.strip() for attrs, body in scripts)
