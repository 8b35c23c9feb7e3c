"""Claims by scope from the policy, and the token size budget.

    roles        -> `roles`: the user's effective roles (assigned, through groups, inherited)
    permissions  -> `permissions`: the user's effective permissions
    <scope>      -> operator-defined (policy file `scopes:`): claim -> subject.<attribute>

The client only ever sees scopes it is registered for and was granted (the token's scope).
When a token would exceed its size budget, the largest policy claims leave the token (they stay
available at userinfo and introspection) and the token lists them in `omitted_claims`.
"""

from __future__ import annotations

import base64
import json

from ..storage.models import User
from .cache import policy_cache
from .engine import CompiledPolicy, Subject

POLICY_SCOPES = ("roles", "permissions")
OMITTED = "omitted_claims"
# An RS256 signature over a 2048-bit key is 256 bytes: 342 base64url characters.
SIGNATURE_CHARS = 342
# The JOSE header with the longest kid we make (64 characters) and typ at+jwt.
HEADER_CHARS = len(base64.urlsafe_b64encode(json.dumps(
    {"alg": "RS256", "kid": "k" * 64, "typ": "at+jwt"}).encode()).rstrip(b"="))


def explain_scope_claims(policy: CompiledPolicy, subject: Subject, scope: str) -> list[dict]:
    """[{claim, value, scope, source}] for each policy claim the scope releases."""
    out = []
    for s in dict.fromkeys(scope.split()):
        if s == "roles":
            out.append({"claim": "roles", "value": policy.effective_roles(subject), "scope": s,
                        "source": "roles: assigned, through groups, and inherited"})
        elif s == "permissions":
            out.append({"claim": "permissions", "value": policy.effective_permissions(subject), "scope": s,
                        "source": "permissions: of every effective role, and direct"})
        elif s in policy.scopes:
            env = subject.env()
            for claim, source in policy.scopes[s].items():
                value = env.get(source.removeprefix("subject."))
                if value is not None:  # a missing attribute gives no claim
                    out.append({"claim": claim, "value": value, "scope": s, "source": f"scopes.{s}: {source}"})
    return out


def policy_claims(user: User, scope: str) -> dict:
    """The policy claims of `scope` for `user` (an app context is needed: the policy cache)."""
    if not scope:
        return {}
    cache = policy_cache()
    policy = cache.policy()
    if not any(s in POLICY_SCOPES or s in policy.scopes for s in scope.split()):
        return {}
    return {c["claim"]: c["value"] for c in explain_scope_claims(policy, cache.subject(user), scope)}


def encoded_size(claims: dict) -> int:
    """An upper bound of the compact JWS length of `claims` (json.dumps with spaces is never
    shorter than the signer's compact JSON)."""
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
    return HEADER_CHARS + 1 + len(payload) + 1 + SIGNATURE_CHARS


def fit_claims(claims: dict, movable: dict, budget: int) -> dict:
    """`claims` plus as many of `movable` as fit in `budget` bytes; the largest leave first and
    are named in `omitted_claims`."""
    result = {**claims, **movable}
    if encoded_size(result) <= budget:
        return result
    omitted = []
    for name in sorted(movable, key=lambda n: len(json.dumps(movable[n])), reverse=True):
        del result[name]
        omitted.append(name)
        result[OMITTED] = sorted(omitted)
        if encoded_size(result) <= budget:
            break
    return result
