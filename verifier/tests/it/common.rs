//! A fake hallpass on 127.0.0.1 (JWKS with Cache-Control/ETag/304, the revocation feed as
//! poll, long-poll and SSE with 410 past its window, private feeds, the RBAC policy), RSA keys
//! made once per test binary, and JWT signing with whatever header and claims a test wants.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hallpass_verifier::{ManualClock, Verifier, VerifierBuilder};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;

pub const PROJECT: &str = "project-test-6a1f0c2e-7d4b-4c1e-9f3a-2b8d5e6f7a80";
pub const SECRET: &str = "secret-test-0123456789abcdef0123456789abcdef";
/// 2027-01-15T08:00:00Z: every test's clock starts here.
pub const T0: u64 = 1_800_000_000;

/// A signing key of the fake hallpass.
pub struct Key {
    pub kid: String,
    pair: KeyPair,
}

impl Key {
    fn generate(kid: &str) -> Self {
        Self {
            kid: kid.to_string(),
            pair: KeyPair::generate(KeySize::Rsa2048).unwrap(),
        }
    }

    /// The JWK, as hallpass publishes it.
    pub fn jwk(&self) -> Value {
        let public = self.pair.public_key();
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        json!({
            "kty": "RSA", "use": "sig", "key_ops": ["verify"], "alg": "RS256",
            "kid": self.kid,
            "n": b64(public.modulus().big_endian_without_leading_zero()),
            "e": b64(public.exponent().big_endian_without_leading_zero()),
            "x5c": ["MIIB"], "x5tS256": "abc", "x5t_s256": "abc",
        })
    }

    /// A compact JWS of `header` and `claims`, signed RS256 with this key.
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0; self.pair.public_modulus_len()];
        self.pair
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .unwrap();
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    /// A JWT as hallpass mints it for `session_id` at `now` (Unix seconds).
    pub fn mint(&self, session_id: &str, now: u64) -> String {
        self.sign(&header(&self.kid), &claims(session_id, now))
    }
}

/// Two keys, made once per test binary (RSA key generation is the slow part).
pub fn keys() -> &'static [Key; 2] {
    static KEYS: OnceLock<[Key; 2]> = OnceLock::new();
    KEYS.get_or_init(|| {
        [
            Key::generate("jwk-test-0b4f5c3a-1111-4aaa-8bbb-000000000001"),
            Key::generate("jwk-test-0b4f5c3a-2222-4aaa-8bbb-000000000002"),
        ]
    })
}

pub fn header(kid: &str) -> Value {
    json!({"alg": "RS256", "typ": "JWT", "kid": kid})
}

pub fn rfc3339(unix: u64) -> String {
    let t = time::OffsetDateTime::from(UNIX_EPOCH + Duration::from_secs(unix));
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// Claims exactly as hallpass mints them, `now` in Unix seconds.
pub fn claims(session_id: &str, now: u64) -> Value {
    json!({
        "tier": "gold",
        "aud": [PROJECT],
        "exp": now + 300,
        "iat": now,
        "iss": format!("stytch.com/{PROJECT}"),
        "nbf": now,
        "https://stytch.com/session": {
            "id": session_id,
            "started_at": rfc3339(now - 60),
            "last_accessed_at": rfc3339(now),
            "expires_at": rfc3339(now + 3600),
            "attributes": {"ip_address": "203.0.113.7", "user_agent": "curl/8"},
            "authentication_factors": [{
                "type": "password", "delivery_method": "knowledge",
                "last_authenticated_at": rfc3339(now - 60),
                "created_at": rfc3339(now - 60), "updated_at": rfc3339(now - 60),
            }],
            "roles": ["stytch_user", "editor"],
        },
        "sub": "user-test-3c1d2e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f",
    })
}

pub fn session_id(n: u32) -> String {
    format!("session-test-00000000-0000-4000-8000-{n:012}")
}

/// A clock stopped at [`T0`].
pub fn clock() -> ManualClock {
    ManualClock::at_unix(T0)
}

/// A builder for the fake's project, with the given clock and a short unknown-kid cooldown.
pub fn builder(fake: &Fake, clock: &ManualClock) -> VerifierBuilder {
    Verifier::builder(&fake.url, PROJECT)
        .clock(clock.clone())
        .http_timeout(Duration::from_secs(5))
}

/// Polls `condition` every 10 ms until it holds; panics after `within`. Returns how long it
/// took.
pub async fn eventually(
    within: Duration,
    what: &str,
    mut condition: impl AsyncFnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        if condition().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One request the fake received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    pub query: Option<String>,
    pub if_none_match: Option<String>,
    pub last_event_id: Option<String>,
    pub authorization: Option<String>,
}

struct FeedEvent {
    cursor: u64,
    json: Value,
}

struct FakeState {
    keys: Vec<Value>,
    etag_version: u64,
    max_age: u64,
    down: bool,
    jwks_requests: Vec<Seen>,
    events: VecDeque<FeedEvent>,
    next_cursor: u64,
    /// A cursor below this is answered 410.
    horizon: u64,
    page_cap: usize,
    stream_enabled: bool,
    stream_requests: Vec<Seen>,
    poll_requests: Vec<Seen>,
    feed_secret: Option<String>,
    policy: Value,
    policy_status: u16,
    policy_requests: Vec<Seen>,
}

type Shared = Arc<Mutex<FakeState>>;

#[derive(Clone)]
struct AppState {
    state: Shared,
    head: watch::Sender<u64>,
    generation: watch::Sender<u64>,
}

/// The fake hallpass. Dropping it stops accepting connections.
pub struct Fake {
    pub url: String,
    app: AppState,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.server.abort();
        // End open streams too.
        self.app.generation.send_modify(|g| *g += 1);
    }
}

