"""The `idp` operator CLI. Its shapes are an interface for automation: `--json` prints one JSON
document on stdout; any error prints one line on stderr, exits non-zero and writes nothing."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
from flask import current_app
from flask.cli import FlaskGroup, ScriptInfo, with_appcontext
from flask_migrate.cli import db as db_group
from sqlalchemy.exc import SQLAlchemyError

from .errors import IdpError, InvalidInput
from .settings import Settings, SettingsError


def _create_app():
    from . import create_app

    return create_app(Settings.from_env())


def _emit(as_json: bool, data, text: str | None = None) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        click.echo(text if text is not None else "\n".join(f"{k}: {v}" for k, v in data.items()))


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


@click.group(cls=FlaskGroup, create_app=_create_app, add_default_commands=False, add_version_option=False,
             load_dotenv=False, set_debug_flag=False)
def cli():
    """idp: OAuth 2.0 / OpenID Connect identity provider."""


cli.add_command(db_group)


def _settings() -> Settings:
    return current_app.extensions["idp"].settings


# --- serve ----------------------------------------------------------------------------------

@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64))
@with_appcontext
def serve(host, port, workers):
    """Serve under gunicorn (creates the first signing key if there is none)."""
    from .services import keys

    settings = _settings()
    _require_migrated()
    created = keys.ensure_signing_key(_kek())
    if created:
        click.echo(f"created signing key {created.kid}")
    click.echo(f"idp issuer: {settings.issuer}")
    click.echo(f"discovery:  {settings.issuer}/.well-known/openid-configuration")
    click.echo("register a first client:\n  .venv/bin/idp clients create --name 'My app' "
               "--redirect-uri http://127.0.0.1:8080/callback --grant-type authorization_code "
               "--grant-type refresh_token --scope 'openid profile email offline_access' --json")
    sys.stdout.flush()
    root = Path(__file__).resolve().parent.parent
    args = [sys.executable, "-m", "gunicorn", "--chdir", str(root), "-b", f"{host}:{port}", "-w", str(workers),
            "wsgi:app"]
    os.execv(sys.executable, args)


def _require_migrated() -> None:
    from sqlalchemy import inspect

    from .storage.models import db

    if not inspect(db.engine).has_table("clients"):
        raise click.ClickException("the database has no tables: run `idp db upgrade` first")


def _kek() -> bytes:
    from .settings import decode_kek

    return decode_kek(_settings().key_encryption_key)


# --- clients --------------------------------------------------------------------------------

@cli.group()
def clients():
    """Register and manage OAuth clients."""


@clients.command("create")
@click.option("--name", required=True)
@click.option("--redirect-uri", "redirect_uris", multiple=True, help="Exact redirect URI (repeatable).")
@click.option("--grant-type", "grant_types", multiple=True,
              type=click.Choice(["authorization_code", "refresh_token", "client_credentials"]),
              help="Repeatable; default authorization_code.")
@click.option("--scope", default="openid", show_default=True, help="Space-separated scopes the client may ask for.")
@click.option("--public", is_flag=True, help="Public client (no secret; PKCE required).")
@click.option("--post-logout-redirect-uri", "logout_uris", multiple=True)
@click.option("--token-endpoint-auth-method",
              type=click.Choice(["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]))
@click.option("--jwks-file", type=click.Path(dir_okay=False), help="JWKS (JSON) for private_key_jwt.")
@click.option("--jwks-uri", help="JWKS URL for private_key_jwt.")
@click.option("--skip-consent", is_flag=True, help="First-party client: no consent screen.")
@click.option("--require-pkce", is_flag=True, help="Require PKCE even though the client is confidential.")
@click.option("--client-id", help="Choose the client id (default: random).")
@click.option("--backchannel-logout-uri", help="OpenID Back-Channel Logout: where logout tokens are POSTed.")
@click.option("--backchannel-logout-session-required", is_flag=True, help="The client needs sid in logout tokens.")
@click.option("--require-mfa", is_flag=True, help="Every login to this client passes a second factor.")
@json_option
@with_appcontext
def clients_create(name, redirect_uris, grant_types, scope, public, logout_uris, token_endpoint_auth_method,
                   jwks_file, jwks_uri, skip_consent, require_pkce, client_id, as_json,
                   backchannel_logout_uri=None, backchannel_logout_session_required=False, require_mfa=False):
    """Register a client. The secret is printed once and stored only as a hash."""
    from .services.clients import ClientSpec, create_client, describe

    jwks = None
    if jwks_file:
        try:
            jwks = json.loads(Path(jwks_file).read_text())
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"cannot read JWKS from {jwks_file}: {exc}") from None
    spec = ClientSpec(name=name, redirect_uris=list(redirect_uris), grant_types=list(grant_types), scope=scope,
                      public=public, post_logout_redirect_uris=list(logout_uris),
                      token_endpoint_auth_method=token_endpoint_auth_method, skip_consent=skip_consent,
                      require_pkce=require_pkce, jwks=jwks, jwks_uri=jwks_uri, client_id=client_id,
                      backchannel_logout_uri=backchannel_logout_uri,
                      backchannel_logout_session_required=backchannel_logout_session_required,
                      require_mfa=require_mfa)
    client, secret = create_client(spec)
    data = describe(client)
    if secret:
        data["client_secret"] = secret
    text = f"client_id: {client.client_id}"
    if secret:
        text += f"\nclient_secret: {secret}\n(store the secret now: it is not shown again)"
    _emit(as_json, data, text)


@clients.command("list")
@json_option
@with_appcontext
def clients_list(as_json):
    from .services.clients import describe, list_clients

    rows = [describe(c) for c in list_clients()]
    _emit(as_json, rows, "\n".join(f"{r['client_id']}\t{r['client_name']}\t{' '.join(r['grant_types'])}"
                                   for r in rows) or "no clients")


@clients.command("show")
@click.argument("client_id")
@json_option
@with_appcontext
def clients_show(client_id, as_json):
    from .policy.report import worst_case_token_size
    from .services import backchannel
    from .services.clients import describe, get_client

    client = get_client(client_id)
    data = describe(client)
    if data.get("backchannel_logout_uri"):  # last delivery status of logout tokens
        data["backchannel_logout_status"] = backchannel.status(client_id)
    # Largest ID/access token any user could get, policy claims included (issue: token budget).
    data["worst_case_token_size"] = worst_case_token_size(client)
    _emit(as_json, data)


@clients.command("update")
@click.argument("client_id")
@click.option("--require-mfa/--no-require-mfa", default=None, help="Every login to this client passes a second factor.")
@json_option
@with_appcontext
def clients_update(client_id, require_mfa, as_json):
    """Change a client's settings (today: the MFA requirement).

    \b
    idp clients update my-app --require-mfa
    """
    from .services.clients import describe, get_client, set_require_mfa

    client = get_client(client_id) if require_mfa is None else set_require_mfa(client_id, require_mfa)
    _emit(as_json, describe(client), f"client {client_id}: require_mfa={'yes' if client.require_mfa else 'no'}")


@clients.command("delete")
@click.argument("client_id")
@json_option
@with_appcontext
def clients_delete(client_id, as_json):
    from .services.clients import delete_client

    delete_client(client_id)
    _emit(as_json, {"client_id": client_id, "deleted": True}, f"deleted client {client_id}")


@clients.command("rotate-secret")
@click.argument("client_id")
@json_option
@with_appcontext
def clients_rotate_secret(client_id, as_json):
    """Issue a new secret; the old one stops working at once."""
    from .services.clients import rotate_secret

    secret = rotate_secret(client_id)
    _emit(as_json, {"client_id": client_id, "client_secret": secret}, f"client_secret: {secret}")


# --- users ----------------------------------------------------------------------------------

@cli.group()
def users():
    """Manage user accounts."""


@users.command("create")
@click.option("--email", required=True)
@click.option("--password", help="Initial password (prompted if omitted).")
@click.option("--verified", is_flag=True, help="Mark the email address as verified.")
@click.option("--name")
@click.option("--role", "roles", multiple=True, help="Role to assign (repeatable; created if missing).")
@json_option
@with_appcontext
def users_create(email, password, verified, name, roles, as_json):
    from .services.users import create_user, describe

    if password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    user = create_user(email, password, name=name, verified=verified, roles=list(roles))
    _emit(as_json, describe(user), f"created user {user.email} (id {user.id})")


@users.command("list")
@json_option
@with_appcontext
def users_list(as_json):
    from .services.users import describe, list_users

    rows = [describe(u) for u in list_users()]
    _emit(as_json, rows, "\n".join(f"{r['id']}\t{r['email']}\t{'disabled' if r['disabled'] else 'active'}"
                                   for r in rows) or "no users")


@users.command("show")
@click.argument("user")
@json_option
@with_appcontext
def users_show(user, as_json):
    """USER is an email address or a user id."""
    from .services.users import describe, find_user

    _emit(as_json, describe(find_user(user)))


@users.command("disable")
@click.argument("user")
@json_option
@with_appcontext
def users_disable(user, as_json):
    from .services.users import describe, disable_user, find_user

    row = find_user(user)
    disable_user(row)
    _end_everything(row.id, "admin_disable")
    _emit(as_json, describe(row), f"disabled {row.email}")


def _end_everything(user_id: str, reason: str) -> None:
    """Sessions and refresh tokens of the user end; clients with a back-channel logout URI
    are told at once (one delivery attempt here, retries by the server's workers)."""
    from .services import audit, backchannel, sessions, tokens

    idp = current_app.extensions["idp"]
    sessions.end_all_sessions(idp.store, user_id)
    tokens.revoke_user_tokens(idp.store, user_id, idp.settings.refresh_token_ttl)
    audit.record_event("logout", "success", user_id=user_id, reason=reason)
    backchannel.deliver_due(idp.keyring, idp.settings)


@users.command("delete")
@click.argument("user")
@json_option
@with_appcontext
def users_delete(user, as_json):
    from .services.users import delete_user, find_user

    row = find_user(user)
    data = {"id": row.id, "email": row.email, "deleted": True}
    delete_user(row)
    _emit(as_json, data, f"deleted {data['email']}")


@users.command("set-password")
@click.argument("user")
@click.option("--password", help="New password (prompted if omitted).")
@json_option
@with_appcontext
def users_set_password(user, password, as_json):
    from .services.users import find_user, set_password

    row = find_user(user)
    if password is None:
        password = click.prompt("New password", hide_input=True, confirmation_prompt=True)
    set_password(row, password)
    _emit(as_json, {"id": row.id, "email": row.email, "password_set": True}, f"password set for {row.email}")


# --- keys -----------------------------------------------------------------------------------

@cli.group()
def keys():
    """Signing keys (RS256)."""


def _describe_key(key) -> dict:
    return {"kid": key.kid, "alg": key.alg, "state": key.state, "created_at": key.created_at.isoformat(),
            "activated_at": key.activated_at.isoformat() if key.activated_at else None,
            "retired_at": key.retired_at.isoformat() if key.retired_at else None,
            "remove_after": key.remove_after.isoformat() if key.remove_after else None}


@keys.command("list")
@json_option
@with_appcontext
def keys_list(as_json):
    from .services.keys import list_keys

    rows = [_describe_key(k) for k in list_keys()]
    _emit(as_json, rows, "\n".join(f"{r['kid']}\t{r['alg']}\t{r['state']}\tcreated {r['created_at']}"
                                   for r in rows) or "no keys")


@keys.command("rotate")
@click.option("--immediate", is_flag=True,
              help="Sign with the new key at once (key compromise); otherwise it is published first.")
@json_option
@with_appcontext
def keys_rotate(immediate, as_json):
    """Create a new signing key. It is published in the JWKS at once and starts signing after
    IDP_KEY_PREPUBLISH_TTL seconds; the old key stays published until its tokens expire."""
    from .services.keys import rotate

    keyring = current_app.extensions["idp"].keyring
    key = rotate(_kek(), immediate=immediate, policy=keyring.policy)
    _emit(as_json, _describe_key(key), f"created key {key.kid} ({key.state})")


def _register_feature_commands() -> None:
    from . import cli_accounts, cli_policy, cli_saml

    cli_policy.register(cli)
    cli_accounts.register(cli)
    cli_saml.register(cli)


_register_feature_commands()


def main(argv: list[str] | None = None) -> int:
    """Entry point: every failure is one line on stderr and a non-zero exit."""
    try:
        rv = cli.main(args=argv, prog_name="idp", standalone_mode=False, obj=ScriptInfo(create_app=_create_app,
                                                                                        set_debug_flag=False,
                                                                                        load_dotenv_defaults=False))
        return rv if isinstance(rv, int) else 0
    except click.exceptions.Abort:
        click.echo("idp: aborted", err=True)
        return 1
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        click.echo(f"idp: error: {exc.format_message()}", err=True)
        return exc.exit_code
    except (IdpError, SettingsError) as exc:
        click.echo(f"idp: error: {exc}", err=True)
        return 1
    except SQLAlchemyError as exc:
        # No traceback, SQL or parameters: the driver's first line, e.g. "no such table: clients".
        detail = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
        click.echo(f"idp: error: database: {detail} (is it reachable, and has `idp db upgrade` run?)", err=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
