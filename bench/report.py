#!/usr/bin/env python3
"""hallpass benchmark report generator (standard library only).

  report.py --point FILE            one line for a measured point (run.sh prints it)
  report.py --run DIR [--bench D]   summarise a run directory into bench/out/<run_id>.json,
                                    print its table, and (re)write every RESULTS file from
                                    the newest run of each kind (so cross-run comparisons,
                                    SQLite vs Postgres and 10M vs 100k, appear in both)
  report.py --write-all [--bench D] only the last step

Which file a run writes: bench/RESULTS.md (Postgres) or bench/RESULTS-sqlite.md (SQLite) for
the default 100k sessions; bench/RESULTS[-sqlite]-<N>.md for another --sessions (e.g. -10M);
--quick runs write bench/out/RESULTS-quick[-sqlite].md (not committed).

Peers (bench/peers/<name>.sh, run by run.sh with hallpass stopped) leave in the run's points/
directory <name>-c<C>.json (measure.py documents labelled workload=peer-<name>),
<name>-meta.tsv and, when not measured, <name>-note.txt; run.sh adds peer_<name>_note /
peers_note meta lines when a peer failed or was skipped. A run without any of these (an older
run) renders its peers as "not measured".
"""

import argparse
import glob
import json
import os
import sys

DEFAULT_SESSIONS = 100_000
MIB = 1024.0  # /proc reports kB (KiB)

DESC = {
    "a": "authenticate by session_token",
    "b": "authenticate by session_token + session_duration_minutes=60",
    "c": "authenticate by session_jwt",
    "d": "GET /v1/sessions/jwks/{project_id}",
    "d304": "JWKS with If-None-Match (304)",
    "e": "POST /v1/sessions (create)",
    "f": "GET /v1/sessions?user_id=",
    "g": "wrong caller secret, a new one per request (argon2id each; 401/429 by design)",
    "h": "authenticate by session_token, Zipf(1.1) popularity, bursts of 4 calls per session",
}
ORDER = ["a", "h", "b", "c", "d", "d304", "e", "f", "g"]

# Peers shown in every report (bench/peers/<name>.sh); a run may hold others too.
PEERS = {"glewlwyd": "Glewlwyd"}
PEER_PREFIX = "peer-"
# Peer meta keys shown, in this order, with their labels; the rest follow under their own names.
PEER_META = [
    ("version", "version"),
    ("database_detail", "database"),
    ("db_connections", "database connections"),
    ("db_connection_tls", "database connection TLS"),
    ("token_endpoint", "endpoint"),
    ("request", "what a request does"),
    ("signing", "signing"),
    ("key_bits", "signing key bits"),
    ("client_auth", "client authentication"),
    ("refresh_token_one_use", "refresh token one-use"),
    ("refresh_pool", "refresh tokens in the pool (wrk picks one at random per request)"),
    ("response_bytes", "response bytes"),
    ("access_token_lifetime_s", "access token lifetime, s"),
    ("ready_ms", "start to ready, ms"),
    ("idle_rss_kb", "idle RSS, kB"),
    ("after_load_rss_kb", "RSS after the load, kB"),
    ("idle_threads", "threads at idle"),
]
PEER_META_HIDDEN = {"database", "base_url", "refresh_pool_setup", "log_level"}
# openssl speed -multi 2: its sign/s is the rate of 2 cores.
OPENSSL_CORES = 2


# ------------------------------------------------------------------------------- helpers
def fnum(v, digits=0):
    if v is None:
        return "–"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def human_sessions(n):
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


OTHER_CPU_FLAG = 20.0  # % of one core used by processes outside the benchmark


def other_cpu(res):
    """Machine busy time not explained by the server, the load generator and Postgres:
    other processes (a concurrent build, tests) that disturbed the point."""
    parts = [res.get("server_cpu_pct") or 0, res.get("loadgen_cpu_pct") or 0,
             res.get("postgres_cpu_pct") or 0]
    if res.get("machine_busy_pct") is None:
        return None
    return max(0.0, round(res["machine_busy_pct"] - sum(parts), 1))


def point_summary(doc):
    """Flattens a measure.py document into one row."""
    r = doc.get("result", {}) or {}
    res = doc.get("resources", {}) or {}
    hwm = res.get("server_hwm_kb")
    if not res.get("server_hwm_reset") and res.get("server_rss_max_kb"):
        hwm = res.get("server_rss_max_kb")  # VmHWM could not be reset: use sampled peak
    row = {
        "workload": doc.get("workload"),
        "concurrency": doc.get("concurrency"),
        "tool": doc.get("tool"),
        "rate": doc.get("rate"),
        "rps": r.get("requests_per_sec", r.get("tps")),
        "requests": r.get("requests", r.get("transactions")),
        "p50_ms": r.get("p50_ms"),
        "p90_ms": r.get("p90_ms"),
        "p99_ms": r.get("p99_ms"),
        "p999_ms": r.get("p999_ms"),
        "max_ms": r.get("max_ms"),
        "latency_avg_ms": r.get("latency_avg_ms", r.get("mean_ms")),
        "non_2xx_3xx": r.get("non_2xx_3xx", r.get("failed")),
        "socket_errors": r.get("socket_errors"),
        "socket_errors_detail": r.get("socket_errors_detail"),
        "status_codes": r.get("status_codes"),
        "aborted_at_deadline": r.get("aborted_at_deadline"),
        "server_cpu_pct": res.get("server_cpu_pct"),
        "loadgen_cpu_pct": res.get("loadgen_cpu_pct"),
        "postgres_cpu_pct": res.get("postgres_cpu_pct"),
        "machine_busy_pct": res.get("machine_busy_pct"),
        "peak_rss_kb": hwm,
        "other_cpu_pct": other_cpu(res),
        "server_alive": res.get("server_alive"),
        "rc": doc.get("rc"),
    }
    if doc.get("result_error"):
        row["error"] = doc["result_error"]
    return row


