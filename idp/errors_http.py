"""Last-resort HTTP error handling: JSON for API clients, the error page for browsers.
No stack trace ever reaches a response; unexpected errors are logged with an error id."""

from __future__ import annotations

import logging
import secrets

from flask import Flask, g, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

logger = logging.getLogger("idp")

# Routes that speak JSON (RFC 6749 §5.2 style errors) rather than HTML.
JSON_PREFIXES = ("/token", "/introspect", "/revoke", "/userinfo", "/api/", "/jwks", "/.well-known", "/healthz",
                 "/readyz")


def wants_json() -> bool:
    return request.path.startswith(JSON_PREFIXES) or request.accept_mimetypes.best == "application/json"


def init_error_handlers(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        code = error.code or 500
        name = {400: "invalid_request", 404: "not_found", 405: "invalid_request", 413: "invalid_request",
                431: "invalid_request"}.get(code, "invalid_request" if code < 500 else "server_error")
        description = error.description if code < 500 else "the server could not handle the request"
        if wants_json():
            response = jsonify(error=name, error_description=_ascii(error.name))
            # Like the endpoints' own errors (RFC 6749 §5.1): a 405 or 413 from /token is
            # not to be cached either. (HTML pages get no-store from security.py.)
            response.headers["Cache-Control"] = "no-store"
        else:
            response = render_template("error.html", error=name, description=description, status=code)
            response = app.make_response(response)
        response.status_code = code
        if code == 405 and error.valid_methods:
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response

    @app.errorhandler(Exception)
    def unexpected_error(error: Exception):
        error_id = secrets.token_hex(6)
        logger.exception("unhandled error", extra={"fields": {"error_id": error_id,
                                                             "request_id": g.get("request_id")}})
        if wants_json():
            response = jsonify(error="server_error", error_description=f"internal error {error_id}")
            response.headers["Cache-Control"] = "no-store"
        else:
            response = app.make_response(render_template(
                "error.html", error="server_error", status=500,
                description=f"Something went wrong on our side. Error id: {error_id}"))
        response.status_code = 500
        return response


def _ascii(text: str) -> str:
    # RFC 6749 §5.2: error_description is %x20-21 / %x23-5B / %x5D-7E.
    return "".join(c for c in text if 0x20 <= ord(c) <= 0x7E and c not in '"\\')
