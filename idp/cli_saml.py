"""`idp saml` commands (upstream SAML identity providers).

Shapes are an interface for automation: each takes `--json`; an error is one line on stderr,
a non-zero exit and nothing written (idp/cli.py main() maps IdpError subclasses).

    idp saml add --name corp --metadata-url https://adfs.corp.example/FederationMetadata/2007-06/FederationMetadata.xml \\
                 --attribute-map corp-map.yaml --provisioning link-by-email --email-domain corp.example
    idp saml show corp          # our SP entity ID, ACS and metadata URLs to give the IdP's admin
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def _emit(as_json: bool, data, text: str) -> None:
    click.echo(json.dumps(data, indent=2, default=str) if as_json else text)


def _issuer() -> str:
    return current_app.extensions["idp"].settings.issuer


def _kek() -> bytes:
    from .settings import decode_kek

    return decode_kek(current_app.extensions["idp"].settings.key_encryption_key)


def _text(data: dict) -> str:
    lines = [f"{k}: {v}" for k, v in data.items() if k not in ("attribute_map", "sp_keys")]
    lines += [f"sp_key: {k['kid']} ({k['state']})" for k in data["sp_keys"]]
    return "\n".join(lines)


@click.group()
def saml():
    """Upstream SAML 2.0 identity providers (idp is the service provider)."""


@saml.command("add")
@click.option("--name", required=True, help="Short name, used in URLs: /saml/NAME/metadata.")
@click.option("--metadata-file", type=click.Path(dir_okay=False), help="IdP metadata XML file.")
@click.option("--metadata-url", help="IdP metadata URL (https), fetched now, then again in the background every "
              "IDP_SAML_METADATA_REFRESH_TTL seconds (default 3600; 0: only by refresh-metadata).")
@click.option("--attribute-map", type=click.Path(dir_okay=False), help="Attribute map (YAML or JSON).")
@click.option("--provisioning", type=click.Choice(["jit", "link-by-email", "existing-only"]), default="jit",
              show_default=True)
@click.option("--sign-requests/--no-sign-requests", default=True, show_default=True,
              help="Sign AuthnRequests (HTTP-Redirect SigAlg/Signature).")
@click.option("--allow-idp-initiated", is_flag=True, help="Accept unsolicited (IdP-initiated) responses.")
@click.option("--email-domain", "email_domains", multiple=True,
              help="Email domain served by this IdP (repeatable): the login page sends these users straight "
                   "to it.")
@click.option("--require-mfa", is_flag=True, help="Ask for our second factor after this IdP's login.")
@click.option("--clock-skew", "clock_skew_ttl", type=int, default=None,
              help="Seconds of clock skew allowed on this IdP's timestamps (default: IDP_SAML_CLOCK_SKEW).")
@json_option
@with_appcontext
def saml_add(name, metadata_file, metadata_url, attribute_map, provisioning, sign_requests, allow_idp_initiated,
             email_domains, require_mfa, clock_skew_ttl, as_json):
    """Connect an upstream IdP; prints what to give the IdP's administrator."""
    from .errors import InvalidInput
    from .federation import connections
    from .federation.mapping import load_map_file

    if bool(metadata_file) == bool(metadata_url):
        raise InvalidInput("give exactly one of --metadata-file and --metadata-url")
    xml = None
    if metadata_file:
        try:
            xml = Path(metadata_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"cannot read metadata file {metadata_file}: {exc}") from None
    mapping = load_map_file(attribute_map) if attribute_map else {}
    conn = connections.create_connection(
        _kek(), name=name, metadata_xml=xml, metadata_url=metadata_url, attribute_map=mapping,
        provisioning=provisioning, sign_requests=sign_requests, allow_idp_initiated=allow_idp_initiated,
        email_domains=email_domains, require_mfa=require_mfa, clock_skew_ttl=clock_skew_ttl)
    data = connections.describe(conn, _issuer())
    _emit(as_json, data, f"added SAML connection {name}\n"
          f"give the IdP: SP metadata {data['sp_metadata_url']}\n  entity ID {data['sp_entity_id']}\n"
          f"  ACS (HTTP-POST) {data['acs_url']}\n  SLO (HTTP-Redirect, HTTP-POST) {data['slo_url']}")


