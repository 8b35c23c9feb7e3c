"""SAML Single Logout at /saml/NAME/slo (issue 7), both directions, against the pysaml2 IdP:
the IdP's LogoutRequest ends the matching sessions (and triggers back-channel logout to the
clients) and gets a signed LogoutResponse; our logout of a session that came from the IdP sends
it a signed LogoutRequest and finishes the RP-initiated logout when it answers. Every forged,
replayed or misdirected message is refused: an error page, no session ended, an audit event."""

from __future__ import annotations

import base64
import zlib
from urllib.parse import unquote, urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from lxml import etree
from sqlalchemy import select

from idp.services import sessions
from idp.storage.models import User, db
from idp.storage.security_models import AuthEvent, BackchannelDelivery
from tests.factories import form_fields, make_client, query

from .conftest import NAME, Flow
from .saml_idp import TestIdP, redirect_query

SP = "http://127.0.0.1:5000/saml/testidp"
SLO = f"{SP}/slo"
IDP_SLO = "https://idp.example.test/sso/slo"
LOGOUT_URI = "http://127.0.0.1:9/bye"
NS = {"samlp": "urn:oasis:names:tc:SAML:2.0:protocol", "saml": "urn:oasis:names:tc:SAML:2.0:assertion"}


def audit_events(app) -> list[tuple[str, str]]:
    """(result, reason) of every saml_logout audit event."""
    with app.app_context():
        return [tuple(row) for row in db.session.execute(select(AuthEvent.result, AuthEvent.reason)
                                       .where(AuthEvent.event == "saml_logout"))]


class LoggedIn:
    """A browser signed in through the IdP for a client with back-channel and post-logout URIs."""

    def __init__(self, app, test_idp, email="alice@corp.example.test"):
        with app.app_context():
            cid, secret = make_client(backchannel_logout_uri="http://127.0.0.1:9/bc",
                                      post_logout_redirect_uris=[LOGOUT_URI])
        self.app, self.idp = app, test_idp
        self.flow = Flow(app, test_idp, client_id=cid)
        self.flow.secret = secret
        request, relay = self.flow.start()
        xml = test_idp.response_xml(request, email=email)
        self.session_index = etree.fromstring(xml.encode()).find(".//saml:AuthnStatement", NS).get("SessionIndex")
        final = self.flow.finish(self.flow.post(xml, relay))
        assert final.status_code == 302 and "code=" in final.headers["Location"], final.status
        self.email, self.client_id = email, cid
        with app.app_context():
            self.user_id = db.session.scalar(select(User.id).where(User.email == email))

    def live_sessions(self) -> int:
        with self.app.app_context():
            return len(sessions.list_sessions(self.app.extensions["idp"].store, self.user_id))

    def idp_logout(self, **over):
        over.setdefault("session_index", self.session_index)
        return self.idp.logout_request(SLO, f"{SP}/metadata", over.pop("name_id", self.email), **over)


@pytest.fixture()
def alice(app, test_idp, connection):
    return LoggedIn(app, test_idp)


def send(browser, binding, message):
    if binding == "post":
        return browser.post(f"/saml/{NAME}/slo", data=message)
    return browser.get(message[message.index("/saml/"):] if message.startswith("http") else message)


