"""OpenID Connect RP-Initiated Logout 1.0 at /logout: the hint and client checks, the
confirmation form (CSRF-bound to the browser's session), the end of the SSO session and the
redirect only to an exactly registered post_logout_redirect_uri."""

from __future__ import annotations

import base64
import json
import re
import time

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from tests.factories import (
    REDIRECT_URI,
    auth_params,
    exchange,
    form_fields,
    get_code,
    make_client,
    make_user,
    pkce_pair,
    query,
)

ISSUER = "http://127.0.0.1:5000"
LOGOUT_URI = "http://127.0.0.1:9/bye"
SESSION_COOKIE = "idp_session"


@pytest.fixture()
def rp(ctx, client):
    """A client with a registered post_logout_redirect_uri, a logged-in browser and its ID token."""
    cid, secret = make_client(post_logout_redirect_uris=[LOGOUT_URI, "http://127.0.0.1:9/bye?from=idp"])
    make_user()
    code, verifier, _ = get_code(client, cid)
    tokens = exchange(client, cid, secret, code, verifier).get_json()
    return cid, secret, tokens["id_token"], tokens["access_token"]


def start(test_client, method="GET", **params):
    params = {k: v for k, v in params.items() if v is not None}
    if method == "GET":
        return test_client.get("/logout", query_string=params)
    return test_client.post("/logout", data=params)


def confirmation(response) -> dict:
    body = response.get_data(as_text=True)
    assert response.status_code == 200, body[:500]
    assert response.mimetype == "text/html"
    assert "Location" not in response.headers
    assert response.headers["Cache-Control"] == "no-store"
    fields = form_fields(body)
    assert set(fields) == {"csrf_token", "logout_id"}
    assert re.search(r'<button type="submit" name="logout" value="yes">', body)
    assert re.search(r'<button type="submit" name="logout" value="no"', body)
    return fields


def assert_error_page(response) -> None:
    body = response.get_data(as_text=True)
    assert response.status_code == 400, body[:500]
    assert "Location" not in response.headers
    assert "<strong>invalid_request</strong>" in body
    assert 'name="logout_id"' not in body


def logged_in(test_client, cid) -> bool:
    """prompt=none tells whether the browser still has an SSO session."""
    params = auth_params(cid, pkce_pair()[1], prompt="none")
    response = test_client.get("/authorize", query_string=params)
    assert response.status_code == 302
    q = query(response.headers["Location"])
    assert q["state"] == params["state"]
    if "code" in q:
        return True
    assert q["error"] == "login_required", q
    return False


def session_cookie(test_client) -> str | None:
    cookie = test_client.get_cookie(SESSION_COOKIE)
    return cookie.value if cookie else None


# --- the full flow ----------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["GET", "POST"])
def test_logout_with_hint_redirect_and_state(rp, client, app, method):
    cid, _, id_token, _ = rp
    old_cookie = session_cookie(client)
    assert old_cookie and logged_in(client, cid)
    page = start(client, method, id_token_hint=id_token, post_logout_redirect_uri=LOGOUT_URI, state="st 1&é/?")
    assert "Test RP" in page.get_data(as_text=True)
    fields = confirmation(page)
    assert logged_in(client, cid), "showing the form must not end the session"

    response = client.post("/logout", data={**fields, "logout": "yes"})
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.split("?")[0] == LOGOUT_URI
    assert query(location) == {"state": "st 1&é/?"}
    cleared = [c for c in response.headers.getlist("Set-Cookie") if c.startswith(SESSION_COOKIE + "=")]
    assert len(cleared) == 1 and ("Max-Age=0" in cleared[0] or "expires=Thu, 01 Jan 1970" in cleared[0])

    assert session_cookie(client) is None
    assert not logged_in(client, cid)
    # The session is gone at the IdP, not just the cookie in this browser.
    other = app.test_client()
    other.set_cookie(SESSION_COOKIE, old_cookie)
    assert not logged_in(other, cid)


def test_logout_without_state(rp, client):
    cid, _, id_token, _ = rp
    fields = confirmation(start(client, id_token_hint=id_token, post_logout_redirect_uri=LOGOUT_URI))
    response = client.post("/logout", data={**fields, "logout": "yes"})
    assert response.status_code == 302 and response.headers["Location"] == LOGOUT_URI


