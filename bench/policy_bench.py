"""Authorization policy bench (issue 6).

1. In process: a compiled policy with 1,000 roles (10-deep hierarchies), 10,000 permissions,
   500 rules and 100,000 users; decisions per second and p50/p99 of one decision.
2. Over HTTP (skip with --no-http): the same policy and users in a temporary SQLite database
   behind gunicorn (2 workers); throughput of POST /api/v1/authorize against GET /userinfo
   with the same user's access token, N client threads for D seconds each.

    .venv/bin/python bench/policy_bench.py [--decisions 200000] [--duration 10] [--threads 8]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ROLES, PERMISSIONS, RULES, USERS = 1000, 10_000, 500, 100_000


def policy_document(rng: random.Random) -> dict:
    perms = [f"res{i // 10}:act{i % 10}" for i in range(PERMISSIONS)]
    roles = {}
    for r in range(ROLES):
        spec = {"permissions": perms[r * 10:(r + 1) * 10]}
        if r % 10:  # chains of 10: role r inherits r-1
            spec["parents"] = [f"role{r - 1}"]
        roles[f"role{r}"] = spec
    conditions = ["resource.department == subject.department", "subject.level >= 3",
                  "context.ip in 10.0.0.0/8 and context.time between 08:00 and 18:00",
                  "resource.owner_id == subject.id or subject.level > 5", "subject.region in ['eu', 'us']"]
    rules = [{"name": f"rule{i}", "permission": perms[rng.randrange(PERMISSIONS)] if i % 50 else f"res{i}:*",
              "effect": "deny" if i % 7 == 0 else "allow", "when": conditions[i % len(conditions)]}
             for i in range(RULES)]
    return {"roles": roles, "rules": rules, "scopes": {"department": {"claims": {"department": "subject.department"}}}}


def bench_engine(n: int) -> None:
    from idp.policy.engine import CompiledPolicy, Subject, compile_rule

    rng = random.Random(6)
    doc = policy_document(rng)
    t0 = time.perf_counter()
    policy = CompiledPolicy({k: v["permissions"] for k, v in doc["roles"].items()},
                            {k: v.get("parents", []) for k, v in doc["roles"].items()},
                            [compile_rule(r["name"], r["permission"], r["effect"], r["when"]) for r in doc["rules"]],
                            doc["scopes"])
    compile_ms = (time.perf_counter() - t0) * 1000
    subjects = [Subject(id=f"u{i}", roles=[f"role{rng.randrange(ROLES)}" for _ in range(3)],
                        attributes={"department": rng.choice(["eng", "ops"]), "level": rng.randrange(8),
                                    "region": rng.choice(["eu", "us", "apac"])}) for i in range(USERS)]
    resource = {"department": "eng", "owner_id": "u1"}
    context = {"ip": "10.1.2.3", "time": "10:00"}
    perms = [f"res{i // 10}:act{i % 10}" for i in range(PERMISSIONS)]
    samples, allowed = [], 0
    start = time.perf_counter()
    for _ in range(n):
        s, p = subjects[rng.randrange(USERS)], perms[rng.randrange(PERMISSIONS)]
        t = time.perf_counter()
        allowed += policy.decide(s, p, resource, context).allowed
        samples.append(time.perf_counter() - t)
    total = time.perf_counter() - start
    samples.sort()
    print(f"engine: {ROLES} roles, {PERMISSIONS} permissions, {RULES} rules, {USERS} users; compile {compile_ms:.0f} ms")
    print(f"engine: {n} decisions in {total:.2f} s = {n / total:,.0f}/s (1 thread); "
          f"p50 {statistics.median(samples) * 1e6:.1f} us, p99 {samples[int(n * 0.99)] * 1e6:.1f} us, "
          f"max {samples[-1] * 1e6:.0f} us; allowed {allowed}")


def load(url: str, method: str, headers: dict, body: dict | None, threads: int, duration: float) -> tuple:
    import requests

    counts, latencies, errors = [0] * threads, [[] for _ in range(threads)], [0]
    stop = time.monotonic() + duration

    def worker(i):
        session = requests.Session()
        while time.monotonic() < stop:
            t = time.perf_counter()
            r = session.request(method, url, headers=headers, json=body, timeout=10)
            latencies[i].append(time.perf_counter() - t)
            if r.status_code != 200:
                errors[0] += 1
            counts[i] += 1

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    lat = sorted(x for lst in latencies for x in lst)
    return sum(counts) / duration, lat[int(len(lat) * 0.99)] * 1000, errors[0]


def bench_http(duration: float, threads: int) -> None:
    import requests
    from sqlalchemy import insert

    home = Path(tempfile.mkdtemp(prefix="policy-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IDP_", "DATABASE_URL", "REDIS_URL"))}
    env.update(IDP_INSTANCE_PATH=str(home / "instance"), IDP_KEYS_PATH=str(home / "keys"), IDP_LOG_LEVEL="WARNING")
    os.environ.update(env)
    from idp import create_app
    from idp.settings import Settings

    subprocess.run([str(ROOT / ".venv/bin/idp"), "db", "upgrade"], env=env, cwd=home, check=True, capture_output=True)
    app = create_app(Settings.from_env(env, dotenv=None))
    rng = random.Random(6)
    with app.app_context():
        from idp.policy.files import load_document
        from idp.services.clients import ClientSpec, create_client
        from idp.services.keys import ensure_signing_key
        from idp.settings import decode_kek
        from idp.storage.models import Role, User, UserRole, db
        from idp.storage.policy_models import UserAttribute

        ensure_signing_key(decode_kek(app.extensions["idp"].settings.key_encryption_key))
        load_document(policy_document(rng))
        role_ids = list(db.session.scalars(db.select(Role.id)))
        users = [{"id": f"user-{i:06}", "email": f"u{i}@bench.test", "email_verified": True, "profile": {}}
                 for i in range(USERS)]
        db.session.execute(insert(User), users)
        db.session.execute(insert(UserRole), [{"user_id": u["id"], "role_id": rng.choice(role_ids)} for u in users])
        db.session.execute(insert(UserAttribute), [{"user_id": u["id"], "key": "department",
                                                   "value": rng.choice(["eng", "ops"])} for u in users])
        db.session.commit()
        create_client(ClientSpec(name="bench", redirect_uris=["http://127.0.0.1/cb"],
                                                  grant_types=["authorization_code", "client_credentials"],
                                                  scope="openid authz:decide", client_id="bench"))
    port = 20000 + rng.randrange(20000)
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "--chdir", str(ROOT), "-b", f"127.0.0.1:{port}",
                               "-w", "2", "wsgi:app"], env={**env, "IDP_ISSUER": url, "IDP_ENV": "development"},
                              cwd=home, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                requests.get(url + "/healthz", timeout=1)
                break
            except requests.RequestException:
                time.sleep(0.1)
        # A user access token for this issuer (what a login would give; userinfo needs openid).
        with app.app_context():
            from idp.services.tokens import TokenSettings, issue_access_token
            token, _ = issue_access_token(app.extensions["idp"].keyring,
                                          TokenSettings(url, 900, 3600, 86400, 0), client_id="bench",
                                          sub="user-000042", scope="openid")
        bearer = {"Authorization": "Bearer " + token}
        body = {"resource": "res42", "action": "act1", "resource_attributes": {"department": "eng"}}
        assert requests.post(url + "/api/v1/authorize", json=body, headers=bearer, timeout=10).status_code == 200
        load(url + "/userinfo", "GET", bearer, None, threads, 2)  # warm-up
        load(url + "/api/v1/authorize", "POST", bearer, body, threads, 2)
        ui = load(url + "/userinfo", "GET", bearer, None, threads, duration)
        az = load(url + "/api/v1/authorize", "POST", bearer, body, threads, duration)
        print(f"http: gunicorn -w 2, SQLite, {threads} client threads, {duration:.0f} s each")
        print(f"http: GET /userinfo           {ui[0]:8.0f} req/s  p99 {ui[1]:6.1f} ms  errors {ui[2]}")
        print(f"http: POST /api/v1/authorize  {az[0]:8.0f} req/s  p99 {az[1]:6.1f} ms  errors {az[2]}")
        print(f"http: authorize/userinfo throughput = {az[0] / ui[0]:.2f} (target >= {1 / 1.5:.2f})")
    finally:
        server.terminate()
        server.wait(timeout=15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=200_000)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--no-http", action="store_true")
    args = parser.parse_args()
    bench_engine(args.decisions)
    if not args.no_http:
        bench_http(args.duration, args.threads)


if __name__ == "__main__":
    main()
