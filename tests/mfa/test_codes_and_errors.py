"""Email codes (6 digits, 3 tries, resend rate-limited), role-based MFA, and bad input:
malformed or huge codes, missing CSRF, an expired or foreign pending login are clear 4xx."""

from __future__ import annotations

from idp import create_app
from idp.mfa import email_codes, totp
from idp.mfa.policy import MfaSituation, mfa_required, requested_acr
from idp.policy.admin import assign_role, create_role
from tests.factories import form_fields, make_client, make_user, query

from .helpers import auth_params, code_at, enrol_totp, mailed_code, mfa_form, password_step, submit_code


def _pending(app, client, factor=True, **client_over):
    with app.app_context():
        user = make_user()
        secret = enrol_totp(app, user) if factor else None
        client_id, _ = make_client(**client_over)
    password_step(client, auth_params(client_id)[0])
    return secret


def _send(client):
    return client.post("/login/mfa/email", data={**mfa_form(client, "/login/mfa/email"), "action": "send"})


def test_email_code_three_wrong_tries_kill_it(app, client, mailbox):
    _pending(app, client, factor=False, require_mfa=True)
    assert _send(client).status_code == 303
    code = mailed_code(mailbox.wait_for("alice@example.com", "sign-in code"))
    wrong = "000000" if code != "000000" else "111111"
    for _ in range(3):
        assert submit_code(client, "/login/mfa/email", wrong).status_code == 401
    # The code itself died at the third wrong try: the right one no longer works.
    response = submit_code(client, "/login/mfa/email", code)
    assert response.status_code == 401


def test_email_code_resend_is_rate_limited(app, client, mailbox):
    _pending(app, client, factor=False, require_mfa=True)
    assert _send(client).status_code == 303
    again = _send(client)
    assert again.status_code == 429 and int(again.headers["Retry-After"]) > 0


def test_email_code_store_rules(ctx):
    store = ctx.extensions["idp"].store
    code = email_codes.issue(store, "k", "pending-1", "user-1")
    assert len(code) == 6 and code.isdigit()
    assert not email_codes.check(store, "k", "pending-2", code)  # bound to its pending login
    assert email_codes.check(store, "k", "pending-1", code)
    assert not email_codes.check(store, "k", "pending-1", code)  # single use


def test_role_listed_in_settings_requires_mfa(app, settings):
    role_app = create_app(settings.replace(mfa_required_roles="admin, auditor"))
    with role_app.app_context():
        user = make_user()
        create_role("admin")
        assign_role(user, "admin")
        client_id, _ = make_client()
    client = role_app.test_client()
    assert password_step(client, auth_params(client_id)[0]).headers["Location"] == "/login/mfa"


def test_policy_table():
    step_up = frozenset({"urn:idp:acr:mfa"})
    assert mfa_required(MfaSituation(requested_acr=step_up, trusted_browser=True, enrolled=False))
    assert not mfa_required(MfaSituation(requested_acr=frozenset({"urn:idp:acr:mfa", "urn:idp:acr:pwd"}),
                                         trusted_browser=False, enrolled=False))
    assert not mfa_required(MfaSituation(requested_acr=frozenset(), trusted_browser=True, enrolled=True,
                                         client_requires=True, role_requires=True, connection_requires=True))
    for flag in ("enrolled", "client_requires", "role_requires", "connection_requires"):
        assert mfa_required(MfaSituation(**{"requested_acr": frozenset(), "trusted_browser": False,
                                            "enrolled": False, flag: True}))
    assert requested_acr({"acr_values": "a b"}, {"id_token": {"acr": {"essential": True, "value": "c"}}}) == {"c"}
    assert requested_acr({"acr_values": "a b"}) == {"a", "b"}
    assert requested_acr({}, {"id_token": {"acr": {"values": ["c"]}}}) == frozenset()  # voluntary: no step-up


def test_totp_code_normalisation():
    assert totp.normalize_code(" 123 456 ") == "123456"
    assert totp.normalize_code("12345a") is None
    assert totp.normalize_code("１２３４５６") is None  # non-ASCII digits
    assert totp.normalize_code("1" * 10_000) is None


