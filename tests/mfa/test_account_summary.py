"""The account page's two-step verification summary counts every factor kind: a user whose only
second factor is a passkey must not read "Off"."""

from __future__ import annotations

from tests.mfa import passkey_helpers as helpers
from tests.mfa.passkey_helpers import signed_in_with_passkey

pk_app, pk_client, authenticator = helpers.pk_app, helpers.pk_client, helpers.authenticator


def test_a_passkey_alone_turns_two_step_verification_on(pk_client, authenticator):
    answer = signed_in_with_passkey(pk_client, authenticator)
    pk_client.get(answer["redirect"])  # the recovery codes, shown once
    page = pk_client.get("/account").get_data(as_text=True)
    summary = page.split('id="mfa-heading"', 1)[1].split("</section>", 1)[0]
    assert "Off:" not in summary and "1 passkey " in summary and "10 unused recovery codes" in summary
    manage = pk_client.get("/account/mfa").get_data(as_text=True)
    assert "1 passkey." in manage and "Make new recovery codes" in manage


def test_without_factors_the_summary_says_off(pk_client):
    from tests.factories import make_user
    from tests.security.helpers import account_login

    make_user()
    account_login(pk_client)
    summary = pk_client.get("/account").get_data(as_text=True).split('id="mfa-heading"', 1)[1]
    assert "Off: signing in needs only your password." in summary.split("</section>", 1)[0]
