#!/usr/bin/env python3
"""Runs one load-generator command and measures, over exactly its run:

- the server's CPU (utime+stime delta from /proc/PID/stat, as % of one core),
- the server's peak RSS (VmHWM, reset through /proc/PID/clear_refs before the run, plus
  VmRSS sampled every 100 ms as a cross-check),
- the load generator's own CPU (getrusage of children),
- Postgres's CPU (every process whose comm is "postgres"),
- the whole machine's busy time (/proc/stat), as % of one core.

Then it parses the tool's result (wrk via the JSON written by bench/wrk.lua's done(), oha's
--output-format json / -j, pgbench's text, or the last JSON line a tool prints: --kind json,
as hallpass-verifier's examples/bench.rs does) and writes one JSON document.

Usage: measure.py --kind wrk|oha|pgbench|json|none --out FILE [--server-pid PID]
                  [--wrk-json FILE] [--label k=v ...] -- COMMAND ...
Standard library only.
"""

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import threading
import time

CLK = os.sysconf("SC_CLK_TCK")


def proc_cpu_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    rest = text[text.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state); utime is field 14, stime field 15.
    return int(rest[11]) + int(rest[12])


def proc_status_kb(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def postgres_pids(db):
    """Postgres processes to charge: backends of `db` and the server's own auxiliary
    processes (writers, checkpointer, autovacuum); other databases' backends (e.g. another
    user's tests on the same server) are left out."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/comm") as f:
                if f.read().strip() != "postgres":
                    continue
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if db:
            words = cmd.split()
            # "postgres: USER DB HOST(PORT) STATE" is a backend; anything else is auxiliary.
            is_backend = (
                len(words) >= 4 and words[0] == "postgres:" and "(" in words[3]
            ) or (len(words) >= 4 and words[0] == "postgres:" and words[3] == "[local]")
            if is_backend and words[2] != db:
                continue
        pids.append(name)
    return pids


class PostgresCpu:
    """Per-process CPU of Postgres, sampled so that processes that exit during the run
    (pgbench's backends) still count up to their last sample."""

    def __init__(self, db):
        self.db = db
        self.start = {}
        self.last = {}
        for pid in postgres_pids(db):
            t = proc_cpu_ticks(pid)
            if t is not None:
                self.start[pid] = t
                self.last[pid] = t

    def sample(self):
        for pid in postgres_pids(self.db):
            t = proc_cpu_ticks(pid)
            if t is not None:
                self.last[pid] = t

    def ticks(self):
        return sum(t - self.start.get(pid, 0) for pid, t in self.last.items())


def machine_ticks():
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    values = [int(x) for x in parts]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return total - idle, total


def reset_hwm(pid):
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# pgbench summary lines: (pattern, result key, type); the first tps pattern that matches wins.
PGBENCH_FIELDS = [
    (r"tps = ([0-9.]+) \(without initial connection time\)", "tps", float),
    (r"tps = ([0-9.]+)", "tps", float),
    (r"latency average = ([0-9.]+) ms", "latency_avg_ms", float),
    (r"latency stddev = ([0-9.]+) ms", "latency_stddev_ms", float),
    (r"number of failed transactions: (\d+)", "failed", int),
    (r"number of transactions actually processed: (\d+)", "transactions", int),
]


def parse_pgbench(text):
    out = {}
    for pattern, key, kind in PGBENCH_FIELDS:
        m = re.search(pattern, text)
        if m and key not in out:
            out[key] = kind(m.group(1))
    return out


def parse_oha(text):
    """oha's JSON summary: latencies in seconds."""
    start = text.find("{")
    doc = json.loads(text[start:])
    summary = doc.get("summary", {})
    pct = doc.get("latencyPercentiles", {})
    codes = doc.get("statusCodeDistribution", {}) or {}
    errors = doc.get("errorDistribution", {}) or {}
    non_ok = sum(v for k, v in codes.items() if not (200 <= int(k) < 400))
    ms = lambda v: None if v is None else v * 1000.0  # noqa: E731
    return {
        "requests_per_sec": summary.get("requestsPerSec"),
        "success_rate": summary.get("successRate"),
        "total_s": summary.get("total"),
        "p50_ms": ms(pct.get("p50")),
        "p90_ms": ms(pct.get("p90")),
        "p99_ms": ms(pct.get("p99")),
        "p999_ms": ms(pct.get("p99.9")),
        "mean_ms": ms(summary.get("average")),
        "max_ms": ms(summary.get("slowest")),
        "status_codes": codes,
        "errors": errors,
        "non_2xx_3xx": non_ok,
        "socket_errors": sum(v for k, v in errors.items() if "deadline" not in k),
        "aborted_at_deadline": sum(v for k, v in errors.items() if "deadline" in k),
        "requests": sum(codes.values()) + sum(errors.values()),
    }


def parse_json_line(text):
    """The last line of the tool's stdout that is a JSON object."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON line on stdout")


def parse_wrk(path):
    with open(path) as f:
        doc = json.load(f)
    secs = doc["duration_us"] / 1e6
    return {
        "requests": doc["requests"],
        "requests_per_sec": doc["requests"] / secs if secs > 0 else 0.0,
        "p50_ms": doc["p50_us"] / 1000.0,
        "p90_ms": doc["p90_us"] / 1000.0,
        "p99_ms": doc["p99_us"] / 1000.0,
        "p999_ms": doc["p999_us"] / 1000.0,
        "mean_ms": doc["latency_mean_us"] / 1000.0,
        "max_ms": doc["latency_max_us"] / 1000.0,
        "non_2xx_3xx": doc["errors_status"],
        "socket_errors": doc["errors_connect"]
        + doc["errors_read"]
        + doc["errors_write"]
        + doc["errors_timeout"],
        "socket_errors_detail": {
            k: doc["errors_" + k] for k in ("connect", "read", "write", "timeout")
        },
        "transfer_bytes": doc["bytes"],
        **({"statuses": doc["statuses"]} if "statuses" in doc else {}),
        **({"samples": doc["samples"]} if "samples" in doc else {}),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kind", required=True, choices=["wrk", "oha", "pgbench", "json", "none"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--server-pid", type=int)
    ap.add_argument("--wrk-json")
    ap.add_argument("--stdout", help="also keep the tool's stdout here")
    ap.add_argument("--label", action="append", default=[])
    ap.add_argument("--pg-db", help="charge only this database's Postgres backends")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    cmd = args.cmd[1:] if args.cmd and args.cmd[0] == "--" else args.cmd
    if not cmd:
        ap.error("no command")

    pid = args.server_pid
    hwm_reset = reset_hwm(pid) if pid else False
    rss_max = [proc_status_kb(pid, "VmRSS") or 0] if pid else [0]
    stop = threading.Event()

    pg = PostgresCpu(args.pg_db)

    def sampler():
        n = 0
        while not stop.wait(0.1):
            if pid:
                v = proc_status_kb(pid, "VmRSS")
                if v and v > rss_max[0]:
                    rss_max[0] = v
            n += 1
            if n % 5 == 0:
                pg.sample()

    sampler_thread = threading.Thread(target=sampler, daemon=True)
    sampler_thread.start()

    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    s0 = proc_cpu_ticks(pid) if pid else None
    m0 = machine_ticks()
    t0 = time.monotonic()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t1 = time.monotonic()
    s1 = proc_cpu_ticks(pid) if pid else None
    m1 = machine_ticks()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    stop.set()
    sampler_thread.join()
    pg.sample()

    wall = t1 - t0
    ncpu = os.cpu_count() or 1
    res = {
        "wall_s": round(wall, 3),
        "loadgen_cpu_pct": round(
            100.0
            * ((ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime))
            / wall,
            1,
        ),
        "postgres_cpu_pct": round(100.0 * pg.ticks() / CLK / wall, 1),
        # Busy share of all cores, scaled so that 100 % = one core.
        "machine_busy_pct": round(
            100.0 * ncpu * (m1[0] - m0[0]) / max(1, (m1[1] - m0[1])), 1
        ),
    }
    if pid:
        res["server_cpu_pct"] = (
            round(100.0 * (s1 - s0) / CLK / wall, 1)
            if s0 is not None and s1 is not None
            else None
        )
        res["server_hwm_kb"] = proc_status_kb(pid, "VmHWM")
        res["server_hwm_reset"] = hwm_reset
        res["server_rss_max_kb"] = rss_max[0]
        res["server_rss_end_kb"] = proc_status_kb(pid, "VmRSS")
        res["server_alive"] = s1 is not None

    doc = {"cmd": cmd, "rc": proc.returncode, "resources": res}
    for kv in args.label:
        k, _, v = kv.partition("=")
        doc[k] = int(v) if v.isdigit() else v
    if args.stdout:
        with open(args.stdout, "w") as f:
            f.write(proc.stdout)
            if proc.stderr:
                f.write("\n--- stderr ---\n" + proc.stderr)
    try:
        if args.kind == "wrk":
            doc["result"] = parse_wrk(args.wrk_json)
        elif args.kind == "oha":
            doc["result"] = parse_oha(proc.stdout)
        elif args.kind == "pgbench":
            doc["result"] = parse_pgbench(proc.stdout)
        elif args.kind == "json":
            doc["result"] = parse_json_line(proc.stdout)
    except Exception as e:  # keep the measurements; say why the result is missing
        doc["result_error"] = f"{type(e).__name__}: {e}; stderr: {proc.stderr[-2000:]}"
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
    sys.exit(0)


if __name__ == "__main__":
    main()
