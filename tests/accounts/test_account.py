"""Signed-in account pages: change password (current one required), export as JSON, delete
(password re-entry, everything revoked, audit kept pseudonymous)."""

from __future__ import annotations

import json

from sqlalchemy import select

from idp.services import audit
from idp.services.users import authenticate
from idp.storage.models import Consent, RefreshToken, User, db
from idp.storage.security_models import AuthEvent
from tests.factories import (
    PASSWORD,
    auth_params,
    exchange,
    form_fields,
    get_code,
    make_client,
    make_user,
    query,
)

from .conftest import sent_mail

NEW = "a brand new passphrase"


def _signed_in(app, client):
    with app.app_context():
        make_user("alice@example.com")
        client_id, secret = make_client()
    code, verifier, _ = get_code(client, client_id)
    tokens = exchange(client, client_id, secret, code, verifier).get_json()
    return client_id, secret, tokens


def test_account_pages_need_a_session(client):
    for path in ("/account/password", "/account/export", "/account/delete"):
        response = client.get(path)
        assert response.status_code == 401 and "not signed in" in response.get_data(as_text=True)
        assert "/account/login" in response.get_data(as_text=True)


def test_change_password_needs_the_current_one_and_revokes_other_sessions(app, client, mailbox):
    client_id, secret, tokens = _signed_in(app, client)
    other_browser = app.test_client()
    get_code(other_browser, client_id)
    page = client.get("/account/password").get_data(as_text=True)
    fields = form_fields(page)
    wrong = client.post("/account/password", data={**fields, "current_password": "nope", "password": NEW})
    assert wrong.status_code == 400 and 'id="current-error"' in wrong.get_data(as_text=True)
    weak = client.post("/account/password", data={**fields, "current_password": PASSWORD, "password": "12345678"})
    assert weak.status_code == 400 and 'id="password-error"' in weak.get_data(as_text=True)
    assert client.post("/account/password", data={**fields, "password": NEW}).status_code == 400
    done = client.post("/account/password", data={**fields, "current_password": PASSWORD, "password": NEW})
    assert done.status_code == 200 and "Password changed" in done.get_data(as_text=True)
    with app.app_context():
        authenticate("alice@example.com", NEW)
        assert db.session.scalar(select(RefreshToken.revoked_at).limit(1)) is not None
        assert db.session.scalar(select(AuthEvent.reason).where(AuthEvent.event == "password_change",
                                                                AuthEvent.result == "success")) == "account_page"
    silent = auth_params(client_id, prompt="none")
    assert query(other_browser.get("/authorize", query_string=silent).headers["Location"])["error"] == "login_required"
    # This browser got a fresh session.
    assert "code" in query(client.get("/authorize", query_string=silent).headers["Location"])
    sent_mail(mailbox, "alice@example.com", "password was changed")


def test_change_password_needs_csrf(app, client):
    _signed_in(app, client)
    response = client.post("/account/password", data={"csrf_token": "x", "current_password": PASSWORD, "password": NEW})
    assert response.status_code == 400


def test_export_is_a_json_download_of_profile_sessions_consents_and_audit(app, client):
    _signed_in(app, client)
    with app.app_context():
        user = db.session.scalar(select(User))
        audit.record_event("login", "success", user_id=user.id, email=user.email, ip="127.0.0.1")
    response = client.get("/account/export")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert "attachment" in response.headers["Content-Disposition"]
    data = json.loads(response.get_data(as_text=True))
    assert data["profile"]["email"] == "alice@example.com" and data["profile"]["name"] == "Alice Example"
    assert len(data["sessions"]) == 1 and "sid" in data["sessions"][0]
    assert data["consents"][0]["scope"]
    assert data["refresh_tokens"][0]["client_id"]
    assert any(e["event"] == "login" for e in data["audit_events"])
    assert "password_hash" not in response.get_data(as_text=True)


