"""The real `idp` console script, driven by subprocess as an operator's script would.

Embedded mode (no DATABASE_URL): SQLite in a temporary instance folder, created by
`idp db upgrade`. The shapes checked here are an interface for automation: `--json` prints one
JSON document; a bad command prints one line on stderr, exits non-zero and writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

import pytest

from idp.services.users import password_context
from tests.conftest import ROOT

IDP = ROOT / ".venv" / "bin" / "idp"
PASSWORD = "correct horse battery"


class Cli:
    def __init__(self, home: Path):
        self.home = home
        self.instance = home / "instance"
        self.db_file = self.instance / "idp.db"
        # Nothing from the developer's or CI's environment may leak in (nor a .env: cwd is home).
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("IDP_", "DATABASE_URL", "REDIS_URL", "SECRET_KEY", "FLASK_"))}
        self.env.update(IDP_INSTANCE_PATH=str(self.instance), IDP_KEYS_PATH=str(home / "keys"))

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([str(IDP), *args], env={**self.env, **(env or {})}, cwd=self.home,
                              capture_output=True, text=True, timeout=120)

    def json(self, *args: str):
        """Run a command that must succeed with --json; return the one JSON document it prints."""
        result = self.run(*args, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)  # fails on anything but exactly one JSON document

    # Closed at once (`with sqlite3.connect()` alone commits but does not close): no handle of
    # ours stays open on a file the CLI subprocesses write.
    def query(self, sql: str, *params) -> list[tuple]:
        with closing(sqlite3.connect(self.db_file)) as conn:
            return conn.execute(sql, params).fetchall()

    def snapshot(self) -> dict[str, list]:
        """Every row of every table: compared before and after a command that must write nothing."""
        with closing(sqlite3.connect(self.db_file)) as conn:
            tables = [r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
            return {t: sorted(map(repr, conn.execute(f'SELECT * FROM "{t}"'))) for t in tables}

    def stored_bytes(self) -> bytes:
        """The database as it sits on disk: the main file plus WAL and shared-memory files."""
        return b"".join(p.read_bytes() for p in sorted(self.instance.glob("idp.db*")))


def new_cli(home: Path) -> Cli:
    cli = Cli(home)
    result = cli.run("db", "upgrade")
    assert result.returncode == 0, result.stderr
    assert cli.db_file.is_file()
    return cli


@pytest.fixture(scope="module")
def cli(tmp_path_factory) -> Cli:
    return new_cli(tmp_path_factory.mktemp("cli"))


def create_client(cli: Cli, name: str, *extra: str) -> dict:
    return cli.json("clients", "create", "--name", name, "--redirect-uri", "http://127.0.0.1:8080/callback",
                    *extra)


# --- clients ------------------------------------------------------------------------------------

def test_clients_create_confidential_prints_json_with_secret_stored_only_as_sha256(cli):
    result = cli.run("clients", "create", "--name", "Web app",
                     "--redirect-uri", "https://app.example.com/cb", "--redirect-uri", "http://localhost:8080/cb",
                     "--grant-type", "authorization_code", "--grant-type", "refresh_token",
                     "--scope", "openid profile email offline_access",
                     "--post-logout-redirect-uri", "https://app.example.com/bye",
                     "--token-endpoint-auth-method", "client_secret_post", "--skip-consent", "--json")
    assert result.returncode == 0, result.stderr
    assert result.stdout.lstrip().startswith("{")
    data = json.loads(result.stdout)
    client_id, secret = data["client_id"], data["client_secret"]
    assert client_id and len(secret) >= 32
    assert data["client_name"] == "Web app"
    assert data["redirect_uris"] == ["https://app.example.com/cb", "http://localhost:8080/cb"]
    assert data["grant_types"] == ["authorization_code", "refresh_token"]
    assert data["scope"] == "openid profile email offline_access"
    assert data["post_logout_redirect_uris"] == ["https://app.example.com/bye"]
    assert data["token_endpoint_auth_method"] == "client_secret_post"
    assert data["skip_consent"] is True

    [(stored_hash,)] = cli.query("SELECT client_secret_hash FROM clients WHERE client_id = ?", client_id)
    assert stored_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret.encode() not in cli.stored_bytes()
    assert stored_hash.encode() in cli.stored_bytes()  # the search above reads the real data

    # Shown once: neither the secret nor its hash comes back from show or list.
    shown = cli.run("clients", "show", client_id, "--json").stdout + cli.run("clients", "list", "--json").stdout
    assert client_id in shown
    assert secret not in shown and stored_hash not in shown


def test_clients_create_public_prints_no_secret_and_stores_none(cli):
    data = create_client(cli, "SPA", "--public", "--scope", "openid profile")
    assert "client_secret" not in data
    assert data["token_endpoint_auth_method"] == "none"
    assert data["require_pkce"] is True
    assert cli.query("SELECT client_secret_hash FROM clients WHERE client_id = ?", data["client_id"]) == [(None,)]


def test_clients_create_without_json_prints_id_and_secret_once(cli):
    result = cli.run("clients", "create", "--name", "Service", "--grant-type", "client_credentials")
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    [(stored_hash,)] = cli.query("SELECT client_secret_hash FROM clients WHERE client_id = ?", lines["client_id"])
    assert stored_hash == hashlib.sha256(lines["client_secret"].encode()).hexdigest()


def test_clients_list_show_rotate_secret_and_delete(cli):
    first = create_client(cli, "First")
    second = create_client(cli, "Second", "--grant-type", "authorization_code", "--grant-type", "refresh_token")

    listed = cli.json("clients", "list")
    assert isinstance(listed, list)
    by_id = {c["client_id"]: c for c in listed}
    assert by_id[first["client_id"]]["client_name"] == "First"
    assert by_id[second["client_id"]]["grant_types"] == ["authorization_code", "refresh_token"]
    assert all("client_secret" not in c for c in listed)

    shown = cli.json("clients", "show", second["client_id"])
    expected = {k: v for k, v in second.items() if k != "client_secret"}
    sizes = shown.pop("worst_case_token_size")
    assert shown == expected
    # The token budget report (issue 6): byte sizes of the largest tokens this client can get.
    assert set(sizes) >= {"id_token", "access_token"}, sizes

    rotated = cli.json("clients", "rotate-secret", second["client_id"])
    assert rotated["client_id"] == second["client_id"]
    assert rotated["client_secret"] != second["client_secret"]
    [(stored_hash,)] = cli.query("SELECT client_secret_hash FROM clients WHERE client_id = ?", second["client_id"])
    assert stored_hash == hashlib.sha256(rotated["client_secret"].encode()).hexdigest()
    assert cli.query("SELECT secret_rotated_at IS NOT NULL FROM clients WHERE client_id = ?",
                     second["client_id"]) == [(1,)]
    # The first client's secret is untouched.
    [(first_hash,)] = cli.query("SELECT client_secret_hash FROM clients WHERE client_id = ?", first["client_id"])
    assert first_hash == hashlib.sha256(first["client_secret"].encode()).hexdigest()

    assert cli.json("clients", "delete", second["client_id"]) == {"client_id": second["client_id"], "deleted": True}
    assert cli.query("SELECT count(*) FROM clients WHERE client_id = ?", second["client_id"]) == [(0,)]
    assert cli.query("SELECT count(*) FROM clients WHERE client_id = ?", first["client_id"]) == [(1,)]


# --- users --------------------------------------------------------------------------------------

def test_users_create_prints_id_and_email_and_stores_argon2_hash(cli):
    data = cli.json("users", "create", "--email", "Alice@Example.COM", "--password", PASSWORD, "--verified",
                    "--name", "Alice Liddell", "--role", "admin", "--role", "ops")
    assert data["id"] and data["email"] == "alice@example.com"
    assert data["email_verified"] is True
    assert data["name"] == "Alice Liddell"
    assert data["roles"] == ["admin", "ops"]
    assert data["disabled"] is False

    [(email, stored_hash)] = cli.query("SELECT email, password_hash FROM users WHERE id = ?", data["id"])
    assert email == "alice@example.com"
    assert stored_hash.startswith("$argon2id$")
    assert password_context().verify(PASSWORD, stored_hash)
    assert PASSWORD.encode() not in cli.stored_bytes()

    plain = cli.json("users", "create", "--email", "bob@example.com", "--password", PASSWORD)
    assert plain["email_verified"] is False and plain["roles"] == [] and plain["name"] is None


def test_users_list_show_disable_set_password_and_delete(cli):
    user = cli.json("users", "create", "--email", "carol@example.com", "--password", PASSWORD)
    other = cli.json("users", "create", "--email", "dave@example.com", "--password", PASSWORD)

    listed = {u["email"]: u for u in cli.json("users", "list")}
    assert listed["carol@example.com"]["id"] == user["id"]
    assert "dave@example.com" in listed
    assert all("password" not in key for u in listed.values() for key in u)

    assert cli.json("users", "show", "Carol@example.com") == user  # by email, case-insensitive
    assert cli.json("users", "show", user["id"]) == user  # by id

    disabled = cli.json("users", "disable", user["id"])
    assert disabled["disabled"] is True
    assert cli.query("SELECT disabled_at IS NOT NULL FROM users WHERE id = ?", user["id"]) == [(1,)]
    assert cli.query("SELECT disabled_at IS NOT NULL FROM users WHERE id = ?", other["id"]) == [(0,)]

    [(old_hash,)] = cli.query("SELECT password_hash FROM users WHERE id = ?", user["id"])
    new_password = "a different passphrase"
    result = cli.json("users", "set-password", "carol@example.com", "--password", new_password)
    assert result == {"id": user["id"], "email": "carol@example.com", "password_set": True}
    [(new_hash,)] = cli.query("SELECT password_hash FROM users WHERE id = ?", user["id"])
    assert new_hash != old_hash
    assert password_context().verify(new_password, new_hash)
    assert not password_context().verify(PASSWORD, new_hash)

    assert cli.json("users", "delete", user["id"]) == {"id": user["id"], "email": "carol@example.com",
                                                       "deleted": True}
    assert cli.query("SELECT count(*) FROM users WHERE email = 'carol@example.com'") == [(0,)]
    assert cli.query("SELECT count(*) FROM users WHERE id = ?", other["id"]) == [(1,)]


# --- keys ---------------------------------------------------------------------------------------

def test_keys_rotate_creates_current_then_next_key_and_list_shows_them(cli):
    # The only test in this module that makes keys: the database has none yet.
    assert cli.json("keys", "list") == []

    first = cli.json("keys", "rotate")
    assert first["alg"] == "RS256" and first["state"] == "current" and first["kid"]
    second = cli.json("keys", "rotate")
    assert second["state"] == "next" and second["kid"] != first["kid"]

    listed = cli.json("keys", "list")
    assert [(k["kid"], k["state"]) for k in listed] == [(first["kid"], "current"), (second["kid"], "next")]
    assert all(set(k) == set(first) for k in listed)  # metadata only: no key material

    # Private keys are stored encrypted with the KEK, never as PEM.
    assert cli.query("SELECT count(*) FROM signing_keys") == [(2,)]
    assert b"PRIVATE KEY" not in cli.stored_bytes()


# --- bad arguments ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def seeded(cli) -> dict[str, str]:
    """Rows the failing commands below could touch by mistake."""
    confidential = create_client(cli, "Seed confidential")
    public = create_client(cli, "Seed public", "--public")
    user = cli.json("users", "create", "--email", "seed@example.com", "--password", PASSWORD, "--role", "seed")
    return {"client": confidential["client_id"], "public_client": public["client_id"], "user": user["id"],
            "email": user["email"]}


REDIRECT = ["--redirect-uri", "http://127.0.0.1:8080/cb"]

BAD_COMMANDS = {
    "unknown_grant_type": (["clients", "create", "--name", "x", *REDIRECT, "--grant-type", "implicit"],
                           "implicit"),
    "http_redirect_uri_off_loopback": (["clients", "create", "--name", "x", "--redirect-uri",
                                        "http://app.example.com/cb"], "https"),
    "missing_name": (["clients", "create", *REDIRECT], "--name"),
    "public_client_credentials": (["clients", "create", "--name", "x", "--public", "--grant-type",
                                   "client_credentials"], "client_credentials"),
    "duplicate_client_id": (["clients", "create", "--name", "x", *REDIRECT, "--client-id", "{client}"],
                            "exists"),
    "show_unknown_client": (["clients", "show", "no-such-client"], "no-such-client"),
    "rotate_secret_public_client": (["clients", "rotate-secret", "{public_client}"], "secret"),
    "duplicate_email": (["users", "create", "--email", "SEED@example.com", "--password", PASSWORD, "--role",
                         "new-role"], "exists"),
    "too_short_password": (["users", "create", "--email", "new@example.com", "--password", "short"], "8"),
    "empty_role": (["users", "create", "--email", "new@example.com", "--password", PASSWORD, "--role", "ok",
                    "--role", " "], "role"),
    "set_too_short_password": (["users", "set-password", "{user}", "--password", "short"], "8"),
    "show_unknown_user": (["users", "show", "nobody@example.com"], "nobody@example.com"),
    "delete_unknown_user": (["users", "delete", "no-such-id"], "no-such-id"),
    "unknown_command": (["frobnicate"], "frobnicate"),
}


@pytest.mark.parametrize("case", list(BAD_COMMANDS))
def test_bad_command_prints_one_line_exits_nonzero_and_writes_nothing(cli, seeded, case):
    args, expected = BAD_COMMANDS[case]
    args = [a.format(**seeded) for a in args] + ["--json"]
    before = cli.snapshot()
    result = cli.run(*args)
    assert result.returncode != 0
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert expected.lower() in result.stderr.lower(), result.stderr
    assert result.stdout == ""
    assert cli.snapshot() == before


def test_snapshot_sees_a_write(cli, seeded):
    """Guard for the test above: a successful command does change the snapshot."""
    before = cli.snapshot()
    assert cli.run("users", "disable", seeded["email"]).returncode == 0
    assert cli.snapshot() != before


# --- production settings ------------------------------------------------------------------------

PRODUCTION_CASES = {
    "http_issuer": ({"IDP_ISSUER": "http://example.com"}, "IDP_ISSUER"),
    "missing_secret_key": ({"SECRET_KEY": ""}, "SECRET_KEY"),
}


@pytest.mark.parametrize("case", list(PRODUCTION_CASES))
def test_production_refuses_unsafe_settings_with_one_line(cli, case):
    changes, expected = PRODUCTION_CASES[case]
    env = {"IDP_ENV": "production", "IDP_ISSUER": "https://idp.example.com", "SECRET_KEY": "x" * 40,
           "IDP_KEY_ENCRYPTION_KEY": "A" * 43, **changes}
    before = cli.snapshot()
    result = cli.run("clients", "create", "--name", "x", *REDIRECT, "--json", env=env)
    assert result.returncode != 0
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert expected in result.stderr
    assert result.stdout == ""
    assert cli.snapshot() == before


def test_production_with_valid_settings_runs(cli):
    """Guard for the test above: the same production environment, made safe, works."""
    env = {"IDP_ENV": "production", "IDP_ISSUER": "https://idp.example.com", "SECRET_KEY": "x" * 40,
           "IDP_KEY_ENCRYPTION_KEY": "A" * 43}
    result = cli.run("clients", "list", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert isinstance(json.loads(result.stdout), list)


def test_command_before_db_upgrade_is_one_line_error(tmp_path):
    cli = Cli(tmp_path)
    result = cli.run("clients", "list", "--json")
    assert result.returncode != 0
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "idp db upgrade" in result.stderr
    assert result.stdout == ""
