"""The MFA step of the OIDC login: who is asked, what the ID token says (RFC 8176 amr, OIDC
Core acr/auth_time), and that nothing is issued before the second factor passes."""

from __future__ import annotations

import time

from sqlalchemy import select

from idp.mfa import recovery
from idp.storage.models import Client, db
from tests.factories import form_fields, make_client, make_user, query

from .helpers import (
    auth_params,
    changes_mailed,
    code_at,
    enrol_totp,
    finish,
    id_token_claims,
    kek,
    password_step,
    quiet_mailbox,
    submit_code,
)


def _setup(app, factor=True, **client_over):
    with app.app_context():
        user = make_user()
        secret = enrol_totp(app, user) if factor else None
        client_id, client_secret = make_client(**client_over)
    return client_id, client_secret, secret


def test_password_only_user_gets_pwd_acr(app, client):
    client_id, client_secret, _ = _setup(app, factor=False)
    params, verifier = auth_params(client_id)
    claims = id_token_claims(client, client_id, client_secret, password_step(client, params), verifier)
    assert claims["amr"] == ["pwd"] and claims["acr"] == "urn:idp:acr:pwd"


def test_enrolled_user_must_pass_totp_and_the_id_token_says_so(app, client):
    """RFC 8176 §2: amr pwd + otp + mfa; acr urn:idp:acr:mfa; auth_time is the login's."""
    client_id, client_secret, secret = _setup(app)
    params, verifier = auth_params(client_id)
    before = int(time.time())
    response = password_step(client, params)
    assert response.status_code == 302 and response.headers["Location"] == "/login/mfa"
    # The app is the only method (no recovery codes yet; email codes are for users without a factor).
    assert client.get("/login/mfa").headers["Location"] == "/login/mfa/totp"
    response = submit_code(client, "/login/mfa/totp", code_at(secret))
    claims = id_token_claims(client, client_id, client_secret, response, verifier)
    assert claims["amr"] == ["pwd", "otp", "mfa"]
    assert claims["acr"] == "urn:idp:acr:mfa"
    assert claims["auth_time"] >= before


def test_the_mfa_step_cannot_be_skipped(app, client):
    """No session, so no consent and no code, until the second factor passes."""
    client_id, _, _ = _setup(app)
    params, _ = auth_params(client_id)
    response = password_step(client, params)
    assert response.headers["Location"] == "/login/mfa"
    interaction = client.get_cookie("idp_interaction").value
    consent = client.get("/consent", query_string={"interaction": interaction})
    assert consent.status_code == 400 and b"expired" in consent.data
    again = client.get("/authorize", query_string=params)
    assert again.status_code == 302 and again.headers["Location"].startswith("/login?")
    assert client.get("/account").headers["Location"].endswith("/account/login")
    posted = client.post("/consent", data={"interaction": interaction, "decision": "allow"})
    assert posted.status_code == 400 and "code=" not in posted.headers.get("Location", "")


def test_five_wrong_codes_lock_the_challenge_not_the_account(app, client):
    client_id, client_secret, secret = _setup(app)
    params, verifier = auth_params(client_id)
    password_step(client, params)
    for left in (4, 3, 2, 1):
        response = submit_code(client, "/login/mfa/totp", "000000" if code_at(secret) != "000000" else "111111")
        assert response.status_code == 401
        assert f"{left} attempt" in response.get_data(as_text=True)
    response = submit_code(client, "/login/mfa/totp", "999999" if code_at(secret) != "999999" else "111111")
    assert response.status_code == 429
    assert client.get("/login/mfa").status_code == 400  # the pending login is gone
    # The account is not locked: a new login (password again) gets a fresh challenge.
    params, verifier = auth_params(client_id)
    password_step(client, params)
    response = submit_code(client, "/login/mfa/totp", code_at(secret))
    assert id_token_claims(client, client_id, client_secret, response, verifier)["acr"] == "urn:idp:acr:mfa"


def test_a_totp_code_is_accepted_once(app, client):
    """RFC 6238 §5.2: the second use of a validated OTP is refused."""
    client_id, _, secret = _setup(app)
    code = code_at(secret)
    password_step(client, auth_params(client_id)[0])
    assert submit_code(client, "/login/mfa/totp", code).status_code == 302
    other = app.test_client()
    password_step(other, auth_params(client_id)[0])
    assert submit_code(other, "/login/mfa/totp", code).status_code == 401


def test_one_step_of_clock_skew_is_accepted_two_are_not(app, client):
    client_id, _, secret = _setup(app)
    password_step(client, auth_params(client_id)[0])
    assert submit_code(client, "/login/mfa/totp", code_at(secret, -3)).status_code == 401
    assert submit_code(client, "/login/mfa/totp", code_at(secret, -1)).status_code == 302


def test_recovery_code_signs_in_once_and_mails_the_user(app, client, mailbox):
    from idp.storage.security_models import AuthEvent
    from tests.mailbox import body_text

    client_id, client_secret, _ = _setup(app)
    quiet_mailbox(mailbox)
    with app.app_context():
        from idp.storage.models import User

        user_id = db.session.query(User).one().id
        codes = recovery.generate(kek(app), user_id)
    params, verifier = auth_params(client_id)
    password_step(client, params)
    response = submit_code(client, "/login/mfa/recovery", codes[0].upper().replace("-", " "))
    claims = id_token_claims(client, client_id, client_secret, response, verifier)
    assert claims["acr"] == "urn:idp:acr:mfa" and "otp" in claims["amr"]
    assert changes_mailed(mailbox) == ["A recovery code was used to sign in."]
    assert "You have 9 unused recovery codes left." in body_text(mailbox.to("alice@example.com")[0])
    other = app.test_client()
    password_step(other, auth_params(client_id)[0])
    assert submit_code(other, "/login/mfa/recovery", codes[0]).status_code == 401
    with app.app_context():
        assert recovery.remaining(user_id) == 9
        used = select(AuthEvent.result).where(AuthEvent.user_id == user_id, AuthEvent.event == "recovery_code_used")
        assert db.session.scalars(used).all() == ["success"]
    assert changes_mailed(mailbox) == ["A recovery code was used to sign in."]  # none for the refused use


