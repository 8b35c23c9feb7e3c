"""SMTP transport against real aiosmtpd relays on loopback: STARTTLS (RFC 3207) and implicit
TLS (RFC 8314) with AUTH, certificates from a CA made in the test. The relay's certificate
and host name are verified (RFC 8314 §4.1) against IDP_SMTP_CA_FILE; a relay that fails the
check, or refuses the credentials, gets neither the mail nor the password, and the failure
is logged (not queued, not retried: the user asks again)."""

from __future__ import annotations

import logging
from contextlib import contextmanager

import pytest

from idp import create_app
from idp.interaction.accounts import drain_background
from idp.services.mail import MailError, send_mail
from idp.settings import Settings, SettingsError
from tests.mailbox import Mailbox, PasswordAuthenticator, TestCA

from .conftest import post_form

# URL-special characters (and a literal %41, which must not be decoded twice) in user and
# password; the second account is non-ASCII, which AUTH PLAIN carries as UTF-8 (RFC 4616).
USER, PASSWORD = "idp+relay@example.com", "p@ss:w/rd?#[]%41&+= ;'\"\\"
UTF8_USER, UTF8_PASSWORD = "idp-relé", "pässwörd € ü"
ACCOUNTS = {USER: PASSWORD, UTF8_USER: UTF8_PASSWORD}
MAIL = {"name": "Bob", "when": "2026-01-01 10:00 UTC"}

# aiosmtpd warns about AUTH without its STARTTLS check: the smtps relay below is all TLS.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return TestCA(tmp_path_factory.mktemp("smtp-ca"))


def _relay(scheme: str, **options) -> Mailbox:
    return Mailbox(scheme, authenticator=PasswordAuthenticator(ACCOUNTS), auth_required=True, **options).start()


@pytest.fixture(scope="module")
def starttls_relay(ca):
    box = _relay("smtp+starttls", tls_context=ca.server_context(), require_starttls=True, auth_require_tls=True)
    yield box
    box.stop()


@pytest.fixture(scope="module")
def smtps_relay(ca):
    # Implicit TLS: the whole connection is TLS, which aiosmtpd's auth_require_tls (a STARTTLS
    # check) does not see, so it is off here.
    box = _relay("smtps", ssl_context=ca.server_context(), auth_require_tls=False)
    yield box
    box.stop()


@pytest.fixture(params=["smtp+starttls", "smtps"])
def relay(request, starttls_relay, smtps_relay):
    box = starttls_relay if request.param == "smtp+starttls" else smtps_relay
    box.clear()
    box.server_options["authenticator"].attempts.clear()
    return box


def _settings(tmp_path, url: str, ca_file=None) -> Settings:
    return Settings(smtp_url=url, smtp_ca_file=str(ca_file) if ca_file else None, instance_path=str(tmp_path))


def _attempts(box) -> list:
    return box.server_options["authenticator"].attempts


@contextmanager
def _idp_log(caplog, level=logging.DEBUG):
    """caplog for the `idp` logger, which does not propagate (idp/logs.py); after create_app,
    which replaces its handlers."""
    logger = logging.getLogger("idp")
    saved = logger.level
    logger.addHandler(caplog.handler)
    logger.setLevel(level)
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)
        logger.setLevel(saved)


@pytest.mark.parametrize("user", [USER, UTF8_USER])
def test_mail_goes_over_tls_with_auth_to_a_verified_relay(tmp_path, ca, relay, user):
    settings = _settings(tmp_path, relay.url_with(user, ACCOUNTS[user]), ca.cert_file).validate()
    send_mail(settings, "bob@example.com", "password_changed", **MAIL)
    message = relay.wait_for("bob@example.com", "password was changed")
    assert "Bob" in message.get_body(("plain",)).get_content()
    assert relay.deliveries == [{"tls": relay.deliveries[0]["tls"], "login": user.encode()}]
    assert relay.deliveries[0]["tls"] in ("TLSv1.2", "TLSv1.3")
    assert _attempts(relay) == [(user, True)]  # the percent-encoded credentials, decoded exactly


def test_the_relays_refuse_plain_text_and_anonymous_senders(tmp_path, ca, relay, starttls_relay):
    """The test relays are strict, so the test above proves that TLS and AUTH were used."""
    with pytest.raises(MailError, match="530"):  # authentication required
        send_mail(_settings(tmp_path, relay.url, ca.cert_file), "bob@example.com", "password_changed", **MAIL)
    plain = starttls_relay.url.replace("smtp+starttls://", "smtp://")
    with pytest.raises(MailError, match="530"):  # STARTTLS required
        send_mail(_settings(tmp_path, plain), "bob@example.com", "password_changed", **MAIL)
    # Without TLS the relay does not offer AUTH, and smtplib sends no password.
    plain = starttls_relay.url_with(USER, PASSWORD).replace("smtp+starttls://", "smtp://")
    with pytest.raises(MailError, match="AUTH extension not supported"):
        send_mail(_settings(tmp_path, plain), "bob@example.com", "password_changed", **MAIL)
    assert relay.messages == [] and starttls_relay.messages == [] and _attempts(starttls_relay) == []


