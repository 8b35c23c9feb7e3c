"""Token introspection (RFC 7662): client authentication, active:false for anything that is not
a live token of ours, the active:true member set, and refresh tokens only for their client."""

from __future__ import annotations

import secrets
import time

from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from idp.services import tokens
from tests.factories import exchange, get_code, make_client, make_user


def introspect(test_client, token, auth=None, **extra):
    response = test_client.post("/introspect", data={"token": token, **extra}, auth=auth)
    assert response.headers["Cache-Control"] == "no-store"
    return response


def inactive(test_client, token, auth) -> bool:
    response = introspect(test_client, token, auth)
    assert response.status_code == 200, response.get_json()
    return response.get_json() == {"active": False}


def client_credentials(test_client, cid, secret, **extra) -> dict:
    response = test_client.post("/token", data={"grant_type": "client_credentials", **extra}, auth=(cid, secret))
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def keyset(test_client) -> KeySet:
    return KeySet.import_key_set(test_client.get("/jwks.json").get_json())


def token_settings(app, **over) -> tokens.TokenSettings:
    s = app.extensions["idp"].settings
    values = dict(issuer=s.issuer, access_token_ttl=s.access_token_ttl, id_token_ttl=s.id_token_ttl,
                  refresh_token_ttl=s.refresh_token_ttl, refresh_token_grace_ttl=s.refresh_token_grace_ttl)
    values.update(over)
    return tokens.TokenSettings(**values)


def test_requires_client_authentication(ctx, client):
    cid, secret = make_client()
    access = client_credentials(client, cid, secret)["access_token"]
    for auth in (None, (cid, "wrong"), ("nobody", secret)):
        response = introspect(client, access, auth)
        assert response.status_code == 401
        assert response.get_json()["error"] == "invalid_client"
        assert response.headers["WWW-Authenticate"].startswith("Basic ")
        assert "active" not in response.get_json()
    # A public client has no credentials: it cannot introspect.
    public, _ = make_client(public=True)
    response = client.post("/introspect", data={"token": access, "client_id": public})
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_client"


def test_missing_token_is_invalid_request(ctx, client):
    cid, secret = make_client()
    response = client.post("/introspect", data={"token_type_hint": "access_token"}, auth=(cid, secret))
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"


def test_active_access_token(ctx, client, settings):
    cid, secret = make_client()
    user = make_user()
    code, verifier, _ = get_code(client, cid, scope="openid email")
    access = exchange(client, cid, secret, code, verifier).get_json()["access_token"]
    rs, rs_secret = make_client(name="Resource server")  # any confidential client may introspect
    response = introspect(client, access, (rs, rs_secret))
    assert response.status_code == 200
    body = response.get_json()
    assert body["active"] is True
    assert body["scope"] == "openid email"
    assert body["client_id"] == cid
    assert body["sub"] == user.id
    assert body["iss"] == settings.issuer
    assert body["token_type"] == "Bearer"
    assert body["exp"] == body["iat"] + settings.access_token_ttl
    assert body["iat"] <= time.time() < body["exp"]
    assert isinstance(body["jti"], str)
    # The hint is only a hint, and an unknown one is ignored (RFC 7662 §2.1).
    assert introspect(client, access, (rs, rs_secret), token_type_hint="refresh_token").get_json() == body
    assert introspect(client, access, (rs, rs_secret), token_type_hint="id_token").get_json() == body


def test_client_credentials_token_is_active(ctx, client):
    cid, secret = make_client()
    body = introspect(client, client_credentials(client, cid, secret, scope="api:read")["access_token"],
                      (cid, secret)).get_json()
    assert body["active"] is True
    assert body["sub"] == body["client_id"] == cid
    assert body["scope"] == "api:read"


def test_garbage_and_unknown_tokens_are_inactive(ctx, client):
    cid, secret = make_client()
    auth = (cid, secret)
    for token in ("", "garbage", "a.b.c", "x" * 8000, "x.y.z" * 1600, "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
                  secrets.token_urlsafe(32)):
        assert inactive(client, token, auth), token


def test_expired_access_token_is_inactive(ctx, client, app):
    cid, secret = make_client()
    idp = app.extensions["idp"]
    expired, _ = tokens.issue_access_token(idp.keyring, token_settings(app, access_token_ttl=-5), client_id=cid,
                                           sub=cid, scope="api:read")
    live, _ = tokens.issue_access_token(idp.keyring, token_settings(app), client_id=cid, sub=cid, scope="api:read")
    assert inactive(client, expired, (cid, secret))
    assert not inactive(client, live, (cid, secret))


def test_token_of_another_issuer_is_inactive(ctx, client, app):
    cid, secret = make_client()
    idp = app.extensions["idp"]
    foreign, _ = tokens.issue_access_token(idp.keyring, token_settings(app, issuer="https://evil.example"),
                                           client_id=cid, sub=cid, scope="api:read")
    assert inactive(client, foreign, (cid, secret))


def test_revoked_access_token_is_inactive(ctx, client):
    cid, secret = make_client()
    access = client_credentials(client, cid, secret)["access_token"]
    assert not inactive(client, access, (cid, secret))
    assert client.post("/revoke", data={"token": access}, auth=(cid, secret)).status_code == 200
    assert inactive(client, access, (cid, secret))


def test_id_token_is_not_an_access_token(ctx, client):
    cid, secret = make_client()
    make_user()
    code, verifier, _ = get_code(client, cid)
    body = exchange(client, cid, secret, code, verifier).get_json()
    assert not inactive(client, body["access_token"], (cid, secret))
    assert inactive(client, body["id_token"], (cid, secret))


def test_token_signed_by_another_key_is_inactive(ctx, client, settings):
    cid, secret = make_client()
    real = client_credentials(client, cid, secret)["access_token"]
    decoded = jwt.decode(real, keyset(client))
    header, claims = decoded.header, decoded.claims
    stranger = RSAKey.generate_key(2048, private=True)
    for kid in (header["kid"], "unknown-kid"):
        forged = jwt.encode({"alg": "RS256", "typ": "at+jwt", "kid": kid}, claims, stranger, algorithms=["RS256"])
        assert inactive(client, forged, (cid, secret)), kid
    # Same claims, signature stripped or alg none.
    head, payload, _ = real.split(".")
    assert inactive(client, f"{head}.{payload}.", (cid, secret))
    assert inactive(client, f"{head}.{payload}.AAAA", (cid, secret))


def test_refresh_token_only_by_its_own_client(ctx, client, settings):
    cid, secret = make_client()
    user = make_user()
    code, verifier, _ = get_code(client, cid)
    body = exchange(client, cid, secret, code, verifier).get_json()
    mine = introspect(client, body["refresh_token"], (cid, secret)).get_json()
    assert mine["active"] is True
    assert mine["client_id"] == cid
    assert mine["sub"] == user.id
    assert mine["scope"] == "openid profile email offline_access"
    assert mine["iss"] == settings.issuer
    assert mine["token_type"] == "refresh_token"
    assert mine["iat"] <= time.time() < mine["exp"]
    other, other_secret = make_client()
    assert inactive(client, body["refresh_token"], (other, other_secret))
    # ... whereas an access token may be introspected by any resource server.
    assert not inactive(client, body["access_token"], (other, other_secret))
