"""OIDC Discovery 1.0 and RFC 8414 metadata, and the JWKS: consistent, complete and
truthful (each advertised value works; a few unadvertised ones are shown not to)."""

from __future__ import annotations

import re
import secrets
import time

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey

from tests.factories import (
    auth_params,
    exchange,
    follow_login,
    get_code,
    make_client,
    make_user,
    pkce_pair,
    query,
)

ISSUER = "http://127.0.0.1:5000"
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


@pytest.fixture()
def oidc(client):
    response = client.get("/.well-known/openid-configuration")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.get_json()


@pytest.fixture()
def oauth(client):
    response = client.get("/.well-known/oauth-authorization-server")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.get_json()


def path_of(url: str) -> str:
    assert url.startswith(ISSUER + "/"), url
    return url[len(ISSUER):]


# --- the documents ---------------------------------------------------------------------------

def test_issuer_and_required_members(oidc, oauth, settings):
    assert settings.issuer == ISSUER
    assert oidc["issuer"] == oauth["issuer"] == ISSUER
    # OIDC Discovery §3 REQUIRED members.
    for name in ("authorization_endpoint", "token_endpoint", "jwks_uri", "response_types_supported",
                 "subject_types_supported", "id_token_signing_alg_values_supported", "userinfo_endpoint"):
        assert oidc[name], name
    # RFC 8414 §2 REQUIRED (and what clients need).
    for name in ("authorization_endpoint", "token_endpoint", "response_types_supported", "jwks_uri"):
        assert oauth[name], name


def test_both_documents_agree(oidc, oauth):
    shared = set(oidc) & set(oauth)
    assert {"issuer", "authorization_endpoint", "token_endpoint", "jwks_uri", "scopes_supported",
            "response_types_supported", "grant_types_supported", "code_challenge_methods_supported",
            "token_endpoint_auth_methods_supported", "introspection_endpoint", "revocation_endpoint"} <= shared
    assert {k: oidc[k] for k in shared} == {k: oauth[k] for k in shared}


def test_metadata_is_cacheable_and_cors(client):
    for path in ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server", "/jwks.json"):
        response = client.get(path)
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert re.fullmatch(r"public, max-age=\d+", response.headers["Cache-Control"])


def test_advertised_values(oidc):
    assert oidc["response_types_supported"] == ["code"]
    assert oidc["response_modes_supported"] == ["query", "form_post"]
    assert oidc["code_challenge_methods_supported"] == ["S256"]
    assert oidc["grant_types_supported"] == ["authorization_code", "refresh_token", "client_credentials"]
    assert oidc["subject_types_supported"] == ["public"]
    assert oidc["id_token_signing_alg_values_supported"] == ["RS256"]
    assert {"client_secret_basic", "client_secret_post", "private_key_jwt", "none"} == set(
        oidc["token_endpoint_auth_methods_supported"])
    assert "none" not in oidc["introspection_endpoint_auth_methods_supported"]
    assert oidc["authorization_response_iss_parameter_supported"] is True
    assert oidc["claims_parameter_supported"] is True
    assert oidc["request_parameter_supported"] is False
    assert oidc["request_uri_parameter_supported"] is False
    assert set(oidc["prompt_values_supported"]) == {"none", "login", "consent"}
    assert {"openid", "profile", "email", "offline_access"} <= set(oidc["scopes_supported"])
    assert {"sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "email", "name", "sid"} <= set(
        oidc["claims_supported"])


@pytest.mark.parametrize("document", ["/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"])
def test_every_advertised_endpoint_answers(client, document):
    metadata = client.get(document).get_json()
    endpoints = {k: v for k, v in metadata.items() if k.endswith("_endpoint") or k == "jwks_uri"}
    assert set(endpoints) >= {"authorization_endpoint", "token_endpoint", "jwks_uri"}
    for name, url in endpoints.items():
        path = path_of(url)
        response = client.get(path)
        assert response.status_code != 404, name
        assert response.status_code < 500, (name, response.status_code)
        if response.status_code == 405:  # POST-only endpoints exist for POST
            assert "POST" in response.headers["Allow"], name
            posted = client.post(path, data={})
            assert posted.status_code not in (404, 405) and posted.status_code < 500, name


