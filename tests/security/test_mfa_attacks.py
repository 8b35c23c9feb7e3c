"""Red-team tests of the MFA step (issue 5): "the MFA step cannot be skipped: a session is not
established, and no code is issued, until all required factors pass".

Each test attacks one defence and fails if it breaks. Black box through the hosted pages (Flask
test client, and gunicorn for the races); grey box where the test needs a value an attacker
would have to guess (a CSRF token computed with the key, a store entry aged by hand).
"""

from __future__ import annotations

import re
import threading
import time
from datetime import timedelta
from urllib.parse import urljoin

import pytest
import requests
from sqlalchemy import select, update

from idp.interaction.web import csrf_token
from idp.mfa import email_codes, flow, recovery, trusted
from idp.services import sessions
from idp.storage.mfa_models import TotpFactor, TrustedBrowser
from idp.storage.models import User, db, utcnow
from tests.factories import PASSWORD, form_fields, make_client, make_user, query
from tests.mfa.helpers import (
    auth_params,
    code_at,
    enrol_totp,
    finish,
    id_token_claims,
    kek,
    mailed_code,
    mfa_form,
    password_step,
    submit_code,
)
from tests.security.helpers import account_login

ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
FULLWIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


def _setup(app, email="alice@example.com", factor=True, **client_over):
    """A user (with a TOTP factor unless factor=False) and a client: (user_id, secret, client_id, client_secret)."""
    with app.app_context():
        user = make_user(email)
        secret = enrol_totp(app, user) if factor else None
        client_id, client_secret = make_client(**client_over)
        return user.id, secret, client_id, client_secret


def _no_code(response) -> bool:
    location = response.headers.get("Location", "")
    return "code=" not in location and b'name="code"' not in response.data


def _session_of(app, cookie_value: str | None) -> dict | None:
    with app.app_context():
        idp = app.extensions["idp"]
        return sessions.load_session(idp.store, cookie_value, idp.settings.session_idle_ttl)


