"""Interop with Python `oic` (pyoidc, a certified RP library), against the live server.

oic does: discovery with issuer check (provider_config), JWKS loading into its key jar,
the authorization request (its own PKCE S256 helper), parsing of the authorization response
(state, RFC 9207 `iss`), the token request with client authentication, ID token verification
(signature with the JWKS key by kid, iss, aud, azp, exp, iat, and nonce against the request),
userinfo with the `sub` check against the ID token, refresh, and - through its extension
client - introspection and revocation. at_hash is checked with oic's verify_id_token.
"""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from jwkest import BadSignature
from oic import rndstr
from oic.extension.client import Client as ExtensionClient
from oic.oauth2.grant import Token
from oic.oauth2.message import CCAccessTokenRequest, ErrorResponse
from oic.oic import Client
from oic.oic.message import (
    AccessTokenResponse,
    AuthorizationResponse,
    EndSessionRequest,
    IdToken,
    Message,
    OpenIDSchema,
    RegistrationResponse,
    verify_id_token,
)
from oic.utils.authn.client import CLIENT_AUTHN_METHOD

from .conftest import POST_LOGOUT_URI, REDIRECT_URI, RP
from .useragent import UserAgent


class OicRP:
    """One oic Client configured from discovery, with the registration stored by hand."""

    def __init__(self, rp: RP):
        self.rp = rp
        self.client = Client(client_authn_method=CLIENT_AUTHN_METHOD)
        self.config = self.client.provider_config(rp.issuer)  # checks issuer, loads the JWKS
        reg = {"client_id": rp.client_id, "redirect_uris": [REDIRECT_URI],
               "token_endpoint_auth_method": rp.auth_method, "post_logout_redirect_uris": [POST_LOGOUT_URI]}
        if rp.client_secret:
            reg["client_secret"] = rp.client_secret
        self.client.store_registration_info(RegistrationResponse(**reg))
        self.client.redirect_uris = [REDIRECT_URI]
        self.authn = rp.auth_method if rp.auth_method != "none" else ""

    def authorization_url(self, **extra) -> tuple[str, str, str, str]:
        state, nonce = rndstr(24), rndstr(24)
        pkce, verifier = self.client.add_code_challenge()  # S256 by default
        assert pkce["code_challenge_method"] == "S256"
        args = {"response_type": "code", "scope": self.rp.scope, "redirect_uri": REDIRECT_URI,
                "state": state, "nonce": nonce, **pkce, **extra}
        url, _, _, _ = self.client.authorization_request_info(request_args=args)
        return url, state, nonce, verifier

    def parse_callback(self, callback: str):
        query = urlsplit(callback).query
        return self.client.parse_response(AuthorizationResponse, info=query, sformat="urlencoded")

    def exchange(self, state: str, code: str, verifier: str) -> AccessTokenResponse:
        return self.client.do_access_token_request(
            state=state, request_args={"code": code, "code_verifier": verifier, "redirect_uri": REDIRECT_URI},
            authn_method=self.authn)

    def login(self, ua: UserAgent, **extra) -> tuple[str, AccessTokenResponse]:
        url, state, nonce, verifier = self.authorization_url(**extra)
        callback = ua.navigate(url, REDIRECT_URI)
        aresp = self.parse_callback(callback)
        assert isinstance(aresp, AuthorizationResponse), aresp.to_dict()
        assert aresp["state"] == state and aresp["iss"] == self.rp.issuer
        atr = self.exchange(state, aresp["code"], verifier)
        assert isinstance(atr, AccessTokenResponse), atr.to_dict()
        idt = atr["id_token"]
        assert isinstance(idt, IdToken)  # verified by oic: signature, iss, aud, exp, iat
        assert idt["nonce"] == nonce
        return state, atr

    def check_at_hash(self, atr: AccessTokenResponse) -> IdToken:
        msg = Message(id_token=atr["id_token_jwt"], access_token=atr["access_token"])
        return verify_id_token(msg, check_hash=True, keyjar=self.client.keyjar, iss=self.rp.issuer,
                               client_id=self.rp.client_id)

    def extension_client(self) -> ExtensionClient:
        ext = ExtensionClient(client_id=self.rp.client_id, client_authn_method=CLIENT_AUTHN_METHOD)
        ext.client_secret = self.rp.client_secret
        ext.provider_info = self.client.provider_info
        ext.introspection_endpoint = self.config["introspection_endpoint"]
        ext.revocation_endpoint = self.config["revocation_endpoint"]
        ext.token_endpoint = self.config["token_endpoint"]
        return ext

    def introspect(self, token: str, hint: str | None = None) -> dict:
        args = {"token": token, **({"token_type_hint": hint} if hint else {})}
        resp = self.extension_client().do_token_introspection(request_args=args, authn_method=self.authn)
        assert not isinstance(resp, ErrorResponse), resp.to_dict()
        return resp.to_dict()

    def revoke(self, token: str, hint: str | None = None) -> int:
        args = {"token": token, **({"token_type_hint": hint} if hint else {})}
        return self.extension_client().do_token_revocation(request_args=args, authn_method=self.authn)

    def refresh_with(self, refresh_token: str):
        """Refresh with an explicit refresh token (oic would otherwise pick the grant's newest)."""
        token = Token(AccessTokenResponse(refresh_token=refresh_token, access_token="unused",
                                          token_type="Bearer"))
        return self.client.do_access_token_refresh(token=token, authn_method=self.authn)


