"""Browser plumbing shared by the hosted pages: cookies, CSRF tokens, the current SSO session."""

from __future__ import annotations

import hashlib
import hmac
import re
from urllib.parse import urlsplit

from flask import current_app, request

from ..services import sessions


def _secure() -> bool:
    return current_app.extensions["idp"].settings.cookie_secure


def cookie_name(base: str) -> str:
    # The __Host- prefix pins the cookie to this host, https and path / (RFC 6265bis §4.1.3.2).
    return f"__Host-{base}" if _secure() else base


SESSION_COOKIE = "idp_session"
INTERACTION_COOKIE = "idp_interaction"


def set_cookie(response, base: str, value: str, max_age: int | None) -> None:
    response.set_cookie(cookie_name(base), value, max_age=max_age, path="/", secure=_secure(), httponly=True,
                        samesite="Lax")


def clear_cookie(response, base: str) -> None:
    response.delete_cookie(cookie_name(base), path="/", secure=_secure(), httponly=True, samesite="Lax")


def get_cookie(base: str) -> str | None:
    return request.cookies.get(cookie_name(base))


def csrf_token(purpose: str, binding: str) -> str:
    key = current_app.config["SECRET_KEY"].encode()
    return hmac.new(key, f"{purpose}:{binding}".encode(), hashlib.sha256).hexdigest()


def check_csrf(purpose: str, binding: str, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(csrf_token(purpose, binding), token)


def current_session() -> tuple[str | None, dict | None]:
    """(cookie value, session) of a live SSO session, or (None, None)."""
    idp = current_app.extensions["idp"]
    cookie = get_cookie(SESSION_COOKIE)
    session = sessions.load_session(idp.store, cookie, idp.settings.session_idle_ttl)
    return (cookie, session) if session else (None, None)


def allow_form_redirect(response, redirect_uri: str | None):
    """Let this page's forms end in a redirect to the client's redirect_uri. CSP `form-action`
    also governs the redirects that follow a form submission (CSP Level 3 §6.3.1; Chromium
    enforces it), so with the default `form-action 'self'` the browser would block the login
    or consent POST's 302 to the client. The redirect_uri was validated by /authorize."""
    parts = urlsplit(redirect_uri or "")
    if parts.scheme in ("http", "https") and parts.netloc and re.fullmatch(r"[A-Za-z0-9.\-\[\]:]+", parts.netloc):
        source = f"{parts.scheme}://{parts.netloc}"
    elif re.fullmatch(r"[a-z][a-z0-9.+\-]*", parts.scheme or ""):  # private-use scheme (RFC 8252 §7.1)
        source = f"{parts.scheme}:"
    else:
        return response
    # idp/security.py's default policy, with the client's origin added to form-action.
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"form-action 'self' {source}; frame-ancestors 'none'; base-uri 'none'")
    return response
