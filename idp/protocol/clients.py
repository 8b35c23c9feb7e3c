"""The Authlib view of a registered client (authlib ClientMixin): an immutable snapshot of
our Client row, so that it can be cached between requests."""

from __future__ import annotations

import hmac

from authlib.oauth2.rfc6749 import ClientMixin
from flask import current_app

from ..services.clients import client_cache, hash_secret
from ..storage.models import Client, db


class OAuthClient(ClientMixin):
    def __init__(self, row: Client):
        self.client_id = row.client_id
        self.name = row.name
        self.secret_hash = row.client_secret_hash
        self.metadata = row.client_metadata or {}
        self.require_mfa = bool(row.require_mfa)  # idp clients create --require-mfa (idp/mfa)

    @property
    def public(self) -> bool:
        return self.metadata.get("token_endpoint_auth_method") == "none"

    @property
    def skip_consent(self) -> bool:
        return bool(self.metadata.get("skip_consent"))

    def registered_scopes(self) -> set[str]:
        return set(self.metadata.get("scope", "").split())

    def get_client_id(self):
        return self.client_id

    def get_default_redirect_uri(self):
        uris = self.metadata.get("redirect_uris") or []
        # Only an unambiguous registration may be used when the request names none.
        return uris[0] if len(uris) == 1 else None

    def get_allowed_scope(self, scope):
        """RFC 6749 §3.3: a scope outside the registration is refused (None -> invalid_scope);
        no scope means the registered ones, except offline_access which must be asked for."""
        registered = self.registered_scopes()
        if not scope:
            return " ".join(sorted(registered - {"offline_access"}))
        requested = scope.split()
        if not set(requested) <= registered:
            return None
        return " ".join(dict.fromkeys(requested))

    def check_redirect_uri(self, redirect_uri):
        # Exact string comparison (RFC 9700 §4.1.3), never prefix or pattern matching.
        return any(hmac.compare_digest(redirect_uri.encode(), uri.encode())
                   for uri in self.metadata.get("redirect_uris") or [])

    def check_post_logout_redirect_uri(self, uri: str) -> bool:
        return any(hmac.compare_digest(uri.encode(), u.encode())
                   for u in self.metadata.get("post_logout_redirect_uris") or [])

    def check_client_secret(self, client_secret):
        if not self.secret_hash or not isinstance(client_secret, str):
            return False
        return hmac.compare_digest(self.secret_hash, hash_secret(client_secret))

    def check_endpoint_auth_method(self, method, endpoint):
        return method == self.metadata.get("token_endpoint_auth_method")

    def check_response_type(self, response_type):
        return response_type in (self.metadata.get("response_types") or [])

    def check_grant_type(self, grant_type):
        return grant_type in (self.metadata.get("grant_types") or [])

    def requires_pkce(self, server_default: bool) -> bool:
        return self.public or server_default or bool(self.metadata.get("require_pkce"))


def query_client(client_id) -> OAuthClient | None:
    if not isinstance(client_id, str) or not 0 < len(client_id) <= 64:
        return None
    settings = current_app.extensions["idp"].settings
    key = (settings.sqlalchemy_url, client_id)
    # Every token, introspection and revocation request authenticates a client: keep the
    # database off that path for IDP_CLIENT_CACHE_TTL seconds (unknown ids are never cached).
    client = client_cache.get(key)
    if client is None:
        row = db.session.get(Client, client_id)
        if row is None:
            return None
        client = OAuthClient(row)
        client_cache.put(key, client, settings.client_cache_ttl)
    return client
