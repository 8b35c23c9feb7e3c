"""OpenID Connect Back-Channel Logout 1.0: logout tokens to clients when a session ends.

    session ends (sessions._ended) --enqueue_logout--> one backchannel_deliveries row per client
        with a backchannel_logout_uri that got a code in that session (durable: committed first)
    a worker claims due rows (one conditional UPDATE each: exactly one worker gets a row)
        --POST logout_token=... (§2.5)--> 2xx: delivered
                                      --> network error, 5xx, 408, 429: retried after
                                          IDP_BACKCHANNEL_RETRY_TTL * 2**(attempts-1) seconds,
                                          failed after IDP_BACKCHANNEL_MAX_ATTEMPTS
                                      --> other 4xx (the RP rejected the token): failed

Why a thread per gunicorn worker rather than only "inline after the response": the row is
written in the request, and the worker's delivery thread is woken at once (so delivery is
as fast as inline), but the same thread also sweeps due retries every POLL_TTL seconds and
picks up rows left behind by a worker that died, without any extra process to run. In tests
(`Settings.testing`) no thread runs: the tests call `deliver_due()` themselves.

The logout token (§2.4) carries iss, aud, iat, exp, jti, sub, sid and the back-channel
event, no nonce, header `typ: logout+jwt` (§2.4, RFC 8725 §3.11), signed like ID tokens.
It is re-signed at each attempt (fresh iat/exp) with the same jti, so an RP that already
processed it can recognise the replay.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
import urllib.error
import urllib.request
from datetime import timedelta
from urllib.parse import urlencode

from flask import current_app
from sqlalchemy import func, or_, select, update

from .. import background
from ..storage.models import Client, db, utcnow
from ..storage.security_models import BackchannelDelivery
from .tokens import sign_jwt

logger = logging.getLogger("idp.backchannel")

EVENT = "http://schemas.openid.net/event/backchannel-logout"
TOKEN_TTL = 120
HTTP_TIMEOUT = 5
CLAIM_TTL = 60  # a claimed row is free again after this (its worker died mid-delivery)
POLL_TTL = 2
BATCH = 20


# --- enqueue ----------------------------------------------------------------------------------

def enqueue_logout(client_ids: list[str], *, sub: str, sid: str) -> list[BackchannelDelivery]:
    """Queue a logout token for each of these clients that registered a back-channel logout
    URI. Committed before returning; the delivery thread is woken."""
    rows = []
    for client in db.session.scalars(select(Client).where(Client.client_id.in_(list(client_ids)))):
        uri = (client.client_metadata or {}).get("backchannel_logout_uri")
        if not uri:
            continue
        # iss now: the issuer of the session's ID tokens (§2.4), whichever node delivers.
        claims = {"iss": current_app.extensions["idp"].settings.issuer, "aud": client.client_id, "sub": sub,
                  "sid": sid, "events": {EVENT: {}}, "jti": secrets.token_urlsafe(16)}
        rows.append(BackchannelDelivery(client_id=client.client_id, uri=uri, claims=claims))
    if rows:
        db.session.add_all(rows)
        db.session.commit()
        _wake.set()
    return rows


def logout_token(keyring, issuer: str, claims: dict) -> str:
    now = int(time.time())
    # Rows queued before iss was stored take this node's issuer.
    return sign_jwt(keyring, {"iss": issuer, **claims, "iat": now, "exp": now + TOKEN_TTL}, typ="logout+jwt")


# --- deliver ----------------------------------------------------------------------------------

def _due(now):
    return (BackchannelDelivery.status == "pending", BackchannelDelivery.next_attempt_at <= now,
            or_(BackchannelDelivery.claimed_until.is_(None), BackchannelDelivery.claimed_until <= now))


def claim_due(now=None, limit: int = BATCH, issuer: str | None = None) -> list[BackchannelDelivery]:
    """Rows due now, each claimed by one conditional UPDATE: of concurrent workers exactly one
    claims a given row. With `issuer`, only rows queued under that issuer: a node never signs a
    logout token in the name of another issuer sharing the database."""
    now = now or utcnow()
    due = db.session.execute(select(BackchannelDelivery.id, BackchannelDelivery.claims).where(*_due(now))
                             .order_by(BackchannelDelivery.next_attempt_at).limit(limit)).all()
    ids = [row_id for row_id, claims in due if issuer is None or (claims or {}).get("iss", issuer) == issuer]
    db.session.commit()
    claimed = []
    for row_id in ids:
        result = db.session.execute(update(BackchannelDelivery)
                                    .where(BackchannelDelivery.id == row_id, *_due(now))
                                    .values(claimed_until=now + timedelta(seconds=CLAIM_TTL)))
        db.session.commit()
        if result.rowcount == 1:
            claimed.append(db.session.get(BackchannelDelivery, row_id))
    return claimed


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # §2.8: the RP answers directly; a redirect is a failed delivery


_opener = urllib.request.build_opener(_NoRedirect)


def post_logout_token(uri: str, token: str) -> tuple[bool, bool, str]:
    """(delivered, worth retrying, short result text). Never raises."""
    request = urllib.request.Request(uri, data=urlencode({"logout_token": token}).encode(), method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded",
                                              "Cache-Control": "no-store"})
    try:
        with _opener.open(request, timeout=HTTP_TIMEOUT) as response:
            return True, False, f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        retry = exc.code >= 500 or exc.code in (408, 429) or 300 <= exc.code < 400
        return False, retry, f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return False, True, f"error: {exc.__class__.__name__}"


def deliver(row: BackchannelDelivery, keyring, issuer: str, retry_ttl: int, max_attempts: int) -> None:
    delivered, retry, result = post_logout_token(row.uri, logout_token(keyring, issuer, row.claims))
    now = utcnow()
    row.attempts += 1
    row.last_attempt_at = now
    row.last_result = result[:200]
    row.claimed_until = None
    if delivered:
        row.status = "delivered"
    elif not retry or row.attempts >= max_attempts:
        row.status = "failed"
    else:
        row.next_attempt_at = now + timedelta(seconds=retry_ttl * 2 ** min(row.attempts - 1, 16))
    db.session.commit()
    log = logger.info if delivered else logger.warning
    log("back-channel logout to client %s: %s (attempt %d, %s)", row.client_id, result, row.attempts, row.status)


def deliver_due(keyring, settings, now=None) -> int:
    """Claim and deliver every due row; returns how many were attempted."""
    rows = claim_due(now, issuer=settings.issuer)
    for row in rows:
        deliver(row, keyring, settings.issuer, settings.backchannel_retry_ttl, settings.backchannel_max_attempts)
    return len(rows)


def status(client_id: str) -> dict:
    """What `idp clients show` prints: counts by status and the newest attempt."""
    counts = dict(db.session.execute(select(BackchannelDelivery.status, func.count())
                                     .where(BackchannelDelivery.client_id == client_id)
                                     .group_by(BackchannelDelivery.status)).all())
    last = db.session.scalar(select(BackchannelDelivery).where(BackchannelDelivery.client_id == client_id,
                                                               BackchannelDelivery.last_attempt_at.is_not(None))
                             .order_by(BackchannelDelivery.last_attempt_at.desc()).limit(1))
    return {"pending": counts.get("pending", 0), "delivered": counts.get("delivered", 0),
            "failed": counts.get("failed", 0),
            "last_attempt_at": last.last_attempt_at.isoformat() if last else None,
            "last_status": last.status if last else None, "last_result": last.last_result if last else None}


# --- the delivery thread (one per process) ----------------------------------------------------

_wake = threading.Event()
THREAD = "backchannel-logout"


def ensure_worker(app) -> None:
    """Start this process's delivery thread if it is not running (idp/background.py). Not in
    tests: they call deliver_due() directly."""
    if app.extensions["idp"].settings.testing:
        return
    background.ensure_thread(THREAD, _run, app)


def _run(stop: threading.Event, app) -> None:
    while not stop.is_set():
        _wake.wait(POLL_TTL)
        _wake.clear()
        with app.app_context():
            try:
                idp = app.extensions["idp"]
                deliver_due(idp.keyring, idp.settings)
            except Exception:  # keep the thread alive; the row is retried after CLAIM_TTL
                logger.exception("back-channel logout sweep failed")
            finally:
                db.session.remove()
