"""Which local SSO sessions came from which upstream login: what single logout needs.

Kept in the store beside the sessions (idp/services/sessions.py), with the session's lifetime:

    saml-session:<sid>                       {connection, name, user_id, name_id, name_id_format,
                                              nq, spnq, session_index}   our logout -> LogoutRequest
    saml-subject:<connection id>:<H(NameID)>  {sid: {user_id, session_index}}   IdP's LogoutRequest
                                              -> the sessions to end (under a short store lock)

No python3-saml here: protocol/logout.py and the account page read this on every logout.
"""

from __future__ import annotations

import hashlib
import time

from ..services import sessions
from ..storage.store import Store

SESSION = "saml-session:"
SUBJECT = "saml-subject:"


def _subject_key(connection_id: int, name_id: str) -> str:
    return f"{SUBJECT}{connection_id}:" + hashlib.sha256(name_id.encode()).hexdigest()


def record(store: Store, session: dict, connection, upstream: dict) -> None:
    """Remember that `session` was started by this upstream login (NameID, SessionIndex)."""
    if not upstream.get("name_id"):
        return
    ttl = max(1.0, session["expires_at"] - time.time())
    store.set_json(SESSION + session["sid"], {"connection": connection.id, "name": connection.name,
                                              "user_id": session["user_id"], **upstream}, ttl)
    key = _subject_key(connection.id, upstream["name_id"])
    with sessions._locked(store, key):  # the per-user index's lock: one writer at a time
        index = store.get_json(key) or {}
        index[session["sid"]] = {"user_id": session["user_id"], "session_index": upstream.get("session_index")}
        store.set_json(key, index, max(ttl, store.ttl(key) or 0))


def session_started(session: dict, then: dict) -> None:
    """idp/mfa/flow.py establish() listener: a session started by a SAML login (then["saml"],
    put there by the ACS) is recorded, whether or not a second factor came between."""
    saml = then.get("saml") or {}
    if not (saml.get("upstream") or {}).get("name_id"):
        return
    from flask import current_app

    from ..storage.federation_models import SamlConnection
    from ..storage.models import db

    if (conn := db.session.get(SamlConnection, saml["connection"])) is not None:
        record(current_app.extensions["idp"].store, session, conn, saml["upstream"])


def load(store: Store, sid: str | None) -> dict | None:
    return store.get_json(SESSION + sid) if sid else None


def end_sessions(store: Store, connection_id: int, name_id: str, session_indexes: tuple[str, ...]) -> list[dict]:
    """End the sessions of this subject at this connection; only those with one of
    `session_indexes` when the IdP named any (SAML Core §3.7.3.2). Their clients get
    back-channel logout tokens (sessions._ended). Returns the sessions that were live."""
    key = _subject_key(connection_id, name_id)
    with sessions._locked(store, key):
        index = store.get_json(key) or {}
        chosen = {sid: entry for sid, entry in index.items()
                  if not session_indexes or entry.get("session_index") in session_indexes}
        for sid in chosen:
            del index[sid]
        if index:
            store.set_json(key, index, max(1.0, store.ttl(key) or 1.0))
        else:
            store.delete(key)
    ended = []
    for sid, entry in chosen.items():
        store.delete(SESSION + sid)
        if (session := sessions.end_session_by_sid(store, entry["user_id"], sid)) is not None:
            ended.append(session)
    return ended


def forget(store: Store, sid: str) -> dict | None:
    """Take the record of a session our side ended (the IdP is told next)."""
    return store.take_json(SESSION + sid)
