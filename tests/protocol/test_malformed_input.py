"""Malformed input at every endpoint a client or browser talks to: a 4xx with the RFC's
error (JSON at the back-channel endpoints, the HTML error page for browsers), never a 500,
a stack trace, a redirect to an unvalidated place or a new session.

Each case starts from a request that succeeds (test_baseline) and breaks one thing in it,
so a 4xx can only come from the breakage."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

import pytest

from tests.factories import (
    PASSWORD,
    auth_params,
    exchange,
    follow_login,
    form_fields,
    get_code,
    make_client,
    make_user,
    pkce_pair,
)

JSON_ENDPOINTS = {"/token", "/introspect", "/revoke", "/userinfo"}
NO_STORE_ENDPOINTS = {"/token", "/introspect", "/revoke"}
LOGOUT_URI = "http://127.0.0.1:9/bye"
SESSION_COOKIE = "idp_session"


@dataclass
class Target:
    """A well-formed request: `pairs` go in the query (GET) or a form body (POST); `key`
    is the parameter the malformations work on."""
    path: str
    method: str
    pairs: list
    key: str
    headers: dict = field(default_factory=dict)
    ok_status: int = 200


def _encode(pairs) -> bytes:
    """application/x-www-form-urlencoded, except that bytes values go in raw."""
    out = []
    for k, v in pairs:
        k = k if isinstance(k, bytes) else quote(k, safe="").encode()
        v = v if isinstance(v, bytes) else quote(v, safe="").encode()
        out.append(k + b"=" + v)
    return b"&".join(out)


def send(test_client, target: Target, pairs=None, *, method=None, body=None, content_type=None, headers=None):
    method = method or target.method
    pairs = target.pairs if pairs is None else pairs
    headers = {**target.headers, **(headers or {})}
    if method == "GET":
        # Raw bytes in QUERY_STRING exactly as a WSGI server passes them (latin-1 str).
        return test_client.open(target.path, method="GET", headers=headers,
                                environ_overrides={"QUERY_STRING": _encode(pairs).decode("latin-1")})
    if body is None:
        body = _encode(pairs)
        content_type = content_type or "application/x-www-form-urlencoded"
    return test_client.open(target.path, method=method, data=body, headers=headers,
                            content_type=content_type)


def _replace(pairs, key, value):
    return [(k, value if k == key else v) for k, v in pairs]


def _add(pairs, key, value):
    return [*pairs, (key, value)]


def _value(pairs, key):
    return dict(pairs)[key]


# Malformations of the parameters: (name, function(pairs, key) -> pairs), for GET and POST.
PARAM_CASES = {
    "duplicate-same-value": lambda p, k: _add(p, k, _value(p, k)),
    "duplicate-other-value": lambda p, k: _add(p, k, "other"),
    "duplicate-empty": lambda p, k: _add(p, k, ""),
    "100kb-value": lambda p, k: _replace(p, k, "a" * 100_000),
    "100kb-key": lambda p, k: _add(p, "k" * 100_000, "1"),
    "raw-invalid-utf8": lambda p, k: _replace(p, k, b"\xff\xfe\xfd"),
    "pct-invalid-utf8": lambda p, k: _replace(p, k, b"%FF%FEx"),
    "overlong-utf8": lambda p, k: _replace(p, k, b"%C0%AF"),
    "lone-surrogate": lambda p, k: _replace(p, k, b"%ED%A0%80"),
    "invalid-utf8-key": lambda p, k: _add(p, b"%FF%FE", "1"),
    "nul-in-value": lambda p, k: _replace(p, k, "a\x00b"),
    "raw-nul-in-value": lambda p, k: _replace(p, k, b"a\x00b"),
    "nul-in-key": lambda p, k: _add(p, "x\x00y", "1"),
}

# Malformations of the body itself: POST only. (name, function(target) -> send() kwargs)
BODY_CASES = {
    "json-body": lambda t: {"body": json.dumps(dict(t.pairs)), "content_type": "application/json"},
    "text-plain": lambda t: {"body": _encode(t.pairs), "content_type": "text/plain"},
    "form-with-json-type": lambda t: {"body": _encode(t.pairs), "content_type": "application/json"},
    "multipart": lambda t: {"body": dict(t.pairs), "content_type": "multipart/form-data"},
    "no-content-type": lambda t: {"body": _encode(t.pairs), "content_type": ""},
    "empty-body": lambda t: {"body": b"", "content_type": ""},
    "over-1mb": lambda t: {"body": _encode([*t.pairs, ("pad", "a" * 1_100_000)]),
                           "content_type": "application/x-www-form-urlencoded"},
    "over-1mb-declared": lambda t: {"body": b"x" * 1_048_577, "content_type": "application/x-www-form-urlencoded"},
}


# --- the targets -----------------------------------------------------------------------------

def _basic(cid, secret):
    import base64

    return {"Authorization": "Basic " + base64.b64encode(f"{cid}:{secret}".encode()).decode()}


def _interaction(test_client, cid):
    response = test_client.get("/authorize", query_string=auth_params(cid, pkce_pair()[1]))
    assert urlsplit(response.headers["Location"]).path == "/login"
    page = test_client.get(response.headers["Location"])
    return form_fields(page.get_data(as_text=True))


def build(name: str, test_client) -> Target:
    path, method = name.split(" ")[1], name.split(" ")[0]
    cid, secret = make_client(post_logout_redirect_uris=[LOGOUT_URI])
    make_user()
    if path == "/authorize":
        return Target(path, method, list(auth_params(cid, pkce_pair()[1]).items()), "state", ok_status=302)
    if path == "/token":
        return Target(path, method, [("grant_type", "client_credentials"), ("scope", "api:read")], "grant_type",
                      _basic(cid, secret))
    if path in ("/introspect", "/revoke"):
        return Target(path, method, [("token", "not-a-token-but-well-formed")], "token", _basic(cid, secret))
    if path == "/userinfo":
        code, verifier, _ = get_code(test_client, cid)
        access_token = exchange(test_client, cid, secret, code, verifier).get_json()["access_token"]
        if method == "GET":
            # GET carries the token in the header; the query has nothing the endpoint reads.
            return Target(path, method, [("x", "1")], "x", {"Authorization": "Bearer " + access_token})
        return Target(path, method, [("access_token", access_token)], "access_token")
    if path == "/logout":
        return Target(path, method, [("client_id", cid), ("post_logout_redirect_uri", LOGOUT_URI),
                                     ("state", "s1")], "state")
    if path == "/login":
        fields = _interaction(test_client, cid)
        if method == "GET":
            return Target(path, method, [("interaction", fields["interaction"])], "interaction")
        return Target(path, method, [*fields.items(), ("email", "alice@example.com"), ("password", PASSWORD)],
                      "email", ok_status=302)
    if path == "/consent":
        page = follow_login(test_client, auth_params(cid, pkce_pair()[1]), consent=None)
        fields = form_fields(page.get_data(as_text=True))
        assert set(fields) == {"csrf_token", "interaction"}
        if method == "GET":
            return Target(path, method, [("interaction", fields["interaction"])], "interaction")
        return Target(path, method, [*fields.items(), ("decision", "allow")], "decision", ok_status=302)
    raise AssertionError(name)


TARGETS = ["GET /authorize", "POST /authorize", "POST /token", "POST /introspect", "POST /revoke",
           "GET /userinfo", "POST /userinfo", "GET /logout", "POST /logout", "GET /login", "POST /login",
           "GET /consent", "POST /consent"]
POST_TARGETS = [t for t in TARGETS if t.startswith("POST")]


def assert_rejected(response, path: str, status: int | None = None, errors=("invalid_request",)) -> None:
    body = response.get_data(as_text=True)
    assert 400 <= response.status_code < 500, (response.status_code, body[:500])
    if status is not None:
        assert response.status_code == status, body[:500]
    assert "Traceback" not in body and "File \"" not in body
    assert "Location" not in response.headers, response.headers["Location"]
    assert not any(c.startswith(SESSION_COOKIE + "=") for c in response.headers.getlist("Set-Cookie"))
    if path in JSON_ENDPOINTS:
        assert response.mimetype == "application/json", body[:500]
        data = response.get_json()
        assert data["error"] in errors, data
        assert set(data) <= {"error", "error_description", "error_uri"}
        description = data.get("error_description", "")
        # RFC 6749 §5.2: printable ASCII without '"' and '\'.
        assert all(0x20 <= ord(c) <= 0x7E and c not in '"\\' for c in description), description
        assert len(body) < 2000  # never echoes the 100 KB value back
    else:
        assert response.mimetype == "text/html", body[:500]
        assert any(f"<strong>{e}</strong>" in body for e in errors), body[:1000]
        assert len(body) < 10_000
    if path in NO_STORE_ENDPOINTS:
        assert response.headers.get("Cache-Control") == "no-store", dict(response.headers)


# --- tests ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", TARGETS)
def test_baseline(ctx, client, name):
    """The well-formed request works, so the failures below come from the malformation."""
    target = build(name, client)
    response = send(client, target)
    assert response.status_code == target.ok_status, response.get_data(as_text=True)[:500]


@pytest.mark.parametrize("case", list(PARAM_CASES))
@pytest.mark.parametrize("name", TARGETS)
def test_malformed_parameters(ctx, client, name, case):
    target = build(name, client)
    response = send(client, target, PARAM_CASES[case](target.pairs, target.key))
    assert_rejected(response, target.path)


@pytest.mark.parametrize("case", list(BODY_CASES))
@pytest.mark.parametrize("name", POST_TARGETS)
def test_malformed_body(ctx, client, name, case):
    target = build(name, client)
    response = send(client, target, **BODY_CASES[case](target))
    # An empty POST to /userinfo carries no token at all: RFC 6750 §3.1, 401.
    errors = ("invalid_token",) if (name, case) == ("POST /userinfo", "empty-body") else ("invalid_request",)
    status = 413 if case.startswith("over-1mb") else None
    assert_rejected(response, target.path, status=status, errors=errors)


@pytest.mark.parametrize("path", ["/token", "/introspect", "/revoke"])
def test_get_on_post_only_endpoint(ctx, client, path):
    cid, secret = make_client()
    response = client.get(path, query_string={"token": "x", "grant_type": "client_credentials"},
                          headers=_basic(cid, secret))
    assert_rejected(response, path, status=405)
    assert set(response.headers["Allow"].split(", ")) == {"OPTIONS", "POST"}


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
@pytest.mark.parametrize("path", ["/authorize", "/token", "/userinfo", "/logout", "/login", "/consent"])
def test_other_methods(client, path, method):
    response = client.open(path, method=method, data=b"a=1", content_type="application/x-www-form-urlencoded")
    assert_rejected(response, path, status=405)


@pytest.mark.parametrize("header", [
    "Basic !!!notbase64",
    "Basic " + "QUFB",  # "AAA": no colon
    "Basic /w==",  # a lone 0xFF byte: not UTF-8
    "Basic " + "a" * 20_000,
    "Bearer",
    "Digest x=y",
    "Basic Og==",  # ":" empty id and secret
    "Basic \xe9t\xe9",  # not ASCII: base64 cannot even start
    "Basic YWxpY2U6w6k=",  # "alice:\u00e9": valid UTF-8, unknown client
])
@pytest.mark.parametrize("path", ["/token", "/introspect", "/revoke"])
def test_malformed_client_authentication(ctx, client, path, header):
    data = {"grant_type": "client_credentials"} if path == "/token" else {"token": "x"}
    response = client.post(path, data=data, headers={"Authorization": header})
    body = response.get_data(as_text=True)
    assert response.status_code in (400, 401), body[:500]
    assert response.get_json()["error"] in ("invalid_client", "invalid_request"), body
    assert "Traceback" not in body
    assert response.headers["Cache-Control"] == "no-store"
    if response.status_code == 401:
        assert response.headers.get("WWW-Authenticate", "").startswith("Basic")


@pytest.mark.parametrize("header", [
    "Bearer", "Bearer ", "Bearer a.b.c", "Bearer " + "a" * 100_000, "Bearer \x7f\x01", "Basic abc",
    "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "Bearer a b c",
])
def test_malformed_bearer_at_userinfo(ctx, client, header):
    response = client.get("/userinfo", headers={"Authorization": header})
    body = response.get_data(as_text=True)
    assert response.status_code in (400, 401), body[:500]
    assert response.get_json()["error"] in ("invalid_request", "invalid_token")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "Traceback" not in body and len(body) < 2000


def test_no_stack_trace_even_on_unexpected_paths(client):
    for path in ["/authorize/../token", "/%ff", "/.well-known/%00", "/static/../idp/settings.py"]:
        response = client.get(path)
        body = response.get_data(as_text=True)
        assert 400 <= response.status_code < 500, (path, response.status_code)
        assert "Traceback" not in body and "SECRET" not in body
