"""Introspection (RFC 7662) and revocation (RFC 7009) over our two kinds of tokens:
JWT access tokens (checked by signature, expiry and the jti denylist) and opaque refresh
tokens (looked up by hash)."""

from __future__ import annotations

from authlib.oauth2.rfc6749 import InvalidRequestError
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from flask import current_app

from ..policy.claims import policy_claims
from ..services import tokens
from ..storage.models import RefreshToken, User, db

CONFIDENTIAL_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]


class IssuedToken:
    """Authlib's TokenMixin for either kind of token."""

    def __init__(self, kind: str, claims: dict | None = None, row: RefreshToken | None = None, active=True):
        self.kind, self.claims, self.row, self.active = kind, claims, row, active

    @property
    def client_id(self) -> str:
        return self.claims["client_id"] if self.claims else self.row.client_id

    def check_client(self, client) -> bool:
        return self.client_id == client.client_id

    def get_scope(self):
        return self.claims["scope"] if self.claims else self.row.scope

    def is_expired(self) -> bool:
        return not self.active

    def is_revoked(self) -> bool:
        return not self.active


def find_token(token_string: str, hint: str | None) -> IssuedToken | None:
    idp = current_app.extensions["idp"]
    if token_string.count(".") == 2:
        claims = tokens.verify_access_token(idp.keyring, idp.store, idp.settings.issuer, token_string)
        return IssuedToken("access_token", claims=claims) if claims else None
    row = tokens.find_refresh_token(token_string)
    if row is None:
        return None
    return IssuedToken("refresh_token", row=row, active=tokens.refresh_token_active(row, idp.store))


def check_token_param(request) -> None:
    """RFC 7009 §2.2 and RFC 7662 §2.1: an unknown `token_type_hint` is ignored and the search
    covers every token type. (Authlib refuses it with unsupported_token_type and a 401 without
    a WWW-Authenticate challenge, which is neither.)"""
    if "token" not in request.form:
        raise InvalidRequestError("The 'token' parameter is required.")


class Introspection(IntrospectionEndpoint):
    CLIENT_AUTH_METHODS = CONFIDENTIAL_METHODS

    def check_params(self, request, client):
        check_token_param(request)

    def query_token(self, token_string, token_type_hint):
        return find_token(token_string, token_type_hint)

    def check_permission(self, token, client, request):
        # Resource servers (any confidential client) may introspect access tokens; a refresh
        # token only by the client it was issued to.
        return token.kind == "access_token" or token.check_client(client)

    def introspect_token(self, token):
        issuer = current_app.extensions["idp"].settings.issuer
        if token.kind == "access_token":
            c = token.claims
            payload = {"active": True, "scope": c["scope"], "client_id": c["client_id"], "sub": c["sub"],
                       "exp": c["exp"], "iat": c["iat"], "iss": c["iss"], "aud": c["aud"], "jti": c["jti"],
                       "token_type": "Bearer"}
            for name in ("auth_time", "acr", "sid"):
                if name in c:
                    payload[name] = c[name]
            # Authorization policy: the scope's roles/permissions/attribute claims, current
            # (also those the token left out for size, `omitted_claims`).
            user = db.session.get(User, c["sub"]) if c["sub"] != c["client_id"] else None
            if user is not None:
                payload.update(policy_claims(user, c["scope"]))
            return payload
        row = token.row
        return {"active": True, "scope": row.scope, "client_id": row.client_id, "sub": row.user_id,
                "exp": int(row.expires_at.timestamp()), "iat": int(row.created_at.timestamp()), "iss": issuer,
                "token_type": "refresh_token"}


class Revocation(RevocationEndpoint):
    CLIENT_AUTH_METHODS = CONFIDENTIAL_METHODS + ["none"]

    def check_params(self, request, client):
        check_token_param(request)

    def query_token(self, token_string, token_type_hint):
        return find_token(token_string, token_type_hint)

    def revoke_token(self, token, request):
        idp = current_app.extensions["idp"]
        if token.kind == "access_token":
            tokens.revoke_access_token(idp.store, token.claims["jti"], token.claims["exp"])
        else:
            # A refresh token ends its whole grant: every token of the family (RFC 7009 §2.1).
            tokens.revoke_family(idp.store, token.row.family_id, idp.settings.refresh_token_ttl)
