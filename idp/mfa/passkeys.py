"""Passkeys: WebAuthn registration and authentication ceremonies (W3C WebAuthn Level 3 §7),
verified by the `webauthn` library (py_webauthn).

    registration    account page --begin_registration (challenge in the store, bound to the SSO
                    session, TTL)--> navigator.credentials.create() --finish_registration (challenge
                    taken once; rp id, origin, flags, attestation "none")--> webauthn_credentials row
    authentication  login --begin_authentication (challenge bound to the interaction or the pending
                    MFA step)--> navigator.credentials.get() --finish_authentication (taken once;
                    signature, rp id, origin, user handle, sign count)--> the credential (and user)

The relying party is derived from IDP_ISSUER: rp id = its host name, origin = scheme://host[:port]
(§5.4.2: the rp id is the origin's effective domain). An IP literal is not a valid rp id (§5.1.3,
browsers refuse it), so with an issuer such as http://127.0.0.1:5000 passkeys are unavailable;
use http://localhost:5000 on one machine (browsers treat localhost as a secure context).

Challenges are single use: the verify step takes them from the store in one atomic operation
(`Store.take`), so a replayed response, or two concurrent ones, find no challenge. A starting
ceremony replaces an older one of the same binding.

amr (RFC 8176 §2): "hwk" when the key is bound to its authenticator, "swk" when it can leave it.
The rule reads the signed BE (backup eligible) flag of the authenticator data (§6.1.3): a
credential that is not backup eligible cannot be copied to another device ("single-device",
a security key or a TPM/secure-enclave key) -> "hwk"; a backup-eligible one is a synced passkey
whose key also lives in a cloud keychain -> "swk". The browser-reported authenticator
attachment is not signed, so it is shown but never decides.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from ..errors import Conflict, IdpError, InvalidInput, NotFound
from ..jsonsafe import loads_untrusted
from ..storage.models import User, db, utcnow
from ..storage.passkey_models import WebAuthnCredential
from ..storage.store import Store

logger = logging.getLogger("idp.passkeys")

CHALLENGE_TTL = 300  # seconds: the ceremony's timeout (below) plus time to send the answer
TIMEOUT_MS = 120_000  # §5.4 timeout hint for the browser
MAX_PASSKEYS = 20  # per user: keeps the allowCredentials list and the account page small
MAX_NAME_LENGTH = 64
USER_HANDLE_BYTES = 32  # §5.4.3: at most 64 bytes, random, no personal data


class PasskeysUnavailable(IdpError):
    """The issuer's host cannot be a WebAuthn relying party id (an IP address)."""


class PasskeyRejected(IdpError):
    """The browser's answer failed verification, or its challenge expired or was used."""


@dataclass(frozen=True)
class RelyingParty:
    rp_id: str
    origin: str
    name: str


def relying_party(issuer: str) -> RelyingParty:
    """The WebAuthn relying party of this issuer. Raises PasskeysUnavailable for an IP host."""
    parts = urlsplit(issuer)
    host = (parts.hostname or "").lower()
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        raise PasskeysUnavailable("passkeys need an issuer with a host name (for example "
                                  "http://localhost:5000), not an IP address")
    if not host:
        raise PasskeysUnavailable("the issuer has no host")
    return RelyingParty(rp_id=host, origin=f"{parts.scheme}://{parts.netloc.lower()}", name=host)


def amr_for(credential: WebAuthnCredential) -> str:
    """RFC 8176 amr value of a passkey: "hwk" (device-bound) or "swk" (synced). See the module doc."""
    return "swk" if credential.backup_eligible else "hwk"


# --- the user's passkeys ------------------------------------------------------------------------

def list_passkeys(user_id: str) -> list[WebAuthnCredential]:
    return list(db.session.scalars(select(WebAuthnCredential).where(WebAuthnCredential.user_id == user_id)
                                   .order_by(WebAuthnCredential.created_at)))


def count_passkeys(user_id: str) -> int:
    return db.session.scalar(select(func.count()).select_from(WebAuthnCredential)
                             .where(WebAuthnCredential.user_id == user_id)) or 0


def get_passkey(user_id: str, passkey_id: str) -> WebAuthnCredential:
    """Raises NotFound unless the passkey exists and belongs to the user. Read from the
    database, not the session's identity map: a concurrent removal must show."""
    row = db.session.get(WebAuthnCredential, passkey_id[:36], populate_existing=True) if passkey_id else None
    if row is None or row.user_id != user_id:
        raise NotFound("no such passkey")
    return row


def check_name(name: str) -> str:
    """The name trimmed, whitespace collapsed; raises InvalidInput when empty or too long."""
    name = " ".join((name or "").split())
    if not name:
        raise InvalidInput("Enter a name for the passkey.")
    if len(name) > MAX_NAME_LENGTH or any(ord(c) < 32 for c in name):
        raise InvalidInput(f"Use at most {MAX_NAME_LENGTH} printable characters.")
    return name


