"""Step-up as an independent RP library sees it: Node `openid-client` (panva) validates every
ID token (signature against jwks_uri, iss, aud, nonce, auth_time vs max_age); a first login
with the password gives acr urn:idp:acr:pwd and amr ["pwd"]; the same session asked for
`acr_values=urn:idp:acr:mfa` passes a TOTP code (no password again) and the new ID token says
acr urn:idp:acr:mfa, amr ["pwd", "otp", "mfa"], a later auth_time and the same sid."""

from __future__ import annotations

import time

import pyotp

from idp.mfa import totp
from idp.settings import decode_kek
from idp.storage.models import User, db

from .test_openid_client import check_id_token, login
from .useragent import UserAgent


def test_acr_values_step_up_changes_acr_and_amr(app, live_server, register, node_rp, person):
    rp = register("client_secret_basic")
    node = node_rp(rp)
    with app.app_context():
        user = db.session.query(User).filter_by(email=person.email).one()
        secret = totp.new_secret()
        # The user turns on an authenticator app after the first login below.
        kek = decode_kek(app.extensions["idp"].settings.key_encryption_key)
    ua = UserAgent(person.email, person.password, otp=lambda: pyotp.TOTP(secret).now())

    first = check_id_token(login(node, ua), rp, live_server, person.email)
    assert first["acr"] == "urn:idp:acr:pwd" and first["amr"] == ["pwd"]
    assert ua.saw("login") == 1 and ua.saw("mfa") == 0, ua.steps

    with app.app_context():
        totp.create_factor(kek, user.id, secret, "Phone")
    time.sleep(1.1)  # auth_time has a resolution of one second
    stepped = check_id_token(login(node, ua, params={"acr_values": "urn:idp:acr:mfa"}), rp, live_server,
                             person.email)
    assert ua.saw("login") == 0 and ua.saw("mfa") == 1, ua.steps  # inside the session: no password
    assert stepped["acr"] == "urn:idp:acr:mfa"
    assert stepped["amr"] == ["pwd", "otp", "mfa"]
    assert stepped["auth_time"] > first["auth_time"] and stepped["sid"] == first["sid"]
    assert stepped["sub"] == first["sub"]

    # The session now has two factors: a plain request gets them without any page.
    again = check_id_token(login(node, ua), rp, live_server, person.email)
    assert again["acr"] == "urn:idp:acr:mfa" and ua.saw("login") == 0 and ua.saw("mfa") == 0, ua.steps


def test_oic_sees_step_up_and_max_age_asks_for_the_second_factor_again(app, live_server, register, person):
    """Python `oic` (verifies signature, iss, aud, exp, iat): an enrolled user's login has two
    factors; max_age=0 asks for the password and the code again (new auth_time)."""
    from .test_oic import OicRP

    oic_rp = OicRP(register())
    with app.app_context():
        user = db.session.query(User).filter_by(email=person.email).one()
        secret = totp.new_secret()
        totp.create_factor(decode_kek(app.extensions["idp"].settings.key_encryption_key), user.id, secret, "Phone")
    # The second login types the next step's code (one step of skew is accepted): the first code
    # cannot be used twice (RFC 6238 §5.2).
    codes = [pyotp.TOTP(secret).at(time.time(), counter_offset=k) for k in (0, 1)]
    ua = UserAgent(person.email, person.password, otp=lambda: codes.pop(0))
    _, first = oic_rp.login(ua)
    assert ua.saw("login") == 1 and ua.saw("mfa") == 1, ua.steps
    assert first["id_token"]["acr"] == "urn:idp:acr:mfa" and first["id_token"]["amr"] == ["pwd", "otp", "mfa"]
    time.sleep(1.1)  # auth_time has a resolution of one second
    _, fresh = oic_rp.login(ua, max_age=0)
    assert ua.saw("login") == 1 and ua.saw("mfa") == 1, ua.steps
    assert fresh["id_token"]["auth_time"] > first["id_token"]["auth_time"]
    assert fresh["id_token"]["acr"] == "urn:idp:acr:mfa"
