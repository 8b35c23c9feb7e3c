"""The authorization endpoint: RFC 6749 §4.1, OIDC Core §3.1.2, RFC 9207, the form_post
response mode, and the hosted login and consent pages that /authorize sends the browser to.

Every error case checks where the browser goes: to the client (a trusted redirect_uri) with
exactly error, error_description, state and iss, or to our 400 page with no Location at all."""

from __future__ import annotations

import html
import json
import re
import time
from urllib.parse import urlsplit

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.factories import (
    PASSWORD,
    REDIRECT_URI,
    auth_params,
    exchange,
    follow_login,
    form_fields,
    get_code,
    make_client,
    make_user,
    pkce_pair,
    query,
)

ISSUER = "http://127.0.0.1:5000"  # the `settings` fixture's issuer
SESSION_COOKIE = "idp_session"  # no __Host- prefix on an http issuer
LOGIN_ERROR = "Invalid email or password."


# --- helpers --------------------------------------------------------------------------------

def assert_error_page(response, error: str, status: int = 400) -> None:
    """Our HTML error page: never a redirect, never a stack trace."""
    body = response.get_data(as_text=True)
    assert response.status_code == status, body[:500]
    assert "Location" not in response.headers
    assert response.mimetype == "text/html"
    assert f"<strong>{error}</strong>" in body
    assert "Traceback" not in body
    assert response.headers["Cache-Control"] == "no-store"


def assert_error_redirect(response, error: str, state: str | None, redirect_uri: str = REDIRECT_URI) -> dict:
    """A 302 to the client's redirect_uri carrying exactly error, error_description, state
    and iss (RFC 6749 §4.1.2.1, RFC 9207 §2)."""
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    location = response.headers["Location"]
    assert location.split("?")[0] == redirect_uri.split("?")[0]
    q = query(location)
    description = q.pop("error_description", None)
    assert description, "error_description is expected on every error"
    expected = {"error": error, "iss": ISSUER}
    if state is not None:
        expected["state"] = state
    assert q == expected
    return q


def assert_code_redirect(response, state: str) -> str:
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    location = response.headers["Location"]
    assert location.split("?")[0] == REDIRECT_URI
    q = query(location)
    assert set(q) == {"code", "state", "iss"}
    assert q["state"] == state and q["iss"] == ISSUER
    assert len(q["code"]) >= 20
    return q["code"]


def authorize(test_client, params: dict):
    return test_client.get("/authorize", query_string=params)


def location_path(response) -> str:
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    return urlsplit(response.headers["Location"]).path


def session_cookie(test_client) -> str | None:
    cookie = test_client.get_cookie(SESSION_COOKIE)
    return cookie.value if cookie else None


def decode_id_token(test_client, id_token: str) -> dict:
    keys = KeySet.import_key_set(test_client.get("/jwks.json").get_json())
    return jwt.decode(id_token, keys, algorithms=["RS256"]).claims


def login_session(test_client, cid: str, **over) -> dict:
    """Log in and consent once (so that a session and the consent exist); returns the params."""
    params = auth_params(cid, pkce_pair()[1], **over)
    assert_code_redirect(follow_login(test_client, params), params["state"])
    return params


def fill_login(test_client, response, email="alice@example.com", password=PASSWORD):
    """Given the 302 to /login, GET the page and POST the form."""
    assert location_path(response) == "/login"
    page = test_client.get(response.headers["Location"])
    assert page.status_code == 200
    return test_client.post("/login", data={**form_fields(page.get_data(as_text=True)),
                                            "email": email, "password": password})


@pytest.fixture()
def rp(ctx):
    """A confidential client and a user."""
    cid, secret = make_client()
    make_user()
    return cid, secret


# --- untrusted client or redirect_uri: the error page, never a redirect ---------------------

def test_unknown_client_gets_error_page(rp, client):
    response = authorize(client, auth_params("no-such-client", pkce_pair()[1]))
    assert_error_page(response, "invalid_client")


