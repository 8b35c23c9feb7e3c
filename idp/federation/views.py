"""/saml/NAME/... endpoints: SP metadata, start of login, ACS, and the step back to /authorize.

    login page --"Sign in with NAME"--> GET /saml/NAME/login?interaction=I   (interaction cookie checked)
        store saml:relay:<hash(R)> = {connection, interaction I, AuthnRequest ID}   (single use)
        302 -> IdP SSO (HTTP-Redirect, signed AuthnRequest, RelayState=R)
    IdP --POST SAMLResponse, RelayState=R--> /saml/NAME/acs
        take the relay record (atomic) -> validate (saml.py) -> provision/link the account
        store saml:ticket:<hash(T)> = {user, acr, interaction I}; 303 -> /saml/continue?ticket=T
    GET /saml/continue  (a same-site GET: the SameSite=Lax cookies are back)
        take the ticket; the interaction cookie must be I (login CSRF); then, like a password
        login, idp/mfa/flow.first_factor_passed: the SSO session starts now, or after the
        second factor (--require-mfa, or the MFA policy); resume /authorize (consent, code)
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import logging
import secrets

from flask import Blueprint, current_app, make_response, redirect, render_template, request, url_for

from ..interaction.web import INTERACTION_COOKIE, get_cookie
from ..mfa import flow
from ..protocol import authorize
from ..settings import decode_kek
from ..storage.models import User, db
from .provisioning import ProvisioningRefused, provision_user


class _LazyModule:
    """python3-saml, lxml and xmlsec cost ~12 MB per worker: load them with the first SAML
    request, not at startup (most deployments never use SAML)."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr):
        return getattr(importlib.import_module(self._name, __package__), attr)


connections = _LazyModule(".connections")
saml = _LazyModule(".saml")
bp = Blueprint("saml", __name__, url_prefix="/saml")
logger = logging.getLogger("idp.federation")
TICKET_TTL = 120
DEFAULT_ACR = "urn:idp:acr:ext"


def _idp():
    return current_app.extensions["idp"]


def _kek() -> bytes:
    return decode_kek(_idp().settings.key_encryption_key)


def _hashed(prefix: str, value: str) -> str:
    return prefix + hashlib.sha256(value.encode()).hexdigest()


def _connection_or_404(name: str):
    conn = connections.find_connection(name)
    if conn is None:
        return None, authorize.error_page("not_found", "There is no such identity provider.", 404)
    return conn, None


@bp.route("/<name>/metadata", methods=["GET"])
def metadata(name: str):
    conn, missing = _connection_or_404(name)
    if missing:
        return missing
    body = saml.sp_metadata(conn, _idp().settings.issuer, _kek())
    response = make_response(body)
    response.mimetype = "application/samlmetadata+xml"
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response


@bp.route("/<name>/login", methods=["GET"])
def login(name: str):
    conn, missing = _connection_or_404(name)
    if missing:
        return missing
    interaction_id = request.args.get("interaction", "")
    cookie = get_cookie(INTERACTION_COOKIE) or ""
    idp = _idp()
    if (not interaction_id or len(interaction_id) > 64 or not hmac.compare_digest(cookie, interaction_id)
            or not idp.store.get_json("interaction:" + interaction_id)):
        return authorize.error_page("interaction_expired", "This sign-in request has expired or was opened in "
                                    "another browser. Go back to the application and start again.")
    relay = secrets.token_urlsafe(32)
    url, request_id = saml.authn_request_url(conn, idp.settings.issuer, _kek(), relay)
    idp.store.set_json(_hashed("saml:relay:", relay),
                       {"connection": conn.id, "interaction": interaction_id, "request_id": request_id},
                       idp.settings.interaction_ttl)
    return redirect(url)


