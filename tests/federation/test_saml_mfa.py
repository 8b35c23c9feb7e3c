"""Per-connection MFA (issue 7): with `--require-mfa` the ACS hands the user to the MFA step
(idp/mfa/flow.py) instead of starting the session; the session, with amr ext + otp + mfa,
starts after the second factor, and single logout still finds it."""

from __future__ import annotations

import json

from click.testing import CliRunner
from flask.cli import ScriptInfo

from idp.cli import cli
from idp.services import sessions
from tests.factories import form_fields, make_client
from tests.mfa.helpers import id_token_claims, mailed_code, submit_code

from .conftest import NAME, Flow, add_connection
from .saml_idp import AUTHN_PASSWORD

EMAIL = "alice@corp.example.test"


def test_connection_that_requires_mfa_asks_for_a_second_factor(app, test_idp, mailbox):
    add_connection(app, test_idp, require_mfa=True)
    with app.app_context():
        cid, secret = make_client()
    flow = Flow(app, test_idp, client_id=cid)
    request, relay = flow.start()
    acs = flow.post(test_idp.response_xml(request, email=EMAIL), relay)
    assert acs.status_code == 303
    step = flow.browser.get(acs.headers["Location"])
    assert step.status_code == 302 and step.headers["Location"] == "/login/mfa"
    assert not flow.has_session()  # nothing before the second factor
    browser = flow.browser
    assert browser.get("/login/mfa").headers["Location"] == "/login/mfa/email"
    page = browser.get("/login/mfa/email").get_data(as_text=True)
    assert browser.post("/login/mfa/email", data={**form_fields(page), "action": "send"}).status_code == 303
    response = submit_code(browser, "/login/mfa/email", mailed_code(mailbox.wait_for(EMAIL, "sign-in code")))
    claims = id_token_claims(browser, cid, secret, response, flow.verifier)
    assert claims["amr"] == ["ext", "otp", "mfa"] and claims["acr"] == "urn:idp:acr:mfa"
    # Single logout knows this session although the MFA step started it.
    idp = app.extensions["idp"]
    with app.app_context():
        assert len(sessions.list_sessions(idp.store, claims["sub"])) == 1
    _, url, _ = test_idp.logout_request("http://127.0.0.1:5000/saml/testidp/slo",
                                        "http://127.0.0.1:5000/saml/testidp/metadata", EMAIL)
    assert app.test_client().get(url[url.index("/saml/"):]).status_code == 302
    with app.app_context():
        assert sessions.list_sessions(idp.store, claims["sub"]) == []


def test_without_require_mfa_the_idp_login_is_enough(app, test_idp):
    add_connection(app, test_idp)
    flow = Flow(app, test_idp)
    request, relay = flow.start()
    final = flow.finish(flow.post(test_idp.response_xml(request), relay))
    assert final.status_code == 302 and "code=" in final.headers["Location"]
    claims = id_token_claims(flow.browser, flow.client_id, flow.secret, final, flow.verifier)
    assert claims["amr"] == ["ext"] and claims["acr"] == AUTHN_PASSWORD


def test_cli_require_mfa(app, test_idp):
    add_connection(app, test_idp)

    def run(*args):
        return CliRunner().invoke(cli, ["saml", *args], obj=ScriptInfo(create_app=lambda: app))

    assert json.loads(run("show", NAME, "--json").output)["require_mfa"] is False
    assert json.loads(run("update", NAME, "--require-mfa", "--json").output)["require_mfa"] is True
    assert json.loads(run("update", NAME, "--no-require-mfa", "--json").output)["require_mfa"] is False
    result = run("update", NAME, "--clock-skew", "30", "--json")
    assert json.loads(result.output)["clock_skew_ttl"] == 30
    assert json.loads(run("update", NAME, "--clock-skew", "-1", "--json").output)["clock_skew_ttl"] is None
    assert run("update", NAME, "--clock-skew", "901").exit_code == 1
