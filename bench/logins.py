"""Complete authorization-code logins per second, the way a browser and a relying party do them.

Each login: GET /authorize (code + PKCE S256, state, nonce) -> login form (email, password,
hidden csrf_token/interaction) -> consent form when shown (decision=allow) -> 302 to the
redirect_uri with ?code= -> POST /token (authorization_code + code_verifier, client_secret_basic).
Redirects are followed by hand and the flow stops at the redirect_uri (never contacted).

N worker threads, each with its own requests.Session (keep-alive; cookies cleared before each
login so every login is a full password login, not SSO). Bounded by --count and --duration.

    logins.py --base URL --client-id ID --client-secret S --email E --password P \
              --redirect-uri URI [--workers 16] [--count 2000] [--duration 10] [--json]
    logins.py ... --mint-token      one login, print the access token (for the userinfo bench)
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import secrets
import statistics
import sys
import threading
import time
from collections import Counter
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import requests

TIMEOUT = 10
MAX_HOPS = 12


class LoginError(Exception):
    """One failed login; the message is the error category (kept short for counting)."""


class FormParser(HTMLParser):
    """Collects <form>s with their action, method, <input>s and named <button>s."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.forms: list[dict] = []
        self._form: dict | None = None

    def handle_starttag(self, tag, attrs):
        a = {k: (v if v is not None else "") for k, v in attrs}
        if tag == "form":
            self._form = {"action": a.get("action", ""), "method": (a.get("method") or "get").lower(),
                          "inputs": [], "buttons": []}
            self.forms.append(self._form)
        elif self._form is not None and tag == "input" and a.get("name"):
            self._form["inputs"].append(a)
        elif self._form is not None and tag == "button" and a.get("name"):
            self._form["buttons"].append(a)

    def handle_endtag(self, tag):
        if tag == "form":
            self._form = None


def parse_forms(html: str) -> list[dict]:
    p = FormParser()
    p.feed(html)
    return p.forms


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Flow:
    def __init__(self, args, disc: dict):
        self.args = args
        self.authorize_url = disc["authorization_endpoint"]
        self.token_url = disc["token_endpoint"]
        self.issuer = disc.get("issuer")

    def login(self, s: requests.Session) -> dict:
        a = self.args
        s.cookies.clear()
        verifier = b64url(secrets.token_bytes(32))
        challenge = b64url(hashlib.sha256(verifier.encode()).digest())
        state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
        params = {"response_type": "code", "client_id": a.client_id, "redirect_uri": a.redirect_uri,
                  "scope": a.scope, "state": state, "nonce": nonce, "code_challenge": challenge,
                  "code_challenge_method": "S256"}
        url = self.authorize_url + ("&" if "?" in self.authorize_url else "?") + urlencode(params)
        if a.verbose:
            s.hooks["response"] = [lambda resp, *_, **__: print(
                f"  {resp.request.method} {resp.url[:120]} -> {resp.status_code} "
                f"{resp.headers.get('Location', '')[:120]}", file=sys.stderr)]
        r = s.get(url, allow_redirects=False, timeout=TIMEOUT)
        saw_login = False
        for _ in range(MAX_HOPS):
            if r.is_redirect:
                loc = urljoin(r.url, r.headers["Location"])
                if loc.split("?", 1)[0] == a.redirect_uri:
                    q = parse_qs(urlsplit(loc).query)
                    if "error" in q:
                        raise LoginError(f"authorize error={q['error'][0]}")
                    if q.get("state", [None])[0] != state:
                        raise LoginError("state mismatch")
                    if self.issuer and q.get("iss", [self.issuer])[0] != self.issuer:
                        raise LoginError("iss mismatch")
                    if "code" not in q:
                        raise LoginError("no code in redirect")
                    if not saw_login:
                        raise LoginError("no login form was shown (SSO?)")
                    return self.redeem(s, q["code"][0], verifier)
                r = s.get(loc, allow_redirects=False, timeout=TIMEOUT)
                continue
            if r.status_code != 200:
                if a.verbose:
                    print(f"  {r.status_code} {r.url}\n{r.text[:2000]}", file=sys.stderr)
                raise LoginError(f"HTTP {r.status_code} at {r.request.method} {urlsplit(r.url).path}")
            forms = parse_forms(r.text)
            form = next((f for f in forms if any(i.get("name") == "password" for i in f["inputs"])), None)
            data: dict[str, str] = {}
            if form is not None:
                saw_login = True
                for i in form["inputs"]:
                    if i.get("type", "text").lower() in ("submit", "button", "checkbox", "radio"):
                        continue
                    data[i["name"]] = i.get("value", "")
                data["email"], data["password"] = a.email, a.password
            else:
                form = next((f for f in forms if any(b.get("name") == "decision" for b in f["buttons"])), None)
                if form is None:
                    raise LoginError(f"no login or consent form at {urlsplit(r.url).path}")
                for i in form["inputs"]:
                    if i.get("type", "text").lower() == "hidden":
                        data[i["name"]] = i.get("value", "")
                data["decision"] = "allow"
            action = urljoin(r.url, form["action"] or r.url)
            if form["method"] == "post":
                r = s.post(action, data=data, allow_redirects=False, timeout=TIMEOUT)
            else:
                r = s.get(action, params=data, allow_redirects=False, timeout=TIMEOUT)
        raise LoginError("too many hops")

    def redeem(self, s: requests.Session, code: str, verifier: str) -> dict:
        a = self.args
        r = s.post(self.token_url, data={"grant_type": "authorization_code", "code": code,
                                         "redirect_uri": a.redirect_uri, "code_verifier": verifier},
                   auth=(a.client_id, a.client_secret), timeout=TIMEOUT)
        if r.status_code != 200:
            try:
                err = r.json().get("error", "")
            except ValueError:
                err = ""
            if a.verbose:
                print(f"  token {r.status_code}: {r.text[:2000]}", file=sys.stderr)
            raise LoginError(f"token HTTP {r.status_code} {err}".strip())
        body = r.json()
        if "access_token" not in body or ("openid" in a.scope.split() and "id_token" not in body):
            raise LoginError("token response lacks access_token/id_token")
        return body