def verifier_summary(doc):
    """A hallpass-verifier measurement (examples/bench.rs, measured by measure.py --kind json):
    the example's own JSON plus the resources of its run."""
    res = doc.get("resources", {}) or {}
    row = dict(doc.get("result") or {})
    row.update({
        "workload": doc.get("workload"),
        "transport_config": doc.get("transport", row.get("transport_config")),
        "tool": "verifier",
        "rc": doc.get("rc"),
        "wall_s": res.get("wall_s"),
        "bench_cpu_pct": res.get("loadgen_cpu_pct"),
        "server_cpu_pct": res.get("server_cpu_pct"),
        "postgres_cpu_pct": res.get("postgres_cpu_pct"),
        "machine_busy_pct": res.get("machine_busy_pct"),
        "other_cpu_pct": other_cpu(res),
    })
    if doc.get("result_error"):
        row["error"] = doc["result_error"]
    elif doc.get("rc"):
        row["error"] = f"exit status {doc.get('rc')}"
    return row


def verifier_key(row):
    """'revocation-auto', 'revocation-long-poll', 'verify-throughput'."""
    if row.get("workload") == "revocation":
        return f"revocation-{row.get('transport_config') or 'auto'}"
    return row.get("workload")


def verifier_line(v):
    err = f"  [{v['error'][:300]}]" if v.get("error") else ""
    if v.get("workload") == "revocation":
        return (
            f"  revocation ({v.get('transport', v.get('transport_config'))}): n {v.get('n', '–')}  "
            f"p50 {fnum(v.get('p50_ms'), 2)} ms  p90 {fnum(v.get('p90_ms'), 2)} ms  "
            f"p99 {fnum(v.get('p99_ms'), 2)} ms  max {fnum(v.get('max_ms'), 2)} ms  "
            f"misses {v.get('misses', '–')}  errors {v.get('errors', '–')}" + err
        )
    return (
        f"  verifier: {fnum(v.get('per_second_per_core'))} verifications/s/core "
        f"({fnum(v.get('verifications'))} in {fnum(v.get('seconds'), 1)} s, "
        f"{fnum(v.get('cpu_seconds'), 2)} s CPU)" + err
    )


def point_line(doc):
    if doc.get("tool") == "verifier":
        return verifier_line(verifier_summary(doc))
    p = point_summary(doc)
    name = p["workload"]
    if p["tool"] == "pgbench":
        return (
            f"  {name}: {fnum(p['rps'])} tps, latency avg {fnum(p['latency_avg_ms'], 3)} ms, "
            f"failed {p['non_2xx_3xx']}, postgres CPU {fnum(p['postgres_cpu_pct'])}%, "
            f"pgbench CPU {fnum(p['loadgen_cpu_pct'])}%"
            + (f"  [{p['error']}]" if p.get("error") else "")
        )
    label = f"{name} c={p['concurrency']}" + (f" @{p['rate']}/s" if p.get("rate") else "")
    rss = p["peak_rss_kb"]
    return (
        f"  {label:<14} {fnum(p['rps']):>8} req/s  p50 {fnum(p['p50_ms'], 2):>6} ms  "
        f"p99 {fnum(p['p99_ms'], 2):>7} ms  errors {p['non_2xx_3xx']}/{p['socket_errors']}  "
        f"CPU server {fnum(p['server_cpu_pct'])}% {p['tool']} {fnum(p['loadgen_cpu_pct'])}% "
        f"pg {fnum(p['postgres_cpu_pct'])}% other {fnum(p.get('other_cpu_pct'))}%  "
        f"peak RSS {fnum(rss / MIB if rss else None, 1)} MiB"
        + (f"  [{p['error']}]" if p.get("error") else "")
    )


def read_meta(path):
    meta = {}
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or "\t" not in line:
                continue
            k, v = line.split("\t", 1)
            meta[k] = v
    for k in list(meta):
        v = meta[k]
        try:
            meta[k] = int(v)
        except ValueError:
            try:
                if k.endswith("_per_s"):
                    meta[k] = float(v)
            except ValueError:
                pass
    return meta


def peer_name(workload):
    w = workload or ""
    return w[len(PEER_PREFIX):] if isinstance(w, str) and w.startswith(PEER_PREFIX) else None


def summarise_peers(run_dir, meta, peer_docs):
    """{name: {"points": [...], "meta": {...}, "note": str|None}} for every peer this run
    holds anything about (points, a meta file, a note file, a peer_<name>_note meta line)."""
    pdir = os.path.join(run_dir, "points")
    names = set(peer_docs)
    for path in glob.glob(os.path.join(pdir, "*-meta.tsv")) + glob.glob(os.path.join(pdir, "*-note.txt")):
        names.add(os.path.basename(path).rsplit("-", 1)[0])
    names.update(k[len("peer_"):-len("_note")] for k in meta
                 if k.startswith("peer_") and k.endswith("_note"))
    peers = {}
    for name in sorted(names):
        pmeta_path = os.path.join(pdir, f"{name}-meta.tsv")
        pmeta = read_meta(pmeta_path) if os.path.exists(pmeta_path) else {}
        note = None
        note_path = os.path.join(pdir, f"{name}-note.txt")
        if os.path.exists(note_path):
            with open(note_path, errors="replace") as f:
                note = f.read().strip().splitlines()[0:1]
            note = note[0].strip() if note else "(empty note file)"
        if meta.get(f"peer_{name}_note"):
            note = str(meta[f"peer_{name}_note"])  # run.sh's line (adds the exit status)
        pts = sorted(peer_docs.get(name, []), key=lambda p: p.get("concurrency") or 0)
        peers[name] = {"points": pts, "meta": pmeta, "note": note}
    return peers


def summarise_run(run_dir):
    meta = read_meta(os.path.join(run_dir, "meta.tsv"))
    points, fixed, refs, diags, verifier = [], None, {}, {}, {}
    peer_docs = {}
    for path in sorted(glob.glob(os.path.join(run_dir, "points", "*.json"))):
        if path.endswith(".diag.json"):
            with open(path) as f:
                try:
                    diags[os.path.basename(path)[: -len(".diag.json")]] = json.load(f)
                except ValueError:
                    pass
            continue
        with open(path) as f:
            doc = json.load(f)
        if doc.get("tool") == "verifier":
            row = verifier_summary(doc)
            verifier[verifier_key(row)] = row
            continue
        row = point_summary(doc)
        if peer_name(row["workload"]):
            peer_docs.setdefault(peer_name(row["workload"]), []).append(row)
        elif row["tool"] == "pgbench":
            refs[row["workload"]] = row
        elif row["tool"] == "oha":
            fixed = row
        else:
            points.append(row)
    points.sort(key=lambda p: (ORDER.index(p["workload"]) if p["workload"] in ORDER else 99,
                               p["concurrency"] or 0))
    log_tail = []
    log_path = os.path.join(run_dir, "server.log")
    if os.path.exists(log_path):
        with open(log_path, errors="replace") as f:
            lines = [l.rstrip("\n") for l in f if l.strip() and not l.startswith("=== serve")]
        log_tail = lines[-30:]
    return {
        "meta": meta,
        "points": points,
        "fixed_rate": fixed,
        "references": refs,
        "verifier": verifier,
        "diagnostics": diags,
        "server_log_tail": log_tail,
        "peers": summarise_peers(run_dir, meta, peer_docs),
    }


