"""Signing in with a passkey (W3C WebAuthn Level 3 §7.2) through the hosted pages, with a
software authenticator: passwordless (user verification required: amr hwk|swk + mfa, acr
urn:idp:acr:mfa) and as the second factor after the password (amr pwd + hwk + mfa); replayed,
unknown, cloned (sign count going back) and unverified assertions are refused; bad input to
the endpoints is a clear 4xx."""

from __future__ import annotations

import json
import re

from sqlalchemy import select

from idp.services.users import disable_user, find_user
from idp.storage.models import db
from idp.storage.passkey_models import WebAuthnCredential
from idp.storage.security_models import AuthEvent
from tests.factories import form_fields, make_client, make_user
from tests.mfa import passkey_helpers as helpers
from tests.mfa.helpers import auth_params, finish, id_token_claims, password_step
from tests.mfa.passkey_helpers import ISSUER, post_json, register, signed_in_with_passkey
from tests.mfa.softauthn import SoftAuthenticator

# Fixtures (pytest finds them by name in this module).
pk_app, pk_client, authenticator = helpers.pk_app, helpers.pk_client, helpers.authenticator

SECOND = "/login/passkey/second-factor"


def _enrolled(pk_client, authenticator):
    """alice with one passkey, a client, and a fresh browser (no session yet)."""
    signed_in_with_passkey(pk_client, authenticator)
    client_id, secret = make_client()
    return client_id, secret, pk_client.application.test_client()


def _login_page(browser, params) -> dict:
    response = browser.get("/authorize", query_string=params)
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    page = browser.get(response.headers["Location"]).get_data(as_text=True)
    assert "Sign in with a passkey" in page and 'src="/static/passkey.js"' in page
    return form_fields(page)


def _passwordless(browser, authenticator, fields: dict, **get_over):
    options = post_json(browser, "/login/passkey/options", {"interaction": fields["interaction"]},
                        fields["csrf_token"])
    assert options.status_code == 200, options.get_data(as_text=True)
    credential = authenticator.get(options.get_json(), **get_over)
    return browser.post("/login/passkey", data={"csrf_token": fields["csrf_token"],
                                                "interaction": fields["interaction"],
                                                "credential": json.dumps(credential)}), credential


def test_passwordless_sign_in_is_multi_factor(pk_client, authenticator):
    client_id, secret, browser = _enrolled(pk_client, authenticator)
    params, verifier = auth_params(client_id)
    fields = _login_page(browser, params)
    options = post_json(browser, "/login/passkey/options", {"interaction": fields["interaction"]},
                        fields["csrf_token"]).get_json()
    # Discoverable credentials (no list) and user verification required: PIN or biometric.
    assert options["allowCredentials"] == [] and options["userVerification"] == "required"
    response, _ = _passwordless(browser, authenticator, fields)
    claims = id_token_claims(browser, client_id, secret, response, verifier)
    assert claims["amr"] == ["hwk", "mfa"] and claims["acr"] == "urn:idp:acr:mfa"
    db.session.expire_all()
    [row] = db.session.scalars(select(WebAuthnCredential))
    assert row.sign_count == 1 and row.last_used_at is not None
    assert db.session.scalar(select(AuthEvent.reason).where(AuthEvent.event == "login",
                                                            AuthEvent.result == "success",
                                                            AuthEvent.reason == "passkey")) == "passkey"


def test_synced_passkey_is_swk(pk_client):
    synced = SoftAuthenticator(ISSUER, "localhost", backup_eligible=True)
    client_id, secret, browser = _enrolled(pk_client, synced)
    params, verifier = auth_params(client_id)
    response, _ = _passwordless(browser, synced, _login_page(browser, params))
    assert id_token_claims(browser, client_id, secret, response, verifier)["amr"] == ["swk", "mfa"]


def test_a_replayed_assertion_is_refused(pk_client, authenticator):
    """The challenge is taken from the store once (atomic): the same answer again finds none,
    and against a new challenge its signature no longer fits."""
    client_id, _, browser = _enrolled(pk_client, authenticator)
    params, _ = auth_params(client_id)
    fields = _login_page(browser, params)
    response, credential = _passwordless(browser, authenticator, fields)
    assert response.status_code == 302
    attacker = pk_client.application.test_client()
    fields = _login_page(attacker, params)
    post = {"csrf_token": fields["csrf_token"], "interaction": fields["interaction"],
            "credential": json.dumps(credential)}
    refused = attacker.post("/login/passkey", data=post)
    assert refused.status_code == 401 and "expired" in refused.get_data(as_text=True)
    post_json(attacker, "/login/passkey/options", {"interaction": fields["interaction"]}, fields["csrf_token"])
    refused = attacker.post("/login/passkey", data=post)
    assert refused.status_code == 401 and "could not be verified" in refused.get_data(as_text=True)
    assert "Set-Cookie" not in refused.headers or "idp_session" not in refused.headers["Set-Cookie"]


