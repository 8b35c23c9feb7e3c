"""Two-step verification on the account side: enrolment (QR code, secret, a valid code
completes it, recovery codes shown once), rename, remove (password for the last factor),
regenerate codes, trusted browsers; every change mailed and audited."""

from __future__ import annotations

import pyotp
from sqlalchemy import select

from idp.mfa import recovery, trusted
from idp.storage.mfa_models import TotpFactor
from idp.storage.models import User, db
from idp.storage.security_models import AuthEvent
from tests.factories import PASSWORD, form_fields, make_client, make_user

from .helpers import (
    account_csrf,
    account_login,
    auth_params,
    changes_mailed,
    code_at,
    enrol_on_page,
    enrol_totp,
    id_token_claims,
    mfa_events,
    password_step,
    quiet_mailbox,
    shown_codes,
    signed_in,
    submit_code,
)


def test_enrolment_needs_a_valid_code_then_shows_ten_recovery_codes_once(app, client, mailbox):
    user_id = signed_in(app, client)
    quiet_mailbox(mailbox)
    html = client.get("/account/mfa/totp").get_data(as_text=True)
    wrong = client.post("/account/mfa/totp", data={**form_fields(html), "code": "12345"})
    assert wrong.status_code == 400
    with app.app_context():
        assert not db.session.scalars(select(TotpFactor)).all()
    secret, shown = enrol_on_page(client)
    codes = shown_codes(shown)
    assert len(codes) == 10 and len(set(codes)) == 10
    with app.app_context():
        [factor] = db.session.scalars(select(TotpFactor)).all()
        assert factor.label == "Pixel" and secret.encode() not in factor.secret_encrypted
        assert recovery.remaining(user_id) == 10
        assert mfa_events(user_id) == [("mfa_enrol", "success", "127.0.0.1")]  # not for the wrong code
    assert changes_mailed(mailbox) == ["An authenticator app (Pixel) was added to your account."]
    # Shown once: the management page has the count, never the codes.
    manage = client.get("/account/mfa").get_data(as_text=True)
    assert "10 unused recovery codes" in manage and codes[0] not in manage
    assert "Pixel" in client.get("/account").get_data(as_text=True)


def test_the_enrolment_code_cannot_sign_in_again(app, client):
    """The code that confirmed enrolment was used: the replay guard refuses it at login."""
    signed_in(app, client)
    secret, _ = enrol_on_page(client)
    with app.app_context():
        client_id, _ = make_client()
    other = app.test_client()
    password_step(other, auth_params(client_id)[0])
    assert submit_code(other, "/login/mfa/totp", pyotp.TOTP(secret).now()).status_code == 401


def test_account_login_goes_through_the_mfa_step(app, client):
    with app.app_context():
        secret = enrol_totp(app, make_user())
    assert account_login(client).headers["Location"] == "/login/mfa"
    assert client.get("/account").headers["Location"].endswith("/account/login")
    assert submit_code(client, "/login/mfa/totp", code_at(secret)).headers["Location"] == "/account"
    assert client.get("/account").status_code == 200


def test_rename_remove_and_the_last_factor_needs_the_password(app, client, mailbox):
    user_id = signed_in(app, client)
    quiet_mailbox(mailbox)
    enrol_on_page(client)
    with app.app_context():
        enrol_totp(app, db.session.get(User, user_id), "Tablet")
        first, second = db.session.scalars(select(TotpFactor).order_by(TotpFactor.created_at)).all()
        first_id, second_id = first.id, second.id
    csrf = account_csrf(client)
    renamed = client.post(f"/account/mfa/totp/{first_id}/rename", data={"csrf_token": csrf, "label": "Old phone"})
    assert renamed.headers["Location"] == "/account/mfa?done=renamed"
    assert client.post(f"/account/mfa/totp/{first_id}/rename", data={"label": "x"}).status_code == 400
    # Not the last factor: no password needed.
    assert client.post(f"/account/mfa/totp/{first_id}/remove", data={"csrf_token": csrf}).status_code == 302
    last = client.post(f"/account/mfa/totp/{second_id}/remove", data={"csrf_token": csrf, "password": "nope"})
    assert last.status_code == 400 and "Enter your password" in last.get_data(as_text=True)
    done = client.post(f"/account/mfa/totp/{second_id}/remove", data={"csrf_token": csrf, "password": PASSWORD})
    assert done.status_code == 302
    with app.app_context():
        assert not db.session.scalars(select(TotpFactor)).all() and recovery.remaining(user_id) == 0
        # One row per change, in order, and none for the form without a CSRF token; the wrong
        # password is a failure of the removal.
        assert [event[:2] for event in mfa_events(user_id)] == [
            ("mfa_enrol", "success"), ("mfa_rename", "success"), ("mfa_remove", "success"),
            ("mfa_remove", "failure"), ("mfa_remove", "success")]
        assert db.session.scalar(select(AuthEvent.reason).where(AuthEvent.result == "failure")) == "bad_password"
    # One mail per change (the second factor was made directly: no mail for it).
    assert changes_mailed(mailbox) == sorted([
        "An authenticator app (Pixel) was added to your account.",
        "The authenticator app Pixel was renamed to Old phone.",
        "The authenticator app Old phone was removed from your account.",
        "The authenticator app Tablet was removed from your account. Two-step verification is now off."])