# ------------------------------------------------------------------------------- analysis
def best(run, workload):
    vals = [p for p in run["points"] if p["workload"] == workload and p["rps"] is not None]
    return max(vals, key=lambda p: p["rps"]) if vals else None


def at(run, workload, conc):
    for p in run["points"]:
        if p["workload"] == workload and p["concurrency"] == conc:
            return p
    return None


def sign_rate(meta):
    """openssl's 2-core RSA-2048 sign/s of this run, or None."""
    v = meta.get("openssl_sign_per_s")
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if v > 0 else None


def signature_us(meta):
    """CPU time of one RSA-2048 signature in this run, µs: 2 cores × 1e6 / (2-core sign/s)."""
    sign = sign_rate(meta)
    return OPENSSL_CORES * 1e6 / sign if sign else None


def cpu_us_per_request(p, key):
    """CPU µs per request of one point: cpu % / 100 × 1e6 / req/s."""
    pct, rps = p.get(key), p.get("rps")
    if pct is None or not rps:
        return None
    return pct / 100.0 * 1e6 / rps


def peer_best(peer):
    vals = [p for p in (peer or {}).get("points", []) if p.get("rps")]
    return max(vals, key=lambda p: p["rps"]) if vals else None


def peer_not_measured(run, name):
    """Why a peer has no points in this run (None when it has some)."""
    peer = (run.get("peers") or {}).get(name)
    if peer and peer.get("points"):
        return None
    m = run["meta"]
    if peer and peer.get("note"):
        return peer["note"]
    if m.get("peers_note"):
        return str(m["peers_note"])
    if "peers" not in m:
        return "no peer step in this run (it predates bench/run.sh's peers, or they were run apart)"
    return "no data for this peer in the run"


def run_kind(meta):
    return (meta.get("backend"), int(meta.get("sessions", 0)), int(meta.get("quick", 0)))


def results_path(bench, meta):
    backend, sessions, quick = run_kind(meta)
    suffix = "-sqlite" if backend == "sqlite" else ""
    if quick:
        extra = "" if sessions == 10_000 else f"-{human_sessions(sessions)}"
        return os.path.join(bench, "out", f"RESULTS-quick{suffix}{extra}.md")
    if sessions == DEFAULT_SESSIONS:
        return os.path.join(bench, f"RESULTS{suffix}.md")
    return os.path.join(bench, f"RESULTS{suffix}-{human_sessions(sessions)}.md")


def load_runs(bench):
    runs = []
    for path in glob.glob(os.path.join(bench, "out", "*.json")):
        try:
            with open(path) as f:
                doc = json.load(f)
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and "meta" in doc and "points" in doc:
            for p in doc["points"] + ([doc["fixed_rate"]] if doc.get("fixed_rate") else []):
                if p.get("other_cpu_pct") is None:
                    p["other_cpu_pct"] = other_cpu(p)
            runs.append(doc)
    runs.sort(key=lambda r: r["meta"].get("run_id", ""))
    return runs


def latest(runs, backend, sessions, quick):
    found = [r for r in runs if run_kind(r["meta"]) == (backend, sessions, quick)]
    return found[-1] if found else None


def verdict(value, target, higher_is_better, unit=""):
    """('pass'|'miss'|'n/a', text)"""
    if value is None or target is None:
        return "n/a", "not measured"
    if higher_is_better:
        ok = value >= target
        margin = (value / target - 1.0) * 100 if target else 0
        how = f"{margin:+.0f}% vs target" if ok else f"short by {abs(margin):.0f}%"
    else:
        ok = value <= target
        if ok:
            how = f"{(1 - value / target) * 100:.0f}% under the limit"
        else:
            how = f"over by {(value / target - 1) * 100:.0f}%"
    return ("pass" if ok else "miss"), how


def dist(*points):
    bad = [p for p in points if p and (p.get("other_cpu_pct") or 0) > OTHER_CPU_FLAG]
    return "⚠ disturbed point(s): other processes used CPU" if bad else ""


def revs(r1, r2):
    a, b = r1["meta"].get("hallpass_rev"), r2["meta"].get("hallpass_rev")
    return "" if a == b else f"⚠ different hallpass revisions ({a} vs {b})"


