"""Per-account lockout (idp/services/protection.py): N failed passwords within the window
lock the account; while locked even the right password is refused; locks double up to a cap
and always end; unknown emails behave exactly like real ones."""

from __future__ import annotations

import re
import statistics
import time

import pytest

from idp.services import protection
from idp.storage.models import db
from idp.storage.security_models import AuthEvent
from tests.factories import PASSWORD, make_user
from tests.security.helpers import account_login
from tests.security.servers import tuned_app

LOCKED = "Too many failed sign-in attempts."


@pytest.fixture()
def short(app, settings):
    """Threshold 3 within 2 s, lock 1 s doubling up to 4 s."""
    tuned = tuned_app(settings, lockout_threshold=3, lockout_window_ttl=2, lockout_ttl=1, lockout_max_ttl=4)
    with tuned.app_context():
        yield tuned
        db.session.remove()


def _text(response) -> str:
    return response.get_data(as_text=True)


def test_threshold_failures_lock_even_the_right_password_until_the_lock_ends(short):
    make_user()
    client = short.test_client()
    for _ in range(2):
        assert account_login(client, password="wrong password").status_code == 401
    third = account_login(client, password="wrong password")
    assert third.status_code == 429 and LOCKED in _text(third)
    assert third.headers["Retry-After"] == "1"
    right = account_login(client)
    assert right.status_code == 429 and LOCKED in _text(right)
    assert 1 <= int(right.headers["Retry-After"]) <= 1
    time.sleep(1.1)
    assert account_login(client).status_code == 302  # the lock ended by itself


def test_success_resets_the_failure_count(short):
    make_user()
    client = short.test_client()
    for _ in range(2):
        account_login(client, password="wrong password")
    assert account_login(client).status_code == 302
    for _ in range(2):
        assert account_login(short.test_client(), password="wrong password").status_code == 401


def test_failures_outside_the_window_do_not_count(short):
    make_user()
    client = short.test_client()
    for _ in range(2):
        account_login(client, password="wrong password")
    time.sleep(2.1)  # the 2 s window ended
    for _ in range(2):
        assert account_login(client, password="wrong password").status_code == 401
    assert account_login(client, password="wrong password").status_code == 429


def test_each_further_lock_doubles_up_to_the_cap(short):
    """1 s, 2 s, 4 s, then capped at 4 s: never permanent."""
    store, settings = short.extensions["idp"].store, short.extensions["idp"].settings
    durations = []
    for _ in range(4):
        locked = [protection.record_failure(store, settings, "bob@example.com") for _ in range(3)]
        assert locked[:2] == [None, None]
        durations.append(locked[2])
    assert durations == [1, 2, 4, 4]
    assert protection.lock_remaining(store, "bob@example.com") == 4
    assert protection.lock_remaining(store, "BOB@example.com ") == 4  # the normalised email


def test_default_policy_is_five_in_fifteen_minutes_for_fifteen_minutes(ctx, client):
    make_user()
    for _ in range(4):
        assert account_login(client, password="wrong password").status_code == 401
    fifth = account_login(client, password="wrong password")
    assert fifth.status_code == 429 and fifth.headers["Retry-After"] == "900"
    assert "Try again in 15 minutes." in _text(fifth)


def _strip(html: str) -> str:
    return re.sub(r'value="[^"]*"', "", html)


@pytest.fixture()
def steady(app, settings):
    """Threshold 3 in a window long enough that a slow machine does not end it mid-test."""
    tuned = tuned_app(settings, lockout_threshold=3, lockout_window_ttl=120, lockout_ttl=30, lockout_max_ttl=60)
    with tuned.app_context():
        yield tuned
        db.session.remove()


def test_unknown_email_gets_the_same_answers_as_a_real_one(steady):
    make_user()
    known, unknown = steady.test_client(), steady.test_client()
    for _ in range(2):
        a = account_login(known, password="wrong password")
        b = account_login(unknown, email="nobody@example.com", password="wrong password")
        assert (a.status_code, _strip(_text(a)).replace("alice", "X")) == \
               (b.status_code, _strip(_text(b)).replace("nobody", "X"))
    a = account_login(known, password="wrong password")
    b = account_login(unknown, email="nobody@example.com", password="wrong password")
    assert a.status_code == b.status_code == 429
    assert a.headers["Retry-After"] == b.headers["Retry-After"]
    assert _strip(_text(a)).replace("alice", "X") == _strip(_text(b)).replace("nobody", "X")


def test_disabled_account_gets_the_same_answer_as_a_wrong_password(ctx, client):
    from idp.services.users import disable_user

    disable_user(make_user())
    response = account_login(client)
    assert response.status_code == 401 and "Invalid email or password." in _text(response)
    assert db.session.query(AuthEvent).filter_by(reason="disabled").count() == 1


def test_unknown_email_costs_the_same_time_as_a_known_one(ctx):
    """The dummy hash in users.authenticate: the password check runs either way."""
    make_user()
    store, settings = ctx.extensions["idp"].store, ctx.extensions["idp"].settings

    def timed(email: str) -> float:
        start = time.perf_counter()
        with pytest.raises(protection.InvalidCredentials):
            protection.login(store, settings, email, "wrong password", ip="127.0.0.1", user_agent="t")
        return time.perf_counter() - start

    timed("nobody@example.com")  # builds the dummy hash once
    known = statistics.median(timed("alice@example.com") for _ in range(3))
    unknown = statistics.median(timed("nobody@example.com") for _ in range(3))
    assert 0.5 < unknown / known < 2.0, (known, unknown)


def test_oidc_login_page_is_protected_too(ctx, client):
    from tests.factories import auth_params, form_fields, make_client

    make_user()
    cid, _ = make_client()
    start = client.get("/authorize", query_string=auth_params(cid))
    page = client.get(start.headers["Location"])
    fields = form_fields(_text(page))
    for _ in range(4):
        assert client.post("/login", data={**fields, "email": "alice@example.com",
                                           "password": "nope nope"}).status_code == 401
    fifth = client.post("/login", data={**fields, "email": "alice@example.com", "password": "nope nope"})
    assert fifth.status_code == 429 and LOCKED in _text(fifth)
    locked = client.post("/login", data={**fields, "email": "alice@example.com", "password": PASSWORD})
    assert locked.status_code == 429 and LOCKED in _text(locked)
    assert locked.headers["Retry-After"]
