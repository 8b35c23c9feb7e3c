"""Fixtures for the interop tests: a registered RP client and user, and a runner for rp.mjs.

The client and the user are created in-process (the `app` fixture shares the database and the
store with `live_server`); everything after that goes over HTTP to the live gunicorn server,
through client libraries we did not write.
"""

from __future__ import annotations

import json
import selectors
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REDIRECT_URI = "https://rp.interop.test/callback"
POST_LOGOUT_URI = "https://rp.interop.test/logged-out"
PASSWORD = "correct horse battery staple 42"


@dataclass
class RP:
    issuer: str
    client_id: str
    client_secret: str | None
    auth_method: str
    redirect_uri: str = REDIRECT_URI
    post_logout_redirect_uri: str = POST_LOGOUT_URI
    scope: str = "openid profile email offline_access"

    def base(self) -> dict:
        return {"issuer": self.issuer, "client_id": self.client_id, "client_secret": self.client_secret,
                "auth_method": self.auth_method}


@dataclass
class Person:
    email: str
    password: str
    name: str
    extra: dict = field(default_factory=dict)


@pytest.fixture()
def person(app) -> Person:
    from idp.services.users import create_user

    with app.app_context():
        create_user("ada@interop.test", PASSWORD, name="Ada Lovelace", verified=True)
    return Person("ada@interop.test", PASSWORD, "Ada Lovelace")


@pytest.fixture()
def register(app, live_server):
    """register(auth_method="client_secret_basic", name=..., scope=..., client_id=None) -> RP: a new
    client of the live server."""

    def _register(auth_method: str = "client_secret_basic", name: str = "Interop RP",
                  scope: str = "openid profile email offline_access", client_id: str | None = None) -> RP:
        from idp.services.clients import ClientSpec, create_client

        public = auth_method == "none"
        grants = ["authorization_code", "refresh_token"] + ([] if public else ["client_credentials"])
        with app.app_context():
            client, secret = create_client(ClientSpec(
                name=name, redirect_uris=[REDIRECT_URI], grant_types=grants, scope=scope,
                token_endpoint_auth_method=auth_method, public=public,
                post_logout_redirect_uris=[POST_LOGOUT_URI], client_id=client_id))
            client_id = client.client_id
        return RP(live_server.url, client_id, secret, auth_method, scope=scope)

    return _register


class NodeRP:
    """Talks to one `node rp.mjs serve` process (JSON lines). `node(command, **args)` returns the
    command's JSON result; an OAuth error from the server comes back as {"oauth_error": {...}};
    anything else (an ID token check failed, a crash) fails the test with the script's report."""

    TIMEOUT = 30

    def __init__(self, rp: RP):
        self.rp = rp
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(["node", str(HERE / "rp.mjs"), "serve"], cwd=HERE, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr)

    def __call__(self, command: str, **args) -> dict:
        self.proc.stdin.write(json.dumps({"command": command, "args": {**self.rp.base(), **args}}) + "\n")
        self.proc.stdin.flush()
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            ready = sel.select(self.TIMEOUT)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.stderr.seek(0)
            pytest.fail(f"rp.mjs {command}: no answer (exit {self.proc.poll()}):\n{self.stderr.read()}",
                        pytrace=False)
        answer = json.loads(line)
        if answer["status"] not in (0, 3):
            pytest.fail(f"rp.mjs {command} failed:\n{answer['output'].get('fatal')}", pytrace=False)
        return answer["output"]

    def ok(self, command: str, **args) -> dict:
        out = self(command, **args)
        assert "oauth_error" not in out, f"{command}: server returned an OAuth error: {out['oauth_error']}"
        return out

    def error(self, command: str, **args) -> dict:
        out = self(command, **args)
        assert "oauth_error" in out, f"{command}: expected an OAuth error, got success: {out}"
        return out["oauth_error"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()


@pytest.fixture()
def node_rp(node_ready):
    """node_rp(rp) -> NodeRP: an openid-client RP process for that client, stopped after the test."""
    started: list[NodeRP] = []

    def _start(rp: RP) -> NodeRP:
        started.append(NodeRP(rp))
        return started[-1]

    yield _start
    for node in started:
        node.close()


@pytest.fixture(scope="session")
def node_ready():
    """openid-client must be installed (`npm ci` in tests/interop; .ci/test.sh does it)."""
    if shutil.which("node") is None:
        pytest.fail("node is not on PATH: the openid-client interop tests need Node 20+", pytrace=False)
    if not (HERE / "node_modules" / "openid-client" / "package.json").exists():
        pytest.fail("openid-client is not installed: run `npm ci` in tests/interop", pytrace=False)
    return True

