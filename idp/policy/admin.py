"""Operator changes to roles, groups, assignments, direct permissions and user attributes.

Each function validates before writing, writes in one transaction with a version bump
(store.bump_version), and raises InvalidInput, NotFound or Conflict having written nothing.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from sqlalchemy import delete, select

from ..errors import Conflict, InvalidInput, NotFound
from ..jsonsafe import loads_untrusted
from ..storage.models import Role, User, UserRole, db
from ..storage.policy_models import (
    Group,
    GroupMember,
    GroupRole,
    RoleParent,
    RolePermission,
    UserAttribute,
    UserPermission,
)
from .engine import check_permission_name, role_closure
from .store import bump_version

NAME = re.compile(r"^[A-Za-z0-9_.:\-]{1,100}$")
ATTRIBUTE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
RESERVED_ATTRIBUTES = {"id", "email"}


def check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise InvalidInput(f"invalid {kind} name {name!r}: 1-100 letters, digits, _ . : -")
    return name


def _commit() -> None:
    bump_version()
    db.session.commit()
    invalidate_local_cache()


def invalidate_local_cache() -> None:
    """This worker sees its own change at once; the others within IDP_POLICY_REFRESH_TTL."""
    from flask import current_app, has_app_context

    if has_app_context() and "policy" in current_app.extensions:
        current_app.extensions["policy"].invalidate()


def get_role(name: str) -> Role:
    role = db.session.scalar(select(Role).where(Role.name == name))
    if role is None:
        raise NotFound(f"no role {name}")
    return role


def get_group(name: str) -> Group:
    group = db.session.scalar(select(Group).where(Group.name == name))
    if group is None:
        raise NotFound(f"no group {name}")
    return group


def role_graph() -> dict[str, list[str]]:
    names = dict(db.session.execute(select(Role.id, Role.name)).all())
    graph: dict[str, list[str]] = {name: [] for name in names.values()}
    for role_id, parent_id in db.session.execute(select(RoleParent.role_id, RoleParent.parent_id)):
        graph[names[role_id]].append(names[parent_id])
    return graph


def describe_role(role: Role) -> dict:
    perms = sorted(db.session.scalars(select(RolePermission.permission).where(RolePermission.role_id == role.id)))
    parents = sorted(db.session.scalars(select(Role.name).join(RoleParent, RoleParent.parent_id == Role.id)
                                        .where(RoleParent.role_id == role.id)))
    return {"name": role.name, "parents": parents, "permissions": perms}


def create_role(name: str, parents: list[str] = (), permissions: list[str] = ()) -> Role:
    check_name("role", name)
    if db.session.scalar(select(Role.id).where(Role.name == name)):
        raise Conflict(f"role {name} already exists")
    parent_rows = [get_role(p) for p in dict.fromkeys(parents)]
    perms = [check_permission_name(p) for p in dict.fromkeys(permissions)]
    role = Role(name=name)
    db.session.add(role)
    db.session.flush()
    db.session.add_all([RoleParent(role_id=role.id, parent_id=p.id) for p in parent_rows])
    db.session.add_all([RolePermission(role_id=role.id, permission=p) for p in perms])
    _commit()
    return role


def delete_role(name: str) -> None:
    role = get_role(name)
    children = db.session.scalars(select(Role.name).join(RoleParent, RoleParent.role_id == Role.id)
                                  .where(RoleParent.parent_id == role.id)).all()
    if children:
        raise Conflict(f"role {name} is the parent of {', '.join(sorted(children))}")
    db.session.delete(role)
    _commit()


def grant_permissions(name: str, permissions: list[str]) -> Role:
    role = get_role(name)
    perms = [check_permission_name(p) for p in dict.fromkeys(permissions)]
    have = set(db.session.scalars(select(RolePermission.permission).where(RolePermission.role_id == role.id)))
    db.session.add_all([RolePermission(role_id=role.id, permission=p) for p in perms if p not in have])
    _commit()
    return role


def revoke_permissions(name: str, permissions: list[str]) -> Role:
    role = get_role(name)
    db.session.execute(delete(RolePermission).where(RolePermission.role_id == role.id,
                                                    RolePermission.permission.in_(list(permissions))))
    _commit()
    return role


def parse_expiry(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"--expires-at must be an ISO 8601 date-time, got {value!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if when <= datetime.now(UTC):
        raise InvalidInput("--expires-at is in the past")
    return when


def assign_role(user: User, name: str, expires_at: datetime | None = None) -> UserRole:
    role = get_role(name)
    row = db.session.get(UserRole, (user.id, role.id))
    if row is None:
        row = UserRole(user_id=user.id, role_id=role.id)
        db.session.add(row)
    row.expires_at = expires_at
    _commit()
    return row


def unassign_role(user: User, name: str) -> None:
    role = get_role(name)
    row = db.session.get(UserRole, (user.id, role.id))
    if row is None:
        raise NotFound(f"{user.email} does not have role {name}")
    db.session.delete(row)
    _commit()


def sync_granted_roles(user: User, wanted: set[str], granted: set[str]) -> set[str]:
    """For a source that grants roles (an upstream IdP's map): give the user every existing role
    in `wanted`, and remove those in `granted` (what this source gave earlier) that are no longer
    wanted. Roles the user held otherwise are left alone. One transaction; returns what the
    source has granted now (to keep for next time). Unknown role names are skipped."""
    rows = {r.name: r for r in db.session.scalars(select(Role).where(Role.name.in_(wanted | granted)))}
    held = {name for name, role in rows.items() if db.session.get(UserRole, (user.id, role.id)) is not None}
    now_granted = {name for name in wanted if name in rows and (name in granted or name not in held)}
    changed = False
    for name in now_granted - held:
        db.session.add(UserRole(user_id=user.id, role_id=rows[name].id))
        changed = True
    for name in (granted - wanted) & held:
        db.session.delete(db.session.get(UserRole, (user.id, rows[name].id)))
        changed = True
    if changed:
        _commit()
    return now_granted


def create_group(name: str) -> Group:
    check_name("group", name)
    if db.session.scalar(select(Group.id).where(Group.name == name)):
        raise Conflict(f"group {name} already exists")
    group = Group(name=name)
    db.session.add(group)
    _commit()
    return group


def delete_group(name: str) -> None:
    db.session.delete(get_group(name))
    _commit()


def add_member(name: str, user: User) -> None:
    group = get_group(name)
    if db.session.get(GroupMember, (group.id, user.id)) is None:
        db.session.add(GroupMember(group_id=group.id, user_id=user.id))
    _commit()


def remove_member(name: str, user: User) -> None:
    group = get_group(name)
    row = db.session.get(GroupMember, (group.id, user.id))
    if row is None:
        raise NotFound(f"{user.email} is not a member of group {name}")
    db.session.delete(row)
    _commit()


def assign_group_role(name: str, role_name: str) -> None:
    group, role = get_group(name), get_role(role_name)
    if db.session.get(GroupRole, (group.id, role.id)) is None:
        db.session.add(GroupRole(group_id=group.id, role_id=role.id))
    _commit()


def describe_group(group: Group) -> dict:
    roles = sorted(db.session.scalars(select(Role.name).join(GroupRole, GroupRole.role_id == Role.id)
                                      .where(GroupRole.group_id == group.id)))
    members = sorted(db.session.scalars(select(User.email).join(GroupMember, GroupMember.user_id == User.id)
                                        .where(GroupMember.group_id == group.id)))
    return {"name": group.name, "roles": roles, "members": members}


def parse_attribute(pair: str) -> tuple[str, object]:
    """KEY=VALUE. VALUE is a JSON number, true/false or null (null removes the attribute);
    anything else is a string."""
    key, sep, raw = pair.partition("=")
    key = key.strip()
    if not sep or not ATTRIBUTE.match(key):
        raise InvalidInput(f"expected KEY=VALUE with KEY a letter then letters, digits or _, got {pair!r}")
    if key in RESERVED_ATTRIBUTES:
        raise InvalidInput(f"attribute {key!r} is reserved (subject.{key} comes from the account)")
    try:
        value = loads_untrusted(raw)  # SAML attribute values arrive here too (federation/provisioning.py)
        if not (value is None or isinstance(value, bool | int | float)):
            value = raw
    except ValueError:
        value = raw
    return key, value


def set_attributes(user: User, pairs: list[str]) -> dict:
    parsed = dict(parse_attribute(p) for p in pairs)
    if not parsed:
        raise InvalidInput("give at least one KEY=VALUE")
    for key, value in parsed.items():
        row = db.session.get(UserAttribute, (user.id, key))
        if value is None:
            if row is not None:
                db.session.delete(row)
        elif row is None:
            db.session.add(UserAttribute(user_id=user.id, key=key, value=value))
        else:
            row.value = value
    _commit()
    return get_attributes(user)


def get_attributes(user: User) -> dict:
    return dict(db.session.execute(select(UserAttribute.key, UserAttribute.value)
                                   .where(UserAttribute.user_id == user.id).order_by(UserAttribute.key)).all())


def grant_user_permissions(user: User, permissions: list[str]) -> None:
    perms = [check_permission_name(p) for p in dict.fromkeys(permissions)]
    have = set(db.session.scalars(select(UserPermission.permission).where(UserPermission.user_id == user.id)))
    db.session.add_all([UserPermission(user_id=user.id, permission=p) for p in perms if p not in have])
    _commit()


def revoke_user_permissions(user: User, permissions: list[str]) -> None:
    db.session.execute(delete(UserPermission).where(UserPermission.user_id == user.id,
                                                    UserPermission.permission.in_(list(permissions))))
    _commit()


def check_acyclic(graph: dict[str, list[str]]) -> None:
    role_closure(graph)
