"""Helpers for the account tests: fill the hosted forms, read the links in received mail."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

from idp.interaction.accounts import drain_background
from tests.factories import form_fields
from tests.mailbox import body_text


def post_form(test_client, path: str, **data):
    """GET the form (for its CSRF token and cookie), then POST it with `data`."""
    page = test_client.get(path)
    assert page.status_code == 200, page.get_data(as_text=True)[:300]
    return test_client.post(urlsplit(path).path, data={**form_fields(page.get_data(as_text=True)), **data})


def link_in(message, path: str) -> str:
    """The path and query of the first link to `path` in a mail's text part."""
    found = re.search(r"https?://[^\s/]+(" + re.escape(path) + r"\?token=[A-Za-z0-9_-]+)", body_text(message))
    assert found, body_text(message)
    return found.group(1)


def sent_mail(mailbox, to: str, subject: str):
    drain_background()
    return mailbox.wait_for(to, subject)


@pytest.fixture()
def drained():
    yield drain_background
    drain_background()
