"""Declarative attribute mapping: upstream attribute names -> our claims and user attributes.

A connection's map (JSON or YAML file given to `idp saml add --attribute-map`):

    claims:                     # our claim -> upstream names, first one present wins
      email: [mail, "urn:oid:0.9.2342.19200300.100.1.3"]
      name: displayName
    attributes:                 # user attribute (policy module) -> upstream name
      department: "urn:oid:2.5.4.11"
    groups: memberOf            # multi-valued
    subject: nameid             # or an attribute holding a persistent id (e.g. eduPersonUniqueId)
    roles:                      # roles this connection grants (policy module), synced at each login
      from: groups              # the mapped groups, or an upstream attribute name
      map:                      # upstream value (case-insensitive) -> role name or list of names
        "CN=Admins,OU=Groups,DC=corp,DC=example": admin
    email_verified: true        # whether the upstream email counts as verified (default true)
    defaults: true              # also try DEFAULT_CLAIMS (eduPerson, Microsoft, Okta names)

Unknown keys are refused when the map is loaded, so a typo never silently maps nothing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from ..errors import InvalidInput
from .identity import ExternalIdentity

CLAIMS = ("email", "name", "given_name", "family_name")

# Common names: LDAP/eduPerson (names and urn:oid forms), Microsoft (ADFS, Entra ID) claim
# URIs, and Okta's: its profile attributes as attribute names (user.email, user.firstName,
# user.lastName, user.displayName) and the names its app wizard suggests (email, firstName,
# lastName), with groups from a group attribute statement named "groups".
DEFAULT_CLAIMS: dict[str, list[str]] = {
    "email": ["mail", "email", "emailAddress", "urn:oid:0.9.2342.19200300.100.1.3",
              "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
              "http://schemas.xmlsoap.org/claims/EmailAddress", "user.email", "Email"],
    "name": ["displayName", "urn:oid:2.16.840.1.113730.3.1.241",
             "http://schemas.microsoft.com/identity/claims/displayname", "cn", "urn:oid:2.5.4.3", "fullName",
             "user.displayName"],
    "given_name": ["givenName", "urn:oid:2.5.4.42", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/givenname",
                   "firstName", "user.firstName"],
    "family_name": ["sn", "surname", "urn:oid:2.5.4.4",
                    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/surname", "lastName", "user.lastName"],
}
DEFAULT_GROUPS = ["groups", "memberOf", "isMemberOf", "urn:oid:1.3.6.1.4.1.5923.1.5.1.1",
                  "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups",
                  "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"]
KEYS = {"claims", "attributes", "groups", "roles", "subject", "email_verified", "defaults"}
ROLE_NAME = re.compile(r"^[A-Za-z0-9_.:\-]{1,100}$")  # idp/policy/admin.py NAME
ATTRIBUTE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
MAX_VALUE = 1024


def _names(value, where: str) -> list[str]:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise InvalidInput(f"attribute map: {where} must be a name or a list of names")
    return names


def check_map(raw) -> dict:
    """Validate a parsed map and return its normal form. Raises InvalidInput."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InvalidInput("attribute map: expected a mapping at the top level")
    if unknown := set(raw) - KEYS:
        raise InvalidInput(f"attribute map: unknown key(s) {', '.join(sorted(unknown))}")
    claims = raw.get("claims") or {}
    if not isinstance(claims, dict) or (bad := set(claims) - set(CLAIMS)):
        raise InvalidInput(f"attribute map: claims must map {', '.join(CLAIMS)}"
                           + (f" (not {', '.join(sorted(bad))})" if isinstance(claims, dict) else ""))
    attributes = raw.get("attributes") or {}
    if not isinstance(attributes, dict) or not all(ATTRIBUTE_NAME.match(k) for k in attributes):
        raise InvalidInput("attribute map: attributes must map names (a letter, then letters, digits, _)")
    out = {"claims": {k: _names(v, f"claims.{k}") for k, v in claims.items()},
           "attributes": {k: _names(v, f"attributes.{k}") for k, v in attributes.items()},
           "subject": raw.get("subject", "nameid"),
           "email_verified": bool(raw.get("email_verified", True)),
           "defaults": bool(raw.get("defaults", True))}
    if "groups" in raw:
        out["groups"] = _names(raw["groups"], "groups")
    if "roles" in raw:
        out["roles"] = _check_roles(raw["roles"])
    if not isinstance(out["subject"], str) or not out["subject"]:
        raise InvalidInput("attribute map: subject must be 'nameid' or an attribute name")
    return out


