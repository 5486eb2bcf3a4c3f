#!/usr/bin/env python3
"""Race-and-fault suite: drives real `hallpass serve` processes with concurrent requests,
hostile connections and a database that goes away, and checks what the server must do.

    python3 tests/race/suite.py --backend sqlite|postgres [--bin PATH]

Python 3.11 standard library only. Every case starts its own server(s) on a free loopback
port with a fresh database and stops them at its end. Prints one line per case
(`ok NAME (Ss) details`, `FAIL NAME: reason`, `skip NAME (why)`) and ends with
`N passed, M failed`; exits 1 when a case failed. See README.md beside this file.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import errno
import http.client
import json
import os
import random
import resource
import secrets
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
# Source address of the wrong-secret flood: another loopback address, so the flood comes
# from a different client address than the legitimate callers (as an attacker would).
FLOOD_SOURCE = "127.0.0.2"
PG_ADMIN_URL = os.environ.get("PG_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres")
PG_BIN = Path("/usr/lib/postgresql/15/bin")
READY_TIMEOUT = 30.0  # a server must answer /readyz 200 within this after its start
STOP_GRACE = 5.0  # SIGTERM, then SIGKILL after this
PASSWORD_FACTOR = [{"type": "password", "delivery_method": "knowledge"}]
# What a request can raise when the server misbehaves (timeouts, resets, garbage).
NET_ERRORS = (OSError, http.client.HTTPException)


class CaseFailure(Exception):
    """The server did not behave as the case requires (the message says how)."""


class Skip(Exception):
    """The case does not apply to this backend."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CaseFailure(message)


# ------------------------------------------------------------------------ small helpers