def test_discovery_and_jwks(live_server, register):
    oic_rp = OicRP(register())
    cfg = oic_rp.config
    assert cfg["issuer"] == live_server.url
    assert cfg["jwks_uri"].startswith(live_server.url)
    assert "S256" in cfg["code_challenge_methods_supported"]
    keys = oic_rp.client.keyjar.get_issuer_keys(live_server.url)
    assert any(k.kty == "RSA" and k.kid for k in keys), "oic loaded no RSA key with a kid from jwks_uri"
    assert not any(getattr(k, "d", None) for k in keys), "the JWKS publishes a private key"


@pytest.mark.parametrize("auth_method", ["client_secret_basic", "client_secret_post"])
def test_code_flow_userinfo_refresh_introspect_revoke(live_server, register, person, auth_method):
    oic_rp = OicRP(register(auth_method))
    ua = UserAgent(person.email, person.password)
    state, atr = oic_rp.login(ua)
    assert ua.saw("login") == 1 and ua.saw("consent") == 1, ua.steps

    idt = oic_rp.check_at_hash(atr)  # raises AtHashError on mismatch
    # The verification is real: a token with a broken signature is refused by the same call.
    head, body, sig = atr["id_token_jwt"].split(".")
    forged = Message(id_token=f"{head}.{body}.{sig[:-6]}{'A' if sig[-6] != 'A' else 'B'}{sig[-5:]}",
                     access_token=atr["access_token"])
    with pytest.raises(BadSignature):
        verify_id_token(forged, check_hash=True, keyjar=oic_rp.client.keyjar, iss=live_server.url,
                        client_id=oic_rp.rp.client_id)
    assert idt["iss"] == live_server.url and oic_rp.rp.client_id in idt["aud"]
    assert idt.jws_header["alg"] == "RS256" and idt.jws_header.get("kid")
    assert isinstance(idt["auth_time"], int)
    sub = idt["sub"]
    assert atr.get("refresh_token")

    # userinfo, GET and POST with the Bearer header; oic checks sub against the ID token.
    for method in ("GET", "POST"):
        info = oic_rp.client.do_user_info_request(method=method, state=state, behavior="use_authorization_header")
        assert isinstance(info, OpenIDSchema), info.to_dict()
        assert info["sub"] == sub and info["email"] == person.email and info["name"] == person.name

    intro = oic_rp.introspect(atr["access_token"], "access_token")
    assert intro["active"] is True and intro["client_id"] == oic_rp.rp.client_id and intro["sub"] == sub

    # Refresh: rotation, then the old refresh token fails with invalid_grant.
    old_refresh = atr["refresh_token"]
    new = oic_rp.client.do_access_token_refresh(state=state, authn_method=oic_rp.authn)
    assert isinstance(new, AccessTokenResponse), new.to_dict()
    assert new["refresh_token"] != old_refresh and new["access_token"] != atr["access_token"]
    if "id_token" in new:  # verified by oic like the first one
        assert new["id_token"]["sub"] == sub
    assert oic_rp.introspect(new["access_token"])["active"] is True

    # Revocation of the new access token: inactive, and userinfo answers 401 invalid_token.
    assert oic_rp.revoke(new["access_token"], "access_token") == 200
    assert oic_rp.introspect(new["access_token"])["active"] is False
    # (RFC 6750 §3 puts the error in WWW-Authenticate; a body is optional, so check the header.)
    r = requests.get(oic_rp.config["userinfo_endpoint"], timeout=10,
                     headers={"Authorization": "Bearer " + new["access_token"]})
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers.get("WWW-Authenticate", ""), (
        r.status_code, r.headers, r.text)

    # Revocation of the new refresh token: it no longer refreshes.
    assert oic_rp.revoke(new["refresh_token"], "refresh_token") == 200
    assert oic_rp.introspect(new["refresh_token"], "refresh_token")["active"] is False
    err = oic_rp.refresh_with(new["refresh_token"])
    assert isinstance(err, ErrorResponse) and err["error"] == "invalid_grant", err.to_dict()

    # And the rotated-out one was already dead.
    err = oic_rp.refresh_with(old_refresh)
    assert isinstance(err, ErrorResponse) and err["error"] == "invalid_grant", err.to_dict()


