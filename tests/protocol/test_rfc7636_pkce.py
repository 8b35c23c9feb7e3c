"""PKCE (RFC 7636) with our rules: S256 only, required for public clients, optional for
confidential ones unless the client or the server setting requires it, and the RFC 9700 §4.8
downgrade check at the token endpoint."""

from __future__ import annotations

import base64
import hashlib

import pytest

from idp import create_app
from idp.storage.models import db
from tests.factories import (
    REDIRECT_URI,
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


def assert_error_redirect(response, error: str, state: str) -> None:
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    location = response.headers["Location"]
    assert location.split("?")[0] == REDIRECT_URI
    q = query(location)
    assert q.pop("error_description")
    assert q == {"error": error, "state": state, "iss": ISSUER}


def assert_token_error(response, error: str, status: int = 400) -> None:
    body = response.get_json()
    assert response.status_code == status, body
    assert body["error"] == error
    assert set(body) <= {"error", "error_description", "error_uri"}
    assert response.headers["Cache-Control"] == "no-store"
    assert "access_token" not in response.get_data(as_text=True)


def code_without_pkce(test_client, cid: str) -> tuple[str, dict]:
    params = auth_params(cid)
    assert "code_challenge" not in params
    response = follow_login(test_client, params)
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    q = query(response.headers["Location"])
    assert set(q) == {"code", "state", "iss"}, q
    return q["code"], params


@pytest.fixture()
def user(ctx):
    return make_user()


# --- /authorize -----------------------------------------------------------------------------

def test_public_client_without_code_challenge(user, client):
    cid, secret = make_client(public=True)
    assert secret is None
    params = auth_params(cid)
    assert_error_redirect(client.get("/authorize", query_string=params), "invalid_request", params["state"])


@pytest.mark.parametrize("public", [True, False])
@pytest.mark.parametrize("method", ["plain", None, "s256", "S512", ""])
def test_only_s256_is_accepted(user, client, public, method):
    cid, _ = make_client(public=public)
    verifier, challenge = pkce_pair()
    params = auth_params(cid, code_challenge=verifier if method == "plain" else challenge,
                         code_challenge_method=method)
    if method is None:
        assert "code_challenge_method" not in params  # RFC 7636 §4.3 would default to plain
    assert_error_redirect(client.get("/authorize", query_string=params), "invalid_request", params["state"])


@pytest.mark.parametrize("challenge", ["short", "a" * 42, "a" * 129, "a" * 42 + "!"])
def test_malformed_code_challenge(user, client, challenge):
    cid, _ = make_client(public=True)
    params = auth_params(cid, code_challenge=challenge, code_challenge_method="S256")
    assert_error_redirect(client.get("/authorize", query_string=params), "invalid_request", params["state"])


def test_method_without_challenge(user, client):
    cid, _ = make_client()
    params = auth_params(cid, code_challenge_method="S256")
    assert_error_redirect(client.get("/authorize", query_string=params), "invalid_request", params["state"])


def test_confidential_client_without_pkce_works(user, client):
    cid, secret = make_client()
    code, _ = code_without_pkce(client, cid)
    response = exchange(client, cid, secret, code, None)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["token_type"] == "Bearer"


def test_confidential_client_with_require_pkce(user, client):
    cid, secret = make_client(require_pkce=True)
    params = auth_params(cid)
    assert_error_redirect(client.get("/authorize", query_string=params), "invalid_request", params["state"])
    # With PKCE it works.
    code, verifier, _ = get_code(client, cid)
    assert exchange(client, cid, secret, code, verifier).status_code == 200


@pytest.fixture(scope="module")
def strict_app(app, settings):
    """A second app on the same database and store with IDP_REQUIRE_PKCE=true: the schema and
    signing keys are already there (same database URL), so no migration is needed."""
    strict = create_app(settings.replace(require_pkce=True))
    assert strict.config["SQLALCHEMY_DATABASE_URI"] == app.config["SQLALCHEMY_DATABASE_URI"]
    assert strict.extensions["idp"].settings.require_pkce is True
    yield strict
    with strict.app_context():
        db.session.remove()
        db.engine.dispose()


def test_server_setting_requires_pkce_for_everyone(user, client, strict_app):
    cid, secret = make_client()
    strict = strict_app.test_client()
    params = auth_params(cid)
    assert_error_redirect(strict.get("/authorize", query_string=params), "invalid_request", params["state"])
    # The same request on the default server is fine: the setting made the difference.
    code, _ = code_without_pkce(client, cid)
    assert exchange(client, cid, secret, code, None).status_code == 200
    # And with PKCE the strict server issues a code that works.
    code, verifier, _ = get_code(strict, cid)
    response = exchange(strict, cid, secret, code, verifier)
    assert response.status_code == 200, response.get_json()


# --- /token ---------------------------------------------------------------------------------

@pytest.mark.parametrize("public", [True, False])
def test_wrong_code_verifier(user, client, public):
    cid, secret = make_client(public=public)
    code, verifier, _ = get_code(client, cid)
    wrong = pkce_pair()[0]
    assert_token_error(exchange(client, cid, secret, code, wrong), "invalid_grant")
    # The code was consumed by the failed attempt: RFC 6749 §4.1.2 single use.
    assert_token_error(exchange(client, cid, secret, code, verifier), "invalid_grant")


def test_plain_verifier_equal_to_challenge_fails(user, client):
    # Sending the challenge itself as verifier (what `plain` would accept) must fail.
    cid, _ = make_client(public=True)
    code, _, params = get_code(client, cid)
    assert_token_error(exchange(client, cid, None, code, params["code_challenge"]), "invalid_grant")


@pytest.mark.parametrize("verifier", ["short", "a" * 129, "a" * 43 + "!"])
def test_malformed_code_verifier(user, client, verifier):
    cid, _ = make_client(public=True)
    code, _, _ = get_code(client, cid)
    assert_token_error(exchange(client, cid, None, code, verifier), "invalid_request")


def test_verifier_without_challenge_is_refused(user, client):
    # RFC 9700 §4.8: a code_verifier for a code that had no code_challenge is a downgrade.
    cid, secret = make_client()
    code, _ = code_without_pkce(client, cid)
    assert_token_error(exchange(client, cid, secret, code, pkce_pair()[0]), "invalid_request")


@pytest.mark.parametrize("public", [True, False])
def test_token_request_without_verifier(user, client, public):
    cid, secret = make_client(public=public)
    code, _, _ = get_code(client, cid)
    assert_token_error(exchange(client, cid, secret, code, None), "invalid_request")


def test_verifier_is_bound_to_its_code(user, client):
    cid, _ = make_client(public=True)
    code_a, verifier_a, _ = get_code(client, cid)
    code_b, verifier_b, _ = get_code(client, cid)
    assert_token_error(exchange(client, cid, None, code_a, verifier_b), "invalid_grant")
    ok = exchange(client, cid, None, code_b, verifier_b)
    assert ok.status_code == 200, ok.get_json()


def test_public_client_full_flow(user, client):
    cid, _ = make_client(public=True)
    code, verifier, params = get_code(client, cid)
    expected = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    assert params["code_challenge"] == expected and params["code_challenge_method"] == "S256"
    response = exchange(client, cid, None, code, verifier)
    assert response.status_code == 200, response.get_json()
    assert {"access_token", "id_token", "refresh_token"} <= set(response.get_json())
