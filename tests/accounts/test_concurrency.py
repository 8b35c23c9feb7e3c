"""Single-use links under concurrent requests to gunicorn (2 workers): of N simultaneous
uses of one link, exactly one succeeds (an atomic UPDATE ... WHERE used_at IS NULL)."""

from __future__ import annotations

import requests
from sqlalchemy import select

from idp.services.users import authenticate
from idp.storage.models import User, db
from tests.factories import form_fields, make_user

from .conftest import link_in, together

N = 8


def _open(link: str) -> tuple[requests.Session, dict]:
    """A new browser that opens the link (which consumes nothing): it and the form's fields."""
    http = requests.Session()
    return http, form_fields(http.get(link, timeout=10).text)


def _post_form(http, url, **data):
    page = http.get(url, timeout=10)
    return http.post(url.split("?")[0], data={**form_fields(page.text), **data}, timeout=10)


def test_concurrent_resets_with_one_link_change_the_password_once(app, live_server, mailbox):
    with app.app_context():
        make_user("alice@example.com")
    assert _post_form(requests.Session(), live_server.url + "/forgot-password", email="alice@example.com").ok
    link = live_server.url + link_in(mailbox.wait_for("alice@example.com", "Reset your password"), "/reset-password")
    prepared = [_open(link) for _ in range(N)]
    results = together(lambda i: prepared[i][0].post(live_server.url + "/reset-password", timeout=30,
                                                     data={**prepared[i][1], "password": f"new passphrase {i}"}), N)
    winners = [i for i, r in enumerate(results) if r.status_code == 200]
    assert len(winners) == 1, [r.status_code for r in results]
    assert all(r.status_code == 400 for r in results if r.status_code != 200)
    with app.app_context():
        authenticate("alice@example.com", f"new passphrase {winners[0]}")


def test_concurrent_confirmations_of_one_verification_link_verify_once(app, live_server, mailbox):
    http = requests.Session()
    assert _post_form(http, live_server.url + "/signup", name="Bob", email="bob@example.com",
                      password="a sturdy passphrase").ok
    link = live_server.url + link_in(mailbox.wait_for("bob@example.com", "Confirm"), "/verify-email")
    prepared = [_open(link) for _ in range(N)]  # N browsers open the link, then all confirm at once
    results = together(lambda i: prepared[i][0].post(live_server.url + "/verify-email", data=prepared[i][1],
                                                     timeout=30), N)
    assert sorted(r.status_code for r in results) == [200] + [400] * (N - 1)
    with app.app_context():
        assert db.session.scalar(select(User.email_verified).where(User.email == "bob@example.com"))
