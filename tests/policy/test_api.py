"""POST /api/v1/authorize and GET /api/v1/me/permissions (RFC 6750 Bearer errors), and claims
by scope in the ID token, the access token, userinfo and introspection."""

from __future__ import annotations

import base64
import json

import pytest

from idp.policy import admin
from idp.policy.files import load_document
from tests.factories import exchange, get_code, make_client, make_user

from .conftest import POLICY

SCOPES = "openid profile email offline_access roles permissions department api:read authz:decide"


def jwt_claims(token: str) -> dict:
    body = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


@pytest.fixture()
def setup(ctx, client):
    load_document(POLICY)
    user = make_user()
    admin.add_member("writers", user)
    admin.set_attributes(user, ["department=eng"])
    client_id, secret = make_client(scope=SCOPES, skip_consent=True)
    return user, client_id, secret


def login(client, client_id, secret, scope):
    code, verifier, _ = get_code(client, client_id, scope=scope)
    response = exchange(client, client_id, secret, code, verifier)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def authorize(client, token, body, content_type="application/json"):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = json.dumps(body) if not isinstance(body, str) else body
    return client.post("/api/v1/authorize", data=data, headers=headers, content_type=content_type)


def test_user_decision_api(client, setup):
    user, client_id, secret = setup
    token = login(client, client_id, secret, "openid")["access_token"]
    r = authorize(client, token, {"resource": "document", "action": "write", "resource_id": "d1",
                                  "resource_attributes": {"department": "eng"}})
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    assert r.get_json() == {"authorized": True, "permission": "document:write",
                            "reason": "granted by role editor (group writers): document:write; "
                                      "rules: same-department-writes, no-writes-when-suspended"}
    r = authorize(client, token, {"resource": "document", "action": "write",
                                  "resource_attributes": {"department": "ops"}})
    assert r.get_json()["authorized"] is False
    assert r.get_json()["reason"] == "allow rule same-department-writes did not match"


def test_user_cannot_claim_an_office_ip(client, setup):
    """For a user's token, ip and time come from the request, not from the body."""
    user, client_id, secret = setup
    token = login(client, client_id, secret, "openid")["access_token"]
    r = authorize(client, token, {"resource": "document", "action": "delete",
                                  "context": {"ip": "10.0.0.1", "time": "09:00"}})
    assert r.get_json()["authorized"] is False  # the test client's address is 127.0.0.1


def test_resource_server_decides_for_a_subject(client, setup):
    user, client_id, secret = setup
    token = client.post("/token", data={"grant_type": "client_credentials", "scope": "authz:decide"},
                        auth=(client_id, secret)).get_json()["access_token"]
    body = {"resource": "document", "action": "delete", "subject": user.id,
            "context": {"ip": "10.0.0.1", "time": "09:00"}}
    assert authorize(client, token, body).get_json()["authorized"] is True
    assert authorize(client, token, {**body, "context": {"ip": "10.0.0.1", "time": "20:00"}}
                     ).get_json()["authorized"] is False
    r = authorize(client, token, {**body, "subject": "no-such-user"})
    assert r.status_code == 200 and r.get_json()["authorized"] is False
    r = authorize(client, token, {"resource": "document", "action": "read"})
    assert r.status_code == 400 and r.get_json()["error"] == "invalid_request"


def test_client_token_without_decide_scope_is_insufficient_scope(client, setup):
    user, client_id, secret = setup
    token = client.post("/token", data={"grant_type": "client_credentials", "scope": "api:read"},
                        auth=(client_id, secret)).get_json()["access_token"]
    r = authorize(client, token, {"resource": "document", "action": "read", "subject": user.id})
    assert r.status_code == 403 and r.get_json()["error"] == "insufficient_scope"
    assert r.headers["WWW-Authenticate"].startswith('Bearer error="insufficient_scope"')


