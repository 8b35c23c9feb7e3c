"""Per-IP rate limits: 429 with Retry-After (RFC 6585 §4) on the token endpoint (JSON) and
the sign-in, sign-up and reset forms (HTML); counters exact under concurrency against the
real gunicorn server (2 workers), and the lockout counter too."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
import requests
from sqlalchemy import select

from idp.storage.models import db
from idp.storage.security_models import AuthEvent
from tests.factories import form_fields, make_client, make_user
from tests.security.helpers import account_login
from tests.security.servers import start_server, tuned_app

pytestmark = pytest.mark.timeout(120)
THREADS = 24


@pytest.fixture()
def limited(app, settings):
    tuned = tuned_app(settings, token_rate_limit=3, login_rate_limit=3, signup_rate_limit=2, reset_rate_limit=2,
                      rate_limit_window_ttl=30)
    with tuned.app_context():
        yield tuned
        db.session.remove()


def test_token_endpoint_answers_429_with_retry_after_past_the_limit(limited):
    cid, secret = make_client()
    client = limited.test_client()
    data = {"grant_type": "client_credentials", "scope": "api:read"}
    for _ in range(3):
        assert client.post("/token", data=data, auth=(cid, secret)).status_code == 200
    refused = client.post("/token", data=data, auth=(cid, secret))
    assert refused.status_code == 429
    assert refused.get_json()["error"] == "invalid_request"
    assert 1 <= int(refused.headers["Retry-After"]) <= 30
    assert refused.headers["Cache-Control"] == "no-store"
    # Another address has its own budget.
    other = client.post("/token", data=data, auth=(cid, secret), environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert other.status_code == 200


def test_passkey_options_past_the_sign_in_limit_answer_json_429(limited):
    """/login/passkey/options shares the sign-in budget; static/passkey.js reads JSON there."""
    client = limited.test_client()
    for _ in range(3):
        assert client.post("/login/passkey/options", json={"account": 1}).status_code == 400
    refused = client.post("/login/passkey/options", json={"account": 1})
    assert refused.status_code == 429 and refused.mimetype == "application/json"
    assert refused.get_json()["error"] == "invalid_request"
    assert 1 <= int(refused.headers["Retry-After"]) <= 30
    assert refused.headers["Cache-Control"] == "no-store"
    # The form POST that finishes the ceremony keeps the error page.
    page = client.post("/login/passkey", data={"account": "1", "credential": "{}"})
    assert page.status_code == 429 and page.mimetype == "text/html"


def test_login_form_is_limited_per_ip_and_showing_it_is_free(limited):
    make_user()
    client = limited.test_client()
    for _ in range(5):
        assert client.get("/account/login").status_code == 200  # GETs are not attempts
    for _ in range(3):
        assert account_login(client, email="x@example.com", password="wrong").status_code == 401
    refused = account_login(client)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert "Too many requests" in refused.get_data(as_text=True)
    assert refused.mimetype == "text/html"


@pytest.mark.parametrize("endpoint", ["accounts.signup", "accounts.forgot_password"])
def test_signup_and_reset_forms_are_limited_per_ip(limited, endpoint):
    if endpoint not in limited.view_functions:
        pytest.skip(f"{endpoint} is not registered")
    from flask import url_for

    with limited.test_request_context():
        path = url_for(endpoint)
    client = limited.test_client()
    fields = form_fields(client.get(path).get_data(as_text=True))
    statuses = [client.post(path, data={**fields, "email": f"n{i}@example.com", "name": "N",
                                        "password": "a fine long passphrase"}).status_code for i in range(3)]
    assert statuses[:2] != [429, 429] and statuses[2] == 429


# --- against gunicorn ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tight_server(app, settings, base_dir):
    server = start_server(settings, base_dir, IDP_TOKEN_RATE_LIMIT="10", IDP_LOGIN_RATE_LIMIT="200",
                          IDP_LOCKOUT_THRESHOLD="20", IDP_RATE_LIMIT_WINDOW_TTL="60")
    yield server
    server.stop()


def _race(fn, threads: int = THREADS) -> list:
    barrier = threading.Barrier(threads)
    results: list = [None] * threads

    def run(i):
        with requests.Session() as session:
            prepared = fn(session, before=True)
            barrier.wait(timeout=30)
            try:
                results[i] = fn(session, before=False, prepared=prepared)
            except Exception as exc:  # noqa: BLE001 - reported in the assertion
                results[i] = exc

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    return results


def test_concurrent_token_requests_are_limited_exactly(ctx, tight_server):
    cid, secret = make_client()
    url = tight_server.url

    def call(session, before, prepared=None):
        if before:
            return None
        response = session.post(url + "/token", data={"grant_type": "client_credentials", "scope": "api:read"},
                                auth=(cid, secret), timeout=30)
        return response.status_code, response.headers.get("Retry-After")

    results = _race(call)
    counts = Counter(r[0] for r in results)
    assert counts == {200: 10, 429: THREADS - 10}, results
    assert all(r[1] and int(r[1]) >= 1 for r in results if r[0] == 429)


def test_concurrent_failures_are_counted_exactly_for_the_lockout(ctx, tight_server):
    """16 wrong passwords at once with a threshold of 20: none is lost or double-counted, so
    exactly 3 more failures leave the account open and the 4th (the 20th) locks it."""
    make_user()
    url = tight_server.url

    def attempt(session, before, prepared=None):
        if before:
            page = session.get(url + "/account/login", timeout=30)
            return form_fields(page.text)
        response = session.post(url + "/account/login", timeout=30, allow_redirects=False,
                                data={**prepared, "email": "alice@example.com", "password": "wrong guess"})
        return response.status_code

    assert Counter(_race(attempt, threads=16)) == {401: 16}
    with requests.Session() as session:
        for expected in (401, 401, 401, 429):
            fields = form_fields(session.get(url + "/account/login", timeout=30).text)
            response = session.post(url + "/account/login", allow_redirects=False, timeout=30,
                                    data={**fields, "email": "alice@example.com", "password": "wrong guess"})
            assert response.status_code == expected
    db.session.remove()
    events = list(db.session.scalars(select(AuthEvent).where(AuthEvent.email == "alice@example.com")))
    assert Counter((e.event, e.reason) for e in events) == {("login", "bad_password"): 20,
                                                            ("lockout", "locked 900s"): 1}
