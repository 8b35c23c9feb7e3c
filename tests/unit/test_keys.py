"""Signing-key life cycle (services.keys): next -> current -> retired -> removed, encryption at
rest, and a KeyRing that picks up a rotation without a restart.

The tests share the session's signing_keys table (kept between tests because keys are slow
to make), so each one restores the table as it found it."""

from __future__ import annotations

import os
import time
from datetime import timedelta

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import select

from idp.services import keys
from idp.settings import decode_kek
from idp.storage.models import SigningKey, db, utcnow


@pytest.fixture()
def kr(ctx):
    """(kek, policy, app keyring) with the signing_keys table restored afterwards."""
    table = SigningKey.__table__
    with db.engine.begin() as conn:
        saved = [dict(row._mapping) for row in conn.execute(table.select())]
    idp = ctx.extensions["idp"]
    yield decode_kek(idp.settings.key_encryption_key), idp.keyring.policy, idp.keyring
    db.session.remove()
    with db.engine.begin() as conn:
        conn.execute(table.delete())
        if saved:
            conn.execute(table.insert(), saved)
    idp.keyring.invalidate()


def states() -> dict[str, str]:
    db.session.expire_all()
    return {k.kid: k.state for k in keys.list_keys()}


def current_kid() -> str:
    return db.session.scalar(select(SigningKey.kid).where(SigningKey.state == keys.CURRENT))


def published(client) -> list[str]:
    response = client.get("/jwks.json")
    assert response.status_code == 200
    return [k["kid"] for k in response.get_json()["keys"]]


def signing_kid(client) -> str:
    """The kid that signs a fresh access token right now, checked against the JWKS."""
    from tests.factories import make_client

    cid, secret = make_client()
    token = client.post("/token", data={"grant_type": "client_credentials"}, auth=(cid, secret)).get_json()
    decoded = jwt.decode(token["access_token"], KeySet.import_key_set(client.get("/jwks.json").get_json()))
    return decoded.header["kid"]


def test_ensure_signing_key(kr):
    kek, _, _ = kr
    db.session.execute(SigningKey.__table__.delete())
    db.session.commit()
    created = keys.ensure_signing_key(kek)
    assert created is not None and created.state == keys.CURRENT
    assert keys.ensure_signing_key(kek) is None  # idempotent
    assert states() == {created.kid: keys.CURRENT}


def test_rotation_life_cycle(kr, client):
    kek, policy, keyring = kr
    old = current_kid()
    nxt = keys.rotate(kek, policy=policy)
    assert nxt.state == keys.NEXT
    assert states()[old] == keys.CURRENT
    keyring.invalidate()

    # Published at once, but not signing yet.
    assert published(client)[:2] == [old, nxt.kid]
    assert signing_kid(client) == old
    public = next(k for k in client.get("/jwks.json").get_json()["keys"] if k["kid"] == nxt.kid)
    assert public["use"] == "sig" and public["alg"] == "RS256" and public["kty"] == "RSA"
    assert "d" not in public and "p" not in public

    # Not before the pre-publication time ...
    assert keys.maintain(kek, policy, now=nxt.created_at + timedelta(seconds=policy.prepublish_ttl - 5)) == []
    assert states()[nxt.kid] == keys.NEXT
    # ... then promoted; the old key retires but stays published.
    promoted_at = nxt.created_at + timedelta(seconds=policy.prepublish_ttl + 1)
    assert keys.maintain(kek, policy, now=promoted_at) == [f"promoted {nxt.kid}"]
    after = states()
    assert (after[old], after[nxt.kid]) == (keys.RETIRED, keys.CURRENT)
    assert list(after.values()).count(keys.CURRENT) == 1
    retired = db.session.get(SigningKey, old)
    assert retired.remove_after == promoted_at + timedelta(seconds=policy.retire_ttl)
    keyring.invalidate()
    assert signing_kid(client) == nxt.kid
    assert published(client)[0] == nxt.kid and old in published(client)

    # Idempotent; retired keys stay until remove_after, then go.
    assert keys.maintain(kek, policy, now=promoted_at) == []
    assert keys.maintain(kek, policy, now=retired.remove_after - timedelta(seconds=1)) == []
    assert old in states()
    assert keys.maintain(kek, policy, now=retired.remove_after + timedelta(seconds=1)) == [f"removed {old}"]
    assert old not in states()
    keyring.invalidate()
    assert old not in published(client)
    assert signing_kid(client) == nxt.kid