def test_registered_uri_with_query_keeps_it(rp, client):
    cid, _, id_token, _ = rp
    uri = "http://127.0.0.1:9/bye?from=idp"
    fields = confirmation(start(client, id_token_hint=id_token, post_logout_redirect_uri=uri, state="s"))
    response = client.post("/logout", data={**fields, "logout": "yes"})
    assert response.status_code == 302
    assert response.headers["Location"].split("?")[0] == LOGOUT_URI
    assert query(response.headers["Location"]) == {"from": "idp", "state": "s"}


def test_client_id_instead_of_hint(rp, client):
    cid, _, _, _ = rp
    fields = confirmation(start(client, client_id=cid, post_logout_redirect_uri=LOGOUT_URI, state="s"))
    response = client.post("/logout", data={**fields, "logout": "yes"})
    assert response.headers["Location"] == LOGOUT_URI + "?state=s"
    assert not logged_in(client, cid)


def test_expired_hint_is_still_a_hint(rp, client, ctx):
    # RP-Initiated Logout §2: the OP need not reject an expired ID token as a hint.
    from idp.services.tokens import sign_jwt

    cid = rp[0]
    now = int(time.time())
    hint = sign_jwt(ctx.extensions["idp"].keyring, {"iss": ISSUER, "sub": "x", "aud": cid, "iat": now - 7200,
                                                    "exp": now - 3600})
    fields = confirmation(start(client, id_token_hint=hint, post_logout_redirect_uri=LOGOUT_URI))
    assert client.post("/logout", data={**fields, "logout": "yes"}).headers["Location"] == LOGOUT_URI


def test_no_parameters_at_all(rp, client):
    cid = rp[0]
    fields = confirmation(start(client))
    response = client.post("/logout", data={**fields, "logout": "yes"})
    assert response.status_code == 200 and "Location" not in response.headers
    assert "You are signed out" in response.get_data(as_text=True)
    assert not logged_in(client, cid)


# --- no redirect to an unregistered URI --------------------------------------------------

@pytest.mark.parametrize("uri", [
    "http://evil.example/bye",
    LOGOUT_URI + "/",
    "http://127.0.0.1:9/BYE",
    LOGOUT_URI + "?x=1",
    LOGOUT_URI + "#f",
    REDIRECT_URI,  # a registered redirect_uri is not a post-logout one
])
def test_unregistered_post_logout_redirect_uri(rp, client, uri):
    cid, _, id_token, _ = rp
    fields = confirmation(start(client, id_token_hint=id_token, post_logout_redirect_uri=uri, state="s"))
    response = client.post("/logout", data={**fields, "logout": "yes"})
    body = response.get_data(as_text=True)
    assert response.status_code == 200 and "Location" not in response.headers
    assert "You are signed out" in body and "evil" not in body
    assert not logged_in(client, cid)


def test_uri_without_hint_or_client_id_is_not_followed(rp, client):
    fields = confirmation(start(client, post_logout_redirect_uri=LOGOUT_URI, state="s"))
    response = client.post("/logout", data={**fields, "logout": "yes"})
    assert response.status_code == 200 and "Location" not in response.headers


# --- bad hints -----------------------------------------------------------------------------

def test_forged_hint_signed_by_another_key(rp, client):
    cid, _, id_token, _ = rp
    forger = RSAKey.generate_key(2048)
    header, payload = (json.loads(base64.urlsafe_b64decode(part + "==")) for part in id_token.split(".")[:2])
    assert header["kid"] and payload["aud"] == cid
    forged = jwt.encode(header, payload, forger, algorithms=["RS256"])  # same kid and claims, other key
    assert_error_page(start(client, id_token_hint=forged, post_logout_redirect_uri=LOGOUT_URI, state="s"))
    assert logged_in(client, cid)


@pytest.mark.parametrize("hint", [
    "garbage",
    "a.b.c",
    "eyJhbGciOiJub25lIn0.eyJpc3MiOiJodHRwOi8vMTI3LjAuMC4xOjUwMDAifQ.",  # alg none
    "x" * 9000,
])
def test_malformed_hint(rp, client, hint):
    assert_error_page(start(client, id_token_hint=hint, post_logout_redirect_uri=LOGOUT_URI))


def test_tampered_hint(rp, client):
    _, _, id_token, _ = rp
    header, payload, signature = id_token.split(".")
    tampered = ".".join([header, payload[:-4] + ("AAAA" if payload[-4:] != "AAAA" else "BBBB"), signature])
    assert_error_page(start(client, id_token_hint=tampered, post_logout_redirect_uri=LOGOUT_URI))


