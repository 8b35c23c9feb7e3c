"""A minimal browser for the interop tests: follows redirects by hand, fills the hosted forms.

It knows only what any user sees: a login page is an HTML form with `email` and `password`
fields, a consent page has a `decision` button (we press `allow`, or `deny` when asked), a
logout confirmation has a `logout` button (we press `yes`). Hidden inputs are sent back as they
are, cookies are kept in a requests.Session. It stops at the first redirect whose target is the
relying party's URI and returns that URL (never fetching it: the RP is not a real server).

With `otp=`, it also passes the MFA step: it picks the authenticator app on the method choice
and types otp() into the code form.

`steps` records what happened (("login", url), ("mfa", url), ("consent", url), ("logout", url),
("redirect", url)) so tests can check, e.g., that max_age=0 asked for the password again or
that prompt=none did not show any page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urlencode, urljoin, urlsplit

import requests

REDIRECT_CODES = (301, 302, 303, 307, 308)


@dataclass
class Form:
    action: str
    method: str
    inputs: list[dict] = field(default_factory=list)   # {"name", "type", "value", "checked"}
    buttons: list[dict] = field(default_factory=list)  # submit buttons: {"name", "value"}

    def names(self) -> set[str]:
        return {i["name"] for i in self.inputs if i.get("name")}

    def button(self, name: str, value: str) -> dict | None:
        return next((b for b in self.buttons if b.get("name") == name and b.get("value") == value), None)


class _FormParser(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self._form: Form | None = None
        self._button: dict | None = None

    def handle_starttag(self, tag, attrs):
        a = {k: (v if v is not None else "") for k, v in attrs}
        if tag == "form":
            self._form = Form(action=a.get("action", ""), method=(a.get("method") or "get").lower())
            self.forms.append(self._form)
        elif self._form is None:
            return
        elif tag == "input":
            kind = a.get("type", "text").lower()
            if kind in ("submit", "image"):
                self._form.buttons.append({"name": a.get("name"), "value": a.get("value", "")})
            else:
                self._form.inputs.append({"name": a.get("name"), "type": kind, "value": a.get("value", ""),
                                          "checked": "checked" in a})
        elif tag == "button":
            if a.get("type", "submit").lower() == "submit":
                self._button = {"name": a.get("name"), "value": a.get("value", "")}
                self._form.buttons.append(self._button)
        elif tag in ("textarea", "select"):
            self._form.inputs.append({"name": a.get("name"), "type": tag, "value": "", "checked": False})

    def handle_endtag(self, tag):
        if tag == "form":
            self._form = None
        elif tag == "button":
            self._button = None


def parse_forms(html: str) -> list[Form]:
    parser = _FormParser()
    parser.feed(html)
    parser.close()
    return parser.forms


class UserAgentError(AssertionError):
    pass


class UserAgent:
    def __init__(self, email: str | None = None, password: str | None = None, *, max_steps: int = 15,
                 timeout: float = 15, otp=None):
        self.email = email
        self.password = password
        # A second factor: otp() gives the code from the user's authenticator app (pyotp).
        self.otp = otp
        self.http = requests.Session()
        self.max_steps = max_steps
        self.timeout = timeout
        self.steps: list[tuple[str, str]] = []

    # -- public -------------------------------------------------------------------------

    def navigate(self, url: str, stop_at: str, *, decision: str = "allow", logout: str = "yes") -> str:
        """Open `url` and go on (redirects, login, consent, logout confirmation) until a redirect
        targets `stop_at` (a URI without query); return that redirect's absolute URL."""
        self.steps = []
        resp = self.http.get(url, allow_redirects=False, timeout=self.timeout)
        for _ in range(self.max_steps):
            if resp.status_code in REDIRECT_CODES:
                location = resp.headers.get("Location")
                if not location:
                    raise self._error("redirect without Location", resp)
                target = urljoin(resp.url, location)
                self.steps.append(("redirect", target))
                if _same_endpoint(target, stop_at):
                    return target
                if urlsplit(target).scheme not in ("http", "https"):
                    raise self._error(f"redirect to an unexpected place: {target}", resp)
                resp = self.http.get(target, allow_redirects=False, timeout=self.timeout)
                continue
            if resp.status_code == 200 and "html" in resp.headers.get("Content-Type", ""):
                resp = self._submit_page(resp, stop_at, decision, logout)
                if isinstance(resp, str):
                    return resp
                continue
            raise self._error("unexpected response", resp)
        raise UserAgentError(f"gave up after {self.max_steps} steps: {self.steps}")

    def saw(self, kind: str) -> int:
        return sum(1 for k, _ in self.steps if k == kind)

    # -- internals ----------------------------------------------------------------------

    def _submit_page(self, resp: requests.Response, stop_at: str, decision: str, logout: str):
        forms = [f for f in parse_forms(resp.text) if f.method in ("post", "get")]
        if self.otp and not forms and 'href="/login/mfa/totp"' in resp.text:  # the MFA method choice
            self.steps.append(("mfa_choice", resp.url))
            return self.http.get(urljoin(resp.url, "/login/mfa/totp"), allow_redirects=False, timeout=self.timeout)
        form, kind, button = self._choose(forms, decision, logout)
        to_rp = [f for f in forms if _same_endpoint(urljoin(resp.url, f.action), stop_at)]
        if to_rp:  # response_mode=form_post: a self-submitting form carrying the response to the RP
            form, kind, button = to_rp[0], "form_post", None
        if form is None:
            raise self._error("an HTML page without a form this agent knows how to answer", resp)
        action = urljoin(resp.url, form.action or resp.url)
        data: list[tuple[str, str]] = []
        for field_ in form.inputs:
            name, kind_ = field_.get("name"), field_["type"]
            if not name:
                continue
            if kind == "login" and name == "email":
                data.append((name, self.email or ""))
            elif kind == "login" and name == "password":
                data.append((name, self.password or ""))
            elif kind == "mfa" and name == "code":
                data.append((name, self.otp()))
            elif kind_ in ("checkbox", "radio"):
                if field_["checked"]:
                    data.append((name, field_["value"] or "on"))
            else:
                data.append((name, field_["value"]))
        if button and button.get("name"):
            data.append((button["name"], button["value"]))
        if self.steps and self.steps[-1][0] == kind and kind in ("login", "consent", "logout", "mfa"):
            raise self._error(f"the {kind} form came back after submitting it (rejected?)", resp)
        self.steps.append((kind, resp.url))
        if _same_endpoint(action, stop_at):
            # Hand the form_post response back as a URL with the same parameters.
            return action.split("?", 1)[0] + "?" + urlencode(data)
        if kind == "login" and not (self.email and self.password):
            raise self._error("asked to log in, but this agent has no credentials", resp)
        if form.method == "post":
            return self.http.post(action, data=data, allow_redirects=False, timeout=self.timeout)
        return self.http.get(action, params=data, allow_redirects=False, timeout=self.timeout)

    @staticmethod
    def _choose(forms: list[Form], decision: str, logout: str):
        for form in forms:
            if {"email", "password"} <= form.names():
                submit = next((b for b in form.buttons), None)
                return form, "login", submit
        for form in forms:
            if "code" in form.names() and "email" not in form.names():
                return form, "mfa", next((b for b in form.buttons), None)
        for form in forms:
            button = form.button("decision", decision)
            if button:
                return form, "consent", button
        for form in forms:
            button = form.button("logout", logout)
            if button:
                return form, "logout", button
        return None, None, None

    def _error(self, what: str, resp: requests.Response) -> UserAgentError:
        body = resp.text[:1500] if resp.text else ""
        return UserAgentError(f"{what}: {resp.request.method} {resp.url} -> {resp.status_code} "
                              f"{resp.headers.get('Content-Type')}\nsteps so far: {self.steps}\n{body}")


def _same_endpoint(url: str, endpoint: str) -> bool:
    return url == endpoint or url.startswith(endpoint + "?") or url.startswith(endpoint + "#")