def test_scheduled_rotation_creates_a_next_key(kr):
    kek, policy, _ = kr
    current = db.session.get(SigningKey, current_kid())
    due = current.activated_at + timedelta(days=policy.rotation_days, seconds=1)
    changes = keys.maintain(kek, policy, now=due)
    assert len(changes) == 1 and changes[0].startswith("created ")
    created = changes[0].split()[1]
    assert states()[created] == keys.NEXT
    # Not twice while a next key is waiting, and promoted only after its pre-publication.
    assert keys.maintain(kek, policy, now=due) == []
    later = due + timedelta(seconds=policy.prepublish_ttl + 1)
    assert keys.maintain(kek, policy, now=later) == [f"promoted {created}"]


def test_immediate_rotation(kr, client):
    kek, policy, keyring = kr
    old = current_kid()
    new = keys.rotate(kek, immediate=True, policy=policy)
    assert states()[new.kid] == keys.CURRENT and states()[old] == keys.RETIRED
    retired = db.session.get(SigningKey, old)
    assert retired.remove_after > utcnow() + timedelta(seconds=policy.retire_ttl - 60)
    keyring.invalidate()
    assert signing_kid(client) == new.kid
    assert published(client)[:2] == [new.kid, old]


def test_private_keys_are_encrypted_at_rest(kr):
    kek, _, _ = kr
    row = db.session.get(SigningKey, current_kid())
    blob = row.private_key_encrypted
    pem = keys.decrypt_private_key(kek, row.kid, blob)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    private = serialization.load_pem_private_key(pem, password=None)
    der = private.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    # Neither the PEM, its base64 body nor the DER appear in the row.
    body = b"".join(pem.splitlines()[1:-1])
    everything = repr({c.name: getattr(row, c.name) for c in SigningKey.__table__.columns}).encode()
    for secret in (pem, body[:64], der[:64]):
        assert secret not in blob and secret not in everything
    assert set(row.public_jwk) >= {"kty", "n", "e", "kid", "use", "alg"}
    assert not {"d", "p", "q", "dp", "dq", "qi"} & set(row.public_jwk)
    # Only the right KEK (and the right kid, bound as associated data) decrypts.
    with pytest.raises(InvalidTag):
        keys.decrypt_private_key(os.urandom(32), row.kid, blob)
    with pytest.raises(InvalidTag):
        keys.decrypt_private_key(kek, row.kid + "x", blob)
    with pytest.raises(InvalidTag):
        keys.decrypt_private_key(kek, row.kid, blob[:-1] + bytes([blob[-1] ^ 1]))


def test_keyring_with_the_wrong_kek_cannot_sign(kr):
    _, policy, _ = kr
    ring = keys.KeyRing(os.urandom(32), policy, refresh_ttl=60)
    with pytest.raises(InvalidTag):
        ring.signing_key()


def test_keyring_picks_up_a_rotation_without_restart(kr):
    kek, policy, _ = kr
    ring = keys.KeyRing(kek, policy, refresh_ttl=3)
    old = current_kid()
    loaded = time.monotonic()
    assert ring.signing_key().kid == old
    new = keys.rotate(kek, immediate=True, policy=policy)
    # Cached until refresh_ttl has passed ...
    assert ring.signing_key().kid == old
    assert new.kid not in [k["kid"] for k in ring.jwks()["keys"]]
    assert time.monotonic() - loaded < 3, "too slow to observe the cache"
    time.sleep(max(0.0, 3.1 - (time.monotonic() - loaded)))
    # ... then the new key signs and both are published, current first.
    assert ring.signing_key().kid == new.kid
    assert [k["kid"] for k in ring.jwks()["keys"]][:2] == [new.kid, old]
    token = jwt.encode({"alg": "RS256", "kid": new.kid}, {"x": 1}, ring.signing_key(), algorithms=["RS256"])
    assert jwt.decode(token, ring.public_keys(), algorithms=["RS256"]).claims == {"x": 1}
