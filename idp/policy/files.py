"""Policy files (YAML or JSON): parse, validate, load in one transaction, and show.

    roles:  {NAME: {parents: [ROLE...], permissions: [PERM...]}}   created or replaced
    groups: {NAME: {roles: [ROLE...]}}                               created or replaced
    rules:  [{name, permission, effect: allow|deny, when}]          replace all rules
    scopes: {SCOPE: {claims: {CLAIM: "subject.ATTRIBUTE"}}}         replace all attribute scopes

Roles and groups not named in the file are left alone (they may have assignments). Every
error names its spot (`rules[2] 'x'.when: position 14: ...`); nothing is written then.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from sqlalchemy import delete, select

from ..errors import InvalidInput
from ..storage.models import Role, db
from ..storage.policy_models import (
    Group,
    GroupRole,
    PolicyRule,
    PolicyScope,
    RoleParent,
    RolePermission,
    UserPermission,
)
from .admin import ATTRIBUTE, check_name, invalidate_local_cache, role_graph
from .conditions import ConditionError
from .engine import check_permission_name, compile_rule, permission_covers, role_closure
from .store import bump_version

TOP_LEVEL = ("roles", "groups", "rules", "scopes")
# Scopes with a meaning of their own: an attribute scope may not take their names.
RESERVED_SCOPES = {"openid", "profile", "email", "address", "phone", "offline_access", "roles", "permissions",
                   "authz:decide"}


def read_document(path: str) -> dict:
    """Parse YAML or JSON (JSON is YAML, but its errors read better from json)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read policy file {path}: {exc}") from None
    try:
        doc = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{path}: line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
        raise InvalidInput(f"{path}: {where}{getattr(exc, 'problem', None) or exc}") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise InvalidInput(f"{path}: the policy must be a mapping with {', '.join(TOP_LEVEL)}")
    return doc