def test_malformed_and_huge_codes_are_4xx(app, client):
    secret = _pending(app, client)
    fields = mfa_form(client, "/login/mfa/totp")
    for bad in ("", "abcdef", "１２３４５６", "12 34 56 78 90", "0" * 3000):
        response = client.post("/login/mfa/totp", data={**fields, "code": bad})
        assert 400 <= response.status_code < 500, (bad[:20], response.status_code)
    huge = client.post("/login/mfa/totp", data={**fields, "code": "1" * 100_000})
    assert huge.status_code in (400, 413)
    not_utf8 = client.post("/login/mfa/totp", data=b"code=%ff%fe&csrf_token=" + fields["csrf_token"].encode(),
                           content_type="application/x-www-form-urlencoded")
    assert not_utf8.status_code == 400
    assert client.get("/login/mfa/totp", query_string={"x": ["1", "2"]}).status_code == 400
    assert secret


def test_missing_or_wrong_csrf_is_400_and_counts_nothing(app, client):
    secret = _pending(app, client)
    for data in ({"code": "123456"}, {"code": "123456", "csrf_token": "x"}):
        assert client.post("/login/mfa/totp", data=data).status_code == 400
    assert submit_code(client, "/login/mfa/totp", code_at(secret)).status_code == 302


def test_no_or_expired_pending_login_is_400(app, client):
    for path in ("/login/mfa", "/login/mfa/totp", "/login/mfa/recovery", "/login/mfa/email"):
        assert client.get(path).status_code == 400
        assert 400 <= client.post(path, data={"code": "123456"}).status_code < 500
    _pending(app, client)
    pending_id = client.get_cookie("idp_mfa").value
    with app.app_context():
        from idp.mfa.flow import cancel

        cancel(pending_id)  # what the TTL does
    response = client.get("/login/mfa/totp")
    assert response.status_code == 400 and b"expired" in response.data
    client.set_cookie("idp_mfa", "x" * 500)
    assert client.get("/login/mfa").status_code == 400


def test_pending_cookie_from_another_browser_is_not_enough(app, client):
    secret = _pending(app, client)
    other = app.test_client()
    other.set_cookie("idp_mfa", client.get_cookie("idp_mfa").value)
    fields = mfa_form(other, "/login/mfa/totp")
    # The pending login follows its cookie, but the OIDC interaction cookie does not: no code.
    response = other.post("/login/mfa/totp", data={**fields, "code": code_at(secret)})
    assert response.status_code == 400 and "code=" not in response.headers.get("Location", "")


def test_step_up_page_without_session_or_interaction_is_400(app, client):
    assert client.get("/login/mfa/step-up").status_code == 400
    assert client.get("/login/mfa/step-up", query_string={"interaction": "nope"}).status_code == 400
    page = client.get("/account/mfa/totp")
    assert page.status_code == 302  # the account side needs a session
    assert form_fields  # (imported for the helpers above)


