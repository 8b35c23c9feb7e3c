"""Reading the policy from the database: the compiled policy, a subject, the version stamp."""

from __future__ import annotations

import secrets
from collections import defaultdict

from sqlalchemy import or_, select, update

from ..storage.models import Role, User, UserRole, db, utcnow
from ..storage.policy_models import (
    Group,
    GroupMember,
    GroupRole,
    PolicyRule,
    PolicyScope,
    PolicyState,
    RoleParent,
    RolePermission,
    UserAttribute,
    UserPermission,
)
from .engine import CompiledPolicy, Subject, compile_rule


def current_version() -> int:
    return db.session.scalar(select(PolicyState.version).where(PolicyState.id == 1)) or 0


def bump_version() -> None:
    """Part of the caller's transaction: every worker reloads once it sees the new stamp.
    A random stamp, not a counter: a restored backup or an emptied table never brings back a
    value some worker still has cached."""
    stamp = secrets.randbits(31) or 1
    changed = db.session.execute(update(PolicyState).where(PolicyState.id == 1)
                                 .values(version=stamp, updated_at=utcnow())).rowcount
    if not changed:
        db.session.add(PolicyState(id=1, version=stamp))


def load_policy() -> CompiledPolicy:
    version = current_version()
    names = dict(db.session.execute(select(Role.id, Role.name)).all())
    role_permissions: dict[str, list[str]] = {name: [] for name in names.values()}
    for role_id, perm in db.session.execute(select(RolePermission.role_id, RolePermission.permission)):
        role_permissions[names[role_id]].append(perm)
    parents: dict[str, list[str]] = defaultdict(list)
    for role_id, parent_id in db.session.execute(select(RoleParent.role_id, RoleParent.parent_id)):
        parents[names[role_id]].append(names[parent_id])
    rules = [compile_rule(r.name, r.permission, r.effect, r.condition)
             for r in db.session.scalars(select(PolicyRule).order_by(PolicyRule.position, PolicyRule.id))]
    scopes = {s.scope: dict(s.claims or {}) for s in db.session.scalars(select(PolicyScope))}
    return CompiledPolicy(role_permissions, dict(parents), rules, scopes, version)


def load_subject(user: User) -> Subject:
    """The user's unexpired roles, group roles, direct permissions and attributes."""
    now = utcnow()
    rows = db.session.execute(
        select(Role.name, UserRole.expires_at).join(UserRole, UserRole.role_id == Role.id)
        .where(UserRole.user_id == user.id, or_(UserRole.expires_at.is_(None), UserRole.expires_at > now))).all()
    expiries = [e.timestamp() for _, e in rows if e is not None]
    group_roles: dict[str, list[str]] = defaultdict(list)
    for group, role in db.session.execute(
            select(Group.name, Role.name).join(GroupMember, GroupMember.group_id == Group.id)
            .join(GroupRole, GroupRole.group_id == Group.id).join(Role, Role.id == GroupRole.role_id)
            .where(GroupMember.user_id == user.id)):
        group_roles[group].append(role)
    permissions = list(db.session.scalars(select(UserPermission.permission).where(UserPermission.user_id == user.id)))
    attributes = dict(db.session.execute(select(UserAttribute.key, UserAttribute.value)
                                         .where(UserAttribute.user_id == user.id)).all())
    return Subject(id=user.id, email=user.email, roles=sorted(name for name, _ in rows),
                   group_roles=dict(group_roles), permissions=sorted(permissions), attributes=attributes,
                   valid_until=min(expiries) if expiries else None)


def user_groups(user_id: str) -> list[str]:
    return sorted(db.session.scalars(select(Group.name).join(GroupMember, GroupMember.group_id == Group.id)
                                     .where(GroupMember.user_id == user_id)))


def role_assignments(user_id: str) -> list[dict]:
    return [{"role": name, "expires_at": exp.isoformat() if exp else None}
            for name, exp in db.session.execute(
                select(Role.name, UserRole.expires_at).join(UserRole, UserRole.role_id == Role.id)
                .where(UserRole.user_id == user_id).order_by(Role.name))]