# --- advertised values work; others do not ------------------------------------------------------

@pytest.fixture()
def user(ctx):
    return make_user()


def test_response_types_and_modes(user, client, oidc):
    cid, _ = make_client()
    for mode in oidc["response_modes_supported"]:
        params = auth_params(cid, pkce_pair()[1], response_mode=mode)
        response = follow_login(client, params)
        if mode == "query":
            assert response.status_code == 302 and "code" in query(response.headers["Location"])
        else:
            assert response.status_code == 200 and 'name="code"' in response.get_data(as_text=True)
    for response_type in ("token", "id_token", "code id_token"):
        params = auth_params(cid, pkce_pair()[1], response_type=response_type)
        response = client.get("/authorize", query_string=params)
        assert query(response.headers["Location"])["error"] == "unsupported_response_type"


def test_code_challenge_methods(user, client, oidc):
    cid, secret = make_client(public=True)
    code, verifier, _ = get_code(client, cid)  # S256, the one advertised
    assert exchange(client, cid, None, code, verifier).status_code == 200
    verifier = pkce_pair()[0]
    params = auth_params(cid, code_challenge=verifier, code_challenge_method="plain")
    response = client.get("/authorize", query_string=params)
    assert query(response.headers["Location"])["error"] == "invalid_request"


def test_every_advertised_scope_can_be_granted(user, client, oidc):
    scopes = " ".join(oidc["scopes_supported"])
    cid, secret = make_client(scope=scopes)
    code, verifier, _ = get_code(client, cid, scope=scopes)
    token = exchange(client, cid, secret, code, verifier).get_json()
    assert set(token["scope"].split()) == set(oidc["scopes_supported"])


def test_advertised_grant_types_work(user, client, oidc):
    cid, secret = make_client()
    code, verifier, _ = get_code(client, cid)
    tokens = exchange(client, cid, secret, code, verifier).get_json()
    assert "refresh_token" in tokens
    refreshed = client.post("/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
                            auth=(cid, secret))
    assert refreshed.status_code == 200, refreshed.get_json()
    cc = client.post("/token", data={"grant_type": "client_credentials"}, auth=(cid, secret))
    assert cc.status_code == 200, cc.get_json()


@pytest.mark.parametrize("grant_type", [
    "password", "implicit", "urn:ietf:params:oauth:grant-type:device_code",
    "urn:ietf:params:oauth:grant-type:jwt-bearer", "urn:ietf:params:oauth:grant-type:token-exchange",
])
def test_unadvertised_grant_types_are_refused(user, client, grant_type):
    cid, secret = make_client()
    response = client.post("/token", data={"grant_type": grant_type, "username": "alice@example.com",
                                           "password": "x"}, auth=(cid, secret))
    assert response.status_code == 400
    assert response.get_json()["error"] == "unsupported_grant_type"


def _assertion(cid: str, key, alg: str, audience: str = ISSUER + "/token") -> str:
    now = int(time.time())
    claims = {"iss": cid, "sub": cid, "aud": audience, "jti": secrets.token_urlsafe(16), "iat": now,
              "exp": now + 60}
    return jwt.encode({"alg": alg, "kid": key.kid}, claims, key, algorithms=[alg])


def _key(alg: str):
    curves = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
    key = ECKey.generate_key(curves[alg]) if alg.startswith("ES") else RSAKey.generate_key(2048)
    key.ensure_kid()
    return key


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post", "private_key_jwt"])
def test_advertised_token_auth_methods_work(user, client, oidc, method):
    assert method in oidc["token_endpoint_auth_methods_supported"]
    data = {"grant_type": "client_credentials", "scope": "api:read"}
    if method == "private_key_jwt":
        key = _key("RS256")
        cid, _ = make_client(token_endpoint_auth_method=method, jwks={"keys": [key.as_dict(private=False)]})
        data.update(client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    client_assertion=_assertion(cid, key, "RS256"))
        response = client.post("/token", data=data)
    else:
        cid, secret = make_client(token_endpoint_auth_method=method)
        if method == "client_secret_basic":
            response = client.post("/token", data=data, auth=(cid, secret))
        else:
            response = client.post("/token", data={**data, "client_id": cid, "client_secret": secret})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["scope"] == "api:read"


