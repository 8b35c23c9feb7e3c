"""TOTP factors (RFC 6238): 30-second steps, 6 digits, HMAC-SHA-1 (what every authenticator
app supports), ±1 step of clock skew (RFC 6238 §5.2 allows a small window).

Enrolment keeps the candidate secret in the store (encrypted, 15 minutes) until the user
types a valid code from the app; only then is the factor stored. The secret is encrypted at
rest with the key-encryption key, AES-256-GCM bound to the factor id (services/keys.py).

Replay guard (RFC 6238 §5.2: "the verifier MUST NOT accept the second attempt of the OTP after
the successful validation"): a code is accepted only if this call is the one that adds
`totp-used:<factor>:<step>` to the store (atomic `add`), so of concurrent requests with the
same code exactly one succeeds.
"""

from __future__ import annotations

import hmac
import secrets
import time

import pyotp
from sqlalchemy import func, select

from ..services.keys import decrypt_private_key, encrypt_private_key
from ..storage.mfa_models import TotpFactor
from ..storage.models import db, utcnow
from ..storage.store import Store

STEP = 30
DIGITS = 6
SKEW_STEPS = 1
ENROL_TTL = 900


def new_secret() -> str:
    return pyotp.random_base32()  # 160 bits, RFC 4226 §4's recommended length


def provisioning_uri(secret: str, account: str, issuer: str) -> str:
    """The otpauth:// URI an authenticator app scans (Key Uri Format)."""
    return pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=issuer)


def qr_svg(uri: str) -> str:
    """The QR code as inline SVG, made here: no external service sees the secret."""
    import segno  # only enrolment pages draw QR codes: not loaded in every worker

    return segno.make(uri, error="m").svg_inline(scale=4, dark="#000", light="#fff")


def normalize_code(raw: str | None) -> str | None:
    code = "".join((raw or "")[:32].split()).replace("-", "")
    return code if len(code) == DIGITS and code.isascii() and code.isdigit() else None


def matching_step(secret: str, code: str, now: float | None = None) -> int | None:
    """The time step (±SKEW_STEPS) whose code this is, or None. Constant-time comparisons."""
    now = time.time() if now is None else now
    totp = pyotp.TOTP(secret)
    found = None
    for offset in range(-SKEW_STEPS, SKEW_STEPS + 1):
        if hmac.compare_digest(totp.at(now, counter_offset=offset), code):
            found = totp.timecode(now) + offset
    return found


def claim_step(store: Store, replay_key: str, step: int) -> bool:
    """True for the one caller that uses this step's code first (atomic add)."""
    return store.add(f"totp-used:{replay_key}:{step}", b"1", STEP * (2 * SKEW_STEPS + 2))


# --- factors ---------------------------------------------------------------------------------

def _aad(factor_id: str) -> str:
    return "totp:" + factor_id


def list_factors(user_id: str) -> list[TotpFactor]:
    return list(db.session.scalars(select(TotpFactor).where(TotpFactor.user_id == user_id)
                                   .order_by(TotpFactor.created_at)))


def count_factors(user_id: str) -> int:
    return db.session.scalar(select(func.count()).select_from(TotpFactor).where(TotpFactor.user_id == user_id))


def create_factor(kek: bytes, user_id: str, secret: str, label: str) -> TotpFactor:
    factor = TotpFactor(id=secrets.token_hex(16), user_id=user_id, label=label)
    factor.secret_encrypted = encrypt_private_key(kek, _aad(factor.id), secret.encode())
    db.session.add(factor)
    db.session.commit()
    return factor


def verify(kek: bytes, store: Store, user_id: str, code: str | None, now: float | None = None) -> TotpFactor | None:
    """The user's factor this code belongs to, if it is valid and not used before; else None."""
    code = normalize_code(code)
    if code is None:
        return None
    for factor in list_factors(user_id):
        secret = decrypt_private_key(kek, _aad(factor.id), factor.secret_encrypted).decode()
        step = matching_step(secret, code, now)
        if step is not None and claim_step(store, factor.id, step):
            factor.last_used_at = utcnow()
            db.session.commit()
            return factor
    return None


# --- enrolment (candidate secret in the store) -----------------------------------------------

def start_enrolment(kek: bytes, store: Store, binding: str) -> str:
    """A candidate secret for this account-page session (`binding`: its sid)."""
    secret = new_secret()
    store.set(f"totp-enrol:{binding}", encrypt_private_key(kek, "totp-enrol:" + binding, secret.encode()), ENROL_TTL)
    return secret


def enrolment_secret(kek: bytes, store: Store, binding: str) -> str | None:
    blob = store.get(f"totp-enrol:{binding}")
    return None if blob is None else decrypt_private_key(kek, "totp-enrol:" + binding, blob).decode()


def finish_enrolment(kek: bytes, store: Store, binding: str, user_id: str, code: str | None,
                     label: str) -> TotpFactor | None:
    """Store the factor if `code` is valid for the candidate secret (the first use of that
    code, so it cannot also sign in); None otherwise."""
    secret = enrolment_secret(kek, store, binding)
    code = normalize_code(code)
    if secret is None or code is None:
        return None
    step = matching_step(secret, code)
    if step is None or store.take(f"totp-enrol:{binding}") is None:
        return None
    factor = create_factor(kek, user_id, secret, label)
    claim_step(store, factor.id, step)
    return factor
