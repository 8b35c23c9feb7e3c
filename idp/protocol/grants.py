"""Grant classes: Authlib's flows with our rules where its defaults are weaker.

* authorization_code: codes in the store, consumed once (atomic take); a replayed code revokes
  what it issued (RFC 6749 §4.1.2); PKCE S256 only, required for public clients (RFC 9700 §2.1.1).
* refresh_token: rotation on every use with reuse detection and an optional grace window.
* client_credentials: JWT access token whose `sub` is the client (RFC 9068 §2.2).
"""

from __future__ import annotations

import time

from authlib.oauth2.rfc6749 import InvalidGrantError, InvalidRequestError, InvalidScopeError, grants
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core.grants import OpenIDCode
from authlib.oidc.core.util import create_half_hash
from flask import current_app

from ..policy.claims import fit_claims, policy_claims
from ..services import codes, tokens
from ..storage.models import User, db
from .claims import id_token_claims, requested_claim_names

AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]


def _idp():
    return current_app.extensions["idp"]


def _token_settings() -> tokens.TokenSettings:
    s = _idp().settings
    return tokens.TokenSettings(issuer=s.issuer, access_token_ttl=s.access_token_ttl, id_token_ttl=s.id_token_ttl,
                                refresh_token_ttl=s.refresh_token_ttl,
                                refresh_token_grace_ttl=s.refresh_token_grace_ttl)


def _active_user(user_id: str) -> User | None:
    user = db.session.get(User, user_id)
    return user if user is not None and user.active else None


def _check_scope_registered(grant) -> None:
    scope = grant.request.payload.scope
    if scope and grant.request.client.get_allowed_scope(scope) is None:
        raise InvalidScopeError("The client is not registered for the requested scope.")


def _bearer(access_token: str, claims: dict, scope: str) -> dict:
    return {"token_type": "Bearer", "access_token": access_token, "expires_in": claims["exp"] - claims["iat"],
            "scope": scope}


def _access_token_extras(grant: dict) -> dict:
    return {"auth_time": grant.get("auth_time"), "acr": grant.get("acr"), "sid": grant.get("sid"),
            # OIDC Core §5.5: claims requested for userinfo travel with the token.
            "userinfo_claims": requested_claim_names(grant.get("claims") or {}, "userinfo") or None}


def _with_policy_claims(extra: dict, user: User, scope: str, client_id: str) -> dict:
    """Authorization policy: the roles/permissions/attribute claims of the granted scope go into
    the access token too (RFC 9068 §2.2.3.1), as far as IDP_ACCESS_TOKEN_MAX_BYTES allows; the
    rest stay at introspection, named in `omitted_claims`."""
    movable = policy_claims(user, scope)
    if not movable:
        return extra
    s = _idp().settings
    # The largest values issue_access_token may add (10-digit times, a 64-character jti).
    base = {"iss": s.issuer, "sub": user.id, "aud": s.issuer, "client_id": client_id, "iat": 10**10,
            "exp": 10**10, "jti": "j" * 64, "scope": scope, **{k: v for k, v in extra.items() if v is not None}}
    fitted = fit_claims(base, movable, s.access_token_max_bytes)
    return {**extra, **{k: v for k, v in fitted.items() if k not in base}}


class AuthorizationCode:
    """Authlib's AuthorizationCodeMixin over a record from services.codes."""

    def __init__(self, record: dict):
        self.record = record
        self.code_challenge = record.get("code_challenge")
        self.code_challenge_method = record.get("code_challenge_method")

    def get_redirect_uri(self):
        return self.record["redirect_uri"]

    def get_scope(self):
        return self.record["scope"]

    def get_nonce(self):
        return self.record.get("nonce")

    def get_auth_time(self):
        return self.record["grant"].get("auth_time")

    def get_acr(self):
        return self.record["grant"].get("acr")

    def get_amr(self):
        return self.record["grant"].get("amr")


