"""Refresh tokens (RFC 6749 §6, RFC 9700 §4.14.2): rotation on every use, reuse detection that
revokes the whole family, the optional grace window, scope narrowing, absolute lifetime, and
storage as hashes only."""

from __future__ import annotations

import hashlib
import time
from contextlib import contextmanager

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import select

from idp import create_app
from idp.storage.models import RefreshToken, db
from tests.factories import exchange, get_code, make_client, make_user


def assert_error(response, status: int, error: str) -> dict:
    body = response.get_json()
    assert response.status_code == status, (response.status_code, body)
    assert body["error"] == error, body
    assert set(body) <= {"error", "error_description", "error_uri"}, body
    assert response.headers["Cache-Control"] == "no-store"
    return body


def ok(response) -> dict:
    body = response.get_json()
    assert response.status_code == 200, body
    assert response.headers["Cache-Control"] == "no-store"
    return body


def refresh(test_client, cid, secret, refresh_token, **extra):
    return test_client.post("/token", data={"grant_type": "refresh_token", "refresh_token": refresh_token, **extra},
                            auth=(cid, secret))


def active(test_client, cid, secret, token) -> bool:
    response = test_client.post("/introspect", data={"token": token}, auth=(cid, secret))
    assert response.status_code == 200
    return response.get_json()["active"]


def id_claims(test_client, id_token) -> dict:
    keys = KeySet.import_key_set(test_client.get("/jwks.json").get_json())
    return jwt.decode(id_token, keys, algorithms=["RS256"]).claims


def login(test_client, scope="openid profile email offline_access"):
    cid, secret = make_client()
    make_user()
    code, verifier, _ = get_code(test_client, cid, scope=scope)
    return cid, secret, ok(exchange(test_client, cid, secret, code, verifier))


@contextmanager
def other_app(settings, **changes):
    app = create_app(settings.replace(**changes))
    try:
        yield app.test_client()
    finally:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


def test_rotation_and_reuse_revokes_the_family(ctx, client):
    cid, secret, first = login(client)
    second = ok(refresh(client, cid, secret, first["refresh_token"]))
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    third = ok(refresh(client, cid, secret, second["refresh_token"]))
    assert len({first["refresh_token"], second["refresh_token"], third["refresh_token"]}) == 3
    assert active(client, cid, secret, third["access_token"])
    assert active(client, cid, secret, third["refresh_token"])
    # A rotated refresh token is no longer active at introspection.
    assert not active(client, cid, secret, second["refresh_token"])

    # The first token, used again: someone else has it.
    assert_error(refresh(client, cid, secret, first["refresh_token"]), 400, "invalid_grant")
    # The whole family is gone, the newest tokens too.
    assert_error(refresh(client, cid, secret, third["refresh_token"]), 400, "invalid_grant")
    assert not active(client, cid, secret, third["access_token"])
    assert not active(client, cid, secret, third["refresh_token"])
    assert not active(client, cid, secret, second["access_token"])
    userinfo = client.get("/userinfo", headers={"Authorization": "Bearer " + third["access_token"]})
    assert userinfo.status_code == 401


def test_refresh_token_is_bound_to_its_client(ctx, client):
    cid, secret, first = login(client)
    other, other_secret = make_client()
    assert_error(refresh(client, other, other_secret, first["refresh_token"]), 400, "invalid_grant")
    # The owner can still use it: a stolen-token attempt by another client is not a "use".
    ok(refresh(client, cid, secret, first["refresh_token"]))


def test_unknown_refresh_token(ctx, client):
    cid, secret = make_client()
    assert_error(refresh(client, cid, secret, "not-a-token"), 400, "invalid_grant")
    response = client.post("/token", data={"grant_type": "refresh_token"}, auth=(cid, secret))
    assert_error(response, 400, "invalid_request")


