"""The token endpoint (RFC 6749 §3.2, §4.1.3, §4.4, §5): client authentication (basic, post,
none + PKCE, private_key_jwt per RFC 7523 with `jwks` and `jwks_uri`), RFC 9068 access tokens,
OIDC ID tokens, refresh-token issuance, and the authorization code's binding and single use."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from idp import create_app
from idp.storage.models import db
from tests.factories import REDIRECT_URI, exchange, get_code, make_client, make_user

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
OTHER_REDIRECT_URI = "http://127.0.0.1:9/other"


# --- helpers ---------------------------------------------------------------------------------

def assert_error(response, status: int, error: str) -> dict:
    """A whole RFC 6749 §5.2 error answer: status, JSON error, never cached."""
    body = response.get_json()
    assert response.status_code == status, (response.status_code, body)
    assert body["error"] == error, body
    assert set(body) <= {"error", "error_description", "error_uri"}, body
    assert response.headers["Cache-Control"] == "no-store"
    assert response.mimetype == "application/json"
    return body


def assert_basic_challenge(response) -> None:
    """RFC 6749 §5.2: invalid_client answered with 401 carries a WWW-Authenticate challenge."""
    challenge = response.headers.get("WWW-Authenticate", "")
    assert challenge.startswith("Basic "), challenge
    assert 'error="invalid_client"' in challenge


def assert_tokens(response) -> dict:
    body = response.get_json()
    assert response.status_code == 200, body
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    assert body["token_type"] == "Bearer"
    return body


def jwks(test_client) -> KeySet:
    response = test_client.get("/jwks.json")
    assert response.status_code == 200
    return KeySet.import_key_set(response.get_json())


def decode(test_client, token: str):
    return jwt.decode(token, jwks(test_client), algorithms=["RS256"])


def at_hash(access_token: str) -> str:
    digest = hashlib.sha256(access_token.encode()).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()


def rsa_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": secrets.token_urlsafe(8), "use": "sig", "alg": "RS256"},
                               private=True)


def public_jwks(*keys: RSAKey) -> dict:
    return {"keys": [k.as_dict(private=False) for k in keys]}


def assertion(key: RSAKey, client_id: str, aud: str, jti: str | None = None, lifetime: int = 60,
              kid: str | None = None) -> str:
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": aud, "jti": jti or secrets.token_urlsafe(16),
              "iat": now, "exp": now + lifetime}
    return jwt.encode({"alg": "RS256", "kid": kid or key.kid}, claims, key, algorithms=["RS256"])


def client_credentials(test_client, client_id: str, secret: str, **extra):
    return test_client.post("/token", data={"grant_type": "client_credentials", **extra}, auth=(client_id, secret))


@contextmanager
def other_app(settings, **changes):
    """A second app over the same database and store, with different settings."""
    app = create_app(settings.replace(**changes))
    try:
        yield app
    finally:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


@contextmanager
def jwks_server(document: dict):
    """A tiny HTTP server on loopback serving a client's JWKS (for `jwks_uri`)."""
    body = json.dumps(document).encode()
    hits = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json", hits
    finally:
        server.shutdown()
        server.server_close()


# --- client authentication -------------------------------------------------------------------

def test_code_exchange_client_secret_basic(ctx, client, settings):
    cid, secret = make_client()
    make_user()
    code, verifier, _ = get_code(client, cid)
    body = assert_tokens(exchange(client, cid, secret, code, verifier))
    assert body["expires_in"] == settings.access_token_ttl
    assert body["scope"] == "openid profile email offline_access"
    assert {"access_token", "id_token", "refresh_token"} <= set(body)


def test_code_exchange_client_secret_post(ctx, client):
    cid, secret = make_client(token_endpoint_auth_method="client_secret_post")
    make_user()
    code, verifier, _ = get_code(client, cid)
    response = client.post("/token", data={"grant_type": "authorization_code", "code": code,
                                           "redirect_uri": REDIRECT_URI, "code_verifier": verifier,
                                           "client_id": cid, "client_secret": secret})
    body = assert_tokens(response)
    assert decode(client, body["access_token"]).claims["client_id"] == cid


def test_code_exchange_public_client_with_pkce(ctx, client):
    cid, secret = make_client(public=True)
    assert secret is None
    make_user()
    code, verifier, _ = get_code(client, cid)
    body = assert_tokens(exchange(client, cid, None, code, verifier))
    assert decode(client, body["id_token"]).claims["aud"] == cid