def test_missing_client_id_gets_error_page(rp, client):
    params = auth_params(rp[0], pkce_pair()[1])
    del params["client_id"]
    assert_error_page(authorize(client, params), "invalid_client")


@pytest.mark.parametrize("redirect_uri", [
    "http://127.0.0.1:9/other",
    REDIRECT_URI + "/",             # trailing slash
    "HTTP://127.0.0.1:9/CB",        # case
    "http://127.0.0.1:9/Cb",
    REDIRECT_URI + "?x=1",          # extra query parameter
    REDIRECT_URI + "#frag",
    "http://127.0.0.1:90/cb",       # prefix of the port
    "http://evil.example/cb",
])
def test_unregistered_redirect_uri_gets_error_page(rp, client, redirect_uri):
    response = authorize(client, auth_params(rp[0], pkce_pair()[1], redirect_uri=redirect_uri))
    assert_error_page(response, "invalid_request")


def test_unregistered_redirect_uri_wins_over_other_errors(rp, client):
    # A bad scope with an untrusted redirect_uri must not be reported to that URI.
    response = authorize(client, auth_params(rp[0], pkce_pair()[1], redirect_uri="http://evil.example/cb",
                                             scope="openid admin"))
    assert_error_page(response, "invalid_request")


def test_oidc_request_without_redirect_uri_gets_error_page(rp, client):
    # OIDC Core §3.1.2.1: redirect_uri is REQUIRED, even if only one is registered.
    params = auth_params(rp[0], pkce_pair()[1])
    del params["redirect_uri"]
    assert_error_page(authorize(client, params), "invalid_request")


# --- errors reported to the client ---------------------------------------------------------

@pytest.mark.parametrize("scope", ["openid admin", "openid \"quoted", "api:write"])
def test_unregistered_or_invalid_scope(rp, client, scope):
    params = auth_params(rp[0], pkce_pair()[1], scope=scope)
    assert_error_redirect(authorize(client, params), "invalid_scope", params["state"])


def test_scope_not_registered_for_this_client(ctx, client):
    cid, _ = make_client(scope="openid")
    make_user()
    params = auth_params(cid, pkce_pair()[1], scope="openid email")
    assert_error_redirect(authorize(client, params), "invalid_scope", params["state"])


@pytest.mark.parametrize("response_type", ["token", "id_token", "code token", "code id_token", "none"])
def test_unsupported_response_type(rp, client, response_type):
    params = auth_params(rp[0], pkce_pair()[1], response_type=response_type)
    assert_error_redirect(authorize(client, params), "unsupported_response_type", params["state"])


@pytest.mark.parametrize("mode", ["fragment", "web_message", "jwt", "query.jwt"])
def test_unknown_response_mode(rp, client, mode):
    params = auth_params(rp[0], pkce_pair()[1], response_mode=mode)
    assert_error_redirect(authorize(client, params), "invalid_request", params["state"])


def test_error_without_state_has_no_state(rp, client):
    params = auth_params(rp[0], pkce_pair()[1], scope="openid admin", state=None)
    assert "state" not in params
    assert_error_redirect(authorize(client, params), "invalid_scope", None)


def test_conflicting_prompt_values(rp, client):
    params = auth_params(rp[0], pkce_pair()[1], prompt="none login")
    assert_error_redirect(authorize(client, params), "invalid_request", params["state"])


@pytest.mark.parametrize("prompt", ["select_account", "create", "bogus"])
def test_unsupported_prompt_value(rp, client, prompt):
    params = auth_params(rp[0], pkce_pair()[1], prompt=prompt)
    assert_error_redirect(authorize(client, params), "invalid_request", params["state"])


@pytest.mark.parametrize("max_age", ["-1", "abc", "1.5", "99999999999"])
def test_invalid_max_age(rp, client, max_age):
    params = auth_params(rp[0], pkce_pair()[1], max_age=max_age)
    assert_error_redirect(authorize(client, params), "invalid_request", params["state"])


