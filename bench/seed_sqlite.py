#!/usr/bin/env python3
"""Bulk-loads benchmark users and sessions into a hallpass SQLite database (already migrated
and bootstrapped by a first `hallpass serve`). Same data as bench/seed_postgres.sql:

  session i (0..N-1): token "bench-token-<i>" (token_hash = SHA-256 of it),
                      id = MD5("bench-session-<i>"), user i // 10
  user j:             id = beec0000-0000-4000-8000-<j as 12 hex digits>

One transaction per batch of 100k rows, progress on stderr. Standard library only.
"""

import argparse
import hashlib
import sqlite3
import sys
import time

FACTORS = (
    '[{"type":"password","delivery_method":"knowledge",'
    '"last_authenticated_at":"2026-01-01T00:00:00Z",'
    '"created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z"}]'
)
ROLES = '["stytch_user"]'
SESSIONS_PER_USER = 10


def user_blob(j):
    return bytes.fromhex("beec0000" + "0000" + "4000" + "8000" + format(j, "012x"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True)
    ap.add_argument("--sessions", type=int, required=True)
    ap.add_argument("--project-uuid", required=True)
    ap.add_argument("--batch", type=int, default=100_000)
    args = ap.parse_args()

    project = bytes.fromhex(args.project_uuid.replace("-", ""))
    n = args.sessions
    nusers = (n + SESSIONS_PER_USER - 1) // SESSIONS_PER_USER
    now = int(time.time())
    expires = now + 10 * 365 * 86400

    db = sqlite3.connect(args.db, isolation_level=None)
    db.execute("PRAGMA busy_timeout = 10000")
    db.execute("PRAGMA synchronous = OFF")
    db.execute("PRAGMA cache_size = -262144")  # 256 MiB for this connection
    db.execute("PRAGMA foreign_keys = OFF")
    mode = db.execute("PRAGMA journal_mode").fetchone()[0]
    if not db.execute("SELECT 1 FROM projects WHERE id = ?", (project,)).fetchone():
        sys.exit(f"seed_sqlite: project {args.project_uuid} is not in {args.db}")

    t0 = time.monotonic()

    def progress(label, done, total):
        el = time.monotonic() - t0
        rate = done / el if el > 0 else 0
        sys.stderr.write(f"  {label}: {done:>10,}/{total:,}  ({el:6.1f} s, {rate:,.0f} rows/s)\n")
        sys.stderr.flush()

    # Users.
    for lo in range(0, nusers, args.batch):
        hi = min(nusers, lo + args.batch)
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO users (id, project_id, created_at, trusted_metadata, untrusted_metadata)"
            " VALUES (?, ?, ?, '{}', '{}')",
            ((user_blob(j), project, now) for j in range(lo, hi)),
        )
        db.execute("COMMIT")
        progress("users   ", hi, nusers)

    t0 = time.monotonic()
    sha256 = hashlib.sha256
    md5 = hashlib.md5

    def rows(lo, hi):
        for i in range(lo, hi):
            started = now - (i % 1000)
            yield (
                md5(b"bench-session-%d" % i).digest(),
                project,
                user_blob(i // SESSIONS_PER_USER),
                sha256(b"bench-token-%d" % i).digest(),
                started,
                started,
                expires,
                FACTORS,
                ROLES,
            )

    for lo in range(0, n, args.batch):
        hi = min(n, lo + args.batch)
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO sessions (id, project_id, user_id, token_hash, started_at,"
            " last_accessed_at, expires_at, authentication_factors, roles, custom_claims)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, '{}')",
            rows(lo, hi),
        )
        db.execute("COMMIT")
        progress("sessions", hi, n)

    db.execute("ANALYZE")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    sys.stderr.write(f"  journal_mode={mode}; ANALYZE done\n")


if __name__ == "__main__":
    main()
