"""Fixtures and steps shared by the passkey tests: an app whose issuer is a host name (an IP
address cannot be a WebAuthn rp id), the account page's CSRF token, a registered passkey."""

from __future__ import annotations

import dataclasses
import re

import pytest

from idp import create_app
from tests.factories import make_user
from tests.mfa.softauthn import SoftAuthenticator
from tests.security.helpers import account_login

ISSUER = "http://localhost:5000"


@pytest.fixture(scope="module")
def pk_app(app, settings):
    """The test app (same database and store) under the issuer http://localhost:5000."""
    return create_app(dataclasses.replace(settings, issuer=ISSUER))


@pytest.fixture()
def pk_client(pk_app):
    with pk_app.app_context():
        yield pk_app.test_client()


@pytest.fixture()
def authenticator():
    return SoftAuthenticator(ISSUER, "localhost")


def account_csrf(test_client) -> str:
    page = test_client.get("/account").get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def post_json(test_client, url: str, body, csrf: str | None, **over):
    headers = {"X-CSRF-Token": csrf} if csrf else {}
    return test_client.post(url, json=body, headers=headers, **over)


def register(test_client, authenticator, name: str | None = None, csrf: str | None = None):
    """Run the registration ceremony from the account page (already signed in)."""
    csrf = csrf or account_csrf(test_client)
    options = post_json(test_client, "/account/passkeys/register/options", {}, csrf)
    assert options.status_code == 200, options.get_data(as_text=True)
    credential = authenticator.create(options.get_json())
    return post_json(test_client, "/account/passkeys/register/verify", {"credential": credential, "name": name}, csrf)


def signed_in_with_passkey(test_client, authenticator, name: str | None = "Laptop"):
    """A new user (alice@example.com) signed in on the account page with one passkey."""
    make_user()
    assert account_login(test_client).status_code == 302
    answer = register(test_client, authenticator, name)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return answer.get_json()