@pytest.mark.parametrize("claims", ["{not json", "[1, 2]", '"x"', '{"id_token": []}',
                                    '{"userinfo": {"email": 1}}'])
def test_invalid_claims_parameter(rp, client, claims):
    params = auth_params(rp[0], pkce_pair()[1], claims=claims)
    assert_error_redirect(authorize(client, params), "invalid_request", params["state"])


def test_access_denied_at_consent(rp, client):
    params = auth_params(rp[0], pkce_pair()[1])
    response = follow_login(client, params, consent="deny")
    assert_error_redirect(response, "access_denied", params["state"])
    # Nothing was granted: the next request asks again.
    again = authorize(client, auth_params(rp[0], pkce_pair()[1]))
    assert location_path(again) == "/consent"


# --- successful responses --------------------------------------------------------------------

@pytest.mark.parametrize("state", [
    "a b&c=d/e?f#g+h%20i",
    "émoji-😀-ünïcode",
    "'\"<script>alert(1)</script>",
    "~!@$^*()[]{}|;:,.",
    "x" * 2000,
])
def test_state_echoed_exactly(rp, client, state):
    params = auth_params(rp[0], pkce_pair()[1], state=state)
    assert_code_redirect(follow_login(client, params), state)


def test_iss_in_success_response_and_code_works(rp, client):
    cid, secret = rp
    verifier, challenge = pkce_pair()
    params = auth_params(cid, challenge)
    code = assert_code_redirect(follow_login(client, params), params["state"])
    token = exchange(client, cid, secret, code, verifier)
    assert token.status_code == 200, token.get_json()


def test_redirect_uri_query_parameters_are_kept(ctx, client):
    uri = "http://127.0.0.1:9/cb?tenant=a%20b"
    cid, _ = make_client(redirect_uris=[uri])
    make_user()
    params = auth_params(cid, pkce_pair()[1], redirect_uri=uri)
    response = follow_login(client, params)
    assert response.status_code == 302
    q = query(response.headers["Location"])
    assert set(q) == {"tenant", "code", "state", "iss"}
    assert q["tenant"] == "a b" and q["state"] == params["state"] and q["iss"] == ISSUER


def test_form_post_response_mode(rp, client):
    verifier, challenge = pkce_pair()
    params = auth_params(rp[0], challenge, response_mode="form_post", state="s&<\"'>1")
    response = follow_login(client, params)
    body = response.get_data(as_text=True)
    assert response.status_code == 200, body[:500]
    assert response.mimetype == "text/html"
    assert "Location" not in response.headers
    assert response.headers["Cache-Control"] == "no-store"

    actions = re.findall(r'<form method="post" action="([^"]*)">', body)
    assert [html.unescape(a) for a in actions] == [REDIRECT_URI]
    fields = {k: html.unescape(v) for k, v in form_fields(body).items()}
    assert set(fields) == {"code", "state", "iss"}
    assert fields["state"] == params["state"] and fields["iss"] == ISSUER and len(fields["code"]) >= 20

    # The page may only submit to the client's origin and only run our own static script:
    # no inline script at all.
    csp = dict(d.strip().split(" ", 1) for d in response.headers["Content-Security-Policy"].split(";"))
    assert csp["form-action"] == "http://127.0.0.1:9"
    assert csp["default-src"] == "'none'"
    assert csp["script-src"] == "'self'"
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", body, re.S)
    assert scripts == [(' src="/static/form_post.js"', "")]
    assert "submit()" in client.get("/static/form_post.js").get_data(as_text=True)

    # The code in the form is a real one.
    token = exchange(client, rp[0], rp[1], fields["code"], verifier)
    assert token.status_code == 200, token.get_json()


def test_form_post_error_response(rp, client):
    params = auth_params(rp[0], pkce_pair()[1], response_mode="form_post", scope="openid admin")
    response = authorize(client, params)
    body = response.get_data(as_text=True)
    assert response.status_code == 200 and "Location" not in response.headers
    fields = {k: html.unescape(v) for k, v in form_fields(body).items()}
    assert set(fields) == {"error", "error_description", "state", "iss"}
    assert (fields["error"], fields["state"], fields["iss"]) == ("invalid_scope", params["state"], ISSUER)


