"""Operator reports on claims: `idp claims explain` and the worst-case token size of a client."""

from __future__ import annotations

from sqlalchemy import select, union

from ..protocol.claims import SCOPE_CLAIMS, claims_for, id_token_claims
from ..storage.models import Client, User, UserRole, db
from ..storage.policy_models import GroupMember, UserAttribute, UserPermission
from .cache import policy_cache
from .claims import OMITTED, encoded_size, explain_scope_claims, fit_claims
from .engine import Subject

WORST_CASE_USERS = 10_000
# Placeholders as long as the real values can be.
_GRANT = {"auth_time": 10**10, "acr": "urn:idp:acr:pwd", "amr": ["pwd"], "sid": "s" * 43}


def _settings():
    from flask import current_app

    return current_app.extensions["idp"].settings


def token_sizes(user: User, subject: Subject, client_id: str, scope: str) -> dict:
    """Estimated sizes (upper bounds) of the ID token and the access token, and what the
    budgets leave out."""
    s = _settings()
    policy = policy_cache().policy()
    movable = {c["claim"]: c["value"] for c in explain_scope_claims(policy, subject, scope)}
    out = {}
    if "openid" in scope.split():
        claims = id_token_claims(issuer=s.issuer, user=user, client_id=client_id, scope=scope, grant=_GRANT,
                                 ttl=s.id_token_ttl, nonce="n" * 64, at_hash="h" * 22, max_bytes=10**9)
        base = {k: v for k, v in claims.items() if k not in movable}
        fitted = fit_claims(base, movable, s.id_token_max_bytes)
        out["id_token"] = {"size": encoded_size(fitted), "max_bytes": s.id_token_max_bytes,
                           "omitted_claims": fitted.get(OMITTED, [])}
    base = {"iss": s.issuer, "sub": user.id, "aud": s.issuer, "client_id": client_id, "iat": 10**10,
            "exp": 10**10, "jti": "j" * 64, "scope": scope, "auth_time": 10**10, "acr": _GRANT["acr"],
            "sid": _GRANT["sid"]}
    fitted = fit_claims(base, movable, s.access_token_max_bytes)
    out["access_token"] = {"size": encoded_size(fitted), "max_bytes": s.access_token_max_bytes,
                           "omitted_claims": fitted.get(OMITTED, [])}
    return out


def explain_claims(user: User, client: Client, scope: str) -> dict:
    registered = set((client.client_metadata or {}).get("scope", "").split())
    requested = list(dict.fromkeys(scope.split()))
    granted = " ".join(s for s in requested if s in registered)
    cache = policy_cache()
    subject = cache.subject(user)
    rows = []
    for name, value in claims_for(user, granted, with_policy=False).items():
        source = next((f"scope {s} (OIDC Core §5.4)" for s in granted.split() if name in SCOPE_CLAIMS.get(s, ())),
                      "always (the subject)")
        rows.append({"claim": name, "value": value, "scope": None, "source": source,
                     "in": ["id_token", "userinfo"]})
    for c in explain_scope_claims(cache.policy(), subject, granted):
        rows.append({**c, "source": f"scope {c['scope']}: {c['source']}",
                     "in": ["id_token", "access_token", "userinfo", "introspection"]})
    sizes = token_sizes(user, subject, client.client_id, granted)
    for row in rows:
        for token in ("id_token", "access_token"):
            if row["claim"] in sizes.get(token, {}).get("omitted_claims", []):
                row["in"].remove(token)
    return {"user": user.email, "client_id": client.client_id, "scope": granted,
            "ignored_scopes": [s for s in requested if s not in registered], "claims": rows,
            "id_token": sizes.get("id_token", {"size": 0, "max_bytes": _settings().id_token_max_bytes,
                                                "omitted_claims": []}),
            "access_token": sizes["access_token"]}


def worst_case_token_size(client: Client) -> dict:
    """The largest tokens this client can get: every registered scope, over the users that
    hold policy data (the first WORST_CASE_USERS of them)."""
    scope = (client.client_metadata or {}).get("scope", "")
    ids = union(select(UserRole.user_id), select(GroupMember.user_id), select(UserPermission.user_id),
                select(UserAttribute.user_id)).subquery()
    users = list(db.session.scalars(select(User).where(User.id.in_(select(ids.c[0]))).limit(WORST_CASE_USERS)))
    if not users:
        users = list(db.session.scalars(select(User).limit(1)))
    worst = {"id_token": 0, "access_token": 0, "user": None, "omitted_claims": False}
    cache = policy_cache()
    for user in users:
        sizes = token_sizes(user, cache.subject(user), client.client_id, scope)
        for token, info in sizes.items():
            if info["size"] > worst[token]:
                worst[token] = info["size"]
                if token == "access_token":
                    worst["user"] = user.email
            worst["omitted_claims"] = worst["omitted_claims"] or bool(info["omitted_claims"])
    return worst