def rename_passkey(user_id: str, passkey_id: str, name: str) -> tuple[WebAuthnCredential, str]:
    """Returns (row, old name). Raises NotFound, InvalidInput."""
    row = get_passkey(user_id, passkey_id)
    old, row.name = row.name, check_name(name)
    db.session.commit()
    return row, old


def remove_passkey(user_id: str, passkey_id: str) -> WebAuthnCredential:
    """Delete one passkey of the user (raises NotFound). The caller decides beforehand
    whether it was the last factor and re-authenticated the user."""
    row = get_passkey(user_id, passkey_id)
    db.session.delete(row)
    db.session.commit()
    return row


# --- registration (§7.1) --------------------------------------------------------------------------

def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _webauthn():
    """py_webauthn and what it pulls in (cbor2, pyOpenSSL: about 6 MB per worker) load at the
    first passkey ceremony, not in every worker at start."""
    import webauthn
    from webauthn.helpers import exceptions, structs

    return webauthn, exceptions, structs


def _user_handle(user_id: str) -> bytes:
    existing = db.session.scalar(select(WebAuthnCredential.user_handle)
                                 .where(WebAuthnCredential.user_id == user_id).limit(1))
    return existing or secrets.token_bytes(USER_HANDLE_BYTES)


def begin_registration(store: Store, rp: RelyingParty, user: User, binding: str) -> str:
    """Options for navigator.credentials.create(), as JSON. The challenge is kept for
    CHALLENGE_TTL seconds under `binding` (the SSO session id). Raises Conflict past MAX_PASSKEYS."""
    webauthn, webauthn_errors, structs = _webauthn()
    existing = list_passkeys(user.id)
    if len(existing) >= MAX_PASSKEYS:
        raise Conflict(f"You can register at most {MAX_PASSKEYS} passkeys. Remove one first.")
    handle = _user_handle(user.id)
    options = webauthn.generate_registration_options(
        rp_id=rp.rp_id, rp_name=rp.name, user_name=user.email, user_id=handle,
        user_display_name=user.name or user.email, timeout=TIMEOUT_MS,
        # Discoverable ("resident") so that the passkey also works without typing the email;
        # user verification preferred: with it, a passwordless sign-in is multi-factor.
        authenticator_selection=structs.AuthenticatorSelectionCriteria(
            resident_key=structs.ResidentKeyRequirement.REQUIRED, user_verification=structs.UserVerificationRequirement.PREFERRED),
        # §5.4.3 excludeCredentials: the same authenticator is not registered twice.
        exclude_credentials=[structs.PublicKeyCredentialDescriptor(id=_unb64(c.credential_id)) for c in existing])
    store.set_json("passkey-register:" + binding, {"challenge": _b64(options.challenge), "user_id": user.id,
                                                   "user_handle": _b64(handle)}, CHALLENGE_TTL)
    return webauthn.options_to_json(options)


def finish_registration(store: Store, rp: RelyingParty, user: User, binding: str, credential: dict,
                        name: str | None, attachment_hint: str | None = None) -> WebAuthnCredential:
    """Verify the browser's answer and store the passkey. Raises PasskeyRejected (expired,
    replayed or invalid answer), Conflict (already registered), InvalidInput (bad name)."""
    webauthn, webauthn_errors, structs = _webauthn()
    name = check_name(name) if name and name.strip() else None
    state = store.take_json("passkey-register:" + binding)
    if not state or state.get("user_id") != user.id:
        raise PasskeyRejected("The passkey request expired. Try again.")
    try:
        verified = webauthn.verify_registration_response(
            credential=credential, expected_challenge=_unb64(state["challenge"]), expected_rp_id=rp.rp_id,
            expected_origin=rp.origin)
    except (webauthn_errors.WebAuthnException, ValueError, TypeError, KeyError) as exc:
        # The library's reason (origin, rp id, flags ...) is for the operator, not the page.
        logger.info("passkey registration refused for user %s: %s", user.id, exc)
        raise PasskeyRejected("The passkey could not be verified.") from exc
    transports = credential.get("response", {}).get("transports")
    row = WebAuthnCredential(
        user_id=user.id, credential_id=_b64(verified.credential_id), user_handle=_unb64(state["user_handle"]),
        public_key=verified.credential_public_key, sign_count=verified.sign_count,
        transports=[t for t in transports if isinstance(t, str)][:8] if isinstance(transports, list) else [],
        aaguid=verified.aaguid, attachment=attachment_hint if attachment_hint in ("platform", "cross-platform")
        else None, backup_eligible=verified.credential_device_type == structs.CredentialDeviceType.MULTI_DEVICE,
        backed_up=verified.credential_backed_up, name=name or _default_name(user.id))
    db.session.add(row)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise Conflict("This passkey is already registered.") from None
    return row


