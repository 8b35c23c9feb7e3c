"""The per-process client cache keeps the token path off the database, and never serves a
rotated secret or a deleted client from the process that made the change."""

from __future__ import annotations

from idp.services.clients import client_cache, delete_client, rotate_secret
from tests.factories import make_client


def token(client, cid, secret):
    return client.post("/token", data={"grant_type": "client_credentials", "scope": "api:read"}, auth=(cid, secret))


def test_rotated_secret_is_not_served_from_the_cache(ctx, client):
    cid, old = make_client()
    assert token(client, cid, old).status_code == 200  # now cached
    new = rotate_secret(cid)
    refused = token(client, cid, old)
    assert refused.status_code == 401 and refused.get_json()["error"] == "invalid_client"
    assert token(client, cid, new).status_code == 200


def test_deleted_client_is_not_served_from_the_cache(ctx, client):
    cid, secret = make_client()
    assert token(client, cid, secret).status_code == 200
    delete_client(cid)
    refused = token(client, cid, secret)
    assert refused.status_code == 401 and refused.get_json()["error"] == "invalid_client"


def test_cache_expires_and_can_be_switched_off(ctx, client):
    cid, secret = make_client()
    settings = ctx.extensions["idp"].settings
    key = (settings.sqlalchemy_url, cid)
    assert token(client, cid, secret).status_code == 200
    assert client_cache.get(key) is not None
    client_cache.put(key, client_cache.get(key), 0)  # a TTL of 0 stores nothing ...
    client_cache.forget(cid)
    assert client_cache.get(key) is None
    client_cache.put(key, object(), 0)
    assert client_cache.get(key) is None  # ... and a cleared entry is looked up again
    assert token(client, cid, secret).status_code == 200
