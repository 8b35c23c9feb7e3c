"""`idp users export USER` prints one JSON document; `idp users delete` revokes everything."""

from __future__ import annotations

import json

from sqlalchemy import select

from idp.cli import cli
from idp.errors import NotFound
from idp.storage.models import RefreshToken, db
from tests.factories import exchange, get_code, make_client, make_user


def test_users_export_prints_the_users_data_as_json(app, client):
    with app.app_context():
        make_user("alice@example.com")
        client_id, secret = make_client()
    code, verifier, _ = get_code(client, client_id)
    exchange(client, client_id, secret, code, verifier)
    for args in (["users", "export", "ALICE@example.com"], ["users", "export", "alice@example.com", "--json"]):
        result = app.test_cli_runner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        data = json.loads(result.output)
        assert data["profile"]["email"] == "alice@example.com"
        assert [c["client_id"] for c in data["consents"]] == [client_id]
        assert len(data["sessions"]) == 1


def test_users_export_of_an_unknown_user_fails_and_prints_nothing(app):
    result = app.test_cli_runner().invoke(cli, ["users", "export", "nobody@example.com"])
    assert result.exit_code != 0 and isinstance(result.exception, NotFound)
    assert result.output == ""


def test_users_delete_revokes_sessions_and_tokens(app, client):
    with app.app_context():
        make_user("alice@example.com")
        client_id, secret = make_client()
    code, verifier, _ = get_code(client, client_id)
    tokens = exchange(client, client_id, secret, code, verifier).get_json()
    result = app.test_cli_runner().invoke(cli, ["users", "delete", "alice@example.com", "--json"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        assert db.session.scalar(select(db.func.count()).select_from(RefreshToken)) == 0
    introspected = client.post("/introspect", data={"token": tokens["access_token"]}, auth=(client_id, secret))
    assert introspected.get_json() == {"active": False}