def test_assertion_algs_advertised_alike(oidc):
    algs = oidc["token_endpoint_auth_signing_alg_values_supported"]
    assert "RS256" in algs and "none" not in algs and not any(a.startswith("HS") for a in algs)
    assert oidc["introspection_endpoint_auth_signing_alg_values_supported"] == algs
    assert oidc["revocation_endpoint_auth_signing_alg_values_supported"] == algs


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256", "RS384", "RS512", "PS384", "ES384", "ES512"])
def test_assertion_algs_work_exactly_when_advertised(user, client, oidc, alg):
    advertised = alg in oidc["token_endpoint_auth_signing_alg_values_supported"]
    key = _key(alg)
    cid, _ = make_client(token_endpoint_auth_method="private_key_jwt", jwks={"keys": [key.as_dict(private=False)]})
    response = client.post("/token", data={
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": _assertion(cid, key, alg)})
    if advertised:
        assert response.status_code == 200, response.get_json()
    else:
        assert response.status_code in (400, 401), response.get_json()
        assert response.get_json()["error"] == "invalid_client"


def test_auth_method_none_for_public_clients(user, client, oidc):
    assert "none" in oidc["token_endpoint_auth_methods_supported"]
    cid, _ = make_client(public=True)
    code, verifier, _ = get_code(client, cid)
    response = exchange(client, cid, None, code, verifier)
    assert response.status_code == 200, response.get_json()


def test_id_token_alg_and_kid_match_the_jwks(user, client, oidc):
    cid, secret = make_client()
    code, verifier, _ = get_code(client, cid)
    id_token = exchange(client, cid, secret, code, verifier).get_json()["id_token"]
    keys = KeySet.import_key_set(client.get(path_of(oidc["jwks_uri"])).get_json())
    token = jwt.decode(id_token, keys, algorithms=oidc["id_token_signing_alg_values_supported"])
    assert token.header["alg"] == "RS256"
    assert token.header["kid"] in {k["kid"] for k in client.get("/jwks.json").get_json()["keys"]}
    assert token.claims["iss"] == oidc["issuer"]
    assert set(token.claims) <= set(oidc["claims_supported"])


# --- the JWKS ------------------------------------------------------------------------------

def test_jwks_public_members_only(ctx, client, settings):
    response = client.get("/jwks.json")
    assert response.status_code == 200
    jwks = response.get_json()
    assert set(jwks) == {"keys"}
    assert jwks["keys"], "at least the current signing key"
    kids = [key["kid"] for key in jwks["keys"]]
    assert len(kids) == len(set(kids))
    for key in jwks["keys"]:
        assert not PRIVATE_MEMBERS & set(key), key.keys()
        assert key["kty"] == "RSA" and key["use"] == "sig" and key["alg"] == "RS256" and key["kid"]
        assert set(key) <= {"kty", "kid", "use", "alg", "n", "e", "key_ops", "x5c", "x5t", "x5t#S256"}
        assert RSAKey.import_key(key).is_private is False
        assert len(RSAKey.import_key(key).as_dict()["n"]) >= 342  # >= 2048 bits, base64url


def test_jwks_cache_shorter_than_key_prepublication(ctx, client):
    settings = ctx.extensions["idp"].settings
    cache_control = client.get("/jwks.json").headers["Cache-Control"]
    max_age = int(re.fullmatch(r"public, max-age=(\d+)", cache_control).group(1))
    assert 0 < max_age < settings.key_prepublish_ttl
    assert max_age == settings.jwks_max_age
