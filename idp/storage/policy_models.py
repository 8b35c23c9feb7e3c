"""Models of the authorization policy module (RBAC/ABAC).

Roles (models.Role) get permissions and parent roles here; users get roles directly
(models.UserRole, with an optional expiry) or through groups, direct permissions and
attributes. ABAC rules and attribute scopes are loaded from policy files. `policy_state.version`
is the stamp every worker polls to see a change made anywhere (idp/policy/cache.py).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .models import AwareDateTime, db, utcnow


class RolePermission(db.Model):
    __tablename__ = "role_permissions"

    role_id: Mapped[int] = mapped_column(ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True)
    permission: Mapped[str] = mapped_column(String(200), primary_key=True)


class RoleParent(db.Model):
    """`role_id` inherits every permission of `parent_id` (no cycles: checked on write)."""

    __tablename__ = "role_parents"

    role_id: Mapped[int] = mapped_column(ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True)
    parent_id: Mapped[int] = mapped_column(ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True)


class Group(db.Model):
    __tablename__ = "groups"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)


class GroupMember(db.Model):
    __tablename__ = "group_members"

    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True)


class GroupRole(db.Model):
    __tablename__ = "group_roles"

    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True)
    role_id: Mapped[int] = mapped_column(ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True)


class UserPermission(db.Model):
    __tablename__ = "user_permissions"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    permission: Mapped[str] = mapped_column(String(200), primary_key=True)


class UserAttribute(db.Model):
    """Operator-managed attributes (department, region, ...): `subject.<key>` in conditions."""

    __tablename__ = "user_attributes"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    # A JSON scalar: string, number or boolean (conditions compare types strictly).
    value: Mapped[object] = mapped_column(JSON)


class PolicyRule(db.Model):
    __tablename__ = "policy_rules"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    permission: Mapped[str] = mapped_column(String(200), index=True)
    effect: Mapped[str] = mapped_column(String(8))
    condition: Mapped[str] = mapped_column(Text)
    # Order in the policy file, for `policy show` and explanations.
    position: Mapped[int] = mapped_column(Integer, default=0)


class PolicyScope(db.Model):
    """An operator-defined scope: claim name -> `subject.<attribute>`."""

    __tablename__ = "policy_scopes"

    scope: Mapped[str] = mapped_column(String(100), primary_key=True)
    claims: Mapped[dict] = mapped_column(JSON, default=dict)


class PolicyState(db.Model):
    """One row (id 1). Every policy write bumps `version` in its transaction."""

    __tablename__ = "policy_state"

    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
