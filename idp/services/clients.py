"""Client registration: metadata validation (RFC 7591 §2 vocabulary) and secrets.

Secrets are 256-bit random values, shown once and stored as SHA-256: with that much entropy a
fast hash is as safe as a slow one, and the token endpoint never pays for argon2.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import select

from ..errors import Conflict, InvalidInput, NotFound
from ..settings import is_loopback_host
from ..storage.models import Client, db, utcnow

GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt", "none")
SCOPES = ("openid", "profile", "email", "phone", "address", "offline_access")


class ClientCache:
    """Per-process cache of client snapshots for the token path. A change made here (rotate,
    delete) is dropped from this process at once; other workers and nodes see it within the
    TTL (IDP_CLIENT_CACHE_TTL)."""

    def __init__(self):
        self._entries: dict = {}

    def get(self, key):
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, key, value, ttl: int) -> None:
        if ttl > 0:
            if len(self._entries) > 10000:  # bounded memory with very many clients
                self._entries.clear()
            self._entries[key] = (time.monotonic() + ttl, value)

    def forget(self, client_id: str) -> None:
        for key in [k for k in self._entries if k[1] == client_id]:
            self._entries.pop(key, None)


client_cache = ClientCache()


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_secret(client: Client, secret: str | None) -> bool:
    if not client.client_secret_hash or not secret:
        return False
    return hmac.compare_digest(client.client_secret_hash, hash_secret(secret))


def check_redirect_uri_value(uri: str, public: bool, field: str = "redirect URI") -> None:
    """RFC 6749 §3.1.2: absolute, no fragment. RFC 9700 §2.1: no plain http except loopback;
    RFC 8252 §7.1: private-use schemes for native (public) clients."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        raise InvalidInput(f"{field} is not a valid URI: {uri}") from None
    if not parts.scheme or parts.fragment or "#" in uri:
        raise InvalidInput(f"{field} must be absolute and have no fragment: {uri}")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise InvalidInput(f"{field} must use https (http only for loopback): {uri}")
    if parts.scheme == "https" and not parts.hostname:
        raise InvalidInput(f"{field} has no host: {uri}")
    if parts.scheme not in ("http", "https") and (not public or "." not in parts.scheme):
        raise InvalidInput(f"{field} may use a private scheme (like com.example.app:/cb) only for public clients: {uri}")


@dataclass
class ClientSpec:
    name: str
    redirect_uris: list[str]
    grant_types: list[str]
    scope: str = "openid"
    public: bool = False
    post_logout_redirect_uris: list[str] | None = None
    token_endpoint_auth_method: str | None = None
    skip_consent: bool = False
    require_pkce: bool = False
    jwks: dict | None = None
    jwks_uri: str | None = None
    client_id: str | None = None
    # OpenID Back-Channel Logout 1.0 §2.2.
    backchannel_logout_uri: str | None = None
    backchannel_logout_session_required: bool = False
    # Every login to this client passes a second factor (idp/mfa/policy.py); a column, not metadata.
    require_mfa: bool = False


