#!/usr/bin/env python3
"""Creates the schema suite's fixtures in a running hallpass and prints, as TOML, the
schemathesis dictionaries and per-operation bindings that mix them into the generated
requests (run.sh appends the output to its copy of schemathesis.toml).

    fixtures.py URL PROJECT_ID SECRET MIGRATE_EMAIL [ATTEST_JSON]

Random identifiers almost never name anything, so without these most requests would stop
at 404 and the success answers (the largest schemas in the document) would go unchecked.
Fixtures, each used where it cannot spoil the others:

- a "keeper" user (editor role, an external id) that no operation may delete or strip of
  its sessions: read, update, list, new sessions, new magic links;
- "doomed" users, for delete and revoke-by-user_id;
- sessions of the keeper for authenticate and magic-link authenticate (token, JWT), and
  other sessions for revoke (id, token, JWT);
- single-use magic link tokens of the keeper;
- the user the UserInfo stub's email names, for migrate;
- the project id, for the JWKS and revocation feed paths;
- events on the revocation feed (sessions revoked by id, token, JWT and user, a user deleted
  with a session), and their cursors, for the feed's `after` and the SSF poll's `ack`;
- with ATTEST_JSON (written by run.sh: two trusted auth token profiles, one provisioning users
  just in time, and the stand-in identity provider's Ed25519 keys): single-use trusted auth
  tokens for attest, most of them good (the keeper's email, or new emails), the others each
  refused for one reason (issuer, audience, expiry, not yet valid, a missing claim, another
  key, an HMAC algorithm, a malformed email).

Standard library and the openssl command only.
"""

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid

URL, PROJECT_ID, SECRET, MIGRATE_EMAIL = sys.argv[1:5]
ATTEST = json.load(open(sys.argv[5])) if len(sys.argv) > 5 else None
AUTH = "Basic " + base64.b64encode(f"{PROJECT_ID}:{SECRET}".encode()).decode()

DOOMED_USERS = 8
AUTH_SESSIONS = 12
REVOKE_SESSIONS = 12
MAGIC_LINKS = 40
ATTEST_TOKENS = 24


