"""Claims by scope and the decision API end to end with Python `oic` (an independent RP
library) against the live gunicorn server; a policy change made here (another "node") reaches
its workers within 5 seconds."""

from __future__ import annotations

import time

import requests
from oic.oauth2.message import CCAccessTokenRequest
from oic.oic.message import AccessTokenResponse, OpenIDSchema

from tests.interop.conftest import person, register  # noqa: F401  (fixtures)
from tests.interop.test_oic import OicRP
from tests.interop.useragent import UserAgent

from .conftest import POLICY

SCOPE = "openid email roles permissions department"


def test_claims_by_scope_and_decisions_through_oic(app, live_server, register, person):  # noqa: F811
    from idp.policy import admin
    from idp.policy.files import load_document
    from idp.services.users import find_user

    with app.app_context():
        load_document(POLICY)
        user = find_user(person.email)
        admin.add_member("writers", user)
        admin.set_attributes(user, ["department=eng"])
        user_id = user.id
    rp = register("client_secret_basic", scope=SCOPE + " authz:decide")
    rp.scope = SCOPE
    oic_rp = OicRP(rp)
    state, atr = oic_rp.login(UserAgent(person.email, person.password))
    idt = atr["id_token"]  # verified by oic: signature, iss, aud, nonce
    assert idt["roles"] == ["editor", "viewer"] and idt["department"] == "eng"
    assert idt["permissions"] == ["document:delete", "document:read", "document:write"]
    info = oic_rp.client.do_user_info_request(state=state, behavior="use_authorization_header")
    assert isinstance(info, OpenIDSchema) and info["roles"] == ["editor", "viewer"] and info["department"] == "eng"
    intro = oic_rp.introspect(atr["access_token"])
    assert intro["active"] and intro["department"] == "eng" and intro["roles"] == ["editor", "viewer"]

    api = live_server.url + "/api/v1/authorize"
    bearer = {"Authorization": "Bearer " + atr["access_token"]}
    body = {"resource": "document", "action": "write", "resource_attributes": {"department": "eng"}}
    r = requests.post(api, json=body, headers=bearer, timeout=10)
    assert r.status_code == 200 and r.json()["authorized"] is True, r.text
    me = requests.get(live_server.url + "/api/v1/me/permissions", headers=bearer, timeout=10).json()
    assert me["effective_roles"] == ["editor", "viewer"] and me["groups"] == ["writers"]

    # A resource server with client credentials (scope authz:decide) names the subject.
    cc = oic_rp.client.do_any(CCAccessTokenRequest, endpoint=oic_rp.config["token_endpoint"],
                              request_args={"grant_type": "client_credentials", "scope": "authz:decide"},
                              response=AccessTokenResponse, authn_method="client_secret_basic")
    assert isinstance(cc, AccessTokenResponse), cc.to_dict()
    rs = {"Authorization": "Bearer " + cc["access_token"]}
    r = requests.post(api, json={"resource": "document", "action": "delete", "subject": user_id,
                                 "context": {"ip": "10.9.8.7", "time": "10:00"}}, headers=rs, timeout=10)
    assert r.json() == {"authorized": True, "permission": "document:delete",
                        "reason": "granted by role editor (group writers): document:delete; "
                                  "rules: office-hours-deletes, no-writes-when-suspended"}

    # A change made elsewhere reaches every worker within 5 s (IDP_POLICY_REFRESH_TTL = 2).
    with app.app_context():
        admin.remove_member("writers", find_user(person.email))
    changed_at, seen = time.monotonic(), 0
    while time.monotonic() - changed_at < 5:
        answers = [requests.post(api, json=body, headers=bearer, timeout=10).json()["authorized"] for _ in range(4)]
        if not any(answers):  # several requests: both workers have seen it
            seen += 1
            if seen == 3:
                break
        time.sleep(0.2)
    assert seen == 3, "the policy change did not reach the workers within 5 seconds"
