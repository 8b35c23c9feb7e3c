"""Decisions from a compiled policy, in process, with an explanation.

    decision = RBAC grants the permission (a role, inherited role or direct permission;
               `resource:*` and `*:*` wildcards)
           AND no deny rule governing it matches   (a deny whose condition is UNKNOWN applies:
                                                    fail closed)
           AND every allow rule governing it matches (only a True condition counts)

A rule governs permission `doc:read` if it names `doc:read`, `doc:*` or `*:*`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import InvalidInput
from .conditions import Evaluator, compile_condition

PERMISSION = re.compile(r"^(?:\*:\*|[A-Za-z0-9_.\-]+:(?:\*|[A-Za-z0-9_.\-]+))$")


def check_permission_name(name: str, where: str = "") -> str:
    if not isinstance(name, str) or not PERMISSION.match(name) or len(name) > 200:
        raise InvalidInput(f"{where}invalid permission {name!r}: use resource:action (or resource:*)")
    return name


def permission_covers(granted: str, wanted: str) -> bool:
    if granted == wanted or granted == "*:*":
        return True
    resource, _, action = granted.partition(":")
    return action == "*" and wanted.partition(":")[0] == resource


@dataclass(frozen=True)
class Rule:
    name: str
    permission: str
    effect: str  # "allow" | "deny"
    condition: str
    evaluate: Evaluator
    refs: frozenset


def compile_rule(name: str, permission: str, effect: str, condition: str) -> Rule:
    where = f"rule {name!r}: "
    check_permission_name(permission, where)
    if effect not in ("allow", "deny"):
        raise InvalidInput(f"{where}effect must be allow or deny, got {effect!r}")
    evaluate, refs = compile_condition(condition, name)
    return Rule(name, permission, effect, condition, evaluate, frozenset(refs))


def role_closure(parents: dict[str, list[str]]) -> dict[str, list[str]]:
    """Each role with its ancestors (itself first). Raises InvalidInput on a cycle or an
    unknown parent, naming the roles."""
    closure: dict[str, list[str]] = {}
    visiting: list[str] = []

    def visit(role: str) -> list[str]:
        if role in closure:
            return closure[role]
        if role in visiting:
            cycle = visiting[visiting.index(role):] + [role]
            raise InvalidInput("role hierarchy has a cycle: " + " -> ".join(cycle))
        visiting.append(role)
        result = [role]
        for parent in parents.get(role, ()):
            if parent not in parents:
                raise InvalidInput(f"role {role!r}: unknown parent role {parent!r}")
            result += [r for r in visit(parent) if r not in result]
        visiting.pop()
        closure[role] = result
        return result

    for role in parents:
        visit(role)
    return closure


@dataclass
class Subject:
    """What a decision needs to know about a user (loaded by policy.store.load_subject)."""

    id: str
    email: str | None = None
    roles: list[str] = field(default_factory=list)           # assigned directly and unexpired
    group_roles: dict[str, list[str]] = field(default_factory=dict)  # group -> roles
    permissions: list[str] = field(default_factory=list)     # direct
    attributes: dict = field(default_factory=dict)
    valid_until: float | None = None  # earliest role expiry: a cached copy is stale after it
    cache_version: int = -1

    def assigned_roles(self) -> list[str]:
        names = list(self.roles)
        for roles in self.group_roles.values():
            names += [r for r in roles if r not in names]
        return names

    def env(self) -> dict:
        return {**self.attributes, "id": self.id, "email": self.email}


@dataclass
class Decision:
    allowed: bool
    permission: str
    reason: str
    roles: list[str] = field(default_factory=list)    # roles that grant the permission
    granted_by: list[str] = field(default_factory=list)  # "role editor: document:*", "direct: ..."
    rules: list[dict] = field(default_factory=list)   # every governing rule and its result

    def as_dict(self) -> dict:
        return {"allowed": self.allowed, "permission": self.permission, "reason": self.reason,
                "roles": self.roles, "granted_by": self.granted_by, "rules": self.rules}


class CompiledPolicy:
    """Roles with their inherited permissions, rules indexed by permission, attribute scopes."""

    def __init__(self, role_permissions: dict[str, list[str]], role_parents: dict[str, list[str]],
                 rules: list[Rule], scopes: dict[str, dict[str, str]], version: int = 0):
        self.version = version
        self.closure = role_closure({r: role_parents.get(r, []) for r in role_permissions})
        # role -> {permission: the role it comes from}
        self.effective: dict[str, dict[str, str]] = {}
        for role, ancestors in self.closure.items():
            perms: dict[str, str] = {}
            for source in ancestors:
                for p in role_permissions.get(source, ()):
                    perms.setdefault(p, source)
            self.effective[role] = perms
        self.role_permissions = role_permissions
        self.role_parents = role_parents
        self.rules = rules
        self.scopes = scopes
        self._governing: dict[str, list[Rule]] = {}

    def governing_rules(self, permission: str) -> list[Rule]:
        rules = self._governing.get(permission)
        if rules is None:
            rules = [r for r in self.rules if permission_covers(r.permission, permission)]
            if len(self._governing) < 100_000:
                self._governing[permission] = rules
        return rules

    def effective_roles(self, subject: Subject) -> list[str]:
        names: list[str] = []
        for role in subject.assigned_roles():
            names += [r for r in self.closure.get(role, ()) if r not in names]
        return names

    def effective_permissions(self, subject: Subject) -> list[str]:
        perms = dict.fromkeys(subject.permissions)
        for role in subject.assigned_roles():
            perms.update(dict.fromkeys(self.effective.get(role, {})))
        return sorted(perms)

    def grants(self, subject: Subject, permission: str) -> tuple[list[str], list[str]]:
        """(roles, explanations) of what grants `permission` through RBAC."""
        roles, via = [], []
        for p in subject.permissions:
            if permission_covers(p, permission):
                via.append(f"direct permission {p}")
        for group, group_roles in [(None, subject.roles)] + list(subject.group_roles.items()):
            for role in group_roles:
                for p, source in self.effective.get(role, {}).items():
                    if permission_covers(p, permission):
                        if role not in roles:
                            roles.append(role)
                        origin = f"role {role}" + (f" (group {group})" if group else "")
                        origin += f" inherits {source}" if source != role else ""
                        via.append(f"{origin}: {p}")
        return roles, via

    def decide(self, subject: Subject, permission: str, resource: dict | None = None,
               context: dict | None = None) -> Decision:
        roles, via = self.grants(subject, permission)
        env = {"subject": subject.env(), "resource": resource or {}, "context": context or {}}
        results, denied_by, unmet = [], None, None
        for rule in self.governing_rules(permission):
            value = rule.evaluate(env)
            outcome = {True: "matched", False: "not matched", None: "unknown"}[value]
            results.append({"name": rule.name, "effect": rule.effect, "result": outcome, "when": rule.condition})
            if rule.effect == "deny" and value is not False and denied_by is None:
                denied_by = (rule, value)
            elif rule.effect == "allow" and value is not True and unmet is None:
                unmet = (rule, value)
        if not via:
            reason = f"no role or direct permission grants {permission}"
        elif denied_by:
            rule, value = denied_by
            reason = (f"denied by rule {rule.name}" if value else
                      f"deny rule {rule.name} could not be evaluated (missing or mismatched attribute): denied")
        elif unmet:
            rule, value = unmet
            reason = (f"allow rule {rule.name} did not match" if value is False else
                      f"allow rule {rule.name} could not be evaluated (missing or mismatched attribute)")
        else:
            reason = f"granted by {via[0]}" + (f"; rules: {', '.join(r['name'] for r in results)}" if results else "")
        allowed = bool(via) and not denied_by and not unmet
        return Decision(allowed, permission, reason, roles, via, results)
