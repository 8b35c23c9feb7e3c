"""`idp roles|groups|policy|claims` commands and `idp users set-attribute` (authorization policy).

Shapes are an interface for automation: each takes `--json`; an error is one line on stderr,
a non-zero exit and nothing written (idp/cli.py main() maps IdpError subclasses).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click
from flask.cli import with_appcontext

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def _emit(as_json: bool, data, text: str) -> None:
    click.echo(json.dumps(data, indent=2, default=str) if as_json else text)


def _user(email: str):
    from .services.users import find_user

    return find_user(email)


def _pairs(values, option: str) -> dict:
    from .policy.admin import parse_attribute

    out = {}
    for pair in values:
        key, value = parse_attribute(pair) if "=" in pair else (None, None)
        if key is None:
            from .errors import InvalidInput

            raise InvalidInput(f"{option} expects KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


# --- roles -----------------------------------------------------------------------------------

@click.group()
def roles():
    """Roles: permissions, parent roles, assignments to users."""


@roles.command("create")
@click.argument("name")
@click.option("--parent", "parents", multiple=True, help="Parent role whose permissions it inherits (repeatable).")
@click.option("--permission", "permissions", multiple=True, help="resource:action or resource:* (repeatable).")
@json_option
@with_appcontext
def roles_create(name, parents, permissions, as_json):
    from .policy import admin

    role = admin.create_role(name, list(parents), list(permissions))
    _emit(as_json, admin.describe_role(role), f"created role {name}")


@roles.command("list")
@json_option
@with_appcontext
def roles_list(as_json):
    from sqlalchemy import select

    from .policy import admin
    from .storage.models import Role, db

    rows = [admin.describe_role(r) for r in db.session.scalars(select(Role).order_by(Role.name))]
    _emit(as_json, rows, "\n".join(f"{r['name']}\tparents: {','.join(r['parents']) or '-'}\t"
                                   f"{' '.join(r['permissions'])}" for r in rows) or "no roles")


@roles.command("delete")
@click.argument("name")
@json_option
@with_appcontext
def roles_delete(name, as_json):
    from .policy import admin

    admin.delete_role(name)
    _emit(as_json, {"name": name, "deleted": True}, f"deleted role {name}")


@roles.command("grant")
@click.argument("name")
@click.argument("permissions", nargs=-1, required=True)
@json_option
@with_appcontext
def roles_grant(name, permissions, as_json):
    from .policy import admin

    role = admin.grant_permissions(name, list(permissions))
    _emit(as_json, admin.describe_role(role), f"role {name}: {' '.join(admin.describe_role(role)['permissions'])}")


@roles.command("revoke")
@click.argument("name")
@click.argument("permissions", nargs=-1, required=True)
@json_option
@with_appcontext
def roles_revoke(name, permissions, as_json):
    from .policy import admin

    role = admin.revoke_permissions(name, list(permissions))
    _emit(as_json, admin.describe_role(role), f"role {name}: {' '.join(admin.describe_role(role)['permissions'])}")


@roles.command("assign")
@click.option("--user", "email", required=True, help="Email address or user id.")
@click.option("--role", "role", required=True)
@click.option("--expires-at", help="ISO 8601 instant after which the assignment no longer counts.")
@json_option
@with_appcontext
def roles_assign(email, role, expires_at, as_json):
    from .policy import admin

    when = admin.parse_expiry(expires_at)
    user = _user(email)
    admin.assign_role(user, role, when)
    data = {"user": user.email, "role": role, "expires_at": when.isoformat() if when else None}
    _emit(as_json, data, f"assigned {role} to {user.email}" + (f" until {when.isoformat()}" if when else ""))


@roles.command("unassign")
@click.option("--user", "email", required=True)
@click.option("--role", "role", required=True)
@json_option
@with_appcontext
def roles_unassign(email, role, as_json):
    from .policy import admin

    user = _user(email)
    admin.unassign_role(user, role)
    _emit(as_json, {"user": user.email, "role": role, "unassigned": True}, f"unassigned {role} from {user.email}")


# --- groups ----------------------------------------------------------------------------------

@click.group()
def groups():
    """Groups of users; a member holds every role of the group."""


@groups.command("create")
@click.argument("name")
@json_option
@with_appcontext
def groups_create(name, as_json):
    from .policy import admin

    _emit(as_json, admin.describe_group(admin.create_group(name)), f"created group {name}")


@groups.command("delete")
@click.argument("name")
@json_option
@with_appcontext
def groups_delete(name, as_json):
    from .policy import admin

    admin.delete_group(name)
    _emit(as_json, {"name": name, "deleted": True}, f"deleted group {name}")


@groups.command("list")
@json_option
@with_appcontext
def groups_list(as_json):
    from sqlalchemy import select

    from .policy import admin
    from .storage.models import db
    from .storage.policy_models import Group

    rows = [admin.describe_group(g) for g in db.session.scalars(select(Group).order_by(Group.name))]
    _emit(as_json, rows, "\n".join(f"{r['name']}\troles: {','.join(r['roles']) or '-'}\t"
                                   f"{len(r['members'])} members" for r in rows) or "no groups")


def _group_change(verb: str):
    @click.argument("name")
    @click.option("--user", "email", required=True, help="Email address or user id.")
    @json_option
    @with_appcontext
    def command(name, email, as_json):
        from .policy import admin

        user = _user(email)
        (admin.add_member if verb == "add" else admin.remove_member)(name, user)
        group = admin.get_group(name)
        _emit(as_json, admin.describe_group(group),
              f"{'added' if verb == 'add' else 'removed'} {user.email} {'to' if verb == 'add' else 'from'} {name}")
    return command


groups.command("add-member", help="Add a user to a group.")(_group_change("add"))
groups.command("remove-member", help="Remove a user from a group.")(_group_change("remove"))


@groups.command("assign-role")
@click.argument("name")
@click.option("--role", "role", required=True)
@json_option
@with_appcontext
def groups_assign_role(name, role, as_json):
    from .policy import admin

    admin.assign_group_role(name, role)
    _emit(as_json, admin.describe_group(admin.get_group(name)), f"group {name} has role {role}")


# --- users (attributes and direct permissions) -----------------------------------------------

@click.command("set-attribute")
@click.option("--user", "email", required=True, help="Email address or user id.")
@click.argument("pairs", nargs=-1, required=True, metavar="KEY=VALUE...")
@json_option
@with_appcontext
def users_set_attribute(email, pairs, as_json):
    """Set attributes (subject.KEY in rules). VALUE is a number, true/false, or a string;
    KEY=null removes the attribute."""
    from .policy import admin

    user = _user(email)
    attributes = admin.set_attributes(user, list(pairs))
    _emit(as_json, {"user": user.email, "attributes": attributes},
          "\n".join(f"{k}={json.dumps(v)}" for k, v in attributes.items()) or "no attributes")


def _user_permissions(grant: bool):
    @click.option("--user", "email", required=True)
    @click.argument("permissions", nargs=-1, required=True)
    @json_option
    @with_appcontext
    def command(email, permissions, as_json):
        from .policy import admin
        from .policy.store import load_subject

        user = _user(email)
        (admin.grant_user_permissions if grant else admin.revoke_user_permissions)(user, list(permissions))
        direct = load_subject(user).permissions
        _emit(as_json, {"user": user.email, "permissions": direct}, f"{user.email}: {' '.join(direct) or '-'}")
    return command


# --- policy ----------------------------------------------------------------------------------

@click.group()
def policy():
    """Policy files (YAML or JSON), decisions and their explanation."""


@policy.command("validate")
@click.argument("file", type=click.Path(dir_okay=False))
@json_option
@with_appcontext
def policy_validate(file, as_json):
    """Check a policy file against itself and the database; writes nothing."""
    from .policy.files import read_document, validate_document

    counts = {k: len(v) for k, v in validate_document(read_document(file)).items()}
    _emit(as_json, {"file": file, "valid": True, **counts},
          f"{file}: valid ({', '.join(f'{v} {k}' for k, v in counts.items())})")


@policy.command("load")
@click.argument("file", type=click.Path(dir_okay=False))
@json_option
@with_appcontext
def policy_load(file, as_json):
    """Apply a policy file in one transaction (all or nothing)."""
    from .policy.files import load_document, read_document

    counts = load_document(read_document(file))
    _emit(as_json, {"file": file, "loaded": True, **counts},
          f"loaded {file} ({', '.join(f'{v} {k}' for k, v in counts.items())})")


@policy.command("show")
@json_option
@with_appcontext
def policy_show(as_json):
    """The current policy, in the policy file's shape (YAML, or JSON with --json)."""
    import yaml

    from .policy.files import dump_policy

    data = dump_policy()
    _emit(as_json, data, yaml.safe_dump(data, sort_keys=False).rstrip())


