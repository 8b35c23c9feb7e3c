"""Drive the MFA step through the hosted pages with the Flask test client."""

from __future__ import annotations

import base64
import json
import re
import time

import pyotp

from idp.mfa import totp
from idp.settings import decode_kek
from tests.factories import PASSWORD, exchange, form_fields, pkce_pair, query
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