def _check_roles(raw) -> dict:
    if not isinstance(raw, dict) or set(raw) - {"from", "map"} or not isinstance(raw.get("map"), dict):
        raise InvalidInput("attribute map: roles must be {from: groups or an attribute name, map: {value: role}}")
    source = raw.get("from", "groups")
    if not isinstance(source, str) or not source:
        raise InvalidInput("attribute map: roles.from must be 'groups' or an attribute name")
    out = {}
    for value, roles in raw["map"].items():
        roles = [roles] if isinstance(roles, str) else roles
        if not isinstance(value, str) or not value or not isinstance(roles, list) or \
                not all(isinstance(r, str) and ROLE_NAME.match(r) for r in roles):
            raise InvalidInput(f"attribute map: roles.map[{str(value)[:80]!r}] must be a role name or a list of "
                               "role names (letters, digits, _ . : -)")
        out[value] = roles
    return {"from": source, "map": out}


def _roles(map_: dict, groups: tuple[str, ...], attributes: dict[str, list[str]]) -> tuple[str, ...]:
    """The roles the connection's map grants for what the upstream sent."""
    spec = map_.get("roles")
    if not spec:
        return ()
    values = groups if spec["from"] == "groups" else attributes.get(spec["from"]) or ()
    sent = {v.casefold() for v in values if isinstance(v, str)}  # LDAP/AD names are case-insensitive
    return tuple(sorted({role for value, roles in spec["map"].items() if value.casefold() in sent
                         for role in roles}))


def load_map_file(path: str) -> dict:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InvalidInput(f"cannot read attribute map {path}: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text) if path.endswith((".yaml", ".yml")) else json.loads(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise InvalidInput(f"attribute map {path} is not valid: {str(exc).splitlines()[0]}") from None
    return check_map(raw)


def _first(attributes: dict[str, list[str]], names: list[str]) -> str | None:
    for name in names:
        for value in attributes.get(name) or ():
            if isinstance(value, str) and value.strip():
                return value.strip()[:MAX_VALUE]
    return None


def map_identity(map_: dict, *, provider: str, protocol: str, name_id: str | None,
                 attributes: dict[str, list[str]], acr: str | None = None,
                 session_index: str | None = None) -> ExternalIdentity:
    """Apply a (checked) map to what the upstream sent. Raises InvalidInput without a subject."""
    map_ = check_map(map_) if "defaults" not in map_ else map_
    claims = {}
    for claim in CLAIMS:
        names = list(map_["claims"].get(claim, []))
        if map_["defaults"]:
            names += DEFAULT_CLAIMS[claim]
        if (value := _first(attributes, names)) is not None:
            claims[claim] = value
    email = claims.pop("email", None)
    if email is None and name_id and "@" in name_id and map_["defaults"]:
        email = name_id[:MAX_VALUE]
    subject = name_id if map_["subject"] == "nameid" else _first(attributes, [map_["subject"]])
    if not subject or not subject.strip():
        raise InvalidInput("the identity provider sent no subject")
    group_names = map_.get("groups") or (DEFAULT_GROUPS if map_["defaults"] else [])
    groups = tuple(dict.fromkeys(v[:MAX_VALUE] for n in group_names for v in attributes.get(n) or ()
                                 if isinstance(v, str) and v))
    user_attributes = {k: v for k, names in map_["attributes"].items()
                       if (v := _first(attributes, names)) is not None}
    return ExternalIdentity(provider=provider, protocol=protocol, subject=subject.strip()[:512],
                            email=email.lower() if email else None, email_verified=map_["email_verified"],
                            claims=claims, attributes=user_attributes, groups=groups,
                            roles=_roles(map_, groups, attributes), acr=acr, session_index=session_index)