def test_form_post_with_query_in_redirect_uri(ctx, client):
    uri = "http://127.0.0.1:9/cb?tenant=t1"
    cid, _ = make_client(redirect_uris=[uri])
    make_user()
    params = auth_params(cid, pkce_pair()[1], redirect_uri=uri, response_mode="form_post")
    body = follow_login(client, params).get_data(as_text=True)
    actions = re.findall(r'<form method="post" action="([^"]*)">', body)
    assert [html.unescape(a) for a in actions] == [uri]
    assert set(form_fields(body)) == {"code", "state", "iss"}


# --- prompt, max_age, sessions ------------------------------------------------------------

def test_prompt_none_without_session(rp, client):
    params = auth_params(rp[0], pkce_pair()[1], prompt="none")
    assert_error_redirect(authorize(client, params), "login_required", params["state"])


def test_prompt_none_with_session_without_consent(rp, client):
    params = auth_params(rp[0], pkce_pair()[1])
    page = follow_login(client, params, consent=None)  # logged in, consent page left unanswered
    assert page.status_code == 200 and "Allow" in page.get_data(as_text=True)
    assert session_cookie(client)
    params = auth_params(rp[0], pkce_pair()[1], prompt="none")
    assert_error_redirect(authorize(client, params), "consent_required", params["state"])


def test_prompt_none_with_session_and_consent(rp, client):
    login_session(client, rp[0])
    params = auth_params(rp[0], pkce_pair()[1], prompt="none")
    response = authorize(client, params)
    assert_code_redirect(response, params["state"])


def test_prompt_login_forces_login_again(rp, client):
    login_session(client, rp[0])
    params = auth_params(rp[0], pkce_pair()[1], prompt="login")
    response = authorize(client, params)
    assert location_path(response) == "/login"
    # After logging in again there is no consent page (already granted) and no second login.
    assert_code_redirect(fill_login(client, response), params["state"])


def test_prompt_consent_shows_consent_again(rp, client):
    login_session(client, rp[0])
    params = auth_params(rp[0], pkce_pair()[1], prompt="consent")
    response = authorize(client, params)
    assert location_path(response) == "/consent"
    page = client.get(response.headers["Location"])
    assert page.status_code == 200 and 'value="allow"' in page.get_data(as_text=True)
    answer = client.post("/consent", data={**form_fields(page.get_data(as_text=True)), "decision": "allow"})
    assert_code_redirect(answer, params["state"])


def test_max_age_zero_forces_login_and_sets_auth_time(rp, client):
    cid, secret = rp
    login_session(client, cid)
    time.sleep(1.05)  # so that the new login has a later auth_time than the first
    verifier, challenge = pkce_pair()
    params = auth_params(cid, challenge, max_age="0", scope="openid")
    response = authorize(client, params)
    assert location_path(response) == "/login"
    before = int(time.time())
    code = assert_code_redirect(fill_login(client, response), params["state"])
    after = time.time()
    token = exchange(client, cid, secret, code, verifier)
    assert token.status_code == 200, token.get_json()
    claims = decode_id_token(client, token.get_json()["id_token"])
    assert before <= claims["auth_time"] <= after
    assert claims["nonce"] == params["nonce"]


def test_max_age_large_uses_session(rp, client):
    cid, secret = rp
    login_session(client, cid)
    first_login = time.time()
    verifier, challenge = pkce_pair()
    params = auth_params(cid, challenge, max_age="3600")
    code = assert_code_redirect(authorize(client, params), params["state"])
    token = exchange(client, cid, secret, code, verifier)
    claims = decode_id_token(client, token.get_json()["id_token"])
    assert claims["auth_time"] <= first_login


# --- the claims request parameter ---------------------------------------------------------

