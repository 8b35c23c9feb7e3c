"""JSON nested past any sensible depth ('[' * 5000) on every path that parses request input:
json.loads raises RecursionError (not a ValueError) there, which was a 500 wherever only
ValueError was caught. Now idp/jsonsafe.py refuses it as a ValueError and each endpoint
answers its ordinary 4xx: invalid_request JSON (passkeys, decision API), the error page
(claims parameter), invalid_client (RFC 7523 client assertion at /token)."""

from __future__ import annotations

import base64
import dataclasses
import json

import pytest

from idp import create_app
from idp.jsonsafe import MAX_DEPTH, loads_untrusted, nesting_depth
from idp.policy.admin import parse_attribute
from idp.storage.models import db
from tests.factories import auth_params, exchange, form_fields, get_code, make_client, make_user
from tests.mfa.helpers import enrol_totp
from tests.mfa.passkey_helpers import ISSUER, account_csrf
from tests.security.helpers import account_login

DEEP = "[" * 5000
DEEP_BODIES = (DEEP, '{"credential": ' + DEEP + ', "name": "x"}', '{"interaction": ' + "{" * 3000 + "}")


# --- the helper -------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [DEEP, "{" * 5000, '{"a":' * 3000, "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1),
                                  '{"credential": ' + "[" * 4000 + "]" * 4000 + "}", DEEP.encode()])
def test_loads_untrusted_refuses_deep_nesting_as_a_value_error(text):
    with pytest.raises(ValueError):
        loads_untrusted(text)


def test_loads_untrusted_parses_ordinary_json_and_brackets_inside_strings():
    nested = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert loads_untrusted(nested) == json.loads(nested)
    assert loads_untrusted('{"name": "[[[[{{{{", "q": "\\"[[["}') == {"name": "[[[[{{{{", "q": '"[[['}
    assert loads_untrusted(b'{"a": [1, {"b": null}]}') == {"a": [1, {"b": None}]}
    assert loads_untrusted('{"a": 1}'.encode("utf-16")) == {"a": 1}
    assert nesting_depth('{"a": "]]]]", "b": [[]]}') == 3


@pytest.mark.parametrize("text", ["", None, b"", "not json", b"\xff\xfe\xfd", b"\xc3", '"unterminated',
                                  '"\\', "x" * 70_000])
def test_loads_untrusted_refuses_empty_invalid_non_utf8_and_oversized_text(text):
    with pytest.raises(ValueError):
        loads_untrusted(text)


def test_loads_untrusted_is_linear_on_pathological_quoting():
    """Unterminated strings full of escaped quotes: the depth scan must not backtrack."""
    import time

    started = time.monotonic()
    for text in ('"' + '\\"' * 30_000, '"' + '\\"' * 30_000 + "\\", '"a' * 30_000):
        with pytest.raises(ValueError):
            loads_untrusted(text)
    assert time.monotonic() - started < 1


# --- passkeys ---------------------------------------------------------------------------------

@pytest.fixture()
def pk_app(app, settings):
    """The test app under http://localhost:5000 (passkeys on)."""
    pk_app = create_app(dataclasses.replace(settings, issuer=ISSUER))
    with pk_app.app_context():
        yield pk_app
        db.session.remove()


@pytest.fixture()
def pk_signed_in(pk_app):
    """Alice signed in on /account: (test client, the account page's CSRF token)."""
    make_user()
    browser = pk_app.test_client()
    assert account_login(browser).status_code == 302
    return browser, account_csrf(browser)


def _assert_invalid_request(browser, paths, csrf):
    for path in paths:
        for body in DEEP_BODIES:
            response = browser.post(path, data=body, content_type="application/json", headers={"X-CSRF-Token": csrf})
            assert response.status_code == 400, (path, body[:20], response.status_code)
            assert response.get_json()["error"] == "invalid_request", path
            assert response.headers["Cache-Control"] == "no-store"


def test_deeply_nested_json_bodies_are_invalid_request_on_the_passkey_endpoints(pk_signed_in):
    browser, csrf = pk_signed_in
    _assert_invalid_request(browser, ("/account/passkeys/register/options", "/account/passkeys/register/verify",
                                      "/login/passkey/options"), csrf)


def test_deeply_nested_json_body_is_invalid_request_at_the_mfa_step(pk_app):
    """/login/passkey/second-factor/options reads the body once a pending login exists."""
    enrol_totp(pk_app, make_user())
    browser = pk_app.test_client()
    assert account_login(browser).headers["Location"] == "/login/mfa"
    _assert_invalid_request(browser, ("/login/passkey/second-factor/options",), "x")


