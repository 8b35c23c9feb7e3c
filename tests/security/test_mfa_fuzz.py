"""Bad input on every MFA and passkey route, in the three states a browser can be in
(anonymous, at the MFA step, signed in): never a 5xx, never a stack trace, a 4xx (or the
ordinary page) instead. In process under the issuer http://localhost:5000 (passkeys on), and
a sample against gunicorn whose log must stay free of tracebacks."""

from __future__ import annotations

import dataclasses
import re
from urllib.parse import urljoin

import pytest
import requests
from sqlalchemy import select

from idp import create_app
from idp.mfa import flow
from idp.storage.mfa_models import TotpFactor
from idp.storage.models import db
from tests.factories import PASSWORD, form_fields, make_client, make_user
from tests.mfa.helpers import auth_params, code_at, enrol_totp, password_step, submit_code
from tests.mfa.passkey_helpers import ISSUER
from tests.security.helpers import account_login

ROUTES_GET = ["/login/mfa", "/login/mfa/totp", "/login/mfa/recovery", "/login/mfa/email", "/login/mfa/step-up",
              "/account/mfa", "/account/mfa/totp", "/login/passkey/second-factor", "/account/passkeys/recovery-codes"]
ROUTES_FORM = ["/login/mfa/totp", "/login/mfa/recovery", "/login/mfa/email", "/account/mfa/totp",
               "/account/mfa/totp/{factor}/rename", "/account/mfa/totp/{factor}/remove", "/account/mfa/recovery-codes",
               "/account/mfa/trusted-browsers/forget", "/account/passkeys/{factor}/rename",
               "/account/passkeys/{factor}/remove", "/login/passkey", "/login/passkey/second-factor"]
ROUTES_JSON = ["/account/passkeys/register/options", "/account/passkeys/register/verify", "/login/passkey/options",
               "/login/passkey/second-factor/options"]

@pytest.fixture(scope="module")
def fz_app(app, settings):
    """The test app (same database and store) with passkeys on (a host name as issuer) and no
    per-IP sign-in limit, so that every request reaches the code under test, not a 429."""
    return create_app(dataclasses.replace(settings, issuer=ISSUER, login_rate_limit=0))


@pytest.fixture()
def fz_client(fz_app):
    with fz_app.app_context():
        yield fz_app.test_client()
        db.session.remove()


QUERIES = [b"x=1&x=2", b"interaction=%00", b"interaction=%ff%fe", b"interaction=" + b"a" * 9000,
           b"interaction=..%2F..%2Fetc", b"code=%C0%AF", b"interaction[]=1&interaction[]=2"]


def _form_bodies(csrf: str) -> list[tuple[bytes, str]]:
    form = "application/x-www-form-urlencoded"
    token = csrf.encode()
    return [
        (b"", form),
        (b"csrf_token=" + token, form),
        (b"csrf_token=" + token + b"&code=%00123456", form),
        (b"csrf_token=" + token + b"&code=1&code=2", form),
        (b"csrf_token=" + token + b"&csrf_token=" + token + b"&code=123456", form),
        (b"csrf_token=" + token + b"&code=%ff%fe%fd", form),
        (b"csrf_token=" + token + b"&code=" + "١٢٣٤٥٦".encode().hex().encode(), form),
        (b"csrf_token=" + token + b"&code=" + "１２３４５６".encode(), form),
        (b"csrf_token=" + token + b"&code=" + b"9" * 9000, form),
        (b"csrf_token=" + token + b"&label=" + b"%3Cscript%3E" * 100 + b"&name=" + b"x" * 7000, form),
        (b"csrf_token=" + token + b"&credential=%7B%7D&interaction=x&account=1", form),
        (b"csrf_token=" + token + b"&credential=" + b"%5B" * 900 + b"&account=1", form),  # within the recursion limit
        (b"csrf_token=" + token + b"&credential=%7B%22id%22%3A5%2C%22response%22%3A%5B%5D%7D&account=1", form),
        (b"csrf_token=" + token + b"&password=" + b"p" * 8000, form),
        (b"csrf_token=" + token + b"&action=send&action=send", form),
        (b'{"code": "123456"}', "application/json"),
        (b"code=123456", "text/plain"),
        (b"\x00\x01\x02", "application/octet-stream"),
        (b"a" * (1024 * 1024 + 10), form),
    ]


def _json_bodies() -> list[tuple[bytes, str]]:
    return [
        (b"", "application/json"),
        (b"{", "application/json"),
        (b"[]", "application/json"),
        (b'"text"', "application/json"),
        (b"null", "application/json"),
        (b"1e999999", "application/json"),
        (b'{"interaction": 5, "account": [1], "credential": "x", "name": {"a": 1}}', "application/json"),
        (b'{"interaction": "' + b"a" * 5000 + b'"}', "application/json"),
        (b'{"credential": {"id": 7, "response": {"transports": "usb"}}, "name": 5}', "application/json"),
        (b'{"credential": {"id": "' + b"A" * 2000 + b'", "rawId": "%%%", "response": null}}', "application/json"),
        (b'{"a": "\\ud800"}', "application/json"),
        (b"\xff\xfe{}", "application/json"),
        (b"[" * 500 + b"]" * 500, "application/json"),  # within the recursion limit
        (b'{"x": "' + b"y" * 70_000 + b'"}', "application/json"),
        (b"{}", "text/plain"),
        (b"{}", "application/x-www-form-urlencoded"),
    ]