def test_signing_in_again_and_again_does_not_give_unlimited_guesses(app, client):
    """5 wrong codes per pending login, and 20 per user within 15 minutes over all of them:
    knowing the password does not turn into unlimited second-factor guesses."""
    from idp.mfa.flow import USER_MAX_ATTEMPTS

    secret = _pending(app, client)
    wrong = "000000" if code_at(secret) not in ("000000",) and code_at(secret, -1) != "000000" else "111111"
    with app.app_context():
        client_id, _ = make_client(name="Second")
    statuses = []
    for _ in range(USER_MAX_ATTEMPTS // 5):
        for _ in range(5):
            statuses.append(submit_code(client, "/login/mfa/totp", wrong).status_code)
        password_step(client, auth_params(client_id)[0])
    assert statuses.count(401) == USER_MAX_ATTEMPTS - USER_MAX_ATTEMPTS // 5
    # The user's budget is spent: even the right code is refused for now, and the pending login ends.
    assert submit_code(client, "/login/mfa/totp", code_at(secret)).status_code == 429
    assert client.get("/login/mfa").status_code == 400


MFA_PATHS = ["/login/mfa", "/login/mfa/totp", "/login/mfa/recovery", "/login/mfa/email", "/login/mfa/step-up",
             "/account/mfa", "/account/mfa/totp", "/account/mfa/totp/x/rename", "/account/mfa/totp/x/remove",
             "/account/mfa/recovery-codes", "/account/mfa/trusted-browsers/forget"]


def test_garbage_never_gives_a_500(app, client):
    """Mid-flow and signed out: bad bodies, content types, repeated or huge parameters."""
    _pending(app, client)
    bodies = [dict(data={"code": "1" * 5000}), dict(data=b"\xff\xfe", content_type="application/x-www-form-urlencoded"),
              dict(json={"code": "123456"}), dict(data="code=1&code=2", content_type="application/x-www-form-urlencoded"),
              dict(data={"action": "send", "csrf_token": "x" * 300})]
    for browser in (client, app.test_client()):
        for path in MFA_PATHS:
            assert browser.get(path, query_string={"interaction": "y" * 2000}).status_code < 500, path
            for body in bodies:
                status = browser.post(path, **body).status_code
                assert status < 500 and status != 200, (path, body, status)


def test_garbage_on_the_signed_in_account_pages_never_gives_a_500(app, client):
    with app.app_context():
        make_user()
    page = client.get("/account/login")
    client.post("/account/login", data={**form_fields(page.get_data(as_text=True)), "email": "alice@example.com",
                                        "password": "correct horse battery staple"})
    assert client.get("/account/mfa").status_code == 200
    csrf = form_fields(client.get("/account/mfa/totp").get_data(as_text=True))["csrf_token"]
    for path in MFA_PATHS[5:]:
        for data in ({"csrf_token": csrf, "label": "x" * 5000, "code": "z" * 100, "password": "p" * 5000},
                     {"csrf_token": csrf, "label": "\u202e\u0000"}, {"csrf_token": "nope"}):
            status = client.post(path, data=data).status_code
            assert status < 500, (path, status)
    long_id = client.post("/account/mfa/totp/" + "a" * 3000 + "/remove", data={"csrf_token": csrf})
    assert 400 <= long_id.status_code < 500


def test_interaction_policy_puts_mfa_after_login_and_before_consent():
    from idp.interaction.policy import CONSENT, DONE, LOGIN, MFA, Situation, next_step

    base = dict(prompts=frozenset(), max_age=None, session_auth_time=100, logged_in_here=False,
                consented_here=False, requested_scopes=frozenset({"openid"}), granted_scopes=frozenset(),
                skip_consent=False, now=200.0)
    assert next_step(Situation(**{**base, "session_auth_time": None}, mfa_missing=True)) == LOGIN
    assert next_step(Situation(**{**base, "max_age": 10}, mfa_missing=True)) == LOGIN
    assert next_step(Situation(**base, mfa_missing=True)) == MFA
    assert next_step(Situation(**base)) == CONSENT
    assert next_step(Situation(**{**base, "skip_consent": True})) == DONE


def test_email_codes_are_not_offered_to_a_user_with_a_factor(app, client, mailbox):
    """Whoever reads the mailbox can also reset the password: for a user with an app or a
    passkey, an email code would let the mailbox alone through."""
    _pending(app, client)
    assert client.get("/login/mfa").headers["Location"] == "/login/mfa/totp"
    page = client.get("/login/mfa/email").get_data(as_text=True)
    sent = client.post("/login/mfa/email", data={**form_fields(page), "action": "send"})
    assert sent.status_code == 403
    assert not [m for m in mailbox.to("alice@example.com") if "sign-in code" in m["Subject"]]


def test_a_pending_login_dies_with_a_password_reset_or_logout_everywhere(app, client):
    from idp.services import sessions
    from idp.storage.models import Client, User, db

    secret = _pending(app, client)
    fields = mfa_form(client, "/login/mfa/totp")
    with app.app_context():
        sessions.end_all_sessions(app.extensions["idp"].store, db.session.query(User).one().id)
    response = client.post("/login/mfa/totp", data={**fields, "code": code_at(secret)})
    assert response.status_code == 400 and client.get_cookie("idp_session") is None
    with app.app_context():
        client_id = db.session.query(Client).one().client_id
    password_step(client, auth_params(client_id)[0])  # a new login after the reset works
    assert submit_code(client, "/login/mfa/totp", code_at(secret)).status_code == 302


def test_essential_acr_decides_even_next_to_acr_values_pwd():
    essential = {"id_token": {"acr": {"essential": True, "values": ["urn:idp:acr:mfa"]}}}
    assert requested_acr({"acr_values": "urn:idp:acr:pwd"}, essential) == {"urn:idp:acr:mfa"}
    many = " ".join(f"urn:example:{i}" for i in range(10)) + " urn:idp:acr:mfa"
    assert "urn:idp:acr:mfa" in requested_acr({"acr_values": many})


def test_nested_claims_parameter_is_a_400_not_a_500(app, client):
    with app.app_context():
        client_id, _ = make_client()
    response = client.get("/authorize", query_string=auth_params(client_id, claims="[" * 5000)[0])
    assert response.status_code == 302 and query(response.headers["Location"])["error"] == "invalid_request"