def _mapping(value, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{where}: expected a mapping")
    return value


def _names(value, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidInput(f"{where}: expected a list of strings")
    return list(dict.fromkeys(value))


def _check_keys(value: dict, allowed: tuple, where: str) -> None:
    unknown = [k for k in value if k not in allowed]
    if unknown:
        raise InvalidInput(f"{where}: unknown key {unknown[0]!r} (expected {', '.join(allowed)})")


def validate_document(doc: dict) -> dict:
    """Normalise and check a parsed policy against itself and the database. Raises InvalidInput
    naming the spot; returns {roles, groups, rules, scopes}."""
    _check_keys(doc, TOP_LEVEL, "policy")
    roles: dict[str, dict] = {}
    for name, spec in _mapping(doc.get("roles"), "roles").items():
        where = f"roles.{name}"
        check_name("role", str(name))
        spec = _mapping(spec, where)
        _check_keys(spec, ("parents", "permissions", "description"), where)
        perms = [check_permission_name(p, f"{where}.permissions: ")
                 for p in _names(spec.get("permissions"), where + ".permissions")]
        roles[name] = {"parents": _names(spec.get("parents"), where + ".parents"), "permissions": perms}
    graph = role_graph()
    graph.update({name: spec["parents"] for name, spec in roles.items()})
    for name, spec in roles.items():
        for parent in spec["parents"]:
            if parent not in graph:
                raise InvalidInput(f"roles.{name}.parents: unknown role {parent!r}")
    role_closure(graph)  # raises on a cycle, naming it
    groups: dict[str, list[str]] = {}
    for name, spec in _mapping(doc.get("groups"), "groups").items():
        where = f"groups.{name}"
        check_name("group", str(name))
        spec = _mapping(spec, where)
        _check_keys(spec, ("roles",), where)
        groups[name] = _names(spec.get("roles"), where + ".roles")
        for role in groups[name]:
            if role not in graph:
                raise InvalidInput(f"{where}.roles: unknown role {role!r}")
    known = _known_permissions(roles)
    rules, seen = [], set()
    raw_rules = doc.get("rules") or []
    if not isinstance(raw_rules, list):
        raise InvalidInput("rules: expected a list")
    for i, spec in enumerate(raw_rules):
        where = f"rules[{i}]"
        spec = _mapping(spec, where)
        _check_keys(spec, ("name", "permission", "effect", "when", "description"), where)
        name = spec.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"{where}: a rule needs a name")
        where += f" {name!r}"
        if name in seen:
            raise InvalidInput(f"{where}: duplicate rule name")
        seen.add(name)
        for key in ("permission", "when"):
            if not isinstance(spec.get(key), str):
                raise InvalidInput(f"{where}: {key} is required (a string)")
        effect = spec.get("effect", "allow")
        try:
            compile_rule(name, spec["permission"], effect, spec["when"])
        except ConditionError as exc:
            raise InvalidInput(f"{where}.when: position {exc.position}: {exc.message}") from None
        except InvalidInput as exc:
            raise InvalidInput(f"{where}: {str(exc).split(': ', 1)[-1]}") from None
        if not any(permission_covers(spec["permission"], p) or permission_covers(p, spec["permission"])
                   for p in known):
            raise InvalidInput(f"{where}.permission: unknown permission {spec['permission']!r} "
                               "(no role or user holds it)")
        rules.append({"name": name, "permission": spec["permission"], "effect": effect, "when": spec["when"]})
    scopes = {}
    for scope, spec in _mapping(doc.get("scopes"), "scopes").items():
        where = f"scopes.{scope}"
        if scope in RESERVED_SCOPES or not isinstance(scope, str) or not scope.isascii() or " " in scope:
            raise InvalidInput(f"{where}: scope name is reserved or invalid")
        spec = _mapping(spec, where)
        _check_keys(spec, ("claims",), where)
        claims = {}
        for claim, source in _mapping(spec.get("claims"), where + ".claims").items():
            if not isinstance(claim, str) or not ATTRIBUTE.match(claim) or claim in _reserved_claims():
                raise InvalidInput(f"{where}.claims.{claim}: claim name is reserved or invalid")
            if not isinstance(source, str) or not source.startswith("subject.") or \
                    not ATTRIBUTE.match(source.removeprefix("subject.")):
                raise InvalidInput(f"{where}.claims.{claim}: expected subject.ATTRIBUTE, got {source!r}")
            claims[claim] = source
        scopes[scope] = claims
    return {"roles": roles, "groups": groups, "rules": rules, "scopes": scopes}


def _reserved_claims() -> set[str]:
    from ..protocol.claims import SUPPORTED_CLAIMS

    return set(SUPPORTED_CLAIMS) | {"roles", "permissions", "client_id", "scope", "jti", "omitted_claims"}


def _known_permissions(roles: dict) -> set[str]:
    known = set(db.session.scalars(select(RolePermission.permission).distinct()))
    known |= set(db.session.scalars(select(UserPermission.permission).distinct()))
    for spec in roles.values():
        known |= set(spec["permissions"])
    return known


def load_document(doc: dict) -> dict:
    """Validate and apply in one transaction (all or nothing). Returns counts."""
    policy = validate_document(doc)
    try:
        ids = dict(db.session.execute(select(Role.name, Role.id)).all())
        for name in policy["roles"]:
            if name not in ids:
                role = Role(name=name)
                db.session.add(role)
                db.session.flush()
                ids[name] = role.id
        for name, spec in policy["roles"].items():
            db.session.execute(delete(RolePermission).where(RolePermission.role_id == ids[name]))
            db.session.execute(delete(RoleParent).where(RoleParent.role_id == ids[name]))
            db.session.add_all([RolePermission(role_id=ids[name], permission=p) for p in spec["permissions"]])
            db.session.add_all([RoleParent(role_id=ids[name], parent_id=ids[p]) for p in spec["parents"]])
        for name, role_names in policy["groups"].items():
            group = db.session.scalar(select(Group).where(Group.name == name))
            if group is None:
                group = Group(name=name)
                db.session.add(group)
                db.session.flush()
            db.session.execute(delete(GroupRole).where(GroupRole.group_id == group.id))
            db.session.add_all([GroupRole(group_id=group.id, role_id=ids[r]) for r in role_names])
        db.session.execute(delete(PolicyRule))
        db.session.add_all([PolicyRule(name=r["name"], permission=r["permission"], effect=r["effect"],
                                       condition=r["when"], position=i) for i, r in enumerate(policy["rules"])])
        db.session.execute(delete(PolicyScope))
        db.session.add_all([PolicyScope(scope=s, claims=c) for s, c in policy["scopes"].items()])
        bump_version()
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    invalidate_local_cache()
    return {k: len(v) for k, v in policy.items()}


def dump_policy() -> dict:
    """The current policy in the file's shape (`idp policy show`)."""
    from .admin import describe_group, describe_role

    roles = {}
    for role in db.session.scalars(select(Role).order_by(Role.name)):
        d = describe_role(role)
        roles[role.name] = {"parents": d["parents"], "permissions": d["permissions"]}
    groups = {}
    for group in db.session.scalars(select(Group).order_by(Group.name)):
        groups[group.name] = {"roles": describe_group(group)["roles"]}
    rules = [{"name": r.name, "permission": r.permission, "effect": r.effect, "when": r.condition}
             for r in db.session.scalars(select(PolicyRule).order_by(PolicyRule.position, PolicyRule.id))]
    scopes = {s.scope: {"claims": s.claims} for s in db.session.scalars(select(PolicyScope).order_by(PolicyScope.scope))}
    return {"roles": roles, "groups": groups, "rules": rules, "scopes": scopes}
