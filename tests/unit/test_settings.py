"""Settings: the environment and .env parsing, startup validation, generated secrets."""

from __future__ import annotations

import os
import stat

import pytest

from idp.settings import Settings, SettingsError, new_secret

KEK = new_secret()  # 32 random bytes, base64url: a valid key-encryption key


def prod(**changes) -> Settings:
    """A production configuration that passes validate(); tests break one thing at a time."""
    values = {"env": "production", "issuer": "https://idp.example.com", "secret_key": "s" * 40,
              "key_encryption_key": KEK}
    values.update(changes)
    return Settings(**values)


def assert_one_line(exc: pytest.ExceptionInfo, *words: str) -> None:
    message = str(exc.value)
    assert message and "\n" not in message, message
    for word in words:
        assert word in message, message


# --- from_env -----------------------------------------------------------------------------------

def test_from_env_reads_variables_and_converts_types(tmp_path):
    s = Settings.from_env({"IDP_ISSUER": "https://id.example.org", "IDP_ACCESS_TOKEN_TTL": " 120 ",
                           "IDP_REQUIRE_PKCE": "yes", "IDP_SMTP_URL": "smtp+starttls://u:p@mail:587", "REDIS_URL": "redis://r:1/2",
                           "IDP_TRUSTED_PROXY_HOPS": "1"},
                          dotenv=tmp_path / "missing.env")
    assert s.issuer == "https://id.example.org"
    assert s.access_token_ttl == 120
    assert s.require_pkce is True
    assert s.smtp_url == "smtp+starttls://u:p@mail:587"
    assert s.redis_url == "redis://r:1/2"
    assert s.trusted_proxy_hops == 1
    # Unset and empty variables keep the defaults.
    assert s.id_token_ttl == Settings().id_token_ttl
    assert Settings.from_env({"IDP_CODE_TTL": ""}, dotenv=None).code_ttl == Settings().code_ttl


def test_from_env_reads_dotenv_file_and_environment_overrides_it(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "# a comment\n"
        "\n"
        "export IDP_ISSUER=https://from-dotenv.example.com\n"
        "IDP_CODE_TTL='45'\n"
        'SECRET_KEY="dotenv secret"\n'
        "IDP_LOG_FORMAT=json\n"
        "not a setting line\n"
    )
    s = Settings.from_env({"IDP_LOG_FORMAT": "text"}, dotenv=dotenv)
    assert s.issuer == "https://from-dotenv.example.com"
    assert s.code_ttl == 45
    assert s.secret_key == "dotenv secret"
    assert s.log_format == "text"  # the real environment wins over .env

    s = Settings.from_env({"IDP_CODE_TTL": "30", "SECRET_KEY": "env secret"}, dotenv=dotenv)
    assert (s.code_ttl, s.secret_key) == (30, "env secret")