def _check(failures: list, label: str, response) -> None:
    body = response.get_data(as_text=True) if hasattr(response, "get_data") else response.text
    if response.status_code >= 500 or "Traceback" in body or 'File "/' in body:
        failures.append((label, response.status_code, body[:120]))


def _hammer(test_client, csrf: str, factor: str, before=lambda: None) -> list:
    """Every route with every bad input; `before()` runs before each request (to keep a
    pending login unlocked, so that each request reaches the code behind the counter)."""
    failures: list = []
    for path in ROUTES_GET:
        for q in QUERIES:
            before()
            _check(failures, f"GET {path}?{q[:30]!r}", test_client.get(path, query_string=q.decode("ascii")))
    for path in ROUTES_FORM:
        path = path.format(factor=factor)
        for body, content_type in _form_bodies(csrf):
            before()
            response = test_client.post(path, data=body, content_type=content_type)
            _check(failures, f"POST {path} {content_type} {body[:40]!r}", response)
    for path in ROUTES_JSON:
        for body, content_type in _json_bodies():
            for headers in ({}, {"X-CSRF-Token": csrf}, {"X-CSRF-Token": "x" * 5000}):
                before()
                response = test_client.post(path, data=body, content_type=content_type, headers=headers)
                _check(failures, f"POST {path} {content_type} {body[:40]!r}", response)
                if response.status_code >= 400 and response.mimetype == "application/json":
                    if "error" not in (response.get_json(silent=True) or {}):
                        failures.append((f"{path} {body[:30]!r}", response.status_code, "JSON error without error"))
    return failures


def _csrf_of(test_client, path: str) -> str:
    page = test_client.get(path).get_data(as_text=True)
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    return found.group(1) if found else "x"


@pytest.mark.timeout(300)
def test_anonymous_browser_never_gets_a_5xx(fz_client):
    assert _hammer(fz_client, "x" * 64, "0" * 32) == []


@pytest.mark.timeout(300)
def test_browser_at_the_mfa_step_never_gets_a_5xx(fz_app, fz_client):
    user = make_user()
    secret = enrol_totp(fz_app, user)
    client_id, _ = make_client()
    password_step(fz_client, auth_params(client_id)[0])
    pending_id = fz_client.get_cookie("idp_mfa").value
    csrf = _csrf_of(fz_client, "/login/mfa/totp")
    factor = db.session.scalar(select(TotpFactor.id))
    store = fz_app.extensions["idp"].store

    def unlock():  # the pending login's 5 attempts and the user's budget, given back
        store.delete("mfa-attempts:" + flow._key(pending_id))
        store.delete("mfa-user-attempts:" + user.id)

    failures = _hammer(fz_client, csrf, factor, before=unlock)
    assert failures == []
    # The pending login was never locked nor taken: every request above reached the checks.
    assert fz_client.get("/login/mfa/totp").status_code == 200
    assert secret


@pytest.mark.timeout(300)
def test_signed_in_browser_never_gets_a_5xx(fz_app, fz_client):
    user = make_user()
    secret = enrol_totp(fz_app, user)
    assert account_login(fz_client).headers["Location"] == "/login/mfa"
    assert submit_code(fz_client, "/login/mfa/totp", code_at(secret)).status_code == 302
    csrf = _csrf_of(fz_client, "/account/mfa")
    factor = db.session.scalar(select(TotpFactor.id))
    failures = _hammer(fz_client, csrf, factor)
    assert failures == []
    assert fz_client.get("/account/mfa").status_code == 200  # still signed in: the forms were reached


@pytest.mark.timeout(180)
def test_gunicorn_answers_bad_mfa_input_without_a_traceback(app, live_server):
    with app.app_context():
        user = make_user()
        secret = enrol_totp(app, user)
        client_id, _ = make_client()
        db.session.remove()
    log_start = live_server.log.stat().st_size
    url = live_server.url
    browser = requests.Session()
    params, _ = auth_params(client_id)
    response = browser.get(url + "/authorize", params=params, allow_redirects=False, timeout=10)
    fields = form_fields(browser.get(urljoin(url + "/", response.headers["Location"]), timeout=10).text)
    browser.post(url + "/login", data={**fields, "email": "alice@example.com", "password": PASSWORD},
                 allow_redirects=False, timeout=10)
    csrf = form_fields(browser.get(url + "/login/mfa/totp", timeout=10).text)["csrf_token"]
    statuses = []
    for body, content_type in _form_bodies(csrf)[:-1]:
        for path in ("/login/mfa/totp", "/login/mfa/recovery", "/login/mfa/email"):
            r = browser.post(url + path, data=body, headers={"Content-Type": content_type}, allow_redirects=False,
                             timeout=30)
            statuses.append((path, r.status_code))
            assert "Traceback" not in r.text
    for path in ROUTES_JSON:
        r = browser.post(url + path, data=b"{", headers={"Content-Type": "application/json"}, timeout=30)
        statuses.append((path, r.status_code))
    huge = browser.post(url + "/login/mfa/totp", data=b"a" * (3 * 1024 * 1024),
                        headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=30)
    statuses.append(("huge", huge.status_code))
    assert all(s < 500 for _, s in statuses), [x for x in statuses if x[1] >= 500]
    log = live_server.log.read_bytes()[log_start:].decode(errors="replace")
    assert "Traceback" not in log and "unhandled error" not in log, log[-2000:]
    assert secret