def basic_auth(project_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{project_id}:{secret}".encode()).decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def parse_time(value: str) -> datetime:
    """An RFC 3339 timestamp from the API."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def jwt_claims(jwt: str) -> dict:
    """The payload of a JWT (not verified: the other suites do that)."""
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def describe(reply) -> str:
    """A reply (status, headers, json) or an exception, in a few words for a failure line."""
    if isinstance(reply, BaseException):
        return f"{type(reply).__name__}: {reply}"
    status, _, doc = reply
    if isinstance(doc, dict) and "error_type" in doc:
        return f"{status} {doc['error_type']}: {doc.get('error_message', '')}"
    return str(status)


def expect_ok(reply, what: str) -> dict:
    """The JSON body of a 200 reply, or a CaseFailure naming `what`."""
    if isinstance(reply, BaseException) or reply[0] != 200:
        raise CaseFailure(f"{what}: {describe(reply)}")
    return reply[2]


def tally(items) -> str:
    """`200×48 503×2`: a Counter's contents, most frequent first."""
    return " ".join(f"{k}×{n}" for k, n in Counter(items).most_common()) or "none"


def run_threads(targets: list[Callable[[], None]], timeout: float) -> None:
    threads = [threading.Thread(target=t, daemon=True) for t in targets]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    check(not any(t.is_alive() for t in threads), f"client threads still running after {timeout:.0f} s")


# ------------------------------------------------------------------------ servers


BOOTSTRAP = object()  # `auth` default: the server's bootstrap project credentials


class Server:
    """One `hallpass serve` process on a free loopback port."""

    def __init__(self, binary: Path, env: dict, log_path: Path, nofile: int | None = None):
        self.port = free_port()
        self.credentials = (env["HALLPASS_BOOTSTRAP_PROJECT_ID"], env["HALLPASS_BOOTSTRAP_SECRET"])
        self.log_path = log_path
        argv = [str(binary), "serve"]
        if nofile is not None:
            argv = ["prlimit", f"--nofile={nofile}:{nofile}", "--", *argv]
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv,
                env={**env, "HALLPASS_LISTEN": f"{HOST}:{self.port}"},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def connect(self, timeout: float = 10.0) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        conn.connect()
        return conn

    def call(self, method: str, path: str, body=None, auth=BOOTSTRAP, timeout: float = 10.0, conn=None):
        """One request; returns (status, headers with lower-case names, JSON body or None).
        A new connection unless `conn` is given; `auth=None` sends no credentials."""
        own = conn is None
        if own:
            conn = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        headers = {}
        if auth is BOOTSTRAP:
            auth = self.credentials
        if auth:
            headers["Authorization"] = basic_auth(*auth)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            try:
                doc = json.loads(raw) if raw else None
            except ValueError:
                doc = None
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, doc
        finally:
            if own:
                conn.close()

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CaseFailure(f"hallpass exited with code {self.proc.returncode} before it was ready")
            try:
                if self.call("GET", "/readyz", auth=None, timeout=2.0)[0] == 200:
                    return
            except NET_ERRORS:
                pass
            time.sleep(0.1)
        raise CaseFailure(f"hallpass not ready after {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_GRACE)

    def log_tail(self, lines: int = 8) -> list[str]:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []
        return [line[:240] for line in text[-lines:]]


class Case:
    """What one case owns: a temp folder, databases, servers; `close` releases them all."""

    def __init__(self, backend: str, binary: Path):
        self.backend = backend
        self.binary = binary
        self.tmp = Path(tempfile.mkdtemp(prefix="hallpass-race-"))
        self.servers: list[Server] = []
        self._cleanups: list[Callable[[], None]] = [lambda: shutil.rmtree(self.tmp, ignore_errors=True)]
        self.master_key = base64.b64encode(os.urandom(32)).decode()

    def on_close(self, fn: Callable[[], None]) -> None:
        self._cleanups.append(fn)

    def close(self) -> None:
        while self._cleanups:
            try:
                self._cleanups.pop()()
            except Exception as e:  # keep releasing the rest
                print(f"# cleanup: {type(e).__name__}: {e}", flush=True)

    def database(self) -> str:
        """A fresh, empty database of the suite's backend, dropped at the end of the case."""
        if self.backend == "sqlite":
            return str(self.tmp / "hallpass.db")
        name = f"hallpass_race_{uuid.uuid4().hex[:16]}"
        psql(f'CREATE DATABASE "{name}"')
        self.on_close(lambda: psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name

    def env(self, database_url: str, **extra: str) -> dict:
        """The environment of a server or CLI run: ours, with no inherited HALLPASS_*."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("HALLPASS_")}
        env.update(
            HALLPASS_DATABASE_URL=database_url,
            HALLPASS_MASTER_KEY=self.master_key,
            HALLPASS_BOOTSTRAP_PROJECT_ID=f"project-test-{uuid.uuid4()}",
            HALLPASS_BOOTSTRAP_SECRET=secrets.token_urlsafe(32),
            HALLPASS_LOG_FORMAT="json",
        )
        env.update(extra)
        return env

    def start_server(self, database_url: str | None = None, nofile: int | None = None, **extra: str) -> Server:
        """A ready server on a fresh database (or on `database_url`), stopped at the end."""
        env = self.env(database_url or self.database(), **extra)
        server = Server(self.binary, env, self.tmp / f"hallpass-{len(self.servers)}.log", nofile)
        self.servers.append(server)
        self.on_close(server.stop)
        server.wait_ready()
        return server

    def run_cli(self, env: dict, *args: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess, float]:
        """Runs `hallpass ARGS` with `env`, whatever its exit status; (the run, its seconds).
        A run still going after `timeout` s is killed and is a CaseFailure."""
        started = time.monotonic()
        try:
            done = subprocess.run(
                [str(self.binary), *args], env=env, stdin=subprocess.DEVNULL,
                capture_output=True, text=True, timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise CaseFailure(f"hallpass {' '.join(args)} still running after {timeout:.0f} s") from None
        return done, time.monotonic() - started

    def cli(self, env: dict, *args: str) -> str:
        """Runs `hallpass ARGS` with `env`; its standard output."""
        done, _ = self.run_cli(env, *args)
        check(done.returncode == 0, f"hallpass {' '.join(args)} exited {done.returncode}: {done.stderr.strip()[-300:]}")
        return done.stdout


def psql(sql: str, url: str = PG_ADMIN_URL) -> str:
    """Runs `sql` on `url` (the shared server unless told); its output, unaligned, no headers."""
    done = subprocess.run(
        ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )
    if done.returncode != 0:
        raise CaseFailure(f"psql {sql!r}: {done.stderr.strip()}")
    return done.stdout


# ------------------------------------------------------------------------ API helpers


def create_user(server: Server) -> str:
    doc = expect_ok(server.call("POST", "/v1/users", {"email": f"race-{uuid.uuid4().hex}@example.com"}), "create user")
    return doc["user_id"]


def create_session(server: Server, user_id: str, minutes: int = 600, timeout: float = 10.0) -> str:
    body = {"user_id": user_id, "session_duration_minutes": minutes, "authentication_factors": PASSWORD_FACTOR}
    return expect_ok(server.call("POST", "/v1/sessions", body, timeout=timeout), "create session")["session_token"]


def authenticate(server: Server, token: str, **options) -> dict:
    return expect_ok(
        server.call("POST", "/v1/sessions/authenticate", {"session_token": token, **options}),
        "authenticate",
    )


def race(server: Server, bodies: list[dict], path: str = "/v1/sessions/authenticate", timeout: float = 30.0) -> list:
    """POSTs each body on its own connection, opened beforehand, all released at once by a
    barrier. One result per body, in order: (status, headers, json) or the exception."""
    results: list = [None] * len(bodies)
    barrier = threading.Barrier(len(bodies))

    def one(i: int) -> Callable[[], None]:
        def run() -> None:
            try:
                conn = server.connect(timeout)
                try:
                    barrier.wait(timeout)
                    results[i] = server.call("POST", path, bodies[i], conn=conn)
                finally:
                    conn.close()
            except Exception as e:
                barrier.abort()
                results[i] = e

        return run

    run_threads([one(i) for i in range(len(bodies))], timeout + 5)
    return results


def check_claims(doc: dict, expected: dict, what: str) -> None:
    """`expected` is in the session's custom_claims and at the top level of its JWT."""
    stored = doc["session"].get("custom_claims") or {}
    missing = sorted(k for k, v in expected.items() if stored.get(k) != v)
    check(not missing, f"{what}: custom_claims lack {len(missing)}/{len(expected)} keys (e.g. {missing[:5]})")
    in_jwt = jwt_claims(doc["session_jwt"])
    missing = sorted(k for k, v in expected.items() if in_jwt.get(k) != v)
    check(not missing, f"{what}: session_jwt lacks {len(missing)}/{len(expected)} claims (e.g. {missing[:5]})")


# ------------------------------------------------------------------------ cases

CASES: list[tuple[str, Callable[[Case], str]]] = []


def case(fn: Callable[[Case], str]) -> Callable[[Case], str]:
    CASES.append((fn.__name__, fn))
    return fn


@case
def claims_merge_50(c: Case) -> str:
    """50 concurrent claim merges on one session: none may be lost."""
    server = c.start_server()
    user_id = create_user(server)
    for trial in range(3):
        token = create_session(server, user_id)
        expected = {f"k{i}": i for i in range(50)}
        results = race(server, [{"session_token": token, "session_custom_claims": {k: v}} for k, v in expected.items()])
        bad = [describe(r) for r in results if isinstance(r, BaseException) or r[0] != 200]
        check(not bad, f"trial {trial}: {len(bad)}/50 merges not 200: {tally(bad)}")
        check_claims(authenticate(server, token), expected, f"trial {trial}")
    return "3 trials × 50 concurrent merges, all 50 keys kept in custom_claims and the JWT"


@case
def claims_merge_pairs(c: Case) -> str:
    """Two concurrent merges on a fresh session, many times: both keys stored every time."""
    server = c.start_server()
    user_id = create_user(server)
    for trial in range(30):
        token = create_session(server, user_id)
        results = race(server, [{"session_token": token, "session_custom_claims": {k: trial}} for k in ("a", "b")])
        for r in results:
            expect_ok(r, f"trial {trial}: merge")
        check_claims(authenticate(server, token), {"a": trial, "b": trial}, f"trial {trial}")
    return "30 trials × 2 concurrent merges, both keys kept"


@case
def shorten_vs_claims(c: Case) -> str:
    """Shortening a session while another request merges claims: the short expiry must win."""
    server = c.start_server()
    user_id = create_user(server)
    for trial in range(50):
        token = create_session(server, user_id, minutes=600)
        shorten, merge = race(server, [
            {"session_token": token, "session_duration_minutes": 5},
            {"session_token": token, "session_custom_claims": {"x": trial}},
        ])
        expect_ok(shorten, f"trial {trial}: shorten")
        expect_ok(merge, f"trial {trial}: merge")
        doc = authenticate(server, token)
        over = parse_time(doc["session"]["expires_at"]) - (datetime.now(timezone.utc) + timedelta(minutes=5))
        check(
            over <= timedelta(seconds=10),
            f"trial {trial}: expires_at {doc['session']['expires_at']} is {over.total_seconds() / 60:.1f} min "
            "past now + 5 min: the shortening was lost",
        )
        check_claims(doc, {"x": trial}, f"trial {trial}")
    return "50 trials, expiry shortened to 5 min and the concurrent claim kept every time"


class HeldSockets:
    """Client connections held open against a server, some dribbling one header byte a
    second (slowloris), the others silent. Connects are non-blocking (a server that stops
    accepting must not stall us); a thread completes them, dribbles, and notes when the
    server closes each connection."""

    SLOW_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200

    def __init__(self, port: int):
        self.port = port
        self.selector = selectors.DefaultSelector()
        self.sockets: list[socket.socket] = []
        self.slow: dict[socket.socket, int] = {}  # bytes of SLOW_REQUEST sent
        self.connected: dict[socket.socket, float] = {}  # when the handshake completed
        self.closed: dict[socket.socket, float] = {}  # when we saw the server close it
        self.refused: set[socket.socket] = set()  # connects refused or reset
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def open(self, count: int, slow: bool) -> None:
        """Starts `count` connects (call before `start`)."""
        for _ in range(count):
            s = socket.socket()
            s.setblocking(False)
            self.sockets.append(s)
            if s.connect_ex((HOST, self.port)) not in (0, errno.EINPROGRESS):
                s.close()
                self.refused.add(s)
                continue
            if slow:
                self.slow[s] = 0
            self.selector.register(s, selectors.EVENT_WRITE)

    def start(self) -> None:
        self.thread.start()

    def _drop(self, s: socket.socket, by_server: bool) -> None:
        self.selector.unregister(s)
        s.close()
        with self.lock:
            if by_server:
                self.closed[s] = time.monotonic()
            else:
                self.refused.add(s)

    def _dribble(self, s: socket.socket) -> None:
        sent = self.slow[s]
        if sent >= len(self.SLOW_REQUEST):
            return
        try:
            self.slow[s] = sent + s.send(self.SLOW_REQUEST[sent:sent + 1])
        except BlockingIOError:
            pass
        except OSError:
            self._drop(s, by_server=True)

    def _watch(self, limit: float = 60.0) -> None:
        next_dribble = time.monotonic() + 1.0
        end = time.monotonic() + limit
        while not self.stopping.is_set() and time.monotonic() < end:
            for key, _ in self.selector.select(timeout=0.1):
                s = key.fileobj
                if s not in self.connected:  # the connect finished, or failed
                    if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        self._drop(s, by_server=False)
                        continue
                    with self.lock:
                        self.connected[s] = time.monotonic()
                    self.selector.modify(s, selectors.EVENT_READ)
                    if s in self.slow:
                        self._dribble(s)
                    continue
                try:
                    if not s.recv(4096):  # EOF; data (a 408, say) is read until EOF
                        self._drop(s, by_server=True)
                except BlockingIOError:
                    pass
                except OSError:  # reset
                    self._drop(s, by_server=True)
            if time.monotonic() >= next_dribble:
                next_dribble += 1.0
                for s in [s for s in self.slow if s in self.connected and s not in self.closed]:
                    self._dribble(s)

    def close_delays(self, slow: bool) -> list[float]:
        """Seconds from connect to the server's close, for the closed ones of the kind."""
        with self.lock:
            return [t - self.connected[s] for s, t in self.closed.items() if (s in self.slow) == slow]

    def count(self, slow: bool) -> int:
        """How many of the kind got connected."""
        with self.lock:
            return sum(1 for s in self.connected if (s in self.slow) == slow)

    def settled(self, slow: bool, within: float) -> bool:
        """Whether every connection of the kind is gone, or `within` seconds have passed
        since the last of them connected."""
        with self.lock:
            kind = [s for s in self.sockets if (s in self.slow) == slow]
            if all(s in self.closed or s in self.refused for s in kind):
                return True
            last = max((self.connected.get(s, 0.0) for s in kind), default=0.0)
        return bool(last) and time.monotonic() > last + within

    def close(self) -> None:
        """Stops watching and closes every connection (again: a no-op)."""
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(5)
        for s in self.sockets:
            s.close()
        self.selector.close()


@case
def slowloris_and_idle_flood(c: Case) -> str:
    """More hostile connections than the server has file descriptors: it stays reachable."""
    header_timeout, slack = 2, 4.0
    server = c.start_server(
        nofile=256,
        HALLPASS_HEADER_READ_TIMEOUT_SECONDS=str(header_timeout),
        HALLPASS_IDLE_TIMEOUT_SECONDS="5",
    )
    held = HeldSockets(server.port)
    c.on_close(held.close)
    # Silent ones first: evicting the oldest idle connections must not spare the slowloris
    # ones, which only the header-read timeout ends.
    held.open(400, slow=False)
    held.open(200, slow=True)
    opened_at = time.monotonic()
    held.start()

    probes = []
    for i in range(10):
        time.sleep(max(0.0, opened_at + 0.5 * i - time.monotonic()))
        started = time.monotonic()
        try:
            status = server.call("GET", "/healthz", auth=None, timeout=3.0)[0]
        except NET_ERRORS as e:
            status = type(e).__name__
        probes.append((status, time.monotonic() - started))

    # Each slowloris connection must be closed within the header-read timeout + slack of
    # its connect: wait until they are, or that long after the last connect (20 s at most).
    limit = opened_at + 20.0
    while time.monotonic() < limit and not held.settled(slow=True, within=header_timeout + slack + 0.5):
        time.sleep(0.1)
    slow_delays = held.close_delays(slow=True)
    slow_connected = held.count(slow=True)
    idle_closed, idle_connected = len(held.close_delays(slow=False)), held.count(slow=False)
    held.close()

    summary = (f"slowloris: {slow_connected}/200 connected, {len(slow_delays)} closed by the server "
               f"(max {max(slow_delays, default=0):.1f}s after connect); idle: {idle_connected}/400 connected, "
               f"{idle_closed} closed by the server; connects refused {len(held.refused)}")
    bad = [f"{s} in {t:.1f}s" for s, t in probes if s != 200 or t > 3.0]
    check(not bad, f"{len(bad)}/10 probes not 200 within 3 s: {', '.join(bad[:5])}; {summary}")
    late = [d for d in slow_delays if d > header_timeout + slack]
    check(len(slow_delays) == slow_connected and not late,
          f"slowloris connections not closed within {header_timeout + slack:.0f} s: "
          f"{slow_connected - len(slow_delays)} still open, {len(late)} closed late; {summary}")
    return f"probes 10×200, max {max(t for _, t in probes):.2f}s; {summary}"


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict]:
    """Status and headers of one HTTP/1.1 response; its body is read and dropped."""
    line = await reader.readline()
    if not line:
        raise ConnectionError("closed by the server")
    status = int(line.split()[1])
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while (size := int((await reader.readline()).split(b";")[0], 16)) > 0:
            await reader.readexactly(size + 2)
        await reader.readline()
    elif n := int(headers.get("content-length", "0")):
        await reader.readexactly(n)
    return status, headers


async def flood_wrong_secrets(port: int, project_id: str, path: str, connections: int, seconds: float) -> Counter:
    """`connections` keep-alive connections from FLOOD_SOURCE sending `project_id` with a
    new wrong secret each request, for `seconds`. Counts statuses and connection events."""
    counts: Counter = Counter()
    deadline = time.monotonic() + seconds

    def left() -> float:
        return max(0.01, deadline - time.monotonic())

    async def worker() -> None:
        while time.monotonic() < deadline:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(HOST, port, local_addr=(FLOOD_SOURCE, 0)), left())
            except (OSError, asyncio.TimeoutError):
                counts["connect failed"] += 1
                await asyncio.sleep(0.05)
                continue
            try:
                while time.monotonic() < deadline:
                    auth = basic_auth(project_id, "wrong-" + secrets.token_urlsafe(30))
                    writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: {auth}\r\n\r\n".encode())
                    status, headers = await asyncio.wait_for(read_response(reader), left())
                    counts[status] += 1
                    if status == 429 and headers.get("retry-after"):
                        counts["429 with Retry-After"] += 1
                    if headers.get("connection", "").lower() == "close":
                        break
            except asyncio.TimeoutError:
                counts["in flight at the end"] += 1
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                counts["dropped by the server"] += 1
            finally:
                writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return counts


@case
def wrong_secret_flood(c: Case) -> str:
    """A flood of wrong secrets for project A: verified callers and other projects still served."""
    database_url = c.database()
    env = c.env(database_url)
    # Operator commands work on an existing database: `migrate` makes it (a SQLite file).
    c.cli(env, "migrate")
    project_b = json.loads(c.cli(env, "project", "create", "--name", "b", "--json").strip().splitlines()[-1])
    server = c.start_server(database_url)
    user_id = create_user(server)  # A's secret is verified now, before the flood
    path = f"/v1/sessions?user_id={user_id}"

    flood: dict = {}

    def run_flood() -> None:
        flood["counts"] = asyncio.run(flood_wrong_secrets(server.port, server.credentials[0], path, 300, 8.0))

    flood_thread = threading.Thread(target=run_flood, daemon=True)
    flood_started = time.monotonic()
    flood_thread.start()

    a_replies = []

    def verified_caller() -> None:
        for i in range(80):  # every 100 ms for the 8 s of the flood
            time.sleep(max(0.0, flood_started + 0.1 * i - time.monotonic()))
            started = time.monotonic()
            try:
                reply = describe(server.call("GET", path, timeout=5.0))
            except NET_ERRORS as e:
                reply = describe(e)
            a_replies.append((reply, time.monotonic() - started))

    caller_thread = threading.Thread(target=verified_caller, daemon=True)
    caller_thread.start()

    # B's first use, 2 s into the flood: 200 within 2 s (retrying after a 429 is allowed).
    time.sleep(max(0.0, flood_started + 2.0 - time.monotonic()))
    b_started = time.monotonic()
    b_auth = (project_b["project_id"], project_b["secret"])
    b_body = {"email": f"race-b-{uuid.uuid4().hex}@example.com"}
    b_result, b_retries = "no answer", 0
    for _ in range(10):
        left = 2.0 - (time.monotonic() - b_started)
        if left <= 0:
            break
        try:
            status, headers, doc = server.call("POST", "/v1/users", b_body, auth=b_auth, timeout=left)
        except NET_ERRORS as e:
            b_result = describe(e)
            break
        b_result = describe((status, headers, doc))
        if status != 429:
            break
        b_retries += 1
        retry_after = float(headers.get("retry-after", "0") or 0)
        time.sleep(max(0.05, min(retry_after, 2.0 - (time.monotonic() - b_started) - 0.2)))
    b_elapsed = time.monotonic() - b_started

    caller_thread.join(15)
    flood_thread.join(20)
    check(not caller_thread.is_alive() and not flood_thread.is_alive(), "flood or caller still running after 20 s")
    counts = flood.get("counts", Counter())
    flood_summary = (f"flood: 401×{counts[401]} 429×{counts[429]} (Retry-After on {counts['429 with Retry-After']}) "
                     f"other: {tally(k for k in counts.elements() if k not in (401, 429, '429 with Retry-After'))}")

    check(b_result == "200" and b_elapsed <= 2.0,
          f"project B's first request: {b_result} after {b_elapsed:.2f}s, {b_retries} retries after 429; "
          f"{flood_summary}")
    a_bad = [f"{r} ({t:.2f}s)" for r, t in a_replies if r != "200"]
    check(not a_bad, f"verified caller: {len(a_bad)}/{len(a_replies)} not 200: {tally(r for r, _ in a_replies)}; "
                     f"{flood_summary}")
    server_errors = sum(n for k, n in counts.items() if isinstance(k, int) and k >= 500)
    check(server_errors == 0, f"the flood got {server_errors} 5xx answers; {flood_summary}")
    check(counts[429] > 0, f"the flood was never rate-limited (no 429); {flood_summary}")
    check(counts["429 with Retry-After"] == counts[429], f"429 without Retry-After; {flood_summary}")
    return (f"A: {len(a_replies)}×200 (max {max(t for _, t in a_replies):.2f}s); "
            f"B: 200 in {b_elapsed:.2f}s after {b_retries} retries; {flood_summary}")


class PrivateCluster:
    """A throw-away Postgres 15 cluster on a free port, run as the `postgres` user when we
    are root (initdb refuses root). `settings` (name: value) are given to every start as
    `-c name=value`."""

    def __init__(self, settings: dict[str, str] | None = None) -> None:
        self.settings = dict(settings or {})
        # Its own folder, not the case's: the `postgres` user must be able to reach it.
        self.root = root = Path(tempfile.mkdtemp(prefix="hallpass-race-pg-"))
        self.data = root / "data"
        self.log = root / "postgres.log"
        self.ctl_log = root / "pg_ctl.log"
        self.port = free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"
        # For the suite's own queries: TCP, never TLS, so they work whatever the settings.
        self.admin_url = self.url + "?sslmode=disable"
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")

    def _run(self, tool: str, *args: str, check_rc: bool = True) -> None:
        argv = [str(PG_BIN / tool), *args]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        with open(self.ctl_log, "ab") as out:
            rc = subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=90).returncode
        if check_rc and rc != 0:
            tail = self.ctl_log.read_text(errors="replace").strip().splitlines()[-3:]
            raise CaseFailure(f"{tool} {' '.join(args[:3])} exited {rc}: {' | '.join(tail)}")

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1"
        options += "".join(f" -c {name}={value}" for name, value in self.settings.items())
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log), "start", "-w", "-t", "60")

    def restart(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "restart", "-m", "fast", "-w", "-t", "60")

    def stop(self, mode: str = "fast", check_rc: bool = True) -> None:
        self._run("pg_ctl", "-D", str(self.data), "stop", "-m", mode, "-w", "-t", "60", check_rc=check_rc)

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop("immediate", check_rc=False)
        shutil.rmtree(self.root, ignore_errors=True)