def test_from_env_ignores_dotenv_when_disabled(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("IDP_CODE_TTL=45\n")
    assert Settings.from_env({}, dotenv=None).code_ttl == Settings().code_ttl


@pytest.mark.parametrize("var, raw", [("IDP_ACCESS_TOKEN_TTL", "15m"), ("IDP_CODE_TTL", "2.5"),
                                      ("IDP_TRUSTED_PROXY_HOPS", "one")])
def test_from_env_bad_integer_is_one_line_settings_error(var, raw):
    with pytest.raises(SettingsError) as exc:
        Settings.from_env({var: raw}, dotenv=None)
    assert_one_line(exc, var, repr(raw))


@pytest.mark.parametrize("var, raw", [("IDP_REQUIRE_PKCE", "maybe"), ("IDP_REQUIRE_PKCE", "2")])
def test_from_env_bad_boolean_is_one_line_settings_error(var, raw):
    with pytest.raises(SettingsError) as exc:
        Settings.from_env({var: raw}, dotenv=None)
    assert_one_line(exc, var)


def test_from_env_bad_value_in_dotenv_is_reported_too(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("IDP_CODE_TTL=soon\n")
    with pytest.raises(SettingsError) as exc:
        Settings.from_env({}, dotenv=dotenv)
    assert_one_line(exc, "IDP_CODE_TTL")


# --- validate -----------------------------------------------------------------------------------

def test_valid_production_settings_pass():
    assert prod().validate().production


def test_defaults_are_valid_for_development():
    s = Settings().validate()
    assert not s.production and s.embedded and s.effective_log_format == "text"
    assert prod().effective_log_format == "json"


@pytest.mark.parametrize("issuer", ["http://idp.example.com", "http://10.0.0.1:5000", "http://0.0.0.0:5000"])
def test_production_refuses_http_issuer_off_loopback(issuer):
    with pytest.raises(SettingsError) as exc:
        prod(issuer=issuer).validate()
    assert_one_line(exc, "IDP_ISSUER", "https")


@pytest.mark.parametrize("issuer", ["http://127.0.0.1:5000", "http://localhost:8000", "http://[::1]:5000"])
def test_production_allows_http_issuer_on_loopback(issuer):
    assert prod(issuer=issuer).validate().issuer == issuer


@pytest.mark.parametrize("secret_key", [None, ""])
def test_production_requires_secret_key(secret_key):
    with pytest.raises(SettingsError) as exc:
        prod(secret_key=secret_key).validate()
    assert_one_line(exc, "SECRET_KEY")


@pytest.mark.parametrize("kek", [None, ""])
def test_production_requires_key_encryption_key(kek):
    with pytest.raises(SettingsError) as exc:
        prod(key_encryption_key=kek).validate()
    assert_one_line(exc, "IDP_KEY_ENCRYPTION_KEY")


def test_development_does_not_require_secrets():
    Settings(env="development", secret_key=None, key_encryption_key=None).validate()


@pytest.mark.parametrize("kek", [new_secret()[:20], new_secret() + new_secret(), "!!not base64!!"])
def test_key_encryption_key_must_be_32_bytes(kek):
    with pytest.raises(SettingsError) as exc:
        Settings(key_encryption_key=kek).validate()
    assert_one_line(exc, "IDP_KEY_ENCRYPTION_KEY", "32 bytes")


@pytest.mark.parametrize("prepublish", [300, 299, 1])
def test_key_prepublish_must_exceed_jwks_max_age(prepublish):
    with pytest.raises(SettingsError) as exc:
        Settings(jwks_max_age=300, key_prepublish_ttl=prepublish).validate()
    assert_one_line(exc, "IDP_KEY_PREPUBLISH_TTL", "IDP_JWKS_MAX_AGE")
    Settings(jwks_max_age=300, key_prepublish_ttl=301).validate()


@pytest.mark.parametrize("changes, word", [
    ({"env": "staging"}, "IDP_ENV"),
    ({"issuer": "https://idp.example.com/"}, "IDP_ISSUER"),
    ({"issuer": "https://idp.example.com?x=1"}, "IDP_ISSUER"),
    ({"issuer": "idp.example.com"}, "IDP_ISSUER"),
    ({"access_token_ttl": 0}, "IDP_ACCESS_TOKEN_TTL"),
    ({"redis_url": "http://127.0.0.1:6379"}, "REDIS_URL"),
    ({"database_url": "mysql://x"}, "DATABASE_URL"),
    ({"log_format": "xml"}, "IDP_LOG_FORMAT"),
])
def test_other_invalid_settings_are_one_line_errors(changes, word):
    with pytest.raises(SettingsError) as exc:
        Settings(**changes).validate()
    assert_one_line(exc, word)


# --- database URL -------------------------------------------------------------------------------

@pytest.mark.parametrize("url", ["postgres://u:p@db:5432/idp", "postgresql://u:p@db:5432/idp"])
def test_postgres_urls_are_rewritten_for_psycopg3(url):
    assert Settings(database_url=url).sqlalchemy_url == "postgresql+psycopg://u:p@db:5432/idp"


def test_explicit_driver_and_sqlite_urls_are_kept():
    url = "postgresql+psycopg://u:p@db/idp"
    assert Settings(database_url=url).sqlalchemy_url == url
    assert Settings(database_url="sqlite:////tmp/x.db").sqlalchemy_url == "sqlite:////tmp/x.db"


def test_embedded_mode_uses_sqlite_in_instance_folder(tmp_path):
    s = Settings(instance_path=str(tmp_path / "inst"))
    assert s.embedded
    assert s.sqlalchemy_url == f"sqlite:///{tmp_path / 'inst' / 'idp.db'}"


# --- generated secrets --------------------------------------------------------------------------

def test_generated_secrets_are_created_once_with_mode_0600(tmp_path):
    s = Settings(instance_path=str(tmp_path / "instance"), keys_path=str(tmp_path / "keys"))
    first = s.with_generated_secrets()
    secret_file, kek_file = tmp_path / "instance" / "secret_key", tmp_path / "keys" / "kek"
    for path in (secret_file, kek_file):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    assert first.secret_key and first.key_encryption_key
    assert secret_file.read_text().strip() == first.secret_key
    assert kek_file.read_text().strip() == first.key_encryption_key
    first.validate()  # the generated KEK has the right length
    assert first.secret_key != first.key_encryption_key

    mtimes = (secret_file.stat().st_mtime_ns, kek_file.stat().st_mtime_ns)
    second = s.with_generated_secrets()
    assert (second.secret_key, second.key_encryption_key) == (first.secret_key, first.key_encryption_key)
    assert (secret_file.stat().st_mtime_ns, kek_file.stat().st_mtime_ns) == mtimes


def test_generated_secrets_differ_between_instances(tmp_path):
    a = Settings(instance_path=str(tmp_path / "a"), keys_path=str(tmp_path / "ka")).with_generated_secrets()
    b = Settings(instance_path=str(tmp_path / "b"), keys_path=str(tmp_path / "kb")).with_generated_secrets()
    assert a.secret_key != b.secret_key
    assert a.key_encryption_key != b.key_encryption_key


def test_configured_secrets_are_not_replaced_or_written(tmp_path):
    s = Settings(instance_path=str(tmp_path / "instance"), keys_path=str(tmp_path / "keys"),
                 secret_key="configured", key_encryption_key=KEK)
    assert s.with_generated_secrets() == s
    assert not (tmp_path / "instance" / "secret_key").exists()
    assert not (tmp_path / "keys" / "kek").exists()
