"""UserInfo endpoint (OIDC Core §5.3): claims by granted scope and by the `claims` request
parameter; errors per RFC 6750 §3 in the WWW-Authenticate header."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from ..services import tokens
from ..storage.models import User, db
from .claims import claims_for
from .params import FORM_TYPE, malformed_reason

bp = Blueprint("userinfo", __name__)


def _bearer_error(status: int, error: str, description: str):
    response = jsonify(error=error, error_description=description)
    response.status_code = status
    challenge = f'Bearer error="{error}", error_description="{description}"'
    response.headers["WWW-Authenticate"] = challenge
    response.headers["Cache-Control"] = "no-store"
    return response


def _presented_token() -> tuple[str | None, str | None]:
    """(token, error). RFC 6750 §2: header or form body, exactly one method."""
    header = request.headers.get("Authorization", "")
    form_token = request.form.get("access_token") if request.method == "POST" else None
    if header and form_token:
        return None, "invalid_request"
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return None, "invalid_request"
        return value.strip(), None
    return form_token, None


@bp.route("/userinfo", methods=["GET", "POST"])
def userinfo():
    # A POST may have no body (Bearer header); a body must be a form (RFC 6750 §2.2).
    has_body = request.method == "POST" and (request.content_length or request.headers.get("Transfer-Encoding"))
    if (has_body and request.mimetype != FORM_TYPE) or malformed_reason(request):
        return _bearer_error(400, "invalid_request", "The request is malformed.")
    token, error = _presented_token()
    if error:
        return _bearer_error(400, "invalid_request", "Send the access token once, as a Bearer token.")
    if not token:
        # RFC 6750 §3.1: no credentials -> 401 with no error code.
        response = jsonify(error="invalid_token", error_description="An access token is required.")
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Bearer realm="userinfo"'
        return response
    idp = current_app.extensions["idp"]
    claims = tokens.verify_access_token(idp.keyring, idp.store, idp.settings.issuer, token)
    if claims is None:
        return _bearer_error(401, "invalid_token", "The access token is invalid, expired or revoked.")
    if "openid" not in claims.get("scope", "").split():
        return _bearer_error(403, "insufficient_scope", "The access token lacks the openid scope.")
    user = db.session.get(User, claims["sub"])
    if user is None or not user.active:
        return _bearer_error(401, "invalid_token", "The access token's user is gone.")
    response = jsonify(claims_for(user, claims["scope"], claims.get("userinfo_claims", [])))
    response.headers["Cache-Control"] = "no-store"
    return response