@saml.command("update")
@click.argument("name")
@click.option("--attribute-map", type=click.Path(dir_okay=False), help="New attribute map (YAML or JSON).")
@click.option("--provisioning", type=click.Choice(["jit", "link-by-email", "existing-only"]))
@click.option("--sign-requests/--no-sign-requests", default=None)
@click.option("--allow-idp-initiated/--no-allow-idp-initiated", default=None)
@click.option("--email-domain", "email_domains", multiple=True,
              help="Email domain served by this IdP (repeatable; replaces the list).")
@click.option("--no-email-domains", is_flag=True, help="Route no email domain to this IdP.")
@click.option("--require-mfa/--no-require-mfa", default=None)
@click.option("--clock-skew", "clock_skew_ttl", type=int, default=None, help="Seconds; -1: back to the default.")
@json_option
@with_appcontext
def saml_update(name, attribute_map, provisioning, sign_requests, allow_idp_initiated, email_domains,
                no_email_domains, require_mfa, clock_skew_ttl, as_json):
    """Change a connection's options; what is not given stays as it is."""
    from .errors import InvalidInput
    from .federation import connections
    from .federation.mapping import load_map_file

    if email_domains and no_email_domains:
        raise InvalidInput("give --email-domain or --no-email-domains, not both")
    keep = connections.UNCHANGED
    conn = connections.update_connection(
        name, attribute_map=load_map_file(attribute_map) if attribute_map else keep,
        provisioning=provisioning or keep, sign_requests=keep if sign_requests is None else sign_requests,
        allow_idp_initiated=keep if allow_idp_initiated is None else allow_idp_initiated,
        email_domains=email_domains if email_domains else [] if no_email_domains else keep,
        require_mfa=keep if require_mfa is None else require_mfa,
        clock_skew_ttl=keep if clock_skew_ttl is None else None if clock_skew_ttl == -1 else clock_skew_ttl)
    data = connections.describe(conn, _issuer())
    _emit(as_json, data, f"updated SAML connection {name}\n" + _text(data))


@saml.command("list")
@json_option
@with_appcontext
def saml_list(as_json):
    from .federation import connections

    rows = [connections.describe(c, _issuer()) for c in connections.list_connections()]
    _emit(as_json, rows, "\n".join(f"{r['name']}\t{r['idp_entity_id']}\t{r['provisioning']}" for r in rows)
          or "no SAML connections")


@saml.command("show")
@click.argument("name")
@json_option
@with_appcontext
def saml_show(name, as_json):
    from .federation import connections
    from .federation import saml as saml_module

    conn = connections.get_connection(name)
    data = connections.describe(conn, _issuer())
    data["idp_signing_certificates_sha256"] = saml_module.sign_check_cert(conn)
    _emit(as_json, data, _text(data))


@saml.command("delete")
@click.argument("name")
@json_option
@with_appcontext
def saml_delete(name, as_json):
    """Remove the connection, its SP keys and its account links (the accounts stay)."""
    from .federation import connections

    connections.delete_connection(name)
    _emit(as_json, {"name": name, "deleted": True}, f"deleted SAML connection {name}")


@saml.command("refresh-metadata")
@click.argument("name")
@json_option
@with_appcontext
def saml_refresh_metadata(name, as_json):
    """Fetch the IdP metadata again now; on failure the last good copy stays in use."""
    from .federation import connections

    conn = connections.get_connection(name)
    changed = connections.refresh_metadata(conn)
    _emit(as_json, {"name": name, "changed": changed, "idp_entity_id": conn.idp_entity_id},
          f"metadata of {name} {'updated' if changed else 'unchanged'}")


@saml.command("rotate-key")
@click.argument("name")
@json_option
@with_appcontext
def saml_rotate_key(name, as_json):
    """New SP key pair; the previous certificate stays in the SP metadata until
    `remove-previous-keys` (give the IdP time to fetch the new one)."""
    from .federation import connections

    conn = connections.get_connection(name)
    key = connections.rotate_sp_key(conn, _kek())
    _emit(as_json, connections.describe(conn, _issuer()), f"new SP key {key.kid} for {name}")


@saml.command("remove-previous-keys")
@click.argument("name")
@json_option
@with_appcontext
def saml_remove_previous_keys(name, as_json):
    from .federation import connections

    removed = connections.remove_previous_sp_keys(connections.get_connection(name))
    _emit(as_json, {"name": name, "removed": removed}, f"removed {len(removed)} previous SP key(s) of {name}")


def register(cli) -> None:
    cli.add_command(saml)
