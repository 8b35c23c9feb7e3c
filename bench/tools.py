"""Small helpers for bench/run.sh (each prints one JSON document, or a CSV row for `wrkrow`).

    tools.py hashbound [--n 10]                 argon2id: median ms of password_context().hash, cores, bound/s
    tools.py rss PID [PID...]                   RSS (MB) of each process and its direct children, from /proc
    tools.py probe --base URL --client-id ID --client-secret S [--resource R] [--userinfo-token T]
                                                checks a server before it is loaded (discovery, JWT, introspection)
    tools.py wrkrow NAME CONNS < wrk-output     bench.lua RESULT line -> bench.sh CSV row
    tools.py free-port                          a free loopback TCP port
    tools.py cpu-snap PID...                    CPU ticks: whole machine (user+nice+system) and the process trees
                                                of PID... (incl. reaped children); diff two with `cpu-other A B`
    tools.py cpu-other SNAP_A SNAP_B            share of the machine used by processes outside the bench
    tools.py cpu-ticks PID...                   CPU ticks used so far by the process trees of PID...
    tools.py wait-quiet PID... [--max 20]       wait until the machine is quiet (other processes < 15 %)
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path


def cmd_hashbound(args) -> dict:
    """One argon2id hash with our parameters: median wall time and median CPU time of --n hashes.
    The bound uses the CPU time, which a busy machine inflates much less than the wall time."""
    try:  # with the server's environment, so that settings such as IDP_ARGON2_* apply as in the server
        from idp import create_app

        create_app()
    except Exception as exc:  # still measurable with the defaults
        print(f"hashbound: create_app failed ({exc}); using default parameters", file=sys.stderr)
    from idp.services.users import password_context

    ctx = password_context()
    ctx.hash("warm-up password 0")
    wall, cpu = [], []
    for i in range(args.n):
        t0, c0 = time.perf_counter(), time.process_time()
        ctx.hash(f"bench password {i} correct horse")
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    med = statistics.median(cpu)
    cores = os.cpu_count() or 1
    return {"hash_ms": round(med * 1000, 2), "hash_wall_ms": round(statistics.median(wall) * 1000, 2),
            "hash_min_ms": round(min(wall) * 1000, 2), "cores": cores, "bound_per_s": round(cores / med, 1),
            "scheme": ctx.default_scheme(), "samples": args.n}


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return sorted(kids)


def cmd_rss(args) -> dict:
    out = {"processes": []}
    total = 0.0
    for pid in args.pids:
        master = _rss_mb(pid)
        workers = [(c, _rss_mb(c)) for c in _children(pid)]
        workers = [(c, m) for c, m in workers if m is not None]
        out["processes"].append({"pid": pid, "master_mb": master, "workers_mb": [m for _, m in workers]})
        total += (master or 0) + sum(m for _, m in workers)
    out["total_mb"] = round(total, 1)
    return out


def _jwt_header(token: str) -> dict | None:
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except ValueError:
        return None


def cmd_probe(args) -> dict:
    import requests

    base = args.base.rstrip("/")
    res: dict = {"base": base}
    try:
        disc = requests.get(base + "/.well-known/openid-configuration", timeout=10)
        res["discovery_status"] = disc.status_code
        d = disc.json() if disc.status_code == 200 else {}
    except (requests.RequestException, ValueError) as exc:
        res["discovery_error"] = str(exc)[:200]
        return res
    res["missing"] = [k for k in ("token_endpoint", "introspection_endpoint", "jwks_uri", "userinfo_endpoint",
                                  "authorization_endpoint") if not d.get(k)]
    auth = (args.client_id, args.client_secret)

    def mint(resource):
        data = {"grant_type": "client_credentials", "scope": args.scope}
        if resource:
            data["resource"] = resource
        t0 = time.perf_counter()
        r = requests.post(d["token_endpoint"], data=data, auth=auth, timeout=30)
        try:
            body = r.json()
        except ValueError:
            body = {}
        return r, body, round((time.perf_counter() - t0) * 1000, 1)

    if d.get("token_endpoint"):
        r, body, res["token_ms"] = mint(args.resource)
        res["token_status"] = r.status_code
        res["token_cache_control"] = r.headers.get("Cache-Control")
        tok = body.get("access_token")
        if not tok:
            res["token_error"] = body.get("error") or r.text[:200]
        else:
            hdr = _jwt_header(tok)
            res["access_token"] = "jwt" if hdr else "opaque"
            if hdr:
                res["jwt_header"] = {k: hdr.get(k) for k in ("alg", "typ", "kid")}
        if args.resource:  # as bench.sh: introspection is measured with a token minted without resource
            tok = mint(None)[1].get("access_token")
        if tok and d.get("introspection_endpoint"):
            t0 = time.perf_counter()
            ri = requests.post(d["introspection_endpoint"], data={"token": tok}, auth=auth, timeout=30)
            res["introspect_ms"] = round((time.perf_counter() - t0) * 1000, 1)
            res["introspect_status"] = ri.status_code
            try:
                res["introspect_active"] = ri.json().get("active")
            except ValueError:
                res["introspect_active"] = None
    if args.userinfo_token and d.get("userinfo_endpoint"):
        ru = requests.get(d["userinfo_endpoint"], headers={"Authorization": f"Bearer {args.userinfo_token}"},
                          timeout=30)
        res["userinfo_status"] = ru.status_code
        try:
            res["userinfo_has_sub"] = "sub" in ru.json()
        except ValueError:
            res["userinfo_has_sub"] = False
    if d.get("jwks_uri"):
        rj = requests.get(d["jwks_uri"], timeout=10)
        res["jwks_status"] = rj.status_code
        res["jwks_cache_control"] = rj.headers.get("Cache-Control")
    return res


def cmd_wrkrow(args) -> str:
    for line in sys.stdin:
        if line.startswith("RESULT "):
            r = dict(kv.split("=", 1) for kv in line.split()[1:])
            return ",".join([args.name, r["label"], str(args.conns), r["rps"], r["p50_ms"], r["p90_ms"],
                             r["p99_ms"], r["max_ms"], r["non2xx"], r["sock_err"], r["timeouts"]])
    return ""


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, utime+stime+cutime+cstime ticks)."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            f = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        table[int(stat.parent.name)] = (int(f[1]), int(f[11]) + int(f[12]) + int(f[13]) + int(f[14]))
    return table


def cmd_cpu_snap(args) -> dict:
    cpu = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    total = int(cpu[0]) + int(cpu[1]) + int(cpu[2])  # user nice system (softirq of loopback excluded)
    table = _proc_table()
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        kids.setdefault(ppid, []).append(pid)
    def tree(roots):
        seen, todo = set(), [p for p in roots if p in table]
        while todo:
            pid = todo.pop()
            if pid not in seen:
                seen.add(pid)
                todo.extend(kids.get(pid, []))
        return seen

    ours = tree(args.pids)
    # kernel threads (kthreadd's children: ksoftirqd, kworkers) mostly do network work for whichever
    # process sends the packets: counted apart, not as "other processes"
    kthreads = tree([2]) - ours
    return {"time": time.time(), "total": total, "ours": sum(table[p][1] for p in ours),
            "kernel": sum(table[p][1] for p in kthreads),
            "pids": sorted(ours), "hz": os.sysconf("SC_CLK_TCK"), "cpus": os.cpu_count()}


def cmd_cpu_ticks(args) -> str:
    return str(cmd_cpu_snap(args)["ours"])


def cmd_cpu_other(args) -> dict:
    a, b = (json.loads(Path(x).read_text()) for x in (args.a, args.b))
    # processes of the bench that ended between the snapshots were reaped by a process of the bench
    # (cutime); processes that were alive at A but gone at B are counted at A only, so count them at B too
    wall = b["time"] - a["time"]
    kernel = b.get("kernel", 0) - a.get("kernel", 0)
    other = (b["total"] - a["total"]) - (b["ours"] - a["ours"]) - kernel
    cap = wall * b["hz"] * b["cpus"]
    share = other / cap if wall > 0 else 0.0
    return {"wall_s": round(wall, 1), "other_cpu_s": round(max(other, 0) / b["hz"], 1),
            "other_share": round(max(share, 0.0), 3), "kernel_threads_share": round(max(kernel / cap, 0.0), 3)}


def cmd_wait_quiet(args) -> dict:
    """Wait (at most --max seconds) until processes outside the bench use < --below of the machine."""
    deadline = time.time() + args.max
    while True:
        a = cmd_cpu_snap(args)
        time.sleep(args.window)
        b = cmd_cpu_snap(args)
        wall = b["time"] - a["time"]
        share = max(0.0, ((b["total"] - a["total"]) - (b["ours"] - a["ours"]) - (b["kernel"] - a["kernel"]))
                    / (wall * b["hz"] * b["cpus"]))
        if share < args.below or time.time() >= deadline:
            return {"other_share": round(share, 3), "quiet": share < args.below,
                    "waited_s": round(args.max - max(0.0, deadline - time.time()), 1)}


def cmd_free_port(args) -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("hashbound")
    h.add_argument("--n", type=int, default=10)
    r = sub.add_parser("rss")
    r.add_argument("pids", type=int, nargs="+")
    pr = sub.add_parser("probe")
    pr.add_argument("--base", required=True)
    pr.add_argument("--client-id", required=True)
    pr.add_argument("--client-secret", required=True)
    pr.add_argument("--scope", default="api:read")
    pr.add_argument("--resource")
    pr.add_argument("--userinfo-token")
    w = sub.add_parser("wrkrow")
    w.add_argument("name")
    w.add_argument("conns")
    sub.add_parser("free-port")
    cs = sub.add_parser("cpu-snap")
    cs.add_argument("pids", type=int, nargs="+")
    ct = sub.add_parser("cpu-ticks")
    ct.add_argument("pids", type=int, nargs="+")
    wq = sub.add_parser("wait-quiet")
    wq.add_argument("pids", type=int, nargs="+")
    wq.add_argument("--max", type=float, default=20)
    wq.add_argument("--below", type=float, default=0.15)
    wq.add_argument("--window", type=float, default=2)
    co = sub.add_parser("cpu-other")
    co.add_argument("a")
    co.add_argument("b")
    args = p.parse_args(argv)
    fn = {"hashbound": cmd_hashbound, "rss": cmd_rss, "probe": cmd_probe, "wrkrow": cmd_wrkrow,
          "free-port": cmd_free_port, "cpu-snap": cmd_cpu_snap, "cpu-other": cmd_cpu_other,
          "wait-quiet": cmd_wait_quiet, "cpu-ticks": cmd_cpu_ticks}[args.cmd]
    out = fn(args)
    print(out if isinstance(out, str) else json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