def test_public_client_cannot_send_a_secret_or_use_client_credentials(ctx, client):
    cid, _ = make_client(public=True)
    response = client.post("/token", data={"grant_type": "client_credentials", "client_id": cid})
    # A public client is not authenticated, so it cannot use client_credentials at all.
    assert_error(response, 401, "invalid_client")
    assert_basic_challenge(response)


def test_private_key_jwt_with_registered_jwks(ctx, client, settings):
    key = rsa_key()
    cid, _ = make_client(token_endpoint_auth_method="private_key_jwt", jwks=public_jwks(key))
    make_user()
    code, verifier, _ = get_code(client, cid)
    signed = assertion(key, cid, settings.issuer + "/token")
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier, "client_assertion_type": ASSERTION_TYPE, "client_assertion": signed}
    body = assert_tokens(client.post("/token", data=data))
    assert decode(client, body["id_token"]).claims["aud"] == cid

    # RFC 7523 §3 item 7: the same assertion (same jti) is refused the second time.
    code2, verifier2, _ = get_code(client, cid)
    replay = client.post("/token", data={**data, "code": code2, "code_verifier": verifier2})
    assert_error(replay, 400, "invalid_client")
    # ... and the code was not consumed by the refused request.
    fresh = assertion(key, cid, settings.issuer)  # the issuer is an accepted audience too
    assert_tokens(client.post("/token", data={**data, "code": code2, "code_verifier": verifier2,
                                              "client_assertion": fresh}))


def test_private_key_jwt_client_credentials_and_failures(ctx, client, settings):
    key = rsa_key()
    cid, secret = make_client(token_endpoint_auth_method="private_key_jwt", jwks=public_jwks(key))

    def post(signed):
        return client.post("/token", data={"grant_type": "client_credentials", "scope": "api:read",
                                           "client_assertion_type": ASSERTION_TYPE, "client_assertion": signed})

    body = assert_tokens(post(assertion(key, cid, settings.issuer + "/token")))
    assert decode(client, body["access_token"]).claims["sub"] == cid

    # Wrong audience.
    assert_error(post(assertion(key, cid, "https://elsewhere.example/token")), 400, "invalid_client")
    # Signed with a key the client did not register: under its own kid, and under the registered kid.
    stranger = rsa_key()
    assert_error(post(assertion(stranger, cid, settings.issuer + "/token")), 400, "invalid_client")
    assert_error(post(assertion(stranger, cid, settings.issuer + "/token", kid=key.kid)), 400, "invalid_client")
    # Expired assertion (beyond the leeway).
    assert_error(post(assertion(key, cid, settings.issuer + "/token", lifetime=-300)), 400, "invalid_client")
    # iss/sub naming another client.
    other, _ = make_client()
    assert_error(post(assertion(key, other, settings.issuer + "/token")), 400, "invalid_client")
    # A private_key_jwt client may not fall back to its (never shown) secret.
    response = client_credentials(client, cid, secret)
    assert_error(response, 401, "invalid_client")
    assert_basic_challenge(response)


