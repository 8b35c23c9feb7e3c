"""Clock skew for SAML timestamps: one rule for every time check, configurable.

IDP_SAML_CLOCK_SKEW (seconds, default 120), or a connection's own `--clock-skew`, is allowed
between our clock and the IdP's, in both directions, on:

    NotBefore                       (Conditions, SubjectConfirmationData)   <= now + skew
    NotOnOrAfter, SessionNotOnOrAfter                                        >  now - skew
    IssueInstant (Response, Assertion, LogoutRequest/Response)              <= now + skew,
                                                                             >= now - skew - MESSAGE_MAX_AGE

python3-saml hard-codes its own allowances (300 s on Conditions, none on
SubjectConfirmationData). So this module decides, and python3-saml then validates at a
moment inside every window of the message (`library_clock`): its time checks always pass
once ours did, and its other checks (signature, audience, ...) are unchanged.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

from lxml import etree
from onelogin.saml2.utils import OneLogin_Saml2_Utils

MESSAGE_MAX_AGE = 300  # an IdP posts its message right after issuing it (SAML profiles §4.1.4.2 "short")
_SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
_NOT_BEFORE = ("NotBefore",)
_NOT_ON_OR_AFTER = ("NotOnOrAfter", "SessionNotOnOrAfter")


class ClockRefused(ValueError):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.moment = reason, None


def wall_time() -> float:
    """Our clock (tests move it)."""
    return time.time()


def _parse(value: str) -> int:
    try:
        return OneLogin_Saml2_Utils.parse_SAML_to_time(value)
    except ValueError:
        raise ClockRefused("malformed", f"timestamp {value[:40]!r}") from None


def _windows(root) -> tuple[list[int], list[int], list[int]]:
    """(NotBefore values, NotOnOrAfter values, IssueInstant values) anywhere in the message."""
    befores, afters, instants = [], [], []
    for element in root.iter(etree.Element):
        for name in _NOT_BEFORE:
            if (value := element.get(name)) is not None:
                befores.append(_parse(value))
        for name in _NOT_ON_OR_AFTER:
            if (value := element.get(name)) is not None:
                afters.append(_parse(value))
        if (value := element.get("IssueInstant")) is not None:
            instants.append(_parse(value))
    return befores, afters, instants


def check_times(root, skew: int, now: float | None = None) -> int:
    """Raise ClockRefused ("expired" / "not_yet_valid") unless every timestamp in the message
    holds within `skew` seconds; the exception's `moment` is still the one for `library_clock`.
    Returns the moment nearest to now at which every window holds (python3-saml's checks)."""
    now = wall_time() if now is None else now
    befores, afters, instants = _windows(root)
    moment = int(now)
    if befores:
        moment = max(moment, max(befores))
    if afters:
        moment = min(moment, min(afters) - 1)
    refusal = None
    if befores and afters and max(befores) >= min(afters):
        refusal = ClockRefused("expired", "NotBefore is not before NotOnOrAfter")
    for instant in instants:
        if instant > now + skew:
            refusal = refusal or ClockRefused("not_yet_valid", f"IssueInstant {instant - now:.0f} s ahead")
        if instant < now - skew - MESSAGE_MAX_AGE:
            refusal = refusal or ClockRefused("expired", f"IssueInstant {now - instant:.0f} s old")
    for before in befores:
        if before > now + skew:
            refusal = refusal or ClockRefused("not_yet_valid", f"NotBefore {before - now:.0f} s ahead")
    for after in afters:
        if after <= now - skew:
            refusal = refusal or ClockRefused("expired", f"NotOnOrAfter {now - after:.0f} s ago")
    if refusal is not None:
        refusal.moment = moment
        raise refusal
    return moment


_local = threading.local()
_library_now = OneLogin_Saml2_Utils.now


def _now() -> int:
    moment = getattr(_local, "moment", None)
    return _library_now() if moment is None else moment


# python3-saml reads the time only through OneLogin_Saml2_Utils.now(); outside `library_clock`
# (and in other threads) it is the real time, as before.
OneLogin_Saml2_Utils.now = staticmethod(_now)


@contextmanager
def library_clock(moment: int):
    """python3-saml sees `moment` as the current time in this thread, inside the block."""
    _local.moment = moment
    try:
        yield
    finally:
        _local.moment = None
