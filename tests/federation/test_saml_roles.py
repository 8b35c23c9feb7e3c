"""SAML groups -> roles (issue 7): a connection's attribute map grants roles from upstream
groups; at each login the roles it granted follow the IdP (added, removed), roles assigned
otherwise stay. Checked through the round trip: ID token, userinfo and a policy decision."""

from __future__ import annotations

import pytest
from joserfc import jwt
from sqlalchemy import select

from idp.errors import InvalidInput
from idp.federation.mapping import check_map, map_identity
from idp.policy import admin
from idp.policy.cache import policy_cache
from idp.storage.federation_models import FederatedIdentity
from idp.storage.models import User, db
from tests.factories import exchange, make_client, query

from .conftest import Flow, add_connection

ADMINS = "CN=Admins,OU=Groups,DC=corp,DC=example"
STAFF = "CN=Staff,OU=Groups,DC=corp,DC=example"
MAP = {"roles": {"from": "groups", "map": {ADMINS: "admin", STAFF: ["staff", "reader"]}}}
EMAIL = "alice@corp.example.test"


@pytest.fixture()
def setup(app, test_idp):
    with app.app_context():
        admin.create_role("admin", permissions=["document:write"])
        admin.create_role("staff", permissions=["document:read"])
        admin.create_role("auditor", permissions=["audit:read"])
        cid, secret = make_client(scope="openid profile email roles permissions")
    add_connection(app, test_idp, attribute_map=MAP)
    return cid, secret


def login(app, test_idp, client, groups: list[str]) -> dict:
    cid, secret = client
    flow = Flow(app, test_idp, client_id=cid)
    flow.secret = secret
    flow.params["scope"] = "openid email roles permissions"
    request, relay = flow.start()
    identity = {"mail": [EMAIL], "displayName": ["Alice"], "memberOf": groups}
    final = flow.finish(flow.post(test_idp.response_xml(request, identity=identity), relay))
    assert final.status_code == 302, final.get_data(as_text=True)[:400]
    tokens = exchange(flow.browser, cid, secret, query(final.headers["Location"])["code"], flow.verifier).get_json()
    id_token = jwt.decode(tokens["id_token"], app.extensions["idp"].keyring.public_keys()).claims
    userinfo = flow.browser.get("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert userinfo.status_code == 200, userinfo.get_data(as_text=True)
    return {"id_token": id_token, "userinfo": userinfo.get_json()}


def decide(app, permission: str) -> bool:
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == EMAIL))
        cache = policy_cache()
        cache.invalidate()
        return cache.policy().decide(cache.subject(user), permission).allowed


def test_groups_grant_roles_seen_in_tokens_userinfo_and_decisions(app, test_idp, setup):
    seen = login(app, test_idp, setup, [ADMINS.lower(), "CN=Other"])  # matched case-insensitively
    assert seen["id_token"]["roles"] == ["admin"] and "document:write" in seen["id_token"]["permissions"]
    assert seen["userinfo"]["roles"] == ["admin"]
    assert decide(app, "document:write") and not decide(app, "document:read")


def test_roles_follow_the_idp_and_manual_roles_stay(app, test_idp, setup):
    login(app, test_idp, setup, [ADMINS])
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == EMAIL))
        admin.assign_role(user, "auditor")          # by the operator: not the connection's
        admin.assign_role(user, "staff")            # held before the IdP ever granted it
    seen = login(app, test_idp, setup, [STAFF])   # no longer an admin; now staff
    assert sorted(seen["id_token"]["roles"]) == ["auditor", "staff"]
    assert not decide(app, "document:write") and decide(app, "document:read")
    with app.app_context():
        link = db.session.scalar(select(FederatedIdentity))
        assert link.granted_roles == []  # staff was the operator's; "reader" does not exist
    seen = login(app, test_idp, setup, [])        # the IdP sends no group: staff stays (not granted by it)
    assert sorted(seen["userinfo"]["roles"]) == ["auditor", "staff"]


def test_a_role_granted_by_the_idp_is_removed_when_the_group_goes(app, test_idp, setup):
    assert login(app, test_idp, setup, [ADMINS, STAFF])["id_token"]["roles"] == ["admin", "staff"]
    assert login(app, test_idp, setup, [STAFF])["id_token"]["roles"] == ["staff"]
    assert login(app, test_idp, setup, [])["userinfo"].get("roles", []) == []


@pytest.mark.parametrize("roles", [
    {"map": "admin"}, {"from": "", "map": {}}, {"map": {ADMINS: "bad role"}}, {"map": {ADMINS: [1]}},
    {"from": "groups", "map": {}, "extra": 1}, ["admin"],
])
def test_bad_roles_map_is_refused(roles):
    with pytest.raises(InvalidInput, match="roles"):
        check_map({"roles": roles})


def test_roles_from_an_attribute():
    map_ = check_map({"roles": {"from": "department", "map": {"finance": "payer"}}})
    identity = map_identity(map_, provider="c", protocol="saml", name_id="a@b.example",
                            attributes={"department": ["Finance"], "memberOf": ["finance"]})
    assert identity.roles == ("payer",)
