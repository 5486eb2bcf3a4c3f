#!/usr/bin/env bash
# Peer benchmark: Glewlwyd (Debian's package) doing the job comparable to hallpass's
# POST /v1/sessions/authenticate: its OIDC plugin's refresh-token grant
# (POST /api/oidc/token, grant_type=refresh_token), which looks up a stored refresh token and
# mints a fresh RS256 access token signed with an RSA-2048 key.
#
#   bench/peers/glewlwyd.sh --out-dir DIR --duration S --warmup S --concurrency "16 64" \
#       [--pg-url postgres://postgres@127.0.0.1:5432] [--pool N]
#
# Installs glewlwyd with apt when missing (and leaves the package's own service stopped and
# disabled), runs a private instance from a temp dir on a free 127.0.0.1 port against a
# throw-away Postgres database glewlwyd_bench_<hex> (dropped at exit; SQLite in the temp dir
# when Postgres cannot be used), sets it up through its admin REST API (an OIDC plugin signing
# RS256 with an RSA-2048 key made here, a user, a confidential client), gets a pool of refresh
# tokens through the authorization-code flow, checks one grant, then measures each
# concurrency with wrk through bench/measure.py, as bench/run.sh's point() does. Writes
# DIR/glewlwyd-c<C>.json|.txt and DIR/glewlwyd-meta.tsv; when Glewlwyd cannot be installed
# or set up it writes DIR/glewlwyd-note.txt (one line: why) and exits 0.
# Env: GLEWLWYD_BENCH_DB=sqlite forces the SQLite fallback (for testing it).
# Traffic goes to 127.0.0.1 only; every wait and every load step is bounded in time.
set -euo pipefail

OUT=""
DURATION=""
WARMUP=""
CONCURRENCY_ARG="16 64"
PG_URL="${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}"
POOL=100

usage() { sed -n '6,8p' "$0" | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out-dir) OUT="${2:?--out-dir needs a directory}"; shift ;;
    --out-dir=*) OUT="${1#*=}" ;;
    --duration) DURATION="${2:?--duration needs seconds}"; shift ;;
    --duration=*) DURATION="${1#*=}" ;;
    --warmup) WARMUP="${2:?--warmup needs seconds}"; shift ;;
    --warmup=*) WARMUP="${1#*=}" ;;
    --concurrency) CONCURRENCY_ARG="${2:?--concurrency needs a list}"; shift ;;
    --concurrency=*) CONCURRENCY_ARG="${1#*=}" ;;
    --pg-url) PG_URL="${2:?--pg-url needs a URL}"; shift ;;
    --pg-url=*) PG_URL="${1#*=}" ;;
    --pool) POOL="${2:?--pool needs a number}"; shift ;;
    --pool=*) POOL="${1#*=}" ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
[[ -n $OUT ]] || { echo "--out-dir is required" >&2; usage >&2; exit 2; }
[[ $DURATION =~ ^[0-9]+$ ]] && (( DURATION >= 1 && DURATION <= 600 )) \
  || { echo "--duration must be 1..600 seconds" >&2; exit 2; }
[[ $WARMUP =~ ^[0-9]+$ ]] && (( WARMUP >= 0 && WARMUP <= 600 )) \
  || { echo "--warmup must be 0..600 seconds" >&2; exit 2; }
[[ $POOL =~ ^[0-9]+$ ]] && (( POOL >= 1 && POOL <= 10000 )) \
  || { echo "--pool must be 1..10000" >&2; exit 2; }
