"""Accounts that sign in through a SAML IdP (JIT-provisioned, no local password): the mailbox is
no way around the IdP (no reset link, a "Sign in with NAME" mail instead), and re-authentication
before a sensitive change is a recent sign-in (services.accounts.RECENT_SIGN_IN_TTL), since there
is no password to re-enter. The users are provisioned by the real pysaml2 IdP of
tests/federation, through the account page's "Sign in with NAME"."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select

from idp.errors import InvalidInput
from idp.mfa import totp
from idp.services import accounts
from idp.settings import decode_kek
from idp.storage.account_models import AccountToken
from idp.storage.federation_models import FederatedIdentity
from idp.storage.mfa_models import TotpFactor
from idp.storage.models import User, db
from idp.storage.security_models import AuthEvent
from tests.factories import form_fields, make_user
from tests.federation.conftest import NAME, add_connection, idp_key_pair, test_idp  # noqa: F401 (fixtures)
from tests.federation.saml_idp import b64
from tests.mailbox import body_text

from .conftest import post_form, sent_mail

EMAIL = "alice@corp.example.test"  # what the test IdP asserts


@pytest.fixture()
def connection(app, test_idp):  # noqa: F811
    add_connection(app, test_idp)
    return NAME


def saml_sign_in(browser, test_idp, name: str = NAME):  # noqa: F811
    """/account/login?connection=NAME -> the IdP -> ACS -> /account, as a browser does."""
    start = browser.get(f"/account/login?connection={name}")
    assert start.status_code == 302 and start.headers["Location"].startswith(f"/saml/{name}/login?"), start.status
    to_idp = browser.get(start.headers["Location"])
    assert to_idp.status_code == 302, to_idp.get_data(as_text=True)[:300]
    authn_request, relay = test_idp.parse_request(to_idp.headers["Location"])
    acs = browser.post(f"/saml/{name}/acs", data={"SAMLResponse": b64(test_idp.response_xml(authn_request)),
                                                  "RelayState": relay})
    assert acs.status_code == 303, acs.get_data(as_text=True)[:500]
    done = browser.get(acs.headers["Location"])
    assert done.status_code == 302 and done.headers["Location"].endswith("/account"), done.headers
    assert browser.get("/account").status_code == 200


def jit_user(app) -> User:
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == EMAIL))
        assert user is not None and user.password_hash is None
        assert db.session.scalar(select(FederatedIdentity.user_id)) == user.id
        db.session.expunge(user)
        return user


def later(monkeypatch, seconds: float) -> None:
    """The re-authentication check runs `seconds` from now (the session itself stays valid)."""
    real = time.time
    monkeypatch.setattr(accounts, "time", SimpleNamespace(time=lambda: real() + seconds))


# --- password reset ----------------------------------------------------------------------

def test_saml_account_gets_sign_in_mail_instead_of_a_reset_link(app, test_idp, connection, mailbox):  # noqa: F811
    saml_sign_in(app.test_client(), test_idp)
    with app.app_context():
        make_user("bob@example.com")
    browser = app.test_client()
    pages = {}
    for email in (EMAIL, "bob@example.com", "nobody@example.com"):
        started = time.perf_counter()
        response = post_form(browser, "/forgot-password", email=email)
        pages[email] = (response.status_code, response.get_data(as_text=True), time.perf_counter() - started)
    # No account enumeration: the same page for a SAML account, a password account and no account.
    assert pages[EMAIL][:2] == pages["bob@example.com"][:2] == pages["nobody@example.com"][:2]
    assert abs(pages[EMAIL][2] - pages["nobody@example.com"][2]) < 0.05
    sent_mail(mailbox, "bob@example.com", "Reset your password")  # a password account still gets its link
    mail = sent_mail(mailbox, EMAIL, f"Sign in with {NAME}")
    text = body_text(mail)
    assert "/reset-password" not in text and f"/account/login?connection={NAME}" in text
    assert [m["Subject"] for m in mailbox.to(EMAIL)] == [f"Sign in with {NAME}"]
    with app.app_context():  # exactly one reset link was made: Bob's
        assert db.session.scalar(select(func.count()).select_from(AccountToken)) == 1


def test_reset_link_of_a_saml_account_does_not_set_a_password(app, test_idp, connection):  # noqa: F811
    """A link made while the account was not (yet) linked dies once it signs in through the IdP."""
    from idp.services import account_tokens

    saml_sign_in(app.test_client(), test_idp)
    user = jit_user(app)
    with app.app_context():
        token = account_tokens.create_token(user.id, account_tokens.RESET_PASSWORD, 600)
    browser = app.test_client()
    response = browser.get(f"/reset-password?token={token}")
    fields = form_fields(response.get_data(as_text=True))
    response = browser.post("/reset-password", data={**fields, "password": "a brand new passphrase"})
    assert response.status_code == 400 and "does not work" in response.get_data(as_text=True)
    assert jit_user(app).password_hash is None


# --- re-authentication without a password ----------------------------------------------------

def _delete(browser, **headers):
    page = browser.get("/account/delete")
    assert page.status_code == 200 and 'name="password"' not in page.get_data(as_text=True)
    return browser.post("/account/delete", data=form_fields(page.get_data(as_text=True)), headers=headers)


def test_stale_sign_in_asks_to_sign_in_with_the_idp_without_using_the_budget(app, test_idp, connection,  # noqa: F811
                                                                            monkeypatch):
    browser = app.test_client()
    saml_sign_in(browser, test_idp)
    user = jit_user(app)
    later(monkeypatch, accounts.RECENT_SIGN_IN_TTL + 1)
    for _ in range(accounts.REAUTH_LIMIT + 2):  # more than the budget: never 429, nothing to guess
        refused = _delete(browser)
        assert refused.status_code == 401, refused.get_data(as_text=True)[:300]
    html = refused.get_data(as_text=True)
    assert f'href="/account/login?connection={NAME}">Sign in with {NAME}</a>' in html
    assert "last 5 minutes" in html
    as_json = _delete(browser, Accept="application/json")
    assert as_json.status_code == 401 and as_json.get_json()["error"] == "login_required"
    assert as_json.get_json()["sign_in_uri"] == f"/account/login?connection={NAME}"
    with app.app_context():
        assert db.session.get(User, user.id) is not None
        assert app.extensions["idp"].store.get("rate:reauth:" + user.id) is None
        reasons = db.session.scalars(select(AuthEvent.reason).where(AuthEvent.event == "account_delete"))
        assert set(reasons) == {"stale_sign_in"}
    # "Sign in with NAME" goes through the IdP again; the fresh sign-in confirms the deletion.
    monkeypatch.undo()
    saml_sign_in(browser, test_idp)
    deleted = _delete(browser)
    assert deleted.status_code == 200 and "Account deleted" in deleted.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(User, user.id) is None


def test_recent_sign_in_is_accepted_up_to_the_limit(app, test_idp, connection, monkeypatch):  # noqa: F811
    browser = app.test_client()
    saml_sign_in(browser, test_idp)
    user = jit_user(app)
    later(monkeypatch, accounts.RECENT_SIGN_IN_TTL - 5)
    deleted = _delete(browser)
    assert deleted.status_code == 200 and "Account deleted" in deleted.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(User, user.id) is None


def test_a_saml_account_cannot_give_itself_a_local_password(app, test_idp, connection):  # noqa: F811
    """A local password would outlive a disable at the IdP (and reopen the mailbox reset)."""
    browser = app.test_client()
    saml_sign_in(browser, test_idp)
    page = browser.get("/account/password")
    assert page.status_code == 200 and f"signs in through {NAME}" in page.get_data(as_text=True)
    assert 'name="password"' not in page.get_data(as_text=True)
    token = form_fields(browser.get("/account").get_data(as_text=True))["csrf_token"]
    refused = browser.post("/account/password", data={"csrf_token": token, "password": "a brand new passphrase"})
    assert refused.status_code == 400 and not jit_user_has_password(app)
    with app.app_context(), pytest.raises(InvalidInput, match=f"signs in through {NAME}"):
        user = db.session.scalar(select(User).where(User.email == EMAIL))
        idp = app.extensions["idp"]
        accounts.change_password(idp.settings, idp.store, user, "", "a brand new passphrase")


def jit_user_has_password(app) -> bool:
    with app.app_context():
        return db.session.scalar(select(User.password_hash).where(User.email == EMAIL)) is not None


def test_removing_the_last_app_needs_a_recent_sign_in(app, test_idp, connection, monkeypatch, drained):  # noqa: F811
    browser = app.test_client()
    saml_sign_in(browser, test_idp)
    user = jit_user(app)
    with app.app_context():
        factor_id = totp.create_factor(decode_kek(app.extensions["idp"].settings.key_encryption_key), user.id,
                                       totp.new_secret(), "phone").id
    fields = form_fields(browser.get("/account/mfa").get_data(as_text=True))
    later(monkeypatch, accounts.RECENT_SIGN_IN_TTL + 1)
    refused = browser.post(f"/account/mfa/totp/{factor_id}/remove", data={"csrf_token": fields["csrf_token"]})
    assert refused.status_code == 401 and f"Sign in with {NAME}" in refused.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(TotpFactor, factor_id) is not None
    monkeypatch.undo()
    removed = browser.post(f"/account/mfa/totp/{factor_id}/remove", data={"csrf_token": fields["csrf_token"]})
    assert removed.status_code == 302
    with app.app_context():
        assert db.session.get(TotpFactor, factor_id) is None


def test_passwordless_account_without_a_connection_is_sent_to_sign_in_again(app, monkeypatch):
    from tests.security.helpers import account_login

    with app.app_context():
        make_user("carol@example.com")
    browser = app.test_client()
    assert account_login(browser, "carol@example.com").status_code == 302
    with app.app_context():  # e.g. created by `idp users create` and using only a passkey since
        db.session.scalar(select(User).where(User.email == "carol@example.com")).password_hash = None
        db.session.commit()
    later(monkeypatch, accounts.RECENT_SIGN_IN_TTL + 1)
    refused = _delete(browser)
    assert refused.status_code == 401
    assert 'href="/account/login?reauth=1">Sign in again</a>' in refused.get_data(as_text=True)
    # The link shows the sign-in form although this browser is still signed in.
    assert browser.get("/account/login?reauth=1").status_code == 200
    assert browser.get("/account/login").status_code == 302


def test_removing_the_last_passkey_needs_a_recent_sign_in(app, test_idp, connection, monkeypatch, drained):  # noqa: F811
    from idp.storage.passkey_models import WebAuthnCredential

    browser = app.test_client()
    saml_sign_in(browser, test_idp)
    user = jit_user(app)
    with app.app_context():  # the row as registration stores it; removal never reads the key
        row = WebAuthnCredential(user_id=user.id, credential_id="cred-1", user_handle=b"handle", public_key=b"cose",
                                 aaguid="00000000-0000-0000-0000-000000000000", name="laptop")
        db.session.add(row)
        db.session.commit()
        passkey_id = row.id
    token = form_fields(browser.get("/account").get_data(as_text=True))["csrf_token"]
    later(monkeypatch, accounts.RECENT_SIGN_IN_TTL + 1)
    refused = browser.post(f"/account/passkeys/{passkey_id}/remove", data={"csrf_token": token})
    assert refused.status_code == 401 and f"Sign in with {NAME}" in refused.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(WebAuthnCredential, passkey_id) is not None
    monkeypatch.undo()
    removed = browser.post(f"/account/passkeys/{passkey_id}/remove", data={"csrf_token": token})
    assert removed.status_code == 302, removed.get_data(as_text=True)[:300]
    with app.app_context():
        assert db.session.get(WebAuthnCredential, passkey_id) is None