def test_claims_parameter_id_token(ctx, client):
    cid, secret = make_client(scope="openid")
    make_user()
    code, verifier, _ = get_code(client, cid, scope="openid", claims=json.dumps({"id_token": {"email": None}}))
    token = exchange(client, cid, secret, code, verifier).get_json()
    claims = decode_id_token(client, token["id_token"])
    assert claims["email"] == "alice@example.com"
    assert "name" not in claims and "email_verified" not in claims
    info = client.get("/userinfo", headers={"Authorization": "Bearer " + token["access_token"]})
    assert info.status_code == 200
    assert "email" not in info.get_json()  # asked for the ID token only


def test_claims_parameter_userinfo(ctx, client):
    cid, secret = make_client(scope="openid")
    make_user()
    code, verifier, _ = get_code(client, cid, scope="openid", claims=json.dumps({"userinfo": {"name": None}}))
    token = exchange(client, cid, secret, code, verifier).get_json()
    info = client.get("/userinfo", headers={"Authorization": "Bearer " + token["access_token"]})
    assert info.status_code == 200
    body = info.get_json()
    assert body["name"] == "Alice Example" and "email" not in body
    assert "name" not in decode_id_token(client, token["id_token"])


def test_scope_claims_in_id_token(rp, client):
    cid, secret = rp
    code, verifier, params = get_code(client, cid, scope="openid profile email")
    claims = decode_id_token(client, exchange(client, cid, secret, code, verifier).get_json()["id_token"])
    assert claims["iss"] == ISSUER and claims["aud"] == cid and claims["nonce"] == params["nonce"]
    assert claims["email"] == "alice@example.com" and claims["email_verified"] is True
    assert claims["name"] == "Alice Example"


# --- consent --------------------------------------------------------------------------------

def test_consent_remembered_and_asked_again_for_new_scope(rp, client):
    cid = rp[0]
    login_session(client, cid, scope="openid email")
    params = auth_params(cid, pkce_pair()[1], scope="openid email")
    assert_code_redirect(authorize(client, params), params["state"])
    # A subset of the granted scopes needs no consent either.
    params = auth_params(cid, pkce_pair()[1], scope="openid")
    assert_code_redirect(authorize(client, params), params["state"])
    # A new scope does.
    params = auth_params(cid, pkce_pair()[1], scope="openid email phone")
    response = authorize(client, params)
    assert location_path(response) == "/consent"
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "See your phone number" in page


def test_consent_page_names_client_and_scopes(rp, client):
    params = auth_params(rp[0], pkce_pair()[1], scope="openid email")
    page = follow_login(client, params, consent=None)
    body = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "Test RP" in body and "See your email address" in body
    assert "See your phone number" not in body


def test_skip_consent_client_never_shows_consent(ctx, client):
    cid, _ = make_client(skip_consent=True)
    make_user()
    params = auth_params(cid, pkce_pair()[1])
    response = authorize(client, params)
    assert location_path(response) == "/login"
    assert_code_redirect(fill_login(client, response), params["state"])
    params = auth_params(cid, pkce_pair()[1], prompt="consent")
    assert_code_redirect(authorize(client, params), params["state"])


# --- the login page -------------------------------------------------------------------------

@pytest.mark.parametrize("email,password", [
    ("alice@example.com", "wrong password"),
    ("nobody@example.com", PASSWORD),
    ("", ""),
])
def test_bad_credentials_show_the_form_again(rp, client, email, password):
    response = authorize(client, auth_params(rp[0], pkce_pair()[1]))
    answer = fill_login(client, response, email=email, password=password)
    body = answer.get_data(as_text=True)
    assert answer.status_code == 401
    assert "Location" not in answer.headers
    assert re.findall(r'<p class="error" role="alert">([^<]*)</p>', body) == [LOGIN_ERROR]
    assert 'name="password"' in body and 'name="csrf_token"' in body
    assert session_cookie(client) is None
    assert "Set-Cookie" not in answer.headers


