"""What the end-user must still do before a code is issued: a pure function of the request,
the SSO session and what happened in this interaction (cf. node-oidc-provider's
interaction policy: login and consent prompts as data).

    LOGIN   no session, prompt=login, or max_age exceeded (OIDC Core §3.1.2.1)
    MFA     the session's acr is below what this login needs (idp/mfa/policy.py: acr_values
            step-up, enrolled user, client, role): step-up inside the session
    CONSENT scopes not yet granted, or prompt=consent (skipped for first-party clients)
    DONE    issue the code
"""

from __future__ import annotations

from dataclasses import dataclass

LOGIN, MFA, CONSENT, DONE = "login", "mfa", "consent", "done"


@dataclass(frozen=True)
class Situation:
    prompts: frozenset[str]
    max_age: int | None
    session_auth_time: int | None  # None: no usable SSO session
    logged_in_here: bool  # the user authenticated during this interaction
    consented_here: bool
    requested_scopes: frozenset[str]
    granted_scopes: frozenset[str]
    skip_consent: bool
    now: float
    mfa_missing: bool = False  # a second factor is required and the session has none


def next_step(s: Situation) -> str:
    if s.session_auth_time is None:
        return LOGIN
    if not s.logged_in_here:
        if "login" in s.prompts:
            return LOGIN
        if s.max_age is not None and s.now - s.session_auth_time > s.max_age:
            return LOGIN
    if s.mfa_missing:
        return MFA
    if not s.skip_consent and not s.consented_here:
        if "consent" in s.prompts or not s.requested_scopes <= s.granted_scopes:
            return CONSENT
    return DONE
