"""The Authlib AuthorizationServer: grants, client authentication methods, endpoints."""

from __future__ import annotations

import time
import urllib.request

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.integrations.flask_oauth2.requests import FlaskOAuth2Request
from authlib.oauth2.rfc6749 import InvalidClientError, OAuth2Request
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc9207 import IssuerParameter
from flask import Flask, current_app
from flask import request as flask_request
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.util import to_bytes

from ..jsonsafe import loads_untrusted
from .clients import query_client
from .endpoints import Introspection, Revocation
from .grants import (
    AuthorizationCodeGrant,
    ClientCredentialsGrant,
    IdpOpenIDCode,
    RefreshTokenGrant,
    StrictPKCE,
)
from .params import MAX_VALUE_LENGTH


class IdpAuthorizationServer(AuthorizationServer):
    def create_oauth2_request(self, request):
        # Authlib's Flask server always reads the global request; a resumed interaction
        # passes the original authorization request instead.
        if isinstance(request, OAuth2Request):
            return request
        return FlaskOAuth2Request(request if request is not None else flask_request)


def get_server() -> AuthorizationServer:
    return current_app.extensions["oauth_server"]


class Issuer(IssuerParameter):
    def get_issuer(self):
        return current_app.extensions["idp"].settings.issuer


class PrivateKeyJWT(JWTBearerClientAssertion):
    """RFC 7523 §2.2 client authentication with the client's registered `jwks` or `jwks_uri`."""

    CLIENT_AUTH_METHOD = "private_key_jwt"
    JWKS_URI_TTL = 300
    JWKS_MAX_BYTES = 256 * 1024
    _jwks_cache: dict[str, tuple[float, dict]] = {}

    def get_audiences(self):
        issuer = current_app.extensions["idp"].settings.issuer
        # RFC 7523 §3: the AS's issuer or its token endpoint; introspection and revocation
        # accept the same assertions.
        return [issuer, issuer + "/token", issuer + "/introspect", issuer + "/revoke"]

    def validate_jti(self, claims, jti):
        # Single use until the assertion expires (RFC 7523 §3, item 7).
        ttl = max(1, int(claims.get("exp", time.time()) - time.time()) + self.leeway)
        store = current_app.extensions["idp"].store
        return store.add(f"assertion-jti:{claims['iss']}:{jti}"[:255], b"1", ttl)

    def resolve_client_public_key(self, client):
        metadata = client.metadata
        if metadata.get("jwks"):
            data = metadata["jwks"]
        elif metadata.get("jwks_uri"):
            data = self._fetch(metadata["jwks_uri"])
        else:
            raise InvalidClientError(description="The client has no registered keys.")
        try:
            return KeySet.import_key_set(data)
        except Exception:
            raise InvalidClientError(description="The client's registered keys are unusable.") from None

    def extract_assertion(self, assertion: str):
        # Authlib parses the payload with json.loads and catches ValueError only: a payload
        # nested past Python's recursion limit ('[' * 5000) was a RecursionError, a 500.
        # RFC 7523 §3.2 / RFC 6749 §5.2: an assertion we cannot read is invalid_client.
        try:
            token = jws.extract_compact(to_bytes(assertion))
            claims = loads_untrusted(token.payload, max_bytes=MAX_VALUE_LENGTH)
        except (JoseError, ValueError):
            raise InvalidClientError(description="Invalid JWT assertion.") from None
        if not isinstance(claims, dict):
            raise InvalidClientError(description="Invalid JWT payload.")
        return token.headers(), claims

    def authenticate_client(self, client):
        # Authlib checks the method against the "token" endpoint only; ours is per client.
        if client.check_endpoint_auth_method(self.CLIENT_AUTH_METHOD, "token"):
            return client
        raise InvalidClientError(description="The client does not use private_key_jwt.")

    def _fetch(self, uri: str) -> dict:
        cached = self._jwks_cache.get(uri)
        if cached and cached[0] > time.time():
            return cached[1]
        try:
            with urllib.request.urlopen(uri, timeout=5) as response:  # noqa: S310 (https enforced at registration)
                data = loads_untrusted(response.read(self.JWKS_MAX_BYTES), max_bytes=self.JWKS_MAX_BYTES)
        except Exception:
            raise InvalidClientError(description="The client's jwks_uri could not be read.") from None
        self._jwks_cache[uri] = (time.time() + self.JWKS_URI_TTL, data)
        return data


def _no_save(token, request):
    pass  # grants persist what they issue (services.tokens) before answering


def init_server(app: Flask) -> AuthorizationServer:
    server = IdpAuthorizationServer(app, query_client=query_client, save_token=_no_save)
    app.extensions["oauth_server"] = server
    server.register_client_auth_method(PrivateKeyJWT.CLIENT_AUTH_METHOD, PrivateKeyJWT())
    server.register_grant(AuthorizationCodeGrant, [StrictPKCE(required=True), IdpOpenIDCode(require_nonce=False)])
    server.register_grant(RefreshTokenGrant)
    server.register_grant(ClientCredentialsGrant)
    server.register_endpoint(Introspection)
    server.register_endpoint(Revocation)
    server.register_extension(Issuer())
    return server