def _default_name(user_id: str) -> str:
    return f"Passkey {count_passkeys(user_id) + 1}"


# --- authentication (§7.2) ------------------------------------------------------------------------

def begin_authentication(store: Store, rp: RelyingParty, binding: str, user: User | None = None) -> str:
    """Options for navigator.credentials.get(), as JSON. With `user` (second factor), the
    user's passkeys are listed in allowCredentials; without (passwordless), the browser offers
    the discoverable ones and user verification is required."""
    webauthn, webauthn_errors, structs = _webauthn()
    allow = [structs.PublicKeyCredentialDescriptor(id=_unb64(c.credential_id)) for c in list_passkeys(user.id)] if user else []
    options = webauthn.generate_authentication_options(
        rp_id=rp.rp_id, timeout=TIMEOUT_MS, allow_credentials=allow,
        user_verification=structs.UserVerificationRequirement.PREFERRED if user else structs.UserVerificationRequirement.REQUIRED)
    store.set_json("passkey-auth:" + binding, {"challenge": _b64(options.challenge),
                                               "user_id": user.id if user else None}, CHALLENGE_TTL)
    return webauthn.options_to_json(options)


@dataclass(frozen=True)
class Assertion:
    credential: WebAuthnCredential
    user_verified: bool

    @property
    def amr(self) -> list[str]:
        """amr of this passkey use: hwk/swk, plus "mfa" when the authenticator verified the
        user (PIN or biometric: something known or inherent besides the key held)."""
        return [amr_for(self.credential)] + (["mfa"] if self.user_verified else [])


def finish_authentication(store: Store, rp: RelyingParty, binding: str, credential: dict,
                          user: User | None = None) -> Assertion:
    """Verify a navigator.credentials.get() answer against the challenge of `binding`.
    With `user`, the passkey must be one of theirs; without, the response's user handle must
    match the passkey's (§7.2 step 6) and the user must have been verified. Raises
    PasskeyRejected. Atomic: the challenge is taken once; the sign count only moves forward."""
    webauthn, webauthn_errors, structs = _webauthn()
    state = store.take_json("passkey-auth:" + binding)
    if not state or state.get("user_id") != (user.id if user else None):
        raise PasskeyRejected("The passkey request expired. Try again.")
    credential_id = credential.get("id") if isinstance(credential, dict) else None
    row = db.session.scalar(select(WebAuthnCredential).where(WebAuthnCredential.credential_id == credential_id)) \
        if isinstance(credential_id, str) and 0 < len(credential_id) <= 1400 else None
    if row is None or (user is not None and row.user_id != user.id):
        raise PasskeyRejected("This passkey is not registered for this account.")
    if user is None and not _handle_matches(credential, row.user_handle):
        raise PasskeyRejected("This passkey is not registered for this account.")
    try:
        verified = webauthn.verify_authentication_response(
            credential=credential, expected_challenge=_unb64(state["challenge"]), expected_rp_id=rp.rp_id,
            expected_origin=rp.origin, credential_public_key=row.public_key,
            credential_current_sign_count=row.sign_count, require_user_verification=user is None)
    except (webauthn_errors.WebAuthnException, ValueError, TypeError, KeyError) as exc:
        logger.info("passkey assertion refused for passkey %s: %s", row.id, exc)
        raise PasskeyRejected("The passkey could not be verified.") from exc
    _record_use(row, verified.new_sign_count, verified.credential_backed_up)
    return Assertion(credential=row, user_verified=verified.user_verified)


def _handle_matches(credential: dict, handle: bytes) -> bool:
    given = (credential.get("response") or {}).get("userHandle")
    try:
        return isinstance(given, str) and secrets.compare_digest(_unb64(given), handle)
    except (ValueError, TypeError):
        return False


def _record_use(row: WebAuthnCredential, sign_count: int, backed_up: bool) -> None:
    """§7.2 step 21: store the new signature counter. The conditional UPDATE keeps it monotonic
    when two assertions of one authenticator race (an authenticator without a counter sends 0)."""
    values = {"last_used_at": utcnow(), "backed_up": backed_up}
    db.session.execute(update(WebAuthnCredential).where(WebAuthnCredential.id == row.id)
                       .values(**values))
    if sign_count:
        db.session.execute(update(WebAuthnCredential).where(WebAuthnCredential.id == row.id,
                                                            WebAuthnCredential.sign_count < sign_count)
                           .values(sign_count=sign_count))
    db.session.commit()
    db.session.refresh(row)


def parse_credential(raw: str | bytes | None) -> dict:
    """The JSON object the browser posted (PublicKeyCredential.toJSON()); raises InvalidInput."""
    try:
        value = loads_untrusted(raw)
    except ValueError:  # not JSON, not UTF-8, too large or too deeply nested
        value = None
    if not isinstance(value, dict):
        raise InvalidInput("The passkey answer is not a JSON object.")
    return value
