"""One settings object: the only code in idp that reads the environment.

`Settings.from_env()` reads `os.environ` (and an optional `.env` file, which the real
environment overrides). Everything else receives a `Settings` instance: the app keeps it in
`current_app.extensions["idp"].settings`, services take the values they need as parameters,
and tests build `Settings(...)` directly.

Embedded mode (no DATABASE_URL) keeps everything on one machine: SQLite in the instance
folder, the SQL-backed store, and secrets generated once into files with mode 0600.
"""

from __future__ import annotations

import base64
import dataclasses
import ipaddress
import os
import secrets
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from urllib.parse import urlsplit


class SettingsError(ValueError):
    """A setting is missing or invalid; the message is one line for the operator."""


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def _parse_int(name: str, raw: str) -> int:
    try:
        return int(raw.strip())
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse KEY=VALUE lines (optionally quoted, `export` prefix allowed, # comments)."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# (field name, environment variable, kind). The README configuration table mirrors this.
_ENV = [
    ("env", "IDP_ENV", str),
    ("issuer", "IDP_ISSUER", str),
    ("database_url", "DATABASE_URL", str),
    ("redis_url", "REDIS_URL", str),
    ("secret_key", "SECRET_KEY", str),
    ("instance_path", "IDP_INSTANCE_PATH", str),
    ("keys_path", "IDP_KEYS_PATH", str),
    ("key_encryption_key", "IDP_KEY_ENCRYPTION_KEY", str),
    ("access_token_ttl", "IDP_ACCESS_TOKEN_TTL", int),
    ("id_token_ttl", "IDP_ID_TOKEN_TTL", int),
    ("refresh_token_ttl", "IDP_REFRESH_TOKEN_TTL", int),
    ("refresh_token_grace_ttl", "IDP_REFRESH_TOKEN_GRACE_TTL", int),
    ("code_ttl", "IDP_CODE_TTL", int),
    ("interaction_ttl", "IDP_INTERACTION_TTL", int),
    ("session_ttl", "IDP_SESSION_TTL", int),
    ("session_idle_ttl", "IDP_SESSION_IDLE_TTL", int),
    ("require_pkce", "IDP_REQUIRE_PKCE", bool),
    ("key_rotation_days", "IDP_KEY_ROTATION_DAYS", int),
    ("jwks_max_age", "IDP_JWKS_MAX_AGE", int),
    ("key_prepublish_ttl", "IDP_KEY_PREPUBLISH_TTL", int),
    ("key_refresh_ttl", "IDP_KEY_REFRESH_TTL", int),
    ("client_cache_ttl", "IDP_CLIENT_CACHE_TTL", int),
    ("argon2_memory_kib", "IDP_ARGON2_MEMORY_KIB", int),
    ("argon2_time_cost", "IDP_ARGON2_TIME_COST", int),
    ("argon2_parallelism", "IDP_ARGON2_PARALLELISM", int),
    # Authorization policy (idp/policy).
    ("policy_refresh_ttl", "IDP_POLICY_REFRESH_TTL", int),
    ("id_token_max_bytes", "IDP_ID_TOKEN_MAX_BYTES", int),
    ("access_token_max_bytes", "IDP_ACCESS_TOKEN_MAX_BYTES", int),
    # Accounts: sign-up, email verification, password reset (idp/interaction/accounts.py).
    ("require_verified_email", "IDP_REQUIRE_VERIFIED_EMAIL", bool),
    ("password_min_length", "IDP_PASSWORD_MIN_LENGTH", int),
    ("verify_email_ttl", "IDP_VERIFY_EMAIL_TTL", int),
    ("reset_password_ttl", "IDP_RESET_PASSWORD_TTL", int),
    # Login protection, rate limits, back-channel logout (idp/services/protection.py, backchannel.py).
    ("lockout_threshold", "IDP_LOCKOUT_THRESHOLD", int),
    ("lockout_window_ttl", "IDP_LOCKOUT_WINDOW_TTL", int),
    ("lockout_ttl", "IDP_LOCKOUT_TTL", int),
    ("lockout_max_ttl", "IDP_LOCKOUT_MAX_TTL", int),
    ("rate_limit_window_ttl", "IDP_RATE_LIMIT_WINDOW_TTL", int),
    ("login_rate_limit", "IDP_LOGIN_RATE_LIMIT", int),
    ("signup_rate_limit", "IDP_SIGNUP_RATE_LIMIT", int),
    ("reset_rate_limit", "IDP_RESET_RATE_LIMIT", int),
    ("token_rate_limit", "IDP_TOKEN_RATE_LIMIT", int),
    ("backchannel_retry_ttl", "IDP_BACKCHANNEL_RETRY_TTL", int),
    ("backchannel_max_attempts", "IDP_BACKCHANNEL_MAX_ATTEMPTS", int),
    # Multi-factor authentication (idp/mfa).
    ("mfa_required_roles", "IDP_MFA_REQUIRED_ROLES", str),
    ("mfa_pending_ttl", "IDP_MFA_PENDING_TTL", int),
    ("trusted_browser_ttl", "IDP_TRUSTED_BROWSER_TTL", int),
    # SAML federation (idp/federation): allowed clock skew, background IdP metadata refresh.
    ("saml_clock_skew", "IDP_SAML_CLOCK_SKEW", int),
    ("saml_metadata_refresh_ttl", "IDP_SAML_METADATA_REFRESH_TTL", int),
    ("smtp_url", "IDP_SMTP_URL", str),
    ("smtp_ca_file", "IDP_SMTP_CA_FILE", str),
    ("mail_from", "IDP_MAIL_FROM", str),
    ("trusted_proxy_hops", "IDP_TRUSTED_PROXY_HOPS", int),
    ("log_format", "IDP_LOG_FORMAT", str),
    ("log_level", "IDP_LOG_LEVEL", str),
]


@dataclass(frozen=True)
class Settings:
    env: str = "development"
    issuer: str = "http://127.0.0.1:5000"
    database_url: str | None = None
    redis_url: str | None = None
    secret_key: str | None = None
    instance_path: str = "instance"
    keys_path: str = "keys"
    key_encryption_key: str | None = None
    access_token_ttl: int = 900
    id_token_ttl: int = 3600
    refresh_token_ttl: int = 30 * 86400
    refresh_token_grace_ttl: int = 0
    code_ttl: int = 60
    interaction_ttl: int = 1800
    session_ttl: int = 7 * 86400
    session_idle_ttl: int = 86400
    require_pkce: bool = False
    key_rotation_days: int = 90
    jwks_max_age: int = 300
    key_prepublish_ttl: int = 900
    key_refresh_ttl: int = 30
    # Workers keep client registrations this long (the token path then needs no query).
    client_cache_ttl: int = 5
    # Password hashing: argon2id with OWASP's parameters (19 MiB, 2 passes, 1 lane).
    argon2_memory_kib: int = 19456
    argon2_time_cost: int = 2
    argon2_parallelism: int = 1
    # Authorization policy: how often a worker checks the policy version stamp, and the
    # size budgets above which policy claims move out of tokens (to userinfo/introspection).
    policy_refresh_ttl: int = 2
    id_token_max_bytes: int = 4096
    access_token_max_bytes: int = 4096
    # Accounts: unverified users cannot finish an OIDC login; NIST SP 800-63B §5.1.1.2 minimum
    # length; lifetimes of the single-use links sent by mail.
    require_verified_email: bool = True
    password_min_length: int = 8
    verify_email_ttl: int = 86400
    reset_password_ttl: int = 1800
    # Login protection: N failed passwords within the window lock the account (email) for
    # lockout_ttl, doubling at each further lock up to lockout_max_ttl (never permanent).
    lockout_threshold: int = 5
    lockout_window_ttl: int = 900
    lockout_ttl: int = 900
    lockout_max_ttl: int = 4 * 3600
    # Per-IP requests per rate_limit_window_ttl seconds (0 = no limit); over it: 429 + Retry-After.
    rate_limit_window_ttl: int = 60
    login_rate_limit: int = 30
    signup_rate_limit: int = 10
    reset_rate_limit: int = 10
    token_rate_limit: int = 1200
    # Back-channel logout deliveries: first retry after this many seconds, doubling; given up after N.
    backchannel_retry_ttl: int = 10
    backchannel_max_attempts: int = 8
    # MFA: users with one of these roles (comma-separated names) must pass a second factor;
    # how long a login may wait at the MFA step; "trust this browser" lifetime (0: not offered).
    mfa_required_roles: str | None = None
    mfa_pending_ttl: int = 600
    trusted_browser_ttl: int = 30 * 86400
    # SAML: seconds of clock skew allowed on IdP timestamps (per connection: --clock-skew); how
    # often one node fetches IdP metadata from its URL again (0: only by `idp saml refresh-metadata`).
    saml_clock_skew: int = 120
    saml_metadata_refresh_ttl: int = 3600
    # smtp://[user:pass@]host[:port], smtp+starttls://... or smtps://...; unset: mail is
    # written to instance/mail/ (embedded mode works offline).
    smtp_url: str | None = None
    # PEM bundle of the CAs that may sign the relay's certificate, instead of the system store
    # (a private relay); the certificate and host name are always verified.
    smtp_ca_file: str | None = None
    mail_from: str = "idp@localhost"
    trusted_proxy_hops: int = 0
    log_format: str | None = None
    log_level: str = "INFO"
    # Not from the environment: tests may set these.
    testing: bool = False
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, dotenv: str | Path | None = ".env") -> Settings:
        environ = dict(os.environ if environ is None else environ)
        merged = {**(read_dotenv(Path(dotenv)) if dotenv else {}), **environ}
        values: dict[str, object] = {}
        for name, var, kind in _ENV:
            raw = merged.get(var)
            if raw is None or raw == "":
                continue
            if kind is int:
                values[name] = _parse_int(var, raw)
            elif kind is bool:
                values[name] = _parse_bool(var, raw)
            else:
                values[name] = raw
        return cls(**values)

    # --- derived values -------------------------------------------------------------------

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def embedded(self) -> bool:
        return not self.database_url

    @cached_property  # read on every client lookup (the hot path): resolve the path once
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            url = self.database_url
            # Accept the URLs people paste from their PaaS; we ship psycopg 3.
            for prefix in ("postgres://", "postgresql://"):
                if url.startswith(prefix):
                    return "postgresql+psycopg://" + url[len(prefix):]
            return url
        return "sqlite:///" + str(Path(self.instance_path).resolve() / "idp.db")

    @property
    def effective_log_format(self) -> str:
        return self.log_format or ("json" if self.production else "text")

    @property
    def mfa_roles(self) -> frozenset[str]:
        return frozenset(r.strip() for r in (self.mfa_required_roles or "").split(",") if r.strip())

    @property
    def cookie_secure(self) -> bool:
        return self.issuer.startswith("https://")

    def replace(self, **changes) -> Settings:
        return dataclasses.replace(self, **changes)

    # --- startup checks -------------------------------------------------------------------

    def validate(self) -> Settings:
        """Raise SettingsError with one clear line if the settings cannot work."""
        if self.env not in ("development", "production"):
            raise SettingsError(f"IDP_ENV must be development or production, got {self.env!r}")
        parts = urlsplit(self.issuer)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SettingsError(f"IDP_ISSUER must be an absolute http(s) URL, got {self.issuer!r}")
        # OpenID Connect Discovery §3: the issuer has no query or fragment.
        if parts.query or parts.fragment or self.issuer.endswith("/"):
            raise SettingsError("IDP_ISSUER must not end with '/' or carry a query or fragment")
        if self.production:
            if parts.scheme != "https" and not is_loopback_host(parts.hostname):
                raise SettingsError("IDP_ISSUER must use https in production (http only on loopback)")
            if not self.secret_key:
                raise SettingsError("SECRET_KEY must be set in production")
            if not self.key_encryption_key:
                raise SettingsError("IDP_KEY_ENCRYPTION_KEY must be set in production")
        if self.key_encryption_key:
            decode_kek(self.key_encryption_key)
        for name in ("access_token_ttl", "id_token_ttl", "refresh_token_ttl", "code_ttl",
                     "interaction_ttl", "session_ttl", "session_idle_ttl", "key_rotation_days",
                     "jwks_max_age", "key_prepublish_ttl", "key_refresh_ttl", "policy_refresh_ttl",
                     "lockout_threshold", "lockout_window_ttl", "lockout_ttl", "lockout_max_ttl",
                     "rate_limit_window_ttl", "backchannel_retry_ttl", "backchannel_max_attempts",
                     "mfa_pending_ttl"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"IDP_{name.upper()} must be a positive number")
        if self.verify_email_ttl <= 0 or self.reset_password_ttl <= 0:
            raise SettingsError("IDP_VERIFY_EMAIL_TTL and IDP_RESET_PASSWORD_TTL must be positive numbers")
        if not 8 <= self.password_min_length <= 64:
            raise SettingsError("IDP_PASSWORD_MIN_LENGTH must be 8..64 (NIST SP 800-63B)")
        if min(self.login_rate_limit, self.signup_rate_limit, self.reset_rate_limit, self.token_rate_limit) < 0:
            raise SettingsError("IDP_*_RATE_LIMIT must be >= 0 (0: no limit)")
        if self.lockout_max_ttl < self.lockout_ttl:
            raise SettingsError("IDP_LOCKOUT_MAX_TTL must be at least IDP_LOCKOUT_TTL")
        if self.mfa_pending_ttl > 3600:
            raise SettingsError("IDP_MFA_PENDING_TTL must be at most 3600 seconds")
        if self.trusted_browser_ttl < 0:
            raise SettingsError("IDP_TRUSTED_BROWSER_TTL must be >= 0 (0: browsers are never trusted)")
        if self.refresh_token_grace_ttl < 0 or self.trusted_proxy_hops < 0 or self.client_cache_ttl < 0:
            raise SettingsError("IDP_REFRESH_TOKEN_GRACE_TTL, IDP_TRUSTED_PROXY_HOPS and IDP_CLIENT_CACHE_TTL must be >= 0")
        # A new key must be in every cached JWKS before it signs anything.
        if self.key_prepublish_ttl <= self.jwks_max_age:
            raise SettingsError("IDP_KEY_PREPUBLISH_TTL must be longer than IDP_JWKS_MAX_AGE")
        # Policy claims are dropped to fit; below 1024 bytes even the base claims may not fit, and
        # verify_access_token refuses tokens longer than 8192 characters.
        if not 1024 <= self.id_token_max_bytes <= 65536 or not 1024 <= self.access_token_max_bytes <= 8192:
            raise SettingsError("IDP_ID_TOKEN_MAX_BYTES must be 1024..65536, IDP_ACCESS_TOKEN_MAX_BYTES 1024..8192")
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise SettingsError("REDIS_URL must start with redis://, rediss:// or unix://")
        if self.database_url and not self.database_url.startswith(("sqlite", "postgres")):
            raise SettingsError("DATABASE_URL must be a sqlite:// or postgresql:// URL")
        if self.argon2_time_cost < 1 or self.argon2_parallelism < 1 or \
                self.argon2_memory_kib < 8 * self.argon2_parallelism:
            raise SettingsError("IDP_ARGON2_*: time cost and parallelism >= 1, memory >= 8 KiB per lane")
        if self.smtp_url and not self.smtp_url.startswith(("smtp://", "smtp+starttls://", "smtps://")):
            raise SettingsError("IDP_SMTP_URL must start with smtp://, smtp+starttls:// or smtps://")
        if self.smtp_url or self.smtp_ca_file:
            _check_smtp(self.smtp_url, self.smtp_ca_file)
        if not 0 <= self.saml_clock_skew <= 900 or self.saml_metadata_refresh_ttl < 0:
            raise SettingsError("IDP_SAML_CLOCK_SKEW must be 0..900, IDP_SAML_METADATA_REFRESH_TTL >= 0")
        if self.log_format not in (None, "text", "json"):
            raise SettingsError("IDP_LOG_FORMAT must be text or json")
        return self

    def with_generated_secrets(self) -> Settings:
        """Fill SECRET_KEY and the key-encryption key from files, generating them once.

        Only outside production: there both must come from the environment (validate()).
        """
        changes = {}
        if not self.secret_key:
            changes["secret_key"] = _read_or_create_secret(Path(self.instance_path) / "secret_key")
        if not self.key_encryption_key:
            changes["key_encryption_key"] = _read_or_create_secret(Path(self.keys_path) / "kek")
        return self.replace(**changes) if changes else self


