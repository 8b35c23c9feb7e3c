from __future__ import annotations

import pytest

from tests.security.servers import LogoutReceiver


@pytest.fixture()
def rp_server():
    rp = LogoutReceiver()
    yield rp
    rp.stop()


@pytest.fixture()
def build_app(app, settings):
    """build_app(**changes): another app on the same database and store, with these settings
    changed (the schema and signing keys exist already: no migration needed)."""
    from idp import create_app
    from idp.storage.models import db

    built = []

    def build(**changes):
        built.append(create_app(settings.replace(**changes)))
        return built[-1]

    yield build
    for other in built:
        with other.app_context():
            db.session.remove()
            db.engine.dispose()
