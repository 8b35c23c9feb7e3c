"""Mail: text + HTML alternatives over real SMTP (aiosmtpd), or an .eml file in
instance/mail/ without IDP_SMTP_URL; the log never carries the link."""

from __future__ import annotations

import logging
import os

import pytest

from idp.services.mail import MailError, send_mail
from idp.settings import Settings
from tests.conftest import free_port

TEMPLATES = {
    "verify_email": {"name": "Bob", "link": "https://idp.example/verify-email?token=SECRET1", "hours": 24},
    "reset_password": {"name": "Bob", "link": "https://idp.example/reset-password?token=SECRET2", "minutes": 30},
    "password_changed": {"name": "Bob", "when": "2026-01-01 10:00 UTC"},
    "new_sign_in": {"name": "Bob", "when": "2026-01-01 10:00 UTC", "ip": "203.0.113.9", "device": "Firefox on Linux"},
    "account_deleted": {"name": "Bob", "when": "2026-01-01 10:00 UTC"},
    "account_exists": {"name": "Bob", "link": "https://idp.example/forgot-password"},
}


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_every_template_is_sent_as_text_and_html_over_smtp(settings, mailbox, template):
    mailbox.clear()
    send_mail(settings, "bob@example.com", template, **TEMPLATES[template])
    message = mailbox.wait_for("bob@example.com")
    assert message["From"] == settings.mail_from and message["Message-ID"]
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    for value in TEMPLATES[template].values():
        assert str(value) in text and str(value) in html


def test_html_part_escapes_the_context(settings, mailbox):
    mailbox.clear()
    send_mail(settings, "bob@example.com", "password_changed", name="<b>Bob</b>", when="now")
    message = mailbox.wait_for("bob@example.com")
    assert "&lt;b&gt;Bob&lt;/b&gt;" in message.get_body(("html",)).get_content()


def test_without_smtp_the_mail_is_written_to_the_instance_folder(tmp_path, caplog):
    settings = Settings(instance_path=str(tmp_path))
    with caplog.at_level(logging.INFO, logger="idp"):
        send_mail(settings, "bob@example.com", "verify_email", **TEMPLATES["verify_email"])
    files = list((tmp_path / "mail").glob("*.eml"))
    assert len(files) == 1 and os.stat(files[0]).st_mode & 0o777 == 0o600
    assert b"Confirm your email address" in files[0].read_bytes()
    assert "written to" in caplog.text and "SECRET1" not in caplog.text


def test_unreachable_smtp_relay_raises_a_mail_error_without_the_password(tmp_path):
    settings = Settings(smtp_url=f"smtp://user:hunter2@127.0.0.1:{free_port()}", instance_path=str(tmp_path))
    with pytest.raises(MailError) as caught:
        send_mail(settings, "bob@example.com", "password_changed", name="Bob", when="now")
    assert "hunter2" not in str(caught.value)


def test_a_missing_context_value_fails_instead_of_sending_a_blank_link(settings):
    with pytest.raises(Exception, match="link"):
        send_mail(settings, "bob@example.com", "verify_email", name="Bob", hours=24)