def targets(run, runs):
    m = run["meta"]
    backend, sessions, quick = run_kind(m)
    out = []
    sign = m.get("openssl_sign_per_s")
    sign = float(sign) if sign not in (None, "") else None
    a = best(run, "a")

    def add(name, value, target, higher, shown, note=""):
        v, how = verdict(value, target, higher)
        out.append({"target": name, "value": shown, "result": v, "margin": how, "note": note})

    add("(a) ≥ 0.75 × openssl 2-core RSA-2048 sign/s",
        (a["rps"] / sign) if a and sign else None, 0.75, True,
        f"{fnum(a['rps'] if a else None)} req/s = {a['rps'] / sign:.2f} × {fnum(sign)} sign/s"
        if a and sign else "–", dist(a))
    sig_us = signature_us(m)
    for key, what, limit in (("server_cpu_pct", "hallpass", 1.10), ("postgres_cpu_pct", "Postgres", 0.15)):
        us = cpu_us_per_request(a, key) if a else None
        n = us / sig_us if us is not None and sig_us else None
        add(f"(a) {what} CPU ≤ {limit:.2f} signature{'s' if limit > 1 else ''} per request "
            "(best-throughput (a) point)", n, limit, False,
            f"{n:.2f} signatures = {fnum(us)} µs per request at {fnum(a['rps'])} req/s "
            f"(c={a['concurrency']}, {fnum(a.get(key))} % CPU); 1 signature = {fnum(sig_us, 1)} µs"
            if n is not None else "–", dist(a) if n is not None else "")
    h = best(run, "h")
    add("(h) Zipf + bursts ≥ 1.5 × openssl 2-core RSA-2048 sign/s (identical JWTs signed once)",
        (h["rps"] / sign) if h and sign else None, 1.5, True,
        f"{fnum(h['rps'] if h else None)} req/s = {h['rps'] / sign:.2f} × {fnum(sign)} sign/s"
        if h and sign else "–", dist(h))
    fr = run.get("fixed_rate")
    if fr and fr.get("p50_ms") is not None:
        shown_rate = f"at {fnum(fr.get('rate'))} req/s (achieved {fnum(fr.get('rps'))})"
        add("(a) p50 ≤ 1 ms at half of max throughput (fixed rate)", fr["p50_ms"], 1.0, False,
            f"{fr['p50_ms']:.2f} ms {shown_rate}", dist(fr))
        add("(a) p99 ≤ 3 ms at half of max throughput (fixed rate)", fr["p99_ms"], 3.0, False,
            f"{fr['p99_ms']:.2f} ms {shown_rate}", dist(fr))
    else:
        note = m.get("fixed_rate_note", "not measured")
        out.append({"target": "(a) p50 ≤ 1.5 ms / p99 ≤ 5 ms at half of max throughput",
                    "value": "not measured", "result": "n/a", "margin": note, "note": ""})
    ver = run.get("verifier") or {}
    for key, label in (("revocation-auto", "stream (default transport)"),
                       ("revocation-long-poll", "long-poll fallback")):
        v = ver.get(key)
        if key == "revocation-long-poll" and not v:
            continue  # the stream line below says why nothing was measured
        p99 = v.get("p99_ms") if v else None
        if v and p99 is not None:
            shown = (f"{p99:,.1f} ms over {fnum(v.get('n'))} revocations "
                     f"({v.get('transport', '?')}), {v.get('misses', 0)} misses")
            note = "; ".join(x for x in (
                f"{v['errors']} other refusals" if v.get("errors") else "",
                "stopped early" if v.get("stopped_early") else "",
                dist(v)) if x)
            add(f"revocation p99 ≤ 1 s, {label}", p99, 1000, False, shown, note)
        else:
            why = (v or {}).get("error") or m.get("verifier_note") or "not measured"
            out.append({"target": f"revocation p99 ≤ 1 s, {label}", "value": "not measured",
                        "result": "n/a", "margin": why[:200], "note": ""})
    d = best(run, "d")
    add("(d) JWKS ≥ 30,000 req/s", d["rps"] if d else None, 30000, True,
        f"{fnum(d['rps'])} req/s (c={d['concurrency']})" if d else "–")
    peaks = [p["peak_rss_kb"] for p in run["points"] if p.get("peak_rss_kb")]
    if run.get("fixed_rate") and run["fixed_rate"].get("peak_rss_kb"):
        peaks.append(run["fixed_rate"]["peak_rss_kb"])
    peak = max(peaks) / MIB if peaks else None
    add("peak RSS under load ≤ 60 MiB (VmHWM)", peak, 60, False,
        f"{peak:.1f} MiB" if peak else "–")
    idle = m.get("idle_rss_kb")
    idle = int(idle) / MIB if idle not in (None, "") else None
    add("idle RSS ≤ 25 MiB (VmRSS after start)", idle, 25, False,
        f"{idle:.1f} MiB" if idle else "–")
    if backend == "sqlite":
        add("start to ready ≤ 1 s on SQLite (restart, existing database)",
            m.get("ready_ms"), 1000, False, f"{m.get('ready_ms')} ms")
        add("start to ready ≤ 1 s on SQLite (first start: migrate + bootstrap + keys)",
            m.get("ready_first_ms"), 1000, False, f"{m.get('ready_first_ms')} ms")
    else:
        out.append({"target": "start to ready ≤ 1 s (the target is for SQLite)",
                    "value": f"{m.get('ready_ms')} ms restart, {m.get('ready_first_ms')} ms first start",
                    "result": "info", "margin": "Postgres run; see RESULTS-sqlite.md", "note": ""})
    # SQLite vs Postgres, same sessions and quickness.
    sq = run if backend == "sqlite" else latest(runs, "sqlite", sessions, quick)
    pg = run if backend == "postgres" else latest(runs, "postgres", sessions, quick)
    sa, pa = (best(sq, "a") if sq else None), (best(pg, "a") if pg else None)
    if sa and pa:
        add("SQLite (a) ≥ 0.5 × Postgres (a)", sa["rps"] / pa["rps"], 0.5, True,
            f"{fnum(sa['rps'])} / {fnum(pa['rps'])} = {sa['rps'] / pa['rps']:.2f}",
            f"runs {sq['meta']['run_id']} and {pg['meta']['run_id']} {dist(sa, pa)} {revs(sq, pg)}")
    else:
        out.append({"target": "SQLite (a) ≥ 0.5 × Postgres (a)", "value": "–", "result": "n/a",
                    "margin": "needs a " + ("Postgres" if backend == "sqlite" else "--sqlite")
                    + f" run with {human_sessions(sessions)} sessions" + (" (--quick)" if quick else ""),
                    "note": ""})
    # 10M vs 100k (non-quick runs of the same backend).
    big = run if sessions >= 10_000_000 and not quick else latest(runs, backend, 10_000_000, 0)
    small = run if sessions == DEFAULT_SESSIONS and not quick else latest(runs, backend, DEFAULT_SESSIONS, 0)
    if big and small:
        for conc in (16, 64):
            pb, ps = at(big, "a", conc), at(small, "a", conc)
            if pb and ps and ps["p50_ms"]:
                add(f"(a) p50 with 10M sessions ≤ 1.2 × p50 with 100k (c={conc})",
                    pb["p50_ms"] / ps["p50_ms"], 1.2, False,
                    f"{pb['p50_ms']:.2f} ms / {ps['p50_ms']:.2f} ms = {pb['p50_ms'] / ps['p50_ms']:.2f}",
                    f"runs {big['meta']['run_id']} and {small['meta']['run_id']} {dist(pb, ps)} {revs(big, small)}")
        fb, fs = big.get("fixed_rate"), small.get("fixed_rate")
        if fb and fs and fb.get("p50_ms") and fs.get("p50_ms"):
            out.append({
                "target": "(info) fixed-rate (a) p50, 10M vs 100k",
                "value": f"{fb['p50_ms']:.2f} ms at {fnum(fb.get('rate'))}/s vs "
                         f"{fs['p50_ms']:.2f} ms at {fnum(fs.get('rate'))}/s = {fb['p50_ms'] / fs['p50_ms']:.2f}",
                "result": "info", "margin": "rates differ (each is half that run's maximum)",
                "note": ""})
    else:
        out.append({"target": "(a) p50 with 10M sessions ≤ 1.2 × p50 with 100k", "value": "–",
                    "result": "n/a",
                    "margin": "needs full runs with 100k and with --sessions 10000000 on " + backend,
                    "note": ""})
    return out