def test_regenerated_recovery_codes_replace_the_old_ones(app, client):
    user_id = signed_in(app, client)
    _, shown = enrol_on_page(client)
    old = shown_codes(shown)
    csrf = account_csrf(client)
    new = shown_codes(client.post("/account/mfa/recovery-codes", data={"csrf_token": csrf}).get_data(as_text=True))
    assert len(new) == 10 and not set(new) & set(old)
    with app.app_context():
        assert not recovery.consume(_kek(app), user_id, old[0])
        assert recovery.consume(_kek(app), user_id, new[0])


def _kek(app):
    from .helpers import kek

    return kek(app)


def test_trusted_browser_skips_the_prompt_until_logout_everywhere(app, client):
    with app.app_context():
        secret = enrol_totp(app, make_user())
        client_id, client_secret = make_client()
    params, verifier = auth_params(client_id)
    password_step(client, params)
    response = submit_code(client, "/login/mfa/totp", code_at(secret), trust_browser="yes")
    assert client.get_cookie("idp_trusted_browser") is not None
    id_token_claims(client, client_id, client_secret, response, verifier)
    # A new login in this browser (prompt=login): the password is enough...
    params, verifier = auth_params(client_id, prompt="login")
    claims = id_token_claims(client, client_id, client_secret, password_step(client, params), verifier)
    assert claims["acr"] == "urn:idp:acr:pwd" and claims["amr"] == ["pwd"]  # ...and the token says so
    # ...but not for an explicit step-up (Keycloak-like: acr_values is never skipped).
    params, _ = auth_params(client_id, acr_values="urn:idp:acr:mfa")
    assert client.get("/authorize", query_string=params).headers["Location"].startswith("/login/mfa/step-up")
    # Log out everywhere forgets every trusted browser.
    csrf = form_fields(client.get("/account").get_data(as_text=True))["csrf_token"]
    client.post("/account/logout-everywhere", data={"csrf_token": csrf})
    with app.app_context():
        assert trusted.list_trusted(db.session.query(User).one().id) == []
    params, _ = auth_params(client_id)
    assert password_step(client, params).headers["Location"] == "/login/mfa"


def test_a_trust_cookie_of_another_user_or_forged_is_ignored(app):
    with app.app_context():
        alice = make_user()
        bob = make_user("bob@example.com")
        secret_key = app.config["SECRET_KEY"]
        value = trusted.create_trust(secret_key, alice.id, 3600, None)
        assert trusted.is_trusted(secret_key, value, alice.id, 3600)
        assert not trusted.is_trusted(secret_key, value, bob.id, 3600)
        assert not trusted.is_trusted("another key", value, alice.id, 3600)
        assert not trusted.is_trusted(secret_key, value + "x", alice.id, 3600)
        assert not trusted.is_trusted(secret_key, "x" * 5000, alice.id, 3600)


def test_password_change_reset_and_admin_disable_forget_trusted_browsers(app):
    """They all end every session through services/sessions.end_all_sessions (password change
    and reset: accounts.revoke_everything; `idp users disable`: the same call), which also
    revokes the user's trusted browsers."""
    from idp.services import sessions
    from idp.services.accounts import revoke_everything

    with app.app_context():
        user = make_user()
        idp = app.extensions["idp"]
        for revoke in (lambda: revoke_everything(idp.settings, idp.store, user.id),
                       lambda: sessions.end_all_sessions(idp.store, user.id)):
            trusted.create_trust(app.config["SECRET_KEY"], user.id, 3600, None)
            assert len(trusted.list_trusted(user.id)) == 1
            revoke()
            assert trusted.list_trusted(user.id) == []


def test_last_factor_removal_is_throttled_and_serialised(app, client):
    """The password check is not an oracle (5 per 15 minutes), and a removal waits for no
    other change to the user's factors (the lock that keeps two concurrent removals of the
    last two factors from each skipping the password)."""
    user_id = signed_in(app, client)
    enrol_on_page(client)
    with app.app_context():
        factor_id = db.session.scalar(select(TotpFactor.id))
    csrf = account_csrf(client)
    store = app.extensions["idp"].store
    store.add("lock:mfa-factors:" + user_id, b"1", 30)
    busy = client.post(f"/account/mfa/totp/{factor_id}/remove", data={"csrf_token": csrf, "password": PASSWORD})
    assert busy.status_code == 409
    store.delete("lock:mfa-factors:" + user_id)
    statuses = [client.post(f"/account/mfa/totp/{factor_id}/remove",
                            data={"csrf_token": csrf, "password": f"guess {i}"}).status_code for i in range(6)]
    assert statuses == [400] * 5 + [429]
    right = client.post(f"/account/mfa/totp/{factor_id}/remove", data={"csrf_token": csrf, "password": PASSWORD})
    assert right.status_code == 429 and right.headers["Retry-After"]
    with app.app_context():
        assert db.session.scalar(select(TotpFactor.id)) == factor_id
