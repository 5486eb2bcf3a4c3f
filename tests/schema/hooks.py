"""schemathesis hooks of the schema suite (run.sh loads this file through SCHEMATHESIS_HOOKS).

The revocation feed's poll endpoints may wait for an event: GET /v1/sessions/revocations/
{project_id} up to `wait` seconds (0..30), and the RFC 8936 poll up to 25 s unless
`returnImmediately` is true. A request waits only when no event follows its cursor, which
the fuzzer hits now and then (a cursor equal to the newest one, or the stateful scenarios
following `next_cursor`); at 15 s per request timeout, a few such requests would fail the run
or blow its time budget. So, right before each call:

- pollRevocations: a valid `wait` of 2 to 30 becomes 0 (invalid ones, e.g. 31, -1 or "x",
  are left alone: their 400 is part of the contract; 0 and 1 too, so the long-poll's
  time-out path still runs, for a second, when the generator picks 1);
- pollSecurityEvents: a body that acknowledges a cursor and does not set `returnImmediately`
  to true gets `returnImmediately: true` (other values of the field, e.g. "x", are left
  alone for the same reason). Without an `ack` the poll returns the fixtures' events at once.

The document keeps the real ranges; only the requests are bounded.

Also, a workaround in the harness itself: schemathesis' workers are threads, and hypothesis
calls `ast.parse` (to describe filter lambdas) from all of them. CPython 3.11 keeps the AST
constructor's recursion counter per interpreter, not per thread, so two parses at once now
and then fail with `SystemError: AST constructor recursion depth mismatch` (cf.
python/cpython#106905), which schemathesis reports as a runtime error of whatever operation
it was generating. `ast.parse` is serialised here.
"""

import ast
import re
import threading

import schemathesis

_AST_LOCK = threading.RLock()
_ast_parse = ast.parse


def _serialised_parse(*args, **kwargs):
    with _AST_LOCK:
        return _ast_parse(*args, **kwargs)


ast.parse = _serialised_parse

CURSOR = re.compile(r"^\+?[0-9]+$")
FEED_POLL = "/v1/sessions/revocations/{project_id}"
SSF_POLL = "/v1/sessions/revocations/{project_id}/ssf/poll"
MAX_WAIT = 30  # the server's bound: larger values are a 400


def _seconds(value):
    """The value as the server would read a number of seconds, or None if it would refuse it."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and CURSOR.match(value):
        return int(value)
    return None


def _shorten(value):
    seconds = _seconds(value)
    if seconds is None or not 2 <= seconds <= MAX_WAIT:
        return value
    return "0" if isinstance(value, str) else 0


@schemathesis.hook
def before_call(context, case, kwargs):
    path = case.operation.path
    method = case.operation.method.upper()
    if method == "GET" and path == FEED_POLL and isinstance(case.query, dict) and "wait" in case.query:
        wait = case.query["wait"]
        if isinstance(wait, list):
            case.query["wait"] = [_shorten(w) for w in wait]
        else:
            case.query["wait"] = _shorten(wait)
    elif method == "POST" and path == SSF_POLL and isinstance(case.body, dict):
        ack = case.body.get("ack")
        acknowledges = isinstance(ack, list) and any(isinstance(a, str) and CURSOR.match(a) for a in ack)
        if acknowledges and case.body.get("returnImmediately") in (None, False):
            case.body["returnImmediately"] = True