def test_delete_needs_the_password_then_revokes_everything(app, client, mailbox):
    client_id, secret, tokens = _signed_in(app, client)
    with app.app_context():
        user_id = db.session.scalar(select(User.id))
        audit.record_event("login", "success", user_id=user_id, email="alice@example.com", ip="127.0.0.1")
    fields = form_fields(client.get("/account/delete").get_data(as_text=True))
    wrong = client.post("/account/delete", data={**fields, "password": "wrong"})
    assert wrong.status_code == 400 and 'id="password-error"' in wrong.get_data(as_text=True)
    done = client.post("/account/delete", data={**fields, "password": PASSWORD})
    assert done.status_code == 200 and "Account deleted" in done.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(User, user_id) is None
        assert db.session.scalar(select(db.func.count()).select_from(Consent)) == 0
        event = db.session.scalar(select(AuthEvent).where(AuthEvent.event == "login"))
        assert event.user_id is None and event.email is None and event.pseudonym
        deleted = db.session.scalar(select(AuthEvent).where(AuthEvent.event == "account_delete"))
        assert deleted.user_id is None and deleted.email is None and deleted.pseudonym == event.pseudonym
    # The access token it carried is revoked too (introspection says inactive).
    introspected = client.post("/introspect", data={"token": tokens["access_token"]}, auth=(client_id, secret))
    assert introspected.get_json() == {"active": False}
    assert client.get("/account/export").status_code == 401
    sent_mail(mailbox, "alice@example.com", "account was deleted")


def _bad_password_events(app, event: str) -> list[AuthEvent]:
    with app.app_context():
        return list(db.session.scalars(select(AuthEvent).where(AuthEvent.event == event, AuthEvent.result == "failure",
                                                               AuthEvent.reason == "bad_password")))


def test_wrong_current_passwords_on_change_password_are_limited_and_audited(app, client):
    """A stolen session is no password oracle: 5 tries per 15 minutes per user
    (services.accounts.check_password_again, as for removing the last second factor), then
    429 with Retry-After even for the right password; every wrong one is in auth_events."""
    _signed_in(app, client)
    fields = form_fields(client.get("/account/password").get_data(as_text=True))
    for i in range(5):
        wrong = client.post("/account/password", data={**fields, "current_password": f"guess {i}", "password": NEW})
        assert wrong.status_code == 400 and 'id="current-error"' in wrong.get_data(as_text=True)
    refused = client.post("/account/password", data={**fields, "current_password": PASSWORD, "password": NEW})
    assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 900
    with app.app_context():
        authenticate("alice@example.com", PASSWORD)  # unchanged
    events = _bad_password_events(app, "password_change")
    assert len(events) == 5 and all(e.user_id and e.ip == "127.0.0.1" for e in events)


def test_wrong_passwords_on_delete_share_the_budget_and_the_account_stays(app, client):
    _signed_in(app, client)
    change = form_fields(client.get("/account/password").get_data(as_text=True))
    for i in range(3):
        assert client.post("/account/password", data={**change, "current_password": f"guess {i}",
                                                      "password": NEW}).status_code == 400
    fields = form_fields(client.get("/account/delete").get_data(as_text=True))
    for i in range(2):
        assert client.post("/account/delete", data={**fields, "password": f"guess {i}"}).status_code == 400
    refused = client.post("/account/delete", data={**fields, "password": PASSWORD})
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert "Too many attempts" in refused.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(select(User).where(User.email == "alice@example.com")) is not None
    assert len(_bad_password_events(app, "account_delete")) == 2


def test_a_weak_new_password_does_not_use_up_a_try(app, client):
    _signed_in(app, client)
    fields = form_fields(client.get("/account/password").get_data(as_text=True))
    for _ in range(6):
        weak = client.post("/account/password", data={**fields, "current_password": "wrong", "password": "12345678"})
        assert weak.status_code == 400 and 'id="password-error"' in weak.get_data(as_text=True)
    done = client.post("/account/password", data={**fields, "current_password": PASSWORD, "password": NEW})
    assert done.status_code == 200
