"""Prints the side-by-side table of a bench run (medians over rounds, errors summed over rounds).

    report.py WORKDIR     reads results.csv, logins.jsonl, rss.jsonl, hash.json, meta.json there
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import sys
from collections import defaultdict
from pathlib import Path

ENDPOINTS = ["token", "introspect", "userinfo", "jwks", "discovery"]
LABELS = {"token": "token (JWT)", "introspect": "introspect", "userinfo": "userinfo", "jwks": "jwks",
          "discovery": "discovery"}
# Targets from issue 3 (Performance).
TOKEN_RATIO, INTROSPECT_RATIO = 1.0, 0.8
TOKEN_P99, INTROSPECT_P99 = 50.0, 25.0
RSS_LIMIT_MB, LOGIN_SHARE = 160.0, 0.70


def _jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, spec=".1f", width=8):
    return f"{'-' if v is None else format(v, spec):>{width}}"


def main(argv=None) -> int:
    work = Path((argv or sys.argv[1:])[0])
    meta = _json(work / "meta.json")
    hb = _json(work / "hash.json")
    # cells[(server, endpoint, conns)] -> list of per-round dicts
    cells: dict[tuple, list[dict]] = defaultdict(list)
    if (work / "results.csv").exists():
        with open(work / "results.csv", newline="") as f:
            for row in csv.reader(f):
                if len(row) < 11:
                    continue
                name, ep, conns = row[0], row[1], int(row[2])
                server, _, rnd = name.partition("#")
                ep = "token" if ep == "token_jwt" else ep
                cells[(server, ep, conns)].append({
                    "rps": float(row[3]), "p50": float(row[4]), "p99": float(row[6]),
                    "err": int(row[8]) + int(row[9]) + int(row[10]), "round": rnd})
    # server CPU ticks per cell and round (server processes + their datastore), from cpu.csv
    ticks: dict[tuple, int] = {}
    if (work / "cpu.csv").exists():
        with open(work / "cpu.csv", newline="") as f:
            for row in csv.reader(f):
                if len(row) == 4:
                    server, _, rnd = row[0].partition("#")
                    ticks[(server, row[1], int(row[2]), rnd)] = int(row[3])
    hz = os.sysconf("SC_CLK_TCK")
    duration = float(meta.get("duration") or 0)
    logins = _jsonl(work / "logins.jsonl")
    rss = _jsonl(work / "rss.jsonl")
    rss_idle = _jsonl(work / "rss_idle.jsonl")
    noise = _jsonl(work / "noise.jsonl")
    have_peer = bool(meta.get("peer"))
    conns_list = sorted({c for (_, _, c) in cells}) or [int(x) for x in str(meta.get("conns", "16")).split()]

    def agg(server, ep, conns):
        runs = cells.get((server, ep, conns), [])
        if not runs:
            return None
        cpu = []
        for r in runs:
            t = ticks.get((server, ep, conns, r["round"]))
            if t is not None and r["rps"] > 0 and duration > 0:
                cpu.append(t * 1000 / hz / (r["rps"] * duration))
        return {"rps": med([r["rps"] for r in runs]), "p50": med([r["p50"] for r in runs]),
                "p99": med([r["p99"] for r in runs]), "err": sum(r["err"] for r in runs), "n": len(runs),
                "all": [r["rps"] for r in runs], "cpu": med(cpu)}

    out = []
    p = out.append
    p(f"# idp bench {meta.get('started', '')}  backend={meta.get('backend')}  rounds={meta.get('rounds')}  "
      f"duration={meta.get('duration')}s/cell  cpus={meta.get('cpus')}  wrk threads={meta.get('threads')}  "
      f"loadavg(before)={meta.get('loadavg')}")
    p(f"# ours: {meta.get('ours_desc', '')}")
    p(f"# peer: {meta.get('peer_desc') if have_peer else 'not run (' + meta.get('peer_note', '../shared/peers absent') + ')'}")
    p("# medians over rounds; err = non-2xx + socket errors + timeouts, summed over all rounds;")
    p("# cpu = server CPU ms per request (all its processes + its datastore; the load generator excluded),")
    p("#       less sensitive to a busy machine than req/s; cpu ratio = peer cpu / ours cpu (>1: we use less)")
    hdr = f"{'endpoint':<13}{'conns':>6} | {'ours req/s':>10} {'p50 ms':>7} {'p99 ms':>7} {'err':>5} {'cpu':>6}"
    if have_peer:
        hdr += (f" | {'peer req/s':>10} {'p50 ms':>7} {'p99 ms':>7} {'err':>5} {'cpu':>6} | {'ours/peer':>9}"
                f" {'cpu ratio':>9}")
    p(hdr)
    p("-" * len(hdr))
    ratios: dict[tuple, float] = {}
    for conns in conns_list:
        for ep in ENDPOINTS:
            o = agg("ours", ep, conns)
            line = f"{LABELS[ep]:<13}{conns:>6} | "
            line += (f"{fmt(o['rps'], '.1f', 10)} {fmt(o['p50'], '.2f', 7)} {fmt(o['p99'], '.2f', 7)} {o['err']:>5}"
                     f" {fmt(o['cpu'], '.2f', 6)}" if o else f"{'not measured':>40}")
            if have_peer:
                pe = agg("peer", ep, conns)
                if pe:
                    line += (f" | {fmt(pe['rps'], '.1f', 10)} {fmt(pe['p50'], '.2f', 7)} "
                             f"{fmt(pe['p99'], '.2f', 7)} {pe['err']:>5} {fmt(pe['cpu'], '.2f', 6)}")
                    if o and pe["rps"]:
                        ratios[(ep, conns)] = o["rps"] / pe["rps"]
                        line += f" | {ratios[(ep, conns)]:>8.2f}x"
                        if o["cpu"] and pe["cpu"]:
                            line += f" {pe['cpu'] / o['cpu']:>8.2f}x"
                else:
                    note = meta.get("peer_skip", {}).get(ep, "not measured")
                    line += f" | {note}"
            p(line)
    # logins
    ol = [x for x in logins if x.get("server") == "ours"]
    login_rate = med([x["logins_per_s"] for x in ol]) if ol else None
    login_cpu = med([ticks[("ours", "logins", int(x["workers"]), str(x["round"]))] * 1000 / hz / x["logins"]
                     for x in ol if x.get("logins") and ("ours", "logins", int(x["workers"]), str(x["round"])) in ticks])
    if ol:
        line = (f"{'logins/s':<13}{ol[0].get('workers', ''):>6} | {fmt(login_rate, '.1f', 10)} "
                f"{fmt(med([x['p50_ms'] for x in ol]), '.1f', 7)} {fmt(med([x['p99_ms'] for x in ol]), '.1f', 7)} "
                f"{sum(x['errors'] for x in ol):>5} {fmt(login_cpu, '.1f', 6)}")
    else:
        line = f"{'logins/s':<13}{'':>6} | {'not measured':>40}"
    if have_peer:
        line += f" | {meta.get('peer_skip', {}).get('logins', 'not measured')}"
    p(line)
    p("  (logins/s: complete authorize -> login -> consent -> code -> token flows, p50/p99 = ms per whole login,"
      " cpu = server CPU ms per login; 'conns' = login workers)")
    p("")
    p("per-round req/s (ours | peer):")
    for conns in conns_list:
        for ep in ENDPOINTS:
            o, pe = agg("ours", ep, conns), agg("peer", ep, conns)
            if o or pe:
                p(f"  {LABELS[ep]:<13}{conns:>4}: {o['all'] if o else '-'} | {pe['all'] if pe else '-'}")
    if ol:
        p(f"  {'logins/s':<13}{'':>4}: {[x['logins_per_s'] for x in ol]}")
        kinds: dict[str, int] = defaultdict(int)
        for x in ol:
            for k, v in (x.get("error_kinds") or {}).items():
                kinds[k] += v
        if kinds:
            p(f"  login errors: {dict(kinds)}")
    if noise:
        by = {srv: [f"{x['other_share'] * 100:.0f}%" for x in noise if x["server"] == srv] for srv in ("ours", "peer")}
        worst_noise = max(x["other_share"] for x in noise)
        kt = {srv: [f"{x.get('kernel_threads_share', 0) * 100:.0f}%" for x in noise if x["server"] == srv]
              for srv in ("ours", "peer")}
        p(f"  CPU used by other processes on the machine during each round (of {meta.get('cpus')} CPUs): "
          f"ours {by['ours']} | peer {by['peer']}"
          + ("  <- WARNING: the machine was not quiet; numbers are depressed/noisy" if worst_noise > 0.10 else ""))
        p(f"  kernel threads (ksoftirqd/kworkers, mostly loopback TCP for the bench itself): "
          f"ours {kt['ours']} | peer {kt['peer']}")
    if (work / "code_changes.txt").exists():
        p("  WARNING: our code changed during the run (server restarted each round), rounds mix versions: "
          + "; ".join((work / "code_changes.txt").read_text().split("\n")).strip("; "))
    p("")
    share = None
    if hb:
        p(f"argon2id bound: {hb['cores']} cores / {hb['hash_ms']:.1f} ms CPU per hash (our parameters, median of "
          f"{hb['samples']}; wall median {hb.get('hash_wall_ms', 0):.1f} ms, min {hb.get('hash_min_ms', 0):.1f} ms)"
          f" = {hb['bound_per_s']:.1f} logins/s")
        if login_rate is not None:
            share = login_rate / hb["bound_per_s"]
            p(f"ours: {login_rate:.1f} logins/s = {share * 100:.0f} % of the argon2id bound")
        if login_cpu:
            p(f"ours, CPU-bound estimate: {hb['cores']} cores / {login_cpu:.1f} ms server CPU per login = "
              f"{hb['cores'] * 1000 / login_cpu:.1f} logins/s = {hb['cores'] * 1000 / login_cpu / hb['bound_per_s'] * 100:.0f} %"
              f" of the bound (what a quiet machine with the load generator elsewhere would allow)")
    ours_rss = [x for x in rss if x.get("server") == "ours"]
    worst = None
    if ours_rss:
        worst = max(ours_rss, key=lambda x: x["total_mb"])
        pr = worst["processes"][0]
        p(f"gunicorn RSS after load (worst round {worst.get('round')}): master {pr['master_mb']} MB + workers "
          f"{' + '.join(str(w) for w in pr['workers_mb'])} MB = {worst['total_mb']} MB "
          f"(all rounds: {[x['total_mb'] for x in ours_rss]})")
    idle_worst = max(rss_idle, key=lambda x: x["total_mb"]) if rss_idle else None
    if idle_worst:
        pr = idle_worst["processes"][0]
        p(f"gunicorn RSS a few seconds after the load (worst round {idle_worst.get('round')}): master "
          f"{pr['master_mb']} MB + workers {' + '.join(str(w) for w in pr['workers_mb'])} MB = "
          f"{idle_worst['total_mb']} MB (all rounds: {[x['total_mb'] for x in rss_idle]})")
    peer_rss = [x for x in rss if x.get("server") == "peer"]
    if peer_rss:
        w = max(peer_rss, key=lambda x: x["total_mb"])
        p(f"peer RSS after load (node primary + workers, Redis not counted): {w['total_mb']} MB")
    # targets
    p("")
    p("targets (issue 3):")

    def target(ok, text):
        p(f"  [{'PASS' if ok else 'FAIL' if ok is not None else 'n/a '}] {text}")

    c = 16 if 16 in conns_list else conns_list[0]
    tok, intro = agg("ours", "token", c), agg("ours", "introspect", c)

    def ratio_text(ep):
        return f"{ratios[(ep, c)]:.2f}x" if (ep, c) in ratios else "no ratio"

    target(None if ("token", c) not in ratios else ratios[("token", c)] >= TOKEN_RATIO,
           f"token req/s >= {TOKEN_RATIO}x peer: {ratio_text('token')}")
    target(None if ("introspect", c) not in ratios else ratios[("introspect", c)] >= INTROSPECT_RATIO,
           f"introspection req/s >= {INTROSPECT_RATIO}x peer: {ratio_text('introspect')}")
    target(None if not tok else tok["p99"] <= TOKEN_P99,
           f"token p99 <= {TOKEN_P99:.0f} ms: {tok['p99'] if tok else '-'} ms")
    target(None if not intro else intro["p99"] <= INTROSPECT_P99,
           f"introspection p99 <= {INTROSPECT_P99:.0f} ms: {intro['p99'] if intro else '-'} ms")
    total_err = sum(r["err"] for (s, _, _), runs in cells.items() if s == "ours" for r in runs)
    total_err += sum(x["errors"] for x in ol)
    target(total_err == 0 if cells else None, f"zero errors (ours, all endpoints and logins): {total_err}")
    target(None if worst is None else worst["total_mb"] <= RSS_LIMIT_MB,
           f"gunicorn master + 2 workers <= {RSS_LIMIT_MB:.0f} MB RSS right after the load: "
           f"{worst['total_mb'] if worst else '-'} MB")
    if idle_worst:
        target(idle_worst["total_mb"] <= RSS_LIMIT_MB,
               f"gunicorn master + 2 workers <= {RSS_LIMIT_MB:.0f} MB RSS a few seconds after the load: "
               f"{idle_worst['total_mb']} MB")
    est = (hb["cores"] * 1000 / login_cpu / hb["bound_per_s"]) if (hb and login_cpu) else None
    target(None if share is None else share >= LOGIN_SHARE,
           f"logins >= {LOGIN_SHARE * 100:.0f} % of the argon2id bound: "
           f"{f'{share * 100:.0f} %' if share is not None else '-'}"
           f"{f' (CPU-bound estimate {est * 100:.0f} %)' if est is not None else ''}")
    text = "\n".join(out)
    print(text)
    (work / "table.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