@case
def postgres_restart_under_load(c: Case) -> str:
    """Postgres restarts and goes away under load: no 500s, no slow answers, nothing lost."""
    if c.backend != "postgres":
        raise Skip("sqlite")
    cluster = PrivateCluster()
    c.on_close(cluster.destroy)
    cluster.init()
    cluster.start()
    server = c.start_server(cluster.url)
    users = [create_user(server) for _ in range(8)]

    started = time.monotonic()
    stop = threading.Event()
    lock = threading.Lock()
    created: list[str] = []
    records: list[tuple[str, float, float, object]] = []  # kind, at, seconds, status or error

    def timed(kind: str, path: str, body: dict):
        t0 = time.monotonic()
        try:
            reply = server.call("POST", path, body, timeout=5.0)
            outcome = reply[0]
        except NET_ERRORS as e:
            reply, outcome = None, type(e).__name__
        with lock:
            records.append((kind, t0 - started, time.monotonic() - t0, outcome))
        return reply

    def load(user_id: str) -> Callable[[], None]:
        def run() -> None:
            # One create and one authenticate per 50 ms at most: steady load, and a number
            # of sessions the final check can go through in a few seconds.
            for i in range(100_000):
                time.sleep(max(0.0, started + 0.05 * i - time.monotonic()))
                if stop.is_set():
                    return
                reply = timed("create", "/v1/sessions", {
                    "user_id": user_id, "session_duration_minutes": 600, "authentication_factors": PASSWORD_FACTOR})
                token = reply[2].get("session_token") if reply and reply[0] == 200 and reply[2] else None
                if token:
                    with lock:
                        created.append(token)
                with lock:
                    token = random.choice(created) if created else None
                if token:
                    timed("authenticate", "/v1/sessions/authenticate", {"session_token": token})

        return run

    outage: dict = {}

    def operator() -> None:
        try:
            time.sleep(3.0)
            cluster.restart()
            outage["restarted"] = time.monotonic() - started
            time.sleep(max(0.0, started + 6.0 - time.monotonic()))
            cluster.stop("fast")
            outage["stopped"] = time.monotonic() - started
            time.sleep(2.0)
            cluster.start()
            back = time.monotonic()
            outage["back"] = back - started
            while time.monotonic() < back + 5.0:
                try:
                    if server.call("GET", "/readyz", auth=None, timeout=1.0)[0] == 200:
                        outage["ready_after"] = time.monotonic() - back
                        return
                except NET_ERRORS:
                    pass
                time.sleep(0.1)
        except Exception as e:
            outage["error"] = f"{type(e).__name__}: {e}"

    operator_thread = threading.Thread(target=operator, daemon=True)
    loaders = [threading.Thread(target=load(u), daemon=True) for u in users]
    operator_thread.start()
    for t in loaders:
        t.start()
    operator_thread.join(120)
    # Load for 12 s in all, and for at least 2 s after the database is back.
    load_until = max(started + 12.0, started + outage.get("back", 0.0) + 2.0)
    time.sleep(max(0.0, load_until - time.monotonic()))
    stop.set()
    for t in loaders:
        t.join(10)

    check("error" not in outage, f"operating the cluster: {outage.get('error')}")
    check("ready_after" in outage, "/readyz not 200 within 5 s of the database's return")
    bad = [r for r in records if r[3] not in (200, 503)]
    slow = [r for r in records if r[2] > 2.0]
    timeline = (f"restart at {outage['restarted']:.1f}s, stop at {outage['stopped']:.1f}s, "
                f"back at {outage['back']:.1f}s, ready {outage['ready_after']:.1f}s later")
    statuses = tally(r[3] for r in records)

    def show(rs) -> str:
        return ", ".join(f"{k} at {at:.1f}s: {o} in {s:.1f}s" for k, at, s, o in rs[:4])

    check(not bad, f"{len(bad)} answers neither 200 nor 503 ({statuses}), e.g. {show(bad)}; {timeline}")
    check(not slow, f"{len(slow)} requests took over 2 s, e.g. {show(slow)}; {timeline}")

    # Every session whose create answered 200 is still there.
    lost: list[str] = []
    pending = list(created)
    verify_deadline = time.monotonic() + 40.0

    def verifier() -> None:
        while time.monotonic() < verify_deadline:
            with lock:
                if not pending:
                    return
                token = pending.pop()
            try:
                outcome = describe(
                    server.call("POST", "/v1/sessions/authenticate", {"session_token": token}, timeout=5.0))
            except NET_ERRORS as e:
                outcome = describe(e)
            if outcome != "200":
                with lock:
                    lost.append(outcome)

    run_threads([verifier] * 8, 50.0)
    check(not pending, f"{len(pending)} of {len(created)} sessions left unverified after 40 s")
    check(not lost, f"{len(lost)}/{len(created)} created sessions do not authenticate: {tally(lost)}; {timeline}")
    return f"{len(records)} requests ({statuses}); {len(created)} sessions all authenticate; {timeline}"