@pytest.mark.parametrize("token,body,content_type,status,error", [
    (None, {"resource": "d", "action": "r"}, "application/json", 401, "invalid_token"),
    ("garbage", {"resource": "d", "action": "r"}, "application/json", 401, "invalid_token"),
    ("VALID", "not json", "application/json", 400, "invalid_request"),
    ("VALID", {"resource": "d", "action": "r"}, "application/x-www-form-urlencoded", 400, "invalid_request"),
    ("VALID", {"resource": "d:x", "action": "r"}, "application/json", 400, "invalid_request"),
    ("VALID", {"resource": "d", "action": "r", "resource_attributes": {"a": {"nested": 1}}},
     "application/json", 400, "invalid_request"),
    ("VALID", {"resource": "d", "action": "r", "subject": "someone-else"}, "application/json", 400,
     "invalid_request"),
])
def test_decision_api_errors(client, setup, token, body, content_type, status, error):
    user, client_id, secret = setup
    if token == "VALID":
        token = login(client, client_id, secret, "openid")["access_token"]
    r = authorize(client, token, body, content_type)
    assert r.status_code == status and r.get_json()["error"] == error
    assert r.headers["Cache-Control"] == "no-store"
    if status == 401:
        assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_me_permissions(client, setup):
    user, client_id, secret = setup
    admin.grant_user_permissions(user, ["report:export"])
    token = login(client, client_id, secret, "openid")["access_token"]
    r = client.get("/api/v1/me/permissions", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200
    assert r.get_json() == {"sub": user.id, "roles": [], "groups": ["writers"],
                            "effective_roles": ["editor", "viewer"], "direct_permissions": ["report:export"],
                            "permissions": ["document:delete", "document:read", "document:write",
                                            "report:export"]}
    assert client.get("/api/v1/me/permissions").status_code == 401


def test_claims_by_scope_in_every_token_and_endpoint(client, setup):
    user, client_id, secret = setup
    tokens = login(client, client_id, secret, "openid roles permissions department")
    id_token, access = jwt_claims(tokens["id_token"]), jwt_claims(tokens["access_token"])
    expected = {"roles": ["editor", "viewer"], "department": "eng",
                "permissions": ["document:delete", "document:read", "document:write"]}
    for claims in (id_token, access):
        assert {k: claims[k] for k in expected} == expected
        assert "omitted_claims" not in claims
    info = client.get("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}).get_json()
    assert {k: info[k] for k in expected} == expected
    intro = client.post("/introspect", data={"token": tokens["access_token"]}, auth=(client_id, secret)).get_json()
    assert intro["active"] and {k: intro[k] for k in expected} == expected


def test_no_policy_claims_without_their_scope(client, setup):
    user, client_id, secret = setup
    tokens = login(client, client_id, secret, "openid email")
    for claims in (jwt_claims(tokens["id_token"]), jwt_claims(tokens["access_token"])):
        assert not {"roles", "permissions", "department"} & set(claims)


def test_scope_the_client_is_not_registered_for_is_refused(client, ctx):
    make_user()
    client_id, secret = make_client(scope="openid email", skip_consent=True)
    from tests.factories import auth_params, follow_login, pkce_pair, query
    _, challenge = pkce_pair()
    r = follow_login(client, auth_params(client_id, challenge, scope="openid roles"))
    assert query(r.headers["Location"])["error"] == "invalid_scope"


def test_large_claims_leave_the_tokens_but_stay_at_userinfo_and_introspection(client, setup):
    user, client_id, secret = setup
    perms = [f"resource{i:03}:action-with-a-long-name" for i in range(150)]
    admin.grant_user_permissions(user, perms)
    tokens = login(client, client_id, secret, "openid roles permissions department")
    assert len(tokens["id_token"]) <= 4096 and len(tokens["access_token"]) <= 4096
    for claims in (jwt_claims(tokens["id_token"]), jwt_claims(tokens["access_token"])):
        assert claims["omitted_claims"] == ["permissions"]
        assert "permissions" not in claims and claims["roles"] == ["editor", "viewer"]
    info = client.get("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}).get_json()
    assert len(info["permissions"]) == 153
    intro = client.post("/introspect", data={"token": tokens["access_token"]}, auth=(client_id, secret)).get_json()
    assert len(intro["permissions"]) == 153


def test_discovery_advertises_the_policy_scopes(client):
    meta = client.get("/.well-known/openid-configuration").get_json()
    assert {"roles", "permissions"} <= set(meta["scopes_supported"])
    assert {"roles", "permissions"} <= set(meta["claims_supported"])


def test_me_permissions_leaves_out_expired_role_assignments(client, setup):
    from datetime import UTC, datetime, timedelta

    user, client_id, secret = setup
    admin.assign_role(user, "viewer", expires_at=datetime.now(UTC) - timedelta(minutes=1))
    later = datetime.now(UTC) + timedelta(days=1)
    admin.assign_role(user, "editor", expires_at=later)
    token = login(client, client_id, secret, "openid")["access_token"]
    body = client.get("/api/v1/me/permissions", headers={"Authorization": f"Bearer {token}"}).get_json()
    assert body["roles"] == [{"role": "editor", "expires_at": later.isoformat()}]
