"""Driving /account/login in the Flask test client."""

from __future__ import annotations

from tests.factories import PASSWORD, form_fields


def account_login(test_client, email: str = "alice@example.com", password: str = PASSWORD, **environ):
    page = test_client.get("/account/login", environ_base=environ)
    fields = form_fields(page.get_data(as_text=True))
    return test_client.post("/account/login", data={**fields, "email": email, "password": password},
                            environ_base=environ)
