"""RBAC (hierarchy, groups, expiry, direct permissions, wildcards) and ABAC rules (deny
overrides, every allow must match, a missing attribute never allows), with explanations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from idp.errors import Conflict, InvalidInput, NotFound
from idp.policy import admin
from idp.policy.engine import CompiledPolicy, Subject, compile_rule, permission_covers
from idp.policy.files import load_document
from tests.factories import make_user

from .conftest import POLICY, decide


def policy(roles=None, parents=None, rules=()):
    return CompiledPolicy(roles or {}, parents or {}, [compile_rule(*r) for r in rules], {})


@pytest.mark.parametrize("granted,wanted,covers", [
    ("document:read", "document:read", True),
    ("document:*", "document:delete", True),
    ("*:*", "anything:at-all", True),
    ("document:*", "documents:read", False),
    ("doc:read", "doc:reads", False),
    ("document:read", "document:*", False),  # a concrete grant does not cover the wildcard
])
def test_wildcards(granted, wanted, covers):
    assert permission_covers(granted, wanted) is covers


def test_role_inherits_parents_transitively():
    p = policy({"a": ["x:read"], "b": ["x:write"], "c": []}, {"b": ["a"], "c": ["b"]})
    subject = Subject(id="u", roles=["c"])
    d = p.decide(subject, "x:read")
    assert d.allowed and d.roles == ["c"] and d.granted_by == ["role c inherits a: x:read"]
    assert p.effective_roles(subject) == ["c", "b", "a"]
    assert p.effective_permissions(subject) == ["x:read", "x:write"]


@pytest.mark.parametrize("parents", [{"a": ["a"]}, {"a": ["b"], "b": ["a"]}, {"a": ["b"], "b": ["c"], "c": ["a"]}])
def test_role_cycles_are_refused(parents):
    with pytest.raises(InvalidInput, match="cycle"):
        policy({r: [] for r in "abc"}, parents)


def test_no_grant_means_denied_whatever_the_rules():
    p = policy({"r": []}, rules=[("open", "x:read", "allow", "subject.id == 'u'")])
    d = p.decide(Subject(id="u", roles=["r"]), "x:read")
    assert not d.allowed and d.reason == "no role or direct permission grants x:read"


def test_deny_overrides_allow_and_rbac():
    p = policy({"r": ["x:*"]}, rules=[("ok", "x:read", "allow", "subject.id == 'u'"),
                                      ("block", "x:*", "deny", "resource.locked == true")])
    s = Subject(id="u", roles=["r"])
    assert p.decide(s, "x:read", {"locked": False}).allowed
    d = p.decide(s, "x:read", {"locked": True})
    assert not d.allowed and d.reason == "denied by rule block"
    assert [r["result"] for r in d.rules] == ["matched", "matched"]


def test_every_allow_rule_must_match():
    p = policy({"r": ["x:read"]}, rules=[("a", "x:read", "allow", "subject.level > 1"),
                                         ("b", "x:read", "allow", "subject.region == 'eu'")])
    s = Subject(id="u", roles=["r"], attributes={"level": 2, "region": "us"})
    d = p.decide(s, "x:read")
    assert not d.allowed and d.reason == "allow rule b did not match"
    s.attributes["region"] = "eu"
    assert p.decide(s, "x:read").allowed


@pytest.mark.parametrize("effect", ["allow", "deny"])
def test_missing_attribute_never_allows(effect):
    """An allow over a missing attribute does not match; a deny over one applies (fail closed)."""
    condition = "subject.clearance == 'high'" if effect == "allow" else "subject.clearance != 'high'"
    p = policy({"r": ["x:read"]}, rules=[("rule", "x:read", effect, condition)])
    d = p.decide(Subject(id="u", roles=["r"]), "x:read")
    assert not d.allowed
    assert "could not be evaluated" in d.reason and d.rules[0]["result"] == "unknown"


def test_type_mismatch_never_allows():
    p = policy({"r": ["x:read"]}, rules=[("lvl", "x:read", "allow", "subject.level >= 3")])
    assert not p.decide(Subject(id="u", roles=["r"], attributes={"level": "5"}), "x:read").allowed
    assert p.decide(Subject(id="u", roles=["r"], attributes={"level": 5}), "x:read").allowed


def test_direct_permission_and_wildcard_rule(ctx):
    user = make_user()
    admin.grant_user_permissions(user, ["report:export"])
    d = decide(user, "report:export")
    assert d.allowed and d.granted_by == ["direct permission report:export"]
    assert not decide(user, "report:delete").allowed


def test_rbac_groups_hierarchy_and_rules_from_the_database(ctx):
    load_document(POLICY)
    alice, bob = make_user(), make_user("bob@example.com")
    admin.add_member("writers", alice)
    admin.set_attributes(alice, ["department=eng"])
    d = decide(alice, "document:read")
    assert d.allowed and "role editor (group writers) inherits viewer: document:read" in d.granted_by
    assert decide(alice, "document:write", {"department": "eng"}).allowed
    d = decide(alice, "document:write", {"department": "ops"})
    assert not d.allowed and d.reason == "allow rule same-department-writes did not match"
    assert not decide(bob, "document:read").allowed
    # deny override through a wildcard rule
    admin.set_attributes(alice, ["suspended=true"])
    d = decide(alice, "document:read")
    assert not d.allowed and d.reason == "denied by rule no-writes-when-suspended"
    admin.set_attributes(alice, ["suspended=null"])  # null removes the attribute
    assert decide(alice, "document:read").allowed


def test_time_and_network_windows(ctx):
    load_document(POLICY)
    user = make_user()
    admin.assign_role(user, "editor")
    inside = {"time": "09:00", "ip": "10.2.3.4"}
    assert decide(user, "document:delete", context=inside).allowed
    assert not decide(user, "document:delete", context={**inside, "time": "19:00"}).allowed
    assert not decide(user, "document:delete", context={**inside, "ip": "192.0.2.1"}).allowed
    assert not decide(user, "document:delete", context={"time": "09:00"}).allowed  # no ip: never allows


def test_expired_role_assignment_does_not_count(ctx):
    load_document(POLICY)
    user = make_user()
    admin.assign_role(user, "viewer", datetime.now(UTC) + timedelta(hours=1))
    assert decide(user, "document:read").allowed
    admin.assign_role(user, "viewer", datetime.now(UTC) + timedelta(seconds=1))
    from idp.storage.models import UserRole, db
    row = db.session.scalars(db.select(UserRole)).one()
    row.expires_at = datetime.now(UTC) - timedelta(seconds=1)  # as if time passed
    db.session.commit()
    from idp.policy.cache import policy_cache
    policy_cache().invalidate()
    d = decide(user, "document:read")
    assert not d.allowed and d.reason == "no role or direct permission grants document:read"


def test_cached_subject_expires_with_its_role(ctx):
    """A cached subject is not used past the earliest expiry of its assignments."""
    import time

    from idp.policy.cache import policy_cache
    load_document(POLICY)
    user = make_user()
    admin.assign_role(user, "viewer", datetime.now(UTC) + timedelta(seconds=1))
    assert decide(user, "document:read").allowed
    assert policy_cache().subject(user).valid_until is not None
    time.sleep(1.1)
    assert not decide(user, "document:read").allowed


def test_admin_errors_write_nothing(ctx):
    user = make_user()
    admin.create_role("viewer", permissions=["document:read"])
    with pytest.raises(Conflict):
        admin.create_role("viewer")
    with pytest.raises(NotFound):
        admin.create_role("x", parents=["nope"])
    with pytest.raises(InvalidInput):
        admin.create_role("y", permissions=["not a permission"])
    with pytest.raises(InvalidInput):
        admin.parse_expiry("2001-01-01T00:00:00Z")
    with pytest.raises(NotFound):
        admin.assign_role(user, "nope")
    with pytest.raises(InvalidInput):
        admin.set_attributes(user, ["id=evil"])  # subject.id comes from the account
    admin.create_role("child", parents=["viewer"])
    with pytest.raises(Conflict, match="parent of child"):
        admin.delete_role("viewer")
    from idp.storage.models import Role, db
    assert sorted(db.session.scalars(db.select(Role.name))) == ["child", "viewer"]


def test_attribute_values_keep_their_json_type(ctx):
    user = make_user()
    attrs = admin.set_attributes(user, ["level=3", "ratio=0.5", "vip=true", "zip=01234", "name=Ann Lee"])
    assert attrs == {"level": 3, "name": "Ann Lee", "ratio": 0.5, "vip": True, "zip": "01234"}
