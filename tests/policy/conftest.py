"""Helpers for the policy tests: a policy file on disk and a decision for a user."""

from __future__ import annotations

import json

import pytest

POLICY = {
    "roles": {
        "viewer": {"permissions": ["document:read"]},
        "editor": {"parents": ["viewer"], "permissions": ["document:write", "document:delete"]},
        "admin": {"parents": ["editor"], "permissions": ["document:*", "user:*"]},
    },
    "groups": {"writers": {"roles": ["editor"]}},
    "rules": [
        {"name": "same-department-writes", "permission": "document:write", "effect": "allow",
         "when": "resource.department == subject.department"},
        {"name": "office-hours-deletes", "permission": "document:delete", "effect": "allow",
         "when": "context.time between 08:00 and 18:00 and context.ip in 10.0.0.0/8"},
        {"name": "no-writes-when-suspended", "permission": "document:*", "effect": "deny",
         "when": "subject.suspended exists and subject.suspended == true"},
    ],
    "scopes": {"department": {"claims": {"department": "subject.department"}}},
}


@pytest.fixture()
def policy_file(tmp_path):
    def _write(doc=POLICY, name="policy.json", text=None):
        path = tmp_path / name
        path.write_text(text if text is not None else json.dumps(doc))
        return str(path)
    return _write


def decide(user, permission, resource=None, context=None):
    from idp.policy.cache import policy_cache

    cache = policy_cache()
    return cache.policy().decide(cache.subject(user), permission, resource or {}, context or {})
