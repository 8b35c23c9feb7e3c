"""Forgot password and reset: the same answer for every email, rate limits with 429 and
Retry-After, a single-use 30-minute link, and a new password that revokes every session
and refresh token."""

from __future__ import annotations

import time
from datetime import timedelta

from sqlalchemy import select

from idp.interaction.accounts import drain_background
from idp.services import sessions
from idp.services.users import authenticate
from idp.storage.models import RefreshToken, db
from tests.factories import (
    PASSWORD,
    auth_params,
    exchange,
    form_fields,
    get_code,
    make_client,
    make_user,
    query,
)

from .conftest import expire_link, link_in, post_form, sent_mail

NEW = "a brand new passphrase"


def _forgot(client, email):
    return post_form(client, "/forgot-password", email=email)


def test_forgot_password_answers_the_same_for_known_and_unknown_emails(app, client, mailbox):
    with app.app_context():
        make_user("alice@example.com")
    timings = {}
    bodies = {}
    for email in ("alice@example.com", "nobody@example.com"):
        started = time.perf_counter()
        response = _forgot(client, email)
        timings[email] = time.perf_counter() - started
        assert response.status_code == 200
        bodies[email] = response.get_data(as_text=True)
    assert bodies["alice@example.com"] == bodies["nobody@example.com"]
    # The lookup and the mail happen off the request: no measurable difference.
    assert abs(timings["alice@example.com"] - timings["nobody@example.com"]) < 0.05
    message = sent_mail(mailbox, "alice@example.com", "Reset your password")
    assert "30 minutes" in message.get_body(("plain",)).get_content()
    drain_background()
    assert mailbox.to("nobody@example.com") == []


def test_forgot_password_is_rate_limited_per_email(app, client, mailbox):
    for _ in range(3):
        assert _forgot(client, "Alice@Example.com").status_code == 200
    refused = _forgot(client, "alice@example.com")
    assert refused.status_code == 429
    assert 3500 < int(refused.headers["Retry-After"]) <= 3600
    assert _forgot(client, "bob@example.com").status_code == 200


def test_forgot_password_is_rate_limited_per_ip(app, client, settings):
    limit = settings.reset_rate_limit
    for n in range(limit):
        assert _forgot(client, f"user{n}@example.com").status_code == 200
    refused = _forgot(client, "one-more@example.com")
    assert refused.status_code == 429
    assert 0 < int(refused.headers["Retry-After"]) <= settings.rate_limit_window_ttl


def test_forgot_password_bad_email_is_a_form_error(client):
    response = _forgot(client, "nope")
    assert response.status_code == 400 and 'id="email-error"' in response.get_data(as_text=True)


def _reset_link(app, client, mailbox, email="alice@example.com"):
    _forgot(client, email)
    return link_in(sent_mail(mailbox, email, "Reset your password"), "/reset-password")


def test_reset_revokes_sessions_and_refresh_tokens_and_mails_the_owner(app, client, mailbox):
    with app.app_context():
        make_user("alice@example.com")
        client_id, secret = make_client()
    code, verifier, _ = get_code(client, client_id)
    tokens = exchange(client, client_id, secret, code, verifier).get_json()
    assert "refresh_token" in tokens
    link = _reset_link(app, client, mailbox)
    page = client.get(link)
    assert page.status_code == 200 and "Choose a new password" in page.get_data(as_text=True)
    response = client.post("/reset-password", data={**form_fields(page.get_data(as_text=True)), "password": NEW})
    assert response.status_code == 200 and "Password changed" in response.get_data(as_text=True)
    with app.app_context():
        assert authenticate("alice@example.com", NEW).email == "alice@example.com"
        assert db.session.scalar(select(RefreshToken.revoked_at).limit(1)) is not None
        user_id = db.session.scalar(select(RefreshToken.user_id).limit(1))
        assert sessions.list_sessions(app.extensions["idp"].store, user_id) == []
    refreshed = client.post("/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
                            auth=(client_id, secret))
    assert refreshed.status_code == 400 and refreshed.get_json()["error"] == "invalid_grant"
    # The SSO session is gone: prompt=none needs a login again.
    silent = client.get("/authorize", query_string=auth_params(client_id, prompt="none"))
    assert query(silent.headers["Location"])["error"] == "login_required"
    assert "changed" in sent_mail(mailbox, "alice@example.com", "password was changed")["Subject"]


def test_reset_link_works_once_and_a_weak_password_does_not_use_it(app, client, mailbox):
    with app.app_context():
        make_user("alice@example.com")
    link = _reset_link(app, client, mailbox)
    fields = form_fields(client.get(link).get_data(as_text=True))
    weak = client.post("/reset-password", data={**fields, "password": "password"})
    assert weak.status_code == 400 and 'id="password-error"' in weak.get_data(as_text=True)
    assert client.post("/reset-password", data={**fields, "password": NEW}).status_code == 200
    assert client.post("/reset-password", data={**fields, "password": NEW + "2"}).status_code == 400
    assert client.get(link).status_code == 400
    with app.app_context():
        authenticate("alice@example.com", NEW)


def test_reset_link_expires_after_30_minutes(app, client, mailbox):
    with app.app_context():
        make_user("alice@example.com")
    link = _reset_link(app, client, mailbox)
    expire_link(app, timedelta(minutes=30))
    assert client.get(link).status_code == 400


def test_a_new_password_kills_other_reset_links(app, client, mailbox):
    with app.app_context():
        make_user("alice@example.com")
    first = _reset_link(app, client, mailbox)
    mailbox.clear()
    second = _reset_link(app, client, mailbox)
    fields = form_fields(client.get(second).get_data(as_text=True))
    assert client.post("/reset-password", data={**fields, "password": NEW}).status_code == 200
    assert client.get(first).status_code == 400


def test_reset_post_needs_csrf(app, client, mailbox):
    with app.app_context():
        make_user("alice@example.com")
    link = _reset_link(app, client, mailbox)
    token = link.split("token=")[1]
    other = app.test_client()
    assert other.post("/reset-password", data={"token": token, "password": NEW, "csrf_token": "x"}).status_code == 400
    with app.app_context():
        authenticate("alice@example.com", PASSWORD)