def call(method: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(URL + path, data=data, method=method,
                                 headers={"Authorization": AUTH, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        sys.exit(f"fixtures.py: {method} {path} answered {e.code}: {e.read()[:500]!r}")


def user(**fields) -> dict:
    return call("POST", "/v1/users", fields)


def session(user_id: str) -> dict:
    return call("POST", "/v1/sessions", {
        "user_id": user_id,
        "session_duration_minutes": 600,
        "authentication_factors": [{"type": "otp", "delivery_method": "email",
                                    "email_factor": {"email_id": "e", "email_address": "a@b.co"}}],
        "session_custom_claims": {"tier": "gold", "nested": {"a": 1}},
        "attributes": {"ip_address": "203.0.113.7", "user_agent": "schema-suite"},
    })


tag = uuid.uuid4().hex[:12]
keeper = user(email=f"keeper-{tag}@example.com", external_id=f"keeper-{tag}",
              name={"first_name": "Ada", "last_name": "Lovelace"}, roles=["editor"],
              trusted_metadata={"plan": "pro"}, untrusted_metadata={"theme": "dark"})
migrate_user = user(email=MIGRATE_EMAIL, roles=["billing_admin"])
doomed = [user(external_id=f"doomed-{tag}-{i}") for i in range(DOOMED_USERS)]
for d in doomed[: DOOMED_USERS // 2]:
    session(d["user_id"])
auth_sessions = [session(keeper["user_id"]) for _ in range(AUTH_SESSIONS)]
revoke_sessions = [session(keeper["user_id"]) for _ in range(REVOKE_SESSIONS)]
links = [call("POST", "/v1/magic_links", {"user_id": keeper["user_id"], "expiration_minutes": 60})
         for _ in range(MAGIC_LINKS)]

# The revocation feed: one event per reason that a call can cause.
feed_user = user(external_id=f"feed-{tag}")
feed_sessions = [session(feed_user["user_id"]) for _ in range(4)]
call("POST", "/v1/sessions/revoke", {"session_id": feed_sessions[0]["session"]["session_id"]})
call("POST", "/v1/sessions/revoke", {"session_token": feed_sessions[1]["session_token"]})
call("POST", "/v1/sessions/revoke", {"session_jwt": feed_sessions[2]["session_jwt"]})
call("POST", "/v1/sessions/revoke", {"user_id": feed_user["user_id"]})
gone = user()
session(gone["user_id"])
call("DELETE", f"/v1/users/{gone['user_id']}")
events = call("GET", f"/v1/sessions/revocations/{PROJECT_ID}")["events"]
if len(events) < 5:
    sys.exit(f"fixtures.py: expected at least 5 revocation events, the feed has {len(events)}")
feed_cursors = ["0"] + [e["cursor"] for e in events]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(claims: dict, key: str | None = None, alg: str = "EdDSA") -> str:
    head = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = b64url(json.dumps(claims).encode())
    signing_input = f"{head}.{body}".encode()
    if alg == "HS256":
        signature = hmac.new(b"not-a-key-of-the-profile", signing_input, hashlib.sha256).digest()
    else:
        # Ed25519 signs in one shot, which OpenSSL 3.0 does only from a regular file.
        with tempfile.NamedTemporaryFile() as f:
            f.write(signing_input)
            f.flush()
            signature = subprocess.run(["openssl", "pkeyutl", "-sign", "-inkey", key, "-rawin", "-in", f.name],
                                       capture_output=True, check=True).stdout
    return f"{head}.{body}.{b64url(signature)}"


attest_profiles: list[str] = []
attest_tokens: list[str] = []
if ATTEST:
    attest_profiles = ATTEST["profiles"]
    now = int(time.time())
    key, other_key = ATTEST["key"], ATTEST["other_key"]

    def claims(**extra) -> dict:
        c = {"iss": ATTEST["issuer"], "aud": ATTEST["audience"], "iat": now, "exp": now + 3600,
             "email": keeper["user"]["emails"][0]["email"], "jti": str(uuid.uuid4())}
        c.update(extra)
        return {k: v for k, v in c.items() if v is not None}

    good = [jwt(claims(), key) for _ in range(ATTEST_TOKENS)]
    good.append(jwt(claims(aud=["another-audience", ATTEST["audience"]]), key))
    # Unknown to the strict profile (404 user_not_found); created by the just-in-time one.
    good += [jwt(claims(email=f"attest-{tag}-{i}@example.com"), key) for i in range(4)]
    refused = [
        jwt(claims(email="not-an-email"), key),    # strict: 404; just in time: 400 invalid_email
        jwt(claims(iss="https://elsewhere.example"), key),
        jwt(claims(aud="another-audience"), key),
        jwt(claims(exp=now - 3600, iat=now - 7200), key),
        jwt(claims(nbf=now + 3600), key),
        jwt(claims(jti=None), key),                # 400 trusted_auth_token_missing_claim
        jwt(claims(exp=None), key),
        jwt(claims(), other_key),                  # 401 invalid_trusted_auth_token_signature
        jwt(claims(), alg="HS256"),
    ]
    attest_tokens = good + refused


def toml_list(values: list[str]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


dictionaries = {
    "project": [PROJECT_ID],
    "keeper_user": [keeper["user_id"], keeper["user"]["external_id"]],
    "doomed_users": [d["user_id"] for d in doomed] + [d["user"]["external_id"] for d in doomed],
    "auth_tokens": [s["session_token"] for s in auth_sessions],
    "auth_jwts": [s["session_jwt"] for s in auth_sessions],
    "revoke_ids": [s["session"]["session_id"] for s in revoke_sessions],
    "revoke_tokens": [s["session_token"] for s in revoke_sessions],
    "revoke_jwts": [s["session_jwt"] for s in revoke_sessions],
    "magic_link_tokens": [link["token"] for link in links],
    "feed_cursors": feed_cursors,
}
if ATTEST:
    dictionaries["attest_profiles"] = attest_profiles
    dictionaries["attest_tokens"] = attest_tokens

out = ["", "# ---- fixtures of this run (tests/schema/fixtures.py)"]
for name, values in dictionaries.items():
    out += [f"[dictionaries.{name}]", f"values = {toml_list(values)}", ""]


def operation(operation_id: str, bindings: dict[str, tuple[str, float]]) -> None:
    out.append("[[operations]]")
    out.append(f'include-operation-id = "{operation_id}"')
    inner = ", ".join(f'"{key}" = {{ dictionary = "{d}", probability = {p} }}'
                      for key, (d, p) in bindings.items())
    out.append(f"parameters = {{ {inner} }}")
    out.append("")


operation("getUser", {"path.user_id": ("keeper_user", 0.7)})
operation("updateUser", {"path.user_id": ("keeper_user", 0.7)})
operation("deleteUser", {"path.user_id": ("doomed_users", 0.7)})
operation("listSessions", {"query.user_id": ("keeper_user", 0.7)})
operation("createSession", {"body.user_id": ("keeper_user", 0.8)})
operation("createMagicLink", {"body.user_id": ("keeper_user", 0.8)})
operation("authenticateSession", {"body.session_token": ("auth_tokens", 0.8),
                                  "body.session_jwt": ("auth_jwts", 0.8)})
operation("authenticateMagicLink", {"body.token": ("magic_link_tokens", 0.8),
                                    "body.session_token": ("auth_tokens", 0.8),
                                    "body.session_jwt": ("auth_jwts", 0.8)})
operation("revokeSession", {"body.session_id": ("revoke_ids", 0.7),
                            "body.session_token": ("revoke_tokens", 0.7),
                            "body.session_jwt": ("revoke_jwts", 0.7),
                            "body.user_id": ("doomed_users", 0.7)})
operation("pollRevocations", {"query.after": ("feed_cursors", 0.5)})
operation("pollSecurityEvents", {"body.ack[*]": ("feed_cursors", 0.6)})
if ATTEST:
    operation("attestSession", {"body.profile_id": ("attest_profiles", 0.9),
                                "body.token": ("attest_tokens", 0.9),
                                "body.session_token": ("auth_tokens", 0.2),
                                "body.session_jwt": ("auth_jwts", 0.2)})
print("\n".join(out))
