"""Plain functions that make test data with safe defaults, and drive the hosted pages."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from urllib.parse import parse_qs, urlsplit

from idp.services.clients import ClientSpec, create_client
from idp.services.users import create_user

REDIRECT_URI = "http://127.0.0.1:9/cb"
PASSWORD = "correct horse battery staple"


def make_client(**over) -> tuple[str, str | None]:
    """Register a client (inside an app context); returns (client_id, secret)."""
    spec = dict(name="Test RP", redirect_uris=[REDIRECT_URI],
                grant_types=["authorization_code", "refresh_token", "client_credentials"],
                scope="openid profile email phone address offline_access api:read")
    spec.update(over)
    if spec.get("public"):
        spec["grant_types"] = [g for g in spec["grant_types"] if g != "client_credentials"]
    client, secret = create_client(ClientSpec(**spec))
    return client.client_id, secret


def make_user(email: str = "alice@example.com", password: str = PASSWORD, **over):
    over.setdefault("name", "Alice Example")
    over.setdefault("verified", True)
    return create_user(email, password, **over)


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def auth_params(client_id: str, challenge: str | None = None, **over) -> dict:
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI,
              "scope": "openid profile email offline_access", "state": secrets.token_urlsafe(8),
              "nonce": secrets.token_urlsafe(8)}
    if challenge:
        params.update(code_challenge=challenge, code_challenge_method="S256")
    params.update(over)
    return {k: v for k, v in params.items() if v is not None}


def form_fields(html: str) -> dict:
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html))


def query(location: str) -> dict:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def follow_login(test_client, params: dict, email: str = "alice@example.com", password: str = PASSWORD,
                 consent: str | None = "allow"):
    """GET /authorize, fill the login form if shown, answer the consent form if shown.
    Returns the final response (normally the 302 to the client's redirect_uri)."""
    response = test_client.get("/authorize", query_string=params)
    for _ in range(4):
        location = response.headers.get("Location", "")
        if response.status_code != 302 or not location.startswith("/"):
            return response
        page = test_client.get(location)
        fields = form_fields(page.get_data(as_text=True))
        if location.startswith("/login"):
            response = test_client.post("/login", data={**fields, "email": email, "password": password})
        elif location.startswith("/consent"):
            if consent is None:
                return page
            response = test_client.post("/consent", data={**fields, "decision": consent})
        else:
            return page
    return response


def get_code(test_client, client_id: str, **over) -> tuple[str, str, dict]:
    """Log in through the hosted pages; returns (code, code_verifier, params)."""
    verifier, challenge = pkce_pair()
    params = auth_params(client_id, challenge, **over)
    response = follow_login(test_client, params)
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    q = query(response.headers["Location"])
    assert "code" in q, q
    return q["code"], verifier, params


def exchange(test_client, client_id: str, secret: str | None, code: str, verifier: str | None,
             redirect_uri: str = REDIRECT_URI):
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    if verifier:
        data["code_verifier"] = verifier
    if secret is None:
        data["client_id"] = client_id
        return test_client.post("/token", data=data)
    return test_client.post("/token", data=data, auth=(client_id, secret))
