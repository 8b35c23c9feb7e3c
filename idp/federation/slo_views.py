"""/saml/NAME/slo: SAML Single Logout in both directions (Profiles §4.4).

    IdP --LogoutRequest (Redirect: GET, or POST)--> /saml/NAME/slo
        validate (slo.py) -> end the sessions of that NameID [SessionIndex] (back-channel logout
        to their clients) -> 302 to the IdP's SLO service with our signed LogoutResponse
        refused (unsigned, forged, wrong Destination, replayed, ...): error page, audit, no answer

    our logout (protocol/logout.py, account page) ends the session first, then, when the
    session came from an IdP with an SLO service:
        store saml:logout:<hash(R)> = {connection, LogoutRequest ID, where to go next} (single use)
        page with Refresh -> IdP SLO (signed LogoutRequest, RelayState=R)
    IdP --LogoutResponse (Redirect)--> /saml/NAME/slo
        take the record -> check the response -> on to post_logout_redirect_uri (or the page)
        the local session stays ended whatever the IdP answers, or if it never does
"""

from __future__ import annotations

import secrets

from flask import make_response, redirect, render_template, request

from ..interaction.web import SESSION_COOKIE, clear_cookie, current_session
from ..protocol.params import malformed_reason
from ..storage.federation_models import SamlConnection
from ..storage.models import db
from . import upstream_sessions
from .routing import continue_page
from .views import _audit, _connection_or_404, _hashed, _idp, _kek, _LazyModule, bp, logger, saml

slo = _LazyModule(".slo")
LOGOUT_TTL = 600
MAX_RELAY_STATE = 512


@bp.route("/<name>/slo", methods=["GET", "POST"])
def single_logout(name: str):
    conn, missing = _connection_or_404(name)
    if missing:
        return missing
    post = request.method == "POST"
    if reason := malformed_reason(request, form_required=post):
        return logout_refused(conn, saml.SamlRefused("malformed", reason))
    params = (request.form if post else request.args).to_dict()
    if "SAMLRequest" in params:
        return _logout_request(conn, params, post)
    if "SAMLResponse" in params and not post:
        return _logout_response(conn, params)
    return logout_refused(conn, saml.SamlRefused("malformed", "no LogoutRequest or LogoutResponse"))


def _skew(conn) -> int:
    return saml.clock_skew(conn, _idp().settings.saml_clock_skew)


def _logout_request(conn, params: dict, post: bool):
    idp = _idp()
    try:
        message = slo.process_logout_request(conn, idp.settings.issuer, _kek(), idp.store, params,
                                             request.query_string.decode("ascii", "replace"), post, _skew(conn))
    except saml.SamlRefused as exc:
        return logout_refused(conn, exc)
    ended = upstream_sessions.end_sessions(idp.store, conn.id, message.name_id, message.session_indexes)
    # SAML Core §3.7.3.2: nothing to end is still a completed logout for this SP; the audit says so.
    _audit("saml_logout", "success" if ended else "failure", conn=conn,
           user_id=ended[0]["user_id"] if ended else None, reason=None if ended else "unknown_subject")
    if not slo.has_slo(conn):  # nowhere to answer (python3-saml would fall back to RelayState as a URL)
        return _logged_out(None)
    relay = params.get("RelayState")
    url = slo.logout_response_url(conn, idp.settings.issuer, _kek(), message.id,
                                  relay if relay and len(relay) <= MAX_RELAY_STATE else None)
    response = redirect(url)
    if current_session()[1] is None:  # this browser's session was one of them (or there was none)
        clear_cookie(response, SESSION_COOKIE)
    return response


def _logout_response(conn, params: dict):
    idp = _idp()
    relay = params.get("RelayState", "")
    pending = idp.store.take_json(_hashed("saml:logout:", relay)) if 0 < len(relay) <= 100 else None
    if pending is None or pending.get("connection") != conn.id:
        _audit("saml_logout", "failure", conn=conn, reason="unsolicited")
        return _logged_out(None)
    try:
        slo.process_logout_response(conn, idp.settings.issuer, _kek(), params,
                                    request.query_string.decode("ascii", "replace"), pending["request_id"],
                                    _skew(conn))
    except saml.SamlRefused as exc:
        # Our session ended before we asked the IdP; only the IdP's side is in doubt.
        logger.warning("saml logout response refused", extra={"fields": {"connection": conn.name,
                                                                         "reason": exc.reason}})
        _audit("saml_logout", "failure", conn=conn, reason=exc.reason)
    else:
        _audit("saml_logout", "success", conn=conn, reason="idp_confirmed")
    return _logged_out(pending.get("target"))


def _logged_out(target: str | None):
    if target:
        return redirect(target)
    return make_response(render_template("logged_out.html"))


def start_upstream_logout(session: dict | None, then: str | None):
    """After our side ended `session`: if it came from an IdP with an SLO service, a page that
    takes the browser there with a signed LogoutRequest, and back to `then` (a URL, or None for
    the logged-out page). None otherwise: the caller answers as usual."""
    idp = _idp()
    record = upstream_sessions.forget(idp.store, session["sid"]) if session else None
    conn = db.session.get(SamlConnection, record["connection"]) if record else None
    if conn is None or not slo.has_slo(conn):
        return None
    relay = secrets.token_urlsafe(32)
    try:
        url, request_id = slo.logout_request_url(conn, idp.settings.issuer, _kek(), record, relay)
    except Exception:  # the IdP not being told must not undo or fail our logout
        logger.exception("saml logout request not built")
        return None
    idp.store.set_json(_hashed("saml:logout:", relay), {"connection": conn.id, "request_id": request_id,
                                                        "target": then}, LOGOUT_TTL)
    return continue_page(url, "Signing out", f"Signing you out of {conn.name} too.")


def logout_refused(conn, exc, status: int = 400):
    """An incoming logout message we do not accept: a page, a log line, an audit event; no
    session ends and the IdP gets no answer (we cannot trust where it says to send one)."""
    logger.warning("saml logout refused", extra={"fields": {"connection": conn.name, "reason": exc.reason,
                                                            "detail": exc.detail[:300]}})
    _audit("saml_logout", "failure", conn=conn, reason=exc.reason)
    response = make_response(render_template("saml/logout_refused.html", connection=conn.name,
                                             reason=exc.reason), status)
    response.headers["Cache-Control"] = "no-store"
    return response