def test_hint_from_another_issuer(rp, client, ctx):
    from idp.services.tokens import sign_jwt

    now = int(time.time())
    hint = sign_jwt(ctx.extensions["idp"].keyring, {"iss": "https://other.example", "sub": "x", "aud": rp[0],
                                                    "iat": now, "exp": now + 60})
    assert_error_page(start(client, id_token_hint=hint, post_logout_redirect_uri=LOGOUT_URI))


def test_access_token_is_not_an_id_token_hint(rp, client):
    _, _, _, access_token = rp
    assert_error_page(start(client, id_token_hint=access_token, post_logout_redirect_uri=LOGOUT_URI))


def test_client_id_must_match_hint_audience(rp, client):
    cid, _, id_token, _ = rp
    other, _ = make_client(name="Other RP", post_logout_redirect_uris=[LOGOUT_URI])
    response = start(client, id_token_hint=id_token, client_id=other, post_logout_redirect_uri=LOGOUT_URI)
    assert_error_page(response)
    assert logged_in(client, cid)


# --- the confirmation ------------------------------------------------------------------------

def test_no_keeps_the_session(rp, client):
    cid, _, id_token, _ = rp
    cookie = session_cookie(client)
    fields = confirmation(start(client, id_token_hint=id_token, post_logout_redirect_uri=LOGOUT_URI, state="s"))
    response = client.post("/logout", data={**fields, "logout": "no"})
    assert response.status_code == 302 and response.headers["Location"] == LOGOUT_URI + "?state=s"
    assert not any(c.startswith(SESSION_COOKIE + "=") for c in response.headers.getlist("Set-Cookie"))
    assert session_cookie(client) == cookie
    assert logged_in(client, cid)


@pytest.mark.parametrize("csrf", ["", "0" * 64, None])
def test_confirmation_without_right_csrf_is_refused(rp, client, csrf):
    cid, _, id_token, _ = rp
    fields = confirmation(start(client, id_token_hint=id_token, post_logout_redirect_uri=LOGOUT_URI))
    if csrf is None:
        del fields["csrf_token"]
    else:
        fields["csrf_token"] = csrf
    assert_error_page(client.post("/logout", data={**fields, "logout": "yes"}))
    assert logged_in(client, cid)


def test_confirmation_form_from_another_browser_is_refused(rp, client, app):
    """The CSRF token is bound to the session cookie: a page that auto-posts a logout form
    it obtained elsewhere cannot log this browser out."""
    cid, _, id_token, _ = rp
    attacker = app.test_client()
    fields = confirmation(start(attacker, id_token_hint=id_token, post_logout_redirect_uri=LOGOUT_URI))
    assert_error_page(client.post("/logout", data={**fields, "logout": "yes"}))
    assert logged_in(client, cid)


def test_confirmation_is_single_use(rp, client):
    cid, _, id_token, _ = rp
    fields = confirmation(start(client, id_token_hint=id_token, post_logout_redirect_uri=LOGOUT_URI))
    assert client.post("/logout", data={**fields, "logout": "no"}).status_code == 302
    assert_error_page(client.post("/logout", data={**fields, "logout": "yes"}))
    assert logged_in(client, cid)


def test_unknown_logout_id_is_refused(rp, client):
    cid, _, id_token, _ = rp
    fields = confirmation(start(client, id_token_hint=id_token))
    fields["logout_id"] = "x" * 32
    assert_error_page(client.post("/logout", data={**fields, "logout": "yes"}))
    assert logged_in(client, cid)


def test_confirmation_page_lets_its_form_redirect_only_to_the_validated_uri(rp, client):
    """CSP form-action governs the redirect after the POST (Chromium enforces it): the page
    allows the registered post_logout_redirect_uri's origin, and no other."""
    cid, _, id_token, _ = rp
    page = start(client, id_token_hint=id_token, post_logout_redirect_uri=LOGOUT_URI, state="s")
    csp = dict(d.strip().split(" ", 1) for d in page.headers["Content-Security-Policy"].split(";"))
    assert csp["form-action"] == "'self' http://127.0.0.1:9"
    unvalidated = start(client, id_token_hint=id_token, post_logout_redirect_uri="http://127.0.0.1:8/else")
    csp = dict(d.strip().split(" ", 1) for d in unvalidated.headers["Content-Security-Policy"].split(";"))
    assert csp["form-action"] == "'self'"
