"""Liveness and readiness probes, with really unreachable backends (closed loopback ports)."""

from __future__ import annotations

import pytest

from idp import create_app
from tests.conftest import free_port


def test_healthz_is_ok(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_is_ok_when_database_and_store_are_up(client):
    response = client.get("/readyz")
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"status": "ok"}


@pytest.fixture()
def closed_port() -> int:
    return free_port()  # bound and released: nothing listens there


def test_readyz_names_the_store_when_redis_is_unreachable(app, settings, closed_port):
    broken = create_app(settings.replace(redis_url=f"redis://127.0.0.1:{closed_port}/0"))
    response = broken.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json() == {"status": "unavailable", "failed": ["store"]}
    # Liveness does not depend on the backends.
    assert broken.test_client().get("/healthz").status_code == 200


def test_readyz_names_the_database_when_it_is_unreachable(app, settings, closed_port):
    broken = create_app(settings.replace(
        database_url=f"postgresql+psycopg://x:y@127.0.0.1:{closed_port}/nope"))
    response = broken.test_client().get("/readyz")
    assert response.status_code == 503
    failed = response.get_json()["failed"]
    # The embedded store is a table in that same database, so it is down too; Redis is not.
    assert failed == (["database"] if settings.redis_url else ["database", "store"])
    assert broken.test_client().get("/healthz").status_code == 200