def test_a_cloned_authenticator_is_refused(pk_client, authenticator):
    """§7.2 step 21: a signature counter that does not move forward signals a clone."""
    client_id, _, browser = _enrolled(pk_client, authenticator)
    params, _ = auth_params(client_id)
    assert _passwordless(browser, authenticator, _login_page(browser, params), counter=7)[0].status_code == 302
    other = pk_client.application.test_client()
    response, _ = _passwordless(other, authenticator, _login_page(other, params), counter=7)
    assert response.status_code == 401


def test_passwordless_needs_user_verification(pk_client):
    no_pin = SoftAuthenticator(ISSUER, "localhost", user_verified=False)
    client_id, _, browser = _enrolled(pk_client, no_pin)
    params, _ = auth_params(client_id)
    response, _ = _passwordless(browser, no_pin, _login_page(browser, params))
    assert response.status_code == 401


def test_unknown_or_malformed_credentials_are_refused(pk_client, authenticator):
    client_id, _, browser = _enrolled(pk_client, authenticator)
    params, _ = auth_params(client_id)
    fields = _login_page(browser, params)
    stranger = SoftAuthenticator(ISSUER, "localhost")
    stranger.create({"user": {"id": "AAAA"}, "challenge": "AAAA"})
    assert _passwordless(browser, stranger, fields)[0].status_code == 401
    for credential in ("", "{not json", "[1]", json.dumps({"id": "x" * 2000}), json.dumps({"id": 5})):
        post_json(browser, "/login/passkey/options", {"interaction": fields["interaction"]}, fields["csrf_token"])
        response = browser.post("/login/passkey", data={**fields, "credential": credential})
        assert response.status_code == 401, credential
    assert browser.post("/login/passkey", data={**fields, "csrf_token": "bad"}).status_code == 400
    assert browser.post("/login/passkey", data={**fields, "interaction": "gone"}).status_code == 400
    assert browser.post("/login/passkey", json={}).status_code == 400


def test_bad_input_to_the_login_options_endpoint(pk_client, authenticator):
    client_id, _, browser = _enrolled(pk_client, authenticator)
    params, _ = auth_params(client_id)
    fields = _login_page(browser, params)
    url, csrf, body = "/login/passkey/options", fields["csrf_token"], {"interaction": fields["interaction"]}
    assert browser.post(url, data="x", content_type="text/plain").status_code == 415
    assert browser.post(url, data="{oops", content_type="application/json").status_code == 400
    assert browser.post(url, data="{" + " " * 100_000 + "}", content_type="application/json").status_code == 413
    assert post_json(browser, url, body, "wrong").status_code == 403
    assert post_json(browser, url, {"interaction": "unknown"}, csrf).status_code == 400
    assert post_json(browser, url, {"interaction": ["x"]}, csrf).status_code == 400
    assert post_json(browser, SECOND + "/options", {}, csrf).status_code == 400  # no pending login
    assert browser.get(SECOND).status_code == 400


def test_passkey_as_second_factor_after_the_password(pk_client, authenticator):
    client_id, secret, browser = _enrolled(pk_client, authenticator)
    params, verifier = auth_params(client_id)
    response = password_step(browser, params)
    assert response.headers["Location"] == "/login/mfa"
    assert SECOND in browser.get("/login/mfa").get_data(as_text=True)
    fields = form_fields(browser.get(SECOND).get_data(as_text=True))
    options = post_json(browser, SECOND + "/options", {}, fields["csrf_token"]).get_json()
    assert [c["id"] for c in options["allowCredentials"]] and options["userVerification"] == "preferred"
    credential = authenticator.get(options)
    response = browser.post(SECOND, data={**fields, "credential": json.dumps(credential)})
    claims = id_token_claims(browser, client_id, secret, response, verifier)
    assert claims["amr"] == ["pwd", "hwk", "mfa"] and claims["acr"] == "urn:idp:acr:mfa"