def openssl(folder: Path, *args: str) -> None:
    done = subprocess.run(["openssl", *args], cwd=folder, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise CaseFailure(f"openssl {' '.join(args[:2])} exited {done.returncode}: {done.stderr.strip()[-300:]}")


def make_certificates(folder: Path) -> dict[str, Path]:
    """A CA (EC P-256) and a server certificate it signs, for `localhost` only: CN and
    subjectAltName DNS:localhost, no IP address. The server key is readable only by the
    `postgres` user (by us when we are not root). Paths by name: ca, cert, key."""
    folder.chmod(0o755)  # the `postgres` user reads the certificate and key here
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    openssl(folder, "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=hallpass race test CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    openssl(folder, "req", "-new", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (folder / "server.ext").write_text(
        "basicConstraints = critical,CA:FALSE\n"
        "keyUsage = critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage = serverAuth\n"
        "subjectAltName = DNS:localhost\n"
    )
    openssl(folder, "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-set_serial", "0x" + secrets.token_hex(16), "-days", "2", "-extfile", "server.ext",
            "-out", "server.crt")
    (folder / "ca.key").chmod(0o600)
    key = folder / "server.key"
    if os.geteuid() == 0:
        shutil.chown(key, "postgres", "postgres")
    key.chmod(0o600)
    for name in ("ca.crt", "server.crt"):
        (folder / name).chmod(0o644)
    return {"ca": folder / "ca.crt", "cert": folder / "server.crt", "key": key}


def backend_ssl(cluster: PrivateCluster) -> list[bool]:
    """For each client connection to `cluster` but our own: whether it uses TLS."""
    out = psql("SELECT ssl FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) "
               "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()", cluster.admin_url)
    return [line.strip() == "t" for line in out.split()]


def wait_no_clients(cluster: PrivateCluster, timeout: float = 10.0) -> None:
    """Until no client but us is connected to `cluster` (what an earlier step left goes)."""
    deadline = time.monotonic() + timeout
    while backend_ssl(cluster):
        check(time.monotonic() < deadline, f"connections still open {timeout:.0f} s after their client ended")
        time.sleep(0.1)


@case
def postgres_tls(c: Case) -> str:
    """TLS to Postgres: sslmode=require encrypts every connection (pool and direct),
    verify-full checks the host name and wants a root certificate, disable does not encrypt."""
    if c.backend != "postgres":
        raise Skip("sqlite")
    tls = Path(tempfile.mkdtemp(prefix="hallpass-race-tls-"))
    c.on_close(lambda: shutil.rmtree(tls, ignore_errors=True))
    files = make_certificates(tls)
    cluster = PrivateCluster({"ssl": "on", "ssl_cert_file": str(files["cert"]), "ssl_key_file": str(files["key"])})
    c.on_close(cluster.destroy)
    cluster.init()
    cluster.start()

    def url(host: str, query: str) -> str:
        return f"postgres://postgres@{host}:{cluster.port}/postgres?{query}"

    def serve_and_look(database_url: str) -> list[bool]:
        """A server on `database_url` that has made a user, created a session and
        authenticated it (so the pool and the direct connections are open): each of its
        connections' TLS. The server is stopped, and its connections gone, afterwards."""
        wait_no_clients(cluster)
        server = c.start_server(database_url)
        try:
            token = create_session(server, create_user(server))
            authenticate(server, token)
            authenticate(server, token)
            return backend_ssl(cluster)
        finally:
            server.stop()
            wait_no_clients(cluster)

    # a. sslmode=require: every connection of the server is encrypted.
    required = serve_and_look(url("localhost", "sslmode=require"))
    check(required and all(required),
          f"sslmode=require: {len(required)} server connections, {required.count(False)} without TLS")

    # b. verify-full with the CA, host `localhost` (the certificate's name): works.
    ca = f"sslrootcert={files['ca']}"
    done, verified_in = c.run_cli(c.env(url("localhost", f"sslmode=verify-full&{ca}")), "project", "list")
    check(done.returncode == 0,
          f"verify-full with sslrootcert, host localhost: exited {done.returncode}: {done.stderr.strip()[-300:]}")

    # c. verify-full with the CA, host 127.0.0.1 (not in the certificate): refused, at once.
    done, wrong_host_in = c.run_cli(c.env(url("127.0.0.1", f"sslmode=verify-full&{ca}")), "project", "list",
                                    timeout=40)
    stderr = done.stderr.strip()
    check(done.returncode != 0, f"verify-full, host 127.0.0.1 not in the certificate: exited 0 ({wrong_host_in:.1f}s)")
    check("not valid for the host name" in stderr,
          f"verify-full, host 127.0.0.1: exited {done.returncode}, but stderr does not say the certificate is "
          f"not valid for the host name: {stderr[-300:]!r}")
    check(wrong_host_in < 10.0, f"verify-full, host 127.0.0.1: refused only after {wrong_host_in:.1f}s (10 s allowed)")

    # d. verify-full without sslrootcert: refused, and the message names sslrootcert.
    done, no_root_in = c.run_cli(c.env(url("localhost", "sslmode=verify-full")), "project", "list", timeout=40)
    stderr = done.stderr.strip()
    check(done.returncode != 0, f"verify-full without sslrootcert: exited 0 ({no_root_in:.1f}s)")
    check("sslrootcert" in stderr,
          f"verify-full without sslrootcert: exited {done.returncode}, stderr does not mention sslrootcert: "
          f"{stderr[-300:]!r}")

    # e. sslmode=disable: the server works, unencrypted.
    disabled = serve_and_look(url("localhost", "sslmode=disable"))
    check(disabled and not any(disabled),
          f"sslmode=disable: {len(disabled)} server connections, {disabled.count(True)} with TLS")

    return (f"require: {len(required)} connections all TLS; verify-full: localhost ok ({verified_in:.1f}s), "
            f"127.0.0.1 refused in {wrong_host_in:.1f}s, no sslrootcert refused in {no_root_in:.1f}s; "
            f"disable: {len(disabled)} connections, none TLS")


# ------------------------------------------------------------------------ runner


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def preflight(backend: str, binary: Path) -> str | None:
    """Why the suite cannot run, or None."""
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        return f"no hallpass binary at {binary} (build it, or pass --bin)"
    if backend == "postgres":
        if not shutil.which("psql"):
            return "psql is required for the postgres backend"
        try:
            psql("SELECT 1")
        except CaseFailure as e:
            return f"cannot reach {PG_ADMIN_URL}: {e}"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres"), required=True)
    parser.add_argument("--bin", default=str(REPO_ROOT / "target/debug/hallpass"), help="the hallpass binary")
    parser.add_argument("--only", action="append", metavar="CASE", help="run only this case (repeatable)")
    args = parser.parse_args()
    binary = Path(args.bin)
    if not binary.is_absolute():
        binary = REPO_ROOT / binary
    raise_fd_limit()
    # A SIGTERM (say, from a CI timeout) unwinds like ctrl-c, so servers and databases go.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    passed = failed = 0
    problem = preflight(args.backend, binary)
    if problem:
        print(f"FAIL setup: {problem}", flush=True)
        print("0 passed, 1 failed", flush=True)
        return 1

    suite_started = time.monotonic()
    for name, fn in CASES:
        if args.only and name not in args.only:
            continue
        c = Case(args.backend, binary)
        started = time.monotonic()
        logs: list[str] = []
        try:
            details = fn(c)
            print(f"ok {name} ({time.monotonic() - started:.1f}s) {details}", flush=True)
            passed += 1
        except Skip as e:
            print(f"skip {name} ({e})", flush=True)
        except Exception as e:
            reason = str(e) if isinstance(e, CaseFailure) else f"{type(e).__name__}: {e}"
            print(f"FAIL {name}: {reason} ({time.monotonic() - started:.1f}s)", flush=True)
            failed += 1
            if not isinstance(e, CaseFailure):  # a bug of the suite, or a reply it cannot read
                logs = ["#   " + line for line in "".join(traceback.format_exception(e)).splitlines()]
            logs += [f"#   server {i}: {line}" for i, s in enumerate(c.servers) for line in s.log_tail()]
        finally:
            c.close()
        if logs:
            print("\n".join(logs), flush=True)
    print(f"# {args.backend}: {time.monotonic() - suite_started:.1f}s", flush=True)
    print(f"{passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
