"""Account commands added to `idp users`: `export` (GDPR Art. 15/20 for operators).

`idp users export USER` prints one JSON document (profile, sessions, consents, refresh-token
grants, audit events), the same as the account page's download. `--json` is accepted for
symmetry with the other commands; the output is always JSON. Errors: one line, exit 1.
"""

from __future__ import annotations

import json

import click
from flask import current_app
from flask.cli import with_appcontext


def register(cli) -> None:
    users = cli.commands["users"]

    @users.command("export")
    @click.argument("user")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON (always on: the export is JSON).")
    @with_appcontext
    def users_export(user, as_json):
        """Print everything stored about USER (id or email) as JSON."""
        from .services.accounts import export_user
        from .services.users import find_user

        data = export_user(current_app.extensions["idp"].store, find_user(user))
        click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))