def test_scope_narrowing_allowed_widening_refused(ctx, client):
    cid, secret, first = login(client, scope="openid email offline_access")
    narrow = ok(refresh(client, cid, secret, first["refresh_token"], scope="openid"))
    assert narrow["scope"] == "openid"
    assert "email" not in id_claims(client, narrow["id_token"])
    access = jwt.decode(narrow["access_token"], KeySet.import_key_set(client.get("/jwks.json").get_json()))
    assert access.claims["scope"] == "openid"
    # RFC 6749 §6: the new refresh token keeps the original grant: the full scope comes back.
    full = ok(refresh(client, cid, secret, narrow["refresh_token"]))
    assert full["scope"] == "openid email offline_access"
    # Widening, even to a scope the client is registered for, is refused.
    body = assert_error(refresh(client, cid, secret, full["refresh_token"], scope="openid email profile"),
                        400, "invalid_scope")
    assert body["error"] == "invalid_scope"
    # The refused request did not consume the token.
    ok(refresh(client, cid, secret, full["refresh_token"]))


def test_refreshed_id_token_keeps_the_authentication(ctx, client, settings):
    cid, secret, first = login(client)
    original = id_claims(client, first["id_token"])
    time.sleep(1.05)  # so that a fresh iat is visible
    second = ok(refresh(client, cid, secret, first["refresh_token"]))
    refreshed = id_claims(client, second["id_token"])
    for name in ("iss", "sub", "aud", "azp", "auth_time", "sid", "acr", "amr", "email"):
        assert refreshed[name] == original[name], name
    assert refreshed["iat"] > original["iat"]
    assert refreshed["exp"] == refreshed["iat"] + settings.id_token_ttl
    assert "nonce" not in refreshed  # OIDC Core §12.2: SHOULD NOT carry the original nonce


def test_grace_window_returns_the_same_successor(ctx, settings):
    with other_app(settings, refresh_token_grace_ttl=10) as test_client:
        cid, secret, first = login(test_client)
        second = ok(refresh(test_client, cid, secret, first["refresh_token"]))
        replay = ok(refresh(test_client, cid, secret, first["refresh_token"]))
        assert replay == second
        # The family is intact: the successor still works and rotates normally.
        assert active(test_client, cid, secret, second["access_token"])
        third = ok(refresh(test_client, cid, secret, second["refresh_token"]))
        assert third["refresh_token"] != second["refresh_token"]


@pytest.mark.timeout(30)
def test_replay_after_the_grace_window_revokes(ctx, settings):
    with other_app(settings, refresh_token_grace_ttl=1) as test_client:
        cid, secret, first = login(test_client)
        second = ok(refresh(test_client, cid, secret, first["refresh_token"]))
        time.sleep(1.5)
        assert_error(refresh(test_client, cid, secret, first["refresh_token"]), 400, "invalid_grant")
        assert_error(refresh(test_client, cid, secret, second["refresh_token"]), 400, "invalid_grant")
        assert not active(test_client, cid, secret, second["access_token"])


def test_without_grace_window_a_replay_revokes(ctx, client, settings):
    assert settings.refresh_token_grace_ttl == 0
    cid, secret, first = login(client)
    second = ok(refresh(client, cid, secret, first["refresh_token"]))
    assert_error(refresh(client, cid, secret, first["refresh_token"]), 400, "invalid_grant")
    assert_error(refresh(client, cid, secret, second["refresh_token"]), 400, "invalid_grant")


@pytest.mark.timeout(30)
def test_absolute_lifetime_is_not_extended_by_rotation(ctx, settings):
    with other_app(settings, refresh_token_ttl=3) as test_client:
        cid, secret, first = login(test_client)
        started = time.monotonic()  # just after the family's clock started
        time.sleep(1.0)
        second = ok(refresh(test_client, cid, secret, first["refresh_token"]))
        time.sleep(max(0.0, 3.3 - (time.monotonic() - started)))
        assert_error(refresh(test_client, cid, secret, second["refresh_token"]), 400, "invalid_grant")
        assert not active(test_client, cid, secret, second["refresh_token"])


def test_refresh_tokens_are_stored_only_as_sha256(ctx, client):
    cid, secret, first = login(client)
    second = ok(refresh(client, cid, secret, first["refresh_token"]))
    db.session.remove()
    rows = db.session.execute(select(RefreshToken.__table__)).all()
    assert len(rows) == 2
    plaintexts = [first["refresh_token"], second["refresh_token"]]
    assert {row.token_hash for row in rows} == {hashlib.sha256(t.encode()).hexdigest() for t in plaintexts}
    for row in rows:
        dump = repr(tuple(row))
        for plaintext in plaintexts:
            assert plaintext not in dump
