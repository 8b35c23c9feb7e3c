"""`idp saml` commands, SP keys, IdP metadata refresh, attribute mapping and provisioning."""

from __future__ import annotations

import json
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner
from flask.cli import ScriptInfo
from sqlalchemy import func, select

from idp.cli import cli
from idp.errors import Conflict, InvalidInput, NotFound
from idp.federation import connections
from idp.federation.mapping import check_map, map_identity
from idp.federation.provisioning import ProvisioningRefused, provision_user
from idp.storage.federation_models import FederatedIdentity, SamlConnection, SamlSpKey
from idp.storage.models import User, db
from tests.conftest import ROOT
from tests.factories import make_user

from .conftest import NAME, Flow, add_connection


def run(app, *args):
    result = CliRunner().invoke(cli, list(args), obj=ScriptInfo(create_app=lambda: app))
    return result


def counts(app) -> tuple[int, int]:
    with app.app_context():
        return (db.session.scalar(select(func.count()).select_from(SamlConnection)),
                db.session.scalar(select(func.count()).select_from(SamlSpKey)))


@pytest.fixture()
def metadata_file(tmp_path, test_idp):
    path = tmp_path / "idp-metadata.xml"
    path.write_text(test_idp.metadata())
    return path


def test_add_show_list_delete(app, metadata_file, tmp_path):
    (tmp_path / "map.yaml").write_text("claims:\n  email: [upn]\nattributes:\n  department: ou\n")
    result = run(app, "saml", "add", "--name", "corp", "--metadata-file", str(metadata_file), "--attribute-map",
                 str(tmp_path / "map.yaml"), "--provisioning", "link-by-email", "--email-domain", "Corp.Example",
                 "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["acs_url"] == "http://127.0.0.1:5000/saml/corp/acs"
    assert data["idp_entity_id"] == "https://idp.example.test/metadata" and data["email_domains"] == ["corp.example"]
    assert data["attribute_map"]["claims"] == {"email": ["upn"]} and data["sp_keys"][0]["state"] == "current"
    shown = json.loads(run(app, "saml", "show", "corp", "--json").output)
    assert len(shown["idp_signing_certificates_sha256"]) == 1
    assert [r["name"] for r in json.loads(run(app, "saml", "list", "--json").output)] == ["corp"]
    with app.app_context():
        key = db.session.scalar(select(SamlSpKey))
        assert b"PRIVATE KEY" not in key.private_key_encrypted  # encrypted at rest
    assert run(app, "saml", "delete", "corp").exit_code == 0
    assert counts(app) == (0, 0)


@pytest.mark.parametrize("args,error", [
    (["--name", "Bad Name"], InvalidInput),
    (["--name", "ok", "--provisioning", "jit"], InvalidInput),  # no metadata at all
])
def test_add_refuses_and_writes_nothing(app, args, error):
    result = run(app, "saml", "add", *args)
    assert isinstance(result.exception, error) or result.exit_code != 0
    assert counts(app) == (0, 0)


def test_add_refuses_bad_metadata_map_and_duplicates(app, metadata_file, tmp_path):
    bad = tmp_path / "bad.xml"
    bad.write_text('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>')
    assert isinstance(run(app, "saml", "add", "--name", "a", "--metadata-file", str(bad)).exception, InvalidInput)
    (tmp_path / "map.json").write_text('{"claims": {"colour": "c"}}')
    result = run(app, "saml", "add", "--name", "a", "--metadata-file", str(metadata_file),
                 "--attribute-map", str(tmp_path / "map.json"))
    assert isinstance(result.exception, InvalidInput) and "claims" in str(result.exception)
    assert counts(app) == (0, 0)
    assert run(app, "saml", "add", "--name", "a", "--metadata-file", str(metadata_file)).exit_code == 0
    assert isinstance(run(app, "saml", "add", "--name", "a", "--metadata-file", str(metadata_file)).exception,
                      Conflict)
    assert isinstance(run(app, "saml", "show", "nope").exception, NotFound)
    assert counts(app) == (1, 1)


def test_help_tells_how_metadata_is_refreshed(app):
    """--metadata-url: refreshed in the background every IDP_SAML_METADATA_REFRESH_TTL seconds
    (metadata_refresh.py), not "daily on use"; the default said is the setting's."""
    from idp.settings import Settings

    for command in ("add", "update"):
        result = run(app, "saml", command, "--help")
        assert result.exit_code == 0, result.output
        text = " ".join(result.output.split())
        assert "daily" not in text and "on use" not in text
    text = " ".join(run(app, "saml", "add", "--help").output.split())
    assert "in the background every IDP_SAML_METADATA_REFRESH_TTL seconds" in text
    assert f"(default {Settings().saml_metadata_refresh_ttl};" in text


def test_console_script_error_is_one_line(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "IDP_INSTANCE_PATH": str(tmp_path / "i"), "IDP_KEYS_PATH": str(tmp_path / "k")}
    result = subprocess.run([str(ROOT / ".venv/bin/idp"), "saml", "add", "--name", "x", "--metadata-file",
                             str(tmp_path / "missing.xml")], env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("idp: error: cannot read metadata file")


def test_key_rotation_keeps_previous_certificate_in_metadata(app, client, metadata_file):
    assert run(app, "saml", "add", "--name", "corp", "--metadata-file", str(metadata_file)).exit_code == 0
    before = client.get("/saml/corp/metadata").get_data(as_text=True)
    assert before.count("<md:KeyDescriptor") == 1
    data = json.loads(run(app, "saml", "rotate-key", "corp", "--json").output)
    assert [k["state"] for k in data["sp_keys"]] == ["current", "previous"]
    after = client.get("/saml/corp/metadata").get_data(as_text=True)
    assert after.count("<md:KeyDescriptor") == 2
    assert json.loads(run(app, "saml", "remove-previous-keys", "corp", "--json").output)["removed"]
    assert client.get("/saml/corp/metadata").get_data(as_text=True).count("<md:KeyDescriptor") == 1


class MetadataServer:
    def __init__(self, body: str):
        self.body = body
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                outer.hits += 1
                data = outer.body.encode()
                self.send_response(200 if outer.body else 500)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/metadata"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def test_metadata_url_refresh_keeps_last_good_copy(app, test_idp):
    server = MetadataServer(test_idp.metadata())
    try:
        assert run(app, "saml", "add", "--name", "corp", "--metadata-url", server.url).exit_code == 0
        good = server.body
        server.body = "<not metadata"
        result = run(app, "saml", "refresh-metadata", "corp")
        assert isinstance(result.exception, InvalidInput)
        with app.app_context():
            conn = connections.get_connection("corp")
            assert conn.idp_metadata_xml == good and "does not parse" in conn.metadata_error
        server.body = ""  # HTTP 500
        assert isinstance(run(app, "saml", "refresh-metadata", "corp").exception, InvalidInput)
        server.body = good.replace("idp.example.test/sso", "idp.example.test/sso2")
        assert json.loads(run(app, "saml", "refresh-metadata", "corp", "--json").output)["changed"] is True
        with app.app_context():
            assert connections.get_connection("corp").metadata_error is None
    finally:
        server.httpd.shutdown()


def test_metadata_url_must_be_https_off_loopback(app):
    result = run(app, "saml", "add", "--name", "corp", "--metadata-url", "http://idp.example.com/md")
    assert isinstance(result.exception, InvalidInput) and counts(app) == (0, 0)


# --- mapping ----------------------------------------------------------------------------------

def test_default_mapping_knows_microsoft_and_oid_names():
    ident = map_identity(check_map({}), provider="corp", protocol="saml", name_id="opaque-123", attributes={
        "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress": ["Bob@Corp.Example"],
        "urn:oid:2.5.4.42": ["Bob"], "urn:oid:2.5.4.4": ["Builder"],
        "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups": ["staff", "ops"]})
    assert ident.subject == "opaque-123" and ident.email == "bob@corp.example"
    assert ident.claims == {"given_name": "Bob", "family_name": "Builder"} and ident.groups == ("staff", "ops")


@pytest.mark.parametrize("names", [
    # Okta profile attributes sent under their own names, and the names Okta's app wizard suggests.
    {"email": "user.email", "given_name": "user.firstName", "family_name": "user.lastName", "name": "user.displayName"},
    {"email": "email", "given_name": "firstName", "family_name": "lastName", "name": "displayName"},
    {"email": "Email", "given_name": "firstName", "family_name": "lastName", "name": "fullName"},
])
def test_default_mapping_knows_okta_names(names):
    """An Okta NameID is often its opaque user id: the email must come from the attribute."""
    values = {"email": "Dana@Corp.Example", "given_name": "Dana", "family_name": "Scully", "name": "Dana Scully"}
    attributes = {names[claim]: [values[claim]] for claim in names} | {"groups": ["Everyone", "Engineering"]}
    ident = map_identity(check_map({}), provider="okta", protocol="saml", name_id="00u1a2b3c4D5e6F7g8h9",
                         attributes=attributes)
    assert ident.subject == "00u1a2b3c4D5e6F7g8h9" and ident.email == "dana@corp.example"
    assert ident.claims == {"given_name": "Dana", "family_name": "Scully", "name": "Dana Scully"}
    assert ident.groups == ("Everyone", "Engineering")
    # Only through the defaults: without them nothing is mapped.
    bare = map_identity(check_map({"defaults": False}), provider="okta", protocol="saml",
                        name_id="00u1a2b3c4D5e6F7g8h9", attributes=attributes)
    assert bare.email is None and bare.claims == {} and bare.groups == ()


def test_okta_names_through_the_idp(app, test_idp):
    """The same names in a real signed response (an Okta-like IdP signing only the Response,
    NameID its opaque user id): the account gets the email and names from the attributes."""
    test_idp.signs = "response"
    add_connection(app, test_idp)
    flow = Flow(app, test_idp)
    request, relay = flow.start()
    xml = test_idp.response_xml(request, name_id="00u1a2b3c4D5e6F7g8h9", identity={
        "user.email": ["Dana@Corp.Example"], "user.firstName": ["Dana"], "user.lastName": ["Scully"],
        "user.displayName": ["Dana Scully"], "groups": ["Engineering"]})
    assert 'Name="user.firstName"' in xml
    assert flow.finish(flow.post(xml, relay)).status_code == 302
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == "dana@corp.example"))
        assert user is not None and user.profile == {"given_name": "Dana", "family_name": "Scully"}
        link = db.session.scalar(select(FederatedIdentity).where(FederatedIdentity.user_id == user.id))
        assert link.subject == "00u1a2b3c4D5e6F7g8h9"


