"""Interop with Node `openid-client` v6 (panva), a certified RP library, against the live server.

Each test drives rp.mjs step by step (one `node rp.mjs serve` per RP, a JSON line per step)
and a scripted browser (useragent.py) for the hosted login/consent/logout pages. openid-client
validates what an RP must: discovery issuer match, RFC 9207 `iss` and `state` in the
authorization response, PKCE, ID token signature (against jwks_uri: enableNonRepudiationChecks),
iss, aud, azp, exp, iat, nonce, auth_time vs max_age, and userinfo `sub` equal to the ID
token's. rp.mjs adds at_hash.
"""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import requests

from .conftest import POST_LOGOUT_URI, REDIRECT_URI, NodeRP
from .useragent import UserAgent


def login(node: NodeRP, ua: UserAgent, *, params: dict | None = None, max_age: int | None = None) -> dict:
    """Authorization code flow (PKCE S256 + state + nonce) through the browser; returns the
    token response with the validated ID token claims."""
    start = node.ok("start", redirect_uri=REDIRECT_URI, scope=node.rp.scope, params=params or {})
    assert parse_qs(urlsplit(start["url"]).query)["code_challenge_method"] == ["S256"]
    callback = ua.navigate(start["url"], REDIRECT_URI)
    form_post = (params or {}).get("response_mode") == "form_post"
    assert (ua.steps[-1][0] == "form_post") == form_post, ua.steps
    out = node.ok("callback", callback_url=callback, state=start["state"], nonce=start["nonce"],
                  code_verifier=start["code_verifier"], max_age=max_age, form_post=form_post)
    # The ID token signature was checked against the published keys (not just trusted).
    meta = node.ok("discover")["metadata"]
    assert f"GET {meta['jwks_uri']}" in out["http_requests"], out["http_requests"]
    assert f"POST {meta['token_endpoint']}" in out["http_requests"], out["http_requests"]
    return out["tokens"]


def check_id_token(tokens: dict, rp, live_server, email: str) -> dict:
    claims = tokens["claims"]
    # openid-client already rejected any mismatch; these make the expectations explicit.
    assert claims["iss"] == live_server.url
    assert claims["aud"] == rp.client_id or claims["aud"] == [rp.client_id]
    assert isinstance(claims["auth_time"], int) and claims["auth_time"] <= time.time() + 5
    assert tokens["id_token_header"]["alg"] == "RS256" and tokens["id_token_header"].get("kid")
    jwks = requests.get(live_server.url + "/jwks.json", timeout=10).json()
    assert tokens["id_token_header"]["kid"] in {k["kid"] for k in jwks["keys"]}
    assert tokens["at_hash_ok"] is True, "at_hash does not match the access token"
    # The granted scopes' claims are in the ID token too (most RPs read them from there).
    assert claims["email"] == email and claims["email_verified"] is True and claims["name"]
    return claims


def test_discovery(live_server, register, node_rp):
    rp = register()
    node = node_rp(rp)
    meta = node.ok("discover")["metadata"]
    assert meta["issuer"] == live_server.url
    for key in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri",
                "introspection_endpoint", "revocation_endpoint", "end_session_endpoint"):
        assert meta[key].startswith(live_server.url + "/"), key
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert "code" in meta["response_types_supported"]
    assert meta.get("authorization_response_iss_parameter_supported") is True
    # RFC 8414 metadata: same issuer and endpoints (openid-client checks the issuer matches).
    out = node.ok("discover", discovery="oauth2")
    assert f"GET {live_server.url}/.well-known/oauth-authorization-server" in out["http_requests"]
    oauth_meta = out["metadata"]
    for key in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri", "introspection_endpoint",
                "revocation_endpoint", "code_challenge_methods_supported"):
        assert oauth_meta[key] == meta[key], key


