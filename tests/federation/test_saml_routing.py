"""Email-domain routing (issue 7): an email whose domain an operator routed to a connection
goes straight to that IdP from the login page; the domain alone decides (no enumeration)."""

from __future__ import annotations

import json
import re

from click.testing import CliRunner
from flask.cli import ScriptInfo

from idp.cli import cli
from tests.factories import make_user

from .conftest import NAME, add_connection


def _fields(page: str) -> dict:
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page))


def _submit(flow, email: str, password: str = ""):
    fields = _fields(flow.login_page())
    return flow.browser.post("/login", data={**fields, "email": email, "password": password})


def test_routed_domain_goes_to_the_idp_and_completes_the_round_trip(app, test_idp):
    from .conftest import Flow

    add_connection(app, test_idp, email_domains=["corp.example.test"])
    flow = Flow(app, test_idp)
    response = _submit(flow, "Alice@Corp.Example.TEST")
    target = response.headers["Refresh"].partition("url=")[2]
    assert response.status_code == 200 and target.startswith(f"/saml/{NAME}/login?interaction=")
    assert f'href="{target.replace("&", "&amp;")}"' in response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"
    # The same start as the button: a signed AuthnRequest, RelayState bound to this interaction.
    sso = flow.browser.get(target)
    assert sso.status_code == 302 and sso.headers["Location"].startswith(test_idp.sso_url)
    request, relay = test_idp.parse_request(sso.headers["Location"])
    final = flow.finish(flow.post(test_idp.response_xml(request), relay))
    assert final.status_code == 302 and "code=" in final.headers["Location"]


def test_routing_depends_only_on_the_domain(app, test_idp):
    """No account enumeration: an existing account and an unknown email of a routed domain get
    the same answer, and the password is never checked for a routed domain."""
    from .conftest import Flow

    add_connection(app, test_idp, email_domains=["corp.example.test"])
    with app.app_context():
        make_user("bob@corp.example.test")
    answers = []
    for email in ("bob@corp.example.test", "nobody@corp.example.test"):
        response = _submit(Flow(app, test_idp), email, "wrong password")
        answers.append((response.status_code, re.sub(r"interaction=[\w-]+", "", response.headers["Refresh"])))
    assert answers[0] == answers[1] and answers[0][0] == 200


def test_unrouted_domain_still_asks_for_the_password(app, test_idp):
    from .conftest import Flow

    add_connection(app, test_idp, email_domains=["corp.example.test"])
    for email in ("alice@other.example", "alice@sub.corp.example.test", "corp.example.test", ""):
        response = _submit(Flow(app, test_idp), email)
        assert response.status_code == 401 and "Refresh" not in response.headers, email
        assert "Invalid email or password." in response.get_data(as_text=True)


def test_cli_update_sets_and_clears_email_domains(app, test_idp):
    add_connection(app, test_idp)
    runner = CliRunner()

    def run(*args):
        return runner.invoke(cli, ["saml", *args], obj=ScriptInfo(create_app=lambda: app))

    result = run("update", NAME, "--email-domain", "@Corp.Example", "--email-domain", "b.example", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["email_domains"] == ["b.example", "corp.example"]
    add_connection(app, test_idp, name="other")
    clash = run("update", "other", "--email-domain", "corp.example")
    assert clash.exit_code == 1 and "already routes to testidp" in str(clash.exception)
    assert json.loads(run("show", "other", "--json").output)["email_domains"] == []
    assert run("update", NAME, "--email-domain", "not a domain").exit_code == 1
    result = run("update", NAME, "--no-email-domains", "--json")
    assert result.exit_code == 0 and json.loads(result.output)["email_domains"] == []
    assert run("update", "nope", "--no-email-domains").exit_code == 1