def test_mapping_subject_from_attribute_and_custom_names():
    map_ = check_map({"claims": {"email": "upn"}, "attributes": {"department": "ou"}, "subject": "employeeId",
                      "defaults": False})
    ident = map_identity(map_, provider="corp", protocol="saml", name_id="transient-1",
                         attributes={"upn": ["carol@corp.example"], "ou": ["R&D"], "employeeId": ["E42"],
                                     "mail": ["ignored@x.example"]})
    assert (ident.subject, ident.email, ident.attributes) == ("E42", "carol@corp.example", {"department": "R&D"})
    with pytest.raises(InvalidInput):
        map_identity(map_, provider="corp", protocol="saml", name_id="t", attributes={})


# --- provisioning -----------------------------------------------------------------------------

def _ident(email="dave@corp.example", subject="dave"):
    return map_identity(check_map({}), provider=NAME, protocol="saml", name_id=subject,
                        attributes={"mail": [email], "displayName": ["Dave"]})


@pytest.mark.parametrize("mode,existing,outcome", [
    ("jit", False, "created"), ("jit", True, "refused"),
    ("link-by-email", True, "linked"), ("link-by-email", False, "created"),
    ("existing-only", True, "linked"), ("existing-only", False, "refused"),
])
def test_provisioning_modes(ctx, test_idp, mode, existing, outcome):
    from idp.settings import decode_kek

    kek = decode_kek(ctx.extensions["idp"].settings.key_encryption_key)
    conn = connections.create_connection(kek, name=NAME, metadata_xml=test_idp.metadata(), provisioning=mode)
    prior = make_user("dave@corp.example") if existing else None
    if outcome == "refused":
        with pytest.raises(ProvisioningRefused):
            provision_user(conn, _ident())
        assert db.session.scalar(select(func.count()).select_from(FederatedIdentity)) == 0
        return
    user = provision_user(conn, _ident())
    assert (user.id == prior.id) if outcome == "linked" else (prior is None and user.email_verified)
    assert user.name == "Dave"
    # The link wins from now on, even if the email changes upstream.
    assert provision_user(conn, _ident(email="dave.new@corp.example")).id == user.id
    assert db.session.scalar(select(func.count()).select_from(User)) == 1