def test_login_post_without_interaction_cookie_is_refused(rp, app, client):
    response = authorize(client, auth_params(rp[0], pkce_pair()[1]))
    page = client.get(response.headers["Location"])
    fields = form_fields(page.get_data(as_text=True))
    other = app.test_client()  # another browser: has the form values but not the cookie
    answer = other.post("/login", data={**fields, "email": "alice@example.com", "password": PASSWORD})
    assert_error_page(answer, "interaction_expired")
    assert "Set-Cookie" not in answer.headers
    assert other.get_cookie(SESSION_COOKIE) is None
    # The real browser can still finish.
    answer = client.post("/login", data={**fields, "email": "alice@example.com", "password": PASSWORD})
    assert answer.status_code == 302


@pytest.mark.parametrize("token", ["", "0" * 64, None])
def test_login_post_with_wrong_csrf_is_refused(rp, client, token):
    response = authorize(client, auth_params(rp[0], pkce_pair()[1]))
    page = client.get(response.headers["Location"])
    fields = form_fields(page.get_data(as_text=True))
    if token is None:
        del fields["csrf_token"]
    else:
        fields["csrf_token"] = token
    answer = client.post("/login", data={**fields, "email": "alice@example.com", "password": PASSWORD})
    assert_error_page(answer, "invalid_request")
    assert session_cookie(client) is None


def test_consent_post_with_wrong_csrf_is_refused(rp, client):
    params = auth_params(rp[0], pkce_pair()[1])
    page = follow_login(client, params, consent=None)
    fields = form_fields(page.get_data(as_text=True))
    answer = client.post("/consent", data={**fields, "csrf_token": "0" * 64, "decision": "allow"})
    assert_error_page(answer, "invalid_request")
    again = authorize(client, auth_params(rp[0], pkce_pair()[1], prompt="none"))
    assert query(again.headers["Location"])["error"] == "consent_required"


def test_session_cookie_attributes(rp, client):
    response = authorize(client, auth_params(rp[0], pkce_pair()[1]))
    answer = fill_login(client, response)
    cookies = [c for c in answer.headers.getlist("Set-Cookie") if c.startswith(SESSION_COOKIE + "=")]
    assert len(cookies) == 1
    attributes = {a.strip().split("=")[0].lower() for a in cookies[0].split(";")[1:]}
    assert {"httponly", "path", "max-age"} <= attributes
    assert "samesite=lax" in cookies[0].lower()
    assert "secure" not in attributes  # http issuer: a Secure cookie would never come back
    assert "domain" not in attributes  # host-only


def test_new_session_cookie_on_every_login(rp, app, client):
    cid = rp[0]
    client.set_cookie(SESSION_COOKIE, "planted-by-attacker")
    login_session(client, cid)
    first = session_cookie(client)
    assert first and first != "planted-by-attacker"
    response = authorize(client, auth_params(cid, pkce_pair()[1], prompt="login"))
    fill_login(client, response)
    second = session_cookie(client)
    assert second and second != first
    # The previous session ended with the new login.
    old = app.test_client()
    old.set_cookie(SESSION_COOKIE, first)
    params = auth_params(cid, pkce_pair()[1], prompt="none")
    assert_error_redirect(authorize(old, params), "login_required", params["state"])
    params = auth_params(cid, pkce_pair()[1], prompt="none")
    assert_code_redirect(authorize(client, params), params["state"])


def test_login_page_without_interaction_is_an_error(client):
    assert_error_page(client.get("/login?interaction=nope"), "interaction_expired")
    assert_error_page(client.get("/consent?interaction=nope"), "interaction_expired")


def test_inactive_session_user_must_log_in_again(rp, client):
    from datetime import UTC, datetime

    from idp.storage.models import User, db

    login_session(client, rp[0])
    user = db.session.query(User).one()
    user.disabled_at = datetime.now(UTC)
    db.session.commit()
    params = auth_params(rp[0], pkce_pair()[1], prompt="none")
    assert_error_redirect(authorize(client, params), "login_required", params["state"])