@policy.command("explain")
@click.option("--user", "email", required=True)
@click.option("--permission", required=True, help="resource:action")
@click.option("--resource-attr", "resource_attrs", multiple=True, help="KEY=VALUE (repeatable).")
@click.option("--context", "context", multiple=True, help="KEY=VALUE (repeatable); time, weekday default to now (UTC).")
@json_option
@with_appcontext
def policy_explain(email, permission, resource_attrs, context, as_json):
    """Decide and explain. Exits 0 whether allowed or not."""
    from .policy.cache import policy_cache
    from .policy.conditions import WEEKDAYS
    from .policy.engine import check_permission_name

    check_permission_name(permission)
    user = _user(email)
    now = datetime.now(UTC)
    ctx = {"time": now.strftime("%H:%M"), "weekday": WEEKDAYS[now.weekday()], "date": now.date().isoformat(),
           **_pairs(context, "--context")}
    cache = policy_cache()
    decision = cache.policy().decide(cache.subject(user), permission, _pairs(resource_attrs, "--resource-attr"), ctx)
    data = decision.as_dict()
    lines = [f"{'ALLOWED' if decision.allowed else 'DENIED'}: {permission} for {user.email}",
             f"reason: {decision.reason}"]
    lines += [f"  grant: {g}" for g in decision.granted_by]
    lines += [f"  rule {r['name']} ({r['effect']}): {r['result']}  [{r['when']}]" for r in decision.rules]
    _emit(as_json, data, "\n".join(lines))