class StrictPKCE(CodeChallenge):
    """RFC 7636 with S256 only (never `plain`), required for public clients and, by setting,
    for all. Authlib's CodeChallenge(required=True) enforces neither at /authorize."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant, redirect_uri):
        data = grant.request.payload.data
        challenge, method = data.get("code_challenge"), data.get("code_challenge_method")
        if not challenge and not method:
            if grant.request.client.requires_pkce(_idp().settings.require_pkce):
                raise InvalidRequestError("PKCE is required: send code_challenge with code_challenge_method=S256.")
            return
        if method != "S256":
            raise InvalidRequestError("code_challenge_method must be S256.")
        return super().validate_code_challenge(grant, redirect_uri)


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS

    def validate_requested_scope(self):
        _check_scope_registered(self)

    def save_authorization_code(self, code, request):
        settings = _idp().settings
        payload = request.payload
        record = {
            "client_id": request.client.client_id,
            "user_id": request.user.id,
            # RFC 6749 §4.1.3: required at /token only if it was in the authorization request.
            "redirect_uri": payload.redirect_uri,
            "scope": request.scope,
            "nonce": payload.data.get("nonce"),
            "code_challenge": payload.data.get("code_challenge"),
            "code_challenge_method": payload.data.get("code_challenge_method"),
            "grant": self.authentication,  # auth_time, acr, amr, sid, claims: set by protocol.authorize
        }
        codes.save_code(_idp().store, code, record, settings.code_ttl, settings.access_token_ttl)

    def query_authorization_code(self, code, client):
        idp = _idp()
        record, replayed = codes.consume_code(idp.store, code)
        if record is None:
            if replayed:
                # RFC 6749 §4.1.2: a code used twice revokes the tokens issued from it.
                tokens.revoke_family(idp.store, replayed["family_id"], idp.settings.refresh_token_ttl)
                tokens.revoke_access_token(idp.store, replayed["jti"], time.time() + idp.settings.access_token_ttl)
            return None
        if record["client_id"] != client.client_id:
            return None
        return AuthorizationCode(record)

    def delete_authorization_code(self, authorization_code):
        pass  # consumed already, atomically, by query_authorization_code

    def authenticate_user(self, authorization_code):
        return _active_user(authorization_code.record["user_id"])

    def generate_token(self, user=None, scope=None, grant_type=None, expires_in=None,
                       include_refresh_token=True):
        idp = _idp()
        record = self.request.authorization_code.record
        client = self.request.client
        scopes = scope.split()
        grant = record["grant"]
        access, claims = tokens.issue_access_token(
            idp.keyring, _token_settings(), client_id=client.client_id, sub=user.id, scope=scope,
            jti=record["jti"], extra=_with_policy_claims(_access_token_extras(grant), user, scope, client.client_id))
        token = _bearer(access, claims, scope)
        # OIDC Core §11: refresh tokens for OIDC logins only with offline_access.
        if include_refresh_token and ("offline_access" in scopes or "openid" not in scopes):
            token["refresh_token"] = tokens.create_refresh_token(
                client_id=client.client_id, user_id=user.id, scope=scope, grant=grant,
                family_id=record["family_id"], family_expires_at=tokens.family_expiry(idp.settings.refresh_token_ttl),
                access_jti=claims["jti"], access_exp=claims["exp"])
            if idp.store.get("family-revoked:" + record["family_id"]) is not None:
                # The code was replayed while we were issuing: those tokens die too.
                tokens.revoke_family(idp.store, record["family_id"], idp.settings.refresh_token_ttl)
        return token


class IdpOpenIDCode(OpenIDCode):
    def exists_nonce(self, nonce, request):
        # Nonce replay is for the RP to detect (OIDC Core §3.1.3.7 step 11).
        return False

    def encode_id_token(self, token, request):
        return encode_id_token(request.user, request.client, token, request.authorization_code.record["grant"],
                               nonce=request.authorization_code.get_nonce())


def encode_id_token(user, client, token: dict, grant: dict, nonce: str | None = None) -> str:
    idp = _idp()
    at_hash = create_half_hash(token["access_token"], "RS256").decode()
    claims = id_token_claims(issuer=idp.settings.issuer, user=user, client_id=client.client_id,
                             scope=token["scope"], grant=grant, ttl=idp.settings.id_token_ttl, nonce=nonce,
                             at_hash=at_hash, max_bytes=idp.settings.id_token_max_bytes)
    return tokens.sign_jwt(idp.keyring, claims)


class RefreshTokenGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token):
        return tokens.find_refresh_token(refresh_token)

    def authenticate_user(self, refresh_token):
        return _active_user(refresh_token.user_id)

    def create_token_response(self):
        idp = _idp()
        row = self.request.refresh_token
        presented = self.request.form.get("refresh_token")
        if not tokens.refresh_token_usable(row, idp.store):
            raise InvalidGrantError("The refresh token is no longer valid.")
        if row.used_at is not None or not tokens.claim_refresh_token(row):
            return 200, self._replay(row, presented), self.TOKEN_RESPONSE_HEADER
        user = self.authenticate_user(row)
        if not user:
            raise InvalidGrantError("There is no active user for this refresh token.")
        self.request.user = user
        scope = self.request.payload.scope or row.scope
        access, claims = tokens.issue_access_token(
            idp.keyring, _token_settings(), client_id=row.client_id, sub=user.id, scope=scope,
            extra=_with_policy_claims(_access_token_extras(row.grant), user, scope, row.client_id))
        token = _bearer(access, claims, scope)
        token["refresh_token"] = tokens.create_refresh_token(
            client_id=row.client_id, user_id=user.id, scope=row.scope, grant=row.grant, family_id=row.family_id,
            family_expires_at=row.expires_at, access_jti=claims["jti"], access_exp=claims["exp"])
        if idp.store.get("family-revoked:" + row.family_id) is not None:
            # A concurrent replay of the old token revoked the family while we were issuing
            # (its revoke_family may have listed the rows before ours existed): ours die too.
            tokens.revoke_family(idp.store, row.family_id, idp.settings.refresh_token_ttl)
        if "openid" in scope.split():
            # OIDC Core §12.2: a new ID token for the same authentication.
            token["id_token"] = encode_id_token(user, self.request.client, token, row.grant)
        if idp.settings.refresh_token_grace_ttl:
            tokens.remember_successor(idp.store, presented, token, idp.settings.refresh_token_grace_ttl)
        return 200, token, self.TOKEN_RESPONSE_HEADER

    def _replay(self, row, presented):
        idp = _idp()
        db.session.refresh(row)
        grace = idp.settings.refresh_token_grace_ttl
        if grace and row.revoked_at is None and row.used_at and time.time() - row.used_at.timestamp() <= grace:
            successor = tokens.recall_successor(idp.store, presented)
            if successor is not None:
                return successor
        # Reuse of a rotated token: someone else has it. Revoke the whole family.
        tokens.revoke_family(idp.store, row.family_id, idp.settings.refresh_token_ttl)
        raise InvalidGrantError("The refresh token was already used; its grant has been revoked.")

    def revoke_old_credential(self, refresh_token):
        pass  # done atomically by claim_refresh_token


class ClientCredentialsGrant(grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]

    def validate_requested_scope(self):
        _check_scope_registered(self)
        if "openid" in (self.request.payload.scope or "").split():
            raise InvalidScopeError("openid needs an end-user; client_credentials has none.")

    def create_token_response(self):
        client = self.request.client
        requested = self.request.payload.scope
        scope = requested or " ".join(sorted(client.registered_scopes() - {"openid", "offline_access"}))
        access, claims = tokens.issue_access_token(_idp().keyring, _token_settings(), client_id=client.client_id,
                                                   sub=client.client_id, scope=scope)
        return 200, _bearer(access, claims, scope), self.TOKEN_RESPONSE_HEADER
