"""The UserInfo endpoint (OIDC Core §5.3) with RFC 6750 bearer-token errors."""

from __future__ import annotations

import json

import pytest

from idp.services import tokens
from idp.storage.models import User, db
from tests.factories import exchange, get_code, make_client, make_user

PROFILE = {"given_name": "Alice", "family_name": "Example", "locale": "en-GB",
           "phone_number": "+44 20 7946 0000", "phone_number_verified": True,
           "address": {"street_address": "1 Example Road", "locality": "London", "postal_code": "N1 9GU",
                       "country": "GB"}}


def access_token(test_client, scope: str) -> tuple[str, User]:
    cid, secret = make_client()
    user = make_user()
    user.profile = dict(PROFILE)
    db.session.commit()
    code, verifier, _ = get_code(test_client, cid, scope=scope)
    body = exchange(test_client, cid, secret, code, verifier).get_json()
    return body["access_token"], user


def userinfo(test_client, token, method="GET"):
    headers = {"Authorization": "Bearer " + token}
    return test_client.get("/userinfo", headers=headers) if method == "GET" else \
        test_client.post("/userinfo", headers=headers)


def ok(response) -> dict:
    assert response.status_code == 200, response.get_json()
    assert response.mimetype == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    return response.get_json()


def assert_invalid_token(response) -> None:
    assert response.status_code == 401, response.get_json()
    assert response.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
    assert response.get_json()["error"] == "invalid_token"
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_bearer_header(ctx, client, method):
    token, user = access_token(client, "openid")
    assert ok(userinfo(client, token, method)) == {"sub": user.id}


def test_form_access_token(ctx, client):
    token, user = access_token(client, "openid email")
    body = ok(client.post("/userinfo", data={"access_token": token}))
    assert body == {"sub": user.id, "email": "alice@example.com", "email_verified": True}
    # RFC 6750 §2: one method only.
    response = client.post("/userinfo", data={"access_token": token}, headers={"Authorization": "Bearer " + token})
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"
    assert response.headers["WWW-Authenticate"].startswith('Bearer error="invalid_request"')


def test_claims_by_scope(ctx, client):
    token, user = access_token(client, "openid profile email phone address")
    body = ok(userinfo(client, token))
    assert body["sub"] == user.id
    assert body["name"] == "Alice Example"
    assert body["given_name"] == "Alice"
    assert body["family_name"] == "Example"
    assert body["locale"] == "en-GB"
    assert body["preferred_username"] == "alice@example.com"
    assert isinstance(body["updated_at"], int)
    assert body["email"] == "alice@example.com" and body["email_verified"] is True
    assert body["phone_number"] == PROFILE["phone_number"] and body["phone_number_verified"] is True
    assert body["address"] == PROFILE["address"]


@pytest.mark.parametrize("scope, present, absent", [
    ("openid profile", {"name", "given_name", "family_name", "preferred_username"},
     {"email", "phone_number", "address"}),
    ("openid email", {"email", "email_verified"}, {"name", "given_name", "phone_number", "address"}),
    ("openid phone", {"phone_number", "phone_number_verified"}, {"name", "email", "address"}),
    ("openid address", {"address"}, {"name", "email", "phone_number", "given_name"}),
])
def test_only_the_granted_scopes_claims(ctx, client, scope, present, absent):
    token, _ = access_token(client, scope)
    body = ok(userinfo(client, token))
    assert present <= set(body), body
    assert not absent & set(body), body


def test_no_token_is_401_without_error_code(ctx, client):
    for response in (client.get("/userinfo"), client.post("/userinfo")):
        assert response.status_code == 401
        # RFC 6750 §3.1: no credentials -> a challenge without an error code.
        challenge = response.headers["WWW-Authenticate"]
        assert challenge.startswith("Bearer") and "error=" not in challenge


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."])
def test_bad_token(ctx, client, token):
    assert_invalid_token(userinfo(client, token))


def test_expired_token(ctx, client, app):
    user = make_user()
    cid, _ = make_client()
    s = app.extensions["idp"].settings
    expired, _ = tokens.issue_access_token(
        app.extensions["idp"].keyring,
        tokens.TokenSettings(issuer=s.issuer, access_token_ttl=-1, id_token_ttl=s.id_token_ttl,
                             refresh_token_ttl=s.refresh_token_ttl, refresh_token_grace_ttl=0),
        client_id=cid, sub=user.id, scope="openid")
    assert_invalid_token(userinfo(client, expired))


def test_revoked_token(ctx, client):
    cid, secret = make_client()
    make_user()
    code, verifier, _ = get_code(client, cid, scope="openid")
    token = exchange(client, cid, secret, code, verifier).get_json()["access_token"]
    ok(userinfo(client, token))
    assert client.post("/revoke", data={"token": token}, auth=(cid, secret)).status_code == 200
    assert_invalid_token(userinfo(client, token))
    assert_invalid_token(client.post("/userinfo", data={"access_token": token}))


def test_id_token_is_refused(ctx, client):
    cid, secret = make_client()
    make_user()
    code, verifier, _ = get_code(client, cid, scope="openid")
    id_token = exchange(client, cid, secret, code, verifier).get_json()["id_token"]
    assert_invalid_token(userinfo(client, id_token))


def test_disabled_user(ctx, client):
    token, user = access_token(client, "openid")
    user.disabled_at = user.created_at
    db.session.commit()
    assert_invalid_token(userinfo(client, token))


def test_client_credentials_token_is_insufficient_scope(ctx, client):
    cid, secret = make_client()
    token = client.post("/token", data={"grant_type": "client_credentials", "scope": "api:read"},
                        auth=(cid, secret)).get_json()["access_token"]
    response = userinfo(client, token)
    assert response.status_code == 403
    assert response.get_json()["error"] == "insufficient_scope"
    assert response.headers["WWW-Authenticate"].startswith('Bearer error="insufficient_scope"')


def test_not_a_bearer_scheme(ctx, client):
    token, _ = access_token(client, "openid")
    for header in ("Basic " + token, "Bearer", "Bearer  "):
        response = client.get("/userinfo", headers={"Authorization": header})
        assert response.status_code == 400, header
        assert response.get_json()["error"] == "invalid_request"
        assert response.headers["WWW-Authenticate"].startswith('Bearer error="invalid_request"')


def test_claims_request_parameter(ctx, client):
    # OIDC Core §5.5: individually requested userinfo claims come on top of the scopes'.
    cid, secret = make_client()
    user = make_user()
    user.profile = dict(PROFILE)
    db.session.commit()
    claims = json.dumps({"userinfo": {"phone_number": None, "given_name": {"essential": True}}})
    code, verifier, _ = get_code(client, cid, scope="openid", claims=claims)
    token = exchange(client, cid, secret, code, verifier).get_json()["access_token"]
    assert ok(userinfo(client, token)) == {"sub": user.id, "phone_number": PROFILE["phone_number"],
                                           "given_name": "Alice"}
