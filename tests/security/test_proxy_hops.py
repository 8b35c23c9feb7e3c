"""IDP_TRUSTED_PROXY_HOPS (idp/__init__.py: werkzeug's ProxyFix with x_for = x_proto = ... = N).

With 0 (the default) no `X-Forwarded-*` header is believed: the client IP of the audit trail,
the lockout and the rate limits is the peer address, so a client cannot pick its own IP. With
N, the Nth address from the right of `X-Forwarded-For` is the client (what the proxy nearest to
us appended); anything a client put further left is ignored. The session cookie's `Secure`
flag follows the issuer (IDP_ISSUER), never `X-Forwarded-Proto`."""

from __future__ import annotations

from sqlalchemy import select

from idp.storage.models import db
from idp.storage.security_models import AuthEvent
from tests.factories import PASSWORD, make_user
from tests.security.helpers import account_login

PROXY = "10.0.0.2"  # the peer: our reverse proxy


def _login_ips(test_app, **headers) -> list[str]:
    environ = {"REMOTE_ADDR": PROXY, **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()}}
    account_login(test_app.test_client(), password=PASSWORD, **environ)
    with test_app.app_context():
        db.session.expire_all()
        return list(db.session.scalars(select(AuthEvent.ip).where(AuthEvent.event == "login")))


def test_without_trusted_proxies_x_forwarded_for_is_ignored(app):
    with app.app_context():
        make_user()
    assert _login_ips(app, x_forwarded_for="198.51.100.7") == [PROXY]


def test_one_trusted_proxy_takes_the_last_x_forwarded_for_address(app, build_app):
    proxied = build_app(trusted_proxy_hops=1)
    with proxied.app_context():
        make_user()
    # The client claimed 192.0.2.66; our proxy appended the address it saw.
    assert _login_ips(proxied, x_forwarded_for="192.0.2.66, 198.51.100.7") == ["198.51.100.7"]


def test_rate_limit_cannot_be_escaped_by_forging_x_forwarded_for(app, settings):
    client = app.test_client()
    limit = settings.login_rate_limit
    # A new email each time: the per-email lockout must not be what answers 429.
    statuses = [account_login(client, f"nobody{n}@example.com", "wrong password", REMOTE_ADDR=PROXY,
                              HTTP_X_FORWARDED_FOR=f"203.0.113.{n}").status_code for n in range(limit + 1)]
    assert statuses[:limit] == [401] * limit and statuses[limit] == 429


def test_behind_one_proxy_each_client_address_has_its_own_rate_limit(build_app, settings):
    proxied = build_app(trusted_proxy_hops=1)
    client = proxied.test_client()
    limit = settings.login_rate_limit
    for n in range(limit):
        assert account_login(client, f"nobody{n}@example.com", "wrong password", REMOTE_ADDR=PROXY,
                             HTTP_X_FORWARDED_FOR="203.0.113.1").status_code == 401
    assert account_login(client, "other@example.com", "wrong password", REMOTE_ADDR=PROXY,
                         HTTP_X_FORWARDED_FOR="203.0.113.1").status_code == 429
    # Another client behind the same proxy is not limited by the first one.
    assert account_login(client, "other@example.com", "wrong password", REMOTE_ADDR=PROXY,
                         HTTP_X_FORWARDED_FOR="203.0.113.2").status_code == 401


def test_cookie_secure_flag_follows_the_issuer_not_x_forwarded_proto(build_app):
    for issuer, proto, secure in (("http://127.0.0.1:5000", "https", False), ("https://idp.example.test", "http", True)):
        proxied = build_app(trusted_proxy_hops=1, issuer=issuer)
        with proxied.app_context():
            make_user(f"{proto}@example.com")
        browser = proxied.test_client()
        response = account_login(browser, f"{proto}@example.com", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_PROTO=proto,
                                 HTTP_X_FORWARDED_FOR="198.51.100.7")
        assert response.status_code == 302, response.get_data(as_text=True)[:300]
        [cookie] = [h for h in response.headers.getlist("Set-Cookie") if "idp_session=" in h]
        assert ("; Secure" in cookie) is secure and cookie.startswith("__Host-") is secure
