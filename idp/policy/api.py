"""Decision API: `POST /api/v1/authorize` and `GET /api/v1/me/permissions`.

Bearer access tokens (RFC 6750; errors in WWW-Authenticate, §3). Two callers:
* a user's access token: decides for that user; `ip`, `time` and `weekday` in the context come
  from the request (the user cannot claim to be in the office);
* a client_credentials token with scope `authz:decide` (a resource server): names the user in
  `subject` (their `sub`) and may supply the whole context (the end user's IP, ...).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from flask import Blueprint, current_app, jsonify, request

from ..jsonsafe import loads_untrusted
from ..services import tokens
from ..storage.models import User, db
from .cache import policy_cache
from .conditions import WEEKDAYS
from .store import role_assignments, user_groups

bp = Blueprint("policy_api", __name__)
DECIDE_SCOPE = "authz:decide"
WORD = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")
MAX_ATTRIBUTES = 100
MAX_BODY_BYTES = 64 * 1024  # a request with MAX_ATTRIBUTES short attributes is a few KB


def _error(status: int, error: str, description: str):
    response = jsonify(error=error, error_description=description)
    response.status_code = status
    if status in (401, 403):
        response.headers["WWW-Authenticate"] = f'Bearer error="{error}", error_description="{description}"'
    response.headers["Cache-Control"] = "no-store"
    return response


def _no_store(payload: dict):
    response = jsonify(payload)
    response.headers["Cache-Control"] = "no-store"
    return response


def _token_claims():
    """(claims, error response). RFC 6750 §2.1: the Authorization header only."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if not scheme:
        response = _error(401, "invalid_token", "An access token is required.")
        response.headers["WWW-Authenticate"] = 'Bearer realm="api"'
        return None, response
    if scheme.lower() != "bearer" or not value.strip():
        return None, _error(400, "invalid_request", "Send the access token as a Bearer token.")
    idp = current_app.extensions["idp"]
    claims = tokens.verify_access_token(idp.keyring, idp.store, idp.settings.issuer, value.strip())
    if claims is None:
        return None, _error(401, "invalid_token", "The access token is invalid, expired or revoked.")
    return claims, None


def _active_user(user_id) -> User | None:
    user = db.session.get(User, user_id) if isinstance(user_id, str) and len(user_id) <= 64 else None
    return user if user is not None and user.active else None


def _is_client_token(claims: dict) -> bool:
    return claims.get("sub") == claims.get("client_id")  # RFC 9068 §2.2: client_credentials


def _json_body():
    """The parsed body, or None unless it is application/json, valid and at most MAX_BODY_BYTES
    (deeply nested JSON included: a 400, never a RecursionError)."""
    if request.mimetype != "application/json":
        return None
    try:
        return loads_untrusted(request.get_data(cache=True), max_bytes=MAX_BODY_BYTES)
    except ValueError:
        return None


def _scalar_map(value, name: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_ATTRIBUTES:
        raise ValueError(f"{name} must be an object of at most {MAX_ATTRIBUTES} members")
    for key, item in value.items():
        items = item if isinstance(item, list) else [item]
        if not all(v is None or isinstance(v, str | int | float | bool) for v in items):
            raise ValueError(f"{name}.{key} must be a string, number, boolean or a list of them")
    return value


def request_context(supplied: dict, trusted: bool) -> dict:
    now = datetime.now(UTC)
    observed = {"ip": request.remote_addr, "time": now.strftime("%H:%M"), "weekday": WEEKDAYS[now.weekday()],
                "date": now.date().isoformat()}
    return {**observed, **supplied} if trusted else {**supplied, **observed}


@bp.post("/api/v1/authorize")
def authorize():
    claims, error = _token_claims()
    if error:
        return error
    body = _json_body()
    if not isinstance(body, dict):
        return _error(400, "invalid_request", "The body must be a JSON object.")
    resource, action = body.get("resource"), body.get("action")
    if not all(isinstance(v, str) and WORD.match(v) for v in (resource, action)):
        return _error(400, "invalid_request", "resource and action are required words.")
    try:
        attributes = _scalar_map(body.get("resource_attributes"), "resource_attributes")
        context = _scalar_map(body.get("context"), "context")
    except ValueError as exc:
        return _error(400, "invalid_request", str(exc))
    if _is_client_token(claims):
        if DECIDE_SCOPE not in claims.get("scope", "").split():
            return _error(403, "insufficient_scope", f"Deciding for a subject needs the {DECIDE_SCOPE} scope.")
        if not isinstance(body.get("subject"), str):
            return _error(400, "invalid_request", "Name the user in subject.")
        user = _active_user(body["subject"])
    else:
        if body.get("subject") not in (None, claims["sub"]):
            return _error(400, "invalid_request", "Only a client with authz:decide may name another subject.")
        user = _active_user(claims["sub"])
        if user is None:
            return _error(401, "invalid_token", "The access token's user is gone.")
    permission = f"{resource}:{action}"
    if user is None:
        return _no_store({"authorized": False, "permission": permission, "reason": "no such active user"})
    resource_env = dict(attributes)
    if isinstance(body.get("resource_id"), str | int):
        resource_env["id"] = body["resource_id"]
    cache = policy_cache()
    decision = cache.policy().decide(cache.subject(user), permission, resource_env,
                                     request_context(context, trusted=_is_client_token(claims)))
    return _no_store({"authorized": decision.allowed, "permission": permission, "reason": decision.reason})


@bp.get("/api/v1/me/permissions")
def me_permissions():
    claims, error = _token_claims()
    if error:
        return error
    if _is_client_token(claims):
        return _error(403, "insufficient_scope", "This needs a user's access token.")
    user = _active_user(claims["sub"])
    if user is None:
        return _error(401, "invalid_token", "The access token's user is gone.")
    cache = policy_cache()
    policy, subject = cache.policy(), cache.subject(user)
    now = datetime.now(UTC)
    # Expired assignments grant nothing, so they are not the user's roles (operators still
    # see them with `idp policy explain`).
    roles = [r for r in role_assignments(user.id)
             if r["expires_at"] is None or datetime.fromisoformat(r["expires_at"]) > now]
    return _no_store({"sub": user.id, "roles": roles, "groups": user_groups(user.id),
                      "effective_roles": policy.effective_roles(subject),
                      "direct_permissions": subject.permissions,
                      "permissions": policy.effective_permissions(subject)})
