"""Drive the MFA step through the hosted pages with the Flask test client."""

from __future__ import annotations

import base64
import json
import re
import time

import pyotp

from idp.mfa import totp
from idp.settings import decode_kek
from tests.factories import PASSWORD, exchange, form_fields, make_user, pkce_pair, query
from tests.factories import auth_params as _auth_params


def kek(app) -> bytes:
    return decode_kek(app.extensions["idp"].settings.key_encryption_key)


def enrol_totp(app, user, label: str = "Phone") -> str:
    """A confirmed TOTP factor for `user` (inside an app context); returns its secret."""
    secret = totp.new_secret()
    totp.create_factor(kek(app), user.id, secret, label)
    return secret


def code_at(secret: str, offset_steps: int = 0) -> str:
    return pyotp.TOTP(secret).at(time.time(), counter_offset=offset_steps)


def auth_params(client_id: str, **over) -> tuple[dict, str]:
    verifier, challenge = pkce_pair()
    return _auth_params(client_id, challenge, **over), verifier


def password_step(test_client, params: dict, email: str = "alice@example.com", password: str = PASSWORD):
    """GET /authorize, post the password; returns the response after it (no redirects followed)."""
    response = test_client.get("/authorize", query_string=params)
    assert response.status_code == 302, response.get_data(as_text=True)[:300]
    location = response.headers["Location"]
    assert location.startswith("/login"), location
    page = test_client.get(location)
    return test_client.post("/login", data={**form_fields(page.get_data(as_text=True)), "email": email,
                                            "password": password})


def mfa_form(test_client, path: str) -> dict:
    page = test_client.get(path)
    assert page.status_code == 200, page.get_data(as_text=True)[:300]
    return form_fields(page.get_data(as_text=True))


def submit_code(test_client, path: str, code: str, **extra):
    return test_client.post(path, data={**mfa_form(test_client, path), "code": code, **extra})


def finish(test_client, response):
    """Follow a consent page if one is shown; returns the 302 to the client."""
    location = response.headers.get("Location", "")
    if response.status_code == 302 and location.startswith("/consent"):
        fields = form_fields(test_client.get(location).get_data(as_text=True))
        response = test_client.post("/consent", data={**fields, "decision": "allow"})
    return response


def id_token_claims(test_client, client_id, secret, response, verifier) -> dict:
    response = finish(test_client, response)
    assert response.status_code == 302, response.get_data(as_text=True)[:400]
    code = query(response.headers["Location"])["code"]
    body = exchange(test_client, client_id, secret, code, verifier).get_json()
    payload = body["id_token"].split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def mailed_code(message) -> str:
    from tests.mailbox import body_text

    return re.search(r"\b(\d{6})\b", body_text(message)).group(1)


# --- the account pages -------------------------------------------------------------------------

def account_login(test_client, password: str = PASSWORD):
    page = test_client.get("/account/login")
    return test_client.post("/account/login", data={**form_fields(page.get_data(as_text=True)),
                                                    "email": "alice@example.com", "password": password})


def signed_in(app, test_client) -> str:
    """Alice, made and signed in to the account page in `test_client`; returns her id."""
    with app.app_context():
        user_id = make_user().id
    assert account_login(test_client).headers["Location"] == "/account"
    return user_id


def enrol_on_page(test_client, label: str = "Pixel") -> tuple[str, str]:
    """Enrol an app through the pages; returns (secret, html of the answer)."""
    page = test_client.get("/account/mfa/totp")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "<svg" in html and page.headers["Cache-Control"] == "no-store"
    secret = re.search(r'data-secret="([A-Z2-7]+)"', html).group(1)
    done = test_client.post("/account/mfa/totp", data={**form_fields(html), "label": label,
                                                       "code": pyotp.TOTP(secret).now()})
    return secret, done.get_data(as_text=True)


def shown_codes(html: str) -> list[str]:
    """The recovery codes a page shows."""
    return re.findall(r"<code>([0-9a-z]{5}-[0-9a-z]{5})</code>", html)


def account_csrf(test_client) -> str:
    return form_fields(test_client.get("/account/mfa").get_data(as_text=True))["csrf_token"]


# --- what a change left behind: its mails and its audit rows ----------------------------------

SECURITY_SUBJECT = "Your sign-in security settings changed"


def quiet_mailbox(mailbox) -> None:
    """Send what earlier tests queued, then empty the mailbox (the session mailbox is cleared
    only after the tests that ask for it, and mails go out after the response)."""
    from idp.interaction.accounts import drain_background

    drain_background()
    mailbox.clear()


def changes_mailed(mailbox, to: str = "alice@example.com") -> list[str]:
    """The sentence saying what changed, of every mail `to` got (sorted: two threads send
    them). Every one of them must be the security-settings mail, greeting the user by name."""
    from idp.interaction.accounts import drain_background
    from tests.mailbox import body_text

    drain_background()
    changes = []
    for message in mailbox.to(to):
        assert (message["To"], message["Subject"]) == (to, SECURITY_SUBJECT)
        hello, blank, what, *_ = body_text(message).splitlines()
        assert (hello, blank) == ("Hello Alice Example,", "")
        changes.append(what)
    return sorted(changes)


def mfa_events(user_id: str) -> list[tuple[str, str, str | None]]:
    """(event, result, ip) of the user's audit rows about factors, oldest first."""
    from sqlalchemy import select

    from idp.storage.models import db
    from idp.storage.security_models import AuthEvent

    return [(row.event, row.result, row.ip) for row in db.session.scalars(
        select(AuthEvent).where(AuthEvent.user_id == user_id, AuthEvent.event.startswith("mfa_", autoescape=True))
        .order_by(AuthEvent.created_at))]
