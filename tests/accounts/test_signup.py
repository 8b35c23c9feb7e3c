"""Sign-up and email verification: enumeration-safe answers, single-use 24 h links, and
unverified users stopped before an OIDC login completes."""

from __future__ import annotations

import re

from sqlalchemy import select

from idp import create_app
from idp.storage.account_models import AccountToken
from idp.storage.models import User, db
from tests.factories import PASSWORD, auth_params, follow_login, form_fields, make_client, make_user, query

from .conftest import link_in, post_form, sent_mail

GOOD = "a sturdy passphrase here"


def _signup(client, email="bob@example.com", name="Bob", password=GOOD):
    return post_form(client, "/signup", name=name, email=email, password=password)


def test_signup_creates_an_unverified_user_and_mails_a_link(app, client, mailbox):
    response = _signup(client, email="  Bob@Example.COM ")
    assert response.status_code == 200
    assert "Check your email" in response.get_data(as_text=True)
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == "bob@example.com"))
        assert user is not None and user.name == "Bob" and not user.email_verified
        stored = db.session.scalars(select(AccountToken.token_hash)).all()
    message = sent_mail(mailbox, "bob@example.com", "Confirm your email")
    assert message.get_content_type() == "multipart/alternative"
    assert message.get_body(("html",)) is not None
    link = link_in(message, "/verify-email")
    token = link.split("token=")[1]
    assert token not in stored and len(stored) == 1  # only the hash is kept


def test_signup_with_a_registered_email_answers_the_same_and_mails_the_owner(app, client, mailbox):
    with app.app_context():
        make_user("alice@example.com")
    new = _signup(client, email="carol@example.com").get_data(as_text=True)
    existing = _signup(client, email="ALICE@example.com", name="Mallory", password="another long phrase")
    assert existing.status_code == 200
    assert existing.get_data(as_text=True) == new.replace("carol@example.com", "alice@example.com")
    owner_mail = sent_mail(mailbox, "alice@example.com", "tried to sign up")
    assert "/forgot-password" in owner_mail.get_body(("plain",)).get_content()
    with app.app_context():
        alice = db.session.scalar(select(User).where(User.email == "alice@example.com"))
        assert alice.name == "Alice Example"  # nothing changed
        assert db.session.scalar(select(db.func.count()).select_from(User)) == 2


def test_signup_form_errors_are_shown_next_to_the_fields(app, client):
    response = _signup(client, email="not-an-email", name="", password="password1")
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert re.search(r'id="name-error">Enter your name', html)
    assert re.search(r'id="email-error">Enter an email address', html)
    assert re.search(r'id="password-error">This password is one of the most commonly used', html)
    assert 'aria-describedby="password-hint password-error"' in html
    response = _signup(client, email="dave@example.com", password="dave-likes-cats")
    assert "must not contain your email" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(select(db.func.count()).select_from(User)) == 0


def test_signup_without_csrf_token_is_refused(app, client):
    client.get("/signup")
    response = client.post("/signup", data={"name": "Bob", "email": "bob@example.com", "password": GOOD})
    assert response.status_code == 400
    fresh = app.test_client()  # a token from another browser does not fit this one
    token = form_fields(client.get("/signup").get_data(as_text=True))["csrf_token"]
    fresh.get("/signup")
    response = fresh.post("/signup", data={"csrf_token": token, "name": "B", "email": "b@example.com", "password": GOOD})
    assert response.status_code == 400


def test_signup_malformed_input_is_a_400_not_a_500(client):
    assert client.post("/signup", data=b"\xff\xfe", content_type="application/x-www-form-urlencoded").status_code == 400
    assert client.post("/signup", json={"email": "x"}).status_code == 400


def _authorize(app, client, email="bob@example.com", password=GOOD):
    with app.app_context():
        client_id, _ = make_client()
    return follow_login(client, auth_params(client_id), email=email, password=password)


def test_unverified_user_cannot_complete_an_oidc_login(app, client, mailbox):
    _signup(client)
    sent_mail(mailbox, "bob@example.com", "Confirm")
    mailbox.clear()
    response = _authorize(app, client)
    html = response.get_data(as_text=True)
    assert response.status_code == 403 and "Confirm your email address" in html
    assert "Send the link again" in html
    assert "idp_session" not in response.headers.get("Set-Cookie", "")
    # Resend: a new link arrives; it is rate limited per user (3 per hour) with 429 + Retry-After.
    fields = form_fields(html)
    for _ in range(3):
        assert client.post("/verify-email/resend", data=fields).status_code == 200
    refused = client.post("/verify-email/resend", data=fields)
    assert refused.status_code == 429 and 0 < int(refused.headers["Retry-After"]) <= 3600
    link = link_in(sent_mail(mailbox, "bob@example.com", "Confirm"), "/verify-email")
    assert post_form(client, link).status_code == 200
    done = _authorize(app, client)
    assert done.status_code == 302 and "code" in query(done.headers["Location"])


def test_resend_needs_the_interaction_and_csrf(app, client, mailbox):
    _signup(client)
    html = _authorize(app, client).get_data(as_text=True)
    fields = form_fields(html)
    assert client.post("/verify-email/resend", data={**fields, "csrf_token": "x"}).status_code == 400
    other = app.test_client()  # no interaction cookie: another browser
    assert other.post("/verify-email/resend", data=fields).status_code == 400


def test_unverified_login_is_allowed_when_the_setting_is_off(app, settings):
    relaxed = create_app(settings.replace(require_verified_email=False))
    client = relaxed.test_client()
    with relaxed.app_context():
        make_user("erin@example.com", verified=False)
    response = _authorize(relaxed, client, email="erin@example.com", password=PASSWORD)
    assert response.status_code == 302 and "code" in query(response.headers["Location"])


def test_login_page_links_to_signup_and_forgot_password(app, client):
    with app.app_context():
        client_id, _ = make_client()
    location = client.get("/authorize", query_string=auth_params(client_id)).headers["Location"]
    html = client.get(location).get_data(as_text=True)
    assert 'href="/signup"' in html and 'href="/forgot-password"' in html
