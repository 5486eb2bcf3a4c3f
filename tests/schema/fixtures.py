#!/usr/bin/env python3
"""Creates the schema suite's fixtures in a running hallpass and prints, as TOML, the
schemathesis dictionaries and per-operation bindings that mix them into the generated
requests (run.sh appends the output to its copy of schemathesis.toml).

    fixtures.py URL PROJECT_ID SECRET MIGRATE_EMAIL

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
- the project id, for the JWKS paths.

Standard library only.
"""

import base64
import json
import sys
import urllib.error
import urllib.request
import uuid

URL, PROJECT_ID, SECRET, MIGRATE_EMAIL = sys.argv[1:5]
AUTH = "Basic " + base64.b64encode(f"{PROJECT_ID}:{SECRET}".encode()).decode()

DOOMED_USERS = 8
AUTH_SESSIONS = 12
REVOKE_SESSIONS = 12
MAGIC_LINKS = 40


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
}

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
print("\n".join(out))