def test_client_credentials(live_server, register):
    oic_rp = OicRP(register("client_secret_basic", scope="openid profile api:read api:write"))
    # oic asks for scope=openid unless told otherwise; a machine client has no end-user.
    resp = oic_rp.client.do_any(CCAccessTokenRequest, endpoint=oic_rp.config["token_endpoint"],
                                request_args={"grant_type": "client_credentials", "scope": "api:read"},
                                response=AccessTokenResponse, authn_method="client_secret_basic")
    assert isinstance(resp, AccessTokenResponse), resp.to_dict()
    assert resp["access_token"] and resp["token_type"].lower() == "bearer" and "refresh_token" not in resp
    intro = oic_rp.introspect(resp["access_token"])
    assert intro["active"] is True and intro["client_id"] == oic_rp.rp.client_id and intro["scope"] == "api:read"
    assert oic_rp.revoke(resp["access_token"]) == 200
    assert oic_rp.introspect(resp["access_token"])["active"] is False


def test_client_secret_basic_encodes_reserved_characters(live_server, register):
    # RFC 6749 §2.3.1: id and secret are form-urlencoded before Basic; oic does so (quote_plus).
    oic_rp = OicRP(register("client_secret_basic", scope="api:read", client_id="rp:oic+1/ü%"))
    resp = oic_rp.client.do_any(CCAccessTokenRequest, endpoint=oic_rp.config["token_endpoint"],
                                request_args={"grant_type": "client_credentials", "scope": "api:read"},
                                response=AccessTokenResponse, authn_method="client_secret_basic")
    assert isinstance(resp, AccessTokenResponse), resp.to_dict()
    assert oic_rp.introspect(resp["access_token"])["client_id"] == "rp:oic+1/ü%"


def test_prompt_none_login_and_max_age(live_server, register, person):
    oic_rp = OicRP(register())
    ua = UserAgent(person.email, person.password)
    _, first = oic_rp.login(ua, max_age=300)
    auth_time = first["id_token"]["auth_time"]
    assert abs(auth_time - time.time()) < 60

    # With a session: prompt=none gives a code without any page.
    _, again = oic_rp.login(ua, prompt="none")
    assert ua.saw("login") == 0 and ua.saw("consent") == 0, ua.steps
    assert again["id_token"]["auth_time"] == auth_time

    # max_age=0 forces the login form again, and a new auth_time.
    time.sleep(1.1)
    _, fresh = oic_rp.login(ua, max_age=0)
    assert ua.saw("login") == 1, ua.steps
    assert fresh["id_token"]["auth_time"] > auth_time

    # prompt=login does the same.
    _, relogin = oic_rp.login(ua, prompt="login")
    assert ua.saw("login") == 1 and ua.saw("consent") == 0, ua.steps
    assert relogin["id_token"]["auth_time"] >= fresh["id_token"]["auth_time"]

    # Without a session: login_required, with state and iss.
    url, state, _, _ = oic_rp.authorization_url(prompt="none")
    stranger = UserAgent()
    callback = stranger.navigate(url, REDIRECT_URI)
    resp = oic_rp.parse_callback(callback)
    assert isinstance(resp, ErrorResponse) and resp["error"] == "login_required", resp.to_dict()
    query = parse_qs(urlsplit(callback).query)
    assert query["state"] == [state] and query["iss"] == [live_server.url]


def test_rp_initiated_logout(live_server, register, person):
    oic_rp = OicRP(register())
    ua = UserAgent(person.email, person.password)
    state, atr = oic_rp.login(ua)
    req = EndSessionRequest(id_token_hint=atr["id_token_jwt"], post_logout_redirect_uri=POST_LOGOUT_URI,
                            state="oic-bye")
    url = req.request(oic_rp.client.provider_info["end_session_endpoint"])
    back = ua.navigate(url, POST_LOGOUT_URI)
    assert ua.saw("logout") == 1, ua.steps
    assert parse_qs(urlsplit(back).query).get("state") == ["oic-bye"], back

    # The IdP session has ended: prompt=none now answers login_required.
    url, _, _, _ = oic_rp.authorization_url(prompt="none")
    resp = oic_rp.parse_callback(ua.navigate(url, REDIRECT_URI))
    assert isinstance(resp, ErrorResponse) and resp["error"] == "login_required", resp.to_dict()
