"""Email verification link: opening it (GET) only shows a confirm button and changes nothing,
because mail scanners and link previews follow links; the CSRF-protected POST consumes it,
once (an atomic UPDATE ... WHERE used_at IS NULL), within 24 hours."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from idp.storage.account_models import AccountToken
from idp.storage.models import User, db
from tests.factories import form_fields

from .conftest import expire_link, link_in, post_form, sent_mail, together


def _link(client, mailbox, email="bob@example.com") -> str:
    post_form(client, "/signup", name="Bob", email=email, password="a sturdy passphrase here")
    return link_in(sent_mail(mailbox, email, "Confirm"), "/verify-email")


def _verified(app, email="bob@example.com") -> bool:
    with app.app_context():
        return db.session.scalar(select(User.email_verified).where(User.email == email))


def _token_used(app) -> bool:
    with app.app_context():
        return db.session.scalar(select(AccountToken.used_at)) is not None


def test_opening_the_link_changes_nothing_and_shows_a_confirm_button(app, client, mailbox):
    link = _link(client, mailbox)
    for _ in range(2):  # a mail scanner, then the user
        page = client.get(link)
        html = page.get_data(as_text=True)
        assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
        assert "Confirm my email address" in html and "bob@example.com" in html
        assert '<form method="post" action="/verify-email">' in html
        assert {"csrf_token", "token"} <= set(form_fields(html))
        assert not _verified(app) and not _token_used(app)
    confirmed = client.post("/verify-email", data=form_fields(html))
    assert confirmed.status_code == 200 and "Email address confirmed" in confirmed.get_data(as_text=True)
    assert _verified(app) and _token_used(app)


def test_the_link_works_once(app, client, mailbox):
    link = _link(client, mailbox)
    fields = form_fields(client.get(link).get_data(as_text=True))
    assert client.post("/verify-email", data=fields).status_code == 200
    again = client.post("/verify-email", data=fields)
    assert again.status_code == 400 and "already used or has expired" in again.get_data(as_text=True)
    opened = client.get(link)  # a used link no longer offers the button
    assert opened.status_code == 400 and "Confirm my email address" not in opened.get_data(as_text=True)


def test_the_post_needs_the_csrf_token_of_this_browser(app, client, mailbox):
    link = _link(client, mailbox)
    fields = form_fields(client.get(link).get_data(as_text=True))
    assert client.post("/verify-email", data={**fields, "csrf_token": "x"}).status_code == 400
    assert client.post("/verify-email", data={"token": fields["token"]}).status_code == 400
    other = app.test_client()  # another browser: no form cookie, or its own
    assert other.post("/verify-email", data=fields).status_code == 400
    other.get(link)
    assert other.post("/verify-email", data=fields).status_code == 400
    assert not _verified(app) and not _token_used(app)
    assert client.post("/verify-email", data=fields).status_code == 200


def test_concurrent_confirmations_succeed_once(app, mailbox):
    browsers = [app.test_client() for _ in range(6)]
    link = _link(browsers[0], mailbox)
    forms = [form_fields(b.get(link).get_data(as_text=True)) for b in browsers]
    codes = together(lambda i: browsers[i].post("/verify-email", data=forms[i]).status_code, len(browsers))
    assert sorted(codes) == [200] + [400] * (len(browsers) - 1)
    assert _verified(app)


def test_the_link_expires_after_24_hours(app, client, mailbox):
    link = _link(client, mailbox)
    fields = form_fields(client.get(link).get_data(as_text=True))
    expire_link(app, timedelta(hours=24))
    assert client.get(link).status_code == 400
    assert client.post("/verify-email", data=fields).status_code == 400
    assert not _verified(app)


def test_malformed_or_huge_tokens_are_a_clear_400(app, client, mailbox):
    link = _link(client, mailbox)
    fields = form_fields(client.get(link).get_data(as_text=True))
    for query in ("", "?token=", "?token=nonsense", "?token=" + "A" * 101, "?token=" + "A" * 9000,
                  "?token=a&token=b", "?token=%00", "?token=%ff%fe", "?token=%E2%80%AE<script>"):
        response = client.get("/verify-email" + query)
        assert response.status_code == 400, query
        assert "text/html" in response.content_type and "Confirm my email address" not in response.get_data(as_text=True)
    for token in ("", "nonsense", "A" * 101, "A" * 9000, "\x00"):
        assert client.post("/verify-email", data={**fields, "token": token}).status_code == 400, token[:10]
    assert client.post("/verify-email", json=fields).status_code == 400
    assert not _verified(app) and not _token_used(app)
    assert client.post("/verify-email", data=fields).status_code == 200