def local(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + "?" + parts.query


def check_query_signature(url: str, cert_pem: str) -> None:
    """Verify a HTTP-Redirect query signature (SAML Bindings §3.4.4.1) with the signer's cert."""
    raw = urlsplit(url).query
    parts = dict(p.split("=", 1) for p in raw.split("&"))
    signed = "&".join(f"{k}={parts[k]}" for k in ("SAMLRequest", "SAMLResponse", "RelayState", "SigAlg")
                      if k in parts)
    assert unquote(parts["SigAlg"]) == "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
    key = x509.load_pem_x509_certificate(cert_pem.encode()).public_key()
    key.verify(base64.b64decode(unquote(parts["Signature"])), signed.encode(), padding.PKCS1v15(), hashes.SHA256())


def inflate(value: str) -> etree._Element:
    return etree.fromstring(zlib.decompress(base64.b64decode(value), -15))


def sp_certificate(app) -> str:
    from idp.federation import connections

    with app.app_context():
        current, _ = connections.sp_keys(connections.get_connection(NAME))
        return current.certificate_pem


# --- the IdP logs the user out ----------------------------------------------------------------

@pytest.mark.parametrize("binding", ["redirect", "post"])
def test_idp_logout_request_ends_session_and_gets_signed_response(app, alice, binding):
    assert alice.live_sessions() == 1
    request_id, message, _ = alice.idp_logout(binding=binding, relay_state="idp-relay")
    response = send(alice.flow.browser, binding, message)
    assert response.status_code == 302, response.get_data(as_text=True)[:400]
    location = response.headers["Location"]
    assert location.startswith(IDP_SLO + "?")
    check_query_signature(location, sp_certificate(app))
    q = redirect_query(location)
    answer = inflate(q["SAMLResponse"])
    assert answer.get("InResponseTo") == request_id and answer.get("Destination") == IDP_SLO
    assert answer.find("samlp:Status/samlp:StatusCode", NS).get("Value").endswith(":Success")
    assert q["RelayState"] == "idp-relay"
    assert alice.live_sessions() == 0 and not alice.flow.has_session()
    with app.app_context():  # OpenID Back-Channel Logout to the client that got a code
        rows = db.session.scalars(select(BackchannelDelivery)).all()
        assert [r.client_id for r in rows] == [alice.client_id]
    # One audit event: the logout that ended alice's session, on her account.
    assert audit_events(app) == [("success", f"{NAME}:ok")]
    with app.app_context():
        assert db.session.scalar(select(AuthEvent.user_id).where(AuthEvent.event == "saml_logout")) == alice.user_id


def test_session_index_narrows_what_ends(app, test_idp, connection):
    first, second = LoggedIn(app, test_idp), LoggedIn(app, test_idp)
    assert first.session_index != second.session_index and first.live_sessions() == 2
    _, url, _ = first.idp_logout()
    assert send(app.test_client(), "redirect", url).status_code == 302
    assert first.live_sessions() == 1 and second.flow.has_session()
    _, url, _ = second.idp_logout(session_index=None)  # no SessionIndex: every session of the subject
    assert send(app.test_client(), "redirect", url).status_code == 302
    assert first.live_sessions() == 0


def test_unknown_name_id_is_answered_and_ends_nothing(app, alice):
    request_id, url, _ = alice.idp_logout(name_id="mallory@corp.example.test")
    response = send(app.test_client(), "redirect", url)
    assert response.status_code == 302 and response.headers["Location"].startswith(IDP_SLO)
    assert inflate(redirect_query(response.headers["Location"])["SAMLResponse"]).get("InResponseTo") == request_id
    assert alice.live_sessions() == 1
    assert audit_events(app) == [("failure", f"{NAME}:unknown_subject")]


# --- refused: no session ends, no answer to the IdP -------------------------------------------

def assert_refused(app, alice, response, reason: str):
    body = response.get_data(as_text=True)
    assert response.status_code == 400, body[:400]
    assert "Traceback" not in body and "Logout refused" in body and f"<code>{reason}</code>" in body, body
    assert "Location" not in response.headers
    assert alice.live_sessions() == 1
    events = audit_events(app)
    assert events.count(("failure", f"{NAME}:{reason}")) == 1, events
    assert not [event for event in events if event[0] == "success"], events


@pytest.mark.parametrize("binding", ["redirect", "post"])
def test_unsigned_logout_request_is_refused(app, alice, binding):
    _, message, _ = alice.idp_logout(binding=binding, sign=False)
    assert_refused(app, alice, send(app.test_client(), binding, message), "unsigned")


@pytest.mark.parametrize("binding", ["redirect", "post"])
def test_logout_request_signed_by_another_key_is_refused(app, alice, binding, tmp_path, other_key_pair):
    attacker = TestIdP(tmp_path / "attacker", other_key_pair)
    attacker.trust_sp(alice.idp.sp_metadata[-1])
    _, message, _ = attacker.logout_request(SLO, f"{SP}/metadata", alice.email, binding=binding)
    assert_refused(app, alice, send(app.test_client(), binding, message), "invalid_signature")


@pytest.mark.parametrize("binding", ["redirect", "post"])
def test_sha1_logout_request_is_refused(app, alice, binding):
    _, message, _ = alice.idp_logout(binding=binding, sha1=True)
    assert_refused(app, alice, send(app.test_client(), binding, message), "weak_algorithm")


@pytest.mark.parametrize("binding", ["redirect", "post"])
def test_logout_request_for_another_destination_is_refused(app, alice, binding):
    _, message, _ = alice.idp.logout_request("https://other.example/slo", f"{SP}/metadata", alice.email,
                                             binding=binding)
    if binding == "redirect":  # sent to us all the same
        message = f"/saml/{NAME}/slo?" + message.split("?", 1)[1]
    assert_refused(app, alice, send(app.test_client(), binding, message), "wrong_destination")


@pytest.mark.parametrize("binding", ["redirect", "post"])
def test_replayed_logout_request_is_refused(app, alice, binding, test_idp):
    _, message, _ = alice.idp_logout(binding=binding, name_id="nobody@corp.example.test")
    assert send(app.test_client(), binding, message).status_code == 302
    assert_refused(app, alice, send(app.test_client(), binding, message), "replayed")


def test_expired_logout_request_is_refused(app, alice):
    _, url, _ = alice.idp_logout(expire="2020-01-01T00:00:00Z")
    assert_refused(app, alice, send(app.test_client(), "redirect", url), "expired")


@pytest.mark.parametrize("params", [
    {"SAMLRequest": "%%%"}, {"SAMLRequest": base64.b64encode(b"not deflate").decode()},
    {"SAMLRequest": base64.b64encode(zlib.compress(b"<x/>")[2:-4]).decode()}, {},
    {"SAMLRequest": base64.b64encode(zlib.compress(b'<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>')[2:-4]).decode()},
])
def test_malformed_logout_messages_are_refused_cleanly(app, alice, params):
    response = app.test_client().get(f"/saml/{NAME}/slo", query_string=params)
    assert response.status_code == 400 and "Traceback" not in response.get_data(as_text=True)
    assert alice.live_sessions() == 1
    assert app.test_client().get("/saml/nope/slo").status_code == 404


# --- we log the user out: RP-initiated logout and the account page ----------------------------

def rp_logout(alice, state="st-1"):
    browser = alice.flow.browser
    page = browser.get("/logout", query_string={"client_id": alice.client_id, "state": state,
                                                "post_logout_redirect_uri": LOGOUT_URI})
    fields = form_fields(page.get_data(as_text=True))
    return browser.post("/logout", data={**fields, "logout": "yes"})


def test_rp_logout_sends_signed_logout_request_and_finishes_on_the_answer(app, alice):
    response = rp_logout(alice)
    assert response.status_code == 200, response.get_data(as_text=True)[:400]
    url = response.headers["Refresh"].partition("url=")[2]
    assert url.startswith(IDP_SLO + "?")
    # The local session ended before the IdP was asked (it may never answer).
    assert alice.live_sessions() == 0 and not alice.flow.has_session()
    request, relay = alice.idp.parse_logout_request(url)  # pysaml2 checks our query signature
    check_query_signature(url, sp_certificate(app))
    assert request.message.name_id.text == alice.email
    assert [s.text for s in request.message.session_index] == [alice.session_index]
    assert request.message.issuer.text == f"{SP}/metadata"
    back = alice.idp.logout_response_url(request, relay, SLO)
    final = alice.flow.browser.get(local(back))
    assert final.status_code == 302 and final.headers["Location"] == f"{LOGOUT_URI}?state=st-1"
    assert audit_events(app) == [("success", f"{NAME}:idp_confirmed")]
    # The RelayState was single use: the same answer again only shows the logged-out page.
    again = alice.flow.browser.get(local(back))
    assert again.status_code == 200 and "Location" not in again.headers


def test_forged_logout_response_still_finishes_the_local_logout(app, alice, tmp_path, other_key_pair):
    url = rp_logout(alice).headers["Refresh"].partition("url=")[2]
    request, relay = alice.idp.parse_logout_request(url)
    attacker = TestIdP(tmp_path / "attacker", other_key_pair)
    attacker.trust_sp(alice.idp.sp_metadata[-1])
    forged = attacker.logout_response_url(request, relay, SLO)
    final = alice.flow.browser.get(local(forged))
    assert final.status_code == 302 and final.headers["Location"].startswith(LOGOUT_URI)
    assert alice.live_sessions() == 0
    assert audit_events(app) == [("failure", f"{NAME}:invalid_signature")]


def test_unsolicited_logout_response_shows_the_logged_out_page(app, alice):
    url = rp_logout(alice).headers["Refresh"].partition("url=")[2]
    request, _ = alice.idp.parse_logout_request(url)
    response = app.test_client().get(local(alice.idp.logout_response_url(request, "made-up", SLO)))
    assert response.status_code == 200 and "Location" not in response.headers
    assert audit_events(app) == [("failure", f"{NAME}:unsolicited")]


def test_password_session_logout_does_not_involve_the_idp(app, client, ctx):
    from tests.factories import get_code, make_user

    cid, _ = make_client(post_logout_redirect_uris=[LOGOUT_URI])
    make_user()
    get_code(client, cid)
    page = client.get("/logout", query_string={"client_id": cid, "post_logout_redirect_uri": LOGOUT_URI})
    response = client.post("/logout", data={**form_fields(page.get_data(as_text=True)), "logout": "yes"})
    assert response.status_code == 302 and response.headers["Location"] == LOGOUT_URI


def test_account_page_end_session_tells_the_idp(app, alice):
    browser = alice.flow.browser
    page = browser.get("/account").get_data(as_text=True)
    fields = form_fields(page)
    with app.app_context():
        sid = sessions.list_sessions(app.extensions["idp"].store, alice.user_id)[0]["sid"]
    response = browser.post("/account/sessions/end", data={"csrf_token": fields["csrf_token"], "sid": sid})
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    url = response.headers["Refresh"].partition("url=")[2]
    request, relay = alice.idp.parse_logout_request(url)
    assert alice.live_sessions() == 0
    final = browser.get(local(alice.idp.logout_response_url(request, relay, SLO)))
    assert final.status_code == 302 and "/account/login" in final.headers["Location"]
    assert query(final.headers["Location"]) == {"done": "signed_out"}


def test_ending_another_devices_session_does_not_send_this_browser_to_the_idp(app, test_idp, connection):
    laptop, phone = LoggedIn(app, test_idp), LoggedIn(app, test_idp)
    assert laptop.user_id == phone.user_id and laptop.live_sessions() == 2
    with app.app_context():
        store = app.extensions["idp"].store
        mine = sessions.load_session(store, laptop.flow.browser.get_cookie("idp_session").value, 3600)["sid"]
        [phone_sid] = [s["sid"] for s in sessions.list_sessions(store, phone.user_id) if s["sid"] != mine]
    fields = form_fields(laptop.flow.browser.get("/account").get_data(as_text=True))
    response = laptop.flow.browser.post("/account/sessions/end", data={"csrf_token": fields["csrf_token"],
                                                                        "sid": phone_sid})
    # The phone's session ends here; the laptop stays signed in and is not sent to the IdP.
    assert response.status_code == 302 and response.headers["Location"] == "/account?done=ended"
    assert "Refresh" not in response.headers and laptop.live_sessions() == 1
    assert laptop.flow.browser.get("/account").status_code == 200


def test_idp_without_slo_service_ends_sessions_but_gets_no_answer(app, test_idp):
    """A LogoutRequest from an IdP whose metadata lists no SingleLogoutService: the sessions end,
    the browser sees the logged-out page (never a redirect to its RelayState)."""
    import re

    from .conftest import add_connection

    metadata = re.sub(r"<(\w+:)?SingleLogoutService [^>]*/>", "", test_idp.metadata())
    assert "SingleLogoutService" not in metadata
    test_idp.metadata = lambda: metadata
    add_connection(app, test_idp)
    alice = LoggedIn(app, test_idp)
    _, url, _ = alice.idp_logout(relay_state="https://evil.example/")
    response = send(app.test_client(), "redirect", url)
    assert response.status_code == 200 and "Location" not in response.headers
    assert alice.live_sessions() == 0
    # Our logout then has nobody to tell either: the usual redirect to the client.
    assert rp_logout(LoggedIn(app, test_idp)).headers["Location"] == f"{LOGOUT_URI}?state=st-1"


def test_logout_everywhere_tells_the_idp_about_this_browser_session(app, alice):
    browser = alice.flow.browser
    fields = form_fields(browser.get("/account").get_data(as_text=True))
    response = browser.post("/account/logout-everywhere", data={"csrf_token": fields["csrf_token"]})
    url = response.headers["Refresh"].partition("url=")[2]
    request, relay = alice.idp.parse_logout_request(url)
    assert alice.live_sessions() == 0 and request.message.name_id.text == alice.email
    final = browser.get(local(alice.idp.logout_response_url(request, relay, SLO)))
    assert final.status_code == 302 and query(final.headers["Location"]) == {"done": "everywhere"}