def test_a_deeply_nested_credential_field_fails_the_passkey_sign_in_without_a_500(pk_signed_in):
    browser, _ = pk_signed_in
    browser.delete_cookie("idp_session")
    fields = form_fields(browser.get("/account/login").get_data(as_text=True))
    for credential in (DEEP, '{"id": "x", "response": ' + "[" * 40 + "]" * 40 + "}"):
        response = browser.post("/login/passkey", data={"csrf_token": fields["csrf_token"], "account": "1",
                                                        "credential": credential})
        assert response.status_code == 401, response.status_code
        assert "The passkey answer is not a JSON object." in response.get_data(as_text=True)
    assert browser.get_cookie("idp_session") is None


# --- protocol endpoints and the decision API -------------------------------------------------

def test_deeply_nested_body_is_invalid_request_on_the_decision_api(app, client):
    with app.app_context():
        make_user()
        client_id, secret = make_client()
        code, verifier, _ = get_code(client, client_id)
        token = exchange(client, client_id, secret, code, verifier).get_json()["access_token"]
    for body in (DEEP, '{"resource": "document", "action": "read", "context": ' + "{" * 3000 + "}"):
        response = client.post("/api/v1/authorize", data=body, content_type="application/json",
                               headers={"Authorization": "Bearer " + token})
        assert response.status_code == 400, response.status_code
        assert response.get_json()["error"] == "invalid_request"


def test_deeply_nested_claims_parameter_is_the_invalid_request_error_page(app, client):
    """OIDC Core §5.5: a claims value that is not a JSON object is invalid_request; the redirect
    URI is trusted by then, so the answer may be the redirect with the error, never a 500."""
    with app.app_context():
        client_id, _ = make_client()
    for claims in (DEEP, '{"id_token": {"acr": {"essential": true, "values": ' + "[" * 3000 + "}}}"):
        response = client.get("/authorize", query_string=auth_params(client_id, claims=claims))
        assert response.status_code in (302, 400), response.status_code
        if response.status_code == 302:
            assert "error=invalid_request" in response.headers["Location"]
        else:
            assert "invalid_request" in response.get_data(as_text=True)


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


@pytest.mark.parametrize("payload", [DEEP, '{"sub": ' + "[" * 3000 + "}", "[" * 40 + "]" * 40])
def test_deeply_nested_client_assertion_is_invalid_client(app, client, payload):
    """RFC 7523 §3.2 and RFC 6749 §5.2: an assertion that cannot be read is invalid_client,
    whichever client it names and whatever method that client is registered with."""
    with app.app_context():
        client_id, _ = make_client()
    assertion = _b64('{"alg":"RS256","kid":"x"}') + "." + _b64(payload) + ".AAAA"
    response = client.post("/token", data={
        "grant_type": "client_credentials", "client_id": client_id, "client_assertion": assertion,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"})
    assert response.status_code in (400, 401), response.status_code
    assert response.get_json()["error"] == "invalid_client"
    assert response.headers["Cache-Control"] == "no-store"


def test_a_deeply_nested_attribute_value_is_kept_as_a_string():
    """SAML attribute values reach the policy attributes through parse_attribute (federation/
    provisioning.py): '[[[[...' is a string attribute, not a RecursionError at the ACS."""
    assert parse_attribute("department=" + DEEP) == ("department", DEEP)
    assert parse_attribute("level=3") == ("level", 3)


def test_a_deeply_nested_client_data_json_is_a_rejected_passkey(pk_signed_in):
    """clientDataJSON (base64url JSON inside the credential) is parsed by py_webauthn, which
    catches JSONDecodeError only: nested, it must be a refused passkey (400), not a 500."""
    from tests.mfa.passkey_helpers import post_json
    from tests.mfa.softauthn import SoftAuthenticator, b64

    browser, csrf = pk_signed_in
    options = post_json(browser, "/account/passkeys/register/options", {}, csrf).get_json()
    credential = SoftAuthenticator(ISSUER, "localhost").create(options)
    credential["response"]["clientDataJSON"] = b64(DEEP.encode())
    response = post_json(browser, "/account/passkeys/register/verify", {"credential": credential, "name": None}, csrf)
    assert response.status_code == 400, response.status_code
    assert response.get_json()["error"] == "passkey_rejected"
