"""One passkey assertion posted 8 times at once to gunicorn (2 workers, issuer
http://localhost:PORT): its challenge is taken from the store by one atomic get-and-delete, so
exactly one sign-in succeeds and the 7 replays are refused: 401, or 400 once the winner has
finished the interaction (W3C WebAuthn §13.4.3)."""

from __future__ import annotations

import json
from urllib.parse import urljoin

import pytest
import requests

from idp.mfa import passkeys
from idp.storage.models import User, db
from tests.factories import auth_params, form_fields, make_client, make_user, pkce_pair
from tests.mfa.softauthn import SoftAuthenticator

from .test_concurrency import race

pytestmark = pytest.mark.timeout(120)


def test_one_assertion_signs_in_once_under_concurrent_replays(app, localhost_server):
    server = localhost_server
    rp = passkeys.relying_party(server.url)
    authenticator = SoftAuthenticator(rp.origin, rp.rp_id)
    store = app.extensions["idp"].store
    with app.app_context():
        user = make_user()
        client_id, _ = make_client(skip_consent=True)
        options = json.loads(passkeys.begin_registration(store, rp, user, "test"))
        passkeys.finish_registration(store, rp, db.session.get(User, user.id), "test",
                                     authenticator.create(options), "Key")
        db.session.remove()

    browser = requests.Session()
    _, challenge = pkce_pair()
    response = browser.get(server.url + "/authorize", params=auth_params(client_id, challenge),
                           allow_redirects=False, timeout=10)
    fields = form_fields(browser.get(urljoin(server.url + "/", response.headers["Location"]), timeout=10).text)
    options = browser.post(server.url + "/login/passkey/options", json={"interaction": fields["interaction"]},
                           headers={"X-CSRF-Token": fields["csrf_token"]}, timeout=10)
    assert options.status_code == 200, options.text[:300]
    form = {"csrf_token": fields["csrf_token"], "interaction": fields["interaction"],
            "credential": json.dumps(authenticator.get(options.json()))}
    cookies = browser.cookies.get_dict()

    def post():
        return requests.post(server.url + "/login/passkey", data=form, cookies=cookies, allow_redirects=False,
                             timeout=30)

    statuses = race([post] * 8)
    # The losers are refused: 401 (the challenge was already taken), or 400 when the winner
    # had already finished the interaction (it ends once the code is issued).
    assert sorted(statuses)[0] == 302 and set(sorted(statuses)[1:]) <= {400, 401}, statuses
