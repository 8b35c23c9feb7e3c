"""The condition language: parsing with positions, and the tricky-case table (missing
attributes and type mismatches are UNKNOWN, never a silent True)."""

from __future__ import annotations

import pytest

from idp.policy.conditions import ConditionError, compile_condition

ENV = {
    "subject": {"id": "u1", "department": "eng", "level": 3, "admin": True, "tags": ["a", "b"]},
    "resource": {"department": "eng", "owner_id": "u1", "size": 10, "path": "/docs/x", "dept_list": ["eng"]},
    "context": {"time": "09:30", "ip": "10.1.2.3", "ip6": "2001:db8::1", "weekday": "sat"},
}

TABLE = [
    # (condition, expected: True / False / None = unknown)
    ("resource.department == subject.department", True),
    ("resource.owner_id == subject.id", True),
    ("resource.department != subject.department", False),
    ("subject.level >= 3 and subject.level < 4", True),
    ("subject.level > 2.5", True),
    ("subject.department in [\"eng\", \"ops\"]", True),
    ("subject.department not in [\"eng\", \"ops\"]", False),
    ("subject.department in resource.dept_list", True),
    ("resource.path starts with '/docs/'", True),
    ("context.ip in 10.0.0.0/8", True),
    ("context.ip in 192.168.0.0/16", False),
    ("context.ip6 in '2001:db8::/32'", True),
    ("context.time between 08:00 and 18:00", True),
    ("context.time between 22:00 and 06:00", False),  # a window across midnight
    ("context.weekday between mon and fri", False),
    ("context.weekday between fri and mon", True),  # wraps over the weekend
    ("subject.admin == true", True),
    ("subject.region exists", False),  # exists is never unknown
    ("subject.region exists and subject.region == 'eu'", False),
    ("not subject.level exists", False),
    # missing attributes: unknown, whatever the operator
    ("subject.region == 'eu'", None),
    ("subject.region != 'eu'", None),
    ("subject.region not in ['eu']", None),
    ("not subject.region == 'eu'", None),
    ("resource.missing == subject.missing", None),
    ("context.ip in 10.0.0.0/8 and subject.region == 'eu'", None),
    ("subject.region == 'eu' or subject.level == 3", True),  # Kleene: True or unknown
    ("subject.region == 'eu' and subject.level == 4", False),  # Kleene: False and unknown
    # type mismatches: unknown (no coercion, bool is not a number)
    ("subject.level == '3'", None),
    ("subject.level > 'a'", None),
    ("subject.admin == 1", None),
    ("subject.tags < 3", None),
    ("subject.level starts with '3'", None),
    ("subject.level in 10.0.0.0/8", None),
    ("context.time between mon and fri", None),
    ("subject.department in subject.level", None),
    ("subject.level in ['3']", False),  # membership compares types: not equal
]


@pytest.mark.parametrize("condition,expected", TABLE)
def test_tricky_case_table(condition, expected):
    evaluate, _ = compile_condition(condition)
    assert evaluate(ENV) is expected


@pytest.mark.parametrize("condition,position,message", [
    ("subject.x ==", 13, "expected a value"),
    ("owner == 1", 1, "unknown name 'owner'"),
    ("subject == 1", 1, "unknown name"),
    ("subject.x = 1", 11, "unexpected character '='"),
    ("(subject.a == 1", 16, "expected ')'"),
    ("subject.t between 8 and 9", 19, "between needs"),
    ("subject.t between 08:00 and fri", 29, "both be times or both weekdays"),
    ("subject.a == 1 subject.b == 2", 16, "unexpected"),
    ("context.time between 25:00 and 26:00", 22, "invalid time"),
    ("context.ip in 10.0.0.300/8", 15, "invalid network"),
    ("subject.a", 1, "expected a comparison"),
    ("__import__('os').system('id')", 17, "unexpected character"),
    ("", 1, "empty"),
])
def test_parse_errors_name_rule_and_position(condition, position, message):
    with pytest.raises(ConditionError) as err:
        compile_condition(condition, rule="r1")
    assert err.value.position == position
    assert message in err.value.message
    assert str(err.value).startswith(f"rule 'r1', position {position}: ")


def test_deep_nesting_is_an_error_not_a_crash():
    with pytest.raises(ConditionError):
        compile_condition("(" * 5000 + "subject.a == 1" + ")" * 5000)


def test_references_are_reported():
    _, refs = compile_condition("resource.owner_id == subject.id and context.ip in 10.0.0.0/8")
    assert refs == {"resource.owner_id", "subject.id", "context.ip"}
