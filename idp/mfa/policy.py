"""Is a second factor required for this login? A pure function of what the caller gathered
(idp/mfa/flow.py gathers it), like idp/interaction/policy.py.

    explicit step-up: the request asks for urn:idp:acr:mfa (acr_values, or an essential
                      `acr` claim, OIDC Core §3.1.2.1 / §5.5.1.1) and does not also accept
                      urn:idp:acr:pwd                          -> always required
    trusted browser:  "trust this browser" cookie of this user -> not required (below)
    otherwise required when the user has a factor enrolled, the client was created with
    --require-mfa, the SAML connection requires it, or the user has a role listed in
    IDP_MFA_REQUIRED_ROLES.

A trusted browser skips the prompts that policy (user, client, role, connection) adds, but
never an explicit step-up: as with Keycloak's step-up (acr -> level of authentication), the
client that asks for urn:idp:acr:mfa gets either a session in which two factors passed or
no code, and the `acr` it receives is always true.
"""

from __future__ import annotations

from dataclasses import dataclass

PWD_ACR = "urn:idp:acr:pwd"
MFA_ACR = "urn:idp:acr:mfa"
ACR_VALUES = [PWD_ACR, MFA_ACR]


@dataclass(frozen=True)
class MfaSituation:
    requested_acr: frozenset[str]
    trusted_browser: bool
    enrolled: bool
    client_requires: bool = False
    connection_requires: bool = False
    role_requires: bool = False


def step_up_requested(requested_acr: frozenset[str]) -> bool:
    return MFA_ACR in requested_acr and PWD_ACR not in requested_acr


def mfa_required(s: MfaSituation) -> bool:
    if step_up_requested(s.requested_acr):
        return True
    if s.trusted_browser:
        return False
    return s.enrolled or s.client_requires or s.connection_requires or s.role_requires


def requested_acr(params: dict | None, claims: dict | None = None) -> frozenset[str]:
    """The acr values a request asks for. An essential `acr` claim of the `claims` parameter
    decides alone (OIDC Core §5.5.1.1: failing it fails the authentication, so a voluntary
    `acr_values` next to it cannot relax it); otherwise `acr_values` (§3.1.2.1), all of them
    (/authorize caps the parameter's length)."""
    acr = ((claims or {}).get("id_token") or {}).get("acr") or {}
    if isinstance(acr, dict) and acr.get("essential"):
        listed = acr.get("values") if isinstance(acr.get("values"), list) else [acr.get("value")]
        return frozenset(v for v in listed if isinstance(v, str))
    return frozenset((params or {}).get("acr_values", "").split())
