"""Token revocation (RFC 7009): access tokens go on a jti denylist honoured by userinfo and
introspection; a refresh token takes its whole family with it; unknown tokens get 200."""

from __future__ import annotations

import secrets

from tests.factories import exchange, get_code, make_client, make_user


def revoke(test_client, token, auth=None, **extra):
    response = test_client.post("/revoke", data={"token": token, **extra}, auth=auth)
    assert response.headers["Cache-Control"] == "no-store"
    return response


def assert_revoked_ok(response) -> None:
    # RFC 7009 §2.2: 200, and the content of the body is ignored by the client.
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {}


def active(test_client, token, auth) -> bool:
    response = test_client.post("/introspect", data={"token": token}, auth=auth)
    assert response.status_code == 200
    return response.get_json()["active"]


def userinfo_status(test_client, access_token) -> int:
    return test_client.get("/userinfo", headers={"Authorization": "Bearer " + access_token}).status_code


def login(test_client, **client_over):
    cid, secret = make_client(**client_over)
    make_user()
    code, verifier, _ = get_code(test_client, cid)
    body = exchange(test_client, cid, secret, code, verifier).get_json()
    assert "refresh_token" in body, body
    return cid, secret, body


def test_revoke_access_token(ctx, client):
    cid, secret, tokens = login(client)
    rs, rs_secret = make_client(name="Resource server")
    assert userinfo_status(client, tokens["access_token"]) == 200
    assert_revoked_ok(revoke(client, tokens["access_token"], (cid, secret), token_type_hint="access_token"))
    assert not active(client, tokens["access_token"], (rs, rs_secret))
    response = client.get("/userinfo", headers={"Authorization": "Bearer " + tokens["access_token"]})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
    # Only that access token: the refresh token still works and yields a working access token.
    assert active(client, tokens["refresh_token"], (cid, secret))
    refreshed = client.post("/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
                            auth=(cid, secret))
    assert refreshed.status_code == 200
    assert userinfo_status(client, refreshed.get_json()["access_token"]) == 200
    # Revoking again is fine.
    assert_revoked_ok(revoke(client, tokens["access_token"], (cid, secret)))


def test_revoke_refresh_token_revokes_the_family(ctx, client):
    cid, secret, first = login(client)
    second = client.post("/token", data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
                         auth=(cid, secret)).get_json()
    assert_revoked_ok(revoke(client, second["refresh_token"], (cid, secret), token_type_hint="refresh_token"))
    assert not active(client, second["refresh_token"], (cid, secret))
    # The access tokens that came with the family die too.
    assert not active(client, second["access_token"], (cid, secret))
    assert not active(client, first["access_token"], (cid, secret))
    assert userinfo_status(client, second["access_token"]) == 401
    response = client.post("/token", data={"grant_type": "refresh_token", "refresh_token": second["refresh_token"]},
                           auth=(cid, secret))
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_grant"


def test_revoke_with_a_wrong_hint_still_works(ctx, client):
    cid, secret, tokens = login(client)
    assert_revoked_ok(revoke(client, tokens["refresh_token"], (cid, secret), token_type_hint="access_token"))
    assert not active(client, tokens["refresh_token"], (cid, secret))


def test_unknown_tokens_get_200(ctx, client):
    cid, secret = make_client()
    for token in ("garbage", secrets.token_urlsafe(32), "a.b.c"):
        assert_revoked_ok(revoke(client, token, (cid, secret)))


def test_unknown_hint_is_ignored(ctx, client):
    # RFC 7009 §2.2: "An invalid token type hint value is ignored by the authorization server".
    cid, secret, tokens = login(client)
    assert_revoked_ok(revoke(client, tokens["access_token"], (cid, secret), token_type_hint="id_token"))
    assert not active(client, tokens["access_token"], (cid, secret))
    assert_revoked_ok(revoke(client, "garbage", (cid, secret), token_type_hint="x" * 100))


def test_missing_token_is_invalid_request(ctx, client):
    cid, secret = make_client()
    response = client.post("/revoke", data={"token_type_hint": "access_token"}, auth=(cid, secret))
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"
    assert response.headers["Cache-Control"] == "no-store"


def test_requires_client_authentication(ctx, client):
    cid, secret, tokens = login(client)
    for auth in (None, (cid, "wrong")):
        response = revoke(client, tokens["refresh_token"], auth)
        assert response.status_code == 401
        assert response.get_json()["error"] == "invalid_client"
        assert response.headers["WWW-Authenticate"].startswith("Basic ")
    assert active(client, tokens["refresh_token"], (cid, secret))


def test_a_client_cannot_revoke_another_clients_token(ctx, client):
    cid, secret, tokens = login(client)
    other, other_secret = make_client()
    response = revoke(client, tokens["refresh_token"], (other, other_secret))
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_grant"
    assert active(client, tokens["refresh_token"], (cid, secret))
    response = revoke(client, tokens["access_token"], (other, other_secret))
    assert response.status_code == 400
    assert active(client, tokens["access_token"], (cid, secret))


def test_public_client_revokes_with_client_id(ctx, client, app):
    cid, _ = make_client(public=True)
    make_user()
    code, verifier, _ = get_code(client, cid)
    tokens = exchange(client, cid, None, code, verifier).get_json()
    rs, rs_secret = make_client(name="Resource server")
    assert active(client, tokens["refresh_token"], (rs, rs_secret)) is False  # not its client's: hidden
    assert active(client, tokens["access_token"], (rs, rs_secret))
    assert_revoked_ok(client.post("/revoke", data={"token": tokens["refresh_token"], "client_id": cid}))
    assert not active(client, tokens["access_token"], (rs, rs_secret))
    response = client.post("/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
                                           "client_id": cid})
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_grant"
