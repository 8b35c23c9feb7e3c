"""The auth_events audit trail and the new-device mail (through the real SMTP `mailbox`)."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select

from idp.services import audit
from idp.storage.models import db
from idp.storage.security_models import AuthEvent
from tests.factories import make_user
from tests.mailbox import body_text
from tests.security.helpers import account_login

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
CHROME_MAC = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/126.0 Safari/537.36")


class _Fresh:
    """A new browser (no session cookie) for every login."""

    def __init__(self, app):
        self.app = app

    def get(self, *a, **k):
        self.current = self.app.test_client()
        return self.current.get(*a, **k)

    def post(self, *a, **k):
        return self.current.post(*a, **k)


def _events() -> list[AuthEvent]:
    db.session.expire_all()
    return list(db.session.scalars(select(AuthEvent).order_by(AuthEvent.created_at)))


def test_every_login_attempt_is_recorded_with_who_where_and_why(ctx, client):
    user = make_user()
    env = {"REMOTE_ADDR": "192.0.2.7", "HTTP_USER_AGENT": FIREFOX}
    account_login(client, password="wrong password", **env)
    account_login(client, email="nobody@example.com", password="x", **env)
    account_login(client, **env)
    rows = [(e.event, e.result, e.reason, e.user_id, e.email, e.ip, e.user_agent) for e in _events()]
    assert rows == [
        ("login", "failure", "bad_password", user.id, "alice@example.com", "192.0.2.7", FIREFOX),
        ("login", "failure", "unknown_email", None, "nobody@example.com", "192.0.2.7", FIREFOX),
        ("login", "success", None, user.id, "alice@example.com", "192.0.2.7", FIREFOX),
    ]
    assert all(e.created_at.tzinfo is not None for e in _events())


def test_locked_attempts_and_the_lockout_itself_are_recorded(ctx, client):
    make_user()
    for _ in range(6):
        account_login(client, password="wrong password")
    assert Counter((e.event, e.reason) for e in _events()) == {
        ("login", "bad_password"): 5, ("lockout", "locked 900s"): 1, ("login", "locked"): 1}


def test_pseudonymize_keeps_the_rows_without_personal_data(ctx, client):
    user = make_user()
    account_login(client, password="wrong password")
    account_login(client)
    assert audit.pseudonymize_user_events(user.id) == 2
    rows = _events()
    assert len(rows) == 2
    assert {(e.user_id, e.email, e.ip, e.user_agent) for e in rows} == {(None, None, None, None)}
    assert {e.pseudonym for e in rows} == {audit.pseudonym(user.id)}
    assert user.id not in audit.pseudonym(user.id)


def test_new_device_or_ip_sends_a_mail_first_and_repeat_logins_do_not(ctx, app, mailbox):
    make_user()
    client = _Fresh(app)
    assert account_login(client, REMOTE_ADDR="192.0.2.1", HTTP_USER_AGENT=FIREFOX).status_code == 302
    assert account_login(client, REMOTE_ADDR="192.0.2.1", HTTP_USER_AGENT=FIREFOX).status_code == 302
    assert mailbox.to("alice@example.com") == []  # the first login and a known device: no mail

    assert account_login(client, REMOTE_ADDR="192.0.2.1", HTTP_USER_AGENT=CHROME_MAC).status_code == 302
    message = mailbox.wait_for("alice@example.com", "New sign-in")
    text = body_text(message)
    assert "Chrome on macOS" in text and "192.0.2.1" in text and "Alice Example" in text

    mailbox.clear()
    assert account_login(client, REMOTE_ADDR="198.51.100.9", HTTP_USER_AGENT=FIREFOX).status_code == 302
    assert "198.51.100.9" in body_text(mailbox.wait_for("alice@example.com", "New sign-in"))
    assert Counter(e.event for e in _events())["new_device_mail"] == 2


def test_device_labels():
    assert audit.describe_device(FIREFOX) == "Firefox on Linux"
    assert audit.describe_device(CHROME_MAC) == "Chrome on macOS"
    assert audit.describe_device(None) == "Unknown device"
    assert audit.describe_device("curl/8.5.0") == "curl"
