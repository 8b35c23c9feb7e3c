"""A real SMTP server (aiosmtpd) on loopback that keeps every message it receives: plain
(the session `mailbox` fixture), or with STARTTLS, implicit TLS and AUTH, using certificates
from a TestCA made in the test with `cryptography` (no network, no openssl CLI)."""

from __future__ import annotations

import datetime
import email
import email.policy
import ipaddress
import socket
import ssl
import threading
import time
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import quote

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


class Mailbox:
    """`Mailbox()` is plain SMTP. `scheme` names what the sender must speak (smtp,
    smtp+starttls, smtps); `server_options` go to aiosmtpd's Controller and SMTP:
    `ssl_context` (implicit TLS), `tls_context` and `require_starttls`, `authenticator`,
    `auth_required`, `auth_require_tls`."""

    def __init__(self, scheme: str = "smtp", **server_options):
        self.scheme = scheme
        self.server_options = server_options
        self.messages: list[EmailMessage] = []
        # One entry per message: the TLS version it came over (None: plain) and the AUTH user.
        self.deliveries: list[dict] = []
        self._lock = threading.Lock()
        self.controller: Controller | None = None

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd handler protocol
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        tls = server.transport.get_extra_info("ssl_object") if server.transport else None
        with self._lock:
            self.messages.append(message)
            self.deliveries.append({"tls": tls.version() if tls else None,
                                    "login": getattr(session.auth_data, "login", None)})
        return "250 OK"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.controller.port}"

    def url_with(self, user: str, password: str) -> str:
        """The URL with credentials, percent-encoded as IDP_SMTP_URL expects them."""
        return f"{self.scheme}://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{self.controller.port}"

    def start(self) -> Mailbox:
        # Controller(port=0) cannot self-check: bind a free port first (shared/notes/stack.md).
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.controller = Controller(self, hostname="127.0.0.1", port=port, **self.server_options)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller:
            self.controller.stop()

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()
            self.deliveries.clear()

    def to(self, address: str) -> list[EmailMessage]:
        with self._lock:
            return [m for m in self.messages if address.lower() in str(m["To"]).lower()]

    def wait_for(self, address: str, subject_contains: str = "", timeout: float = 10.0) -> EmailMessage:
        """The newest message to `address` whose subject contains the text, waiting for it."""
        deadline = time.monotonic() + timeout
        while True:
            found = [m for m in self.to(address) if subject_contains.lower() in str(m["Subject"]).lower()]
            if found:
                return found[-1]
            if time.monotonic() > deadline:
                raise AssertionError(f"no mail to {address} with {subject_contains!r}; got "
                                     f"{[(str(m['To']), str(m['Subject'])) for m in self.messages]}")
            time.sleep(0.05)


def body_text(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain", "html"))
    return part.get_content() if part else ""


class PasswordAuthenticator:
    """aiosmtpd `authenticator`: accepts the given users and passwords (compared as UTF-8
    bytes, as AUTH PLAIN and LOGIN carry them) and records each attempt's user and outcome."""

    def __init__(self, accounts: dict[str, str]):
        self.accounts = {user.encode(): password.encode() for user, password in accounts.items()}
        self.attempts: list[tuple[str, bool]] = []

    def __call__(self, server, session, envelope, mechanism, auth_data):
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        ok = self.accounts.get(auth_data.login) == auth_data.password
        self.attempts.append((auth_data.login.decode(errors="replace"), ok))
        return AuthResult(success=ok, handled=False, auth_data=auth_data)


class TestCA:
    """A certificate authority that exists for one test: its certificate is `cert_file` (PEM,
    what IDP_SMTP_CA_FILE names), and `server_context()` issues a server certificate."""

    __test__ = False  # not a pytest test class

    def __init__(self, folder: Path, name: str = "idp test CA"):
        self.folder = folder
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            _builder(subject, subject, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_file = folder / f"{name.replace(' ', '-')}.pem"
        self.cert_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def server_context(self, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> ssl.SSLContext:
        """A TLS server context whose certificate this CA signed for `hosts` (IPs and DNS names)."""
        key = ec.generate_private_key(ec.SECP256R1())
        names = [_san(h) for h in hosts]
        cert = (
            _builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]), self.cert.subject,
                     key.public_key())
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        chain = self.folder / f"server-{hosts[0]}-{cert.serial_number}.pem"
        chain.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(chain)
        return context


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _builder(subject: x509.Name, issuer: x509.Name, public_key) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1)))
