"""Fixtures. `make test` runs the suite twice (see .ci/test.sh):

* IDP_TEST_BACKEND=embedded: SQLite file + SQL-backed store (the default a user gets);
* IDP_TEST_BACKEND=services: PostgreSQL (IDP_TEST_DATABASE_URL) + Redis (IDP_TEST_REDIS_URL).

Tests build Settings directly and never change os.environ.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import text

from idp import create_app
from idp.settings import Settings
from idp.storage.models import db

ROOT = Path(__file__).resolve().parent.parent
TEST_DATABASE_URL = os.environ.get("IDP_TEST_DATABASE_URL") or None
TEST_REDIS_URL = os.environ.get("IDP_TEST_REDIS_URL") or None
BACKEND = os.environ.get("IDP_TEST_BACKEND", "services" if TEST_DATABASE_URL else "embedded")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("idp")


@pytest.fixture(scope="session")
def mailbox():
    """A real SMTP server on loopback; every app in the tests sends its mail here."""
    from tests.mailbox import Mailbox

    box = Mailbox().start()
    yield box
    box.stop()


@pytest.fixture(scope="session")
def settings(base_dir, mailbox) -> Settings:
    services = BACKEND == "services"
    return Settings(
        smtp_url=mailbox.url,
        issuer="http://127.0.0.1:5000",
        database_url=TEST_DATABASE_URL if services else f"sqlite:///{base_dir}/idp.db",
        redis_url=TEST_REDIS_URL if services else None,
        instance_path=str(base_dir / "instance"),
        keys_path=str(base_dir / "keys"),
        log_level="WARNING",
        testing=True,
    )


def _reset_schema() -> None:
    if db.engine.dialect.name == "postgresql":
        with db.engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))


@pytest.fixture(scope="session")
def app(settings):
    from flask_migrate import upgrade

    from idp.services.keys import ensure_signing_key
    from idp.settings import decode_kek

    app = create_app(settings)
    with app.app_context():
        _reset_schema()
        upgrade()
        ensure_signing_key(decode_kek(app.extensions["idp"].settings.key_encryption_key))
    return app


@pytest.fixture(autouse=True)
def _clean_state(request):
    """Each test starts with empty tables and an empty store (keys kept: they are slow to make)."""
    yield
    if "app" not in request.fixturenames:
        return
    app = request.getfixturevalue("app")
    with app.app_context():
        db.session.remove()
        keep = {"alembic_version", "signing_keys"}
        with db.engine.begin() as conn:
            for table in reversed(db.metadata.sorted_tables):
                if table.name not in keep:
                    conn.execute(table.delete())
        store = app.extensions["idp"].store
        store.clear()
    if "mailbox" in request.fixturenames:
        request.getfixturevalue("mailbox").clear()


@pytest.fixture()
def ctx(app):
    with app.app_context():
        yield app
        db.session.remove()


@pytest.fixture()
def client(app):
    return app.test_client()


class LiveServer:
    def __init__(self, url: str, process: subprocess.Popen, log: Path):
        self.url = url
        self.process = process
        self.log = log


def _serve(settings, base_dir, host: str):
    """gunicorn with 2 workers on a free loopback port, sharing the test database and store
    with the in-process `app`; the issuer is http://HOST:PORT."""
    port = free_port()
    url = f"http://{host}:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IDP_", "DATABASE_URL", "REDIS_URL"))}
    env.update({
        "IDP_ISSUER": url,
        "DATABASE_URL": settings.database_url,
        "IDP_INSTANCE_PATH": settings.instance_path,
        "IDP_KEYS_PATH": settings.keys_path,
        "IDP_LOG_LEVEL": "WARNING",
        "IDP_SMTP_URL": settings.smtp_url,
        # The servers share the store with the in-process tests, which drive the SAML metadata
        # refresh (and its once-per-interval store lock) themselves: no background refresher.
        "IDP_SAML_METADATA_REFRESH_TTL": "0",
    })
    if settings.redis_url:
        env["REDIS_URL"] = settings.redis_url
    log = base_dir / f"gunicorn-{port}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--chdir", str(ROOT), "-b", f"127.0.0.1:{port}", "-w", "2",
         "--timeout", "60", "wsgi:app"],
        env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            # Refused before gunicorn listens; a read timeout while the workers still boot.
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("gunicorn did not start:\n" + log.read_text()[-3000:])
        time.sleep(0.1)
    yield LiveServer(url, process, log)
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="session")
def live_server(app, settings, base_dir):
    """The real thing: gunicorn with 2 workers on a free loopback port, sharing the test
    database and store with the in-process `app` (so tests can register clients directly)."""
    yield from _serve(settings, base_dir, "127.0.0.1")


@pytest.fixture(scope="session")
def localhost_server(app, settings, base_dir):
    """Like live_server, with the issuer http://localhost:PORT: WebAuthn needs a host name as
    relying party id (an IP address is refused), and browsers treat localhost as secure."""
    yield from _serve(settings, base_dir, "localhost")