def _other_code(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


# --- skipping the second factor --------------------------------------------------------------

def test_after_the_password_no_cookie_grants_anything(app, client):
    """Everything a browser has after the password step, used on every door: consent (even
    with a valid CSRF token), /authorize (same interaction, new one, prompt=none), the account
    pages and their POSTs, /userinfo, the step-up page, and the pending cookie posing as the
    session cookie. Then the right code still works: the pending login was not harmed."""
    _, secret, client_id, client_secret = _setup(app)
    params, verifier = auth_params(client_id)
    response = password_step(client, params)
    assert response.status_code == 302 and response.headers["Location"] == "/login/mfa"
    set_cookies = response.headers.getlist("Set-Cookie")
    assert not any(c.startswith("idp_session=") for c in set_cookies), set_cookies
    assert client.get_cookie("idp_session") is None
    pending_cookie = [c for c in set_cookies if c.startswith("idp_mfa=")]
    assert pending_cookie and "HttpOnly" in pending_cookie[0] and "SameSite=Lax" in pending_cookie[0]
    interaction = client.get_cookie("idp_interaction").value
    pending_id = client.get_cookie("idp_mfa").value
    with app.app_context():
        consent_csrf = csrf_token("consent", interaction)

    assert client.get("/consent", query_string={"interaction": interaction}).status_code == 400
    posted = client.post("/consent", data={"interaction": interaction, "csrf_token": consent_csrf,
                                           "decision": "allow"})
    assert posted.status_code == 400 and _no_code(posted)

    again = client.get("/authorize", query_string=params)
    assert again.status_code == 302 and again.headers["Location"].startswith("/login?")
    for over in ({"prompt": "none"}, {"prompt": "none", "acr_values": "urn:idp:acr:pwd"}):
        silent = client.get("/authorize", query_string=auth_params(client_id, **over)[0])
        answer = query(silent.headers["Location"])
        assert answer.get("error") == "login_required" and "code" not in answer, answer
    client.set_cookie("idp_interaction", interaction)  # /authorize above started new interactions

    for path in ("/account", "/account/mfa", "/account/mfa/totp", "/account/export", "/account/password",
                 "/account/passkeys/recovery-codes"):
        page = client.get(path)
        assert page.status_code in (302, 401), (path, page.status_code)
        if page.status_code == 302:
            assert page.headers["Location"].endswith("/account/login"), (path, page.headers["Location"])
    for path in ("/account/profile", "/account/logout-everywhere", "/account/mfa/recovery-codes",
                 "/account/mfa/trusted-browsers/forget", "/account/mfa/totp", "/account/password",
                 "/account/delete", "/account/sessions/end"):
        page = client.post(path, data={"name": "pwned", "code": code_at(secret), "csrf_token": "x"})
        assert page.status_code in (302, 400, 401), (path, page.status_code)
        assert not page.headers.get("Location", "").startswith("/account?"), path
    assert client.post("/account/passkeys/register/options", json={}).status_code == 401

    assert client.get("/userinfo").status_code == 401
    assert client.get("/login/mfa/step-up", query_string={"interaction": interaction}).status_code == 400

    # The pending login's cookie value is not a session key.
    client.set_cookie("idp_session", pending_id)
    assert client.get("/account").status_code == 302
    client.delete_cookie("idp_session")
    with app.app_context():
        assert db.session.get(User, db.session.scalar(select(User.id))).name == "Alice Example"

    response = submit_code(client, "/login/mfa/totp", code_at(secret))
    claims = id_token_claims(client, client_id, client_secret, response, verifier)
    assert claims["acr"] == "urn:idp:acr:mfa" and claims["amr"] == ["pwd", "otp", "mfa"]


def test_consent_post_during_a_step_up_issues_no_code(app, client):
    """A one-factor session asks for acr mfa: the consent page is reachable (the session is
    valid), but allowing there must lead back to the second factor, never to a code."""
    user_id, _, client_id, _ = _setup(app, factor=False)
    password_step(client, auth_params(client_id)[0])  # session, acr pwd (consent page not answered)
    params, _ = auth_params(client_id, acr_values="urn:idp:acr:mfa")
    response = client.get("/authorize", query_string=params)
    assert response.headers["Location"].startswith("/login/mfa/step-up?")
    interaction = client.get_cookie("idp_interaction").value
    with app.app_context():
        token = csrf_token("consent", interaction)
    for _ in range(2):
        posted = client.post("/consent", data={"interaction": interaction, "csrf_token": token, "decision": "allow"})
        assert _no_code(posted), posted.headers.get("Location")
        assert posted.status_code in (302, 400)
        if posted.status_code == 302:
            assert posted.headers["Location"].startswith("/login/mfa/step-up?"), posted.headers["Location"]
    silent = client.get("/authorize", query_string=auth_params(client_id, acr_values="urn:idp:acr:mfa",
                                                              prompt="none")[0])
    assert query(silent.headers["Location"])["error"] in ("login_required", "interaction_required")
    claims = '{"id_token": {"acr": {"essential": true, "values": ["urn:idp:acr:mfa"]}}}'
    silent = client.get("/authorize", query_string=auth_params(client_id, claims=claims, prompt="none")[0])
    assert query(silent.headers["Location"])["error"] in ("login_required", "interaction_required")
    assert user_id


def test_the_pending_cookie_is_single_use(app, client):
    """After success, the pending cookie (with the interaction cookie) opens nothing again."""
    _, secret, client_id, client_secret = _setup(app)
    params, verifier = auth_params(client_id)
    password_step(client, params)
    pending_id = client.get_cookie("idp_mfa").value
    interaction = client.get_cookie("idp_interaction").value
    fields = mfa_form(client, "/login/mfa/totp")
    response = client.post("/login/mfa/totp", data={**fields, "code": code_at(secret)})
    id_token_claims(client, client_id, client_secret, response, verifier)
    assert client.get_cookie("idp_mfa") is None  # cleared by the success

    thief = app.test_client()
    thief.set_cookie("idp_mfa", pending_id)
    thief.set_cookie("idp_interaction", interaction)
    assert thief.get("/login/mfa").status_code == 400
    replay = thief.post("/login/mfa/totp", data={**fields, "code": code_at(secret, 1)})
    assert replay.status_code == 400 and _no_code(replay)
    assert thief.get_cookie("idp_session") is None


def test_a_locked_pending_login_stays_dead(app, client):
    _, secret, client_id, _ = _setup(app)
    password_step(client, auth_params(client_id)[0])
    fields = mfa_form(client, "/login/mfa/totp")
    wrong = _other_code(code_at(secret))
    statuses = [client.post("/login/mfa/totp", data={**fields, "code": wrong}).status_code for _ in range(5)]
    assert statuses == [401, 401, 401, 401, 429]
    for code in (code_at(secret), code_at(secret, -1)):
        response = client.post("/login/mfa/totp", data={**fields, "code": code})
        assert response.status_code == 400 and _no_code(response)
    assert client.get_cookie("idp_session") is None


def test_another_users_code_does_not_finish_this_login(app, client):
    _, _, client_id, _ = _setup(app)
    with app.app_context():
        mallory_secret = enrol_totp(app, make_user("mallory@example.com"))
        mallory_codes = recovery.generate(kek(app), db.session.scalar(
            select(User.id).where(User.email == "mallory@example.com")))
    password_step(client, auth_params(client_id)[0])
    assert submit_code(client, "/login/mfa/totp", code_at(mallory_secret)).status_code == 401
    assert submit_code(client, "/login/mfa/recovery", mallory_codes[0]).status_code in (400, 401)
    assert client.get_cookie("idp_session") is None


def test_step_up_cannot_be_finished_with_another_sessions_cookie(app, client):
    """The step-up pending login names its session (sid). Finishing it while presenting another
    session's cookie (the same user's other browser, or another user's) upgrades nothing."""
    user_id, _, client_id, _ = _setup(app, factor=False)
    with app.app_context():
        make_user("bob@example.com")
    password_step(client, auth_params(client_id)[0])
    mine = client.get_cookie("idp_session").value
    other_browser, bob = app.test_client(), app.test_client()
    password_step(other_browser, auth_params(client_id)[0])
    password_step(bob, auth_params(client_id)[0], email="bob@example.com")
    with app.app_context():
        secret = enrol_totp(app, db.session.get(User, user_id))
    for stranger in (other_browser, bob):
        response = client.get("/authorize", query_string=auth_params(client_id, acr_values="urn:idp:acr:mfa")[0])
        response = client.get(response.headers["Location"])
        assert response.headers["Location"] == "/login/mfa"
        fields = mfa_form(client, "/login/mfa/totp")
        client.set_cookie("idp_session", stranger.get_cookie("idp_session").value)
        step = 0 if stranger is other_browser else 1
        answer = client.post("/login/mfa/totp", data={**fields, "code": code_at(secret, step)})
        assert answer.status_code == 400 and _no_code(answer)
        assert _session_of(app, stranger.get_cookie("idp_session").value)["acr"] == "urn:idp:acr:pwd"
        assert _session_of(app, mine)["acr"] == "urn:idp:acr:pwd"
        client.set_cookie("idp_session", mine)


# --- TOTP input ------------------------------------------------------------------------------

def test_totp_code_lookalikes_are_wrong_codes_and_never_a_500(app, client):
    """The right code written with Arabic-Indic or full-width digits (str.isdigit() accepts
    both), with a 7th digit, or 2 steps away, is a wrong code; malformed requests are 400 and
    count nothing; the right code with spaces then works (4 of the 5 attempts were used)."""
    _, secret, client_id, _ = _setup(app)
    password_step(client, auth_params(client_id)[0])
    fields = mfa_form(client, "/login/mfa/totp")
    right = code_at(secret)
    for lookalike in (right.translate(ARABIC_INDIC), right.translate(FULLWIDTH), right + "0", code_at(secret, 2)):
        response = client.post("/login/mfa/totp", data={**fields, "code": lookalike})
        assert response.status_code == 401, (lookalike, response.status_code)
        assert b"Traceback" not in response.data
    malformed = [
        dict(data={**fields, "code": right + "\x00"}),
        dict(data={"csrf_token": fields["csrf_token"], "code": ["000000", right]}),
        dict(json={**fields, "code": right}),
        dict(data=f"csrf_token={fields['csrf_token']}&code={right}", content_type="text/plain"),
        dict(data=b"code=%c0%af&csrf_token=" + fields["csrf_token"].encode(),
             content_type="application/x-www-form-urlencoded"),
        dict(data={"code": right}),
        dict(data={"code": right, "csrf_token": csrf_token_for_other_purpose(app, client)}),
    ]
    for kwargs in malformed:
        response = client.post("/login/mfa/totp", **kwargs)
        assert response.status_code in (400, 413, 415), (kwargs, response.status_code)
        assert _no_code(response) and client.get_cookie("idp_session") is None
    huge = client.post("/login/mfa/totp", data={**fields, "code": right + " " * 200_000})
    assert huge.status_code in (400, 413)
    response = client.post("/login/mfa/totp", data={**fields, "code": f"  {right[:3]} {right[3:]} "})
    assert response.status_code == 302 and client.get_cookie("idp_session") is not None


def csrf_token_for_other_purpose(app, test_client) -> str:
    """A valid token of the login form of this interaction: wrong purpose for the MFA form."""
    with app.app_context():
        return csrf_token("login", test_client.get_cookie("idp_interaction").value)


def test_totp_two_steps_back_is_refused(app, client):
    _, secret, client_id, _ = _setup(app)
    password_step(client, auth_params(client_id)[0])
    assert submit_code(client, "/login/mfa/totp", code_at(secret, -2)).status_code == 401
    assert submit_code(client, "/login/mfa/totp", code_at(secret, -1)).status_code == 302


def test_a_totp_code_used_at_login_is_refused_in_the_next_login(app, client):
    _, secret, client_id, _ = _setup(app)
    code = code_at(secret)
    password_step(client, auth_params(client_id)[0])
    assert submit_code(client, "/login/mfa/totp", code).status_code == 302
    other = app.test_client()
    password_step(other, auth_params(client_id)[0])
    response = submit_code(other, "/login/mfa/totp", code)
    assert response.status_code == 401 and other.get_cookie("idp_session") is None


# --- recovery codes ------------------------------------------------------------------------

def test_recovery_code_formats_single_use_and_regeneration(app, client):
    user_id, _, client_id, _ = _setup(app)
    with app.app_context():
        codes = recovery.generate(kek(app), user_id)
    password_step(client, auth_params(client_id)[0])
    # Upper case, a space instead of the dash: the same code (it is typed by hand).
    assert submit_code(client, "/login/mfa/recovery", codes[0].upper().replace("-", " ")).status_code == 302
    second = app.test_client()
    password_step(second, auth_params(client_id)[0])
    for variant in (codes[0], codes[0].replace("-", ""), codes[0] + "0", codes[0][:-1]):
        assert submit_code(second, "/login/mfa/recovery", variant).status_code == 401, variant
    with app.app_context():
        fresh = recovery.generate(kek(app), user_id)  # "Make new recovery codes"
    # The 5th attempt of this pending login: an old, never used code is dead.
    assert submit_code(second, "/login/mfa/recovery", codes[1]).status_code == 429
    third = app.test_client()
    password_step(third, auth_params(client_id)[0])
    assert submit_code(third, "/login/mfa/recovery", codes[2]).status_code == 401
    assert submit_code(third, "/login/mfa/recovery", fresh[0]).status_code == 302


# --- email codes ----------------------------------------------------------------------------

def _email_pending(app, test_client, client_id):
    password_step(test_client, auth_params(client_id)[0])
    assert test_client.get("/login/mfa").status_code in (200, 302)


def _send_code(test_client, mailbox, before: int) -> str:
    sent = test_client.post("/login/mfa/email", data={**mfa_form(test_client, "/login/mfa/email"), "action": "send"})
    assert sent.status_code == 303, sent.get_data(as_text=True)[:300]
    deadline = time.monotonic() + 10
    while len(mailbox.to("alice@example.com")) <= before and time.monotonic() < deadline:
        time.sleep(0.05)
    return mailed_code(mailbox.to("alice@example.com")[-1])


def test_email_code_is_bound_to_its_pending_login_and_a_resend_kills_the_old_one(app, client, mailbox):
    _, _, client_id, _ = _setup(app, factor=False, require_mfa=True)
    _email_pending(app, client, client_id)
    first = _send_code(client, mailbox, 0)
    other = app.test_client()
    _email_pending(app, other, client_id)
    # The code mailed for the first browser's login does not finish the second one.
    assert submit_code(other, "/login/mfa/email", first).status_code == 401
    assert submit_code(other, "/login/mfa/email", first.translate(ARABIC_INDIC)).status_code == 401
    with app.app_context():  # the 30-second resend wait, skipped
        app.extensions["idp"].store.delete(email_codes._key(client.get_cookie("idp_mfa").value) + ":resend")
    second = _send_code(client, mailbox, 1)
    if second != first:
        assert submit_code(client, "/login/mfa/email", first).status_code == 401
    assert submit_code(client, "/login/mfa/email", second).status_code == 302
    assert client.get_cookie("idp_session") is not None


def test_email_code_expires_after_ten_minutes(app, client, mailbox):
    _, _, client_id, _ = _setup(app, factor=False, require_mfa=True)
    _email_pending(app, client, client_id)
    code = _send_code(client, mailbox, 0)
    with app.app_context():
        store = app.extensions["idp"].store
        key = email_codes._key(client.get_cookie("idp_mfa").value)
        assert 0 < store.ttl(key) <= 600
        store.set(key, store.get(key), 0.2)  # the clock moves on 10 minutes
    time.sleep(0.4)
    response = submit_code(client, "/login/mfa/email", code)
    assert response.status_code == 401 and client.get_cookie("idp_session") is None


def test_email_codes_per_user_hourly_limit_holds_across_pending_logins(app, mailbox):
    _, _, client_id, _ = _setup(app, factor=False, require_mfa=True)
    statuses = []
    for _ in range(6):
        browser = app.test_client()
        _email_pending(app, browser, client_id)
        sent = browser.post("/login/mfa/email", data={**mfa_form(browser, "/login/mfa/email"), "action": "send"})
        statuses.append(sent.status_code)
    assert statuses == [303] * 5 + [429]


def test_email_code_needs_a_verified_address(app, client, mailbox):
    with app.app_context():
        make_user(verified=False)
        client_id, _ = make_client(require_mfa=True)
    # IDP_REQUIRE_VERIFIED_EMAIL stops the login before the MFA step; the send is refused anyway.
    password_step(client, auth_params(client_id)[0])
    assert client.get_cookie("idp_session") is None
    response = client.post("/login/mfa/email", data={"action": "send", "csrf_token": "x"})
    assert 400 <= response.status_code < 500
    assert mailbox.to("alice@example.com") == [] or all(
        "sign-in code" not in str(m["Subject"]).lower() for m in mailbox.to("alice@example.com"))


# --- attempt counters -------------------------------------------------------------------------

def test_password_failures_do_not_use_up_mfa_attempts_and_mfa_failures_do_not_lock_the_password(app, client):
    _, secret, client_id, _ = _setup(app)
    for _ in range(4):  # one short of the password lockout
        bad = password_step(app.test_client(), auth_params(client_id)[0], password="wrong password!")
        assert bad.status_code == 401
    password_step(client, auth_params(client_id)[0])
    response = submit_code(client, "/login/mfa/totp", _other_code(code_at(secret)))
    assert response.status_code == 401 and b"4 attempts left" in response.data
    for _ in range(3):  # two locked pending logins: 10 wrong codes
        browser = app.test_client()
        password_step(browser, auth_params(client_id)[0])
        for _ in range(5):
            submit_code(browser, "/login/mfa/totp", _other_code(code_at(secret)))
    fine = app.test_client()
    assert password_step(fine, auth_params(client_id)[0]).headers["Location"] == "/login/mfa"
    assert submit_code(fine, "/login/mfa/totp", code_at(secret)).status_code == 302


def test_wrong_totp_codes_are_limited_per_account_across_pending_logins(app, client):
    """Knowing the password must not buy unlimited guesses by signing in again and again
    (NIST SP 800-63B §5.2.2: at most 100 consecutive failures per account): 21 pending logins
    x 5 wrong codes = 105 failures, and the next login's right code is refused."""
    _, secret, client_id, _ = _setup(app)
    for _ in range(21):
        browser = app.test_client()
        assert password_step(browser, auth_params(client_id)[0]).headers["Location"] == "/login/mfa"
        fields = mfa_form(browser, "/login/mfa/totp")
        for _ in range(5):
            browser.post("/login/mfa/totp", data={**fields, "code": _other_code(code_at(secret))})
    password_step(client, auth_params(client_id)[0])
    response = submit_code(client, "/login/mfa/totp", code_at(secret))
    # Expected: the account's second factor is throttled after <= 100 consecutive failures.
    assert client.get_cookie("idp_session") is None, "105 wrong TOTP codes, and the 106th guess is still checked"
    assert response.status_code == 429


# --- trusted browsers ------------------------------------------------------------------------

def _trusted_browser(app, client_id, secret):
    browser = app.test_client()
    password_step(browser, auth_params(client_id)[0])
    fields = mfa_form(browser, "/login/mfa/totp")
    response = browser.post("/login/mfa/totp", data={**fields, "code": code_at(secret), "trust_browser": "yes"})
    assert response.status_code == 302
    finish(browser, response)
    cookie = browser.get_cookie("idp_trusted_browser").value
    browser.delete_cookie("idp_session")
    return browser, cookie


def _asks_mfa(browser, client_id) -> bool:
    browser.delete_cookie("idp_session")
    return password_step(browser, auth_params(client_id)[0]).headers["Location"] == "/login/mfa"


def test_trust_cookie_altered_expired_or_of_another_user_is_ignored(app):
    user_id, secret, client_id, _ = _setup(app)
    browser, cookie = _trusted_browser(app, client_id, secret)
    assert not _asks_mfa(browser, client_id)  # the control: trust works
    payload, _, signature = cookie.rpartition(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    for forged in (payload + "." + flipped, cookie + "x", cookie[1:], "", "x" * 399):
        attacker = app.test_client()
        attacker.set_cookie("idp_trusted_browser", forged)
        assert _asks_mfa(attacker, client_id), forged[:30]
    with app.app_context():
        bob = make_user("bob@example.com")
        enrol_totp(app, bob)
        bob_id = bob.id
    theft = app.test_client()
    theft.set_cookie("idp_trusted_browser", cookie)  # alice's trust does not cover bob
    assert password_step(theft, auth_params(client_id)[0], email="bob@example.com").headers["Location"] == "/login/mfa"
    with app.app_context():  # IDP_TRUSTED_BROWSER_TTL passes
        db.session.execute(update(TrustedBrowser).where(TrustedBrowser.user_id == user_id)
                           .values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    assert _asks_mfa(browser, client_id)
    assert bob_id


def test_trust_cookie_signed_for_a_deleted_row_or_with_the_wrong_key_is_ignored(app):
    user_id, secret, client_id, _ = _setup(app)
    with app.app_context():
        made_elsewhere = trusted._serializer("not the secret key").dumps({"u": user_id, "b": "x" * 43})
        recorded = trusted.create_trust("not the secret key", user_id, 3600, None)
    for cookie in (made_elsewhere, recorded):
        browser = app.test_client()
        browser.set_cookie("idp_trusted_browser", cookie)
        assert _asks_mfa(browser, client_id)


def test_password_change_and_reset_forget_trusted_browsers(app, mailbox):
    user_id, secret, client_id, _ = _setup(app)
    browser, _ = _trusted_browser(app, client_id, secret)
    assert not _asks_mfa(browser, client_id)
    # Change the password on the account page (signed in through the trusted browser).
    page = browser.get("/account/password")
    assert page.status_code == 200
    changed = browser.post("/account/password", data={**form_fields(page.get_data(as_text=True)),
                                                      "current_password": PASSWORD,
                                                      "password": "another long passphrase"})
    assert changed.status_code == 200, changed.get_data(as_text=True)[:300]
    assert _asks_mfa_with(browser, client_id, "another long passphrase")
    # Trusted again, then a password reset through a link.
    browser2, _ = _trusted_browser_with(app, client_id, secret, "another long passphrase")
    assert not _asks_mfa_with(browser2, client_id, "another long passphrase")
    from idp.services import account_tokens

    with app.app_context():
        token = account_tokens.create_token(user_id, account_tokens.RESET_PASSWORD, 600)
    page = browser2.get("/reset-password", query_string={"token": token})
    reset = browser2.post("/reset-password", data={**form_fields(page.get_data(as_text=True)),
                                                   "password": "a third long passphrase"})
    assert reset.status_code == 200, reset.get_data(as_text=True)[:300]
    assert _asks_mfa_with(browser2, client_id, "a third long passphrase")


def _asks_mfa_with(browser, client_id, password) -> bool:
    browser.delete_cookie("idp_session")
    return password_step(browser, auth_params(client_id)[0], password=password).headers["Location"] == "/login/mfa"


def _trusted_browser_with(app, client_id, secret, password):
    browser = app.test_client()
    password_step(browser, auth_params(client_id)[0], password=password)
    fields = mfa_form(browser, "/login/mfa/totp")
    response = browser.post("/login/mfa/totp", data={**fields, "code": code_at(secret, 1), "trust_browser": "yes"})
    assert response.status_code == 302
    finish(browser, response)
    return browser, browser.get_cookie("idp_trusted_browser").value


def test_a_trusted_browser_still_steps_up_for_acr_values(app):
    _, secret, client_id, client_secret = _setup(app)
    browser, _ = _trusted_browser(app, client_id, secret)
    params, _ = auth_params(client_id, acr_values="urn:idp:acr:mfa")
    assert password_step(browser, params).headers["Location"] == "/login/mfa"
    assert browser.get_cookie("idp_session") is None


# --- factor management on the account page ----------------------------------------------------

def _signed_in_account(app, test_client, secret):
    response = account_login(test_client)
    assert response.headers["Location"] == "/login/mfa"
    response = submit_code(test_client, "/login/mfa/totp", code_at(secret))
    assert response.status_code == 302 and response.headers["Location"].endswith("/account")
    with app.app_context():
        session = _session_of(app, test_client.get_cookie("idp_session").value)
        return csrf_token("mfa-account", session["sid"])


def _factors(app, user_id) -> list[tuple[str, str]]:
    with app.app_context():
        return [(f.id, f.label) for f in db.session.scalars(select(TotpFactor).where(TotpFactor.user_id == user_id))]


def test_factor_forms_need_csrf_ownership_and_the_password_for_the_last_one(app, client):
    user_id, secret, _, _ = _setup(app)
    with app.app_context():
        mallory = make_user("mallory@example.com")
        enrol_totp(app, mallory, "Mallory phone")
        mallory_id = mallory.id
    token = _signed_in_account(app, client, secret)
    (factor_id, _), = _factors(app, user_id)
    (mallory_factor, _), = _factors(app, mallory_id)
    with app.app_context():
        codes_before = recovery.remaining(user_id)
    for path, data in ((f"/account/mfa/totp/{factor_id}/rename", {"label": "csrf"}),
                       (f"/account/mfa/totp/{factor_id}/remove", {"password": PASSWORD}),
                       ("/account/mfa/recovery-codes", {}), ("/account/mfa/trusted-browsers/forget", {}),
                       ("/account/mfa/totp", {"code": "123456"})):
        for bad in ({}, {"csrf_token": "0" * 64}, {"csrf_token": csrf_token_login(app)}):
            response = client.post(path, data={**data, **bad})
            assert response.status_code == 400, (path, bad, response.status_code)
    # Another user's factor (IDOR), with a valid token.
    assert client.post(f"/account/mfa/totp/{mallory_factor}/rename",
                       data={"label": "owned", "csrf_token": token}).status_code == 400
    assert client.post(f"/account/mfa/totp/{mallory_factor}/remove",
                       data={"password": PASSWORD, "csrf_token": token}).status_code == 404
    assert _factors(app, mallory_id) == [(mallory_factor, "Mallory phone")]
    # The last factor: no password, a wrong one.
    for data in ({}, {"password": ""}, {"password": "wrong password!"}, {"password": PASSWORD + " "}):
        response = client.post(f"/account/mfa/totp/{factor_id}/remove", data={**data, "csrf_token": token})
        assert response.status_code == 400
    assert _factors(app, user_id) == [(factor_id, "Phone")]
    with app.app_context():
        assert recovery.remaining(user_id) == codes_before
    response = client.post(f"/account/mfa/totp/{factor_id}/remove", data={"password": PASSWORD, "csrf_token": token})
    assert response.status_code == 302 and _factors(app, user_id) == []


def csrf_token_login(app) -> str:
    with app.app_context():
        return csrf_token("account", "not-the-sid")


def test_factor_names_are_escaped_and_bounded(app, client):
    user_id, secret, _, _ = _setup(app)
    token = _signed_in_account(app, client, secret)
    (factor_id, _), = _factors(app, user_id)
    evil = '<script>alert(1)</script><img src=x onerror=alert(2)>"\''
    response = client.post(f"/account/mfa/totp/{factor_id}/rename", data={"label": evil + "x" * 5000,
                                                                           "csrf_token": token})
    assert response.status_code == 302
    (_, label), = _factors(app, user_id)
    assert len(label) <= 100
    for path in ("/account/mfa", "/account"):
        page = client.get(path).get_data(as_text=True)
        assert "<script>alert(1)" not in page and "<img src=x" not in page
        assert "&lt;script&gt;alert(1)" in page or path == "/account"
    for label in ("", "   ", "\t\n"):
        assert client.post(f"/account/mfa/totp/{factor_id}/rename",
                           data={"label": label, "csrf_token": token}).status_code == 400


def test_enrolment_with_a_pending_login_only_is_refused(app, client):
    """The enrol page needs a session: the pending login of a user who already has a factor
    cannot add the attacker's authenticator app."""
    user_id, _, client_id, _ = _setup(app)
    password_step(client, auth_params(client_id)[0])
    assert client.get("/account/mfa/totp").status_code == 302
    response = client.post("/account/mfa/totp", data={"code": "123456", "label": "attacker"})
    assert response.status_code == 302 and response.headers["Location"].endswith("/account/login")
    assert len(_factors(app, user_id)) == 1


# --- races against gunicorn ------------------------------------------------------------------

@pytest.fixture()
def live(app, live_server):
    with app.app_context():
        yield live_server
        db.session.remove()


def _live_pending(url: str, client_id: str, **over) -> requests.Session:
    browser = requests.Session()
    params, _ = auth_params(client_id, **over)
    response = browser.get(url + "/authorize", params=params, allow_redirects=False, timeout=10)
    fields = form_fields(browser.get(urljoin(url + "/", response.headers["Location"]), timeout=10).text)
    response = browser.post(url + "/login", data={**fields, "email": "alice@example.com", "password": PASSWORD},
                            allow_redirects=False, timeout=10)
    assert response.headers["Location"] == "/login/mfa", response.text[:300]
    return browser


def _race(calls) -> list:
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(i):
        barrier.wait(timeout=30)
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def _is_success(response) -> bool:
    location = response.headers.get("Location", "")
    return response.status_code == 302 and (location.startswith("/consent") or "code=" in location)


@pytest.mark.timeout(120)
def test_one_pending_login_one_code_many_concurrent_posts(app, live):
    _, secret, client_id, _ = _setup(app)
    browser = _live_pending(live.url, client_id)
    fields = form_fields(browser.get(live.url + "/login/mfa/totp", timeout=10).text)
    code = code_at(secret)
    results = _race([lambda: browser.post(live.url + "/login/mfa/totp", data={**fields, "code": code},
                                          allow_redirects=False, timeout=30) for _ in range(8)])
    assert sum(_is_success(r) for r in results) == 1, [(r.status_code, r.headers.get("Location")) for r in results]
    assert all(r.status_code < 500 for r in results)


@pytest.mark.timeout(120)
def test_twenty_concurrent_wrong_codes_then_the_right_one_fails(app, live):
    _, secret, client_id, _ = _setup(app)
    browser = _live_pending(live.url, client_id)
    fields = form_fields(browser.get(live.url + "/login/mfa/totp", timeout=10).text)
    wrong = _other_code(code_at(secret))
    results = _race([lambda: browser.post(live.url + "/login/mfa/totp", data={**fields, "code": wrong},
                                          allow_redirects=False, timeout=30) for _ in range(20)])
    statuses = sorted(r.status_code for r in results)
    assert statuses.count(401) == 4 and all(s in (400, 401, 429) for s in statuses), statuses
    right = browser.post(live.url + "/login/mfa/totp", data={**fields, "code": code_at(secret)},
                         allow_redirects=False, timeout=30)
    assert right.status_code in (400, 429) and not _is_success(right)
    assert "idp_session" not in browser.cookies


@pytest.mark.timeout(120)
def test_one_email_code_is_accepted_once_under_concurrency(app, live, mailbox):
    _setup(app, factor=False)
    with app.app_context():
        client_id, _ = make_client(require_mfa=True)
    browser = _live_pending(live.url, client_id)
    fields = form_fields(browser.get(live.url + "/login/mfa/email", timeout=10).text)
    sent = browser.post(live.url + "/login/mfa/email", data={**fields, "action": "send"}, allow_redirects=False,
                        timeout=10)
    assert sent.status_code == 303
    code = mailed_code(mailbox.wait_for("alice@example.com", "code"))
    results = _race([lambda: browser.post(live.url + "/login/mfa/email", data={**fields, "code": code},
                                          allow_redirects=False, timeout=30) for _ in range(6)])
    assert sum(_is_success(r) for r in results) == 1, [(r.status_code, r.headers.get("Location")) for r in results]


@pytest.mark.timeout(120)
def test_concurrent_step_ups_of_one_session_upgrade_it_once(app, live):
    """Two tabs of one session step up at once; each pending login names the same sid. The
    session ends upgraded once (one live session, acr mfa), and nothing else gets a session."""
    user_id, _, client_id, _ = _setup(app, factor=False)
    browser = requests.Session()
    params, _ = auth_params(client_id)
    response = browser.get(live.url + "/authorize", params=params, allow_redirects=False, timeout=10)
    fields = form_fields(browser.get(urljoin(live.url + "/", response.headers["Location"]), timeout=10).text)
    browser.post(live.url + "/login", data={**fields, "email": "alice@example.com", "password": PASSWORD},
                 allow_redirects=False, timeout=10)
    assert "idp_session" in browser.cookies
    with app.app_context():
        secret = enrol_totp(app, db.session.get(User, user_id))
    tabs = []
    for _ in range(2):
        tab = requests.Session()
        tab.cookies.set("idp_session", browser.cookies["idp_session"])
        step = tab.get(live.url + "/authorize", params=auth_params(client_id, acr_values="urn:idp:acr:mfa")[0],
                       allow_redirects=False, timeout=10)
        pending = tab.get(urljoin(live.url + "/", step.headers["Location"]), allow_redirects=False, timeout=10)
        assert pending.headers["Location"] == "/login/mfa"
        tabs.append((tab, form_fields(tab.get(live.url + "/login/mfa/totp", timeout=10).text)))
    codes = [code_at(secret), code_at(secret, 1)]
    results = _race([lambda i=i: tabs[i][0].post(live.url + "/login/mfa/totp", data={**tabs[i][1], "code": codes[i]},
                                                 allow_redirects=False, timeout=30) for i in range(2)])
    assert all(r.status_code < 500 for r in results)
    with app.app_context():
        live_sessions = sessions.list_sessions(app.extensions["idp"].store, user_id)
    assert len(live_sessions) == 1 and live_sessions[0]["acr"] == "urn:idp:acr:mfa", live_sessions


def _live_account(url: str, secret: str) -> requests.Session:
    """alice signed in on the live server's account page (password + TOTP)."""
    browser = requests.Session()
    page = browser.get(url + "/account/login", timeout=10)
    browser.post(url + "/account/login", data={**form_fields(page.text), "email": "alice@example.com",
                                               "password": PASSWORD}, allow_redirects=False, timeout=10)
    fields = form_fields(browser.get(url + "/login/mfa/totp", timeout=10).text)
    assert browser.post(url + "/login/mfa/totp", data={**fields, "code": code_at(secret)}, allow_redirects=False,
                        timeout=10).status_code == 302
    return browser


@pytest.mark.timeout(180)
def test_a_totp_app_and_a_passkey_removed_at_once_never_both_go_without_the_password(app, live):
    """Issue 5: the TOTP and passkey removals take the same per-user factor_change_lock and
    count every kind of factor inside it, so one of two concurrent removals of a user's last
    two factors asks for the password (or answers 409), never both remove."""
    import secrets as _secrets

    from idp.mfa import totp
    from idp.storage.passkey_models import WebAuthnCredential

    user_id, secret, _, _ = _setup(app)
    browser = _live_account(live.url, secret)
    sid = _session_of(app, browser.cookies["idp_session"])["sid"]
    tokens = {"totp": csrf_token("mfa-account", sid), "passkey": csrf_token("account", sid)}
    for attempt in range(15):
        db.session.query(TotpFactor).filter_by(user_id=user_id).delete()
        db.session.query(WebAuthnCredential).filter_by(user_id=user_id).delete()
        totp_id = totp.create_factor(kek(app), user_id, totp.new_secret(), f"app {attempt}").id
        passkey = WebAuthnCredential(user_id=user_id, credential_id=_secrets.token_urlsafe(16),
                                     user_handle=_secrets.token_bytes(32), public_key=b"k", aaguid="0" * 36,
                                     name=f"key {attempt}")
        db.session.add(passkey)
        db.session.commit()
        paths = [(f"/account/mfa/totp/{totp_id}/remove", tokens["totp"]),
                 (f"/account/passkeys/{passkey.id}/remove", tokens["passkey"])]
        statuses = sorted(r.status_code for r in _race([
            lambda p=p, t=t: browser.post(live.url + p, data={"csrf_token": t}, allow_redirects=False, timeout=30)
            for p, t in paths]))
        # 302 removed; 400 (TOTP) or 200 (passkey confirmation page): "enter your password"; 409 busy.
        assert statuses in ([200, 302], [302, 400], [302, 409], [200, 409], [400, 409], [409, 409]), statuses
        db.session.remove()
        left = (db.session.query(TotpFactor).filter_by(user_id=user_id).count()
                + db.session.query(WebAuthnCredential).filter_by(user_id=user_id).count())
        assert left >= 1, f"round {attempt}: both factors removed, none with the password ({statuses})"


def test_flow_module_rejects_oversized_pending_cookies(app):
    with app.test_request_context("/", headers={"Cookie": "idp_mfa=" + "a" * 65}):
        assert flow.load_pending() == (None, None)


@pytest.mark.timeout(180)
def test_the_per_user_budget_of_wrong_codes_is_exact_under_concurrency(app, live):
    """6 pending logins of one user, 5 wrong codes each, all 30 at once: the per-pending limit
    alone would let 30 be checked; the per-user budget (20 per 15 minutes) lets exactly 20 be
    checked (one audit row each), and then even a fresh login's right code is refused."""
    from sqlalchemy import func

    from idp.storage.security_models import AuthEvent

    _, secret, client_id, _ = _setup(app)
    browsers = [_live_pending(live.url, client_id) for _ in range(6)]
    forms = [form_fields(b.get(live.url + "/login/mfa/totp", timeout=10).text) for b in browsers]
    wrong = _other_code(code_at(secret))
    calls = [lambda b=b, f=f: b.post(live.url + "/login/mfa/totp", data={**f, "code": wrong}, allow_redirects=False,
                                     timeout=30)
             for b, f in zip(browsers, forms, strict=True) for _ in range(5)]
    results = _race(calls)
    assert all(r.status_code in (400, 401, 429) for r in results), [r.status_code for r in results]
    db.session.remove()
    checked = db.session.scalar(select(func.count()).select_from(AuthEvent)
                                .where(AuthEvent.event == "mfa", AuthEvent.result == "failure"))
    assert checked == 20
    fresh = _live_pending(live.url, client_id)
    fields = form_fields(fresh.get(live.url + "/login/mfa/totp", timeout=10).text)
    right = fresh.post(live.url + "/login/mfa/totp", data={**fields, "code": code_at(secret)}, allow_redirects=False,
                       timeout=30)
    assert right.status_code == 429 and not _is_success(right)


def test_secret_pages_are_not_cached_framed_or_leaked(app, client):
    """The enrolment page (TOTP secret) and the recovery codes page: no-store, not framable,
    no referrer; the codes are shown once and never on the manage page afterwards."""
    user_id, secret, client_id, _ = _setup(app)
    with app.app_context():
        db.session.query(TotpFactor).filter_by(user_id=user_id).delete()
        db.session.commit()
    password_step(client, auth_params(client_id)[0])  # no factor: a session (acr pwd)
    page = client.get("/account/mfa/totp")
    assert page.status_code == 200
    new_secret = re.search(r"\b([A-Z2-7]{32})\b", page.get_data(as_text=True)).group(1)
    fields = form_fields(page.get_data(as_text=True))
    shown = client.post("/account/mfa/totp", data={**fields, "code": code_at(new_secret), "label": "Phone"})
    assert shown.status_code == 200
    codes = re.findall(r"\b[0-9a-z]{5}-[0-9a-z]{5}\b", shown.get_data(as_text=True))
    assert len(set(codes)) == 10
    for response in (page, shown):
        assert "no-store" in response.headers["Cache-Control"]
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
        assert response.headers.get("X-Frame-Options") == "DENY"
        assert response.headers.get("Referrer-Policy") == "no-referrer"
    manage = client.get("/account/mfa").get_data(as_text=True)
    assert not any(c in manage for c in codes) and new_secret not in manage
    assert secret


def test_a_one_factor_session_gets_no_code_once_policy_requires_mfa(app, client):
    """A session from before the user enrolled (acr pwd), then a client that requires MFA and
    the user's own new factor: /authorize (also prompt=none) gives no code without the second
    factor; the step-up then issues acr mfa."""
    user_id, _, client_id, client_secret = _setup(app, factor=False)
    with app.app_context():
        strict_id, strict_secret = make_client(require_mfa=True)
    params, verifier = auth_params(client_id)
    assert id_token_claims(client, client_id, client_secret, password_step(client, params),
                           verifier)["acr"] == "urn:idp:acr:pwd"
    silent = client.get("/authorize", query_string=auth_params(strict_id, prompt="none")[0])
    assert query(silent.headers["Location"]).get("error") == "login_required"
    with app.app_context():
        secret = enrol_totp(app, db.session.get(User, user_id))
    for cid in (client_id, strict_id):
        silent = client.get("/authorize", query_string=auth_params(cid, prompt="none")[0])
        assert query(silent.headers["Location"]).get("error") == "login_required", cid
        response = client.get("/authorize", query_string=auth_params(cid)[0])
        assert response.headers["Location"].startswith("/login/mfa/step-up?")
    params, verifier = auth_params(strict_id)
    response = client.get(client.get("/authorize", query_string=params).headers["Location"])
    assert response.headers["Location"] == "/login/mfa"
    response = submit_code(client, "/login/mfa/totp", code_at(secret))
    claims = id_token_claims(client, strict_id, strict_secret, response, verifier)
    assert claims["acr"] == "urn:idp:acr:mfa" and claims["amr"] == ["pwd", "otp", "mfa"]
