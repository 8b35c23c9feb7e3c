"""Background IdP metadata refresh (issue 7): one node per IDP_SAML_METADATA_REFRESH_TTL
fetches every connection's metadata URL (a store lock), and a failed fetch or a copy that does
not parse keeps the last good metadata. A local HTTP server plays the IdP's metadata URL."""

from __future__ import annotations

import time

import pytest

from idp import background
from idp.federation import connections, metadata_refresh
from idp.services import backchannel
from idp.settings import Settings, SettingsError
from idp.storage.models import db

from .test_saml_admin import MetadataServer, run


@pytest.fixture()
def served(app, test_idp):
    server = MetadataServer(test_idp.metadata())
    assert run(app, "saml", "add", "--name", "corp", "--metadata-url", server.url).exit_code == 0
    add_file = run(app, "saml", "add", "--name", "from-file", "--metadata-file", str(_file(test_idp, server)))
    assert add_file.exit_code == 0, add_file.output
    server.hits = 0
    yield server
    server.httpd.shutdown()


def _file(test_idp, server):
    path = test_idp.dir / "md.xml"
    path.write_text(server.body.replace("https://idp.example.test/metadata", "https://other.example.test/md"))
    return path


def refresh(app, interval=3600):
    with app.app_context():
        return metadata_refresh.refresh_due(app.extensions["idp"].store, interval)


def current(app) -> tuple[str, str | None]:
    with app.app_context():
        conn = connections.get_connection("corp")
        return conn.idp_metadata_xml, conn.metadata_error


def release_lock(app):
    app.extensions["idp"].store.delete(metadata_refresh.LOCK)  # as if the interval had passed


def test_changed_metadata_is_picked_up_once_per_interval(app, served):
    served.body = served.body.replace("idp.example.test/sso", "idp.example.test/sso2")
    assert refresh(app) == ["corp"] and served.hits == 1  # only the connection with a URL
    assert "idp.example.test/sso2" in current(app)[0] and current(app)[1] is None
    # Other workers and nodes in the same interval: the store lock says it was done.
    assert refresh(app) is None and refresh(app) is None and served.hits == 1
    with app.app_context():  # and the next login uses the new SSO URL
        assert connections.parse_idp_metadata(current(app)[0])["singleSignOnService"]["url"].endswith("/sso2")


@pytest.mark.parametrize("broken", ["", "<not metadata", "<x>" * 10])
def test_failed_fetch_keeps_the_last_good_copy(app, served, broken):
    good, _ = current(app)
    served.body = broken  # "" answers HTTP 500
    assert refresh(app) == ["corp"]
    xml, error = current(app)
    assert xml == good and error
    shown = run(app, "saml", "show", "corp", "--json")
    assert error[:40] in shown.output
    release_lock(app)
    served.body = good
    assert refresh(app) == ["corp"] and current(app) == (good, None)


def test_unreachable_url_keeps_the_last_good_copy(app, served):
    good, _ = current(app)
    served.httpd.shutdown()
    served.httpd.server_close()
    assert refresh(app) == ["corp"]
    xml, error = current(app)
    assert xml == good and "cannot fetch" in error


def test_interval_zero_never_fetches_and_no_thread_in_tests(app, served):
    assert refresh(app, interval=0) is None and served.hits == 0
    metadata_refresh.ensure_refresher(app)  # Settings.testing: tests drive refresh_due themselves
    assert not background.is_running(metadata_refresh.THREAD)


def test_the_running_server_refreshes_in_the_background(app, served, monkeypatch):
    """Outside tests each process starts the thread at its first request."""
    served.body = served.body.replace("idp.example.test/sso", "idp.example.test/sso3")
    monkeypatch.setattr(metadata_refresh, "POLL_TTL", 0.05)
    monkeypatch.setattr(backchannel, "ensure_worker", lambda app: None)  # no other thread outlives the test
    idp = app.extensions["idp"]
    monkeypatch.setattr(idp, "settings", idp.settings.replace(testing=False))
    try:
        app.test_client().get("/healthz")
        deadline = time.monotonic() + 10
        while "sso3" not in current(app)[0] and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        metadata_refresh.stop_refresher()
    assert "idp.example.test/sso3" in current(app)[0] and served.hits == 1


def test_refresh_interval_setting():
    assert Settings.from_env({"IDP_SAML_METADATA_REFRESH_TTL": "600"}, dotenv=None).saml_metadata_refresh_ttl == 600
    assert Settings().saml_metadata_refresh_ttl == 3600
    with pytest.raises(SettingsError, match="IDP_SAML_METADATA_REFRESH_TTL"):
        Settings(saml_metadata_refresh_ttl=-1).validate()


def test_connection_deleted_meanwhile_is_skipped(app, served):
    with app.app_context():
        db.session.delete(connections.get_connection("corp"))
        db.session.commit()
    assert refresh(app) == []
