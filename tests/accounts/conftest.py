"""Helpers for the account tests: fill the hosted forms, read the links in received mail."""

from __future__ import annotations

import re
import threading
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select, update

from idp.interaction.accounts import drain_background
from idp.storage.account_models import AccountToken
from idp.storage.models import db, utcnow
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


def expire_link(app, lifetime: timedelta) -> None:
    """Check that the one stored link lives `lifetime`, then move its expiry into the past."""
    with app.app_context():
        row = db.session.scalar(select(AccountToken))
        assert abs((row.expires_at - row.created_at) - lifetime) < timedelta(seconds=5)
        db.session.execute(update(AccountToken).values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()


def together(fn, n: int) -> list:
    """fn(0) .. fn(n - 1), each on its own thread, released at the same moment."""
    barrier = threading.Barrier(n)
    results = [None] * n

    def run(i):
        barrier.wait()
        results[i] = fn(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


@pytest.fixture()
def drained():
    yield drain_background
    drain_background()
