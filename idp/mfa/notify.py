"""Mails and audit events of the MFA feature. Every change to a user's factors (enrolled,
renamed, removed, recovery codes regenerated or used) is audited and mailed to the user, so
that an attacker who got in cannot quietly add or remove a factor."""

from __future__ import annotations

import logging

from flask import current_app, request

from ..services import audit
from ..services.accounts import when
from ..services.mail import MailError, send_mail
from ..storage.models import User

logger = logging.getLogger("idp.mfa")


def notify(user: User, event: str, what: str, **context) -> None:
    """Audit `event` and mail the user that `what` happened (after the response)."""
    from ..interaction.accounts import in_background

    audit.record_event(event[:32], "success", user_id=user.id, ip=request.remote_addr,
                       user_agent=request.user_agent.string or None)
    settings = current_app.extensions["idp"].settings
    in_background(_send, settings, user.email, user.name, what, context.get("remaining"))


def _send(settings, email: str, name: str | None, what: str, remaining: int | None) -> None:
    send_mail(settings, email, "mfa_changed", name=name, what=what, when=when(), remaining=remaining)


def send_now(user: User, template: str, **context) -> None:
    """A mail the user is waiting for (an email code): sent during the request. A relay that
    is down is logged; the page still answers (the user can pick another method)."""
    try:
        send_mail(current_app.extensions["idp"].settings, user.email, template, name=user.name, **context)
    except MailError as exc:
        logger.warning("MFA mail %s not sent: %s", template, exc)