def test_code_flow_userinfo_refresh_introspect_revoke(live_server, register, node_rp, person):
    rp = register("client_secret_basic")
    node = node_rp(rp)
    ua = UserAgent(person.email, person.password)

    tokens = login(node, ua)
    assert ua.saw("login") == 1 and ua.saw("consent") == 1, ua.steps
    claims = check_id_token(tokens, rp, live_server, person.email)
    sub = claims["sub"]
    assert tokens["token_type"].lower() == "bearer"
    assert tokens.get("refresh_token"), "offline_access was granted: a refresh token is expected"

    # userinfo: openid-client checks that sub equals the ID token's.
    info = node.ok("userinfo", access_token=tokens["access_token"], sub=sub)["userinfo"]
    assert info["sub"] == sub and info["email"] == person.email and info["email_verified"] is True
    assert info["name"] == person.name

    intro = node.ok("introspect", token=tokens["access_token"])["introspection"]
    assert intro["active"] is True
    assert intro["client_id"] == rp.client_id and intro["sub"] == sub and intro["iss"] == live_server.url
    assert set(intro["scope"].split()) >= {"openid", "email"}
    assert intro["exp"] > time.time()

    # Refresh rotates: a new refresh token, and the old one is then dead.
    new = node.ok("refresh", refresh_token=tokens["refresh_token"])["tokens"]
    assert new["access_token"] and new["access_token"] != tokens["access_token"]
    assert new["refresh_token"] and new["refresh_token"] != tokens["refresh_token"]
    if "claims" in new:  # an ID token on refresh is optional; when sent, openid-client validated it
        assert new["claims"]["sub"] == sub and new["at_hash_ok"] is True

    # Revoking the access token: introspection says inactive, userinfo refuses it.
    assert node.ok("revoke", token=new["access_token"], token_type_hint="access_token")["revoked"]
    assert node.ok("introspect", token=new["access_token"])["introspection"]["active"] is False
    err = node.error("userinfo", access_token=new["access_token"], sub=sub)
    assert err["status"] == 401 and err["error"] == "invalid_token", err

    # Revoking the refresh token ends it (introspection inactive, refresh refused).
    assert node.ok("introspect", token=new["refresh_token"],
                   token_type_hint="refresh_token")["introspection"]["active"] is True
    assert node.ok("revoke", token=new["refresh_token"], token_type_hint="refresh_token")["revoked"]
    assert node.ok("introspect", token=new["refresh_token"])["introspection"]["active"] is False
    err = node.error("refresh", refresh_token=new["refresh_token"])
    assert err["error"] == "invalid_grant", err

    # Revocation of an unknown token is not an error (RFC 7009 §2.2).
    assert node.ok("revoke", token="no-such-token")["revoked"]


def test_refresh_token_reuse_fails_and_revokes_family(live_server, register, node_rp, person):
    rp = register("client_secret_post")
    node = node_rp(rp)
    tokens = login(node, UserAgent(person.email, person.password))
    first = tokens["refresh_token"]
    second = node.ok("refresh", refresh_token=first)["tokens"]
    assert second["refresh_token"] != first
    err = node.error("refresh", refresh_token=first)
    assert err["error"] == "invalid_grant", err
    # Reuse of a rotated token revokes the whole family, the newest token too.
    err = node.error("refresh", refresh_token=second["refresh_token"])
    assert err["error"] == "invalid_grant", err
    assert node.ok("introspect", token=second["access_token"])["introspection"]["active"] is False


def test_public_client_pkce(live_server, register, node_rp, person):
    rp = register("none", name="Interop SPA")
    assert rp.client_secret is None
    node = node_rp(rp)
    tokens = login(node, UserAgent(person.email, person.password))
    claims = check_id_token(tokens, rp, live_server, person.email)
    info = node.ok("userinfo", access_token=tokens["access_token"], sub=claims["sub"])["userinfo"]
    assert info["sub"] == claims["sub"]
    new = node.ok("refresh", refresh_token=tokens["refresh_token"])["tokens"]
    assert new["refresh_token"] != tokens["refresh_token"]
    # A public client revokes its own refresh token without authenticating (auth method none).
    assert node.ok("revoke", token=new["refresh_token"], token_type_hint="refresh_token")["revoked"]
    err = node.error("refresh", refresh_token=new["refresh_token"])
    assert err["error"] == "invalid_grant", err


def test_client_credentials(live_server, register, node_rp):
    rp = register("client_secret_basic", scope="openid offline_access api:read api:write")
    node = node_rp(rp)
    tokens = node.ok("client_credentials", scope="api:read api:write")["tokens"]
    assert tokens["access_token"] and tokens["token_type"].lower() == "bearer"
    assert "refresh_token" not in tokens and "id_token" not in tokens
    intro = node.ok("introspect", token=tokens["access_token"])["introspection"]
    assert intro["active"] is True and intro["client_id"] == rp.client_id
    assert set(intro["scope"].split()) == {"api:read", "api:write"}
    # A scope the client is not registered for is refused.
    err = node.error("client_credentials", scope="api:admin")
    assert err["error"] == "invalid_scope", err
    node.ok("revoke", token=tokens["access_token"])
    assert node.ok("introspect", token=tokens["access_token"])["introspection"]["active"] is False
    # A wrong secret is refused.
    bad = node_rp(type(rp)(rp.issuer, rp.client_id, "wrong-" + rp.client_secret, rp.auth_method))
    err = bad.error("client_credentials")
    assert err["error"] == "invalid_client" and err["status"] == 401, err