# ------------------------------------------------------------------------------- rendering
def table(run):
    head = ("| workload | conc | req/s | p50 ms | p99 ms | non-2xx/3xx | socket errors "
            "| server CPU % | load gen CPU % | Postgres CPU % | other CPU % | peak RSS MiB |")
    lines = [head, "|" + "---|" * 12]
    rows = list(run["points"])
    if run.get("fixed_rate"):
        rows.insert(sum(1 for p in rows if p["workload"] == "a"), run["fixed_rate"])
    for p in rows:
        w = p["workload"]
        name = f"({w}) {DESC.get(w, w)}" if w != "d304" else f"(d) {DESC[w]}"
        conc = str(p["concurrency"])
        if p["tool"] == "oha":
            name = f"(a) fixed rate {fnum(p.get('rate'))} req/s, oha, latency-corrected"
        lines.append(
            f"| {name} | {conc} | {fnum(p['rps'])} | {fnum(p['p50_ms'], 2)} | {fnum(p['p99_ms'], 2)} "
            f"| {fnum(p['non_2xx_3xx'])} | {fnum(p['socket_errors'])} | {fnum(p['server_cpu_pct'])} "
            f"| {fnum(p['loadgen_cpu_pct'])} | {fnum(p['postgres_cpu_pct'])} "
            f"| {fnum(p.get('other_cpu_pct'))}{' ⚠' if (p.get('other_cpu_pct') or 0) > OTHER_CPU_FLAG else ''} "
            f"| {fnum(p['peak_rss_kb'] / MIB if p.get('peak_rss_kb') else None, 1)} |"
        )
    return "\n".join(lines)


def verifier_section(run):
    m = run["meta"]
    ver = run.get("verifier") or {}
    L = ["## hallpass-verifier (in-process, against this server)", ""]
    if not ver:
        L.append(f"Not measured ({m.get('verifier_note', 'no verifier data in this run')}).")
        L.append("")
        return L
    L.append(f"`verifier/examples/bench.rs`. Revocation latency: {fnum(m.get('revocations'))} "
             "sessions (`POST /v1/sessions`), a verifier with the feed on and `ready()`, then "
             "each session in turn: `POST /v1/sessions/revoke`, the clock starts when its 200 "
             "arrives, and `verify(jwt)` is called at once and every 1 ms until it answers "
             "`Revoked`; a session still accepted after 5 s is a miss and counts as 5 s. "
             "The verifier shares the machine with the server and Postgres.")
    L.append("")
    L.append("| measurement | transport | n | p50 ms | p90 ms | p99 ms | max ms | misses "
             "| server CPU % | other CPU % |")
    L.append("|" + "---|" * 10)
    for key, label in (("revocation-auto", "revocation latency, default transport"),
                       ("revocation-long-poll", "revocation latency, long-poll only")):
        v = ver.get(key)
        if not v:
            continue
        if v.get("error") and v.get("p50_ms") is None:
            L.append(f"| {label} | {v.get('transport_config')} | not measured: "
                     f"{v['error'][:200].replace('|', '/')} | | | | | | | |")
            continue
        other = v.get("other_cpu_pct")
        L.append(
            f"| {label} | {v.get('transport', '–')} | {fnum(v.get('n'))} "
            f"| {fnum(v.get('p50_ms'), 2)} | {fnum(v.get('p90_ms'), 2)} | {fnum(v.get('p99_ms'), 2)} "
            f"| {fnum(v.get('max_ms'), 2)} | {v.get('misses', '–')}"
            + (f" (+{v['errors']} other refusals)" if v.get("errors") else "")
            + (" (stopped early)" if v.get("stopped_early") else "")
            + f" | {fnum(v.get('server_cpu_pct'))} "
            f"| {fnum(other)}{' ⚠' if (other or 0) > OTHER_CPU_FLAG else ''} |")
    L.append("")
    t = ver.get("verify-throughput")
    if t:
        L.append("| measurement | value |\n|---|---|")
        if t.get("per_second_per_core") is None:
            L.append(f"| verifier verifications/s/core | not measured: "
                     f"{(t.get('error') or '?')[:200].replace('|', '/')} |")
        else:
            L.append(f"| verifier verifications/s/core (one JWT, feed off, keys loaded, one thread; "
                     f"per second of that thread's CPU time) | **{fnum(t.get('per_second_per_core'))}** |")
            L.append(f"| same, per wall-clock second | {fnum(t.get('per_second_wall'))} |")
            L.append(f"| verifications, seconds, CPU seconds | {fnum(t.get('verifications'))}, "
                     f"{fnum(t.get('seconds'), 2)}, {fnum(t.get('cpu_seconds'), 2)} |")
            verify = m.get("openssl_verify_per_s")
            if verify not in (None, ""):
                L.append(f"| openssl RSA-2048 verify/s on one core (the 2-core figure below / 2) "
                         f"| {fnum(float(verify) / 2)} |")
        L.append("")
    return L


def cell(v):
    return str(v).replace("|", "/").replace("\n", " ")