def test_failed_second_factor_assertions_lock_the_pending_login(pk_client, authenticator):
    """Five failures cancel the pending login (idp/mfa/flow.py): the login must start again."""
    client_id, _, browser = _enrolled(pk_client, authenticator)
    params, _ = auth_params(client_id)
    password_step(browser, params)
    fields = form_fields(browser.get(SECOND).get_data(as_text=True))
    stranger = SoftAuthenticator(ISSUER, "localhost")
    stranger.create({"user": {"id": "AAAA"}, "challenge": "AAAA"})
    answers = []
    for _ in range(5):
        options = post_json(browser, SECOND + "/options", {}, fields["csrf_token"]).get_json()
        wrong = stranger.get(options, credential_id=next(iter(stranger.keys)))
        answers.append(browser.post(SECOND, data={**fields, "credential": json.dumps(wrong)}))
    assert [a.status_code for a in answers] == [401] * 4 + [429]
    assert "not registered for this account. 1 attempt left." in answers[3].get_data(as_text=True)
    assert "Too many failed attempts" in answers[4].get_data(as_text=True)
    assert browser.get(SECOND).status_code == 400  # the pending login is gone
    assert post_json(browser, SECOND + "/options", {}, fields["csrf_token"]).status_code == 400


def test_passwordless_on_the_account_sign_in_page(pk_client, authenticator):
    signed_in_with_passkey(pk_client, authenticator)
    browser = pk_client.application.test_client()
    page = browser.get("/account/login").get_data(as_text=True)
    assert "Sign in with a passkey" in page
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    options = post_json(browser, "/login/passkey/options", {"account": "1"}, csrf)
    assert options.status_code == 200
    credential = authenticator.get(options.get_json())
    response = browser.post("/login/passkey", data={"csrf_token": csrf, "account": "1",
                                                    "credential": json.dumps(credential)})
    assert response.status_code == 302 and response.headers["Location"] == "/account"
    assert "Laptop" in browser.get("/account").get_data(as_text=True)


def test_finish_follows_consent(pk_client, authenticator):
    """The answer of a passwordless sign-in is the login flow's own: here the consent page."""
    client_id, _, browser = _enrolled(pk_client, authenticator)
    params, _ = auth_params(client_id)
    response, _ = _passwordless(browser, authenticator, _login_page(browser, params))
    assert response.headers["Location"].startswith("/consent")
    assert finish(browser, response).status_code == 302


def test_a_disabled_account_cannot_sign_in_with_its_passkey(pk_client, authenticator):
    client_id, _, browser = _enrolled(pk_client, authenticator)
    disable_user(find_user("alice@example.com"))
    params, _ = auth_params(client_id)
    response, _ = _passwordless(browser, authenticator, _login_page(browser, params))
    assert response.status_code == 401 and "cannot sign in" in response.get_data(as_text=True)


def test_step_up_with_acr_values_uses_the_passkey(pk_client, authenticator):
    """acr_values=urn:idp:acr:mfa in a password-only session: the passkey as second factor
    upgrades the same session (same sid); the ID token says pwd + hwk + mfa."""
    make_user()
    client_id, secret = make_client()
    params, verifier = auth_params(client_id)
    first = id_token_claims(pk_client, client_id, secret, password_step(pk_client, params), verifier)
    assert first["amr"] == ["pwd"]
    assert register(pk_client, authenticator, "Key").status_code == 200  # from the account page
    params, verifier = auth_params(client_id, acr_values="urn:idp:acr:mfa")
    response = pk_client.get("/authorize", query_string=params)
    assert response.headers["Location"].startswith("/login/mfa/step-up?")
    assert pk_client.get(response.headers["Location"]).headers["Location"] == "/login/mfa"
    fields = form_fields(pk_client.get(SECOND).get_data(as_text=True))
    options = post_json(pk_client, SECOND + "/options", {}, fields["csrf_token"]).get_json()
    response = pk_client.post(SECOND, data={**fields, "credential": json.dumps(authenticator.get(options))})
    stepped = id_token_claims(pk_client, client_id, secret, response, verifier)
    assert stepped["amr"] == ["pwd", "hwk", "mfa"] and stepped["acr"] == "urn:idp:acr:mfa"
    assert stepped["sid"] == first["sid"]