def test_private_key_jwt_with_jwks_uri(ctx, client, settings):
    key = rsa_key()
    with jwks_server(public_jwks(key)) as (uri, hits):
        cid, _ = make_client(token_endpoint_auth_method="private_key_jwt", jwks_uri=uri)
        make_user()
        code, verifier, _ = get_code(client, cid)
        response = client.post("/token", data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier, "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion(key, cid, settings.issuer + "/token")})
        body = assert_tokens(response)
        assert hits == ["/jwks.json"]
        assert decode(client, body["access_token"]).claims["client_id"] == cid
        wrong = client.post("/token", data={
            "grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion(rsa_key(), cid, settings.issuer + "/token", kid=key.kid)})
        assert_error(wrong, 400, "invalid_client")


def test_wrong_secret_and_unknown_client(ctx, client):
    cid, secret = make_client()
    for auth in ((cid, secret + "x"), (cid, ""), ("no-such-client", secret)):
        response = client_credentials(client, *auth)
        assert_error(response, 401, "invalid_client")
        assert_basic_challenge(response)
    response = client.post("/token", data={"grant_type": "client_credentials"})
    assert_error(response, 401, "invalid_client")
    assert_basic_challenge(response)
    response = client.post("/token", data={"grant_type": "client_credentials", "client_id": cid,
                                           "client_secret": "wrong"})
    assert_error(response, 401, "invalid_client")


def test_client_must_use_its_registered_method(ctx, client):
    basic, basic_secret = make_client()
    post, post_secret = make_client(token_endpoint_auth_method="client_secret_post")
    as_post = client.post("/token", data={"grant_type": "client_credentials", "client_id": basic,
                                          "client_secret": basic_secret})
    assert_error(as_post, 401, "invalid_client")
    as_basic = client_credentials(client, post, post_secret)
    assert_error(as_basic, 401, "invalid_client")
    assert_basic_challenge(as_basic)
    # A confidential client cannot drop to "none" either.
    as_none = client.post("/token", data={"grant_type": "client_credentials", "client_id": basic})
    assert_error(as_none, 401, "invalid_client")
    # Each works with its own method.
    assert_tokens(client_credentials(client, basic, basic_secret))
    assert_tokens(client.post("/token", data={"grant_type": "client_credentials", "client_id": post,
                                              "client_secret": post_secret}))


def test_grant_type_not_registered_is_unauthorized_client(ctx, client):
    cid, secret = make_client(grant_types=["authorization_code"])
    body = assert_error(client_credentials(client, cid, secret), 400, "unauthorized_client")
    assert "client_credentials" in body["error_description"]
    response = client.post("/token", data={"grant_type": "refresh_token", "refresh_token": "x"}, auth=(cid, secret))
    assert_error(response, 400, "unauthorized_client")


def test_unknown_grant_type_is_unsupported(ctx, client):
    cid, secret = make_client()
    for grant_type in ("password", "urn:ietf:params:oauth:grant-type:device_code", "implicit"):
        response = client.post("/token", data={"grant_type": grant_type, "username": "a", "password": "b"},
                               auth=(cid, secret))
        assert_error(response, 400, "unsupported_grant_type")
    assert_error(client.post("/token", data={"code": "x"}, auth=(cid, secret)), 400, "unsupported_grant_type")


def test_scope_outside_registration_is_invalid_scope(ctx, client):
    cid, secret = make_client(scope="openid api:read")
    assert_error(client_credentials(client, cid, secret, scope="api:write"), 400, "invalid_scope")
    assert_error(client_credentials(client, cid, secret, scope="api:read api:write"), 400, "invalid_scope")
    # openid needs an end-user.
    assert_error(client_credentials(client, cid, secret, scope="openid"), 400, "invalid_scope")
    assert assert_tokens(client_credentials(client, cid, secret, scope="api:read"))["scope"] == "api:read"


# --- what is issued --------------------------------------------------------------------------

def test_client_credentials_token_is_an_rfc9068_jwt(ctx, client, settings):
    cid, secret = make_client(scope="openid offline_access api:read api:write")
    before = int(time.time())
    body = assert_tokens(client_credentials(client, cid, secret, scope="api:read"))
    assert "refresh_token" not in body and "id_token" not in body
    assert body["scope"] == "api:read"
    assert body["expires_in"] == settings.access_token_ttl
    token = decode(client, body["access_token"])
    assert token.header["typ"] == "at+jwt"
    assert token.header["alg"] == "RS256"
    published = [k["kid"] for k in client.get("/jwks.json").get_json()["keys"]]
    assert token.header["kid"] in published
    claims = token.claims
    assert claims["iss"] == settings.issuer
    assert claims["sub"] == cid
    assert claims["client_id"] == cid
    assert claims["aud"] == settings.issuer
    assert claims["scope"] == "api:read"
    assert before <= claims["iat"] <= time.time()
    assert claims["exp"] == claims["iat"] + settings.access_token_ttl
    assert isinstance(claims["jti"], str) and len(claims["jti"]) >= 16
    # Without a scope: the registered ones, never openid/offline_access.
    default = decode(client, assert_tokens(client_credentials(client, cid, secret))["access_token"]).claims
    assert default["scope"] == "api:read api:write"
    assert default["jti"] != claims["jti"]


def test_access_token_lifetime_follows_settings(ctx, settings):
    with other_app(settings, access_token_ttl=123) as app:
        test_client = app.test_client()
        cid, secret = make_client()
        body = assert_tokens(client_credentials(test_client, cid, secret))
        assert body["expires_in"] == 123
        claims = decode(test_client, body["access_token"]).claims
        assert claims["exp"] - claims["iat"] == 123


def test_id_token_claims(ctx, client, settings):
    cid, secret = make_client()
    user = make_user(name="Alice Example")
    start = int(time.time())
    code, verifier, params = get_code(client, cid, scope="openid profile email")
    body = assert_tokens(exchange(client, cid, secret, code, verifier))
    token = decode(client, body["id_token"])
    assert token.header["alg"] == "RS256"
    assert token.header["kid"] in [k["kid"] for k in client.get("/jwks.json").get_json()["keys"]]
    c = token.claims
    assert c["iss"] == settings.issuer
    assert c["sub"] == user.id
    assert c["aud"] == cid
    assert c["azp"] == cid
    assert start <= c["iat"] <= time.time()
    assert c["exp"] == c["iat"] + settings.id_token_ttl
    assert start <= c["auth_time"] <= c["iat"]
    assert c["nonce"] == params["nonce"]
    assert c["at_hash"] == at_hash(body["access_token"])
    assert c["acr"] == "urn:idp:acr:pwd"
    assert c["amr"] == ["pwd"]
    assert isinstance(c["sid"], str) and c["sid"]
    assert c["email"] == "alice@example.com" and c["email_verified"] is True
    assert c["name"] == "Alice Example"
    assert c["preferred_username"] == "alice@example.com"
    assert "phone_number" not in c and "address" not in c

    # The same SSO session, fewer scopes: no profile claims, no email claims.
    code, verifier, params = get_code(client, cid, scope="openid")
    narrow = decode(client, assert_tokens(exchange(client, cid, secret, code, verifier))["id_token"]).claims
    assert narrow["sid"] == c["sid"] and narrow["auth_time"] == c["auth_time"]
    assert narrow["nonce"] == params["nonce"]
    for name in ("email", "email_verified", "name", "preferred_username"):
        assert name not in narrow


def test_refresh_token_only_with_offline_access_for_oidc(ctx, client):
    cid, secret = make_client()
    make_user()
    code, verifier, _ = get_code(client, cid, scope="openid email")
    body = assert_tokens(exchange(client, cid, secret, code, verifier))
    assert "refresh_token" not in body and "id_token" in body
    code, verifier, _ = get_code(client, cid, scope="openid email offline_access")
    body = assert_tokens(exchange(client, cid, secret, code, verifier))
    assert "refresh_token" in body


# --- the authorization code ------------------------------------------------------------------

def test_code_reuse_fails_and_revokes_what_it_issued(ctx, client):
    cid, secret = make_client()
    make_user()
    code, verifier, _ = get_code(client, cid)
    first = assert_tokens(exchange(client, cid, secret, code, verifier))
    assert client.post("/introspect", data={"token": first["access_token"]},
                       auth=(cid, secret)).get_json()["active"] is True

    assert_error(exchange(client, cid, secret, code, verifier), 400, "invalid_grant")

    introspected = client.post("/introspect", data={"token": first["access_token"]}, auth=(cid, secret))
    assert introspected.status_code == 200 and introspected.get_json() == {"active": False}
    userinfo = client.get("/userinfo", headers={"Authorization": "Bearer " + first["access_token"]})
    assert userinfo.status_code == 401
    assert userinfo.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
    refreshed = client.post("/token", data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
                            auth=(cid, secret))
    assert_error(refreshed, 400, "invalid_grant")


def test_code_is_bound_to_its_client(ctx, client):
    cid, _ = make_client()
    thief, thief_secret = make_client()
    make_user()
    code, verifier, _ = get_code(client, cid)
    assert_error(exchange(client, thief, thief_secret, code, verifier), 400, "invalid_grant")


def test_code_is_bound_to_its_redirect_uri(ctx, client):
    cid, secret = make_client(redirect_uris=[REDIRECT_URI, OTHER_REDIRECT_URI])
    make_user()
    code, verifier, _ = get_code(client, cid)
    assert_error(exchange(client, cid, secret, code, verifier, redirect_uri=OTHER_REDIRECT_URI),
                 400, "invalid_grant")
    code, verifier, _ = get_code(client, cid)
    response = client.post("/token", data={"grant_type": "authorization_code", "code": code,
                                           "code_verifier": verifier}, auth=(cid, secret))
    assert_error(response, 400, "invalid_grant")


def test_unknown_code_is_invalid_grant(ctx, client):
    cid, secret = make_client()
    assert_error(exchange(client, cid, secret, secrets.token_urlsafe(32), "x" * 43), 400, "invalid_grant")


@pytest.mark.timeout(30)
def test_expired_code_is_invalid_grant(ctx, settings):
    with other_app(settings, code_ttl=1) as app:
        test_client = app.test_client()
        cid, secret = make_client()
        make_user()
        code, verifier, _ = get_code(test_client, cid)
        time.sleep(1.3)
        assert_error(exchange(test_client, cid, secret, code, verifier), 400, "invalid_grant")