def peers_section(run):
    m = run["meta"]
    peers = run.get("peers") or {}
    sign = sign_rate(m)
    a = best(run, "a")
    L = ["## Peers (same machine, same run)", ""]
    L.append("Other software doing the job of (a) — look up a stored credential, mint an RS256 "
             "JWT signed with an RSA-2048 key, answer — measured by `bench/peers/<name>.sh` in "
             f"this run, on the same machine (CPU: {m.get('cpu_model', '–')}), after hallpass "
             "was stopped, with the same wrk -t2, duration, warm-up and concurrency, each against "
             "its own throw-away database. Server CPU is the peer's process; Postgres CPU counts "
             "the peer database's backends and Postgres's auxiliary processes; skip with "
             "`BENCH_PEERS=none`.")
    L.append("")
    for name in list(PEERS) + sorted(n for n in peers if n not in PEERS):
        title = PEERS.get(name, name)
        peer = peers.get(name) or {}
        pm = peer.get("meta") or {}
        L.append(f"### {title}")
        L.append("")
        why = peer_not_measured(run, name)
        if why is not None:
            L.append(f"not measured: {why}")
            L.append("")
            continue
        L.append("| | |\n|---|---|")
        shown = set()
        for k, label in PEER_META:
            if k == "database_detail" and k not in pm and "database" in pm:
                k = "database"
            if pm.get(k) not in (None, ""):
                v = pm[k]
                if k.endswith("_rss_kb"):
                    v = f"{fnum(int(v) / MIB, 1)} MiB"
                    label = label.replace(", kB", "")
                L.append(f"| {label} | {cell(v)} |")
                shown.add(k)
        for k, v in pm.items():
            if k not in shown and k not in PEER_META_HIDDEN:
                L.append(f"| {k} | {cell(v)} |")
        L.append("")
        L.append("| conc | req/s | p50 ms | p99 ms | non-2xx/3xx | server CPU % | Postgres CPU % "
                 "| load gen CPU % | other CPU % | peak RSS MiB |")
        L.append("|" + "---|" * 10)
        for p in peer["points"]:
            other = p.get("other_cpu_pct")
            L.append(
                f"| {p['concurrency']} | {fnum(p['rps'])} | {fnum(p['p50_ms'], 2)} | {fnum(p['p99_ms'], 2)} "
                f"| {fnum(p['non_2xx_3xx'])}"
                + (f" (+{fnum(p['socket_errors'])} socket errors)" if p.get("socket_errors") else "")
                + f" | {fnum(p['server_cpu_pct'])} | {fnum(p['postgres_cpu_pct'])} "
                f"| {fnum(p['loadgen_cpu_pct'])} | {fnum(other)}{' ⚠' if (other or 0) > OTHER_CPU_FLAG else ''} "
                f"| {fnum(p['peak_rss_kb'] / MIB if p.get('peak_rss_kb') else None, 1)} |")
        L.append("")
        for p in peer["points"]:
            if p.get("error"):
                L.append(f"- c={p['concurrency']}: {cell(p['error'][:300])}")
            d = (run.get("diagnostics") or {}).get(f"{name}-c{p['concurrency']}")
            if d:
                L.append(f"- c={p['concurrency']}: diagnostic 2 s rerun: status codes {d.get('statuses')}")
        if peer.get("note"):
            L.append(f"not measured (part of this peer's run): {peer['note']}")
            L.append("")
        pb = peer_best(peer)
        L.append("| ratio | value |\n|---|---|")
        L.append(f"| {title} best req/s / openssl 2-core sign/s | "
                 + (f"{fnum(pb['rps'])} / {fnum(sign)} = **{pb['rps'] / sign:.2f}** |" if pb and sign
                    else "– |"))
        L.append(f"| hallpass (a) best req/s / {title} best req/s | "
                 + (f"{fnum(a['rps'])} / {fnum(pb['rps'])} = **{a['rps'] / pb['rps']:.2f}** |"
                    if pb and a else "– |"))
        L.append("")
    return L


def cpu_rows(run):
    """(label, point) for the CPU-per-request table: (a) and (h) at each concurrency, the
    fixed-rate point, then each peer's points."""
    rows = [(f"({p['workload']}) c={p['concurrency']}", p)
            for w in ("a", "h") for p in run["points"] if p["workload"] == w]
    fr = run.get("fixed_rate")
    if fr:
        rows.insert(sum(1 for p in run["points"] if p["workload"] == "a"),
                    (f"(a) fixed rate {fnum(fr.get('rate'))} req/s (oha)", fr))
    for name, peer in sorted((run.get("peers") or {}).items()):
        for p in peer.get("points", []):
            rows.append((f"peer {PEERS.get(name, name)} c={p['concurrency']}", p))
    return rows


def cpu_section(run):
    m = run["meta"]
    sig_us = signature_us(m)
    sign = sign_rate(m)
    L = ["## CPU per request, in signatures", ""]
    L.append("CPU µs per request = CPU % / 100 × 1e6 / req/s, for the server process (hallpass, "
             "or the peer), for Postgres (the backends of that server's database and Postgres's "
             "auxiliary processes) and for the load generator (wrk, oha). Each is also given in RSA-2048 signatures of this run: one "
             "signature's CPU = 2 cores × 1e6 / openssl 2-core sign/s µs"
             + (f" = 2 × 1e6 / {fnum(sign)} = **{fnum(sig_us, 1)} µs**" if sig_us else
                " (not measured in this run: no openssl sign rate)")
             + f" (`openssl speed -seconds 5 -multi 2 rsa2048`, CPU: {m.get('cpu_model', '–')}). "
             "Every (a) response carries a freshly signed JWT, so 1 signature per request is the "
             "floor of (a)'s server CPU unless JWTs are reused; (h) repeats sessions in bursts, "
             "whose identical JWTs are signed once.")
    L.append("")
    L.append("| point | req/s | server µs/req | server signatures | Postgres µs/req "
             "| Postgres signatures | load gen µs/req | load gen signatures "
             "| server + Postgres signatures |")
    L.append("|" + "---|" * 9)
    rows = cpu_rows(run)
    if not rows:
        L.append("| (no (a)/(h) points in this run) | | | | | | | | |")
    for label, p in rows:
        us = {k: cpu_us_per_request(p, k) for k in ("server_cpu_pct", "postgres_cpu_pct", "loadgen_cpu_pct")}
        sig = {k: (v / sig_us if v is not None and sig_us else None) for k, v in us.items()}
        both = (sig["server_cpu_pct"] + sig["postgres_cpu_pct"]
                if sig["server_cpu_pct"] is not None and sig["postgres_cpu_pct"] is not None else None)
        L.append(f"| {label} | {fnum(p.get('rps'))} "
                 + "".join(f"| {fnum(us[k])} | {fnum(sig[k], 2)} "
                           for k in ("server_cpu_pct", "postgres_cpu_pct", "loadgen_cpu_pct"))
                 + f"| {fnum(both, 2)} |")
    L.append("")
    return L


