"""OpenID Connect Back-Channel Logout 1.0: when a session ends, each client with a
backchannel_logout_uri that got a code in it receives a signed logout token (§2.4, §2.5);
deliveries are queued durably, retried with back-off, and `idp clients show` reports them.
The test RP (http.server on loopback) verifies every token like a real RP would (§2.6)."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import KeySet

from idp.cli import cli
from idp.services import backchannel
from idp.storage.models import User, db, utcnow
from idp.storage.security_models import BackchannelDelivery
from tests.factories import exchange, form_fields, get_code, make_client, make_user
from tests.security.helpers import account_login

ISSUER = "http://127.0.0.1:5000"
EVENT = "http://schemas.openid.net/event/backchannel-logout"


def verify_logout_token(token: str, jwks: dict, issuer: str, client_id: str) -> dict:
    """What §2.6 asks of the RP: signature, typ, iss, aud, iat, events, sub or sid, no nonce."""
    decoded = jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["RS256"])
    claims = decoded.claims
    assert decoded.header["typ"] == "logout+jwt" and decoded.header["kid"]
    assert claims["iss"] == issuer and claims["aud"] == client_id
    assert abs(claims["iat"] - time.time()) < 60 and claims["exp"] > time.time()
    assert claims["events"] == {EVENT: {}}
    assert claims.get("sid") or claims.get("sub")
    assert "nonce" not in claims and claims["jti"]
    return claims


def _deliver(app) -> int:
    idp = app.extensions["idp"]
    return backchannel.deliver_due(idp.keyring, idp.settings)


def _rows() -> list[BackchannelDelivery]:
    db.session.expire_all()
    return list(db.session.query(BackchannelDelivery).order_by(BackchannelDelivery.created_at))


@pytest.fixture()
def rp_client(ctx, rp_server):
    cid, secret = make_client(backchannel_logout_uri=rp_server.url, backchannel_logout_session_required=True)
    return cid, secret


def _login_with_code(test_client, cid, secret) -> dict:
    code, verifier, _ = get_code(test_client, cid)
    return exchange(test_client, cid, secret, code, verifier).get_json()


def _jwks(test_client) -> dict:
    return test_client.get("/jwks.json").get_json()


def test_rp_initiated_logout_sends_a_verified_logout_token(ctx, client, rp_server, rp_client):
    cid, secret = rp_client
    make_user()
    id_token = _login_with_code(client, cid, secret)["id_token"]
    id_claims = jwt.decode(id_token, KeySet.import_key_set(_jwks(client))).claims
    page = client.get("/logout", query_string={"id_token_hint": id_token})
    client.post("/logout", data={**form_fields(page.get_data(as_text=True)), "logout": "yes"})
    assert _deliver(ctx) == 1
    [token] = rp_server.wait_for(1)
    claims = verify_logout_token(token, _jwks(client), ISSUER, cid)
    assert claims["sid"] == id_claims["sid"] and claims["sub"] == id_claims["sub"]
    [row] = _rows()
    assert (row.status, row.attempts, row.last_result) == ("delivered", 1, "HTTP 200")


def test_only_clients_that_got_tokens_in_the_session_are_told(ctx, app, rp_server, rp_client):
    cid, secret = rp_client
    other_cid, _ = make_client(backchannel_logout_uri=rp_server.url)  # never used in the session
    plain_cid, plain_secret = make_client()  # no back-channel URI
    make_user()
    browser = app.test_client()
    _login_with_code(browser, cid, secret)
    _login_with_code(browser, plain_cid, plain_secret)
    html = browser.get("/account").get_data(as_text=True)
    browser.post("/account/logout-everywhere", data={"csrf_token": form_fields(html)["csrf_token"]})
    _deliver(ctx)
    tokens = rp_server.wait_for(1)
    assert [verify_logout_token(t, _jwks(browser), ISSUER, cid)["aud"] for t in tokens] == [cid]
    assert {r.client_id for r in _rows()} == {cid} and other_cid


def test_log_out_everywhere_tells_the_client_of_every_session(ctx, app, rp_server, rp_client):
    cid, secret = rp_client
    make_user()
    first, second = app.test_client(), app.test_client()
    _login_with_code(first, cid, secret)
    _login_with_code(second, cid, secret)
    html = first.get("/account").get_data(as_text=True)
    first.post("/account/logout-everywhere", data={"csrf_token": form_fields(html)["csrf_token"]})
    assert _deliver(ctx) == 2
    sids = {verify_logout_token(t, _jwks(first), ISSUER, cid)["sid"] for t in rp_server.wait_for(2)}
    assert len(sids) == 2


def test_ending_one_session_from_the_account_page_tells_its_clients(ctx, app, rp_server, rp_client):
    cid, secret = rp_client
    make_user()
    first, second = app.test_client(), app.test_client()
    account_login(first)
    _login_with_code(second, cid, secret)
    html = first.get("/account").get_data(as_text=True)
    import re

    other = re.search(r'class="session" data-sid="([^"]+)"', html).group(1)
    first.post("/account/sessions/end", data={"csrf_token": form_fields(html)["csrf_token"], "sid": other})
    _deliver(ctx)
    [token] = rp_server.wait_for(1)
    assert verify_logout_token(token, _jwks(first), ISSUER, cid)["sid"] == other


def test_failed_delivery_is_retried_with_back_off_then_delivered(ctx, client, rp_server, rp_client):
    cid, secret = rp_client
    make_user()
    _login_with_code(client, cid, secret)
    rp_server.responses = [503, 500]
    user = db.session.query(User).one()
    from idp.services import sessions

    sessions.end_all_sessions(ctx.extensions["idp"].store, user.id)
    assert _deliver(ctx) == 1
    [row] = _rows()
    assert (row.status, row.attempts, row.last_result) == ("pending", 1, "HTTP 503")
    retry = ctx.extensions["idp"].settings.backchannel_retry_ttl
    assert timedelta(seconds=retry - 2) < row.next_attempt_at - utcnow() <= timedelta(seconds=retry)
    assert _deliver(ctx) == 0  # not due yet
    assert backchannel.deliver_due(ctx.extensions["idp"].keyring, ctx.extensions["idp"].settings,
                                   now=utcnow() + timedelta(seconds=retry + 1)) == 1
    [row] = _rows()
    assert (row.status, row.attempts, row.last_result) == ("pending", 2, "HTTP 500")
    assert row.next_attempt_at - utcnow() > timedelta(seconds=2 * retry - 2)  # doubled
    backchannel.deliver_due(ctx.extensions["idp"].keyring, ctx.extensions["idp"].settings,
                            now=utcnow() + timedelta(seconds=3 * retry))
    [row] = _rows()
    assert (row.status, row.attempts) == ("delivered", 3)
    tokens = rp_server.wait_for(3)
    jtis = {verify_logout_token(t, _jwks(client), ISSUER, cid)["jti"] for t in tokens}
    assert len(tokens) == 3 and len(jtis) == 1  # the same logout event, re-signed


def test_rejected_or_unreachable_deliveries_end_as_failed(ctx, client, rp_server, rp_client):
    cid, secret = rp_client
    make_user()
    _login_with_code(client, cid, secret)
    rp_server.responses = [400]
    from idp.services import sessions

    user = db.session.query(User).one()
    sessions.end_all_sessions(ctx.extensions["idp"].store, user.id)
    _deliver(ctx)
    [row] = _rows()
    assert (row.status, row.last_result) == ("failed", "HTTP 400")  # the RP refused it: no retry

    unreachable, _ = make_client(backchannel_logout_uri="http://127.0.0.1:9/nothing-listens")
    backchannel.enqueue_logout([unreachable], sub=user.id, sid="s1")
    settings = ctx.extensions["idp"].settings
    for i in range(settings.backchannel_max_attempts):
        backchannel.deliver_due(ctx.extensions["idp"].keyring, settings,
                                now=utcnow() + timedelta(days=i + 1))
    row = [r for r in _rows() if r.client_id == unreachable][0]
    assert row.status == "failed" and row.attempts == settings.backchannel_max_attempts
    assert row.last_result.startswith("error: ")


def test_a_due_row_is_claimed_by_exactly_one_worker(ctx, rp_client):
    cid, _ = rp_client
    backchannel.enqueue_logout([cid], sub="u", sid="s")
    assert len(backchannel.claim_due()) == 1
    assert backchannel.claim_due() == []  # claimed: not due for another worker


def test_a_node_delivers_only_the_logout_tokens_of_its_own_issuer(ctx, rp_server, rp_client):
    cid, _ = rp_client
    backchannel.enqueue_logout([cid], sub="u", sid="s")
    [row] = _rows()
    assert row.claims["iss"] == ISSUER  # the session's issuer, fixed when the session ended
    # Another issuer sharing the database (a test server, a tenant) never signs it in its name.
    assert backchannel.claim_due(issuer="https://other.example") == []
    [claimed] = backchannel.claim_due(issuer=ISSUER)
    assert claimed.id == row.id


def test_clients_cli_registers_the_uri_and_shows_the_delivery_status(ctx, client, rp_server):
    runner = ctx.test_cli_runner()
    result = runner.invoke(cli, ["clients", "create", "--name", "BCL", "--redirect-uri", "http://127.0.0.1:9/cb",
                                 "--backchannel-logout-uri", rp_server.url, "--backchannel-logout-session-required",
                                 "--scope", "openid", "--json"])
    assert result.exit_code == 0, result.output
    created = json.loads(result.output)
    assert created["backchannel_logout_uri"] == rp_server.url
    assert created["backchannel_logout_session_required"] is True
    cid = created["client_id"]
    backchannel.enqueue_logout([cid], sub="u", sid="s")
    _deliver(ctx)
    shown = json.loads(runner.invoke(cli, ["clients", "show", cid, "--json"]).output)
    status = shown["backchannel_logout_status"]
    assert (status["delivered"], status["pending"], status["failed"]) == (1, 0, 0)
    assert status["last_status"] == "delivered" and status["last_result"] == "HTTP 200"
    bad = runner.invoke(cli, ["clients", "create", "--name", "B", "--redirect-uri", "http://127.0.0.1:9/cb",
                              "--backchannel-logout-uri", "http://rp.example.com/bcl#frag"])
    assert bad.exit_code != 0


def test_admin_disable_ends_sessions_and_tells_the_clients(ctx, client, rp_server, rp_client):
    cid, secret = rp_client
    make_user()
    _login_with_code(client, cid, secret)
    result = ctx.test_cli_runner().invoke(cli, ["users", "disable", "alice@example.com"])
    assert result.exit_code == 0, result.output
    [token] = rp_server.wait_for(1)  # the CLI makes the first attempt itself
    verify_logout_token(token, _jwks(client), ISSUER, cid)
    assert client.get("/account").status_code == 302


def test_password_reset_tells_the_clients_of_every_session(ctx, app, rp_server, rp_client, mailbox):
    """Issue 4: a new password through a reset link ends every session of the user, and each
    client that got a code in one of them receives a logout token for that session."""
    from tests.accounts.conftest import link_in, post_form, sent_mail

    cid, secret = rp_client
    make_user()
    first, second = app.test_client(), app.test_client()
    sids = set()
    for browser in (first, second):
        id_token = _login_with_code(browser, cid, secret)["id_token"]
        sids.add(jwt.decode(id_token, KeySet.import_key_set(_jwks(browser))).claims["sid"])
    assert _rows() == []  # nothing queued by signing in
    stranger = app.test_client()  # the reset happens in a third browser, as from a mail client
    post_form(stranger, "/forgot-password", email="alice@example.com")
    link = link_in(sent_mail(mailbox, "alice@example.com", "Reset your password"), "/reset-password")
    fields = form_fields(stranger.get(link).get_data(as_text=True))
    assert stranger.post("/reset-password", data={**fields, "password": "a brand new passphrase"}).status_code == 200
    assert sorted((r.client_id, r.claims["sid"]) for r in _rows()) == sorted((cid, sid) for sid in sids)  # queued
    _deliver(ctx)
    tokens = rp_server.wait_for(2)
    assert {verify_logout_token(t, _jwks(first), ISSUER, cid)["sid"] for t in tokens} == sids
    assert first.get("/account").status_code == 302 and second.get("/account").status_code == 302


def test_discovery_advertises_back_channel_logout(client):
    metadata = client.get("/.well-known/openid-configuration").get_json()
    assert metadata["backchannel_logout_supported"] is True
    assert metadata["backchannel_logout_session_supported"] is True


def test_the_server_delivers_by_itself_under_gunicorn(ctx, live_server, rp_server):
    """The per-worker delivery thread: RP-initiated logout on the real server, the token
    arrives without anyone calling deliver_due()."""
    cid, secret = make_client(backchannel_logout_uri=rp_server.url)
    make_user()
    from tests.concurrency.test_single_use import live_code

    browser_code, verifier = live_code(live_server.url, cid)
    tokens = requests.post(live_server.url + "/token", auth=(cid, secret), timeout=10, data={
        "grant_type": "authorization_code", "code": browser_code, "code_verifier": verifier,
        "redirect_uri": "http://127.0.0.1:9/cb"}).json()
    # live_code used its own requests.Session: log that browser out through the account page.
    browser = requests.Session()
    page = browser.get(live_server.url + "/account/login", timeout=10)
    browser.post(live_server.url + "/account/login", timeout=10, data={
        **form_fields(page.text), "email": "alice@example.com", "password": "correct horse battery staple"})
    html = browser.get(live_server.url + "/account", timeout=10).text
    browser.post(live_server.url + "/account/logout-everywhere", timeout=10,
                 data={"csrf_token": form_fields(html)["csrf_token"]})
    [token] = rp_server.wait_for(1, timeout=15)
    jwks = requests.get(live_server.url + "/jwks.json", timeout=10).json()
    claims = verify_logout_token(token, jwks, live_server.url, cid)
    id_claims = jwt.decode(tokens["id_token"], KeySet.import_key_set(jwks)).claims
    assert claims["sid"] == id_claims["sid"]