def discover(base: str) -> dict:
    r = requests.get(base.rstrip("/") + "/.well-known/openid-configuration", timeout=TIMEOUT)
    r.raise_for_status()
    return r.json()


def run_load(flow: Flow, workers: int, count: int, duration: float) -> dict:
    lock = threading.Lock()
    latencies: list[float] = []
    errors: Counter = Counter()
    issued = [0]
    start = time.perf_counter()
    deadline = start + duration

    def take() -> bool:
        with lock:
            if issued[0] >= count or time.perf_counter() >= deadline:
                return False
            issued[0] += 1
            return True

    def worker():
        with requests.Session() as s:
            while take():
                t0 = time.perf_counter()
                try:
                    flow.login(s)
                except LoginError as exc:
                    with lock:
                        errors[str(exc)] += 1
                    continue
                except requests.RequestException as exc:
                    with lock:
                        errors[type(exc).__name__] += 1
                    continue
                with lock:
                    latencies.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=duration + 4 * TIMEOUT * MAX_HOPS)
    elapsed = time.perf_counter() - start
    ok = len(latencies)
    lat_ms = sorted(x * 1000 for x in latencies)

    def pct(p: float) -> float | None:
        if not lat_ms:
            return None
        return round(lat_ms[min(len(lat_ms) - 1, int(round(p / 100 * (len(lat_ms) - 1))))], 1)

    return {"logins": ok, "errors": sum(errors.values()), "error_kinds": dict(errors.most_common(5)),
            "elapsed_s": round(elapsed, 2), "logins_per_s": round(ok / elapsed, 2) if elapsed else 0.0,
            "p50_ms": round(statistics.median(lat_ms), 1) if lat_ms else None, "p99_ms": pct(99),
            "workers": workers}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, help="issuer URL (discovery is read from it)")
    p.add_argument("--client-id", required=True)
    p.add_argument("--client-secret", required=True)
    p.add_argument("--email", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--redirect-uri", required=True)
    p.add_argument("--scope", default="openid profile email")
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--count", type=int, default=2000, help="stop after this many logins")
    p.add_argument("--duration", type=float, default=10.0, help="stop starting logins after this many seconds")
    p.add_argument("--json", action="store_true")
    p.add_argument("--mint-token", action="store_true", help="one login; print its access token")
    p.add_argument("--verbose", action="store_true", help="print every hop and error bodies on stderr")
    args = p.parse_args(argv)
    host = urlsplit(args.base).hostname or ""
    if not (host.startswith("127.") or host in ("localhost", "::1")):
        print("refusing: --base must be a loopback URL", file=sys.stderr)
        return 2
    try:
        flow = Flow(args, discover(args.base))
    except (requests.RequestException, ValueError, KeyError) as exc:
        print(f"discovery failed: {exc}", file=sys.stderr)
        return 1
    if args.mint_token:
        try:
            with requests.Session() as s:
                print(flow.login(s)["access_token"])
        except (LoginError, requests.RequestException) as exc:
            print(f"login failed: {exc}", file=sys.stderr)
            return 1
        return 0
    result = run_load(flow, max(1, args.workers), max(1, args.count), max(0.1, args.duration))
    if args.json:
        print(json.dumps(result))
    else:
        print(f"logins={result['logins']} errors={result['errors']} {result['logins_per_s']}/s "
              f"p50={result['p50_ms']}ms p99={result['p99_ms']}ms {result['error_kinds'] or ''}")
    return 0 if result["logins"] else 1


if __name__ == "__main__":
    sys.exit(main())
