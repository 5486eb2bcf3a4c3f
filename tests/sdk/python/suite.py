"""Drives a running hallpass server through the official, unmodified `stytch` Python SDK.

Env: HALLPASS_URL, HALLPASS_PROJECT_ID, HALLPASS_SECRET, USERINFO_EMAIL, and for
sessions.attest ATTEST_PROFILE_ID, ATTEST_PROFILE_ID_NO_JIT, ATTEST_PRIVATE_KEY_FILE,
ATTEST_ISSUER, ATTEST_AUDIENCE.
Prints `ok - name` / `FAIL - name: reason` per check and ends with `N passed, M failed`.
Exit code 1 when any check failed. Run through tests/sdk/run.sh.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import json
import os
import re
import secrets
import sys
import time
import traceback
import uuid
from typing import Any, Callable, Optional

import jwt as pyjwt  # PyJWT, a dependency of stytch; signs the attest tokens
import stytch
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from stytch.consumer.models.sessions import AuthorizationCheck
from stytch.core.response_base import StytchError
from stytch.shared.rbac_local import RBACConsumerPermissionError


def env(name: str) -> str:
    v = os.environ.get(name)
    if not v:
        print(f"missing env {name}", file=sys.stderr)
        sys.exit(2)
    return v


BASE = env("HALLPASS_URL").rstrip("/")
PROJECT_ID = env("HALLPASS_PROJECT_ID")
SECRET = env("HALLPASS_SECRET")
USERINFO_EMAIL = env("USERINFO_EMAIL")
ATTEST_PROFILE_ID = env("ATTEST_PROFILE_ID")
ATTEST_PROFILE_ID_NO_JIT = env("ATTEST_PROFILE_ID_NO_JIT")
ATTEST_PRIVATE_KEY_FILE = env("ATTEST_PRIVATE_KEY_FILE")
ATTEST_ISSUER = env("ATTEST_ISSUER")
ATTEST_AUDIENCE = env("ATTEST_AUDIENCE")
ENV_NAME = "live" if PROJECT_ID.startswith("project-live-") else "test"

client = stytch.Client(project_id=PROJECT_ID, secret=SECRET, environment=BASE)
bad_client = stytch.Client(project_id=PROJECT_ID, secret=SECRET + "-wrong", environment=BASE)

passed = 0
failed = 0


class CheckFailure(Exception):
    pass


def check_true(cond: Any, msg: str) -> None:
    if not cond:
        raise CheckFailure(msg)


def check_eq(actual: Any, expected: Any, what: str) -> None:
    if actual != expected:
        raise CheckFailure(f"{what}: expected {expected!r}, got {actual!r}")


def check(name: str) -> Callable[[Callable[[], Any]], None]:
    """Decorator: runs the function at once as one named check."""

    def run(fn: Callable[[], Any]) -> None:
        global passed, failed
        try:
            r = fn()
            if asyncio.iscoroutine(r):
                asyncio.run(r)
            passed += 1
            print(f"ok - {name}", flush=True)
        except CheckFailure as e:
            failed += 1
            print(f"FAIL - {name}: {one_line(str(e))}", flush=True)
        except StytchError as e:
            failed += 1
            d = e.details
            print(
                f"FAIL - {name}: unexpected StytchError {d.status_code} {d.error_type}: "
                f"{one_line(d.error_message)} {one_line(str(d.original_json))}",
                flush=True,
            )
        except Exception as e:  # noqa: BLE001 - every failure is reported, none stops the run
            failed += 1
            tb = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == __file__]
            where = f" at suite.py:{tb[-1].lineno}" if tb else ""
            print(f"FAIL - {name}: {type(e).__name__}{where}: {one_line(str(e))}", flush=True)

    return run


def one_line(s: str) -> str:
    return re.sub(r"\s+", " ", s)[:600]


def expect_stytch_error(fn: Callable[[], Any], status: int, error_type: str) -> StytchError:
    try:
        res = fn()
    except StytchError as e:
        d = e.details
        check_true(
            d.status_code == status and d.error_type == error_type,
            f"expected {status} {error_type}, got {d.status_code} {d.error_type} ({d.error_message})",
        )
        check_true(isinstance(d.error_message, str) and d.error_message, "error_message empty")
        check_true(
            d.request_id.startswith(f"request-id-{ENV_NAME}-"), f"request_id {d.request_id!r}"
        )
        return e
    except CheckFailure:
        raise
    except Exception as e:  # noqa: BLE001
        raise CheckFailure(f"expected StytchError, got {type(e).__name__}: {e}") from e
    raise CheckFailure(f"expected {status} {error_type}, got success {str(res)[:300]}")


ID_RE = {
    k: re.compile(
        rf"^{k}-{ENV_NAME}-[0-9a-f]{{8}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{12}}$"
    )
    for k in ("user", "session", "email", "jwk")
}
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{44}$")


def b64url_decode(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def decode_jwt(jwt: str) -> tuple[dict, dict]:
    parts = jwt.split(".")
    check_true(len(parts) == 3, f"JWT has {len(parts)} parts")
    return json.loads(b64url_decode(parts[0])), json.loads(b64url_decode(parts[1]))


def near_minutes_from_now(ts: Optional[datetime.datetime], minutes: int, what: str) -> None:
    check_true(ts is not None, f"{what} missing")
    want = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=minutes)
    check_true(
        abs((ts - want).total_seconds()) < 120,
        f"{what}: {ts.isoformat()} is not ~{minutes} min from now ({want.isoformat()})",
    )


def session_shape(s: Any, user_id: str) -> None:
    check_true(s is not None, "session is None")
    check_true(ID_RE["session"].match(s.session_id), f"session_id {s.session_id}")
    check_eq(s.user_id, user_id, "session.user_id")
    check_true("stytch_user" in s.roles, f"roles {s.roles}")
    for f in ("started_at", "last_accessed_at", "expires_at"):
        v = getattr(s, f)
        check_true(isinstance(v, datetime.datetime) and v.utcoffset() == datetime.timedelta(0), f"{f} = {v!r}")
    check_true(s.attributes is not None, "attributes missing")
    check_true(isinstance(s.custom_claims, dict), f"custom_claims {s.custom_claims!r}")


def new_magic_link_session(user_id: str):
    ml = client.magic_links.create(user_id=user_id)
    return client.magic_links.authenticate(token=ml.token, session_duration_minutes=60)


S: dict[str, Any] = {}  # state shared between checks


def main() -> None:
    print(f"# stytch python SDK {stytch.__version__} against {BASE} (project {PROJECT_ID})")
    email = f"py-{uuid.uuid4()}@example.com"

    # ------------------------------------------------------------ users
    @check("users.create with email and name")
    def _():
        res = client.users.create(email=email, name={"first_name": "Ada", "last_name": "Lovelace"})
        check_eq(res.status_code, 200, "status_code")
        check_true(ID_RE["user"].match(res.user_id), f"user_id {res.user_id}")
        check_true(ID_RE["email"].match(res.email_id), f"email_id {res.email_id}")
        check_eq(res.phone_id, "", "phone_id")
        check_eq(res.status, "active", "status")
        check_eq(res.user.user_id, res.user_id, "user.user_id")
        check_eq([e.email for e in res.user.emails], [email], "user.emails")
        S["user_id"] = res.user_id

    @check("users.get returns the user")
    def _():
        res = client.users.get(user_id=S["user_id"])
        check_eq(res.status_code, 200, "status_code")
        check_eq(res.user_id, S["user_id"], "user_id")
        check_eq([e.email for e in res.emails], [email], "emails")
        check_eq(res.name.first_name, "Ada", "name.first_name")
        check_eq(res.name.last_name, "Lovelace", "name.last_name")
        check_eq(res.status, "active", "status")
        check_eq(res.is_locked, False, "is_locked")
        check_true("stytch_user" in res.roles, f"roles {res.roles}")
        check_true(res.created_at is not None, "created_at")
        check_eq(res.phone_numbers, [], "phone_numbers")

    @check("users.get unknown user -> 404 user_not_found")
    def _():
        expect_stytch_error(
            lambda: client.users.get(user_id=f"user-{ENV_NAME}-{uuid.uuid4()}"), 404, "user_not_found"
        )

    # ------------------------------------------------------------ magic links
    @check("magic_links.create + authenticate starts a session")
    def _():
        ml = client.magic_links.create(user_id=S["user_id"])
        check_eq(ml.status_code, 200, "create status_code")
        check_eq(ml.user_id, S["user_id"], "create user_id")
        check_true(len(ml.token) >= 20, f"token {ml.token!r}")
        res = client.magic_links.authenticate(token=ml.token, session_duration_minutes=60)
        check_eq(res.status_code, 200, "status_code")
        check_eq(res.user_id, S["user_id"], "user_id")
        check_eq(res.reset_sessions, False, "reset_sessions")
        check_true(TOKEN_RE.match(res.session_token), f"session_token {res.session_token!r}")
        session_shape(res.session, S["user_id"])
        near_minutes_from_now(res.session.expires_at, 60, "expires_at")
        f = res.session.authentication_factors
        check_eq(len(f), 1, "factors")
        check_eq((f[0].type.value, f[0].delivery_method.value), ("magic_link", "embedded"), "factor")
        check_true(f[0].embeddable_magic_link_factor is not None, "embeddable_magic_link_factor missing")
        check_eq(res.session.custom_claims, {}, "custom_claims")
        S["first"] = res
        S["token"] = res.session_token
        S["session_id"] = res.session.session_id
        S["jwt"] = res.session_jwt
        expect_stytch_error(
            lambda: client.magic_links.authenticate(token=ml.token, session_duration_minutes=60),
            404,
            "magic_link_not_found",
        )

    @check("magic_links.authenticate without duration starts no session")
    def _():
        ml = client.magic_links.create(user_id=S["user_id"])
        res = client.magic_links.authenticate(token=ml.token)
        check_eq(res.status_code, 200, "status_code")
        check_eq(res.session, None, "session")
        check_eq(res.session_token, "", "session_token")
        check_eq(res.session_jwt, "", "session_jwt")

    # ------------------------------------------------------------ sessions.authenticate
    @check("sessions.authenticate by token without duration keeps expires_at")
    def _():
        time.sleep(1.1)
        first = S["first"]
        res = client.sessions.authenticate(session_token=S["token"])
        check_eq(res.status_code, 200, "status_code")
        check_eq(res.session_token, S["token"], "session_token unchanged")
        check_eq(res.session.session_id, S["session_id"], "session_id")
        check_eq(res.session.expires_at, first.session.expires_at, "expires_at")
        check_true(
            res.session.last_accessed_at > first.session.last_accessed_at,
            f"last_accessed_at did not advance: {first.session.last_accessed_at} -> {res.session.last_accessed_at}",
        )
        check_eq(res.user.user_id, S["user_id"], "user.user_id")
        S["jwt"] = res.session_jwt

    @check("sessions.authenticate by token with session_duration_minutes sets expires_at")
    def _():
        res = client.sessions.authenticate(session_token=S["token"], session_duration_minutes=120)
        near_minutes_from_now(res.session.expires_at, 120, "expires_at")
        res = client.sessions.authenticate(session_token=S["token"], session_duration_minutes=30)
        near_minutes_from_now(res.session.expires_at, 30, "expires_at after shortening")

    @check("custom claims set; reserved names ignored")
    def _():
        res = client.sessions.authenticate(
            session_token=S["token"],
            session_custom_claims={
                "plan": "pro",
                "org": {"id": "o1", "tier": 1},
                "iss": "evil",
                "sub": "evil",
                "https://stytch.com/x": 1,
            },
        )
        check_eq(res.session.custom_claims, {"plan": "pro", "org": {"id": "o1", "tier": 1}}, "custom_claims")
        _, payload = decode_jwt(res.session_jwt)
        check_eq(payload["iss"], f"stytch.com/{PROJECT_ID}", "jwt iss")
        check_eq(payload["sub"], S["user_id"], "jwt sub")
        check_eq(payload.get("plan"), "pro", "jwt plan")
        check_true("https://stytch.com/x" not in payload, "reserved claim leaked into JWT")

    @check("custom claims nested merge update")
    def _():
        res = client.sessions.authenticate(
            session_token=S["token"], session_custom_claims={"org": {"tier": 2, "region": "eu"}}
        )
        check_eq(
            res.session.custom_claims,
            {"plan": "pro", "org": {"id": "o1", "tier": 2, "region": "eu"}},
            "custom_claims",
        )

    @check("custom claims deleted with null (top level and nested)")
    def _():
        res = client.sessions.authenticate(
            session_token=S["token"], session_custom_claims={"plan": None, "org": {"region": None}}
        )
        check_eq(res.session.custom_claims, {"org": {"id": "o1", "tier": 2}}, "custom_claims")
        again = client.sessions.authenticate(session_token=S["token"])
        check_eq(again.session.custom_claims, {"org": {"id": "o1", "tier": 2}}, "custom_claims persisted")
        S["jwt"] = again.session_jwt

    @check("custom claims over 4096 bytes -> 400 custom_claims_too_large")
    def _():
        expect_stytch_error(
            lambda: client.sessions.authenticate(
                session_token=S["token"], session_custom_claims={"big": "x" * 5000}
            ),
            400,
            "custom_claims_too_large",
        )
        res = client.sessions.authenticate(session_token=S["token"])
        check_eq(res.session.custom_claims, {"org": {"id": "o1", "tier": 2}}, "custom_claims unchanged")

    @check("session JWT header and claims match the contract")
    def _():
        header, payload = decode_jwt(S["jwt"])
        check_eq(sorted(header), ["alg", "kid", "typ"], "header keys")
        check_eq((header["alg"], header["typ"]), ("RS256", "JWT"), "alg/typ")
        check_true(ID_RE["jwk"].match(header["kid"]), f"kid {header['kid']}")
        check_eq(payload["aud"], [PROJECT_ID], "aud")
        check_true(payload["iat"] == payload["nbf"], "iat != nbf")
        check_true(0 < payload["exp"] - payload["iat"] <= 300, "exp - iat not in (0, 300]")
        check_true("jti" not in payload, "jti present")
        sc = payload["https://stytch.com/session"]
        check_eq(
            sorted(sc),
            sorted(["id", "started_at", "last_accessed_at", "expires_at", "attributes", "authentication_factors", "roles"]),
            "session claim keys",
        )
        check_eq(sc["id"], S["session_id"], "session claim id")

    @check("sessions.authenticate by session_jwt")
    def _():
        res = client.sessions.authenticate(session_jwt=S["jwt"])
        check_eq(res.status_code, 200, "status_code")
        check_eq(res.session.session_id, S["session_id"], "session_id")
        check_eq(res.session_token, "", "session_token")
        check_true(res.session_jwt.count(".") == 2, "session_jwt")
        check_eq(res.session.custom_claims, {"org": {"id": "o1", "tier": 2}}, "custom_claims")
        S["jwt"] = res.session_jwt

    @check("sessions.get lists the active session")
    def _():
        res = client.sessions.get(user_id=S["user_id"])
        check_eq(res.status_code, 200, "status_code")
        found = [s for s in res.sessions if s.session_id == S["session_id"]]
        check_true(found, f"session not in {[s.session_id for s in res.sessions]}")
        session_shape(found[0], S["user_id"])

    @check("sessions.get unknown user -> 404 user_not_found")
    def _():
        expect_stytch_error(
            lambda: client.sessions.get(user_id=f"user-{ENV_NAME}-{uuid.uuid4()}"), 404, "user_not_found"
        )

    # ------------------------------------------------------------ JWKS
    @check("sessions.get_jwks returns complete keys")
    def _():
        res = client.sessions.get_jwks(project_id=PROJECT_ID)
        check_eq(res.status_code, 200, "status_code")
        check_true(res.keys, "no keys")
        for k in res.keys:
            check_eq((k.kty, k.use, k.alg, k.key_ops), ("RSA", "sig", "RS256", ["verify"]), "kty/use/alg/key_ops")
            check_true(ID_RE["jwk"].match(k.kid), f"kid {k.kid}")
            der = base64.b64decode(k.x5c[0])
            check_eq(k.x5tS256, b64url(hashlib.sha256(der).digest()), "x5tS256")
            cert = x509.load_der_x509_certificate(der)
            nums = cert.public_key().public_numbers()
            check_eq(nums.n, int.from_bytes(b64url_decode(k.n), "big"), "certificate modulus = n")
            check_eq(nums.e, int.from_bytes(b64url_decode(k.e), "big"), "certificate exponent = e")
            check_eq(nums.n.bit_length(), 2048, "modulus bits")
        header, _ = decode_jwt(S["jwt"])
        check_true(any(k.kid == header["kid"] for k in res.keys), "JWT kid not in JWKS")

    # ------------------------------------------------------------ local JWT verification
    @check("sessions.authenticate_jwt_local verifies a fresh JWT and returns session fields")
    def _():
        fresh = client.sessions.authenticate(session_token=S["token"])
        S["jwt"] = fresh.session_jwt
        s = client.sessions.authenticate_jwt_local(S["jwt"], max_token_age_seconds=60)
        check_true(s is not None, "local verification failed (None)")
        check_eq(s.session_id, S["session_id"], "session_id")
        check_eq(s.user_id, S["user_id"], "user_id")
        check_eq(s.custom_claims, {"org": {"id": "o1", "tier": 2}}, "custom_claims")
        check_eq(s.started_at, fresh.session.started_at, "started_at")
        check_eq(s.last_accessed_at, fresh.session.last_accessed_at, "last_accessed_at")
        check_eq(s.expires_at, fresh.session.expires_at, "expires_at")
        check_eq(s.roles, fresh.session.roles, "roles")
        check_eq(s.attributes, fresh.session.attributes, "attributes")
        check_eq(s.authentication_factors, fresh.session.authentication_factors, "authentication_factors")

    @check("sessions.authenticate_jwt_local rejects a token older than max_token_age_seconds")
    def _():
        check_eq(client.sessions.authenticate_jwt_local(S["jwt"], max_token_age_seconds=0), None, "max age 0")
        time.sleep(2.1)
        check_eq(client.sessions.authenticate_jwt_local(S["jwt"], max_token_age_seconds=2), None, "max age 2 after 2 s")
        s = client.sessions.authenticate_jwt_local(S["jwt"], max_token_age_seconds=300)
        check_true(s is not None and s.session_id == S["session_id"], "generous max age rejected")

    @check("sessions.authenticate_jwt_local rejects a tampered JWT")
    def _():
        h, p, sig = S["jwt"].split(".")
        payload = json.loads(b64url_decode(p))
        payload["org"] = {"id": "evil"}
        forged = f"{h}.{b64url(json.dumps(payload).encode())}.{sig}"
        check_eq(client.sessions.authenticate_jwt_local(forged), None, "forged JWT accepted locally")
        expect_stytch_error(
            lambda: client.sessions.authenticate(session_jwt=forged), 401, "unable_to_parse_session_jwt"
        )

    # ------------------------------------------------------------ authenticate_jwt
    @check("sessions.authenticate_jwt uses the local path for a fresh JWT")
    def _():
        fresh = client.sessions.authenticate(session_token=S["token"])
        res = client.sessions.authenticate_jwt(fresh.session_jwt, max_token_age_seconds=60)
        check_eq(res.request_id, "", "request_id (local answers have none)")
        check_eq(res.session_jwt, fresh.session_jwt, "session_jwt echoed")
        check_eq(res.session.session_id, S["session_id"], "session_id")
        check_eq(res.session.custom_claims, {"org": {"id": "o1", "tier": 2}}, "custom_claims")
        S["jwt"] = fresh.session_jwt

    @check("sessions.authenticate_jwt falls back to the API for a too-old JWT")
    def _():
        time.sleep(1.1)
        res = client.sessions.authenticate_jwt(
            S["jwt"], max_token_age_seconds=1, session_custom_claims={"via": "remote"}
        )
        check_eq(res.status_code, 200, "status_code")
        check_true(res.request_id.startswith(f"request-id-{ENV_NAME}-"), f"request_id {res.request_id!r} (not remote)")
        check_eq(res.session.session_id, S["session_id"], "session_id")
        check_true(res.session_jwt and res.session_jwt != S["jwt"], "no new JWT minted")
        check_eq(res.session.custom_claims, {"org": {"id": "o1", "tier": 2}, "via": "remote"}, "custom_claims applied remotely")
        _, payload = decode_jwt(res.session_jwt)
        check_eq(payload.get("via"), "remote", "new JWT carries the claim")
        S["jwt"] = res.session_jwt

    @check("sessions.authenticate_jwt with max_token_age_seconds 0 forces the API")
    def _():
        res = client.sessions.authenticate_jwt(S["jwt"], max_token_age_seconds=0)
        check_true(res.request_id.startswith(f"request-id-{ENV_NAME}-"), f"request_id {res.request_id!r} (not remote)")
        check_eq(res.session.session_id, S["session_id"], "session_id")

    @check("async client: authenticate_async + authenticate_jwt_local_async")
    async def _():
        try:
            res = await client.sessions.authenticate_async(session_token=S["token"])
            check_eq(res.session.session_id, S["session_id"], "session_id")
            s = await client.sessions.authenticate_jwt_local_async(res.session_jwt, max_token_age_seconds=60)
            check_true(s is not None and s.session_id == S["session_id"], "local async verification failed")
            await expect_stytch_error_async(
                client.sessions.authenticate_async(session_token=S["token"], session_duration_minutes=4),
                400,
                "invalid_session_duration_minutes",
            )
        finally:
            await client.close()

    # ------------------------------------------------------------ revoke
    @check("sessions.revoke by session_id")
    def _():
        s = new_magic_link_session(S["user_id"])
        res = client.sessions.revoke(session_id=s.session.session_id)
        check_eq(res.status_code, 200, "status_code")
        expect_stytch_error(lambda: client.sessions.authenticate(session_token=s.session_token), 404, "session_not_found")
        expect_stytch_error(lambda: client.sessions.revoke(session_id=s.session.session_id), 404, "session_not_found")
        listed = client.sessions.get(user_id=S["user_id"]).sessions
        check_true(all(x.session_id != s.session.session_id for x in listed), "revoked session still listed")

    @check("sessions.revoke by session_token")
    def _():
        s = new_magic_link_session(S["user_id"])
        res = client.sessions.revoke(session_token=s.session_token)
        check_eq(res.status_code, 200, "status_code")
        expect_stytch_error(lambda: client.sessions.authenticate(session_token=s.session_token), 404, "session_not_found")
        expect_stytch_error(lambda: client.sessions.authenticate(session_jwt=s.session_jwt), 404, "session_not_found")

    @check("sessions.revoke by session_jwt; JWT still verifies locally, API rejects it")
    def _():
        s = new_magic_link_session(S["user_id"])
        res = client.sessions.revoke(session_jwt=s.session_jwt)
        check_eq(res.status_code, 200, "status_code")
        expect_stytch_error(lambda: client.sessions.authenticate(session_token=s.session_token), 404, "session_not_found")
        expect_stytch_error(lambda: client.sessions.authenticate(session_jwt=s.session_jwt), 404, "session_not_found")
        local = client.sessions.authenticate_jwt_local(s.session_jwt)
        check_true(local is not None and local.session_id == s.session.session_id, "local verification failed")
        expect_stytch_error(
            lambda: client.sessions.authenticate_jwt(s.session_jwt, max_token_age_seconds=0), 404, "session_not_found"
        )

    @check("sessions.revoke argument errors")
    def _():
        expect_stytch_error(lambda: client.sessions.revoke(), 400, "no_session_revoke_arguments")
        expect_stytch_error(
            lambda: client.sessions.revoke(session_id=S["session_id"], session_jwt=S["jwt"]),
            400,
            "too_many_session_revoke_arguments",
        )
        expect_stytch_error(lambda: client.sessions.revoke(session_id="not-a-session-id"), 400, "invalid_session_id")
        expect_stytch_error(
            lambda: client.sessions.revoke(session_id=f"session-{ENV_NAME}-{uuid.uuid4()}"), 404, "session_not_found"
        )
        res = client.sessions.authenticate(session_token=S["token"])
        check_eq(res.session.session_id, S["session_id"], "main session untouched")

    # ------------------------------------------------------------ typed errors
    @check("bad secret -> 401 unauthorized_credentials")
    def _():
        expect_stytch_error(lambda: bad_client.sessions.authenticate(session_token=S["token"]), 401, "unauthorized_credentials")
        expect_stytch_error(lambda: bad_client.users.get(user_id=S["user_id"]), 401, "unauthorized_credentials")

    @check("unknown session token -> 404 session_not_found")
    def _():
        bogus = b64url(secrets.token_bytes(33))
        expect_stytch_error(lambda: client.sessions.authenticate(session_token=bogus), 404, "session_not_found")

    @check("session_duration_minutes 4 -> 400 invalid_session_duration_minutes")
    def _():
        expect_stytch_error(
            lambda: client.sessions.authenticate(session_token=S["token"], session_duration_minutes=4),
            400,
            "invalid_session_duration_minutes",
        )

    @check("session_duration_minutes bounds: 5 and 527040 accepted, 527041 rejected")
    def _():
        lo = client.sessions.authenticate(session_token=S["token"], session_duration_minutes=5)
        near_minutes_from_now(lo.session.expires_at, 5, "expires_at for 5")
        hi = client.sessions.authenticate(session_token=S["token"], session_duration_minutes=527040)
        near_minutes_from_now(hi.session.expires_at, 527040, "expires_at for 527040")
        expect_stytch_error(
            lambda: client.sessions.authenticate(session_token=S["token"], session_duration_minutes=527041),
            400,
            "invalid_session_duration_minutes",
        )
        client.sessions.authenticate(session_token=S["token"], session_duration_minutes=60)

    @check("both token and JWT -> 400 too_many_session_arguments")
    def _():
        expect_stytch_error(
            lambda: client.sessions.authenticate(session_token=S["token"], session_jwt=S["jwt"]),
            400,
            "too_many_session_arguments",
        )

    @check("neither token nor JWT -> 400 no_session_arguments")
    def _():
        expect_stytch_error(lambda: client.sessions.authenticate(), 400, "no_session_arguments")

    # ------------------------------------------------------------ more users / magic links
    @check("users.update name and metadata")
    def _():
        res = client.users.update(
            user_id=S["user_id"],
            name={"first_name": "Augusta", "last_name": "King"},
            trusted_metadata={"tier": "gold"},
            untrusted_metadata={"theme": "dark"},
        )
        check_eq(res.status_code, 200, "status_code")
        check_eq(res.user_id, S["user_id"], "user_id")
        check_eq([e.email for e in res.emails], [email], "emails")
        check_eq(res.user.name.first_name, "Augusta", "user.name.first_name")
        got = client.users.get(user_id=S["user_id"])
        check_eq((got.name.first_name, got.name.last_name), ("Augusta", "King"), "name after update")
        check_eq(got.trusted_metadata, {"tier": "gold"}, "trusted_metadata")
        check_eq(got.untrusted_metadata, {"theme": "dark"}, "untrusted_metadata")

    @check("users.create invalid email -> 400 invalid_email")
    def _():
        expect_stytch_error(lambda: client.users.create(email="not-an-email"), 400, "invalid_email")

    @check("magic_links.create unknown user -> 404 user_not_found")
    def _():
        expect_stytch_error(
            lambda: client.magic_links.create(user_id=f"user-{ENV_NAME}-{uuid.uuid4()}"), 404, "user_not_found"
        )

    @check("users.delete unknown user -> 404 user_not_found")
    def _():
        expect_stytch_error(
            lambda: client.users.delete(user_id=f"user-{ENV_NAME}-{uuid.uuid4()}"), 404, "user_not_found"
        )

    @check("magic_links.authenticate with session_custom_claims")
    def _():
        ml = client.magic_links.create(user_id=S["user_id"])
        res = client.magic_links.authenticate(
            token=ml.token, session_duration_minutes=60, session_custom_claims={"k": "v", "exp": 1}
        )
        check_eq(res.session.custom_claims, {"k": "v"}, "custom_claims")
        _, payload = decode_jwt(res.session_jwt)
        check_eq(payload.get("k"), "v", "jwt claim k")
        check_true(payload["exp"] != 1, "reserved exp overridden")
        client.sessions.revoke(session_id=res.session.session_id)

    @check("magic_links.authenticate with session_token adds the factor to that session")
    def _():
        s = new_magic_link_session(S["user_id"])
        ml = client.magic_links.create(user_id=S["user_id"])
        res = client.magic_links.authenticate(token=ml.token, session_token=s.session_token)
        check_eq(res.status_code, 200, "status_code")
        check_true(res.session is not None, "no session in the answer")
        check_eq(res.session.session_id, s.session.session_id, "session_id (no new session)")
        check_eq(res.session_token, s.session_token, "session_token unchanged")
        ml2 = client.magic_links.create(user_id=S["user_id"])
        res2 = client.magic_links.authenticate(token=ml2.token, session_jwt=s.session_jwt)
        check_true(res2.session is not None, "no session in the answer (by JWT)")
        check_eq(res2.session.session_id, s.session.session_id, "session_id via session_jwt")
        client.sessions.revoke(session_id=s.session.session_id)

    @check("external_id works wherever a user_id is taken; sessions.get newest first")
    def _():
        ext = f"ext-{uuid.uuid4()}"
        created = client.users.create(email=f"py-ext-{uuid.uuid4()}@example.com", external_id=ext)
        got = client.users.get(user_id=ext)
        check_eq(got.user_id, created.user_id, "users.get by external_id")
        s1 = new_magic_link_session(ext)
        check_eq(s1.session.user_id, created.user_id, "session.user_id is the real user_id")
        time.sleep(1.1)
        s2 = new_magic_link_session(ext)
        listed = client.sessions.get(user_id=ext).sessions
        check_eq(
            [x.session_id for x in listed], [s2.session.session_id, s1.session.session_id], "sessions newest first"
        )
        check_eq(client.users.delete(user_id=ext).status_code, 200, "users.delete by external_id")
        expect_stytch_error(lambda: client.users.get(user_id=created.user_id), 404, "user_not_found")

    @check("get_jwks answers whatever credentials are sent")
    def _():
        res = bad_client.sessions.get_jwks(project_id=PROJECT_ID)
        check_eq(res.status_code, 200, "status_code")
        check_true(res.keys, "keys")

    # ------------------------------------------------------------ RBAC (policy.json, set by run.sh)
    policy_path = os.environ.get("HALLPASS_RBAC_POLICY_FILE") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "policy.json"
    )
    with open(policy_path) as f:
        policy_file = json.load(f)

    def sort_by(xs: list, k: str) -> list:
        return sorted(xs, key=lambda x: x[k])

    def claim_roles(jwt: str) -> list:
        return decode_jwt(jwt)[1]["https://stytch.com/session"]["roles"]

    def ac(resource_id: str, action: str) -> AuthorizationCheck:
        return AuthorizationCheck(resource_id=resource_id, action=action)

    # Checks that no role of an editor (stytch_user + editor) grants.
    editor_denied = [
        ("billing", "refund"),
        ("billing", "read"),
        ("documents", "delete"),
        ("no_such_resource", "read"),
        ("documents", "no_such_action"),
    ]

    def expect_denied(fn: Callable[[], Any], what: str) -> StytchError:
        try:
            return expect_stytch_error(fn, 403, "consumer_session_authorization_error")
        except CheckFailure as e:
            raise CheckFailure(f"{what}: {e}") from e

    def expect_local_denied(fn: Callable[[], Any], what: str) -> None:
        try:
            res = fn()
        except RBACConsumerPermissionError:
            return
        except Exception as e:  # noqa: BLE001
            raise CheckFailure(f"{what}: expected RBACConsumerPermissionError, got {type(e).__name__}: {e}") from e
        raise CheckFailure(f"{what}: expected RBACConsumerPermissionError, got success {str(res)[:300]}")

    @check("rbac.policy returns the policy set with `hallpass rbac set`")
    def _():
        res = client.rbac.policy()
        check_eq(res.status_code, 200, "status_code")
        check_true(res.request_id.startswith(f"request-id-{ENV_NAME}-"), f"request_id {res.request_id!r}")
        check_true(res.policy is not None, "no policy")
        p = res.policy.model_dump()
        ids = [r["role_id"] for r in p["roles"]]
        check_true("stytch_user" in ids and "editor" in ids, f"role ids {ids}")
        check_eq(sort_by(p["roles"], "role_id"), sort_by(policy_file["roles"], "role_id"), "roles")
        check_eq(sort_by(p["resources"], "resource_id"), sort_by(policy_file["resources"], "resource_id"), "resources")
        check_eq(sort_by(p["scopes"], "scope"), sort_by(policy_file["scopes"], "scope"), "scopes")

    @check("users.create with roles [editor]: user, session and JWT carry stytch_user + editor")
    def _():
        res = client.users.create(email=f"py-editor-{uuid.uuid4()}@example.com", roles=["editor"])
        check_eq(res.status_code, 200, "status_code")
        check_eq(res.user.roles, ["stytch_user", "editor"], "user.roles")
        S["editor_id"] = res.user_id
        check_eq(client.users.get(user_id=res.user_id).roles, ["stytch_user", "editor"], "users.get roles")
        s = new_magic_link_session(res.user_id)
        check_eq(s.session.roles, ["stytch_user", "editor"], "session.roles")
        check_eq(s.user.roles, ["stytch_user", "editor"], "authenticate user.roles")
        check_eq(claim_roles(s.session_jwt), ["stytch_user", "editor"], "JWT session claim roles")
        S["ed"] = s

    @check("users.create with an unknown role -> 400 bad_request naming it; nothing stored")
    def _():
        em = f"py-badrole-{uuid.uuid4()}@example.com"
        err = expect_stytch_error(lambda: client.users.create(email=em, roles=["editor", "no_such_role"]), 400, "bad_request")
        check_true("no_such_role" in err.details.error_message, f"error_message does not name the role: {err.details.error_message}")
        again = client.users.create(email=em)  # the email is still free
        check_eq(again.user.roles, ["stytch_user"], "roles of a user created without roles")
        client.users.delete(user_id=again.user_id)

    @check("sessions.authenticate with a granted authorization_check -> verdict with granting_roles")
    def _():
        ed = S["ed"]
        w = client.sessions.authenticate(session_token=ed.session_token, authorization_check=ac("documents", "write"))
        check_eq(w.status_code, 200, "status_code")
        check_eq(w.session.session_id, ed.session.session_id, "session_id")
        check_true(w.verdict is not None, "no verdict")
        check_eq((w.verdict.authorized, w.verdict.granting_roles), (True, ["editor"]), "documents/write verdict")
        # a plain dict is sent as is, too
        r = client.sessions.authenticate(
            session_jwt=ed.session_jwt, authorization_check={"resource_id": "documents", "action": "read"}
        )
        check_true(r.verdict is not None and r.verdict.authorized, f"documents/read verdict {r.verdict}")
        check_eq(sorted(r.verdict.granting_roles), ["editor", "stytch_user"], "documents/read granting_roles (by JWT)")
        d = client.sessions.authenticate(
            session_token=ed.session_token, session_duration_minutes=90, authorization_check=ac("documents", "write")
        )
        check_true(d.verdict is not None and d.verdict.authorized, "authorized with session_duration_minutes")
        near_minutes_from_now(d.session.expires_at, 90, "expires_at (granted call applies the duration)")
        u = client.sessions.authenticate(session_token=S["token"], authorization_check=ac("documents", "read"))
        check_true(u.verdict is not None, "no verdict for the stytch_user-only session")
        check_eq((u.verdict.authorized, u.verdict.granting_roles), (True, ["stytch_user"]), "stytch_user-only documents/read")

    @check("sessions.authenticate with a denied authorization_check -> 403 consumer_session_authorization_error")
    def _():
        ed = S["ed"]
        for how, kw in (("token", {"session_token": ed.session_token}), ("JWT", {"session_jwt": ed.session_jwt})):
            for rid, act in editor_denied:
                expect_denied(
                    lambda: client.sessions.authenticate(**kw, authorization_check=ac(rid, act)),
                    f"editor by {how}, {rid}/{act}",
                )
        expect_denied(
            lambda: client.sessions.authenticate(session_token=S["token"], authorization_check=ac("documents", "write")),
            "stytch_user-only session, documents/write",
        )

    @check("a denied sessions.authenticate applies neither session_duration_minutes nor session_custom_claims")
    def _():
        ed = S["ed"]
        before = client.sessions.authenticate(session_token=ed.session_token)
        time.sleep(1.1)
        expect_denied(
            lambda: client.sessions.authenticate(
                session_token=ed.session_token,
                session_duration_minutes=240,
                session_custom_claims={"denied": True},
                authorization_check=ac("billing", "refund"),
            ),
            "by token with duration and claims",
        )
        expect_denied(
            lambda: client.sessions.authenticate(
                session_jwt=before.session_jwt,
                session_duration_minutes=300,
                session_custom_claims={"denied": 2},
                authorization_check=ac("no_such_resource", "read"),
            ),
            "by JWT with duration and claims",
        )
        after = client.sessions.authenticate(session_token=ed.session_token)
        check_eq(after.session.expires_at, before.session.expires_at, "expires_at")
        check_eq(after.session.custom_claims, before.session.custom_claims, "custom_claims")
        check_true("denied" not in decode_jwt(after.session_jwt)[1], "a denied call's claim reached the JWT")

    @check("malformed authorization_check -> 400 bad_request")
    def _():
        bad: list[Any] = [
            {},
            {"resource_id": "documents"},
            {"action": "read"},
            {"resource_id": "documents", "action": 5},
            {"resource_id": 7, "action": "read"},
            {"resource_id": "documents", "action": None},
        ]
        for c in bad:
            try:
                expect_stytch_error(
                    lambda: client.sessions.authenticate(session_token=S["ed"].session_token, authorization_check=c),
                    400,
                    "bad_request",
                )
            except CheckFailure as e:
                raise CheckFailure(f"authorization_check {c!r}: {e}") from e

    @check("sessions.authenticate_jwt_local with authorization_check: granted -> Session, denied -> RBACConsumerPermissionError")
    def _():
        ed = S["ed"]
        fresh = client.sessions.authenticate(session_token=ed.session_token)
        S["ed_jwt"] = fresh.session_jwt  # for the two checks below
        s = client.sessions.authenticate_jwt_local(fresh.session_jwt, authorization_check=ac("documents", "write"))
        check_true(s is not None, "local verification failed (None)")
        check_eq(s.session_id, ed.session.session_id, "session_id")
        check_eq(s.roles, ["stytch_user", "editor"], "roles")
        r = client.sessions.authenticate_jwt_local(fresh.session_jwt, authorization_check=ac("documents", "read"))
        check_true(r is not None and r.session_id == ed.session.session_id, "documents/read refused locally")
        for rid, act in editor_denied:
            expect_local_denied(
                lambda: client.sessions.authenticate_jwt_local(fresh.session_jwt, authorization_check=ac(rid, act)),
                f"{rid}/{act}",
            )

    @check("SDK behaviour (stytch-python 15.3.0): sync authenticate_jwt skips a local authorization_check")
    def _():
        # Not a hallpass property: the sync helper verifies the JWT locally without the check
        # (fail-open in the SDK); with max_token_age_seconds=0 it asks the API, which refuses.
        res = client.sessions.authenticate_jwt(S["ed_jwt"], authorization_check=ac("billing", "refund"))
        check_eq(res.request_id, "", "request_id (answered locally, the check was not applied)")
        check_eq(res.session.session_id, S["ed"].session.session_id, "session_id")
        expect_denied(
            lambda: client.sessions.authenticate_jwt(
                S["ed_jwt"], max_token_age_seconds=0, authorization_check=ac("billing", "refund")
            ),
            "authenticate_jwt remote path, billing/refund",
        )
        ok = client.sessions.authenticate_jwt(S["ed_jwt"], max_token_age_seconds=0, authorization_check=ac("documents", "write"))
        check_true(ok.request_id.startswith(f"request-id-{ENV_NAME}-"), f"request_id {ok.request_id!r} (not remote)")
        check_eq(ok.session.session_id, S["ed"].session.session_id, "session_id (remote, granted)")

    @check("async: authenticate_jwt_async / authenticate_jwt_local_async apply the check locally (fresh client)")
    async def _():
        # A fresh client, so the policy is fetched through the async HTTP client.
        aclient = stytch.Client(project_id=PROJECT_ID, secret=SECRET, environment=BASE)
        try:
            ok = await aclient.sessions.authenticate_jwt_async(S["ed_jwt"], authorization_check=ac("documents", "write"))
            check_eq(ok.request_id, "", "request_id (answered locally)")
            check_eq(ok.session.session_id, S["ed"].session.session_id, "session_id")
            s = await aclient.sessions.authenticate_jwt_local_async(S["ed_jwt"], authorization_check=ac("documents", "read"))
            check_true(s is not None and s.roles == ["stytch_user", "editor"], f"local async session {s}")
            for rid, act in editor_denied:
                for name, coro in (
                    ("authenticate_jwt_async", lambda: aclient.sessions.authenticate_jwt_async(S["ed_jwt"], authorization_check=ac(rid, act))),
                    ("authenticate_jwt_local_async", lambda: aclient.sessions.authenticate_jwt_local_async(S["ed_jwt"], authorization_check=ac(rid, act))),
                ):
                    try:
                        res = await coro()
                    except RBACConsumerPermissionError:
                        continue
                    raise CheckFailure(f"{name} {rid}/{act}: expected RBACConsumerPermissionError, got {str(res)[:300]}")
            await expect_stytch_error_async(
                aclient.sessions.authenticate_async(session_token=S["ed"].session_token, authorization_check=ac("billing", "refund")),
                403,
                "consumer_session_authorization_error",
            )
            pol = await aclient.rbac.policy_async()
            check_true(pol.policy is not None and any(r.role_id == "editor" for r in pol.policy.roles), "policy_async")
        finally:
            await aclient.close()

    @check("users.update roles [billing_admin] replaces editor and reaches the next session and JWT")
    def _():
        ed = S["ed"]
        old_jwt = client.sessions.authenticate(session_token=ed.session_token).session_jwt
        upd = client.users.update(user_id=S["editor_id"], roles=["billing_admin"])
        check_eq(upd.status_code, 200, "status_code")
        check_eq(upd.user.roles, ["stytch_user", "billing_admin"], "users.update user.roles")
        check_eq(client.users.get(user_id=S["editor_id"]).roles, ["stytch_user", "billing_admin"], "users.get roles")
        res = client.sessions.authenticate(session_token=ed.session_token)
        check_eq(res.session.roles, ["stytch_user", "billing_admin"], "session.roles on the next authenticate")
        check_eq(claim_roles(res.session_jwt), ["stytch_user", "billing_admin"], "new JWT session claim roles")
        local = client.sessions.authenticate_jwt_local(res.session_jwt, authorization_check=ac("billing", "refund"))
        check_true(local is not None, "new JWT refused locally")
        check_eq(local.roles, ["stytch_user", "billing_admin"], "local roles")
        expect_local_denied(
            lambda: client.sessions.authenticate_jwt_local(res.session_jwt, authorization_check=ac("documents", "write")),
            "documents/write with the new JWT",
        )
        # The API judges by the user's roles now, even for a JWT minted before the update ...
        v = client.sessions.authenticate(session_jwt=old_jwt, authorization_check=ac("billing", "refund"))
        check_true(v.verdict is not None, "no verdict")
        check_eq((v.verdict.authorized, v.verdict.granting_roles), (True, ["billing_admin"]), "billing/refund with the pre-update JWT")
        check_eq(claim_roles(v.session_jwt), ["stytch_user", "billing_admin"], "JWT minted from the pre-update JWT")
        expect_denied(
            lambda: client.sessions.authenticate(session_jwt=old_jwt, authorization_check=ac("documents", "write")),
            "documents/write with the pre-update JWT after editor was removed",
        )
        # ... while the old JWT itself is a signed snapshot (<= 5 min): it still says editor.
        check_eq(claim_roles(old_jwt), ["stytch_user", "editor"], "pre-update JWT claim roles")

    @check("users.update: unknown role -> 400 and nothing changes; without roles keeps them; roles [] clears them")
    def _():
        uid = S["editor_id"]
        err = expect_stytch_error(
            lambda: client.users.update(user_id=uid, roles=["billing_admin", "no_such_role"], name={"first_name": "Nope"}),
            400,
            "bad_request",
        )
        check_true("no_such_role" in err.details.error_message, f"error_message does not name the role: {err.details.error_message}")
        got = client.users.get(user_id=uid)
        check_eq(got.roles, ["stytch_user", "billing_admin"], "roles after the refused update")
        check_true(got.name is None or got.name.first_name != "Nope", "name changed by the refused update")
        named = client.users.update(user_id=uid, name={"first_name": "Bill"})
        check_eq(named.user.roles, ["stytch_user", "billing_admin"], "roles after an update without roles")
        cleared = client.users.update(user_id=uid, roles=[])
        check_eq(cleared.user.roles, ["stytch_user"], "roles after roles=[]")
        res = client.sessions.authenticate(session_token=S["ed"].session_token, authorization_check=ac("documents", "read"))
        check_eq(res.session.roles, ["stytch_user"], "session.roles")
        check_true(res.verdict is not None, "no verdict")
        check_eq((res.verdict.authorized, res.verdict.granting_roles), (True, ["stytch_user"]), "documents/read verdict")
        expect_denied(
            lambda: client.sessions.authenticate(session_token=S["ed"].session_token, authorization_check=ac("billing", "refund")),
            "billing/refund after roles=[]",
        )

    if "editor_id" in S:
        try:
            client.users.delete(user_id=S["editor_id"])
        except Exception:  # noqa: BLE001
            pass

    # ------------------------------------------------------------ sessions.attest (profiles made by run.sh)
    # Tokens of "our own identity provider" are signed here with the ES256 key whose public half
    # run.sh gave `hallpass token-profile create`; a second key plays a forger.
    with open(ATTEST_PRIVATE_KEY_FILE, "rb") as f:
        attest_key = serialization.load_pem_private_key(f.read(), password=None)
    forger_key = ec.generate_private_key(ec.SECP256R1())
    _omit = object()

    def idp_token(key: Any = attest_key, **claims: Any) -> str:
        """Signs {iss, aud, exp, iat, jti, email} (valid for 5 min), overridden by `claims`;
        a claim given as _omit is left out."""
        now = int(time.time())
        payload = {"iss": ATTEST_ISSUER, "aud": ATTEST_AUDIENCE, "iat": now, "exp": now + 300, "jti": f"jti-{uuid.uuid4()}"}
        payload.update(claims)
        payload = {k: v for k, v in payload.items() if v is not _omit}
        return pyjwt.encode(payload, key, algorithm="ES256", headers={"typ": "JWT"})

    def trusted_factors(factors: list) -> list:
        """The trusted_auth_token factors of a Session model's or a JWT claim's factor list."""
        kind = lambda f: f["type"] if isinstance(f, dict) else f.type.value  # noqa: E731
        return [f for f in factors if kind(f) == "trusted_auth_token"]

    def trusted_factor_ok(f: Any, jti: str) -> None:
        check_true(f is not None, "no trusted_auth_token factor")
        check_eq((f.type.value, f.delivery_method.value), ("trusted_auth_token", "trusted_token_exchange"), "factor type/delivery_method")
        check_true(f.trusted_auth_token_factor is not None, f"factor detail {f!r}")
        check_eq(f.trusted_auth_token_factor.token_id, jti, "trusted_auth_token_factor.token_id")
        for k in ("created_at", "last_authenticated_at", "updated_at"):
            check_true(isinstance(getattr(f, k), datetime.datetime), f"factor.{k} = {getattr(f, k)!r}")

    def jwt_trusted_factor_ok(jwt_text: str, jti: str) -> None:
        _, payload = decode_jwt(jwt_text)
        found = trusted_factors(payload["https://stytch.com/session"]["authentication_factors"])
        check_eq(
            [(f["delivery_method"], f.get("trusted_auth_token_factor")) for f in found],
            [("trusted_token_exchange", {"token_id": jti})],
            "JWT session claim trusted_auth_token factor",
        )

    def attest(**kw: Any):
        return client.sessions.attest(profile_id=kw.pop("profile_id", ATTEST_PROFILE_ID), **kw)

    attest_email = f"py-attest-{uuid.uuid4()}@example.com"

    @check("users.create for the attest checks")
    def _():
        res = client.users.create(email=attest_email)
        check_eq(res.status_code, 200, "status_code")
        S["attest_user_id"] = res.user_id

    @check("sessions.attest with session_duration_minutes starts a session with the trusted_auth_token factor")
    def _():
        uid = S["attest_user_id"]
        jti = f"jti-{uuid.uuid4()}"
        # The email claim is matched case-insensitively.
        res = attest(
            token=idp_token(email=attest_email.upper(), jti=jti),
            session_duration_minutes=60,
            session_custom_claims={"idp": "sdk-tests", "iss": "evil"},
        )
        check_eq(res.status_code, 200, "status_code")
        check_true(res.request_id.startswith(f"request-id-{ENV_NAME}-"), f"request_id {res.request_id!r}")
        check_eq(res.user_id, uid, "user_id")
        check_eq(res.user.user_id, uid, "user.user_id")
        check_eq([e.email for e in res.user.emails], [attest_email], "user.emails")
        check_true(TOKEN_RE.match(res.session_token), f"session_token {res.session_token!r}")
        session_shape(res.session, uid)
        near_minutes_from_now(res.session.expires_at, 60, "expires_at")
        check_eq(len(res.session.authentication_factors), 1, "factors")
        trusted_factor_ok(res.session.authentication_factors[0], jti)
        check_eq(res.session.custom_claims, {"idp": "sdk-tests"}, "custom_claims")
        _, payload = decode_jwt(res.session_jwt)
        check_eq(payload["sub"], uid, "jwt sub")
        check_eq(payload.get("idp"), "sdk-tests", "jwt custom claim")
        check_eq(payload["iss"], f"stytch.com/{PROJECT_ID}", "jwt iss")
        jwt_trusted_factor_ok(res.session_jwt, jti)
        S["attested"] = res

    @check("sessions.attest session_token and session_jwt work with sessions.authenticate and authenticate_jwt_local")
    def _():
        a = S["attested"]
        by_token = client.sessions.authenticate(session_token=a.session_token)
        check_eq(by_token.session.session_id, a.session.session_id, "session_id by token")
        check_eq(
            [f.model_dump() for f in by_token.session.authentication_factors],
            [f.model_dump() for f in a.session.authentication_factors],
            "factors by token",
        )
        by_jwt = client.sessions.authenticate(session_jwt=a.session_jwt)
        check_eq(by_jwt.session.session_id, a.session.session_id, "session_id by JWT")
        local = client.sessions.authenticate_jwt_local(a.session_jwt)
        check_true(local is not None, "local verification of the attest JWT failed")
        check_eq(local.session_id, a.session.session_id, "local session_id")
        check_eq(local.user_id, S["attest_user_id"], "local user_id")
        trusted_factor_ok(trusted_factors(local.authentication_factors)[0], a.session.authentication_factors[0].trusted_auth_token_factor.token_id)

    @check("sessions.attest without session_duration_minutes starts no session (aud as a list)")
    def _():
        uid = S["attest_user_id"]
        before = len(client.sessions.get(user_id=uid).sessions)
        res = attest(token=idp_token(email=attest_email, aud=["another-app", ATTEST_AUDIENCE]))
        check_eq(res.status_code, 200, "status_code")
        check_eq(res.user_id, uid, "user_id")
        check_eq(res.user.user_id, uid, "user.user_id")
        check_eq(res.session, None, "session")
        check_eq(res.session_token, "", "session_token")
        check_eq(res.session_jwt, "", "session_jwt")
        check_eq(len(client.sessions.get(user_id=uid).sessions), before, "number of sessions")

    @check("sessions.attest JIT-provisions a user for a new email, then finds it")
    def _():
        new_email = f"py-attest-jit-{uuid.uuid4()}@example.com"
        res = attest(token=idp_token(email=new_email), session_duration_minutes=30)
        check_eq(res.status_code, 200, "status_code")
        check_true(ID_RE["user"].match(res.user_id), f"user_id {res.user_id}")
        check_true(res.user_id != S["attest_user_id"], "JIT user is a new user")
        check_eq(res.user.user_id, res.user_id, "user.user_id")
        check_eq([(e.email, e.verified) for e in res.user.emails], [(new_email, True)], "user.emails")
        session_shape(res.session, res.user_id)
        got = client.users.get(user_id=res.user_id)
        check_eq([e.email for e in got.emails], [new_email], "users.get emails")
        again = attest(token=idp_token(email=new_email))
        check_eq(again.user_id, res.user_id, "second attest finds the provisioned user")
        check_eq(client.users.delete(user_id=res.user_id).status_code, 200, "users.delete of the JIT user")

    @check("sessions.attest unknown user on a profile without JIT provisioning -> 404 user_not_found")
    def _():
        token = idp_token(email=f"py-attest-nojit-{uuid.uuid4()}@example.com")
        expect_stytch_error(
            lambda: attest(profile_id=ATTEST_PROFILE_ID_NO_JIT, token=token, session_duration_minutes=30),
            404,
            "user_not_found",
        )
        # The same profile takes a known user.
        res = attest(profile_id=ATTEST_PROFILE_ID_NO_JIT, token=idp_token(email=attest_email))
        check_eq(res.user_id, S["attest_user_id"], "known user via the non-JIT profile")

    @check("sessions.attest replay of the same token -> 400 trusted_auth_token_already_used")
    def _():
        token = idp_token(email=attest_email)
        res = attest(token=token, session_duration_minutes=30)
        check_eq(res.status_code, 200, "first use")
        expect_stytch_error(lambda: attest(token=token, session_duration_minutes=30), 400, "trusted_auth_token_already_used")
        expect_stytch_error(lambda: attest(token=token), 400, "trusted_auth_token_already_used")
        client.sessions.revoke(session_id=res.session.session_id)

    @check("sessions.attest token signed by another key -> 401 invalid_trusted_auth_token_signature")
    def _():
        forged = idp_token(forger_key, email=attest_email)
        expect_stytch_error(
            lambda: attest(token=forged, session_duration_minutes=30), 401, "invalid_trusted_auth_token_signature"
        )
        # A valid token with its payload swapped for another email.
        h, _, s = idp_token(email=attest_email).split(".")
        p = b64url(json.dumps({
            "iss": ATTEST_ISSUER, "aud": ATTEST_AUDIENCE, "exp": int(time.time()) + 300,
            "jti": str(uuid.uuid4()), "email": "someone-else@example.com",
        }).encode())
        expect_stytch_error(lambda: attest(token=f"{h}.{p}.{s}"), 401, "invalid_trusted_auth_token_signature")

    @check("sessions.attest expired token -> 401 trusted_auth_token_expired")
    def _():
        now = int(time.time())
        token = idp_token(email=attest_email, iat=now - 600, exp=now - 120)
        expect_stytch_error(lambda: attest(token=token, session_duration_minutes=30), 401, "trusted_auth_token_expired")

    @check("sessions.attest token not valid yet (nbf in the future) -> 401 trusted_auth_token_not_yet_valid")
    def _():
        now = int(time.time())
        token = idp_token(email=attest_email, nbf=now + 300, exp=now + 600)
        expect_stytch_error(
            lambda: attest(token=token, session_duration_minutes=30), 401, "trusted_auth_token_not_yet_valid"
        )

    @check("sessions.attest wrong issuer -> 401 invalid_trusted_auth_token_issuer")
    def _():
        token = idp_token(email=attest_email, iss="https://idp.elsewhere.example/")
        expect_stytch_error(
            lambda: attest(token=token, session_duration_minutes=30), 401, "invalid_trusted_auth_token_issuer"
        )

    @check("sessions.attest wrong audience -> 401 invalid_trusted_auth_token_audience")
    def _():
        for aud in ("another-app", ["another-app", "yet-another"]):
            token = idp_token(email=attest_email, aud=aud)
            expect_stytch_error(
                lambda: attest(token=token, session_duration_minutes=30), 401, "invalid_trusted_auth_token_audience"
            )

    @check("sessions.attest without the email or jti claim -> 400 trusted_auth_token_missing_claim")
    def _():
        for claims in ({}, {"email": attest_email, "jti": _omit}):
            token = idp_token(**claims)
            expect_stytch_error(
                lambda: attest(token=token, session_duration_minutes=30), 400, "trusted_auth_token_missing_claim"
            )

    @check("sessions.attest unknown profile -> 404 trusted_auth_token_profile_not_found")
    def _():
        expect_stytch_error(
            lambda: attest(
                profile_id=f"trusted-auth-token-profile-{ENV_NAME}-{uuid.uuid4()}", token=idp_token(email=attest_email)
            ),
            404,
            "trusted_auth_token_profile_not_found",
        )

    @check("sessions.attest with session_token adds the factor to that session")
    def _():
        s = new_magic_link_session(S["attest_user_id"])
        jti = f"jti-{uuid.uuid4()}"
        res = attest(token=idp_token(email=attest_email, jti=jti), session_token=s.session_token)
        check_eq(res.status_code, 200, "status_code")
        check_true(res.session is not None, "no session in the answer")
        check_eq(res.session.session_id, s.session.session_id, "session_id (no new session)")
        check_eq(res.session_token, s.session_token, "session_token unchanged")
        check_eq(
            [(f.type.value, f.delivery_method.value) for f in res.session.authentication_factors],
            [("magic_link", "embedded"), ("trusted_auth_token", "trusted_token_exchange")],
            "factors",
        )
        trusted_factor_ok(trusted_factors(res.session.authentication_factors)[0], jti)
        auth = client.sessions.authenticate(session_token=s.session_token)
        check_eq(
            [f.model_dump() for f in auth.session.authentication_factors],
            [f.model_dump() for f in res.session.authentication_factors],
            "factors on sessions.authenticate",
        )
        jwt_trusted_factor_ok(res.session_jwt, jti)
        # and by session_jwt, with a longer duration
        jti2 = f"jti-{uuid.uuid4()}"
        res2 = attest(
            token=idp_token(email=attest_email, jti=jti2), session_jwt=res.session_jwt, session_duration_minutes=120
        )
        check_true(res2.session is not None, "no session in the answer (by JWT)")
        check_eq(res2.session.session_id, s.session.session_id, "session_id via session_jwt")
        near_minutes_from_now(res2.session.expires_at, 120, "expires_at extended")
        check_eq(
            [f.trusted_auth_token_factor.token_id for f in trusted_factors(res2.session.authentication_factors)],
            [jti2],
            "trusted factor (latest token_id)",
        )
        client.sessions.revoke(session_id=s.session.session_id)

    @check("sessions.attest for another user's or an unknown session -> 404 session_not_found; the token stays unused")
    def _():
        other = client.users.create(email=f"py-attest-other-{uuid.uuid4()}@example.com")
        other_session = new_magic_link_session(other.user_id)
        token = idp_token(email=attest_email)
        expect_stytch_error(lambda: attest(token=token, session_token=other_session.session_token), 404, "session_not_found")
        expect_stytch_error(lambda: attest(token=token, session_token=b64url(secrets.token_bytes(33))), 404, "session_not_found")
        ok = attest(token=token)
        check_eq(ok.user_id, S["attest_user_id"], "the refused token is accepted afterwards")
        other_auth = client.sessions.authenticate(session_token=other_session.session_token)
        check_eq(trusted_factors(other_auth.session.authentication_factors), [], "no factor added to the other user's session")
        client.users.delete(user_id=other.user_id)

    @check("async: attest_async starts a session (fresh client)")
    async def _():
        aclient = stytch.Client(project_id=PROJECT_ID, secret=SECRET, environment=BASE)
        try:
            jti = f"jti-{uuid.uuid4()}"
            res = await aclient.sessions.attest_async(
                profile_id=ATTEST_PROFILE_ID, token=idp_token(email=attest_email, jti=jti), session_duration_minutes=30
            )
            check_eq(res.user_id, S["attest_user_id"], "user_id")
            check_true(res.session is not None, "no session")
            trusted_factor_ok(res.session.authentication_factors[0], jti)
            await expect_stytch_error_async(
                aclient.sessions.attest_async(profile_id=ATTEST_PROFILE_ID, token=idp_token(forger_key, email=attest_email)),
                401,
                "invalid_trusted_auth_token_signature",
            )
        finally:
            await aclient.close()

    if hasattr(client.sessions, "exchange_access_token"):

        @check("sessions.exchange_access_token -> 400 bad_request pointing to attest")
        def _():
            e = expect_stytch_error(
                lambda: client.sessions.exchange_access_token(access_token="any-access-token", session_duration_minutes=30),
                400,
                "bad_request",
            )
            check_true("attest" in e.details.error_message, f"error_message {e.details.error_message!r} does not mention attest")

    if "attest_user_id" in S:
        try:
            client.users.delete(user_id=S["attest_user_id"])
        except Exception:  # noqa: BLE001
            pass

    # ------------------------------------------------------------ migrate
    # Upper-cased here: the UserInfo answer (lower case) must match it case-insensitively.
    @check("users.create with the UserInfo email (upper-cased)")
    def _():
        res = client.users.create(email=USERINFO_EMAIL.upper(), name={"first_name": "Mig", "last_name": "Rant"})
        check_eq(res.status_code, 200, "status_code")
        S["mig_user_id"] = res.user_id

    @check("users.create duplicate email -> 400 duplicate_email")
    def _():
        expect_stytch_error(lambda: client.users.create(email=USERINFO_EMAIL.upper()), 400, "duplicate_email")

    @check("sessions.migrate with duration starts a session for the UserInfo user (case-insensitive email)")
    def _():
        res = client.sessions.migrate(session_token="good-token", session_duration_minutes=60)
        check_eq(res.status_code, 200, "status_code")
        check_eq(res.user_id, S["mig_user_id"], "user_id")
        check_eq(res.user.user_id, S["mig_user_id"], "user.user_id")
        check_true(TOKEN_RE.match(res.session_token), f"session_token {res.session_token!r}")
        session_shape(res.session, S["mig_user_id"])
        near_minutes_from_now(res.session.expires_at, 60, "expires_at")
        check_eq(
            [(f.type.value, f.delivery_method.value) for f in res.session.authentication_factors],
            [("imported", "imported_auth0")],
            "factors",
        )
        auth = client.sessions.authenticate(session_token=res.session_token)
        check_eq(auth.session.session_id, res.session.session_id, "authenticated session_id")
        local = client.sessions.authenticate_jwt_local(res.session_jwt)
        check_true(local is not None and local.user_id == S["mig_user_id"], "local verification of migrate JWT")
        S["mig_token"] = res.session_token

    @check("sessions.migrate without duration returns no session")
    def _():
        res = client.sessions.migrate(session_token="good-token")
        check_eq(res.status_code, 200, "status_code")
        check_eq(res.user_id, S["mig_user_id"], "user_id")
        check_eq(res.session, None, "session")
        check_eq(res.session_token, "", "session_token")
        check_eq(res.session_jwt, "", "session_jwt")

    @check("sessions.migrate unknown email -> 404 migrate_from_external_email_does_not_exist")
    def _():
        expect_stytch_error(
            lambda: client.sessions.migrate(session_token="unknown-email", session_duration_minutes=60),
            404,
            "migrate_from_external_email_does_not_exist",
        )

    @check("sessions.migrate rejected IdP token -> 400 migrate_from_external_unexpected_response")
    def _():
        expect_stytch_error(
            lambda: client.sessions.migrate(session_token="bad-token", session_duration_minutes=60),
            400,
            "migrate_from_external_unexpected_response",
        )

    # ------------------------------------------------------------ users.delete
    @check("users.delete removes the user and revokes its sessions")
    def _():
        res = client.users.delete(user_id=S["mig_user_id"])
        check_eq(res.status_code, 200, "status_code")
        check_eq(res.user_id, S["mig_user_id"], "user_id")
        S.pop("mig_user_id")
        expect_stytch_error(lambda: client.users.get(user_id=res.user_id), 404, "user_not_found")
        expect_stytch_error(lambda: client.sessions.authenticate(session_token=S["mig_token"]), 404, "session_not_found")

    @check("users.delete main user; its session is gone")
    def _():
        res = client.users.delete(user_id=S["user_id"])
        check_eq(res.status_code, 200, "status_code")
        expect_stytch_error(lambda: client.sessions.authenticate(session_token=S["token"]), 404, "session_not_found")
        expect_stytch_error(lambda: client.sessions.authenticate(session_jwt=S["jwt"]), 404, "session_not_found")

    # Free the UserInfo email even if a check above failed.
    if "mig_user_id" in S:
        try:
            client.users.delete(user_id=S["mig_user_id"])
        except Exception:  # noqa: BLE001
            pass


async def expect_stytch_error_async(coro: Any, status: int, error_type: str) -> None:
    try:
        res = await coro
    except StytchError as e:
        d = e.details
        check_true(
            d.status_code == status and d.error_type == error_type,
            f"expected {status} {error_type}, got {d.status_code} {d.error_type} ({d.error_message})",
        )
        return
    raise CheckFailure(f"expected {status} {error_type}, got success {str(res)[:300]}")


if __name__ == "__main__":
    try:
        main()
    except Exception:  # noqa: BLE001
        failed += 1
        print(f"FAIL - suite crashed: {one_line(traceback.format_exc())}")
    print(f"{passed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed else 0)
