"""Clock skew (issue 7): IDP_SAML_CLOCK_SKEW, or a connection's own --clock-skew, is the
allowance on every NotBefore, NotOnOrAfter and IssueInstant, in both directions. The IdP signs
a real response; our clock is moved to just inside and just outside each edge."""

from __future__ import annotations

import pytest
from lxml import etree
from onelogin.saml2.utils import OneLogin_Saml2_Utils

from idp.federation import clock

from .conftest import Flow, add_connection
from .test_saml_acs_attacks import assert_refused


def _times(xml: str) -> dict[str, int]:
    root = etree.fromstring(xml.encode())
    found: dict[str, list[int]] = {}
    for element in root.iter(etree.Element):
        for name in ("NotBefore", "NotOnOrAfter", "IssueInstant"):
            if (value := element.get(name)) is not None:
                found.setdefault(name, []).append(OneLogin_Saml2_Utils.parse_SAML_to_time(value))
    return {"first_not_on_or_after": min(found["NotOnOrAfter"]), "last_issue_instant": max(found["IssueInstant"]),
            "first_issue_instant": min(found["IssueInstant"])}


def _post_at(monkeypatch, flow, xml, relay, now):
    monkeypatch.setattr(clock, "wall_time", lambda: now)
    return flow.post(xml, relay)


@pytest.mark.parametrize("inside", [True, False])
def test_expiry_edge_uses_the_configured_skew(app, flow, monkeypatch, inside):
    request, relay = flow.start()
    xml = flow.idp.response_xml(request)
    skew = app.extensions["idp"].settings.saml_clock_skew
    assert skew == 120
    edge = _times(xml)["first_not_on_or_after"] + skew
    response = _post_at(monkeypatch, flow, xml, relay, edge - 1 if inside else edge)
    if inside:
        assert response.status_code == 303, response.get_data(as_text=True)[:400]
    else:
        assert_refused(app, flow, response, "expired")


@pytest.mark.parametrize("inside", [True, False])
def test_issue_instant_from_the_future_edge(app, flow, monkeypatch, inside):
    """An IdP clock ahead of ours by up to the skew is fine; further is not_yet_valid."""
    request, relay = flow.start()
    xml = flow.idp.response_xml(request)
    edge = _times(xml)["last_issue_instant"] - 120
    response = _post_at(monkeypatch, flow, xml, relay, edge if inside else edge - 1)
    if inside:
        assert response.status_code == 303, response.get_data(as_text=True)[:400]
    else:
        assert_refused(app, flow, response, "not_yet_valid")


def test_old_issue_instant_is_refused(app, test_idp, monkeypatch):
    test_idp.lifetime_minutes = 60
    add_connection(app, test_idp)
    flow = Flow(app, test_idp)
    request, relay = flow.start()
    xml = flow.idp.response_xml(request)
    late = _times(xml)["first_issue_instant"] + 120 + clock.MESSAGE_MAX_AGE + 1
    # Within NotOnOrAfter (an hour), but issued too long ago.
    assert late < _times(xml)["first_not_on_or_after"] + 120
    assert_refused(app, flow, _post_at(monkeypatch, flow, xml, relay, late), "expired")


def test_connection_skew_overrides_the_setting(app, test_idp, monkeypatch):
    add_connection(app, test_idp, clock_skew_ttl=0)
    flow = Flow(app, test_idp)
    request, relay = flow.start()
    xml = test_idp.response_xml(request)
    ahead = _times(xml)["last_issue_instant"] - 30  # our clock 30 s behind the IdP's
    assert_refused(app, flow, _post_at(monkeypatch, flow, xml, relay, ahead), "not_yet_valid")


def test_forged_and_late_is_reported_as_forged(app, flow, monkeypatch):
    """Time is checked after the signature: an unsigned expired response is 'unsigned'."""
    request, relay = flow.start()
    xml = flow.idp.response_xml(request, sign_response=False, sign_assertion=False)
    late = _times(xml)["first_not_on_or_after"] + 1000
    assert_refused(app, flow, _post_at(monkeypatch, flow, xml, relay, late), "unsigned")


def test_library_clock_is_per_thread_and_restored():
    real = OneLogin_Saml2_Utils.now()
    with clock.library_clock(1000):
        assert OneLogin_Saml2_Utils.now() == 1000
    assert abs(OneLogin_Saml2_Utils.now() - real) < 5


def test_skew_setting_is_validated():
    from idp.settings import Settings, SettingsError

    assert Settings.from_env({"IDP_SAML_CLOCK_SKEW": "30"}, dotenv=None).saml_clock_skew == 30
    for bad in (-1, 901):
        with pytest.raises(SettingsError, match="IDP_SAML_CLOCK_SKEW"):
            Settings(saml_clock_skew=bad).validate()