def render(run, runs):
    m = run["meta"]
    backend, sessions, quick = run_kind(m)
    refs = run["references"]
    sign = m.get("openssl_sign_per_s")
    sign = float(sign) if sign not in (None, "") else None
    verify = m.get("openssl_verify_per_s")
    title = "SQLite" if backend == "sqlite" else "Postgres"
    L = []
    L.append(f"# hallpass benchmark — {title}, {human_sessions(sessions)} sessions"
             + (" (--quick smoke run)" if quick else ""))
    L.append("")
    L.append(f"Generated by `bench/run.sh` (run `{m.get('run_id')}`, {m.get('date_utc')}). "
             "Numbers from one machine, one run; the load generator shares the machine's two "
             "cores with the server (and with Postgres), so read CPU columns together.")
    L.append("")
    L.append("## Machine and versions")
    L.append("")
    L.append("| | |\n|---|---|")
    for k, label in [("nproc", "cores (nproc)"), ("cpu_model", "CPU"), ("ram", "RAM"),
                     ("kernel", "kernel"), ("hallpass_rev", "hallpass git rev"),
                     ("rustc", "rustc"), ("wrk", "wrk"), ("oha", "oha"), ("openssl", "openssl"),
                     ("postgres", "Postgres server"), ("loadavg_start", "load average at start"),
                     ("loadavg_end", "load average at end")]:
        L.append(f"| {label} | {m.get(k, '–')} |")
        if k == "cpu_model" and m.get("cpu_detail"):
            L.append(f"| CPU details | {m['cpu_detail']} |")
    L.append("")
    L.append("## Command and setup")
    L.append("")
    L.append(f"    {m.get('command')}")
    L.append("")
    L.append(
        f"- backend **{backend}**; {fnum(m.get('sessions'))} sessions for {fnum(m.get('users'))} users "
        f"(10 per user), seeded in {fnum(int(m.get('seed_ms', 0)) / 1000, 1)} s; database size "
        f"{m.get('db_size', '–')}; sessions after the run: {fnum(m.get('sessions_after'))}")
    L.append(f"- wrk -t2 over loopback at concurrency {m.get('concurrency')}; each point "
             f"{m.get('duration_s')} s after a {m.get('warmup_s')} s warm-up; every request picks a "
             f"random seeded session/user (bench/wrk.lua); JWT pool {m.get('jwt_pool')}")
    L.append("- server CPU = utime+stime delta of the server process / wall time (100 % = one "
             "core; the machine has 200 %); peak RSS = VmHWM, reset before each point; other "
             "CPU = the machine's busy time not used by the server, the load generator or "
             f"Postgres (⚠ above {OTHER_CPU_FLAG:.0f} %: something else ran on the machine and "
             "disturbed the point)")
    L.append("")
    L.append("## Start and footprint")
    L.append("")
    idle = m.get("idle_rss_kb")
    L.append("| | |\n|---|---|")
    L.append(f"| start to ready, first start (migrate, bootstrap, key generation) | {m.get('ready_first_ms')} ms |")
    L.append(f"| start to ready, restart on the seeded database | {m.get('ready_ms')} ms |")
    L.append(f"| idle RSS (VmRSS 2 s after ready) | {fnum(int(idle) / MIB, 1) if idle else '–'} MiB |")
    L.append(f"| idle VmHWM | {fnum(int(m['idle_hwm_kb']) / MIB, 1) if m.get('idle_hwm_kb') else '–'} MiB |")
    L.append(f"| RSS after the load (2 s later) | {fnum(int(m['after_load_rss_kb']) / MIB, 1) if m.get('after_load_rss_kb') else '–'} MiB |")
    L.append(f"| threads at idle | {m.get('idle_threads', '–')} |")
    L.append(f"| graceful shutdown (SIGTERM to exit) | {m.get('shutdown_ms', '–')} ms |")
    L.append("")
    L.append("## Results")
    L.append("")
    L.append(table(run))
    L.append("")
    fr = run.get("fixed_rate")
    disturbed = [p for p in run["points"] + ([fr] if fr else [])
                 if (p.get("other_cpu_pct") or 0) > OTHER_CPU_FLAG]
    if disturbed:
        L.append("**Disturbed points** (other processes used CPU during them; their numbers "
                 "understate the server): "
                 + ", ".join(f"({p['workload']}) c={p['concurrency']}"
                             + (" fixed rate" if p["tool"] == "oha" else "")
                             + f" {fnum(p['other_cpu_pct'])} %" for p in disturbed) + ".")
        L.append("")
    if fr:
        L.append(f"Fixed-rate point: oha `-q {fr.get('rate')} --latency-correction -c 64`, "
                 f"bodies: {m.get('fixed_rate_bodies', '–')}; status codes {fr.get('status_codes')}; "
                 f"{fr.get('aborted_at_deadline') or 0} requests in flight when the duration ended "
                 "(oha aborts them; not counted as errors).")
    else:
        L.append(f"Fixed-rate point: not measured ({m.get('fixed_rate_note', 'oha missing')}).")
    L.append("")
    L.extend(verifier_section(run))
    L.append("## References")
    L.append("")
    L.append("| reference | value |\n|---|---|")
    L.append(f"| `openssl speed -seconds 5 -multi 2 rsa2048` sign/s (2 cores) | {fnum(sign)} |")
    L.append(f"| same, verify/s | {fnum(float(verify)) if verify not in (None, '') else '–'} |")
    pu, ps = refs.get("pgbench-update"), refs.get("pgbench-select")
    if pu or ps:
        for name, r, what in [
            ("pgbench-update", pu, "`UPDATE sessions SET last_accessed_at … WHERE token_hash = sha256(…) RETURNING …`"),
            ("pgbench-select", ps, "`SELECT sessions ⋈ users WHERE token_hash = sha256(…)` (the lookup (a) makes)"),
        ]:
            if r:
                L.append(f"| pgbench -n -M prepared -c 16 -j 2: {what} | {fnum(r['rps'])} tps, "
                         f"avg {fnum(r['latency_avg_ms'], 3)} ms, Postgres CPU {fnum(r['postgres_cpu_pct'])} %, "
                         f"pgbench CPU {fnum(r['loadgen_cpu_pct'])} % |")
        if backend == "sqlite":
            L.append("| (pgbench ran on a temporary Postgres database seeded with the same rows) | |")
    else:
        L.append(f"| pgbench | {m.get('pgbench_note', 'n/a')} |")
    L.append("")
    L.extend(peers_section(run))
    L.extend(cpu_section(run))
    L.append("## Ratios")
    L.append("")
    L.append("Every (a), (b), (c), (e) response carries a freshly minted RS256 JWT, i.e. one "
             "RSA-2048 signature, so openssl's 2-core sign rate is their ceiling.")
    L.append("")
    L.append("| ratio | value |\n|---|---|")
    for w in ("a", "h", "b", "c", "e"):
        b = best(run, w)
        if b and sign:
            L.append(f"| ({w}) best req/s / openssl sign/s | {fnum(b['rps'])} / {fnum(sign)} = "
                     f"**{b['rps'] / sign:.2f}** |")
    a = best(run, "a")
    if a and pu:
        L.append(f"| (a) best req/s / pgbench-update tps | {fnum(a['rps'])} / {fnum(pu['rps'])} = "
                 f"**{a['rps'] / pu['rps']:.2f}** |")
    if a and ps:
        L.append(f"| (a) best req/s / pgbench-select tps | {fnum(a['rps'])} / {fnum(ps['rps'])} = "
                 f"**{a['rps'] / ps['rps']:.2f}** |")
    other = latest(runs, "postgres" if backend == "sqlite" else "sqlite", sessions, quick)
    if other and a and best(other, "a"):
        oa = best(other, "a")
        if backend == "sqlite":
            L.append(f"| SQLite (a) / Postgres (a) | {fnum(a['rps'])} / {fnum(oa['rps'])} = **{a['rps'] / oa['rps']:.2f}** |")
        else:
            L.append(f"| SQLite (a) / Postgres (a) | {fnum(oa['rps'])} / {fnum(a['rps'])} = **{oa['rps'] / a['rps']:.2f}** |")
    L.append("")
    L.append("## Targets (reported, never asserted)")
    L.append("")
    L.append("| target | measured | result | margin | runs |\n|---|---|---|---|---|")
    for t in targets(run, runs):
        L.append(f"| {t['target']} | {t['value']} | **{t['result']}** | {t['margin']} | {t['note']} |")
    L.append("")
    L.append("## Errors and server log")
    L.append("")
    bad = [p for p in run["points"] + ([fr] if fr else [])
           if p["workload"] != "g"
           and ((p.get("non_2xx_3xx") or 0) + (p.get("socket_errors") or 0) > 0 or p.get("error"))]
    if not bad:
        L.append("No non-2xx/3xx responses and no socket errors at any point (beside (g), refused by design).")
    for p in bad:
        L.append(f"- ({p['workload']}) c={p['concurrency']} {p['tool']}: "
                 f"{p.get('non_2xx_3xx')} non-2xx/3xx, {p.get('socket_errors')} socket errors "
                 f"{p.get('socket_errors_detail') or ''} {p.get('error', '')}")
        d = run["diagnostics"].get(f"{p['workload']}-c{p['concurrency']}")
        if d:
            L.append(f"  - diagnostic 2 s rerun: status codes {d.get('statuses')}")
            for s in d.get("samples", []):
                L.append(f"    - `{s[:400]}`")
    L.append("")
    L.append(f"Server log lines mentioning error/panic (HALLPASS_LOG=warn): "
             f"{m.get('server_log_error_lines', 0)}.")
    if run.get("server_log_tail"):
        L.append("")
        L.append("Last server log lines:")
        L.append("")
        L.append("```")
        L.extend(l[:300] for l in run["server_log_tail"][-15:])
        L.append("```")
    L.append("")
    return "\n".join(L)


