"""Single use under real concurrency: gunicorn with 2 workers (the `live_server` fixture),
16 client threads released together by a barrier.

* one authorization code, redeemed 16 times at once: exactly one 200, the rest invalid_grant,
  and the winner's tokens end up revoked (RFC 6749 §4.1.2);
* one refresh token, used 16 times at once (no grace window): exactly one success, and the
  family ends up revoked;
* client_credentials from 16 threads: all succeed (no 500s, no lock errors).

Clients and users are created in-process with the `app` fixture: same database and store."""

from __future__ import annotations

import threading
from collections import Counter
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests

from idp.storage.models import db
from tests.factories import (
    PASSWORD,
    REDIRECT_URI,
    auth_params,
    form_fields,
    make_client,
    make_user,
    pkce_pair,
)

THREADS = 16
pytestmark = pytest.mark.timeout(120)


@pytest.fixture()
def live(app, live_server):
    with app.app_context():
        yield live_server
        db.session.remove()


def live_code(url: str, client_id: str, scope: str = "openid email offline_access") -> tuple[str, str]:
    """Drive the hosted pages of the live server like a browser; returns (code, verifier)."""
    verifier, challenge = pkce_pair()
    params = auth_params(client_id, challenge, scope=scope)
    browser = requests.Session()
    response = browser.get(url + "/authorize", params=params, allow_redirects=False, timeout=10)
    for _ in range(4):
        assert response.status_code == 302, response.text[:500]
        location = urljoin(url + "/", response.headers["Location"])
        if location.startswith(REDIRECT_URI):
            break
        page = browser.get(location, timeout=10)
        assert page.status_code == 200, page.text[:500]
        fields = form_fields(page.text)
        path = urlsplit(location).path
        if path == "/login":
            data = {**fields, "email": "alice@example.com", "password": PASSWORD}
        elif path == "/consent":
            data = {**fields, "decision": "allow"}
        else:
            raise AssertionError(f"unexpected page {location}")
        response = browser.post(url + path, data=data, allow_redirects=False, timeout=10)
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert query.get("state") == params["state"] and query.get("iss") == url, query
    return query["code"], verifier


def race(fn) -> list[tuple[int, dict]]:
    """Run fn() in THREADS threads released at the same instant; (status, json) of each."""
    barrier = threading.Barrier(THREADS)
    results: list = [None] * THREADS

    def run(i):
        with requests.Session() as session:
            barrier.wait(timeout=30)
            try:
                response = fn(session)
                results[i] = (response.status_code, response.json())
            except Exception as exc:  # reported, not swallowed: the assertion below shows it
                results[i] = (0, {"exception": repr(exc)})

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert all(r is not None for r in results), "a request thread did not finish"
    return results


def active(url: str, auth, token: str) -> bool:
    response = requests.post(url + "/introspect", data={"token": token}, auth=auth, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["active"]


def test_concurrent_code_redemption(live):
    url = live.url
    cid, secret = make_client()
    make_user()
    code, verifier = live_code(url, cid)
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier}

    results = race(lambda s: s.post(url + "/token", data=data, auth=(cid, secret), timeout=60))

    statuses = Counter(status for status, _ in results)
    assert statuses == {200: 1, 400: THREADS - 1}, results
    assert all(body["error"] == "invalid_grant" for status, body in results if status == 400), results
    winner = next(body for status, body in results if status == 200)
    assert {"access_token", "refresh_token", "id_token"} <= set(winner)
    # The replays revoked what the code issued, however the race went.
    assert not active(url, (cid, secret), winner["access_token"])
    assert not active(url, (cid, secret), winner["refresh_token"])
    userinfo = requests.get(url + "/userinfo", headers={"Authorization": "Bearer " + winner["access_token"]},
                            timeout=10)
    assert userinfo.status_code == 401
    refreshed = requests.post(url + "/token", data={"grant_type": "refresh_token",
                                                    "refresh_token": winner["refresh_token"]},
                              auth=(cid, secret), timeout=10)
    assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"


def test_concurrent_refresh_token_use(live):
    url = live.url
    cid, secret = make_client()
    make_user()
    code, verifier = live_code(url, cid)
    first = requests.post(url + "/token", data={"grant_type": "authorization_code", "code": code,
                                                "redirect_uri": REDIRECT_URI, "code_verifier": verifier},
                          auth=(cid, secret), timeout=10)
    assert first.status_code == 200, first.text
    refresh_token = first.json()["refresh_token"]

    results = race(lambda s: s.post(url + "/token", data={"grant_type": "refresh_token",
                                                          "refresh_token": refresh_token},
                                    auth=(cid, secret), timeout=60))

    statuses = Counter(status for status, _ in results)
    assert statuses == {200: 1, 400: THREADS - 1}, results
    assert all(body["error"] == "invalid_grant" for status, body in results if status == 400), results
    winner = next(body for status, body in results if status == 200)
    # Reuse detection (grace window 0 on the live server): the whole family, newest tokens too.
    for token in (winner["refresh_token"], winner["access_token"], first.json()["access_token"]):
        assert not active(url, (cid, secret), token)
    again = requests.post(url + "/token", data={"grant_type": "refresh_token",
                                                "refresh_token": winner["refresh_token"]},
                          auth=(cid, secret), timeout=10)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_concurrent_client_credentials(live):
    url = live.url
    cid, secret = make_client()

    results = race(lambda s: s.post(url + "/token", data={"grant_type": "client_credentials", "scope": "api:read"},
                                    auth=(cid, secret), timeout=60))

    assert [status for status, _ in results] == [200] * THREADS, results
    jtis = set()
    for _, body in results:
        assert body["token_type"] == "Bearer" and body["scope"] == "api:read"
        assert active(url, (cid, secret), body["access_token"])
        jtis.add(body["access_token"])
    assert len(jtis) == THREADS