def test_response_mode_form_post(live_server, register, node_rp, person):
    rp = register()
    node = node_rp(rp)
    ua = UserAgent(person.email, person.password)
    tokens = login(node, ua, params={"response_mode": "form_post"})
    check_id_token(tokens, rp, live_server, person.email)


def test_consent_denied(live_server, register, node_rp, person):
    rp = register()
    node = node_rp(rp)
    ua = UserAgent(person.email, person.password)
    start = node.ok("start", redirect_uri=REDIRECT_URI, scope=rp.scope)
    callback = ua.navigate(start["url"], REDIRECT_URI, decision="deny")
    assert ua.saw("consent") == 1, ua.steps
    err = node.error("callback", callback_url=callback, state=start["state"], nonce=start["nonce"],
                     code_verifier=start["code_verifier"])
    assert err["error"] == "access_denied", err


def test_prompt_none(live_server, register, node_rp, person):
    rp = register()
    node = node_rp(rp)
    ua = UserAgent(person.email, person.password)
    first = login(node, ua)

    # With a session (and consent given): a code straight away, no page shown.
    again = login(node, ua, params={"prompt": "none"})
    assert ua.saw("login") == 0 and ua.saw("consent") == 0, ua.steps
    assert again["claims"]["sub"] == first["claims"]["sub"]
    assert again["claims"]["auth_time"] == first["claims"]["auth_time"]

    # Without a session: login_required back at the RP (openid-client checked iss and state).
    stranger = UserAgent()
    start = node.ok("start", redirect_uri=REDIRECT_URI, scope=rp.scope, params={"prompt": "none"})
    callback = stranger.navigate(start["url"], REDIRECT_URI)
    assert stranger.saw("login") == 0, stranger.steps
    query = parse_qs(urlsplit(callback).query)
    assert query["state"] == [start["state"]] and query["iss"] == [live_server.url]
    err = node.error("callback", callback_url=callback, state=start["state"], nonce=start["nonce"],
                     code_verifier=start["code_verifier"])
    assert err["error"] == "login_required", err


def test_max_age(live_server, register, node_rp, person):
    rp = register()
    node = node_rp(rp)
    ua = UserAgent(person.email, person.password)
    first = login(node, ua, params={"max_age": "300"}, max_age=300)
    assert isinstance(first["claims"]["auth_time"], int)

    # Same browser, max_age=0: the password is asked again, auth_time is fresh.
    time.sleep(1.1)
    second = login(node, ua, params={"max_age": "0"}, max_age=0)
    assert ua.saw("login") == 1, ua.steps
    assert second["claims"]["auth_time"] > first["claims"]["auth_time"]
    assert second["claims"]["sub"] == first["claims"]["sub"]


def test_rp_initiated_logout(live_server, register, node_rp, person):
    rp = register()
    node = node_rp(rp)
    ua = UserAgent(person.email, person.password)
    tokens = login(node, ua)

    url = node.ok("end_session", id_token_hint=tokens["id_token"], post_logout_redirect_uri=POST_LOGOUT_URI,
                  state="bye-123")["url"]
    meta = node.ok("discover")["metadata"]
    assert url.startswith(meta["end_session_endpoint"] + "?")
    back = ua.navigate(url, POST_LOGOUT_URI)
    assert ua.saw("logout") == 1, ua.steps
    assert parse_qs(urlsplit(back).query).get("state") == ["bye-123"], back

    # The IdP session is gone: prompt=none now gets login_required.
    start = node.ok("start", redirect_uri=REDIRECT_URI, scope=rp.scope, params={"prompt": "none"})
    callback = ua.navigate(start["url"], REDIRECT_URI)
    err = node.error("callback", callback_url=callback, state=start["state"], nonce=start["nonce"],
                     code_verifier=start["code_verifier"])
    assert err["error"] == "login_required", err