fn seen(headers: &HeaderMap, query: Option<String>) -> Seen {
    let h = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    Seen {
        query,
        if_none_match: h(header::IF_NONE_MATCH),
        last_event_id: h(header::HeaderName::from_static("last-event-id")),
        authorization: h(header::AUTHORIZATION),
    }
}

fn error(status: StatusCode, error_type: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({
            "status_code": status.as_u16(), "request_id": "request-id-test-x",
            "error_type": error_type, "error_message": "fake", "error_url": "https://stytch.com/docs/api/errors/x",
        })
        .to_string(),
    )
        .into_response()
}

fn ok_json(body: Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn jwks(
    State(app): State<AppState>,
    Path(project): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut s = app.state.lock().unwrap();
    let request = seen(&headers, None);
    let asked = request.if_none_match.clone();
    s.jwks_requests.push(request);
    if s.down {
        return error(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable");
    }
    if project != PROJECT {
        return error(StatusCode::NOT_FOUND, "not_found");
    }
    let etag = format!("\"v{}\"", s.etag_version);
    let cache = format!("public, max-age={}", s.max_age);
    let headers = [(header::ETAG, etag.clone()), (header::CACHE_CONTROL, cache)];
    if asked.is_some_and(|v| v.split(',').any(|t| t.trim() == etag)) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    let body = json!({"keys": s.keys, "request_id": "request-id-test-j", "status_code": 200});
    (headers, ok_json(body)).into_response()
}

fn authorized(s: &FakeState, headers: &HeaderMap) -> bool {
    match &s.feed_secret {
        None => true,
        Some(secret) => {
            let want = format!("Basic {}", STANDARD.encode(format!("{PROJECT}:{secret}")));
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                == Some(want.as_str())
        }
    }
}

#[derive(Deserialize)]
struct PollQuery {
    after: Option<u64>,
    wait: Option<u64>,
    limit: Option<usize>,
}

/// Events after `after` (all kept ones without it), at most `limit`; and whether more remain.
fn page(s: &FakeState, after: Option<u64>, limit: usize) -> (Vec<Value>, u64, bool) {
    let after_cursor = after.unwrap_or(0);
    let pending: Vec<&FeedEvent> = s
        .events
        .iter()
        .filter(|e| after.is_none() || e.cursor > after_cursor)
        .collect();
    let taken: Vec<Value> = pending.iter().take(limit).map(|e| e.json.clone()).collect();
    let next = pending[..pending.len().min(limit)]
        .last()
        .map_or(after_cursor.max(s.next_cursor - 1), |e| e.cursor);
    (taken, next, pending.len() > limit)
}

async fn poll(
    State(app): State<AppState>,
    Query(q): Query<PollQuery>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    let mut head = app.head.subscribe();
    {
        let mut s = app.state.lock().unwrap();
        s.poll_requests
            .push(seen(&headers, uri.query().map(str::to_string)));
        if s.down {
            return error(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable");
        }
        if !authorized(&s, &headers) {
            return error(StatusCode::UNAUTHORIZED, "unauthorized_credentials");
        }
        if q.after.is_some_and(|a| a < s.horizon) {
            return error(StatusCode::GONE, "revocation_cursor_expired");
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(q.wait.unwrap_or(0).min(30));
    loop {
        {
            let s = app.state.lock().unwrap();
            if s.down {
                return error(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable");
            }
            let limit = q.limit.unwrap_or(1000).min(s.page_cap);
            let (events, next, has_more) = page(&s, q.after, limit);
            if !events.is_empty() || tokio::time::Instant::now() >= deadline {
                return ok_json(json!({
                    "request_id": "request-id-test-p", "status_code": 200,
                    "events": events, "next_cursor": next.to_string(), "has_more": has_more,
                }));
            }
        }
        let _ = tokio::time::timeout_at(deadline, head.changed()).await;
    }
}

async fn stream(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let after = {
        let mut s = app.state.lock().unwrap();
        s.stream_requests.push(seen(&headers, None));
        if s.down {
            return error(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable");
        }
        if !s.stream_enabled {
            return error(StatusCode::NOT_FOUND, "not_found");
        }
        if !authorized(&s, &headers) {
            return error(StatusCode::UNAUTHORIZED, "unauthorized_credentials");
        }
        let after = headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if after.is_some_and(|a| a < s.horizon) {
            return error(StatusCode::GONE, "revocation_cursor_expired");
        }
        after
    };
    struct Follow {
        app: AppState,
        cursor: Option<u64>,
        pending: VecDeque<(u64, Value)>,
        head: watch::Receiver<u64>,
        generation: watch::Receiver<u64>,
    }
    let mut generation = app.generation.subscribe();
    generation.mark_unchanged();
    let follow = Follow {
        head: app.head.subscribe(),
        generation,
        app,
        cursor: after,
        pending: VecDeque::new(),
    };
    let events = futures_util::stream::unfold(follow, |mut f| async move {
        loop {
            if let Some((cursor, json)) = f.pending.pop_front() {
                f.cursor = Some(cursor);
                let event = SseEvent::default()
                    .id(cursor.to_string())
                    .event("revocation")
                    .data(json.to_string());
                return Some((Ok::<_, Infallible>(event), f));
            }
            f.head.mark_unchanged();
            {
                let s = f.app.state.lock().unwrap();
                let (events, _, _) = page(&s, f.cursor, usize::MAX);
                for e in events {
                    let c = e["cursor"].as_str().unwrap().parse().unwrap();
                    f.pending.push_back((c, e));
                }
            }
            if !f.pending.is_empty() {
                continue;
            }
            tokio::select! {
                _ = f.head.changed() => {}
                _ = f.generation.changed() => return None,
            }
        }
    });
    Sse::new(events)
        .keep_alive(
            KeepAlive::new()
                .interval(Duration::from_secs(15))
                .text("keep-alive"),
        )
        .into_response()
}

async fn policy(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let mut s = app.state.lock().unwrap();
    s.policy_requests.push(seen(&headers, None));
    let want = format!("Basic {}", STANDARD.encode(format!("{PROJECT}:{SECRET}")));
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some(want.as_str())
    {
        return error(StatusCode::UNAUTHORIZED, "unauthorized_credentials");
    }
    if s.policy_status != 200 {
        let status = StatusCode::from_u16(s.policy_status).unwrap();
        return error(status, "internal_server_error");
    }
    ok_json(json!({"request_id": "request-id-test-r", "status_code": 200, "policy": s.policy}))
}

/// Stytch's sample policy (as hallpass serves it, `stytch_user` first).
pub fn sample_policy() -> Value {
    json!({
        "roles": [
            {"role_id": "stytch_user", "description": "Every user holds this role.", "permissions": []},
            {"role_id": "editor", "description": "Edits documents", "permissions": [
                {"resource_id": "documents", "actions": ["read", "write"]}]},
            {"role_id": "billing_admin", "description": "", "permissions": [
                {"resource_id": "billing", "actions": ["*"]}]},
        ],
        "resources": [
            {"resource_id": "documents", "description": "", "actions": ["read", "write", "delete"]},
            {"resource_id": "billing", "description": "", "actions": ["read", "refund"]},
        ],
        "scopes": [],
    })
}

impl Fake {
    /// Starts a fake hallpass publishing the first test key.
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(FakeState {
            keys: vec![keys()[0].jwk()],
            etag_version: 1,
            max_age: 300,
            down: false,
            jwks_requests: Vec::new(),
            events: VecDeque::new(),
            next_cursor: 1,
            horizon: 0,
            page_cap: 1000,
            stream_enabled: true,
            stream_requests: Vec::new(),
            poll_requests: Vec::new(),
            feed_secret: None,
            policy: sample_policy(),
            policy_status: 200,
            policy_requests: Vec::new(),
        }));
        let app = AppState {
            state,
            head: watch::channel(0).0,
            generation: watch::channel(0).0,
        };
        let router = Router::new()
            .route("/v1/sessions/jwks/{project}", get(jwks))
            .route("/v1/sessions/revocations/{project}", get(poll))
            .route("/v1/sessions/revocations/{project}/stream", get(stream))
            .route("/v1/rbac/policy", get(policy))
            .with_state(app.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { url, app, server }
    }

    fn with<T>(&self, f: impl FnOnce(&mut FakeState) -> T) -> T {
        f(&mut self.app.state.lock().unwrap())
    }

    /// Publishes these keys (a new ETag).
    pub fn set_keys(&self, keys: Vec<Value>) {
        self.with(|s| {
            s.keys = keys;
            s.etag_version += 1;
        });
    }

    pub fn set_max_age(&self, seconds: u64) {
        self.with(|s| s.max_age = seconds);
    }

    /// Every endpoint answers 503 while down.
    pub fn set_down(&self, down: bool) {
        self.with(|s| s.down = down);
        // Wake long-polls so they answer as the server now would.
        self.app.head.send_modify(|_| ());
    }

    pub fn set_stream_enabled(&self, on: bool) {
        self.with(|s| s.stream_enabled = on);
    }

    pub fn set_page_cap(&self, cap: usize) {
        self.with(|s| s.page_cap = cap);
    }

    pub fn set_feed_secret(&self, secret: Option<&str>) {
        self.with(|s| s.feed_secret = secret.map(str::to_string));
    }

    pub fn set_policy_status(&self, status: u16) {
        self.with(|s| s.policy_status = status);
    }

    pub fn jwks_requests(&self) -> Vec<Seen> {
        self.with(|s| s.jwks_requests.clone())
    }

    pub fn stream_requests(&self) -> Vec<Seen> {
        self.with(|s| s.stream_requests.clone())
    }

    pub fn poll_requests(&self) -> Vec<Seen> {
        self.with(|s| s.poll_requests.clone())
    }

    pub fn policy_requests(&self) -> Vec<Seen> {
        self.with(|s| s.policy_requests.clone())
    }

    /// Publishes a revocation of `session_id` whose JWTs expire by `jwt_expires_by` (Unix
    /// seconds); returns its cursor.
    pub fn revoke(&self, session_id: &str, jwt_expires_by: u64) -> u64 {
        let cursor = self.with(|s| {
            let cursor = s.next_cursor;
            s.next_cursor += 1;
            s.events.push_back(FeedEvent {
                cursor,
                json: json!({
                    "cursor": cursor.to_string(),
                    "session_id": session_id,
                    "revoked_at": rfc3339(jwt_expires_by - 300),
                    "reason": "revoked",
                    "jwt_expires_by": rfc3339(jwt_expires_by),
                }),
            });
            cursor
        });
        self.app.head.send_replace(cursor);
        cursor
    }

    /// Forgets every event before `cursor`: a client whose cursor is older gets 410.
    pub fn expire_before(&self, cursor: u64) {
        self.with(|s| {
            s.events.retain(|e| e.cursor >= cursor);
            s.horizon = cursor - 1;
        });
    }

    /// Ends every open stream (clients reconnect).
    pub fn drop_streams(&self) {
        self.app.generation.send_modify(|g| *g += 1);
    }
}

/// The current time of a manual clock, in Unix seconds.
pub fn unix(clock: &ManualClock) -> u64 {
    use hallpass_verifier::Clock;
    clock.now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Waits (bounded) until the verifier's feed is synced and connected over `transport`.
pub async fn ready(verifier: &Verifier) {
    tokio::time::timeout(Duration::from_secs(5), verifier.ready())
        .await
        .expect("ready in time")
        .expect("ready");
}