def decode_kek(value: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise SettingsError("IDP_KEY_ENCRYPTION_KEY must be 32 bytes, base64url-encoded")
    return raw


def new_secret() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


def _read_or_create_secret(path: Path) -> str:
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = new_secret()
    # O_EXCL: two workers starting together must not write two different secrets.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


def _check_smtp(url: str | None, ca_file: str | None) -> None:
    """IDP_SMTP_URL parses as scheme://[user:pass@]host[:port] (the message never echoes it:
    it may hold a password); IDP_SMTP_CA_FILE is a readable PEM bundle for a TLS relay."""
    import ssl

    if url:
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError when not a number
        except ValueError:
            parts = None
        if parts is None or not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
            raise SettingsError("IDP_SMTP_URL is malformed: scheme://user:pass@host:port, with @ : / ? # % "
                                "in the user or password percent-encoded (%40 %3A %2F %3F %23 %25)")
    if not ca_file:
        return
    if not (url or "").startswith(("smtp+starttls://", "smtps://")):
        raise SettingsError("IDP_SMTP_CA_FILE needs IDP_SMTP_URL with smtp+starttls:// or smtps://")
    try:
        ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(f"IDP_SMTP_CA_FILE {ca_file}: not a readable PEM certificate bundle ({exc})") from None
