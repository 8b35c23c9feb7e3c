"""What an https issuer adds (idp/interaction/web.py, idp/security.py): the session cookie is
`Secure` and `__Host-`-prefixed (RFC 6265bis §4.1.3.2: https, Path=/, no Domain), and every
response carries HSTS (RFC 6797). `X-Content-Type-Options: nosniff` is on every response, https
or not, HTML or JSON, success or error."""

from __future__ import annotations

import pytest

from tests.factories import make_user
from tests.security.helpers import account_login

HTTPS = "https://idp.example.test"


def _session_cookie(response) -> str:
    found = [h for h in response.headers.getlist("Set-Cookie") if "idp_session=" in h]
    assert len(found) == 1, response.headers.getlist("Set-Cookie")
    return found[0]


def _attributes(set_cookie: str) -> set[str]:
    return {part.strip().split("=")[0].lower() for part in set_cookie.split(";")[1:]}


def test_https_issuer_makes_the_session_cookie_secure_and_host_prefixed(build_app):
    https_app = build_app(issuer=HTTPS)
    with https_app.app_context():
        make_user()
    browser = https_app.test_client()
    browser.get("/account/login", base_url=HTTPS)  # the CSRF cookie comes over https
    response = account_login(browser, **{"wsgi.url_scheme": "https", "HTTP_HOST": "idp.example.test"})
    assert response.status_code == 302
    cookie = _session_cookie(response)
    assert cookie.startswith("__Host-idp_session=")
    assert {"secure", "httponly", "path", "samesite"} <= _attributes(cookie)
    assert "domain" not in _attributes(cookie)  # __Host- cookies must not name a domain
    assert "Path=/" in cookie and "SameSite=Lax" in cookie
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"


def test_http_issuer_cookie_is_neither_secure_nor_prefixed_and_no_hsts(app, client):
    with app.app_context():
        make_user()
    response = account_login(client)
    cookie = _session_cookie(response)
    assert cookie.startswith("idp_session=") and "secure" not in _attributes(cookie)
    assert "Strict-Transport-Security" not in response.headers


@pytest.mark.parametrize("method, path", [
    ("GET", "/account/login"),                          # HTML page
    ("GET", "/.well-known/openid-configuration"),       # JSON
    ("GET", "/jwks.json"),
    ("GET", "/account"),                                # redirect
    ("GET", "/no-such-page"),                           # 404
    ("POST", "/token"),                                 # OAuth error JSON (401/400)
    ("GET", "/authorize"),                              # error page
    ("GET", "/healthz"),
])
def test_every_response_says_nosniff_and_https_adds_hsts(build_app, app, method, path):
    for test_app, https in ((app, False), (build_app(issuer=HTTPS), True)):
        response = test_app.test_client().open(path, method=method, base_url=HTTPS if https else None)
        assert response.headers["X-Content-Type-Options"] == "nosniff", (path, response.status)
        assert ("Strict-Transport-Security" in response.headers) is https, (path, response.status)
