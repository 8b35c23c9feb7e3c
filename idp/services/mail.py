"""Outbound mail: text + HTML templates, delivered over SMTP or written to instance/mail/.

`send_mail(settings, to, template, **context)` renders `templates/mail/<template>.txt` and
`.html` (the first line of the text template, `Subject: ...`, is the subject) into one
multipart/alternative message. With `IDP_SMTP_URL` it is delivered over SMTP:

    smtp://[user:pass@]host[:25]           plain (loopback relays, tests)
    smtp+starttls://[user:pass@]host[:587] STARTTLS before authenticating (RFC 3207)
    smtps://[user:pass@]host[:465]         implicit TLS (RFC 8314)

User and password are percent-encoded in the URL (`p%40ss` for `p@ss`). Over TLS the relay's
certificate and host name are verified (RFC 8314 §4.1), against the system's CAs or, with
`IDP_SMTP_CA_FILE`, against that PEM bundle only; a relay that fails the check gets nothing.

Without it (embedded mode) the message is written to `<instance>/mail/<time>-<id>.eml`, so
`make run` works offline. The log names the template, the file or relay and a message id,
never the body: mails carry single-use links.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
import smtplib
import ssl
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from urllib.parse import unquote, urlsplit

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from ..settings import Settings

logger = logging.getLogger("idp.mail")

TEMPLATES = Path(__file__).resolve().parent.parent.parent / "templates" / "mail"
SMTP_TIMEOUT = 10


class MailError(Exception):
    """The message could not be delivered (SMTP refused it or the relay is unreachable)."""


_env = Environment(loader=FileSystemLoader(str(TEMPLATES)), undefined=StrictUndefined,
                   autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
                   keep_trailing_newline=True)


def render_mail(template: str, **context) -> tuple[str, str, str]:
    """(subject, text, html) of a mail template. Raises jinja2 errors for a missing template
    or context value (StrictUndefined: a mail never goes out with a blank link)."""
    text = _env.get_template(f"{template}.txt").render(**context)
    html = _env.get_template(f"{template}.html").render(**context)
    first, _, rest = text.partition("\n")
    if not first.startswith("Subject:"):
        raise ValueError(f"mail template {template}.txt must start with 'Subject: ...'")
    return first.removeprefix("Subject:").strip(), rest.lstrip("\n"), html


def build_message(settings: Settings, to: str, template: str, **context) -> EmailMessage:
    subject, text, html = render_mail(template, **context)
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False, usegmt=True)
    domain = settings.mail_from.rpartition("@")[2] or "localhost"
    message["Message-ID"] = make_msgid(domain=domain)
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message


def send_mail(settings: Settings, to: str, template: str, **context) -> str:
    """Render and deliver one mail; returns its Message-ID. Raises MailError if the SMTP
    relay refuses it, cannot be reached or fails TLS verification (callers decide whether
    that is fatal; nothing is queued)."""
    message = build_message(settings, to, template, **context)
    if settings.smtp_url:
        _deliver_smtp(settings.smtp_url, settings.smtp_ca_file, message)
        logger.info("mail %s sent over SMTP (%s)", template, message["Message-ID"])
    else:
        path = _write_file(Path(settings.instance_path) / "mail", message)
        logger.info("mail %s written to %s (no IDP_SMTP_URL)", template, path)
    return message["Message-ID"]


def _deliver_smtp(url: str, ca_file: str | None, message: EmailMessage) -> None:
    parts = urlsplit(url)
    scheme = parts.scheme
    host = parts.hostname or "localhost"
    port = parts.port or {"smtps": 465, "smtp+starttls": 587}.get(scheme, 25)
    try:
        if scheme == "smtps":
            smtp = smtplib.SMTP_SSL(host, port, timeout=SMTP_TIMEOUT, context=_tls_context(ca_file))
        else:
            smtp = smtplib.SMTP(host, port, timeout=SMTP_TIMEOUT)
        with smtp:
            if scheme == "smtp+starttls":
                # Raises SMTPNotSupportedError if the relay offers no STARTTLS: never downgrade.
                smtp.starttls(context=_tls_context(ca_file))
            if parts.username:
                _login(smtp, unquote(parts.username), unquote(parts.password or ""))
            smtp.send_message(message)
    except (OSError, smtplib.SMTPException) as exc:
        # The library text may echo the relay's reply, never our body; the URL's password is
        # not in it.
        raise MailError(f"SMTP delivery to {host}:{port} failed: {exc.__class__.__name__}: {exc}") from None


def _tls_context(ca_file: str | None) -> ssl.SSLContext:
    # Certificate and host name checked, TLS 1.2 or newer; cafile replaces the system store.
    return ssl.create_default_context(cafile=ca_file)


def _login(smtp: smtplib.SMTP, user: str, password: str) -> None:
    if user.isascii() and password.isascii():
        smtp.login(user, password)
        return
    # smtplib encodes credentials as ASCII (a UnicodeEncodeError mid-exchange); AUTH PLAIN
    # carries UTF-8 (RFC 4616 §2).
    smtp.ehlo_or_helo_if_needed()
    if "PLAIN" not in smtp.esmtp_features.get("auth", "").upper().split():
        raise smtplib.SMTPNotSupportedError("the relay offers no AUTH PLAIN for a non-ASCII user or password")
    response = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    code, reply = smtp.docmd("AUTH", "PLAIN " + response)
    if code != 235:
        raise smtplib.SMTPAuthenticationError(code, reply)


def _write_file(folder: Path, message: EmailMessage) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(4)}.eml"
    path = folder / name
    # 0600: the file holds a live single-use link.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(message.as_bytes())
    return path
