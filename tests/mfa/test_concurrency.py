"""The MFA rules under real concurrency: gunicorn with 2 workers (`live_server`), threads
released together by a barrier.

* one TOTP code submitted by 8 pending logins at once: exactly one is accepted (RFC 6238 §5.2);
* one recovery code submitted by 8 pending logins at once: exactly one is accepted;
* 16 wrong codes at once against one pending login: exactly 5 are checked (4 answered "N
  attempts left", then the lock), never more, and the login must start again."""

from __future__ import annotations

import threading
from urllib.parse import urljoin

import pytest
import requests
from sqlalchemy import func, select

from idp.mfa import recovery
from idp.storage.models import db
from idp.storage.security_models import AuthEvent
from tests.factories import PASSWORD, auth_params, form_fields, make_client, make_user, pkce_pair

from .helpers import code_at, enrol_totp, kek

pytestmark = pytest.mark.timeout(120)


@pytest.fixture()
def live(app, live_server):
    with app.app_context():
        yield live_server
        db.session.remove()


def pending_browser(url: str, client_id: str) -> tuple[requests.Session, dict]:
    """A browser past the password, at the MFA step; returns it and the TOTP form's fields."""
    browser = requests.Session()
    _, challenge = pkce_pair()
    response = browser.get(url + "/authorize", params=auth_params(client_id, challenge), allow_redirects=False,
                           timeout=10)
    login = urljoin(url + "/", response.headers["Location"])
    fields = form_fields(browser.get(login, timeout=10).text)
    response = browser.post(url + "/login", data={**fields, "email": "alice@example.com", "password": PASSWORD},
                            allow_redirects=False, timeout=10)
    assert response.headers["Location"] == "/login/mfa", response.text[:300]
    return browser


def form_of(browser: requests.Session, url: str, path: str) -> dict:
    page = browser.get(url + path, timeout=10)
    assert page.status_code == 200, page.text[:300]
    return form_fields(page.text)


def race(calls) -> list[int]:
    """Run each callable in its own thread, released together; their status codes."""
    barrier = threading.Barrier(len(calls))
    statuses: list = [None] * len(calls)

    def run(i):
        barrier.wait(timeout=30)
        statuses[i] = calls[i]().status_code

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return statuses


def _submit(browser, url, path, fields, code):
    return lambda: browser.post(url + path, data={**fields, "code": code}, allow_redirects=False, timeout=30)


def test_one_totp_code_is_accepted_once_among_concurrent_logins(app, live):
    user = make_user()
    secret = enrol_totp(app, user)
    client_id, _ = make_client()
    browsers = [pending_browser(live.url, client_id) for _ in range(8)]
    forms = [form_of(b, live.url, "/login/mfa/totp") for b in browsers]
    code = code_at(secret)
    statuses = race([_submit(b, live.url, "/login/mfa/totp", f, code) for b, f in zip(browsers, forms, strict=True)])
    assert sorted(statuses) == [302] + [401] * 7, statuses


def test_one_recovery_code_is_accepted_once_among_concurrent_logins(app, live):
    user = make_user()
    enrol_totp(app, user)
    codes = recovery.generate(kek(app), user.id)
    client_id, _ = make_client()
    browsers = [pending_browser(live.url, client_id) for _ in range(8)]
    forms = [form_of(b, live.url, "/login/mfa/recovery") for b in browsers]
    statuses = race([_submit(b, live.url, "/login/mfa/recovery", f, codes[3]) for b, f in zip(browsers, forms, strict=True)])
    assert sorted(statuses) == [302] + [401] * 7, statuses
    assert recovery.remaining(user.id) == 9


def test_concurrent_wrong_codes_are_checked_exactly_five_times(app, live):
    user = make_user()
    secret = enrol_totp(app, user)
    client_id, _ = make_client()
    browser = pending_browser(live.url, client_id)
    fields = form_of(browser, live.url, "/login/mfa/totp")
    wrong = "000000" if code_at(secret) != "000000" and code_at(secret, -1) != "000000" else "111111"
    cookies = browser.cookies.get_dict()

    def attempt():
        with requests.Session() as other:
            other.cookies.update(cookies)
            return other.post(live.url + "/login/mfa/totp", data={**fields, "code": wrong}, allow_redirects=False,
                              timeout=30)

    statuses = race([attempt] * 16)
    assert statuses.count(401) == 4, statuses  # "4 ... 1 attempts left"
    assert statuses.count(302) == 0 and set(statuses) <= {401, 429, 400}, statuses
    db.session.remove()
    checked = db.session.scalar(select(func.count()).select_from(AuthEvent)
                                .where(AuthEvent.event == "mfa", AuthEvent.result == "failure"))
    assert checked == 5
    # Locked: even the right code no longer finishes this login.
    assert browser.post(live.url + "/login/mfa/totp", data={**fields, "code": code_at(secret)},
                        allow_redirects=False, timeout=10).status_code in (400, 429)
