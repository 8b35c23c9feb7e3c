"""Regression tests for defects the MFA red-team review found (issue 5): each failed on the code
of that day and guards the fix: an email code never stands in for an enrolled factor (F2),
concurrent factor removals cannot skip the password (F3), the password re-entry is rate limited
(F4), password reset kills logins waiting at the MFA step (F5), and acr requests are read whole
(F6, F6b)."""

from __future__ import annotations

import threading

import pytest
import requests
from sqlalchemy import select

from idp.interaction.web import csrf_token
from idp.services import account_tokens, sessions
from idp.storage.mfa_models import TotpFactor
from idp.storage.models import db
from tests.factories import PASSWORD, form_fields, make_client, make_user, query
from tests.mfa.helpers import (
    auth_params,
    code_at,
    enrol_totp,
    id_token_claims,
    mailed_code,
    mfa_form,
    password_step,
    submit_code,
)
from tests.security.helpers import account_login


def _setup(app, factor=True, **client_over):
    with app.app_context():
        user = make_user()
        secret = enrol_totp(app, user) if factor else None
        client_id, client_secret = make_client(**client_over)
        return user.id, secret, client_id, client_secret


def _other_code(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def test_F2_email_code_bypasses_an_enrolled_authenticator_app(app, client, mailbox):
    """A user who enrolled an authenticator app is still offered "Email me a code". The
    password can be reset by email too, so whoever reads the mailbox gets in with acr mfa: the
    app adds nothing against a mailbox compromise. Expected: email codes only for users with no
    enrolled factor (README: "a user who must pass a second factor but enrolled none")."""
    from idp.interaction.accounts import drain_background
    from tests.accounts.conftest import link_in

    _, _, client_id, client_secret = _setup(app)
    # The attacker, with alice's mailbox only: forgot password -> reset link -> new password.
    page = client.get("/forgot-password")
    client.post("/forgot-password", data={**form_fields(page.get_data(as_text=True)), "email": "alice@example.com"})
    drain_background()
    link = link_in(mailbox.wait_for("alice@example.com", "Reset your password"), "/reset-password")
    page = client.get(link)
    client.post("/reset-password", data={**form_fields(page.get_data(as_text=True)), "password": "attacker passphrase 1"})
    params, verifier = auth_params(client_id)
    assert password_step(client, params, password="attacker passphrase 1").headers["Location"] == "/login/mfa"
    choose = client.get("/login/mfa").get_data(as_text=True)
    sent = client.post("/login/mfa/email", data={**mfa_form(client, "/login/mfa/email"), "action": "send"})
    if sent.status_code == 303:
        code = mailed_code(mailbox.wait_for("alice@example.com", "code"))
        response = submit_code(client, "/login/mfa/email", code)
        claims = id_token_claims(client, client_id, client_secret, response, verifier)
        pytest.fail(f"mailbox alone signed in past the authenticator app: acr={claims['acr']} amr={claims['amr']}")
    assert "/login/mfa/email" not in choose


def test_F3_concurrent_removals_turn_mfa_off_without_the_password(app, live_server):
    """/account/mfa/totp/<id>/remove asks for the password only when enrolled_count() <= 1,
    read before the delete: concurrent removals of all of a user's factors each see >= 2,
    none asks, and all go (recovery codes stay). A stolen session turns two-step verification
    off without the password. Expected: the last factor is never removed without it. (A race:
    3 factors removed at once, up to 40 rounds; it usually hits within a few.)"""
    with app.app_context():
        user = make_user()
        user_id = user.id
        secret = enrol_totp(app, user, "one")
    browser = requests.Session()
    url = live_server.url
    page = browser.get(url + "/account/login", timeout=10)
    response = browser.post(url + "/account/login", data={**form_fields(page.text), "email": "alice@example.com",
                                                          "password": PASSWORD}, allow_redirects=False, timeout=10)
    assert response.headers["Location"] == "/login/mfa"
    fields = form_fields(browser.get(url + "/login/mfa/totp", timeout=10).text)
    assert browser.post(url + "/login/mfa/totp", data={**fields, "code": code_at(secret)}, allow_redirects=False,
                        timeout=10).status_code == 302
    token = form_fields(browser.get(url + "/account/mfa", timeout=10).text).get("csrf_token") or _mfa_csrf(
        app, browser.cookies["idp_session"])
    both_gone = 0
    for attempt in range(40):
        if both_gone:
            break
        with app.app_context():
            db.session.query(TotpFactor).filter_by(user_id=user_id).delete()
            db.session.commit()
            ids = [enrol_totp_id(app, user_id, f"f{attempt}-{i}") for i in range(3)]
        barrier = threading.Barrier(3)
        results = [None, None, None]

        def remove(i, barrier=barrier, results=results, ids=ids):
            barrier.wait(timeout=30)
            results[i] = browser.post(url + f"/account/mfa/totp/{ids[i]}/remove", data={"csrf_token": token},
                                      allow_redirects=False, timeout=30).status_code

        threads = [threading.Thread(target=remove, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        with app.app_context():
            left = db.session.scalar(select(db.func.count()).select_from(TotpFactor)
                                     .where(TotpFactor.user_id == user_id))
        assert set(results) <= {302, 400, 409}, results  # removed, "enter your password", or busy
        if left == 0:
            both_gone += 1
    assert both_gone == 0, f"race {attempt}: every factor was removed, none with the password"


def _mfa_csrf(app, cookie):
    with app.app_context():
        idp = app.extensions["idp"]
        session = sessions.load_session(idp.store, cookie, idp.settings.session_idle_ttl)
        return csrf_token("mfa-account", session["sid"])


def enrol_totp_id(app, user_id, label):
    from idp.mfa import totp
    from tests.mfa.helpers import kek

    return totp.create_factor(kek(app), user_id, totp.new_secret(), label).id


def test_F4_removing_the_last_totp_factor_is_an_unlimited_password_oracle(app, client):
    """The last-factor removal checks the password with users.authenticate(): no rate limit,
    no lockout, no audit of failures (the passkey removal allows 5 per 15 minutes and audits
    them). A stolen session can guess the password at full speed. Expected: 429 after 5."""
    user_id, secret, _, _ = _setup(app)
    assert account_login(client).headers["Location"] == "/login/mfa"
    assert submit_code(client, "/login/mfa/totp", code_at(secret)).status_code == 302
    with app.app_context():
        factor_id = db.session.scalar(select(TotpFactor.id).where(TotpFactor.user_id == user_id))
    token = _mfa_csrf(app, client.get_cookie("idp_session").value)
    statuses = [client.post(f"/account/mfa/totp/{factor_id}/remove",
                            data={"password": f"guess number {i}", "csrf_token": token}).status_code
                for i in range(12)]
    assert 429 in statuses, f"12 password guesses, none throttled: {statuses}"


def test_F5_a_pending_login_survives_a_password_reset(app, client):
    """An attacker who phished the password sits at the MFA step (pending login, 10 minutes).
    Alice gets the "new sign-in" mail and resets her password, which ends every session,
    refresh token and trusted browser, but not pending logins: the attacker still finishes
    with a second factor (a phished or guessed code) and gets a session under the OLD password.
    The same after "log out everywhere". Expected: the pending login is dead."""
    user_id, secret, client_id, _ = _setup(app)
    assert password_step(client, auth_params(client_id)[0]).headers["Location"] == "/login/mfa"
    # The attacker has the code form open before Alice resets her password.
    form = mfa_form(client, "/login/mfa/totp")
    alice = app.test_client()
    with app.app_context():
        token = account_tokens.create_token(user_id, account_tokens.RESET_PASSWORD, 600)
    page = alice.get("/reset-password", query_string={"token": token})
    reset = alice.post("/reset-password", data={**form_fields(page.get_data(as_text=True)),
                                                "password": "a brand new passphrase"})
    assert reset.status_code == 200
    response = client.post("/login/mfa/totp", data={**form, "code": code_at(secret)})
    assert client.get_cookie("idp_session") is None, "a login begun with the old password finished after the reset"
    assert response.status_code == 400


def test_F6_essential_acr_mfa_is_not_enforced_when_acr_values_also_lists_pwd(app, client):
    """claims={"id_token":{"acr":{"essential":true,"values":["urn:idp:acr:mfa"]}}} together with
    acr_values=urn:idp:acr:pwd (an RP's default, or added by the user agent to the URL): the two
    are merged into one set, step_up_requested() sees pwd in it, and a one-factor session gets
    a code whose ID token says acr pwd. OIDC Core §5.5.1.1: an essential acr that cannot be met
    is a failed authentication; the essential values alone must decide. Expected: step-up."""
    _, _, client_id, client_secret = _setup(app, factor=False)
    params, verifier = auth_params(client_id)
    id_token_claims(client, client_id, client_secret, password_step(client, params), verifier)
    claims = '{"id_token": {"acr": {"essential": true, "values": ["urn:idp:acr:mfa"]}}}'
    params, verifier = auth_params(client_id, claims=claims, acr_values="urn:idp:acr:pwd")
    response = client.get("/authorize", query_string=params)
    location = response.headers.get("Location", "")
    if "code=" in location:
        got = id_token_claims(client, client_id, client_secret, response, verifier)
        pytest.fail(f"essential acr [mfa] answered with acr={got['acr']}")
    assert location.startswith("/login/mfa/step-up"), location


def test_F6b_acr_values_past_the_tenth_are_ignored(app, client):
    """requested_acr() keeps only the first 10 acr_values: `v1 ... v10 urn:idp:acr:mfa` asks for
    mfa and gets a one-factor code (README: a client asking for urn:idp:acr:mfa gets two factors
    or no code). Low: acr_values is voluntary, but the limit should refuse, not truncate."""
    _, _, client_id, client_secret = _setup(app, factor=False)
    params, verifier = auth_params(client_id)
    id_token_claims(client, client_id, client_secret, password_step(client, params), verifier)
    values = " ".join(f"urn:example:{i}" for i in range(10)) + " urn:idp:acr:mfa"
    params, _ = auth_params(client_id, acr_values=values)
    response = client.get("/authorize", query_string=params)
    assert "code" not in query(response.headers.get("Location", "")), "acr_values asked for mfa, code issued"


def test_removing_the_last_app_shares_the_password_re_entry_budget(app, client):
    """One budget per user for every password re-entry (services.accounts.check_password_again):
    guesses spent on /account/password leave none for turning two-step verification off."""
    user_id, secret, _, _ = _setup(app)
    assert account_login(client).headers["Location"] == "/login/mfa"
    assert submit_code(client, "/login/mfa/totp", code_at(secret)).status_code == 302
    fields = form_fields(client.get("/account/password").get_data(as_text=True))
    for i in range(5):
        assert client.post("/account/password", data={**fields, "current_password": f"guess {i}",
                                                      "password": "a brand new passphrase"}).status_code == 400
    with app.app_context():
        factor_id = db.session.scalar(select(TotpFactor.id).where(TotpFactor.user_id == user_id))
    token = _mfa_csrf(app, client.get_cookie("idp_session").value)
    locked = client.post(f"/account/mfa/totp/{factor_id}/remove", data={"password": PASSWORD, "csrf_token": token})
    assert locked.status_code == 429 and locked.headers["Retry-After"]
    with app.app_context():
        assert db.session.get(TotpFactor, factor_id) is not None