def write_all(bench, quiet=False):
    runs = load_runs(bench)
    kinds = {}
    for r in runs:
        kinds[run_kind(r["meta"])] = r  # runs are sorted: the newest wins
    written = []
    for r in kinds.values():
        path = results_path(bench, r["meta"])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(render(r, runs))
        written.append(path)
    if not quiet:
        for p in sorted(written):
            print(f"wrote {os.path.relpath(p)}", file=sys.stderr)
    return written


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--point")
    ap.add_argument("--run")
    ap.add_argument("--bench", default=os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--write-all", action="store_true")
    args = ap.parse_args()
    if args.point:
        with open(args.point) as f:
            print(point_line(json.load(f)))
        return
    if args.run:
        run = summarise_run(args.run)
        path = os.path.join(args.bench, "out", run["meta"]["run_id"] + ".json")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump(run, f, indent=1)
        runs = load_runs(args.bench)
        print()
        print(table(run))
        print()
        for v in (run.get("verifier") or {}).values():
            print(verifier_line(v))
        print()
        for name in list(PEERS) + sorted(n for n in run["peers"] if n not in PEERS):
            why = peer_not_measured(run, name)
            if why is not None:
                print(f"  peer {name}: not measured: {why}")
            for p in run["peers"].get(name, {}).get("points", []):
                print(f"  peer {name} c={p['concurrency']}: {fnum(p['rps'])} req/s  "
                      f"p50 {fnum(p['p50_ms'], 2)} ms  p99 {fnum(p['p99_ms'], 2)} ms  "
                      f"CPU server {fnum(p['server_cpu_pct'])}% pg {fnum(p['postgres_cpu_pct'])}%")
        print()
        for t in targets(run, runs):
            print(f"  [{t['result']:>4}] {t['target']}: {t['value']} ({t['margin']})")
        print()
        write_all(args.bench)
        print(f"run data: {os.path.relpath(path)}; raw: {os.path.relpath(args.run)}/", file=sys.stderr)
        print(f"report:   {os.path.relpath(results_path(args.bench, run['meta']))}", file=sys.stderr)
        return
    if args.write_all:
        write_all(args.bench)
        return
    ap.error("one of --point, --run, --write-all")


if __name__ == "__main__":
    main()
