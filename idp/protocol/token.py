"""The back-channel endpoints a client calls directly: token (RFC 6749 §3.2), introspection
(RFC 7662) and revocation (RFC 7009). JSON in, JSON out, never cached."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from ..rate_limit import rate_limited
from .endpoints import Introspection, Revocation
from .params import malformed_reason
from .server import get_server

bp = Blueprint("token", __name__)


def _invalid_request(description: str):
    response = jsonify(error="invalid_request", error_description=description)
    response.status_code = 400
    return _no_store(response)


def _no_store(response):
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


@bp.post("/token")
@rate_limited("token")  # per-IP limit: 429 + Retry-After (services/protection.py)
def token():
    if reason := malformed_reason(request, form_required=True):
        return _invalid_request(reason)
    return _no_store(get_server().create_token_response())


@bp.post("/introspect")
def introspect():
    if reason := malformed_reason(request, form_required=True):
        return _invalid_request(reason)
    return _no_store(get_server().create_endpoint_response(Introspection.ENDPOINT_NAME))


@bp.post("/revoke")
def revoke():
    if reason := malformed_reason(request, form_required=True):
        return _invalid_request(reason)
    return _no_store(get_server().create_endpoint_response(Revocation.ENDPOINT_NAME))
