"""OpenID Provider metadata (OIDC Discovery 1.0 §3), OAuth AS metadata (RFC 8414) and the
JWKS. Everything advertised here works, and nothing else does."""

from __future__ import annotations

from functools import lru_cache

from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from authlib.oidc.discovery import OpenIDProviderMetadata
from flask import Blueprint, current_app, jsonify

from ..mfa.policy import ACR_VALUES as MFA_ACR_VALUES
from .claims import POLICY_CLAIMS, SUPPORTED_CLAIMS
from .grants import AUTH_METHODS

bp = Blueprint("discovery", __name__)

# urn:idp:acr:pwd (one factor), urn:idp:acr:mfa (two factors passed in this session): idp/mfa/policy.py.
ACR_VALUES = MFA_ACR_VALUES
# What PrivateKeyJWT (server.py) accepts for client assertions: joserfc, under Authlib,
# refuses PS256 ("not recommended") unless told otherwise, so it is not advertised.
ASSERTION_ALGS = ["RS256", "ES256"]
# roles, permissions: idp/policy/claims.py (attribute scopes are operator-defined, not listed).
SCOPES = ["openid", "profile", "email", "address", "phone", "offline_access", "roles", "permissions"]


@lru_cache(maxsize=8)
def provider_metadata(issuer: str) -> dict:
    metadata = {
        "issuer": issuer,
        "authorization_endpoint": issuer + "/authorize",
        "token_endpoint": issuer + "/token",
        "userinfo_endpoint": issuer + "/userinfo",
        "jwks_uri": issuer + "/jwks.json",
        "introspection_endpoint": issuer + "/introspect",
        "revocation_endpoint": issuer + "/revoke",
        "end_session_endpoint": issuer + "/logout",
        "scopes_supported": SCOPES,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query", "form_post"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "introspection_endpoint_auth_methods_supported": [m for m in AUTH_METHODS if m != "none"],
        "introspection_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "revocation_endpoint_auth_methods_supported": AUTH_METHODS,
        "revocation_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": sorted(SUPPORTED_CLAIMS + POLICY_CLAIMS),
        "claims_parameter_supported": True,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "acr_values_supported": ACR_VALUES,
        "prompt_values_supported": ["none", "login", "consent"],
        "claim_types_supported": ["normal"],
        # RFC 9207: iss in every authorization response.
        "authorization_response_iss_parameter_supported": True,
        # OpenID Back-Channel Logout 1.0 §2.1 (idp/services/backchannel.py); sid is always sent.
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
        "frontchannel_logout_supported": False,
    }
    # Authlib's models check the metadata against the specs' rules.
    OpenIDProviderMetadata(metadata).validate()
    return metadata


@bp.get("/.well-known/openid-configuration")
def openid_configuration():
    return _cacheable(jsonify(provider_metadata(current_app.extensions["idp"].settings.issuer)), 3600)


@bp.get("/.well-known/oauth-authorization-server")
def oauth_authorization_server():
    metadata = dict(provider_metadata(current_app.extensions["idp"].settings.issuer))
    AuthorizationServerMetadata(metadata).validate()
    return _cacheable(jsonify(metadata), 3600)


@bp.get("/jwks.json")
def jwks():
    idp = current_app.extensions["idp"]
    # Shorter than the key pre-publication time (checked at startup), so a new key is in
    # every cache before it signs.
    return _cacheable(jsonify(idp.keyring.jwks()), idp.settings.jwks_max_age)


def _cacheable(response, max_age: int):
    response.headers["Cache-Control"] = f"public, max-age={max_age}"
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response