def _metadata(spec: ClientSpec) -> dict:
    if not spec.name.strip():
        raise InvalidInput("client name must not be empty")
    grant_types = list(dict.fromkeys(spec.grant_types or ["authorization_code"]))
    for grant in grant_types:
        if grant not in GRANT_TYPES:
            raise InvalidInput(f"unknown grant type {grant!r} (allowed: {', '.join(GRANT_TYPES)})")
    method = spec.token_endpoint_auth_method or ("none" if spec.public else "client_secret_basic")
    if method not in AUTH_METHODS:
        raise InvalidInput(f"unknown token endpoint auth method {method!r} (allowed: {', '.join(AUTH_METHODS)})")
    if spec.public != (method == "none"):
        raise InvalidInput("public clients use auth method 'none'; confidential clients may not")
    if spec.public and "client_credentials" in grant_types:
        raise InvalidInput("a public client cannot use client_credentials")
    if method == "private_key_jwt" and not (spec.jwks or spec.jwks_uri):
        raise InvalidInput("private_key_jwt needs --jwks-file or --jwks-uri")
    if spec.jwks is not None and not isinstance(spec.jwks.get("keys") if isinstance(spec.jwks, dict) else None, list):
        raise InvalidInput("jwks must be a JSON object with a 'keys' list")
    if spec.jwks_uri and not spec.jwks_uri.startswith("https://") and not is_loopback_host(urlsplit(spec.jwks_uri).hostname):
        raise InvalidInput("jwks_uri must use https")
    redirect_uris = list(dict.fromkeys(spec.redirect_uris))
    if "authorization_code" in grant_types and not redirect_uris:
        raise InvalidInput("the authorization_code grant needs at least one --redirect-uri")
    for uri in redirect_uris:
        check_redirect_uri_value(uri, spec.public)
    logout_uris = list(dict.fromkeys(spec.post_logout_redirect_uris or []))
    for uri in logout_uris:
        check_redirect_uri_value(uri, spec.public, "post-logout redirect URI")
    scopes = list(dict.fromkeys(spec.scope.split()))
    if not scopes:
        raise InvalidInput("scope must not be empty")
    for scope in scopes:
        if not all(0x21 <= ord(c) <= 0x7E and c not in '"\\' for c in scope):
            raise InvalidInput(f"invalid scope token {scope!r} (RFC 6749 §3.3)")
    metadata = {
        "client_name": spec.name.strip(),
        "redirect_uris": redirect_uris,
        "grant_types": grant_types,
        "response_types": ["code"] if "authorization_code" in grant_types else [],
        "scope": " ".join(scopes),
        "token_endpoint_auth_method": method,
        "post_logout_redirect_uris": logout_uris,
        "skip_consent": spec.skip_consent,
        "require_pkce": spec.require_pkce or spec.public,
    }
    if spec.backchannel_logout_uri:
        # Back-Channel Logout 1.0 §2.2: absolute, no fragment; https (http only on loopback).
        check_redirect_uri_value(spec.backchannel_logout_uri, False, "back-channel logout URI")
        metadata["backchannel_logout_uri"] = spec.backchannel_logout_uri
        metadata["backchannel_logout_session_required"] = spec.backchannel_logout_session_required
    if spec.jwks:
        metadata["jwks"] = spec.jwks
    if spec.jwks_uri:
        metadata["jwks_uri"] = spec.jwks_uri
    return metadata


def create_client(spec: ClientSpec) -> tuple[Client, str | None]:
    """Validate and store a client. Returns it and its secret (None for public clients),
    which is never stored or shown again. Raises InvalidInput or Conflict; writes nothing then."""
    metadata = _metadata(spec)
    client_id = spec.client_id or secrets.token_urlsafe(18)
    if spec.client_id is not None and not (0 < len(client_id) <= 64 and client_id.isprintable() and " " not in client_id):
        raise InvalidInput("client id must be 1-64 printable characters without spaces")
    if db.session.get(Client, client_id):
        raise Conflict(f"client {client_id} already exists")
    secret = None if spec.public else secrets.token_urlsafe(32)
    client = Client(client_id=client_id, name=metadata["client_name"], client_metadata=metadata,
                    client_secret_hash=hash_secret(secret) if secret else None, require_mfa=spec.require_mfa)
    db.session.add(client)
    db.session.commit()
    return client, secret


def get_client(client_id: str) -> Client:
    client = db.session.get(Client, client_id)
    if client is None:
        raise NotFound(f"no client {client_id}")
    return client


def list_clients() -> list[Client]:
    return list(db.session.scalars(select(Client).order_by(Client.created_at)))


def delete_client(client_id: str) -> None:
    db.session.delete(get_client(client_id))
    db.session.commit()
    client_cache.forget(client_id)


def set_require_mfa(client_id: str, required: bool) -> Client:
    """Turn the per-client MFA requirement on or off (idp clients update --require-mfa)."""
    client = get_client(client_id)
    client.require_mfa = required
    db.session.commit()
    client_cache.forget(client_id)
    return client


def rotate_secret(client_id: str) -> str:
    client = get_client(client_id)
    if client.client_metadata.get("token_endpoint_auth_method") in ("none", "private_key_jwt"):
        raise InvalidInput(f"client {client_id} does not use a client secret")
    secret = secrets.token_urlsafe(32)
    client.client_secret_hash = hash_secret(secret)
    client.secret_rotated_at = utcnow()
    db.session.commit()
    client_cache.forget(client_id)
    return secret


def describe(client: Client) -> dict:
    """What the CLI shows: metadata, never the secret hash."""
    return {"client_id": client.client_id, **client.client_metadata, "require_mfa": bool(client.require_mfa),
            "created_at": client.created_at.isoformat(),
            "secret_rotated_at": client.secret_rotated_at.isoformat() if client.secret_rotated_at else None}