# --- claims ----------------------------------------------------------------------------------

@click.group()
def claims():
    """Which claims a client receives for a user."""


@claims.command("explain")
@click.option("--user", "email", required=True)
@click.option("--client", "client_id", required=True)
@click.option("--scope", required=True, help='Space-separated scopes, e.g. "openid roles department".')
@json_option
@with_appcontext
def claims_explain(email, client_id, scope, as_json):
    """Every claim the client would get for the user, and what put it there."""
    from .policy.report import explain_claims
    from .services.clients import get_client

    data = explain_claims(_user(email), get_client(client_id), scope)
    lines = [f"granted scope: {data['scope']}"]
    if data["ignored_scopes"]:
        lines.append(f"ignored (client not registered for them): {' '.join(data['ignored_scopes'])}")
    lines += [f"{c['claim']} = {json.dumps(c['value'])}   <- {c['source']}" for c in data["claims"]]
    for token in ("id_token", "access_token"):
        t = data[token]
        lines.append(f"{token}: ~{t['size']} bytes (budget {t['max_bytes']})"
                     + (f", omitted: {' '.join(t['omitted_claims'])}" if t["omitted_claims"] else ""))
    _emit(as_json, data, "\n".join(lines))


def register(cli) -> None:
    cli.add_command(roles)
    cli.add_command(groups)
    cli.add_command(policy)
    cli.add_command(claims)
    users = cli.commands["users"]
    users.add_command(users_set_attribute)
    users.add_command(click.command("grant-permission", help="Give a user direct permissions.")(
        _user_permissions(True)))
    users.add_command(click.command("revoke-permission", help="Take direct permissions from a user.")(
        _user_permissions(False)))
