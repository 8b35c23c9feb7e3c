"""`idp clients create --require-mfa`, `idp clients update --[no-]require-mfa`, `clients show`:
the real console script (subprocess), embedded mode."""

from __future__ import annotations

from tests.cli.test_cli import create_client, new_cli


def test_require_mfa_is_stored_shown_and_updated(tmp_path):
    cli = new_cli(tmp_path)
    plain = create_client(cli, "Plain")
    assert plain["require_mfa"] is False
    strict = create_client(cli, "Strict", "--require-mfa")
    assert strict["require_mfa"] is True
    assert cli.json("clients", "show", strict["client_id"])["require_mfa"] is True
    assert cli.query("SELECT require_mfa FROM clients WHERE client_id = ?", strict["client_id"]) == [(1,)]

    assert cli.json("clients", "update", plain["client_id"], "--require-mfa")["require_mfa"] is True
    assert cli.json("clients", "update", plain["client_id"], "--no-require-mfa")["require_mfa"] is False
    text = cli.run("clients", "update", strict["client_id"])
    assert text.returncode == 0 and "require_mfa=yes" in text.stdout

    before = cli.snapshot()
    missing = cli.run("clients", "update", "no-such-client", "--require-mfa")
    assert missing.returncode != 0 and len(missing.stderr.strip().splitlines()) == 1
    assert cli.snapshot() == before
