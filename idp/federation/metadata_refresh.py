"""IdP metadata from a URL, fetched again in the background every IDP_SAML_METADATA_REFRESH_TTL.

Each server process runs a small thread that wakes every POLL_TTL seconds and tries to take the
store lock `lock:saml-metadata-refresh` for one interval (store `add`, atomic on both backends):

    lock taken by this process -> fetch every connection that has a metadata URL
                                  (connections.refresh_metadata: a failed fetch or a copy that
                                  does not parse keeps the last good metadata, error recorded)
    lock held elsewhere         -> nothing: another node refreshed during this interval

So the IdPs see one fetch per interval whatever the number of nodes and workers, and a login
never waits for a fetch. IDP_SAML_METADATA_REFRESH_TTL=0 turns it off (`idp saml
refresh-metadata NAME` still works). In tests (`Settings.testing`) no thread runs: the tests
call `refresh_due()`.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import select

from .. import background
from ..errors import InvalidInput
from ..storage.federation_models import SamlConnection
from ..storage.models import db

logger = logging.getLogger("idp.federation")

LOCK = "lock:saml-metadata-refresh"
POLL_TTL = 30


def refresh_due(store, interval_ttl: int) -> list[str] | None:
    """Refresh every connection with a metadata URL if no node did in this interval. Returns
    the names fetched (whether or not the fetch succeeded), or None when it was not this
    process's turn."""
    if interval_ttl <= 0 or not store.add(LOCK, b"1", interval_ttl):
        return None
    ids = list(db.session.scalars(select(SamlConnection.id).where(SamlConnection.metadata_url.is_not(None))))
    if not ids:
        return []
    from . import connections  # python3-saml only once there is something to parse

    names = []
    for conn_id in ids:
        conn = db.session.get(SamlConnection, conn_id)
        if conn is None:
            continue
        names.append(conn.name)
        try:
            if connections.refresh_metadata(conn):
                logger.info("saml metadata updated", extra={"fields": {"connection": conn.name}})
        except InvalidInput:
            pass  # recorded on the connection; the last good copy stays in use
    return names


THREAD = "saml-metadata-refresh"


def ensure_refresher(app) -> None:
    """Start this process's refresh thread if it is not running (idp/background.py)."""
    settings = app.extensions["idp"].settings
    if settings.testing or settings.saml_metadata_refresh_ttl <= 0:
        return
    background.ensure_thread(THREAD, _run, app)


def stop_refresher() -> None:
    """Stop this process's thread (tests; a server process just exits)."""
    background.stop_thread(THREAD)


def _run(stop: threading.Event, app) -> None:
    while not stop.wait(POLL_TTL):
        with app.app_context():
            try:
                idp = app.extensions["idp"]
                refresh_due(idp.store, idp.settings.saml_metadata_refresh_ttl)
            except Exception:  # keep the thread alive; the next interval tries again
                logger.exception("saml metadata refresh failed")
            finally:
                db.session.remove()
