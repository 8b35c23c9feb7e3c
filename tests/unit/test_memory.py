"""Idle workers give the password-hash buffers back (idp/memory.py): checked on a real process
(a fresh interpreter running the app outside test mode), by its resident set size."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.conftest import ROOT

SCRIPT = textwrap.dedent("""
    import json, os, sys, tempfile, time
    from idp import create_app
    from idp.services import users
    from idp.settings import Settings

    def rss_mb():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

    base = tempfile.mkdtemp()
    app = create_app(Settings(instance_path=base, keys_path=base + "/keys", log_level="WARNING"),
                     migrations=False)
    client = app.test_client()
    client.get("/healthz")  # a request: the trim thread starts, as in a gunicorn worker
    time.sleep(3)
    before = rss_mb()
    for _ in range(3):
        users.hash_password("a long enough passphrase")  # argon2id: 19 MiB each
    client.get("/healthz")  # ... during a request
    busy = rss_mb()
    time.sleep(float(sys.argv[1]))
    print(json.dumps({"before": before, "busy": busy, "idle": rss_mb()}))
""")


def _run(idle_seconds: float) -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(idle_seconds)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"})
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_an_idle_worker_returns_the_argon2_buffers():
    rss = _run(idle_seconds=4)
    # The hashes grew the heap by about one buffer (19 MiB); after IDLE_TTL it is given back.
    assert rss["busy"] - rss["before"] > 12, rss
    assert rss["busy"] - rss["idle"] > 12, rss


def test_a_busy_worker_keeps_them():
    # Within IDLE_TTL nothing is trimmed: the next hash reuses the buffer without page faults.
    rss = _run(idle_seconds=0.5)
    assert rss["busy"] - rss["idle"] < 4, rss