read -r -a CONCURRENCY <<<"$CONCURRENCY_ARG"
(( ${#CONCURRENCY[@]} > 0 )) || { echo "--concurrency is empty" >&2; exit 2; }
for c in "${CONCURRENCY[@]}"; do
  [[ $c =~ ^[0-9]+$ ]] && (( c >= 2 && c <= 10000 )) \
    || { echo "--concurrency values must be 2..10000 (wrk -t2)" >&2; exit 2; }
done
PG_URL="${PG_URL%/}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BENCH="$ROOT/bench"
LUA="$BENCH/peers/glewlwyd.lua"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
NOTE="$OUT/glewlwyd-note.txt"
META="$OUT/glewlwyd-meta.tsv"
rm -f "$NOTE"

log() { printf '[glewlwyd %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
now_ns() { date +%s%N; }
# A peer that cannot be measured: one line in the note file, exit 0 (the main bench goes on).
skip() {
  printf '%s\n' "$*" | head -c 2000 | tr '\n' ' ' | sed 's/ *$//' >"$NOTE"
  echo >>"$NOTE"
  log "NOT MEASURED: $*"
  exit 0
}

# ---------------------------------------------------------------- cleanup
TMP=""
SERVER_PID=""
DB_NAME=""
DROP_DB=0
POLICY_RC_CREATED=0
cleanup() {
  local rc=$?
  set +e
  if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$SERVER_PID" 2>/dev/null && kill -KILL "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
    log "stopped glewlwyd (pid $SERVER_PID)"
  fi
  if [[ -n $TMP && -f $TMP/glewlwyd.log ]]; then
    cp "$TMP/glewlwyd.log" "$OUT/glewlwyd-server.log" 2>/dev/null
  fi
  if [[ $DROP_DB == 1 ]]; then
    timeout 30 psql -q "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" >/dev/null 2>&1 \
      && log "dropped database $DB_NAME"
  fi
  [[ $POLICY_RC_CREATED == 1 ]] && rm -f /usr/sbin/policy-rc.d
  [[ -n $TMP ]] && rm -rf "$TMP"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# Anything unexpected: say where in the note file too (the exit status stays non-zero).
trap 'printf "unexpected failure at line %s: %s\n" "$LINENO" "$BASH_COMMAND" >"$NOTE"' ERR

# ---------------------------------------------------------------- 1. install
as_root() { if [[ $(id -u) == 0 ]]; then "$@"; else sudo -n "$@"; fi; }
APT_UPDATED=0
apt_install() {  # quiet apt-get install; output in $OUT/glewlwyd-apt.log
  if [[ $APT_UPDATED == 0 ]]; then
    as_root timeout 600 apt-get update -qq >>"$OUT/glewlwyd-apt.log" 2>&1 || true
    APT_UPDATED=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq "$@" >>"$OUT/glewlwyd-apt.log" 2>&1
}
installed() { [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == *' installed' ]]; }

INSTALLED_NOW=0
if ! installed glewlwyd || [[ ! -x /usr/bin/glewlwyd ]]; then
  log "installing glewlwyd (apt-get)"
  # Keep the postinst from starting the system service (the Debian way: policy-rc.d = 101).
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null \
      && as_root chmod 755 /usr/sbin/policy-rc.d && POLICY_RC_CREATED=1
  fi
  if ! apt_install glewlwyd; then
    skip "glewlwyd could not be installed with apt-get: $(grep -E '^(E:|W:)' "$OUT/glewlwyd-apt.log" | tail -1)"
  fi
  if [[ $POLICY_RC_CREATED == 1 ]]; then as_root rm -f /usr/sbin/policy-rc.d; POLICY_RC_CREATED=0; fi
  INSTALLED_NOW=1
fi
installed glewlwyd && [[ -x /usr/bin/glewlwyd ]] || skip "glewlwyd is not installed (dpkg says: $(dpkg-query -W -f='${Status}' glewlwyd 2>&1))"
VERSION="$(dpkg-query -W glewlwyd | tr '\t' ' ')"
log "$VERSION"

# The package's own service: never left running or enabled.
if [[ -e /etc/systemd/system/multi-user.target.wants/glewlwyd.service ]] \
    || ls /etc/rc[2-5].d/S[0-9][0-9]glewlwyd >/dev/null 2>&1; then
  log "disabling the package's glewlwyd service (update-rc.d glewlwyd disable)"
  as_root update-rc.d glewlwyd disable >/dev/null 2>&1 || true
  if [[ -e /etc/systemd/system/multi-user.target.wants/glewlwyd.service ]]; then
    as_root systemctl disable glewlwyd.service >/dev/null 2>&1 \
      || as_root rm -f /etc/systemd/system/multi-user.target.wants/glewlwyd.service
  fi
fi
if [[ -s /var/run/glewlwyd.pid ]]; then
  svc_pid="$(cat /var/run/glewlwyd.pid 2>/dev/null || true)"
  if [[ $svc_pid =~ ^[0-9]+$ ]] && [[ "$(readlink "/proc/$svc_pid/exe" 2>/dev/null)" == /usr/bin/glewlwyd ]]; then
    if [[ $INSTALLED_NOW == 1 ]]; then
      log "the package's service was started by the install (pid $svc_pid): stopping it"
      as_root kill -TERM "$svc_pid" 2>/dev/null || true
    else
      log "WARNING: the package's glewlwyd service runs (pid $svc_pid); left alone (not started by this script)"
    fi
  fi
fi

for tool in wrk curl openssl python3; do
  if ! command -v "$tool" >/dev/null; then
    log "installing $tool (apt-get)"
    apt_install "$tool" || skip "$tool is missing and could not be installed with apt-get"
  fi
done

# ---------------------------------------------------------------- 2. private instance
TMP="$(mktemp -d /tmp/glewlwyd-bench.XXXXXX)"
chmod 700 "$TMP"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
BASE="http://127.0.0.1:$PORT"
TOKEN_PATH="/api/oidc/token"

# Database: Postgres when this build's Hoel links libpq and the server answers, else SQLite.
DB_KIND=postgres
DB_WHY=""
HOEL_LIB="$(ldd /usr/bin/glewlwyd 2>/dev/null | awk '/libhoel/ { print $3 }' | head -1 || true)"
PG_SCHEMA=/usr/share/doc/glewlwyd/database/init.postgre.sql.gz
SQLITE_SCHEMA=/usr/share/doc/glewlwyd/database/init.sqlite3.sql.gz
if [[ ${GLEWLWYD_BENCH_DB:-} == sqlite ]]; then
  DB_KIND=sqlite; DB_WHY="forced by GLEWLWYD_BENCH_DB=sqlite"
elif [[ -z $HOEL_LIB ]] || ! ldd "$HOEL_LIB" 2>/dev/null | grep 'libpq\.so' >/dev/null; then
  DB_KIND=sqlite; DB_WHY="this build's libhoel does not link libpq"
elif [[ ! -r $PG_SCHEMA ]]; then
  DB_KIND=sqlite; DB_WHY="no $PG_SCHEMA"
elif ! command -v psql >/dev/null && ! apt_install postgresql-client; then
  DB_KIND=sqlite; DB_WHY="no psql"
elif ! timeout 10 psql -qAt "$PG_URL/postgres" -c 'SELECT 1' >/dev/null 2>&1; then
  DB_KIND=sqlite; DB_WHY="Postgres is not reachable at $PG_URL"
fi

PG_DB="no-database-of-this-run"  # measure.py charges only this database's Postgres backends
if [[ $DB_KIND == postgres ]]; then
  DB_NAME="glewlwyd_bench_$(openssl rand -hex 4)"
  timeout 30 psql -q "$PG_URL/postgres" -c "CREATE DATABASE $DB_NAME" >/dev/null
  DROP_DB=1
  PG_DB="$DB_NAME"
  log "created database $DB_NAME; loading $PG_SCHEMA (+ pgcrypto, which it uses for crypt())"
  if ! { echo 'CREATE EXTENSION IF NOT EXISTS pgcrypto;'; zcat "$PG_SCHEMA"; } \
      | timeout 60 psql -q -X -v ON_ERROR_STOP=1 "$PG_URL/$DB_NAME" >"$TMP/schema.log" 2>&1; then
    skip "loading the Postgres schema failed: $(grep -m1 ERROR "$TMP/schema.log")"
  fi
  # libpq takes a URI as its conninfo.
  DB_CONF="type = \"postgre\"
  conninfo = \"$PG_URL/$DB_NAME\""
  DB_DESC="Postgres ($DB_NAME on ${PG_URL#*@}, dropped at exit)"
else
  log "SQLite in the temp dir: $DB_WHY"
  [[ -r $SQLITE_SCHEMA ]] || skip "no Postgres ($DB_WHY) and no $SQLITE_SCHEMA"
  python3 - "$TMP/glewlwyd.db" "$SQLITE_SCHEMA" <<'PY' || skip "loading the SQLite schema failed"
import gzip, sqlite3, sys
c = sqlite3.connect(sys.argv[1])
c.executescript(gzip.open(sys.argv[2]).read().decode())
c.commit()
PY
  DB_CONF="type = \"sqlite3\"
  path = \"$TMP/glewlwyd.db\""
  DB_DESC="SQLite (a file in the temp dir; $DB_WHY)"
fi

# RSA-2048 signing key, made here.
openssl genrsa -out "$TMP/rsa-2048.key" 2048 2>/dev/null
openssl rsa -in "$TMP/rsa-2048.key" -pubout -out "$TMP/rsa-2048.pub" 2>/dev/null
KEY_BITS_OPENSSL="$(openssl rsa -in "$TMP/rsa-2048.key" -noout -text 2>/dev/null | sed -n 's/^Private-Key: (\([0-9]*\) bit.*/\1/p' || true)"
[[ $KEY_BITS_OPENSSL == 2048 ]] || skip "openssl did not make a 2048-bit key ($KEY_BITS_OPENSSL)"

# Values from Debian's /etc/glewlwyd/glewlwyd.conf, except the port, bind address, log, DB.
cat >"$TMP/glewlwyd.conf" <<EOF
port=$PORT
bind_address="127.0.0.1"
external_url="$BASE"
login_url="login.html"
api_prefix="api"
allow_origin="*"
log_mode="file"
log_level="WARNING"
log_file="$TMP/glewlwyd.log"
cookie_secure=0
cookie_same_site="empty"
session_expiration=2419200
session_key="GLEWLWYD2_SESSION_ID"
admin_session_authentication="cookie"
profile_session_authentication="cookie"
allow_multiple_user_per_session=true
login_api_enabled=true
plugin_api_run_enabled=""
add_x_frame_option_header_deny=true
max_post_size=16778240
admin_scope="g_admin"
profile_scope="g_profile"
user_module_path="/usr/lib/glewlwyd/user"
client_module_path="/usr/lib/glewlwyd/client"
user_auth_scheme_module_path="/usr/lib/glewlwyd/scheme"
plugin_module_path="/usr/lib/glewlwyd/plugin"
hash_algorithm="SHA512"
database =
{
  $DB_CONF
};
EOF

log "starting glewlwyd on $BASE"
T0=$(now_ns)
/usr/bin/glewlwyd --config-file="$TMP/glewlwyd.conf" >"$TMP/stdout.log" 2>&1 &
SERVER_PID=$!
while :; do
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$BASE/config" 2>/dev/null || true)
  [[ $code == 200 ]] && break
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    SERVER_PID=""
    skip "glewlwyd exited during start: $(cat "$TMP/stdout.log" "$TMP/glewlwyd.log" 2>/dev/null | tail -3 | tr '\n' ' ')"
  fi
  (( $(now_ns) - T0 < 30000000000 )) || skip "glewlwyd was not ready within 30 s"
  sleep 0.05
done
READY_MS=$(( ($(now_ns) - T0) / 1000000 ))
log "ready in ${READY_MS} ms (pid $SERVER_PID)"

# ---------------------------------------------------------------- 3. setup and token pool
CLIENT_ID="bench-client"
CLIENT_SECRET="bench-$(openssl rand -hex 16)"
USER_PASSWORD="bench-$(openssl rand -hex 12)"
AUTH="Basic $(printf '%s:%s' "$CLIENT_ID" "$CLIENT_SECRET" | base64 -w0)"
log "setup through the admin API (plugin oidc RS256, user, client), then $POOL refresh tokens by the authorization-code flow"
if ! timeout 300 python3 - "$BASE" "$TMP" "$POOL" "$CLIENT_ID" "$CLIENT_SECRET" "$USER_PASSWORD" \
    >"$TMP/setup.out" 2>"$TMP/setup.err" <<'PY'
import base64, http.client, json, sys, time, urllib.parse

base, tmp, pool, client_id, client_secret, user_password = sys.argv[1:7]
pool = int(pool)
host, port = base.split("//")[1].split(":")
REDIRECT = "http://127.0.0.1/bench-callback"


class Http:
    """One keep-alive connection with a cookie jar (Glewlwyd's sessions are cookies)."""

    def __init__(self):
        self.conn = http.client.HTTPConnection(host, int(port), timeout=15)
        self.cookies = {}

    def req(self, method, path, body=None, headers=None, form=False):
        h = dict(headers or {})
        if self.cookies:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if body is not None:
            if form:
                body = urllib.parse.urlencode(body)
                h["Content-Type"] = "application/x-www-form-urlencoded"
            else:
                body = json.dumps(body)
                h["Content-Type"] = "application/json"
        self.conn.request(method, path, body, h)
        r = self.conn.getresponse()
        data = r.read()
        for k, v in r.getheaders():
            if k.lower() == "set-cookie":
                name, _, rest = v.partition("=")
                self.cookies[name.strip()] = rest.split(";")[0]
        return r.status, r.getheader("Location"), data


def must(what, res, ok=(200,)):
    status, _, data = res
    if status not in ok:
        sys.exit(f"{what}: HTTP {status} {data[:400]!r}")
    return res


key = open(f"{tmp}/rsa-2048.key").read()
cert = open(f"{tmp}/rsa-2048.pub").read()

admin = Http()
must("admin login", admin.req("POST", "/api/auth/", {"username": "admin", "password": "password"}))
plugin = {
    "module": "oidc",
    "name": "oidc",
    "display_name": "OpenID Connect (bench)",
    "enabled": True,
    "parameters": {
        "iss": base,
        "jwt-type": "rsa",
        "jwt-key-size": "256",          # RS256
        "key": key,
        "cert": cert,
        "access-token-duration": 300,
        "refresh-token-duration": 1209600,
        "code-duration": 600,
        "refresh-token-rolling": False,
        "refresh-token-one-use": "never",  # the grant does not rotate the refresh token
        "allow-non-oidc": False,
        "auth-type-code-enabled": True,
        "auth-type-refresh-enabled": True,
        "auth-type-token-enabled": False,
        "auth-type-none-enabled": False,
        "auth-type-password-enabled": False,
        "auth-type-client-enabled": False,
        "auth-type-device-enabled": False,
        "subject-type": "public",
        "scope": [],
        "claims": [],
    },
}
must("create the oidc plugin", admin.req("POST", "/api/mod/plugin/", plugin))
must("create the user", admin.req("POST", "/api/user/", {
    "username": "bench-user", "name": "Bench User", "email": "bench@example.invalid",
    "password": user_password, "scope": ["openid"], "enabled": True}))
must("create the client", admin.req("POST", "/api/client/", {
    "client_id": client_id, "name": "bench client", "confidential": True,
    "client_secret": client_secret, "redirect_uri": [REDIRECT],
    "authorization_type": ["code", "refresh_token"],
    "token_endpoint_auth_method": ["client_secret_basic"], "enabled": True}))

user = Http()
must("user login", user.req("POST", "/api/auth/", {"username": "bench-user", "password": user_password}))
must("user consent (grant scope openid to the client)",
     user.req("PUT", f"/api/auth/grant/{client_id}", {"scope": "openid"}))

basic = "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
tokens = []
t0 = time.time()
for i in range(pool):
    q = urllib.parse.urlencode({"response_type": "code", "client_id": client_id,
                                "redirect_uri": REDIRECT, "scope": "openid",
                                "state": f"s{i}", "nonce": f"n{i}"})
    status, loc, data = user.req("GET", f"/api/oidc/auth?g_continue&{q}")
    if status != 302 or not loc:
        sys.exit(f"authorization request {i}: HTTP {status} {loc} {data[:300]!r}")
    params = urllib.parse.parse_qs(urllib.parse.urlsplit(loc).query)
    if "code" not in params:
        sys.exit(f"authorization request {i}: no code in {loc}")
    status, _, data = user.req("POST", "/api/oidc/token", {
        "grant_type": "authorization_code", "code": params["code"][0],
        "redirect_uri": REDIRECT}, headers={"Authorization": basic}, form=True)
    if status != 200:
        sys.exit(f"code exchange {i}: HTTP {status} {data[:300]!r}")
    doc = json.loads(data)
    if "refresh_token" not in doc:
        sys.exit(f"code exchange {i}: no refresh_token in {sorted(doc)}")
    tokens.append(doc["refresh_token"])
with open(f"{tmp}/refresh-tokens.txt", "w") as f:
    f.write("\n".join(tokens) + "\n")
print(json.dumps({"pool": len(tokens), "pool_seconds": round(time.time() - t0, 2),
                  "distinct": len(set(tokens))}))
PY
then
  skip "setup failed: $(tail -1 "$TMP/setup.err")"
fi
POOL_INFO="$(tail -1 "$TMP/setup.out")"
log "pool: $POOL_INFO"

# ---------------------------------------------------------------- 4. sanity check
log "sanity: one refresh grant (and the same token again), RS256, 2048-bit key"
SANITY="$(timeout 60 python3 - "$BASE" "$TOKEN_PATH" "$AUTH" "$TMP/refresh-tokens.txt" <<'PY' || true
import base64, http.client, json, sys, urllib.parse
base, path, auth, pool = sys.argv[1:5]
host, port = base.split("//")[1].split(":")
conn = http.client.HTTPConnection(host, int(port), timeout=15)
token = open(pool).readline().strip()

def b64(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))

def grant():
    conn.request("POST", path, urllib.parse.urlencode({"grant_type": "refresh_token", "refresh_token": token}),
                 {"Authorization": auth, "Content-Type": "application/x-www-form-urlencoded"})
    r = conn.getresponse()
    return r.status, r.read()

status, data = grant()
if status != 200:
    print(f"FAIL the refresh grant answered HTTP {status}: {data[:300]!r}"); sys.exit()
doc = json.loads(data)
at = doc.get("access_token", "")
parts = at.split(".")
if len(parts) != 3:
    print(f"FAIL the access_token is not a JWS: {at[:80]!r}"); sys.exit()
header = json.loads(b64(parts[0]))
claims = json.loads(b64(parts[1]))
if header.get("alg") != "RS256":
    print(f"FAIL the access token's alg is {header.get('alg')!r}, not RS256"); sys.exit()
conn.request("GET", "/api/oidc/jwks")
r = conn.getresponse()
jwks = json.loads(r.read())
keys = [k for k in jwks.get("keys", []) if k.get("kty") == "RSA" and (not header.get("kid") or k.get("kid") == header.get("kid"))]
if not keys:
    print(f"FAIL no RSA key for kid {header.get('kid')!r} in the JWKS"); sys.exit()
bits = int.from_bytes(b64(keys[0]["n"]), "big").bit_length()
if bits != 2048:
    print(f"FAIL the signing key has {bits} bits, not 2048"); sys.exit()
status2, data2 = grant()
if status2 != 200:
    print(f"FAIL the same refresh token a second time answered HTTP {status2} (one-use tokens?)"); sys.exit()
rotated = "refresh_token" in doc or "refresh_token" in json.loads(data2)
print("OK", bits, header.get("alg"), header.get("kid") or "-", claims.get("exp", 0) - claims.get("iat", 0),
      "rotated" if rotated else "not-rotated", len(data))
PY
)"
[[ $SANITY == OK* ]] || skip "sanity check failed: ${SANITY:-no answer}"
read -r _ KEY_BITS ALG KID AT_LIFETIME ROTATION RESP_BYTES <<<"$SANITY"
log "sanity OK: $ALG, kid $KID, $KEY_BITS-bit key, access token lifetime ${AT_LIFETIME}s, refresh token $ROTATION, $RESP_BYTES-byte response"
[[ $ROTATION == not-rotated ]] || log "WARNING: the grant returned a new refresh token (rotation)"

DB_TLS="n/a"
if [[ $DB_KIND == postgres ]]; then
  DB_TLS="$(timeout 30 psql -qAt "$PG_URL/postgres" -c "SELECT string_agg(DISTINCT CASE WHEN s.ssl THEN 'TLS ' || s.version ELSE 'no TLS' END, ', ') FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.datname = '$DB_NAME' AND a.pid <> pg_backend_pid()" 2>/dev/null || echo '?')"
fi

db_count() {  # $1 table
  if [[ $DB_KIND == postgres ]]; then
    timeout 30 psql -qAt "$PG_URL/$DB_NAME" -c "SELECT count(*) FROM $1" 2>/dev/null || echo "?"
  else
    python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("select count(*) from "+sys.argv[2]).fetchone()[0])' \
      "$TMP/glewlwyd.db" "$1" 2>/dev/null || echo "?"
  fi
}

# ---------------------------------------------------------------- 5. meta
: >"$META"
meta() { printf '%s\t%s\n' "$1" "$2" >>"$META"; }
meta version "$VERSION"
meta database "$DB_KIND"
meta database_detail "$DB_DESC"
meta db_connections "1 (Hoel keeps one libpq connection; every query takes its mutex, so requests are serialized on it)"
if [[ $DB_KIND == postgres ]]; then
  meta db_connection_tls "$DB_TLS (libpq's default sslmode=prefer)"
fi
meta token_endpoint "POST $TOKEN_PATH (grant_type=refresh_token)"
meta base_url "$BASE"
meta client_auth "client_secret_basic (confidential client; Glewlwyd compares the client_secret property as plain text, no hash per request)"
meta signing "$ALG (plugin jwt-type rsa, jwt-key-size 256), kid $KID"
meta key_bits "$KEY_BITS"
meta access_token_lifetime_s "$AT_LIFETIME"
meta refresh_token_one_use "never ($ROTATION: the same refresh token is reused)"
meta refresh_pool "$POOL"
meta refresh_pool_setup "$POOL_INFO"
meta response_bytes "$RESP_BYTES"
meta ready_ms "$READY_MS"
meta log_level "WARNING"
meta request "POST $TOKEN_PATH form grant_type=refresh_token&refresh_token=<random of $POOL> with HTTP Basic client auth: SELECT the refresh token by its SHA512 hash (+ its scopes), load the client and the user from the database modules, UPDATE the refresh token's last_seen, sign an RS256 JWT (RSA-2048), INSERT one gpo_access_token row and one gpo_access_token_scope row per issued access token (and start a thread that reads g_misc_config for IP geolocation); about 16 SQL statements per request (an strace count of libpq sends with Postgres), each an unprepared simple query, its own round trip and, for the 3 writes, its own commit"
meta idle_rss_kb "$(awk '/^VmRSS:/ { print $2 }' "/proc/$SERVER_PID/status")"
meta idle_threads "$(awk '/^Threads:/ { print $2 }' "/proc/$SERVER_PID/status")"
meta access_token_rows_before_load "$(db_count gpo_access_token)"

# ---------------------------------------------------------------- 6. load
export BENCH_GLW_POOL="$TMP/refresh-tokens.txt" BENCH_GLW_AUTH="$AUTH" BENCH_GLW_PATH="$TOKEN_PATH"
for c in "${CONCURRENCY[@]}"; do
  f="$OUT/glewlwyd-c$c.json"
  rows0="$(db_count gpo_access_token)"
  if (( WARMUP > 0 )); then
    log "c=$c: warm-up ${WARMUP}s"
    BENCH_OUT="$TMP/warmup.json" timeout $(( WARMUP + 30 )) \
      wrk -t2 -c"$c" -d"${WARMUP}s" --timeout 5s -s "$LUA" "$BASE/" >/dev/null || true
  fi
  rows1="$(db_count gpo_access_token)"
  log "c=$c: measuring ${DURATION}s"
  rm -f "$TMP/point.json"
  BENCH_OUT="$TMP/point.json" \
    python3 "$BENCH/measure.py" --kind wrk --out "$f" --server-pid "$SERVER_PID" --pg-db "$PG_DB" \
      --wrk-json "$TMP/point.json" --stdout "$OUT/glewlwyd-c$c.txt" \
      --label workload=peer-glewlwyd --label concurrency="$c" --label tool=wrk --label mode=refresh_token \
      -- wrk -t2 -c"$c" -d"${DURATION}s" --timeout 5s --latency -s "$LUA" "$BASE/"
  rows2="$(db_count gpo_access_token)"
  read -r rps errs line < <(python3 - "$f" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
r, x = d.get("result", {}), d.get("resources", {})
errs = int(r.get("non_2xx_3xx", 0)) + int(r.get("socket_errors", 0))
print(int(r.get("requests_per_sec", 0)), errs,
      f"{r.get('requests_per_sec', 0):.0f} req/s, p50 {r.get('p50_ms', 0):.2f} ms, p99 {r.get('p99_ms', 0):.2f} ms, "
      f"non-2xx {r.get('non_2xx_3xx', '?')}, socket errors {r.get('socket_errors', '?')}, "
      f"glewlwyd CPU {x.get('server_cpu_pct')} %, Postgres CPU {x.get('postgres_cpu_pct')} %, "
      f"wrk CPU {x.get('loadgen_cpu_pct')} %, machine {x.get('machine_busy_pct')} %, "
      f"peak RSS {x.get('server_hwm_kb')} kB" + (f" [{d['result_error'][:200]}]" if "result_error" in d else ""))
PY
  )
  log "c=$c: $line"
  meta "access_token_rows_c$c" "warm-up $(( ${rows1/\?/0} - ${rows0/\?/0} )), measured $(( ${rows2/\?/0} - ${rows1/\?/0} ))"
  kill -0 "$SERVER_PID" 2>/dev/null || { tail -20 "$TMP/glewlwyd.log" >&2; skip "glewlwyd died during c=$c"; }
  if (( errs > 0 )); then
    log "  $errs errors at c=$c: a 2 s diagnostic run that records status codes and bodies"
    BENCH_OUT="$TMP/diag.json" BENCH_DIAG=1 timeout 60 \
      wrk -t2 -c"$c" -d2s --timeout 5s -s "$LUA" "$BASE/" >/dev/null || true
    cp "$TMP/diag.json" "$OUT/glewlwyd-c$c.diag.json" 2>/dev/null || true
    cat "$TMP/diag.json" >&2 || true
  fi
done

meta access_token_rows_after_load "$(db_count gpo_access_token)"
meta access_token_scope_rows_after_load "$(db_count gpo_access_token_scope)"
meta refresh_token_rows "$(db_count gpo_refresh_token)"
if [[ $DB_KIND == postgres ]]; then
  meta db_size "$(timeout 30 psql -qAt "$PG_URL/$DB_NAME" -c 'SELECT pg_size_pretty(pg_database_size(current_database()))' 2>/dev/null || echo '?')"
fi
meta after_load_rss_kb "$(awk '/^VmRSS:/ { print $2 }' "/proc/$SERVER_PID/status")"
meta server_log_error_lines "$(grep -ciE 'error' "$TMP/glewlwyd.log" 2>/dev/null || true)"
log "done: $OUT/glewlwyd-c*.json, $META"
