"""Passkeys on the account page (W3C WebAuthn Level 3 §7.1) with a software authenticator:
register, list, rename, remove (the last factor only with the password), mails and audit, and
bad input to the JSON endpoints (always a clear 4xx, never a 500)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from idp.interaction.accounts import drain_background
from idp.mfa import passkeys, recovery
from idp.storage.models import db
from idp.storage.passkey_models import WebAuthnCredential
from idp.storage.security_models import AuthEvent
from tests.factories import make_user
from tests.mailbox import body_text
from tests.mfa import passkey_helpers as helpers
from tests.mfa.passkey_helpers import ISSUER, account_csrf, post_json, register, signed_in_with_passkey
from tests.mfa.softauthn import SoftAuthenticator, b64
from tests.security.helpers import account_login

# Fixtures (pytest finds them by name in this module).
pk_app, pk_client, authenticator = helpers.pk_app, helpers.pk_client, helpers.authenticator

OPTIONS = "/account/passkeys/register/options"
VERIFY = "/account/passkeys/register/verify"


def _rows(email="alice@example.com") -> list[WebAuthnCredential]:
    db.session.expire_all()
    return list(db.session.scalars(select(WebAuthnCredential).order_by(WebAuthnCredential.created_at)))


def test_relying_party_is_the_issuer_host_and_never_an_ip_address():
    rp = passkeys.relying_party("https://Login.Example.com:8443/idp")
    assert (rp.rp_id, rp.origin) == ("login.example.com", "https://login.example.com:8443")
    assert passkeys.relying_party("http://localhost:5000").origin == "http://localhost:5000"
    for issuer in ("http://127.0.0.1:5000", "http://[::1]:5000"):
        with pytest.raises(passkeys.PasskeysUnavailable):
            passkeys.relying_party(issuer)


def test_register_a_passkey_from_the_account_page(pk_client, authenticator, mailbox):
    user = make_user()
    account_login(pk_client)
    csrf = account_csrf(pk_client)
    options = post_json(pk_client, OPTIONS, {}, csrf)
    assert options.status_code == 200 and options.headers["Cache-Control"] == "no-store"
    body = options.get_json()
    # §5.4.3: the user handle is random, never the email; the rp id is the issuer's host.
    assert body["rp"]["id"] == "localhost" and body["user"]["name"] == "alice@example.com"
    assert body["user"]["id"] != b64(b"alice@example.com") and len(body["user"]["id"]) >= 40
    assert body["authenticatorSelection"]["residentKey"] == "required"
    answer = post_json(pk_client, VERIFY, {"credential": authenticator.create(body), "name": " My  laptop "}, csrf)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    # The first factor: recovery codes, made and shown once on the next page (as after TOTP).
    assert answer.get_json()["redirect"] == "/account/passkeys/recovery-codes"
    codes = pk_client.get("/account/passkeys/recovery-codes")
    assert codes.status_code == 200 and codes.get_data(as_text=True).count("<li><code>") == 10
    assert recovery.remaining(user.id) == 10
    assert pk_client.get("/account/passkeys/recovery-codes").headers["Location"] == "/account?passkey=added"
    [row] = _rows()
    assert (row.user_id, row.name, row.sign_count, row.transports) == (user.id, "My laptop", 0, ["internal"])
    assert passkeys.amr_for(row) == "hwk" and not row.backup_eligible and row.attachment == "platform"
    page = pk_client.get("/account?passkey=added").get_data(as_text=True)
    assert "My laptop" in page and "The passkey was added." in page and "device-bound passkey" in page
    assert 'A passkey named "My laptop" was added' in body_text(mailbox.wait_for("alice@example.com", "security"))
    assert db.session.scalar(select(AuthEvent.event).where(AuthEvent.event == "passkey_added")) == "passkey_added"


def test_second_passkey_keeps_the_user_handle_and_excludes_the_first(pk_client, authenticator):
    signed_in_with_passkey(pk_client, authenticator)
    options = post_json(pk_client, OPTIONS, {}, account_csrf(pk_client)).get_json()
    [first] = _rows()
    assert [c["id"] for c in options["excludeCredentials"]] == [first.credential_id]
    other = SoftAuthenticator(ISSUER, "localhost", backup_eligible=True)
    answer = post_json(pk_client, VERIFY, {"credential": other.create(options), "name": None},
                       account_csrf(pk_client))
    assert answer.status_code == 200
    first, second = _rows()
    assert second.name == "Passkey 2" and second.user_handle == first.user_handle
    # A synced (backup-eligible) passkey is "swk" (RFC 8176), a device-bound one "hwk".
    assert (passkeys.amr_for(first), passkeys.amr_for(second)) == ("hwk", "swk")


def test_the_same_registration_cannot_be_replayed(pk_client, authenticator):
    make_user()
    account_login(pk_client)
    csrf = account_csrf(pk_client)
    credential = authenticator.create(post_json(pk_client, OPTIONS, {}, csrf).get_json())
    assert post_json(pk_client, VERIFY, {"credential": credential}, csrf).status_code == 200
    again = post_json(pk_client, VERIFY, {"credential": credential}, csrf)
    assert again.status_code == 400 and again.get_json()["error"] == "passkey_rejected"
    # A fresh challenge does not help: the old answer signs the old one.
    post_json(pk_client, OPTIONS, {}, csrf)
    assert post_json(pk_client, VERIFY, {"credential": credential}, csrf).get_json()["error"] == "passkey_rejected"
    assert len(_rows()) == 1


def test_an_answer_for_another_origin_is_refused(pk_client):
    make_user()
    account_login(pk_client)
    csrf = account_csrf(pk_client)
    phishing = SoftAuthenticator("http://localhost.evil.example", "localhost")
    credential = phishing.create(post_json(pk_client, OPTIONS, {}, csrf).get_json())
    answer = post_json(pk_client, VERIFY, {"credential": credential}, csrf)
    assert answer.status_code == 400 and answer.get_json()["error"] == "passkey_rejected" and not _rows()


@pytest.mark.parametrize("url", [OPTIONS, VERIFY])
def test_bad_input_to_the_json_endpoints_is_a_clear_4xx(pk_client, url):
    make_user()
    assert post_json(pk_client, url, {}, "x").status_code == 401  # not signed in
    account_login(pk_client)
    csrf = account_csrf(pk_client)
    cases = [
        (pk_client.post(url, data="{}", content_type="text/plain", headers={"X-CSRF-Token": csrf}), 415),
        (pk_client.post(url, data="{not json", content_type="application/json", headers={"X-CSRF-Token": csrf}), 400),
        (pk_client.post(url, data="[1, 2]", content_type="application/json", headers={"X-CSRF-Token": csrf}), 400),
        (pk_client.post(url, data=b"\xff\xfe{}", content_type="application/json", headers={"X-CSRF-Token": csrf}),
         400),
        (pk_client.post(url, data="{" + " " * 70_000 + "}", content_type="application/json",
                        headers={"X-CSRF-Token": csrf}), 413),
        (pk_client.post(url, data="{" + " " * 2_000_000 + "}", content_type="application/json",
                        headers={"X-CSRF-Token": csrf}), 413),
        (post_json(pk_client, url, {}, "wrong"), 403),
        (post_json(pk_client, url, {}, None), 403),
    ]
    for response, status in cases:
        assert response.status_code == status, (status, response.get_data(as_text=True)[:200])
        assert response.is_json and response.get_json()["error"]


@pytest.mark.parametrize("body, error", [
    ({"credential": {}}, "passkey_rejected"),
    ({"credential": {"id": "AAAA", "rawId": "AAAA", "type": "public-key", "response": {
        "clientDataJSON": "!!", "attestationObject": "e30"}}}, "passkey_rejected"),
    ({"credential": "a string"}, "invalid_request"),
    ({"credential": {"id": 1}, "name": 5}, "invalid_request"),
    ({"name": "no credential"}, "invalid_request"),
])
def test_malformed_credentials_are_refused(pk_client, body, error):
    make_user()
    account_login(pk_client)
    csrf = account_csrf(pk_client)
    post_json(pk_client, OPTIONS, {}, csrf)
    answer = post_json(pk_client, VERIFY, body, csrf)
    assert answer.status_code == 400 and answer.get_json()["error"] == error


def test_verify_without_options_or_with_a_bad_name(pk_client, authenticator):
    make_user()
    account_login(pk_client)
    csrf = account_csrf(pk_client)
    credential = {"id": "AAAA", "rawId": "AAAA", "type": "public-key", "response": {}}
    assert post_json(pk_client, VERIFY, {"credential": credential}, csrf).get_json()["error"] == "passkey_rejected"
    credential = authenticator.create(post_json(pk_client, OPTIONS, {}, csrf).get_json())
    answer = post_json(pk_client, VERIFY, {"credential": credential, "name": "x" * 65}, csrf)
    assert answer.status_code == 400 and answer.get_json()["error"] == "invalid_name" and not _rows()


def test_rename_and_remove_with_the_password_for_the_last_factor(pk_client, authenticator, mailbox):
    signed_in_with_passkey(pk_client, authenticator, "Laptop")
    [row] = _rows()
    pk_client.get("/account/passkeys/recovery-codes")
    assert recovery.remaining(row.user_id) == 10
    csrf = account_csrf(pk_client)
    assert pk_client.post(f"/account/passkeys/{row.id}/rename", data={"csrf_token": csrf, "name": "Desk key"}) \
        .headers["Location"] == "/account?passkey=renamed"
    assert _rows()[0].name == "Desk key"
    assert pk_client.post(f"/account/passkeys/{row.id}/rename", data={"csrf_token": csrf, "name": "  "}) \
        .headers["Location"] == "/account?passkey=bad_name"
    assert pk_client.post(f"/account/passkeys/{row.id}/rename", data={"csrf_token": "bad", "name": "x"}) \
        .status_code == 400
    # The only factor: removing it asks for the password first (issue 5).
    confirm = pk_client.post(f"/account/passkeys/{row.id}/remove", data={"csrf_token": csrf})
    assert confirm.status_code == 200 and "Enter your password" in confirm.get_data(as_text=True)
    wrong = pk_client.post(f"/account/passkeys/{row.id}/remove", data={"csrf_token": csrf, "password": "nope"})
    assert wrong.status_code == 401 and len(_rows()) == 1
    done = pk_client.post(f"/account/passkeys/{row.id}/remove",
                          data={"csrf_token": csrf, "password": "correct horse battery staple"})
    assert done.headers["Location"] == "/account?passkey=removed" and not _rows()
    assert recovery.remaining(row.user_id) == 0  # without a factor, recovery codes recover nothing
    events = set(db.session.scalars(select(AuthEvent.event).where(AuthEvent.event.like("passkey_%"))))
    assert events == {"passkey_added", "passkey_renamed", "passkey_removed"}
    drain_background()
    bodies = " ".join(body_text(m) for m in mailbox.to("alice@example.com"))
    assert all(f in bodies for f in ("was added", 'renamed to "Desk key"', '"Desk key" was removed'))


def test_removing_one_of_two_passkeys_needs_no_password(pk_client, authenticator):
    signed_in_with_passkey(pk_client, authenticator)
    csrf = account_csrf(pk_client)
    register(pk_client, SoftAuthenticator(ISSUER, "localhost"), "Phone", csrf)
    first, _ = _rows()
    answer = pk_client.post(f"/account/passkeys/{first.id}/remove", data={"csrf_token": csrf})
    assert answer.headers["Location"] == "/account?passkey=removed" and [r.name for r in _rows()] == ["Phone"]


def test_another_users_passkey_cannot_be_renamed_or_removed(pk_client, authenticator):
    signed_in_with_passkey(pk_client, authenticator)
    [row] = _rows()
    make_user("bob@example.com")
    other = pk_client.application.test_client()
    account_login(other, "bob@example.com")
    csrf = account_csrf(other)
    assert other.post(f"/account/passkeys/{row.id}/remove", data={"csrf_token": csrf, "password": "x"}) \
        .status_code == 404
    assert other.post(f"/account/passkeys/{row.id}/rename", data={"csrf_token": csrf, "name": "mine"}) \
        .status_code == 404
    assert other.post("/account/passkeys/" + "x" * 300 + "/remove", data={"csrf_token": csrf}).status_code == 404
    assert _rows()[0].name == "Laptop"


def test_ip_address_issuer_has_no_passkeys_but_the_page_works(ctx, client):
    make_user()
    account_login(client)
    page = client.get("/account")
    assert page.status_code == 200 and "Passkeys are not available on this server" in page.get_data(as_text=True)
    answer = post_json(client, OPTIONS, {}, account_csrf(client))
    assert answer.status_code == 400 and answer.get_json()["error"] == "passkeys_unavailable"


def test_the_data_export_lists_the_passkeys(pk_client, authenticator):
    """GDPR Art. 15/20: /account/export says which passkeys the account has."""
    signed_in_with_passkey(pk_client, authenticator, "Laptop")
    [row] = _rows()
    data = json.loads(pk_client.get("/account/export").get_data(as_text=True))
    assert [(p["id"], p["name"], p["credential_id"]) for p in data["passkeys"]] == [
        (row.id, "Laptop", row.credential_id)]


def test_password_re_entry_for_the_last_factor_is_rate_limited(pk_client, authenticator):
    signed_in_with_passkey(pk_client, authenticator)
    [row] = _rows()
    csrf = account_csrf(pk_client)
    statuses = [pk_client.post(f"/account/passkeys/{row.id}/remove", data={"csrf_token": csrf, "password": "no"})
                .status_code for _ in range(6)]
    assert statuses == [401] * 5 + [429]
    locked = pk_client.post(f"/account/passkeys/{row.id}/remove",
                            data={"csrf_token": csrf, "password": "correct horse battery staple"})
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0 and len(_rows()) == 1


def test_the_password_re_entry_budget_is_shared_with_the_account_forms(pk_client, authenticator):
    """One budget per user for every password re-entry (services.accounts.check_password_again):
    guesses on /account/password leave none for removing the last passkey."""
    from tests.factories import PASSWORD, form_fields

    signed_in_with_passkey(pk_client, authenticator)
    [row] = _rows()
    fields = form_fields(pk_client.get("/account/password").get_data(as_text=True))
    for i in range(5):
        assert pk_client.post("/account/password", data={**fields, "current_password": f"guess {i}",
                                                         "password": "a brand new passphrase"}).status_code == 400
    locked = pk_client.post(f"/account/passkeys/{row.id}/remove",
                            data={"csrf_token": account_csrf(pk_client), "password": PASSWORD})
    assert locked.status_code == 429 and len(_rows()) == 1
