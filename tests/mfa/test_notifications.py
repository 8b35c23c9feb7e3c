"""Every change to a user's two-step verification mails the user and writes one audit row
(README "Multi-factor authentication"; issue 5), and recovery codes are stored only as keyed
hashes. The TOTP changes (enrol, rename, remove) are checked in test_account_mfa.py."""

from __future__ import annotations

import hashlib

from sqlalchemy import select

from idp.mfa import recovery, trusted
from idp.storage.mfa_models import RecoveryCode
from idp.storage.models import User, db
from tests.factories import form_fields, make_client, make_user
from tests.mailbox import body_text

from .helpers import (
    account_csrf,
    auth_params,
    changes_mailed,
    enrol_on_page,
    enrol_totp,
    kek,
    mfa_events,
    password_step,
    quiet_mailbox,
    shown_codes,
    signed_in,
    submit_code,
)

NEW_CODES = "New recovery codes were made; the old ones no longer work."
UNTRUSTED = "Every browser you trusted must pass two-step verification again."


def test_new_recovery_codes_are_mailed_and_audited_without_the_codes(app, client, mailbox):
    user_id = signed_in(app, client)
    enrol_on_page(client)
    quiet_mailbox(mailbox)
    # A forged form changes nothing, so it tells nobody anything.
    assert client.post("/account/mfa/recovery-codes", data={"csrf_token": "forged"}).status_code == 400
    response = client.post("/account/mfa/recovery-codes", data={"csrf_token": account_csrf(client)})
    codes = shown_codes(response.get_data(as_text=True))
    assert response.status_code == 200 and len(codes) == 10 and response.headers["Cache-Control"] == "no-store"
    assert changes_mailed(mailbox) == [NEW_CODES]
    [mail] = mailbox.to("alice@example.com")
    text, html = body_text(mail), mail.get_body(preferencelist=("html",)).get_content()
    assert not [c for c in codes if c in text or c in html or c.replace("-", "") in text + html]
    with app.app_context():
        assert mfa_events(user_id) == [("mfa_enrol", "success", "127.0.0.1"),
                                       ("mfa_recovery_codes", "success", "127.0.0.1")]


def test_new_recovery_codes_need_a_factor_and_are_not_mailed_without_one(app, client, mailbox):
    user_id = signed_in(app, client)
    quiet_mailbox(mailbox)
    # (The page has no such form without a factor; the enrolment page has the same token.)
    csrf = form_fields(client.get("/account/mfa/totp").get_data(as_text=True))["csrf_token"]
    refused = client.post("/account/mfa/recovery-codes", data={"csrf_token": csrf})
    assert refused.status_code == 400 and not shown_codes(refused.get_data(as_text=True))
    assert changes_mailed(mailbox) == []
    with app.app_context():
        assert recovery.remaining(user_id) == 0 and mfa_events(user_id) == []


def test_forgetting_trusted_browsers_is_mailed_and_audited(app, client, mailbox):
    user_id = signed_in(app, client)
    with app.app_context():
        bob_id = make_user("bob@example.com").id
        for owner in (user_id, user_id, bob_id):
            trusted.create_trust(app.config["SECRET_KEY"], owner, 3600, "Firefox")
    quiet_mailbox(mailbox)
    assert client.post("/account/mfa/trusted-browsers/forget", data={"csrf_token": "forged"}).status_code == 400
    with app.app_context():
        assert len(trusted.list_trusted(user_id)) == 2 and mfa_events(user_id) == []
    assert changes_mailed(mailbox) == []

    done = client.post("/account/mfa/trusted-browsers/forget", data={"csrf_token": account_csrf(client)})
    assert done.headers["Location"] == "/account/mfa?done=forgotten"
    with app.app_context():
        assert trusted.list_trusted(user_id) == [] and len(trusted.list_trusted(bob_id)) == 1
        assert mfa_events(user_id) == [("mfa_untrust", "success", "127.0.0.1")]
        assert mfa_events(bob_id) == []
    assert changes_mailed(mailbox) == [UNTRUSTED]
    assert changes_mailed(mailbox, "bob@example.com") == []


def _plain_hashes(user_id: str, code: str) -> set[str]:
    """What an unkeyed hash of a code could look like."""
    forms = {code, code.replace("-", ""), code.upper(), code.replace("-", "").upper()}
    inputs = forms | {f"{user_id}:{f}" for f in forms} | {f"{f}:{user_id}" for f in forms} | {user_id + f for f in forms}
    return {hashlib.new(name, value.encode()).hexdigest() for value in inputs for name in ("sha256", "sha1", "md5")}


def test_recovery_codes_are_stored_as_keyed_hashes_and_work_once(app, client, mailbox):
    user_id = signed_in(app, client)
    _, shown = enrol_on_page(client)
    codes = shown_codes(shown)
    assert len(codes) == 10
    with app.app_context():
        rows = db.session.scalars(select(RecoveryCode).where(RecoveryCode.user_id == user_id)).all()
        assert len(rows) == 10 and all(row.used_at is None for row in rows)
        stored = {row.code_hash for row in rows}
        assert len(stored) == 10
        # No plaintext anywhere in the database (every table, every column), in either form.
        dump = " ".join(repr(tuple(r)) for table in db.metadata.sorted_tables
                        for r in db.session.execute(table.select())).lower()
        assert not [c for c in codes if c in dump or c.replace("-", "") in dump]
        # Not an unkeyed hash either: keyed with a key derived from the key-encryption key.
        assert not stored & set().union(*(_plain_hashes(user_id, c) for c in codes))
        other_key = bytes(b ^ 0xFF for b in kek(app))
        assert not recovery.consume(other_key, user_id, codes[0])
        # Bob, who has codes of his own, cannot use Alice's.
        bob = make_user("bob@example.com")
        enrol_totp(app, bob)
        recovery.generate(kek(app), bob.id)
        assert not recovery.consume(kek(app), bob.id, codes[0])
        client_id, _ = make_client()
    # A code shown to the user signs in once, in any browser.
    browser = app.test_client()
    password_step(browser, auth_params(client_id)[0])
    assert submit_code(browser, "/login/mfa/recovery", codes[3]).status_code == 302
    again = app.test_client()
    password_step(again, auth_params(client_id)[0])
    assert submit_code(again, "/login/mfa/recovery", codes[3]).status_code == 401
    with app.app_context():
        used = db.session.scalars(select(RecoveryCode).where(RecoveryCode.used_at.is_not(None))).all()
        assert [row.user_id for row in used] == [user_id] and recovery.remaining(user_id) == 9
        assert db.session.get(User, user_id).active
