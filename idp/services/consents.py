"""Remembered consent: the scopes a user granted to a client."""

from __future__ import annotations

from ..storage.models import Consent, db


def granted_scopes(user_id: str, client_id: str) -> set[str]:
    consent = db.session.get(Consent, (user_id, client_id))
    return set(consent.scope.split()) if consent else set()


def grant_consent(user_id: str, client_id: str, scopes: set[str]) -> None:
    consent = db.session.get(Consent, (user_id, client_id))
    if consent is None:
        db.session.add(Consent(user_id=user_id, client_id=client_id, scope=" ".join(sorted(scopes))))
    else:
        consent.scope = " ".join(sorted(set(consent.scope.split()) | scopes))
    db.session.commit()
