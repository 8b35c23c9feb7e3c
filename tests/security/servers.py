"""Helpers for the protection tests: gunicorn with its own settings, an in-process app with
tuned settings, and a test relying party that receives back-channel logout tokens.

All of them share the pass's database and store with the session `app` fixture, so the
usual per-test cleanup applies to them too."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import requests

from tests.conftest import ROOT, free_port


class TunedServer:
    def __init__(self, url: str, process: subprocess.Popen, log: Path):
        self.url, self.process, self.log = url, process, log

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_server(settings, base_dir: Path, **env_over: str) -> TunedServer:
    """gunicorn (2 workers) on a free loopback port with extra IDP_* settings."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IDP_", "DATABASE_URL", "REDIS_URL"))}
    env.update({"IDP_ISSUER": url, "DATABASE_URL": settings.database_url, "IDP_INSTANCE_PATH": settings.instance_path,
                "IDP_KEYS_PATH": settings.keys_path, "IDP_LOG_LEVEL": "WARNING", "IDP_SMTP_URL": settings.smtp_url})
    if settings.redis_url:
        env["REDIS_URL"] = settings.redis_url
    env.update(env_over)
    log = base_dir / f"gunicorn-tuned-{port}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--chdir", str(ROOT), "-b", f"127.0.0.1:{port}", "-w", "2",
         "--timeout", "60", "wsgi:app"], env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(url + "/healthz", timeout=1).status_code == 200:
                return TunedServer(url, process, log)
        except requests.RequestException:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("gunicorn did not start:\n" + log.read_text()[-3000:])
        time.sleep(0.1)


_apps: dict = {}


def tuned_app(settings, **over):
    """An in-process app on the same database and store with some settings changed (cached)."""
    from idp import create_app

    key = tuple(sorted(over.items()))
    if key not in _apps:
        _apps[key] = create_app(settings.replace(**over))
    return _apps[key]


class LogoutReceiver:
    """A relying party's back-channel logout endpoint on loopback (http.server in a thread).
    `responses` is a list of status codes to answer with, in turn (then 200)."""

    def __init__(self):
        self.received: list[str] = []
        self.responses: list[int] = []
        rp = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                status = rp.responses.pop(0) if rp.responses else 200
                if self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
                    rp.received.extend(form.get("logout_token", []))
                self.send_response(status)
                self.send_header("Cache-Control", "no-store")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/backchannel-logout"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return list(self.received)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