@bp.route("/<name>/acs", methods=["POST"])
def acs(name: str):
    conn, missing = _connection_or_404(name)
    if missing:
        return missing
    if request.mimetype != "application/x-www-form-urlencoded":
        return refused(conn, saml.SamlRefused("malformed", f"content type {request.mimetype[:60]}"))
    idp = _idp()
    relay = request.form.get("RelayState", "")
    pending = None
    if relay and len(relay) <= 100:
        # Atomic take: a RelayState (and so an AuthnRequest ID) is accepted once.
        pending = idp.store.take_json(_hashed("saml:relay:", relay))
    if pending is not None and pending.get("connection") != conn.id:
        return refused(conn, saml.SamlRefused("wrong_connection", "RelayState of another connection"))
    if pending is None and not conn.allow_idp_initiated:
        return refused(conn, saml.SamlRefused("unsolicited", "no pending AuthnRequest for this RelayState"))
    try:
        identity = saml.process_response(conn, idp.settings.issuer, _kek(), idp.store,
                                         request.form.get("SAMLResponse"), pending and pending["request_id"],
                                         skew=saml.clock_skew(conn, idp.settings.saml_clock_skew))
        user = provision_user(conn, identity)
    except saml.SamlRefused as exc:
        return refused(conn, exc)
    except ProvisioningRefused as exc:
        return refused(conn, saml.SamlRefused("account_refused", str(exc)), message=str(exc), status=403)
    _audit("saml_login", "success", conn=conn, user_id=user.id)
    acr = identity.acr or DEFAULT_ACR
    upstream = {"connection": conn.id, "upstream": identity.upstream_session}
    if pending is None:  # IdP-initiated (allowed for this connection): a session, no application
        return flow.first_factor_passed(user, amr=["ext"], acr=acr, then={"endpoint": "account.account",
                                                                          "saml": upstream},
                                        require_mfa=conn.require_mfa)
    ticket = secrets.token_urlsafe(32)
    idp.store.set_json(_hashed("saml:ticket:", ticket),
                       {"user_id": user.id, "acr": acr, "interaction": pending["interaction"], "saml": upstream,
                        "require_mfa": conn.require_mfa}, TICKET_TTL)
    return redirect(url_for("saml.continue_login", ticket=ticket), code=303)


@bp.route("/continue", methods=["GET"])
def continue_login():
    idp = _idp()
    ticket = request.args.get("ticket", "")
    record = idp.store.take_json(_hashed("saml:ticket:", ticket)) if 0 < len(ticket) <= 100 else None
    cookie = get_cookie(INTERACTION_COOKIE) or ""
    interaction = None
    if record and hmac.compare_digest(cookie, record["interaction"]):
        interaction = idp.store.get_json("interaction:" + record["interaction"])
    user = db.session.get(User, record["user_id"]) if record else None
    if interaction is None or user is None or not user.active:
        return authorize.error_page("interaction_expired", "This sign-in request has expired or was opened in "
                                    "another browser. Go back to the application and start again.")
    # As after a password: the session starts now, or after the second factor when MFA applies
    # (the connection's --require-mfa, the user's factors, the client, roles: idp/mfa/flow.py).
    # then["saml"] lets single logout find the session later (upstream_sessions.session_started).
    return flow.first_factor_passed(user, amr=["ext"], acr=record["acr"],
                                    then={"interaction": record["interaction"], "saml": record["saml"]},
                                    require_mfa=record.get("require_mfa", False))


REASONS = {
    "unsolicited": "The identity provider sent a response this sign-in did not ask for (or one already used).",
    "replayed": "This response was already used.",
    "expired": "The response has expired. Sign in again.",
    "weak_algorithm": "The response is signed with an algorithm that is no longer accepted.",
    "invalid_signature": "The response's signature could not be verified.",
    "wrong_audience": "The response was meant for another service.",
    "wrong_destination": "The response was sent to another address.",
}


def refused(conn, exc: saml.SamlRefused, message: str | None = None, status: int = 400):
    """The one way out for a refused response: a clear page, no session, a log line and an
    audit event with the reason; the library's detail only in the log."""
    logger.warning("saml response refused", extra={"fields": {"connection": conn.name, "reason": exc.reason,
                                                              "detail": exc.detail[:300]}})
    _audit("saml_login", "failure", conn=conn, reason=exc.reason)
    text = message or REASONS.get(exc.reason, "The identity provider's response was not accepted.")
    response = make_response(render_template("saml/refused.html", connection=conn.name, reason=exc.reason,
                                             message=text), status)
    response.headers["Cache-Control"] = "no-store"
    return response


def _audit(event: str, result: str, *, conn, user_id: str | None = None, reason: str | None = None) -> None:
    """Record in the audit service when it exists (idp/services/audit.py, another feature)."""
    try:
        from ..services import audit
    except ImportError:
        return
    record = getattr(audit, "record_event", None)
    if record is None:
        return
    try:
        record(event, result, user_id=user_id, reason=f"{conn.name}:{reason or 'ok'}"[:64],
               ip=request.remote_addr, user_agent=request.headers.get("User-Agent"))
    except Exception:  # auditing must never turn a refusal into a 500
        db.session.rollback()
        logger.exception("audit event not recorded")