def test_client_that_requires_mfa_gets_it_by_email_code(app, client, mailbox):
    """A user without factors, a client created with --require-mfa: the email code is there."""
    from .helpers import mailed_code

    client_id, client_secret, _ = _setup(app, factor=False, require_mfa=True)
    params, verifier = auth_params(client_id)
    assert password_step(client, params).headers["Location"] == "/login/mfa"
    assert client.get("/login/mfa").headers["Location"] == "/login/mfa/email"
    page = client.get("/login/mfa/email").get_data(as_text=True)
    sent = client.post("/login/mfa/email", data={**form_fields(page), "action": "send"})
    assert sent.status_code == 303
    code = mailed_code(mailbox.wait_for("alice@example.com", "sign-in code"))
    response = submit_code(client, "/login/mfa/email", code)
    claims = id_token_claims(client, client_id, client_secret, response, verifier)
    assert claims["amr"] == ["pwd", "otp", "mfa"] and claims["acr"] == "urn:idp:acr:mfa"
    with app.app_context():
        assert db.session.get(Client, client_id).require_mfa


def test_step_up_with_acr_values_inside_a_session(app, client):
    """acr_values=urn:idp:acr:mfa in a password-only session: a second factor, same sid, a
    new auth_time (OIDC Core §2), and the upgraded session serves later requests."""
    client_id, client_secret, _ = _setup(app, factor=False)
    params, verifier = auth_params(client_id)
    first = id_token_claims(client, client_id, client_secret, password_step(client, params), verifier)
    assert first["acr"] == "urn:idp:acr:pwd"
    old_cookie = client.get_cookie("idp_session").value
    time.sleep(1.1)
    params, verifier = auth_params(client_id, acr_values="urn:idp:acr:mfa")
    response = client.get("/authorize", query_string=params)
    assert response.headers["Location"].startswith("/login/mfa/step-up?")
    response = client.get(response.headers["Location"])
    assert response.headers["Location"] == "/login/mfa"
    with app.app_context():
        from idp.storage.models import User

        user = db.session.query(User).one()
        secret = enrol_totp(app, user)
    response = submit_code(client, "/login/mfa/totp", code_at(secret))
    stepped = id_token_claims(client, client_id, client_secret, response, verifier)
    assert stepped["acr"] == "urn:idp:acr:mfa" and stepped["amr"] == ["pwd", "otp", "mfa"]
    assert stepped["auth_time"] > first["auth_time"] and stepped["sid"] == first["sid"]
    assert client.get_cookie("idp_session").value != old_cookie  # a new key for the stronger session
    params, verifier = auth_params(client_id, acr_values="urn:idp:acr:mfa")
    again = client.get("/authorize", query_string=params)
    assert query(again.headers["Location"]).get("code")


def test_essential_acr_claim_also_steps_up(app, client):
    client_id, client_secret, _ = _setup(app, factor=False)
    params, verifier = auth_params(client_id)
    id_token_claims(client, client_id, client_secret, password_step(client, params), verifier)
    claims = '{"id_token": {"acr": {"essential": true, "values": ["urn:idp:acr:mfa"]}}}'
    params, _ = auth_params(client_id, claims=claims)
    assert client.get("/authorize", query_string=params).headers["Location"].startswith("/login/mfa/step-up")


def test_prompt_none_step_up_answers_login_required(app, client):
    client_id, client_secret, _ = _setup(app, factor=False)
    params, verifier = auth_params(client_id)
    id_token_claims(client, client_id, client_secret, password_step(client, params), verifier)
    params, _ = auth_params(client_id, acr_values="urn:idp:acr:mfa", prompt="none")
    response = client.get("/authorize", query_string=params)
    assert query(response.headers["Location"])["error"] == "login_required"


def test_max_age_reauthentication_asks_for_the_second_factor_again(app, client):
    client_id, client_secret, secret = _setup(app)
    params, verifier = auth_params(client_id)
    password_step(client, params)
    id_token_claims(client, client_id, client_secret, submit_code(client, "/login/mfa/totp", code_at(secret)),
                    verifier)
    time.sleep(1.1)
    params, verifier = auth_params(client_id, max_age="0")
    assert password_step(client, params).headers["Location"] == "/login/mfa"
    response = submit_code(client, "/login/mfa/totp", code_at(secret, 1))
    assert id_token_claims(client, client_id, client_secret, response, verifier)["acr"] == "urn:idp:acr:mfa"


def test_discovery_advertises_both_acr_values(client):
    metadata = client.get("/.well-known/openid-configuration").get_json()
    assert metadata["acr_values_supported"] == ["urn:idp:acr:pwd", "urn:idp:acr:mfa"]


def test_pending_login_does_not_outlive_its_consent_page(app, client):
    """finish() is only needed when consent is asked; a skip_consent client goes straight on."""
    client_id, client_secret, secret = _setup(app, skip_consent=True)
    params, verifier = auth_params(client_id)
    password_step(client, params)
    response = submit_code(client, "/login/mfa/totp", code_at(secret))
    assert finish(client, response).headers["Location"].startswith("http://127.0.0.1:9/cb?")
