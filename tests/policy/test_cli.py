"""The `idp roles|groups|policy|claims` and `idp users set-attribute` shapes, through the real
console script (embedded SQLite): --json documents, one-line errors, nothing written on error."""

from __future__ import annotations

import json

import pytest

from tests.cli.test_cli import Cli

from .conftest import POLICY


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    cli = Cli(tmp_path_factory.mktemp("policy-cli"))
    assert cli.run("db", "upgrade").returncode == 0
    assert cli.run("users", "create", "--email", "ann@example.com", "--password", "long enough pw").returncode == 0
    return cli


def check_error(cli, *args, message):
    before = cli.snapshot()
    result = cli.run(*args)
    assert result.returncode != 0 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, result.stderr
    assert cli.snapshot() == before


def test_policy_file_load_show_explain(cli, tmp_path):
    path = tmp_path / "policy.yaml"
    import yaml
    path.write_text(yaml.safe_dump(POLICY))
    assert cli.json("policy", "validate", str(path))["valid"] is True
    assert cli.json("policy", "load", str(path)) == {"file": str(path), "loaded": True, "roles": 3, "groups": 1,
                                                      "rules": 3, "scopes": 1}
    shown = cli.json("policy", "show")
    assert shown["roles"]["editor"] == {"parents": ["viewer"], "permissions": ["document:delete", "document:write"]}
    assert [r["name"] for r in shown["rules"]] == [r["name"] for r in POLICY["rules"]]
    assert cli.json("groups", "add-member", "writers", "--user", "ann@example.com")["members"] == ["ann@example.com"]
    assert cli.json("users", "set-attribute", "--user", "ann@example.com", "department=eng", "level=3") == {
        "user": "ann@example.com", "attributes": {"department": "eng", "level": 3}}
    out = cli.json("policy", "explain", "--user", "ann@example.com", "--permission", "document:write",
                   "--resource-attr", "department=ops")
    assert out["allowed"] is False and out["reason"] == "allow rule same-department-writes did not match"
    assert out["roles"] == ["editor"] and {r["name"] for r in out["rules"]} == {
        "same-department-writes", "no-writes-when-suspended"}
    result = cli.run("policy", "explain", "--user", "ann@example.com", "--permission", "document:delete",
                     "--context", "ip=10.0.0.7", "--context", "time=09:15")
    assert result.returncode == 0 and result.stdout.startswith("ALLOWED: document:delete for ann@example.com")
    # denied is still exit 0
    assert cli.run("policy", "explain", "--user", "ann@example.com", "--permission", "user:read").returncode == 0


def test_roles_groups_and_claims_explain(cli):
    assert cli.json("roles", "create", "auditor", "--parent", "viewer", "--permission", "log:read") == {
        "name": "auditor", "parents": ["viewer"], "permissions": ["log:read"]}
    assert cli.json("roles", "grant", "auditor", "log:export", "log:*")["permissions"] == [
        "log:*", "log:export", "log:read"]
    assert cli.json("roles", "revoke", "auditor", "log:*")["permissions"] == ["log:export", "log:read"]
    out = cli.json("roles", "assign", "--user", "ann@example.com", "--role", "auditor",
                   "--expires-at", "2999-01-01T00:00:00Z")
    assert out == {"user": "ann@example.com", "role": "auditor", "expires_at": "2999-01-01T00:00:00+00:00"}
    assert cli.json("groups", "create", "ops")["name"] == "ops"
    assert cli.json("groups", "assign-role", "ops", "--role", "auditor")["roles"] == ["auditor"]
    cli.json("clients", "create", "--name", "RP", "--redirect-uri", "http://127.0.0.1/cb", "--client-id", "rp1",
             "--scope", "openid email roles department")
    out = cli.json("claims", "explain", "--user", "ann@example.com", "--client", "rp1",
                   "--scope", "openid email roles department permissions")
    assert out["scope"] == "openid email roles department" and out["ignored_scopes"] == ["permissions"]
    by_claim = {c["claim"]: c for c in out["claims"]}
    assert by_claim["roles"]["value"] == ["auditor", "viewer", "editor"]
    assert by_claim["department"] == {"claim": "department", "value": "eng", "scope": "department",
                                      "source": "scope department: scopes.department: subject.department",
                                      "in": ["id_token", "access_token", "userinfo", "introspection"]}
    assert by_claim["email"]["source"] == "scope email (OIDC Core §5.4)"
    assert 0 < out["id_token"]["size"] <= 4096 and out["id_token"]["omitted_claims"] == []
    assert cli.json("roles", "unassign", "--user", "ann@example.com", "--role", "auditor")["unassigned"] is True
    assert cli.json("groups", "remove-member", "writers", "--user", "ann@example.com")["members"] == []


def test_errors_are_one_line_and_write_nothing(cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(json.dumps({**POLICY, "rules": [{**POLICY["rules"][0], "when": "resource.department = x"}]}))
    check_error(cli, "policy", "load", str(bad), message="rules[0] 'same-department-writes'.when: position 21:")
    cyc = tmp_path / "cycle.json"
    cyc.write_text(json.dumps({"roles": {"viewer": {"parents": ["editor"]}}}))
    check_error(cli, "policy", "load", str(cyc), message="role hierarchy has a cycle")
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"rules": [{"name": "x", "permission": "nothing:read", "when": "subject.a == 1"}]}))
    check_error(cli, "policy", "validate", str(unknown), message="rules[0] 'x'.permission: unknown permission")
    broken = tmp_path / "broken.yaml"
    broken.write_text("roles:\n  viewer: [\n")
    check_error(cli, "policy", "load", str(broken), message="line 3 column 1")
    check_error(cli, "roles", "create", "x", "--parent", "nope", message="no role nope")
    check_error(cli, "roles", "assign", "--user", "ann@example.com", "--role", "viewer", "--expires-at", "soon",
                message="ISO 8601")
    check_error(cli, "users", "set-attribute", "--user", "ann@example.com", "novalue", message="KEY=VALUE")
    check_error(cli, "policy", "explain", "--user", "ann@example.com", "--permission", "nope",
                message="invalid permission")
