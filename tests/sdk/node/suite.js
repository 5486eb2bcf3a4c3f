// Drives a running hallpass server through the official, unmodified `stytch` Node SDK.
//
// Env: HALLPASS_URL, HALLPASS_PROJECT_ID, HALLPASS_SECRET, USERINFO_EMAIL, and for
// sessions.attest ATTEST_PROFILE_ID, ATTEST_PROFILE_ID_NO_JIT, ATTEST_PRIVATE_KEY_FILE,
// ATTEST_ISSUER, ATTEST_AUDIENCE.
// Prints `ok - name` / `FAIL - name: reason` per check and ends with `N passed, M failed`.
// Exit code 1 when any check failed. Run through tests/sdk/run.sh.

import crypto from "node:crypto";
import { readFileSync } from "node:fs";
import stytch from "stytch";
// jose is a dependency of stytch (its JWT verification); used here to sign attest tokens.
import { generateKeyPair, importPKCS8, SignJWT } from "jose";

const SDK_VERSION = JSON.parse(
  readFileSync(new URL("./node_modules/stytch/package.json", import.meta.url), "utf8")
).version;
const { Client, StytchError, ClientError } = stytch;

function env(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`missing env ${name}`);
    process.exit(2);
  }
  return v;
}

const BASE = env("HALLPASS_URL").replace(/\/*$/, "/");
const PROJECT_ID = env("HALLPASS_PROJECT_ID");
const SECRET = env("HALLPASS_SECRET");
const USERINFO_EMAIL = env("USERINFO_EMAIL");
const ATTEST_PROFILE_ID = env("ATTEST_PROFILE_ID");
const ATTEST_PROFILE_ID_NO_JIT = env("ATTEST_PROFILE_ID_NO_JIT");
const ATTEST_PRIVATE_KEY_FILE = env("ATTEST_PRIVATE_KEY_FILE");
const ATTEST_ISSUER = env("ATTEST_ISSUER");
const ATTEST_AUDIENCE = env("ATTEST_AUDIENCE");
const ENV_NAME = PROJECT_ID.startsWith("project-live-") ? "live" : "test";

// The Node SDK warns on a custom `env`; that is expected here.
const origWarn = console.warn;
console.warn = (...a) => {
  if (typeof a[0] === "string" && a[0].includes("custom 'env' value")) return;
  origWarn(...a);
};

const client = new Client({ project_id: PROJECT_ID, secret: SECRET, env: BASE });
const badClient = new Client({ project_id: PROJECT_ID, secret: SECRET + "-wrong", env: BASE });

let passed = 0;
let failed = 0;

class CheckFailure extends Error {}

function assert(cond, msg) {
  if (!cond) throw new CheckFailure(msg);
}
function assertEq(actual, expected, what) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  assert(a === e, `${what}: expected ${e}, got ${a}`);
}
// Deep equality that ignores key order.
function canon(v) {
  if (Array.isArray(v)) return v.map(canon);
  if (v && typeof v === "object") {
    return Object.keys(v)
      .sort()
      .reduce((o, k) => ((o[k] = canon(v[k])), o), {});
  }
  return v;
}
function assertDeepEq(actual, expected, what) {
  assertEq(canon(actual), canon(expected), what);
}

async function check(name, fn) {
  try {
    await fn();
    passed++;
    console.log(`ok - ${name}`);
  } catch (e) {
    failed++;
    let reason;
    if (e instanceof CheckFailure) reason = e.message;
    else if (e instanceof StytchError)
      reason = `unexpected StytchError ${e.status_code} ${e.error_type}: ${e.error_message}`;
    else reason = `${e && e.constructor ? e.constructor.name : "error"}: ${e && e.message}`;
    console.log(`FAIL - ${name}: ${String(reason).replace(/\s+/g, " ").slice(0, 600)}`);
  }
}

// Expects `fn` to reject with a typed StytchError of the given status and error_type.
async function expectStytchError(fn, status, errorType) {
  let err;
  try {
    const res = await fn();
    err = null;
    assert(false, `expected ${status} ${errorType}, got success ${JSON.stringify(res).slice(0, 300)}`);
  } catch (e) {
    if (e instanceof CheckFailure) throw e;
    err = e;
  }
  assert(
    err instanceof StytchError,
    `expected StytchError, got ${err && err.constructor && err.constructor.name}: ${err && err.message}`
  );
  assert(
    err.status_code === status && err.error_type === errorType,
    `expected ${status} ${errorType}, got ${err.status_code} ${err.error_type} (${err.error_message})`
  );
  assert(typeof err.error_message === "string" && err.error_message.length > 0, "error_message empty");
  assert(
    typeof err.request_id === "string" && err.request_id.startsWith(`request-id-${ENV_NAME}-`),
    `request_id ${JSON.stringify(err.request_id)}`
  );
  return err;
}

// Expects `fn` to reject with the SDK's local ClientError with the given code.
async function expectClientError(fn, code) {
  let err;
  try {
    const res = await fn();
    assert(false, `expected ClientError ${code}, got success ${JSON.stringify(res).slice(0, 300)}`);
  } catch (e) {
    if (e instanceof CheckFailure) throw e;
    err = e;
  }
  assert(
    err instanceof ClientError && err.code === code,
    `expected ClientError ${code}, got ${err && err.constructor && err.constructor.name} ${err && err.code}: ${err && err.message}`
  );
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const rand = () => crypto.randomUUID();
const idRe = (kind) => new RegExp(`^${kind}-${ENV_NAME}-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`);
const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/;

function decodeJwt(jwt) {
  const parts = jwt.split(".");
  assert(parts.length === 3, `JWT has ${parts.length} parts`);
  return {
    header: JSON.parse(Buffer.from(parts[0], "base64url").toString()),
    payload: JSON.parse(Buffer.from(parts[1], "base64url").toString()),
  };
}

function assertMinutesFromNow(ts, minutes, what) {
  const t = Date.parse(ts);
  assert(!Number.isNaN(t), `${what}: unparseable ${ts}`);
  const want = Date.now() + minutes * 60_000;
  assert(Math.abs(t - want) < 120_000, `${what}: ${ts} is not ~${minutes} min from now (${new Date(want).toISOString()})`);
}

function assertSessionShape(s, userId) {
  assert(s && typeof s === "object", `session is ${JSON.stringify(s)}`);
  assert(idRe("session").test(s.session_id), `session_id ${s.session_id}`);
  assertEq(s.user_id, userId, "session.user_id");
  assert(Array.isArray(s.authentication_factors), "authentication_factors not an array");
  assert(Array.isArray(s.roles) && s.roles.includes("stytch_user"), `roles ${JSON.stringify(s.roles)}`);
  for (const f of ["started_at", "last_accessed_at", "expires_at"]) {
    assert(RFC3339.test(s[f]), `session.${f} = ${JSON.stringify(s[f])}`);
  }
  assert(
    s.attributes && typeof s.attributes.ip_address === "string" && typeof s.attributes.user_agent === "string",
    `attributes ${JSON.stringify(s.attributes)}`
  );
  assert(s.custom_claims && typeof s.custom_claims === "object" && !Array.isArray(s.custom_claims), "custom_claims not an object");
}

function assertToken(t) {
  assert(typeof t === "string" && /^[A-Za-z0-9_-]{44}$/.test(t), `session_token ${JSON.stringify(t)} is not 44 base64url chars`);
}

async function newMagicLinkSession(userId, extra = {}) {
  const ml = await client.magicLinks.create({ user_id: userId });
  return client.magicLinks.authenticate({ token: ml.token, session_duration_minutes: 60, ...extra });
}

async function main() {
  console.log(`# stytch node SDK ${SDK_VERSION} against ${BASE} (project ${PROJECT_ID})`);
  const email = `node-${rand()}@example.com`;
  let user; // the main test user
  let first; // magic-link authenticate response
  let jwks;

  // ---------------------------------------------------------------- users
  await check("users.create with email and name", async () => {
    const res = await client.users.create({ email, name: { first_name: "Ada", last_name: "Lovelace" } });
    assertEq(res.status_code, 200, "status_code");
    assert(idRe("user").test(res.user_id), `user_id ${res.user_id}`);
    assert(idRe("email").test(res.email_id), `email_id ${res.email_id}`);
    assertEq(res.phone_id, "", "phone_id");
    assertEq(res.status, "active", "status");
    assertEq(res.user.user_id, res.user_id, "user.user_id");
    assertEq(res.user.emails.map((e) => e.email), [email], "user.emails");
    user = res.user;
  });

  await check("users.get returns the user with all list fields", async () => {
    const res = await client.users.get({ user_id: user.user_id });
    assertEq(res.status_code, 200, "status_code");
    assertEq(res.user_id, user.user_id, "user_id");
    assertEq(res.emails.length, 1, "emails.length");
    assertEq(res.emails[0].email, email, "emails[0].email");
    assert(idRe("email").test(res.emails[0].email_id), `email_id ${res.emails[0].email_id}`);
    assertEq(res.name.first_name, "Ada", "name.first_name");
    assertEq(res.name.last_name, "Lovelace", "name.last_name");
    assertEq(res.status, "active", "status");
    for (const f of ["phone_numbers", "webauthn_registrations", "providers", "totps", "crypto_wallets", "biometric_registrations"]) {
      assert(Array.isArray(res[f]), `${f} is not an array: ${JSON.stringify(res[f])}`);
    }
    assert(Array.isArray(res.roles) && res.roles.includes("stytch_user"), `roles ${JSON.stringify(res.roles)}`);
    assertEq(res.is_locked, false, "is_locked");
    assert(RFC3339.test(res.created_at), `created_at ${res.created_at}`);
  });

  await check("users.get unknown user -> 404 user_not_found", async () => {
    await expectStytchError(() => client.users.get({ user_id: `user-${ENV_NAME}-${rand()}` }), 404, "user_not_found");
  });

  // ---------------------------------------------------------------- magic links
  await check("magicLinks.create + authenticate starts a session", async () => {
    const ml = await client.magicLinks.create({ user_id: user.user_id });
    assertEq(ml.status_code, 200, "create status_code");
    assertEq(ml.user_id, user.user_id, "create user_id");
    assert(typeof ml.token === "string" && ml.token.length >= 20, `token ${ml.token}`);
    const res = await client.magicLinks.authenticate({ token: ml.token, session_duration_minutes: 60 });
    assertEq(res.status_code, 200, "status_code");
    assertEq(res.user_id, user.user_id, "user_id");
    assertEq(res.user.user_id, user.user_id, "user.user_id");
    assertEq(res.reset_sessions, false, "reset_sessions");
    assert(typeof res.method_id === "string", "method_id");
    assertToken(res.session_token);
    assert(res.session_jwt.split(".").length === 3, "session_jwt");
    assertSessionShape(res.session, user.user_id);
    assertMinutesFromNow(res.session.expires_at, 60, "expires_at");
    const f = res.session.authentication_factors;
    assertEq(f.length, 1, "factors.length");
    assertEq([f[0].type, f[0].delivery_method], ["magic_link", "embedded"], "factor type/delivery_method");
    assert(f[0].embeddable_magic_link_factor && typeof f[0].embeddable_magic_link_factor.embedded_id === "string", `factor detail ${JSON.stringify(f[0])}`);
    assertDeepEq(res.session.custom_claims, {}, "custom_claims");
    first = res;
    // the token is single use
    await expectStytchError(
      () => client.magicLinks.authenticate({ token: ml.token, session_duration_minutes: 60 }),
      404,
      "magic_link_not_found"
    );
  });

  await check("magicLinks.authenticate without duration starts no session", async () => {
    const ml = await client.magicLinks.create({ user_id: user.user_id });
    const res = await client.magicLinks.authenticate({ token: ml.token });
    assertEq(res.status_code, 200, "status_code");
    assertEq(res.user_id, user.user_id, "user_id");
    assert(res.session == null, `session ${JSON.stringify(res.session)}`);
    assertEq(res.session_token, "", "session_token");
    assertEq(res.session_jwt, "", "session_jwt");
  });

  const token = first && first.session_token;
  const sessionId = first && first.session.session_id;

  // ---------------------------------------------------------------- sessions.authenticate
  let lastJwt = first && first.session_jwt;
  await check("sessions.authenticate by token without duration keeps expires_at", async () => {
    await sleep(1100); // let last_accessed_at move on (second precision)
    const res = await client.sessions.authenticate({ session_token: token });
    assertEq(res.status_code, 200, "status_code");
    assertEq(res.session_token, token, "session_token unchanged");
    assertEq(res.session.session_id, sessionId, "session_id");
    assertEq(res.session.expires_at, first.session.expires_at, "expires_at");
    assert(Date.parse(res.session.last_accessed_at) > Date.parse(first.session.last_accessed_at), `last_accessed_at did not advance: ${first.session.last_accessed_at} -> ${res.session.last_accessed_at}`);
    assertEq(res.user.user_id, user.user_id, "user.user_id");
    assert(res.session_jwt.split(".").length === 3, "session_jwt");
    lastJwt = res.session_jwt;
  });

  await check("sessions.authenticate by token with session_duration_minutes sets expires_at", async () => {
    const res = await client.sessions.authenticate({ session_token: token, session_duration_minutes: 120 });
    assertMinutesFromNow(res.session.expires_at, 120, "expires_at");
    const res2 = await client.sessions.authenticate({ session_token: token, session_duration_minutes: 30 });
    assertMinutesFromNow(res2.session.expires_at, 30, "expires_at after shortening");
    lastJwt = res2.session_jwt;
  });

  await check("custom claims set; reserved names ignored", async () => {
    const res = await client.sessions.authenticate({
      session_token: token,
      session_custom_claims: {
        plan: "pro",
        org: { id: "o1", tier: 1 },
        iss: "evil",
        sub: "evil",
        "https://stytch.com/x": 1,
      },
    });
    assertDeepEq(res.session.custom_claims, { plan: "pro", org: { id: "o1", tier: 1 } }, "custom_claims");
    const { payload } = decodeJwt(res.session_jwt);
    assertEq(payload.iss, `stytch.com/${PROJECT_ID}`, "jwt iss");
    assertEq(payload.sub, user.user_id, "jwt sub");
    assertEq(payload.plan, "pro", "jwt plan claim");
    assertDeepEq(payload.org, { id: "o1", tier: 1 }, "jwt org claim");
    assert(!("https://stytch.com/x" in payload), "reserved https://stytch.com/x claim leaked into JWT");
    lastJwt = res.session_jwt;
  });

  await check("custom claims nested merge update", async () => {
    const res = await client.sessions.authenticate({
      session_token: token,
      session_custom_claims: { org: { tier: 2, region: "eu" } },
    });
    assertDeepEq(res.session.custom_claims, { plan: "pro", org: { id: "o1", tier: 2, region: "eu" } }, "custom_claims");
  });

  await check("custom claims deleted with null (top level and nested)", async () => {
    const res = await client.sessions.authenticate({
      session_token: token,
      session_custom_claims: { plan: null, org: { region: null } },
    });
    assertDeepEq(res.session.custom_claims, { org: { id: "o1", tier: 2 } }, "custom_claims");
    const again = await client.sessions.authenticate({ session_token: token });
    assertDeepEq(again.session.custom_claims, { org: { id: "o1", tier: 2 } }, "custom_claims persisted");
    lastJwt = again.session_jwt;
  });

  await check("custom claims over 4096 bytes -> 400 custom_claims_too_large, nothing changed", async () => {
    await expectStytchError(
      () => client.sessions.authenticate({ session_token: token, session_custom_claims: { big: "x".repeat(5000) } }),
      400,
      "custom_claims_too_large"
    );
    const res = await client.sessions.authenticate({ session_token: token });
    assertDeepEq(res.session.custom_claims, { org: { id: "o1", tier: 2 } }, "custom_claims unchanged");
    lastJwt = res.session_jwt;
  });

  await check("session JWT header and claims match the contract", async () => {
    const { header, payload } = decodeJwt(lastJwt);
    assertDeepEq(Object.keys(header).sort(), ["alg", "kid", "typ"], "header keys");
    assertEq(header.alg, "RS256", "alg");
    assertEq(header.typ, "JWT", "typ");
    assert(idRe("jwk").test(header.kid), `kid ${header.kid}`);
    assertEq(payload.iss, `stytch.com/${PROJECT_ID}`, "iss");
    assertEq(payload.aud, [PROJECT_ID], "aud");
    assertEq(payload.sub, user.user_id, "sub");
    assert(Number.isInteger(payload.iat) && payload.iat === payload.nbf, `iat ${payload.iat} nbf ${payload.nbf}`);
    assert(Number.isInteger(payload.exp) && payload.exp > payload.iat && payload.exp - payload.iat <= 300, `exp ${payload.exp} iat ${payload.iat}`);
    assert(!("jti" in payload), "jti present");
    const sc = payload["https://stytch.com/session"];
    assert(sc, "no https://stytch.com/session claim");
    assertDeepEq(
      Object.keys(sc).sort(),
      ["attributes", "authentication_factors", "expires_at", "id", "last_accessed_at", "roles", "started_at"],
      "session claim keys"
    );
    assertEq(sc.id, sessionId, "session claim id");
    assert(payload.exp <= Math.floor(Date.parse(sc.expires_at) / 1000), "exp later than session expiry");
    const stytchKeys = Object.keys(payload).filter((k) => k.startsWith("https://stytch.com/"));
    assertEq(stytchKeys, ["https://stytch.com/session"], "https://stytch.com/ claims");
    assertDeepEq(payload.org, { id: "o1", tier: 2 }, "custom claim org");
  });

  await check("sessions.authenticate by session_jwt", async () => {
    const res = await client.sessions.authenticate({ session_jwt: lastJwt });
    assertEq(res.status_code, 200, "status_code");
    assertEq(res.session.session_id, sessionId, "session_id");
    assertEq(res.session_token, "", "session_token is empty when authenticated by JWT");
    assert(res.session_jwt.split(".").length === 3, "new session_jwt");
    assertDeepEq(res.session.custom_claims, { org: { id: "o1", tier: 2 } }, "custom_claims");
    assertEq(res.user.user_id, user.user_id, "user.user_id");
    lastJwt = res.session_jwt;
  });

  await check("sessions.get lists the active session", async () => {
    const res = await client.sessions.get({ user_id: user.user_id });
    assertEq(res.status_code, 200, "status_code");
    assert(Array.isArray(res.sessions), "sessions not an array");
    const s = res.sessions.find((x) => x.session_id === sessionId);
    assert(s, `session ${sessionId} not in ${JSON.stringify(res.sessions.map((x) => x.session_id))}`);
    assertSessionShape(s, user.user_id);
    assertDeepEq(s.custom_claims, { org: { id: "o1", tier: 2 } }, "custom_claims");
  });

  await check("sessions.get unknown user -> 404 user_not_found", async () => {
    await expectStytchError(() => client.sessions.get({ user_id: `user-${ENV_NAME}-${rand()}` }), 404, "user_not_found");
  });

  // ---------------------------------------------------------------- JWKS
  await check("sessions.getJWKS returns complete keys", async () => {
    const res = await client.sessions.getJWKS({ project_id: PROJECT_ID });
    assertEq(res.status_code, 200, "status_code");
    assert(typeof res.request_id === "string" && res.request_id.length > 0, "request_id");
    assert(Array.isArray(res.keys) && res.keys.length >= 1, "keys empty");
    for (const k of res.keys) {
      for (const f of ["kty", "use", "key_ops", "alg", "kid", "n", "e", "x5c", "x5tS256", "x5t_s256"]) {
        assert(k[f] !== undefined && k[f] !== null, `key ${k.kid} lacks ${f}`);
      }
      assertEq([k.kty, k.use, k.alg], ["RSA", "sig", "RS256"], "kty/use/alg");
      assertEq(k.key_ops, ["verify"], "key_ops");
      assert(idRe("jwk").test(k.kid), `kid ${k.kid}`);
      assert(Array.isArray(k.x5c) && k.x5c.length >= 1, "x5c");
      const der = Buffer.from(k.x5c[0], "base64");
      const thumb = crypto.createHash("sha256").update(der).digest("base64url");
      assertEq(k.x5tS256, thumb, "x5tS256 = base64url(sha256(x5c[0]))");
      assertEq(k.x5t_s256, k.x5tS256, "x5t_s256");
      const cert = new crypto.X509Certificate(der);
      const pub = cert.publicKey.export({ format: "jwk" });
      assertEq([pub.n, pub.e], [k.n, k.e], "certificate key = n/e");
      assert(Buffer.from(k.n, "base64url").length === 256, "modulus is not 2048 bits");
    }
    const { header } = decodeJwt(lastJwt);
    assert(res.keys.some((k) => k.kid === header.kid), `JWT kid ${header.kid} not in JWKS`);
    jwks = res;
  });

  // ---------------------------------------------------------------- local JWT verification
  await check("sessions.authenticateJwtLocal verifies a fresh JWT and returns session fields", async () => {
    const fresh = await client.sessions.authenticate({ session_token: token });
    lastJwt = fresh.session_jwt;
    const s = await client.sessions.authenticateJwtLocal({ session_jwt: lastJwt, max_token_age_seconds: 60 });
    assertEq(s.session_id, sessionId, "session_id");
    assertEq(s.user_id, user.user_id, "user_id");
    assertDeepEq(s.custom_claims, { org: { id: "o1", tier: 2 } }, "custom_claims");
    assertEq(s.started_at, fresh.session.started_at, "started_at");
    assertEq(s.last_accessed_at, fresh.session.last_accessed_at, "last_accessed_at");
    assertEq(Date.parse(s.expires_at), Date.parse(fresh.session.expires_at), "expires_at");
    assertDeepEq(s.roles, fresh.session.roles, "roles");
    assertDeepEq(s.attributes, fresh.session.attributes, "attributes");
    assertDeepEq(s.authentication_factors, fresh.session.authentication_factors, "authentication_factors");
  });

  await check("sessions.authenticateJwtLocal without max age", async () => {
    const s = await client.sessions.authenticateJwtLocal({ session_jwt: lastJwt });
    assertEq(s.session_id, sessionId, "session_id");
  });

  await check("sessions.authenticateJwtLocal rejects a token older than max_token_age_seconds", async () => {
    await expectClientError(() => client.sessions.authenticateJwtLocal({ session_jwt: lastJwt, max_token_age_seconds: 0 }), "jwt_too_old");
    await sleep(2100);
    await expectClientError(() => client.sessions.authenticateJwtLocal({ session_jwt: lastJwt, max_token_age_seconds: 2 }), "jwt_too_old");
    // still fine with a generous age
    const s = await client.sessions.authenticateJwtLocal({ session_jwt: lastJwt, max_token_age_seconds: 300 });
    assertEq(s.session_id, sessionId, "session_id");
  });

  await check("sessions.authenticateJwtLocal rejects a tampered JWT", async () => {
    const [h, p, sig] = lastJwt.split(".");
    const payload = JSON.parse(Buffer.from(p, "base64url").toString());
    payload.org = { id: "evil" };
    const forged = `${h}.${Buffer.from(JSON.stringify(payload)).toString("base64url")}.${sig}`;
    await expectClientError(() => client.sessions.authenticateJwtLocal({ session_jwt: forged }), "jwt_invalid");
    await expectStytchError(() => client.sessions.authenticate({ session_jwt: forged }), 401, "unable_to_parse_session_jwt");
  });

  // ---------------------------------------------------------------- authenticateJwt (local or remote)
  await check("sessions.authenticateJwt uses the local path for a fresh JWT", async () => {
    const fresh = await client.sessions.authenticate({ session_token: token });
    const res = await client.sessions.authenticateJwt({ session_jwt: fresh.session_jwt, max_token_age_seconds: 60 });
    assert(!("status_code" in res), `looks like a remote answer: ${JSON.stringify(res).slice(0, 200)}`);
    assertEq(res.session_jwt, fresh.session_jwt, "session_jwt echoed");
    assertEq(res.session.session_id, sessionId, "session_id");
    assertDeepEq(res.session.custom_claims, { org: { id: "o1", tier: 2 } }, "custom_claims");
    lastJwt = fresh.session_jwt;
  });

  await check("sessions.authenticateJwt falls back to the API for a too-old JWT", async () => {
    await sleep(1100);
    const res = await client.sessions.authenticateJwt({ session_jwt: lastJwt, max_token_age_seconds: 1, session_duration_minutes: 45 });
    assertEq(res.status_code, 200, "status_code (remote answer)");
    assert(typeof res.request_id === "string" && res.request_id.startsWith(`request-id-${ENV_NAME}-`), `request_id ${res.request_id}`);
    assertEq(res.session.session_id, sessionId, "session_id");
    assertEq(res.session_token, "", "session_token");
    assert(res.session_jwt && res.session_jwt !== lastJwt, "no new JWT minted");
    assertMinutesFromNow(res.session.expires_at, 45, "expires_at (duration applied remotely)");
    lastJwt = res.session_jwt;
  });

  await check("sessions.authenticateJwt with max_token_age_seconds 0 forces the API", async () => {
    const res = await client.sessions.authenticateJwt({ session_jwt: lastJwt, max_token_age_seconds: 0 });
    assertEq(res.status_code, 200, "status_code (remote answer)");
    assertEq(res.session.session_id, sessionId, "session_id");
  });

  // ---------------------------------------------------------------- revoke
  await check("sessions.revoke by session_id", async () => {
    const s = await newMagicLinkSession(user.user_id);
    const res = await client.sessions.revoke({ session_id: s.session.session_id });
    assertEq(res.status_code, 200, "status_code");
    assert(typeof res.request_id === "string" && res.request_id.length > 0, "request_id");
    await expectStytchError(() => client.sessions.authenticate({ session_token: s.session_token }), 404, "session_not_found");
    await expectStytchError(() => client.sessions.revoke({ session_id: s.session.session_id }), 404, "session_not_found");
    const list = await client.sessions.get({ user_id: user.user_id });
    assert(!list.sessions.some((x) => x.session_id === s.session.session_id), "revoked session still listed");
  });

  await check("sessions.revoke by session_token", async () => {
    const s = await newMagicLinkSession(user.user_id);
    const res = await client.sessions.revoke({ session_token: s.session_token });
    assertEq(res.status_code, 200, "status_code");
    await expectStytchError(() => client.sessions.authenticate({ session_token: s.session_token }), 404, "session_not_found");
    await expectStytchError(() => client.sessions.authenticate({ session_jwt: s.session_jwt }), 404, "session_not_found");
  });

  await check("sessions.revoke by session_jwt; JWT still verifies locally, API rejects it", async () => {
    const s = await newMagicLinkSession(user.user_id);
    const res = await client.sessions.revoke({ session_jwt: s.session_jwt });
    assertEq(res.status_code, 200, "status_code");
    await expectStytchError(() => client.sessions.authenticate({ session_token: s.session_token }), 404, "session_not_found");
    await expectStytchError(() => client.sessions.authenticate({ session_jwt: s.session_jwt }), 404, "session_not_found");
    const local = await client.sessions.authenticateJwtLocal({ session_jwt: s.session_jwt });
    assertEq(local.session_id, s.session.session_id, "local session_id");
    await expectStytchError(
      () => client.sessions.authenticateJwt({ session_jwt: s.session_jwt, max_token_age_seconds: 0 }),
      404,
      "session_not_found"
    );
  });

  await check("sessions.revoke argument errors", async () => {
    await expectStytchError(() => client.sessions.revoke({}), 400, "no_session_revoke_arguments");
    await expectStytchError(
      () => client.sessions.revoke({ session_id: sessionId, session_token: token }),
      400,
      "too_many_session_revoke_arguments"
    );
    await expectStytchError(() => client.sessions.revoke({ session_id: "not-a-session-id" }), 400, "invalid_session_id");
    await expectStytchError(() => client.sessions.revoke({ session_id: `session-${ENV_NAME}-${rand()}` }), 404, "session_not_found");
    // the main session is untouched by all of that
    const res = await client.sessions.authenticate({ session_token: token });
    assertEq(res.session.session_id, sessionId, "session_id");
  });

  // ---------------------------------------------------------------- typed errors
  await check("bad secret -> 401 unauthorized_credentials", async () => {
    await expectStytchError(() => badClient.sessions.authenticate({ session_token: token }), 401, "unauthorized_credentials");
    await expectStytchError(() => badClient.users.get({ user_id: user.user_id }), 401, "unauthorized_credentials");
  });

  await check("unknown session token -> 404 session_not_found", async () => {
    const bogus = crypto.randomBytes(33).toString("base64url");
    await expectStytchError(() => client.sessions.authenticate({ session_token: bogus }), 404, "session_not_found");
  });

  await check("session_duration_minutes 4 -> 400 invalid_session_duration_minutes", async () => {
    await expectStytchError(
      () => client.sessions.authenticate({ session_token: token, session_duration_minutes: 4 }),
      400,
      "invalid_session_duration_minutes"
    );
  });

  await check("session_duration_minutes bounds: 5 and 527040 accepted, 527041 rejected", async () => {
    const lo = await client.sessions.authenticate({ session_token: token, session_duration_minutes: 5 });
    assertMinutesFromNow(lo.session.expires_at, 5, "expires_at for 5");
    const hi = await client.sessions.authenticate({ session_token: token, session_duration_minutes: 527040 });
    assertMinutesFromNow(hi.session.expires_at, 527040, "expires_at for 527040");
    await expectStytchError(
      () => client.sessions.authenticate({ session_token: token, session_duration_minutes: 527041 }),
      400,
      "invalid_session_duration_minutes"
    );
    await client.sessions.authenticate({ session_token: token, session_duration_minutes: 60 });
  });

  await check("both token and JWT -> 400 too_many_session_arguments", async () => {
    await expectStytchError(
      () => client.sessions.authenticate({ session_token: token, session_jwt: lastJwt }),
      400,
      "too_many_session_arguments"
    );
  });

  await check("neither token nor JWT -> 400 no_session_arguments", async () => {
    await expectStytchError(() => client.sessions.authenticate({}), 400, "no_session_arguments");
  });

  // ---------------------------------------------------------------- more users / magic links
  await check("users.update name and metadata", async () => {
    const res = await client.users.update({
      user_id: user.user_id,
      name: { first_name: "Augusta", last_name: "King" },
      trusted_metadata: { tier: "gold" },
      untrusted_metadata: { theme: "dark" },
    });
    assertEq(res.status_code, 200, "status_code");
    assertEq(res.user_id, user.user_id, "user_id");
    assertEq(res.emails.map((e) => e.email), [email], "emails");
    assertEq([res.phone_numbers, res.crypto_wallets], [[], []], "phone_numbers/crypto_wallets");
    assertEq(res.user.name.first_name, "Augusta", "user.name.first_name");
    const got = await client.users.get({ user_id: user.user_id });
    assertEq([got.name.first_name, got.name.last_name], ["Augusta", "King"], "name after update");
    assertDeepEq(got.trusted_metadata, { tier: "gold" }, "trusted_metadata");
    assertDeepEq(got.untrusted_metadata, { theme: "dark" }, "untrusted_metadata");
  });

  await check("users.create invalid email -> 400 invalid_email", async () => {
    await expectStytchError(() => client.users.create({ email: "not-an-email" }), 400, "invalid_email");
  });

  await check("magicLinks.create unknown user -> 404 user_not_found", async () => {
    await expectStytchError(() => client.magicLinks.create({ user_id: `user-${ENV_NAME}-${rand()}` }), 404, "user_not_found");
  });

  await check("users.delete unknown user -> 404 user_not_found", async () => {
    await expectStytchError(() => client.users.delete({ user_id: `user-${ENV_NAME}-${rand()}` }), 404, "user_not_found");
  });

  await check("magicLinks.authenticate with session_custom_claims", async () => {
    const s = await newMagicLinkSession(user.user_id, { session_custom_claims: { k: "v", iat: 1 } });
    assertDeepEq(s.session.custom_claims, { k: "v" }, "custom_claims");
    const { payload } = decodeJwt(s.session_jwt);
    assertEq(payload.k, "v", "jwt claim k");
    assert(payload.iat !== 1, "reserved iat overridden");
    await client.sessions.revoke({ session_id: s.session.session_id });
  });

  await check("magicLinks.authenticate with session_token adds the factor to that session", async () => {
    const s = await newMagicLinkSession(user.user_id);
    const ml = await client.magicLinks.create({ user_id: user.user_id });
    const res = await client.magicLinks.authenticate({ token: ml.token, session_token: s.session_token });
    assertEq(res.status_code, 200, "status_code");
    assertEq(res.session && res.session.session_id, s.session.session_id, "session_id (no new session)");
    assertEq(res.session_token, s.session_token, "session_token unchanged");
    assert(
      res.session.authentication_factors.some((f) => f.type === "magic_link" && f.delivery_method === "embedded"),
      `factors ${JSON.stringify(res.session.authentication_factors)}`
    );
    const ml2 = await client.magicLinks.create({ user_id: user.user_id });
    const res2 = await client.magicLinks.authenticate({ token: ml2.token, session_jwt: s.session_jwt });
    assertEq(res2.session && res2.session.session_id, s.session.session_id, "session_id via session_jwt");
    await client.sessions.revoke({ session_id: s.session.session_id });
  });

  await check("external_id works wherever a user_id is taken; sessions.get newest first", async () => {
    const ext = `ext-${rand()}`;
    const created = await client.users.create({ email: `node-ext-${rand()}@example.com`, external_id: ext });
    const got = await client.users.get({ user_id: ext });
    assertEq(got.user_id, created.user_id, "users.get by external_id");
    assertEq(got.external_id, ext, "external_id");
    const ml1 = await client.magicLinks.create({ user_id: ext });
    const s1 = await client.magicLinks.authenticate({ token: ml1.token, session_duration_minutes: 60 });
    assertEq(s1.session.user_id, created.user_id, "session.user_id is the real user_id");
    await sleep(1100);
    const s2 = await newMagicLinkSession(ext);
    const list = await client.sessions.get({ user_id: ext });
    assertEq(
      list.sessions.map((x) => x.session_id),
      [s2.session.session_id, s1.session.session_id],
      "sessions newest first"
    );
    const del = await client.users.delete({ user_id: ext });
    assertEq(del.status_code, 200, "users.delete by external_id");
    await expectStytchError(() => client.users.get({ user_id: created.user_id }), 404, "user_not_found");
  });

  await check("getJWKS answers whatever credentials are sent", async () => {
    const res = await badClient.sessions.getJWKS({ project_id: PROJECT_ID });
    assertEq(res.status_code, 200, "status_code");
    assert(res.keys.length >= 1, "keys");
  });

  // ---------------------------------------------------------------- RBAC (policy.json, set by run.sh)
  const POLICY = JSON.parse(
    readFileSync(process.env.HALLPASS_RBAC_POLICY_FILE || new URL("../policy.json", import.meta.url), "utf8")
  );
  const DENIED = "consumer_session_authorization_error";
  const sortBy = (xs, k) => [...xs].sort((a, b) => (a[k] < b[k] ? -1 : a[k] > b[k] ? 1 : 0));
  const claimRoles = (jwt) => decodeJwt(jwt).payload["https://stytch.com/session"].roles;
  const ac = (resource_id, action) => ({ resource_id, action });
  // Checks that no role of an editor (stytch_user + editor) grants.
  const EDITOR_DENIED = [ac("billing", "refund"), ac("billing", "read"), ac("documents", "delete"), ac("no_such_resource", "read"), ac("documents", "no_such_action")];
  async function expectDenied(fn, what) {
    try {
      return await expectStytchError(fn, 403, DENIED);
    } catch (e) {
      if (e instanceof CheckFailure) throw new CheckFailure(`${what}: ${e.message}`);
      throw e;
    }
  }
  let editor; // users.create with roles ["editor"]
  let editorSession; // its magic-link session (60 min)

  await check("rbac.policy returns the policy set with `hallpass rbac set`", async () => {
    const res = await client.rbac.policy();
    assertEq(res.status_code, 200, "status_code");
    assert(typeof res.request_id === "string" && res.request_id.startsWith(`request-id-${ENV_NAME}-`), `request_id ${res.request_id}`);
    const p = res.policy;
    assert(p && Array.isArray(p.roles) && Array.isArray(p.resources) && Array.isArray(p.scopes), `policy ${JSON.stringify(p).slice(0, 300)}`);
    const ids = p.roles.map((r) => r.role_id);
    assert(ids.includes("stytch_user") && ids.includes("editor"), `role ids ${JSON.stringify(ids)}`);
    assertDeepEq(sortBy(p.roles, "role_id"), sortBy(POLICY.roles, "role_id"), "roles");
    assertDeepEq(sortBy(p.resources, "resource_id"), sortBy(POLICY.resources, "resource_id"), "resources");
    assertDeepEq(sortBy(p.scopes, "scope"), sortBy(POLICY.scopes, "scope"), "scopes");
  });

  await check("users.create with roles [editor]: user, session and JWT carry stytch_user + editor", async () => {
    const res = await client.users.create({ email: `node-editor-${rand()}@example.com`, roles: ["editor"] });
    assertEq(res.status_code, 200, "status_code");
    assertEq(res.user.roles, ["stytch_user", "editor"], "user.roles");
    editor = res.user;
    const got = await client.users.get({ user_id: editor.user_id });
    assertEq(got.roles, ["stytch_user", "editor"], "users.get roles");
    const s = await newMagicLinkSession(editor.user_id);
    assertEq(s.session.roles, ["stytch_user", "editor"], "session.roles");
    assertEq(s.user.roles, ["stytch_user", "editor"], "authenticate user.roles");
    assertEq(claimRoles(s.session_jwt), ["stytch_user", "editor"], "JWT session claim roles");
    editorSession = s;
  });

  await check("users.create with an unknown role -> 400 bad_request naming it; nothing stored", async () => {
    const em = `node-badrole-${rand()}@example.com`;
    const err = await expectStytchError(() => client.users.create({ email: em, roles: ["editor", "no_such_role"] }), 400, "bad_request");
    assert(err.error_message.includes("no_such_role"), `error_message does not name the role: ${err.error_message}`);
    const again = await client.users.create({ email: em }); // the email is still free
    assertEq(again.user.roles, ["stytch_user"], "roles of a user created without roles");
    await client.users.delete({ user_id: again.user_id });
  });

  await check("sessions.authenticate with a granted authorization_check -> verdict with granting_roles", async () => {
    const t = editorSession.session_token;
    const w = await client.sessions.authenticate({ session_token: t, authorization_check: ac("documents", "write") });
    assertEq(w.status_code, 200, "status_code");
    assertEq(w.session.session_id, editorSession.session.session_id, "session_id");
    assertDeepEq(w.verdict, { authorized: true, granting_roles: ["editor"] }, "documents/write verdict");
    const r = await client.sessions.authenticate({ session_jwt: editorSession.session_jwt, authorization_check: ac("documents", "read") });
    assert(r.verdict && r.verdict.authorized === true, `documents/read verdict ${JSON.stringify(r.verdict)}`);
    assertEq([...r.verdict.granting_roles].sort(), ["editor", "stytch_user"], "documents/read granting_roles (by JWT)");
    const d = await client.sessions.authenticate({ session_token: t, session_duration_minutes: 90, authorization_check: ac("documents", "write") });
    assertEq(d.verdict && d.verdict.authorized, true, "authorized with session_duration_minutes");
    assertMinutesFromNow(d.session.expires_at, 90, "expires_at (granted call applies the duration)");
    const u = await client.sessions.authenticate({ session_token: token, authorization_check: ac("documents", "read") });
    assertDeepEq(u.verdict, { authorized: true, granting_roles: ["stytch_user"] }, "a stytch_user-only session's documents/read verdict");
  });

  await check("sessions.authenticate with a denied authorization_check -> 403 consumer_session_authorization_error", async () => {
    for (const [how, args] of [["token", { session_token: editorSession.session_token }], ["JWT", { session_jwt: editorSession.session_jwt }]]) {
      for (const c of EDITOR_DENIED) {
        await expectDenied(() => client.sessions.authenticate({ ...args, authorization_check: c }), `editor by ${how}, ${c.resource_id}/${c.action}`);
      }
    }
    await expectDenied(
      () => client.sessions.authenticate({ session_token: token, authorization_check: ac("documents", "write") }),
      "stytch_user-only session, documents/write"
    );
  });

  await check("a denied sessions.authenticate applies neither session_duration_minutes nor session_custom_claims", async () => {
    const t = editorSession.session_token;
    const before = await client.sessions.authenticate({ session_token: t });
    await sleep(1100);
    await expectDenied(
      () => client.sessions.authenticate({ session_token: t, session_duration_minutes: 240, session_custom_claims: { denied: true }, authorization_check: ac("billing", "refund") }),
      "by token with duration and claims"
    );
    await expectDenied(
      () => client.sessions.authenticate({ session_jwt: before.session_jwt, session_duration_minutes: 300, session_custom_claims: { denied: 2 }, authorization_check: ac("no_such_resource", "read") }),
      "by JWT with duration and claims"
    );
    const after = await client.sessions.authenticate({ session_token: t });
    assertEq(after.session.expires_at, before.session.expires_at, "expires_at");
    assertDeepEq(after.session.custom_claims, before.session.custom_claims, "custom_claims");
    assert(!("denied" in decodeJwt(after.session_jwt).payload), "a denied call's claim reached the JWT");
  });

  await check("malformed authorization_check -> 400 bad_request", async () => {
    const bad = [{}, { resource_id: "documents" }, { action: "read" }, { resource_id: "documents", action: 5 }, { resource_id: 7, action: "read" }, { resource_id: "documents", action: null }, "documents:read"];
    for (const c of bad) {
      try {
        await expectStytchError(() => client.sessions.authenticate({ session_token: editorSession.session_token, authorization_check: c }), 400, "bad_request");
      } catch (e) {
        if (e instanceof CheckFailure) throw new CheckFailure(`authorization_check ${JSON.stringify(c)}: ${e.message}`);
        throw e;
      }
    }
  });

  await check("sessions.authenticateJwtLocal with authorization_check: granted -> session, denied -> ClientError invalid_permissions", async () => {
    const fresh = await client.sessions.authenticate({ session_token: editorSession.session_token });
    const s = await client.sessions.authenticateJwtLocal({ session_jwt: fresh.session_jwt, authorization_check: ac("documents", "write") });
    assertEq(s.session_id, editorSession.session.session_id, "session_id");
    assertEq(s.roles, ["stytch_user", "editor"], "roles");
    const r = await client.sessions.authenticateJwtLocal({ session_jwt: fresh.session_jwt, authorization_check: ac("documents", "read") });
    assertEq(r.session_id, editorSession.session.session_id, "session_id (documents/read)");
    for (const c of EDITOR_DENIED) {
      try {
        await expectClientError(() => client.sessions.authenticateJwtLocal({ session_jwt: fresh.session_jwt, authorization_check: c }), "invalid_permissions");
      } catch (e) {
        if (e instanceof CheckFailure) throw new CheckFailure(`${c.resource_id}/${c.action}: ${e.message}`);
        throw e;
      }
    }
  });

  await check("sessions.authenticateJwt with authorization_check: granted locally, denied falls back to the API -> 403", async () => {
    const fresh = await client.sessions.authenticate({ session_token: editorSession.session_token });
    const ok = await client.sessions.authenticateJwt({ session_jwt: fresh.session_jwt, authorization_check: ac("documents", "write") });
    assert(!("status_code" in ok), `looks like a remote answer: ${JSON.stringify(ok).slice(0, 200)}`);
    assertEq(ok.session.session_id, editorSession.session.session_id, "session_id");
    await expectDenied(
      () => client.sessions.authenticateJwt({ session_jwt: fresh.session_jwt, authorization_check: ac("billing", "refund") }),
      "billing/refund (local denial, then the API)"
    );
    const remote = await client.sessions.authenticateJwt({ session_jwt: fresh.session_jwt, max_token_age_seconds: 0, authorization_check: ac("documents", "write") });
    assertEq(remote.status_code, 200, "status_code (remote answer)");
    assertDeepEq(remote.verdict, { authorized: true, granting_roles: ["editor"] }, "remote verdict");
  });

  await check("users.update roles [billing_admin] replaces editor and reaches the next session and JWT", async () => {
    const t = editorSession.session_token;
    const oldJwt = (await client.sessions.authenticate({ session_token: t })).session_jwt;
    const upd = await client.users.update({ user_id: editor.user_id, roles: ["billing_admin"] });
    assertEq(upd.status_code, 200, "status_code");
    assertEq(upd.user.roles, ["stytch_user", "billing_admin"], "users.update user.roles");
    const got = await client.users.get({ user_id: editor.user_id });
    assertEq(got.roles, ["stytch_user", "billing_admin"], "users.get roles");
    const res = await client.sessions.authenticate({ session_token: t });
    assertEq(res.session.roles, ["stytch_user", "billing_admin"], "session.roles on the next authenticate");
    assertEq(claimRoles(res.session_jwt), ["stytch_user", "billing_admin"], "new JWT session claim roles");
    const local = await client.sessions.authenticateJwtLocal({ session_jwt: res.session_jwt, authorization_check: ac("billing", "refund") });
    assertEq(local.roles, ["stytch_user", "billing_admin"], "local roles");
    await expectClientError(
      () => client.sessions.authenticateJwtLocal({ session_jwt: res.session_jwt, authorization_check: ac("documents", "write") }),
      "invalid_permissions"
    );
    // The API judges by the user's roles now, even for a JWT minted before the update ...
    const v = await client.sessions.authenticate({ session_jwt: oldJwt, authorization_check: ac("billing", "refund") });
    assertDeepEq(v.verdict, { authorized: true, granting_roles: ["billing_admin"] }, "billing/refund verdict with the pre-update JWT");
    assertEq(claimRoles(v.session_jwt), ["stytch_user", "billing_admin"], "JWT minted from the pre-update JWT");
    await expectDenied(
      () => client.sessions.authenticate({ session_jwt: oldJwt, authorization_check: ac("documents", "write") }),
      "documents/write with the pre-update JWT after editor was removed"
    );
    // ... while the old JWT itself is a signed snapshot (≤ 5 min): it still says editor locally.
    assertEq(claimRoles(oldJwt), ["stytch_user", "editor"], "pre-update JWT claim roles");
  });

  await check("users.update: unknown role -> 400 and nothing changes; without roles keeps them; roles [] clears them", async () => {
    const err = await expectStytchError(
      () => client.users.update({ user_id: editor.user_id, roles: ["billing_admin", "no_such_role"], name: { first_name: "Nope" } }),
      400,
      "bad_request"
    );
    assert(err.error_message.includes("no_such_role"), `error_message does not name the role: ${err.error_message}`);
    const got = await client.users.get({ user_id: editor.user_id });
    assertEq(got.roles, ["stytch_user", "billing_admin"], "roles after the refused update");
    assert(!got.name || got.name.first_name !== "Nope", "name changed by the refused update");
    const named = await client.users.update({ user_id: editor.user_id, name: { first_name: "Bill" } });
    assertEq(named.user.roles, ["stytch_user", "billing_admin"], "roles after an update without roles");
    const cleared = await client.users.update({ user_id: editor.user_id, roles: [] });
    assertEq(cleared.user.roles, ["stytch_user"], "roles after roles: []");
    const res = await client.sessions.authenticate({ session_token: editorSession.session_token, authorization_check: ac("documents", "read") });
    assertEq(res.session.roles, ["stytch_user"], "session.roles");
    assertDeepEq(res.verdict, { authorized: true, granting_roles: ["stytch_user"] }, "documents/read verdict");
    await expectDenied(
      () => client.sessions.authenticate({ session_token: editorSession.session_token, authorization_check: ac("billing", "refund") }),
      "billing/refund after roles: []"
    );
  });

  if (editor) {
    try {
      await client.users.delete({ user_id: editor.user_id });
    } catch {
      /* not an RBAC check */
    }
  }

  // ---------------------------------------------------------------- sessions.attest (profiles made by run.sh)
  // Tokens of "our own identity provider" are signed here with the ES256 key whose public half
  // run.sh gave `hallpass token-profile create`; a second key plays a forger.
  const attestKey = await importPKCS8(readFileSync(ATTEST_PRIVATE_KEY_FILE, "utf8"), "ES256");
  const forgerKey = (await generateKeyPair("ES256")).privateKey;
  // Signs {iss, aud, exp, iat, jti, email} (defaults valid for 5 min), overridden by `claims`;
  // a claim set to undefined is left out.
  async function idpToken(claims, key = attestKey) {
    const now = Math.floor(Date.now() / 1000);
    const payload = { iss: ATTEST_ISSUER, aud: ATTEST_AUDIENCE, iat: now, exp: now + 300, jti: `jti-${rand()}`, ...claims };
    for (const k of Object.keys(payload)) if (payload[k] === undefined) delete payload[k];
    return new SignJWT(payload).setProtectedHeader({ alg: "ES256", typ: "JWT" }).sign(key);
  }
  const trustedFactors = (session) =>
    session.authentication_factors.filter((f) => f.type === "trusted_auth_token");
  function assertTrustedFactor(f, jti) {
    assert(f, "no trusted_auth_token factor");
    assertEq([f.type, f.delivery_method], ["trusted_auth_token", "trusted_token_exchange"], "factor type/delivery_method");
    assertDeepEq(f.trusted_auth_token_factor, { token_id: jti }, "trusted_auth_token_factor");
    for (const k of ["created_at", "last_authenticated_at", "updated_at"]) {
      assert(RFC3339.test(f[k]), `factor.${k} = ${JSON.stringify(f[k])}`);
    }
  }
  const attestEmail = `node-attest-${rand()}@example.com`;
  let attestUser; // users.create; attest finds it by email
  let attested; // attest response with a session

  await check("users.create for the attest checks", async () => {
    const res = await client.users.create({ email: attestEmail });
    assertEq(res.status_code, 200, "status_code");
    attestUser = res.user;
  });

  await check("sessions.attest with session_duration_minutes starts a session with the trusted_auth_token factor", async () => {
    const jti = `jti-${rand()}`;
    // The email claim is matched case-insensitively.
    const token = await idpToken({ email: attestEmail.toUpperCase(), jti });
    const res = await client.sessions.attest({
      profile_id: ATTEST_PROFILE_ID,
      token,
      session_duration_minutes: 60,
      session_custom_claims: { idp: "sdk-tests", iss: "evil" },
    });
    assertEq(res.status_code, 200, "status_code");
    assert(typeof res.request_id === "string" && res.request_id.startsWith(`request-id-${ENV_NAME}-`), `request_id ${res.request_id}`);
    assertEq(res.user_id, attestUser.user_id, "user_id");
    assertEq(res.user.user_id, attestUser.user_id, "user.user_id");
    assertEq(res.user.emails.map((e) => e.email), [attestEmail], "user.emails");
    assertToken(res.session_token);
    assertSessionShape(res.session, attestUser.user_id);
    assertMinutesFromNow(res.session.expires_at, 60, "expires_at");
    assertEq(res.session.authentication_factors.length, 1, "factors.length");
    assertTrustedFactor(res.session.authentication_factors[0], jti);
    assertDeepEq(res.session.custom_claims, { idp: "sdk-tests" }, "custom_claims");
    const { payload } = decodeJwt(res.session_jwt);
    assertEq(payload.sub, attestUser.user_id, "jwt sub");
    assertEq(payload.idp, "sdk-tests", "jwt custom claim");
    assertEq(payload.iss, `stytch.com/${PROJECT_ID}`, "jwt iss");
    assertTrustedFactor(trustedFactors(payload["https://stytch.com/session"])[0], jti);
    attested = res;
  });

  await check("sessions.attest session_token and session_jwt work with sessions.authenticate and authenticateJwtLocal", async () => {
    const byToken = await client.sessions.authenticate({ session_token: attested.session_token });
    assertEq(byToken.session.session_id, attested.session.session_id, "session_id by token");
    assertDeepEq(byToken.session.authentication_factors, attested.session.authentication_factors, "factors by token");
    const byJwt = await client.sessions.authenticate({ session_jwt: attested.session_jwt });
    assertEq(byJwt.session.session_id, attested.session.session_id, "session_id by JWT");
    const local = await client.sessions.authenticateJwtLocal({ session_jwt: attested.session_jwt });
    assertEq(local.session_id, attested.session.session_id, "local session_id");
    assertEq(local.user_id, attestUser.user_id, "local user_id");
    assertDeepEq(local.authentication_factors, attested.session.authentication_factors, "local factors");
  });

  await check("sessions.attest without session_duration_minutes starts no session (aud as an array)", async () => {
    const before = await client.sessions.get({ user_id: attestUser.user_id });
    const token = await idpToken({ email: attestEmail, aud: ["another-app", ATTEST_AUDIENCE] });
    const res = await client.sessions.attest({ profile_id: ATTEST_PROFILE_ID, token });
    assertEq(res.status_code, 200, "status_code");
    assertEq(res.user_id, attestUser.user_id, "user_id");
    assertEq(res.user.user_id, attestUser.user_id, "user.user_id");
    assert(res.session == null, `session ${JSON.stringify(res.session)}`);
    assertEq(res.session_token, "", "session_token");
    assertEq(res.session_jwt, "", "session_jwt");
    const after = await client.sessions.get({ user_id: attestUser.user_id });
    assertEq(after.sessions.length, before.sessions.length, "number of sessions");
  });

  await check("sessions.attest JIT-provisions a user for a new email, then finds it", async () => {
    const newEmail = `node-attest-jit-${rand()}@example.com`;
    const res = await client.sessions.attest({
      profile_id: ATTEST_PROFILE_ID,
      token: await idpToken({ email: newEmail }),
      session_duration_minutes: 30,
    });
    assertEq(res.status_code, 200, "status_code");
    assert(idRe("user").test(res.user_id), `user_id ${res.user_id}`);
    assert(res.user_id !== attestUser.user_id, "JIT user is a new user");
    assertEq(res.user.user_id, res.user_id, "user.user_id");
    assertEq(res.user.emails.map((e) => [e.email, e.verified]), [[newEmail, true]], "user.emails");
    assertSessionShape(res.session, res.user_id);
    const got = await client.users.get({ user_id: res.user_id });
    assertEq(got.emails.map((e) => e.email), [newEmail], "users.get emails");
    const again = await client.sessions.attest({ profile_id: ATTEST_PROFILE_ID, token: await idpToken({ email: newEmail }) });
    assertEq(again.user_id, res.user_id, "second attest finds the provisioned user");
    const del = await client.users.delete({ user_id: res.user_id });
    assertEq(del.status_code, 200, "users.delete of the JIT user");
  });

  await check("sessions.attest unknown user on a profile without JIT provisioning -> 404 user_not_found", async () => {
    const newEmail = `node-attest-nojit-${rand()}@example.com`;
    const token = await idpToken({ email: newEmail });
    await expectStytchError(
      () => client.sessions.attest({ profile_id: ATTEST_PROFILE_ID_NO_JIT, token, session_duration_minutes: 30 }),
      404,
      "user_not_found"
    );
    // The same profile takes a known user.
    const res = await client.sessions.attest({ profile_id: ATTEST_PROFILE_ID_NO_JIT, token: await idpToken({ email: attestEmail }) });
    assertEq(res.user_id, attestUser.user_id, "known user via the non-JIT profile");
  });

  await check("sessions.attest replay of the same token -> 400 trusted_auth_token_already_used", async () => {
    const token = await idpToken({ email: attestEmail });
    const res = await client.sessions.attest({ profile_id: ATTEST_PROFILE_ID, token, session_duration_minutes: 30 });
    assertEq(res.status_code, 200, "first use");
    await expectStytchError(
      () => client.sessions.attest({ profile_id: ATTEST_PROFILE_ID, token, session_duration_minutes: 30 }),
      400,
      "trusted_auth_token_already_used"
    );
    await expectStytchError(
      () => client.sessions.attest({ profile_id: ATTEST_PROFILE_ID, token }),
      400,
      "trusted_auth_token_already_used"
    );
    await client.sessions.revoke({ session_id: res.session.session_id });
  });

  await check("sessions.attest token signed by another key -> 401 invalid_trusted_auth_token_signature", async () => {
    const forged = await idpToken({ email: attestEmail }, forgerKey);
    await expectStytchError(
      () => client.sessions.attest({ profile_id: ATTEST_PROFILE_ID, token: forged, session_duration_minutes: 30 }),
      401,
      "invalid_trusted_auth_token_signature"
    );
    // A valid token with its payload swapped for another email.
    const [h, , s] = (await idpToken({ email: attestEmail })).split(".");
    const p = Buffer.from(JSON.stringify({ iss: ATTEST_ISSUER, aud: ATTEST_AUDIENCE, exp: Math.floor(Date.now() / 1000) + 300, jti: rand(), email: "someone-else@example.com" })).toString("base64url");
    await expectStytchError(
      () => client.sessions.attest({ profile_id: ATTEST_PROFILE_ID, token: `${h}.${p}.${s}` }),
      401,
      "invalid_trusted_auth_token_signature"
    );
  });

  await check("sessions.attest expired token -> 401 trusted_auth_token_expired", async () => {
    const now = Math.floor(Date.now() / 1000);
    const token = await idpToken({ email: attestEmail, iat: now - 600, exp: now - 120 });
    await expectStytchError(
      () => client.sessions.attest({ profile_id: ATTEST_PROFILE_ID, token, session_duration_minutes: 30 }),
      401,
      "trusted_auth_token_expired"
    );
  });

  await check("sessions.attest token not valid yet (nbf in the future) -> 401 trusted_auth_token_not_yet_valid", async () => {
    const now = Math.floor(Date.now() / 1000);
    const token = await idpToken({ email: attestEmail, nbf: now + 300, exp: now + 600 });
    await expectStytchError(
      () => client.sessions.attest({ profile_id: ATTEST_PROFILE_ID, token, session_duration_minutes: 30 }),
      401,
      "trusted_auth_token_not_yet_valid"
    );
  });

  await check("sessions.attest wrong issuer -> 401 invalid_trusted_auth_token_issuer", async () => {
    const token = await idpToken({ email: attestEmail, iss: "https://idp.elsewhere.example/" });
    await expectStytchError(
      () => client.sessions.attest({ profile_id: ATTEST_PROFILE_ID, token, session_duration_minutes: 30 }),
      401,
      "invalid_trusted_auth_token_issuer"
    );
  });

  await check("sessions.attest wrong audience -> 401 invalid_trusted_auth_token_audience", async () => {
    for (const aud of ["another-app", ["another-app", "yet-another"]]) {
      const token = await idpToken({ email: attestEmail, aud });
      await expectStytchError(
        () => client.sessions.attest({ profile_id: ATTEST_PROFILE_ID, token, session_duration_minutes: 30 }),
        401,
        "invalid_trusted_auth_token_audience"
      );
    }
  });

  await check("sessions.attest without the email or jti claim -> 400 trusted_auth_token_missing_claim", async () => {
    for (const claims of [{ email: undefined }, { email: attestEmail, jti: undefined }]) {
      const token = await idpToken(claims);
      await expectStytchError(
        () => client.sessions.attest({ profile_id: ATTEST_PROFILE_ID, token, session_duration_minutes: 30 }),
        400,
        "trusted_auth_token_missing_claim"
      );
    }
  });

  await check("sessions.attest unknown profile -> 404 trusted_auth_token_profile_not_found", async () => {
    const token = await idpToken({ email: attestEmail });
    await expectStytchError(
      () => client.sessions.attest({ profile_id: `trusted-auth-token-profile-${ENV_NAME}-${rand()}`, token }),
      404,
      "trusted_auth_token_profile_not_found"
    );
  });

  await check("sessions.attest with session_token adds the factor to that session", async () => {
    const s = await newMagicLinkSession(attestUser.user_id);
    const jti = `jti-${rand()}`;
    const res = await client.sessions.attest({
      profile_id: ATTEST_PROFILE_ID,
      token: await idpToken({ email: attestEmail, jti }),
      session_token: s.session_token,
    });
    assertEq(res.status_code, 200, "status_code");
    assertEq(res.session && res.session.session_id, s.session.session_id, "session_id (no new session)");
    assertEq(res.session_token, s.session_token, "session_token unchanged");
    assertDeepEq(
      res.session.authentication_factors.map((f) => [f.type, f.delivery_method]),
      [["magic_link", "embedded"], ["trusted_auth_token", "trusted_token_exchange"]],
      "factors"
    );
    assertTrustedFactor(trustedFactors(res.session)[0], jti);
    const auth = await client.sessions.authenticate({ session_token: s.session_token });
    assertDeepEq(auth.session.authentication_factors, res.session.authentication_factors, "factors on sessions.authenticate");
    const { payload } = decodeJwt(res.session_jwt);
    assertTrustedFactor(trustedFactors(payload["https://stytch.com/session"])[0], jti);
    // and by session_jwt, with a longer duration
    const jti2 = `jti-${rand()}`;
    const res2 = await client.sessions.attest({
      profile_id: ATTEST_PROFILE_ID,
      token: await idpToken({ email: attestEmail, jti: jti2 }),
      session_jwt: res.session_jwt,
      session_duration_minutes: 120,
    });
    assertEq(res2.session && res2.session.session_id, s.session.session_id, "session_id via session_jwt");
    assertMinutesFromNow(res2.session.expires_at, 120, "expires_at extended");
    assertDeepEq(trustedFactors(res2.session).map((f) => f.trusted_auth_token_factor.token_id), [jti2], "trusted factor (latest token_id)");
    await client.sessions.revoke({ session_id: s.session.session_id });
  });

  await check("sessions.attest for another user's or an unknown session -> 404 session_not_found; the token stays unused", async () => {
    const other = await client.users.create({ email: `node-attest-other-${rand()}@example.com` });
    const otherSession = await newMagicLinkSession(other.user_id);
    const token = await idpToken({ email: attestEmail });
    await expectStytchError(
      () => client.sessions.attest({ profile_id: ATTEST_PROFILE_ID, token, session_token: otherSession.session_token }),
      404,
      "session_not_found"
    );
    await expectStytchError(
      () => client.sessions.attest({ profile_id: ATTEST_PROFILE_ID, token, session_token: crypto.randomBytes(33).toString("base64url") }),
      404,
      "session_not_found"
    );
    const ok = await client.sessions.attest({ profile_id: ATTEST_PROFILE_ID, token });
    assertEq(ok.user_id, attestUser.user_id, "the refused token is accepted afterwards");
    const otherAuth = await client.sessions.authenticate({ session_token: otherSession.session_token });
    assertEq(trustedFactors(otherAuth.session).length, 0, "no factor added to the other user's session");
    await client.users.delete({ user_id: other.user_id });
  });

  if (typeof client.sessions.exchangeAccessToken === "function") {
    await check("sessions.exchangeAccessToken -> 400 bad_request pointing to attest", async () => {
      const err = await expectStytchError(
        () => client.sessions.exchangeAccessToken({ access_token: "any-access-token", session_duration_minutes: 30 }),
        400,
        "bad_request"
      );
      assert(/attest/.test(err.error_message), `error_message ${JSON.stringify(err.error_message)} does not mention attest`);
    });
  }

  if (attestUser) {
    try {
      await client.users.delete({ user_id: attestUser.user_id });
    } catch {
      /* reported above */
    }
  }

  // ---------------------------------------------------------------- migrate
  let migUser;
  await check("users.create with the UserInfo email", async () => {
    const res = await client.users.create({ email: USERINFO_EMAIL, name: { first_name: "Mig", last_name: "Rant" } });
    assertEq(res.status_code, 200, "status_code");
    migUser = res.user;
  });

  await check("users.create duplicate email -> 400 duplicate_email", async () => {
    await expectStytchError(() => client.users.create({ email: USERINFO_EMAIL }), 400, "duplicate_email");
  });

  let migToken;
  await check("sessions.migrate with duration starts a session for the UserInfo user", async () => {
    const res = await client.sessions.migrate({ session_token: "good-token", session_duration_minutes: 60 });
    assertEq(res.status_code, 200, "status_code");
    assertEq(res.user_id, migUser.user_id, "user_id");
    assertEq(res.user.user_id, migUser.user_id, "user.user_id");
    assertToken(res.session_token);
    assert(res.session_jwt.split(".").length === 3, "session_jwt");
    assertSessionShape(res.session, migUser.user_id);
    assertMinutesFromNow(res.session.expires_at, 60, "expires_at");
    const f = res.session.authentication_factors;
    assertEq(f.map((x) => [x.type, x.delivery_method]), [["imported", "imported_auth0"]], "factors");
    const auth = await client.sessions.authenticate({ session_token: res.session_token });
    assertEq(auth.session.session_id, res.session.session_id, "authenticated session_id");
    const local = await client.sessions.authenticateJwtLocal({ session_jwt: res.session_jwt });
    assertEq(local.user_id, migUser.user_id, "local user_id");
    migToken = res.session_token;
  });

  await check("sessions.migrate with custom claims", async () => {
    const res = await client.sessions.migrate({
      session_token: "good-token",
      session_duration_minutes: 15,
      session_custom_claims: { source: "auth0", iss: "evil" },
    });
    assertDeepEq(res.session.custom_claims, { source: "auth0" }, "custom_claims");
    const { payload } = decodeJwt(res.session_jwt);
    assertEq(payload.source, "auth0", "jwt source claim");
    assertEq(payload.iss, `stytch.com/${PROJECT_ID}`, "jwt iss");
  });

  await check("sessions.migrate without duration returns no session", async () => {
    const res = await client.sessions.migrate({ session_token: "good-token" });
    assertEq(res.status_code, 200, "status_code");
    assertEq(res.user_id, migUser.user_id, "user_id");
    assert(res.session == null, `session ${JSON.stringify(res.session)}`);
    assertEq(res.session_token, "", "session_token");
    assertEq(res.session_jwt, "", "session_jwt");
  });

  await check("sessions.migrate unknown email -> 404 migrate_from_external_email_does_not_exist", async () => {
    await expectStytchError(
      () => client.sessions.migrate({ session_token: "unknown-email", session_duration_minutes: 60 }),
      404,
      "migrate_from_external_email_does_not_exist"
    );
  });

  await check("sessions.migrate rejected IdP token -> 400 migrate_from_external_unexpected_response", async () => {
    await expectStytchError(
      () => client.sessions.migrate({ session_token: "bad-token", session_duration_minutes: 60 }),
      400,
      "migrate_from_external_unexpected_response"
    );
  });

  // ---------------------------------------------------------------- users.delete
  await check("users.delete removes the user and revokes its sessions", async () => {
    const res = await client.users.delete({ user_id: migUser.user_id });
    assertEq(res.status_code, 200, "status_code");
    assertEq(res.user_id, migUser.user_id, "user_id");
    await expectStytchError(() => client.users.get({ user_id: migUser.user_id }), 404, "user_not_found");
    await expectStytchError(() => client.sessions.authenticate({ session_token: migToken }), 404, "session_not_found");
    migUser = null;
  });

  await check("users.delete main user; its session is gone", async () => {
    const res = await client.users.delete({ user_id: user.user_id });
    assertEq(res.status_code, 200, "status_code");
    await expectStytchError(() => client.sessions.authenticate({ session_token: token }), 404, "session_not_found");
    await expectStytchError(() => client.sessions.authenticate({ session_jwt: lastJwt }), 404, "session_not_found");
  });

  // Make sure the UserInfo email is free for the next suite even if a check above failed.
  if (migUser) {
    try {
      await client.users.delete({ user_id: migUser.user_id });
    } catch {
      /* reported above */
    }
  }
}

try {
  await main();
} catch (e) {
  failed++;
  console.log(`FAIL - suite crashed: ${e && e.stack}`);
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed > 0 ? 1 : 0);
