"""The HTTP edge of the per-IP rate limits (idp/services/protection.py): a view decorator.

    @bp.post("/token")
    @rate_limited("token")
    def token(): ...

Only POSTs are counted (the attempts: a password, a sign-up, a reset request, a token
request); showing a form is free. Past the limit: 429 Too Many Requests with Retry-After
(RFC 6585 §4), as JSON `invalid_request` on the API endpoints and the passkey JSON endpoints
(RFC 6749 §5.2 has no rate-limit code; clients and static/passkey.js read the status and
Retry-After) and as the error page elsewhere.
The client IP is `request.remote_addr`, which ProxyFix sets from X-Forwarded-For only for
IDP_TRUSTED_PROXY_HOPS trusted proxies.
"""

from __future__ import annotations

from functools import wraps

from flask import current_app, jsonify, make_response, render_template, request

from .services.protection import RateLimited, check_rate_limit

JSON_ENDPOINTS = {"token"}


def rate_limited(name: str, as_json: bool = False):
    """Count the POST against the per-IP limit `name`; past it, answer 429 (JSON for the API
    endpoints and for views that answer JSON, `as_json`, whose scripts read no HTML)."""
    def decorate(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            if request.method == "POST":
                idp = current_app.extensions["idp"]
                try:
                    check_rate_limit(idp.store, idp.settings, name, request.remote_addr)
                except RateLimited as exc:
                    return too_many_requests(exc.retry_after, as_json=as_json or name in JSON_ENDPOINTS)
            return view(*args, **kwargs)
        return wrapper
    return decorate


def too_many_requests(retry_after: int, as_json: bool = False, message: str | None = None):
    message = message or f"Too many requests from your network. Try again in {retry_after} seconds."
    if as_json:
        response = jsonify(error="invalid_request", error_description="Too many requests; retry later.")
        response.headers["Pragma"] = "no-cache"
    else:
        response = make_response(render_template("error.html", error="too_many_requests", description=message))
    response.status_code = 429
    response.headers["Retry-After"] = str(retry_after)
    response.headers["Cache-Control"] = "no-store"
    return response


def locked_message(retry_after: int) -> str:
    """What the sign-in forms say to a locked account: the same words for an unknown email."""
    minutes = max(1, -(-retry_after // 60))
    wait = f"{minutes} minute{'s' if minutes > 1 else ''}" if retry_after >= 60 else f"{retry_after} seconds"
    return f"Too many failed sign-in attempts. Try again in {wait}."
