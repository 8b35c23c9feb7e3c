"""Which claims a client gets: by granted scope (OIDC Core §5.4), by the `claims` request
parameter (§5.5), and the assembly of ID token claims (§2, §3.1.3.6)."""

from __future__ import annotations

import time

from authlib.oauth2.rfc6749 import InvalidRequestError

from ..jsonsafe import loads_untrusted
from ..policy.claims import fit_claims, policy_claims
from ..storage.models import User

SCOPE_CLAIMS = {
    "profile": ("name", "family_name", "given_name", "middle_name", "nickname", "preferred_username",
                "profile", "picture", "website", "gender", "birthdate", "zoneinfo", "locale", "updated_at"),
    "email": ("email", "email_verified"),
    "address": ("address",),
    "phone": ("phone_number", "phone_number_verified"),
}
SUPPORTED_CLAIMS = sorted({c for claims in SCOPE_CLAIMS.values() for c in claims}
                          | {"sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "azp",
                             "at_hash", "sid"})
# Authorization policy (idp/policy/claims.py): scope `roles` -> roles, `permissions` -> permissions;
# operator-defined attribute scopes add the claims the policy file names.
POLICY_CLAIMS = ["roles", "permissions"]
# Plain words for the consent screen.
SCOPE_DESCRIPTIONS = {
    "openid": "Sign you in and know who you are",
    "profile": "See your name and basic profile",
    "email": "See your email address",
    "address": "See your postal address",
    "phone": "See your phone number",
    "offline_access": "Stay signed in when you are not using it (refresh tokens)",
    "roles": "See your roles",
    "permissions": "See what you are allowed to do",
}


def user_claims(user: User) -> dict:
    """Every claim we hold for the user, in OIDC Core §5.1 form."""
    claims = {
        "sub": user.id,
        "email": user.email,
        "email_verified": bool(user.email_verified),
        "preferred_username": user.email,
        "updated_at": int(user.updated_at.timestamp()),
    }
    if user.name:
        claims["name"] = user.name
    claims.update({k: v for k, v in (user.profile or {}).items() if k in SUPPORTED_CLAIMS})
    return claims


def parse_claims_parameter(raw: str | None) -> dict:
    """OIDC Core §5.5: a JSON object with optional `userinfo` and `id_token` members, each
    mapping claim names to null or {essential, value, values}. Raises InvalidRequestError."""
    if not raw:
        return {}
    try:
        value = loads_untrusted(raw)
    except ValueError:  # not JSON, or nested too deeply (jsonsafe)
        raise InvalidRequestError("The 'claims' parameter is not valid JSON.") from None
    if not isinstance(value, dict):
        raise InvalidRequestError("The 'claims' parameter must be a JSON object.")
    result = {}
    for target in ("userinfo", "id_token"):
        members = value.get(target)
        if members is None:
            continue
        if not isinstance(members, dict) or not all(v is None or isinstance(v, dict) for v in members.values()):
            raise InvalidRequestError(f"The 'claims' member '{target}' is malformed.")
        result[target] = {name: spec for name, spec in members.items() if isinstance(name, str)}
    return result


def requested_claim_names(claims_request: dict, target: str) -> list[str]:
    return [name for name in claims_request.get(target, {}) if name in SUPPORTED_CLAIMS]


def claims_for(user: User, scope: str, extra_names: list[str] = (), with_policy: bool = True) -> dict:
    """The user's claims released for `scope` plus individually requested ones (and the policy
    claims of the scope, unless the caller fits those into a token itself)."""
    available = user_claims(user)
    names = {"sub"}
    for s in scope.split():
        names.update(SCOPE_CLAIMS.get(s, ()))
    names.update(extra_names)
    claims = {name: available[name] for name in names if name in available}
    if with_policy:
        claims.update(policy_claims(user, scope))
    return claims


def id_token_claims(*, issuer: str, user: User, client_id: str, scope: str, grant: dict, ttl: int,
                    nonce: str | None = None, at_hash: str | None = None, max_bytes: int = 4096) -> dict:
    """OIDC Core §2 and §3.1.3.6. `grant` carries auth_time, acr, amr, sid and the
    claims request of the authentication. Policy claims that would take the token over
    `max_bytes` stay at userinfo only (listed in `omitted_claims`)."""
    now = int(time.time())
    extra = requested_claim_names(grant.get("claims") or {}, "id_token")
    claims = claims_for(user, scope, extra, with_policy=False)
    claims.update({"iss": issuer, "sub": user.id, "aud": client_id, "azp": client_id, "iat": now,
                   "exp": now + ttl, "auth_time": grant.get("auth_time"), "acr": grant.get("acr"),
                   "amr": grant.get("amr"), "sid": grant.get("sid")})
    if nonce:
        claims["nonce"] = nonce
    if at_hash:
        claims["at_hash"] = at_hash
    claims = {k: v for k, v in claims.items() if v is not None}
    return fit_claims(claims, policy_claims(user, scope), max_bytes)