def test_an_untrusted_certificate_is_refused_before_the_password_is_sent(tmp_path, tmp_path_factory, relay):
    other_ca = TestCA(tmp_path_factory.mktemp("other-ca"), name="someone else")
    url = relay.url_with(USER, PASSWORD)
    for ca_file in (None, other_ca.cert_file):  # the system store; a CA that did not sign it
        with pytest.raises(MailError, match="CERTIFICATE_VERIFY_FAILED") as caught:
            send_mail(_settings(tmp_path, url, ca_file), "bob@example.com", "password_changed", **MAIL)
        assert PASSWORD not in str(caught.value) and "%" not in str(caught.value)
    assert _attempts(relay) == [] and relay.messages == []


def test_a_certificate_for_another_host_name_is_refused(tmp_path, ca):
    box = Mailbox("smtps", ssl_context=ca.server_context(("mail.example.net",))).start()
    try:
        with pytest.raises(MailError, match="CERTIFICATE_VERIFY_FAILED.*(mismatch|match)"):
            send_mail(_settings(tmp_path, box.url, ca.cert_file), "bob@example.com", "password_changed", **MAIL)
        assert box.messages == []
    finally:
        box.stop()


@pytest.mark.parametrize("user, password", [(USER, PASSWORD + "x"), (UTF8_USER, "pässwörd"), ("nobody", PASSWORD)])
def test_wrong_credentials_fail_cleanly_without_the_password_in_the_error_or_log(tmp_path, ca, relay, caplog,
                                                                                user, password):
    settings = _settings(tmp_path, relay.url_with(user, password), ca.cert_file)
    with _idp_log(caplog), pytest.raises(MailError, match="535") as caught:
        send_mail(settings, "bob@example.com", "password_changed", **MAIL)
    # smtplib tries each mechanism the relay offers (PLAIN, LOGIN); each is refused.
    assert _attempts(relay) and all(u == user and not ok for u, ok in _attempts(relay)) and relay.messages == []
    for text in (str(caught.value), caplog.text):
        assert password not in text and settings.smtp_url not in text


@pytest.mark.parametrize("failure", ["untrusted certificate", "wrong password"])
def test_a_failed_account_mail_is_logged_not_lost_silently(app, settings, tmp_path, ca, starttls_relay, caplog,
                                                           failure):
    """Sign-up answers as always; the verification mail is not delivered, and the log says so
    at ERROR with the reason, without the link or the SMTP password. Nothing is queued: the
    user asks again ("Send the link again" on the sign-in page)."""
    starttls_relay.clear()
    password = PASSWORD + "x" if failure == "wrong password" else PASSWORD
    ca_file = str(ca.cert_file) if failure == "wrong password" else None
    broken = create_app(settings.replace(smtp_url=starttls_relay.url_with(USER, password), smtp_ca_file=ca_file))
    with _idp_log(caplog, logging.INFO):
        response = post_form(broken.test_client(), "/signup", name="Bob", email="bob@example.com",
                             password="a sturdy passphrase here")
        drain_background()
    assert response.status_code == 200 and "Check your email" in response.get_data(as_text=True)
    assert starttls_relay.messages == []
    [record] = [r for r in caplog.records if "not delivered" in r.getMessage()]
    assert record.levelno == logging.ERROR and record.name == "idp.accounts"
    assert "verify_email" in record.getMessage()
    assert ("CERTIFICATE_VERIFY_FAILED" if failure == "untrusted certificate" else "535") in record.getMessage()
    assert password not in caplog.text and "token=" not in caplog.text


def test_smtp_settings_are_checked_at_startup(tmp_path, ca):
    good = "smtps://u:p@127.0.0.1:465"
    Settings(smtp_url=good, smtp_ca_file=str(ca.cert_file)).validate()
    assert Settings.from_env({"IDP_SMTP_URL": good, "IDP_SMTP_CA_FILE": str(ca.cert_file)},
                             dotenv=None).smtp_ca_file == str(ca.cert_file)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    for url, ca_file, message in [
        ("smtp://u:p@127.0.0.1:25", ca.cert_file, "needs IDP_SMTP_URL with smtp\\+starttls:// or smtps://"),
        (None, ca.cert_file, "needs IDP_SMTP_URL"),
        (good, tmp_path / "missing.pem", "not a readable PEM"),
        (good, junk, "not a readable PEM"),
        ("smtps://u:se#cret@127.0.0.1:465", None, "malformed"),  # an unencoded '#' cuts the URL
        ("smtps://u:se/cret@127.0.0.1:465", None, "malformed"),
        ("smtps://u:p@127.0.0.1:465/x?y=1", None, "malformed"),
    ]:
        with pytest.raises(SettingsError, match=message) as caught:
            Settings(smtp_url=url, smtp_ca_file=str(ca_file) if ca_file else None).validate()
        assert "cret" not in str(caught.value)
