//! A fresh database per test (SQLite temp file, or a throw-away Postgres database when
//! TEST_DATABASE_URL is set), the real router driven with `oneshot`, and a manual clock.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hallpass::app::{AppState, Settings, router};
use hallpass::domain::Clock;
use hallpass::domain::crypto::MasterKeys;
use hallpass::domain::ids::Env;
use hallpass::domain::keys::Schedule;
use hallpass::store::Db;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

pub const START: i64 = 1_795_600_000;

pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Response {
    /// Asserts a Stytch error of this status and type, and returns the body.
    #[track_caller]
    pub fn error(&self, status: u16, error_type: &str) -> &Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(self.body["error_type"], error_type, "body: {}", self.body);
        assert_eq!(self.body["status_code"], status);
        assert!(
            self.body["error_message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        assert!(
            self.body["request_id"]
                .as_str()
                .unwrap()
                .starts_with("request-id-")
        );
        &self.body
    }

    /// Asserts a 400 `bad_request` whose message names `field`.
    #[track_caller]
    pub fn names_field(&self, field: &str) {
        let message = self.error(400, "bad_request")["error_message"]
            .as_str()
            .unwrap();
        assert!(message.contains(field), "{message:?} should name {field}");
    }

    #[track_caller]
    pub fn ok(&self) -> &Value {
        assert_eq!(self.status, StatusCode::OK, "body: {}", self.body);
        assert_eq!(self.body["status_code"], 200);
        &self.body
    }
}

#[derive(Clone)]
pub struct Credentials {
    pub project_id: String,
    pub secret: String,
}

pub struct TestApp {
    pub state: AppState,
    pub router: Router,
    pub clock: Arc<AtomicI64>,
    pub db: Db,
    pub master: MasterKeys,
    pub schedule: Schedule,
    pub creds: Credentials,
    _dir: Option<TempDir>,
}

/// A directory removed when the test ends.
pub struct TempDir(pub PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn schedule() -> Schedule {
    Schedule {
        rotation_interval: 30 * 86_400,
        max_age: 300,
        retention: 86_400,
    }
}

/// The Postgres server under test, if any.
pub fn postgres_url() -> Option<String> {
    std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// Creates an empty throw-away Postgres database and returns its URL.
pub async fn fresh_postgres_database(url: &str) -> String {
    let name = format!("hallpass_test_{}", uuid::Uuid::new_v4().simple());
    let admin = sqlx::PgPool::connect(url)
        .await
        .expect("TEST_DATABASE_URL reachable");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let slash = url.rfind('/').unwrap();
    format!("{}{name}", &url[..=slash])
}

/// A fresh, migrated database of the backend under test.
pub async fn fresh_db() -> (Db, Option<TempDir>) {
    match postgres_url() {
        Some(url) => {
            let db = Db::connect_postgres(
                &fresh_postgres_database(&url).await,
                8,
                Duration::from_secs(5),
            )
            .await
            .unwrap();
            db.migrate().await.unwrap();
            (db, None)
        }
        _ => {
            let dir = std::env::temp_dir().join(format!("hallpass-test-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&dir).unwrap();
            let db = Db::connect_sqlite(&dir.join("hallpass.db"), 4, Duration::from_secs(5))
                .await
                .unwrap();
            db.migrate().await.unwrap();
            (db, Some(TempDir(dir)))
        }
    }
}

impl TestApp {
    pub async fn new() -> Self {
        Self::with_schedule(schedule()).await
    }

    pub async fn with_schedule(schedule: Schedule) -> Self {
        Self::build(schedule, |_| {}).await
    }

    /// With this allowance of new SSF signatures per second.
    pub async fn with_ssf_signatures_per_second(n: u32) -> Self {
        Self::build(schedule(), |s| s.ssf_signatures_per_second = n).await
    }

    /// With at most `n` live sessions per user.
    pub async fn with_max_sessions_per_user(n: u32) -> Self {
        Self::build(schedule(), |s| s.max_sessions_per_user = n).await
    }

    async fn build(schedule: Schedule, adjust: impl FnOnce(&mut Settings)) -> Self {
        let (db, dir) = fresh_db().await;
        let master = MasterKeys::parse(&MasterKeys::generate_encoded()).unwrap();
        let (clock, handle) = Clock::manual(START);
        let mut settings = Settings {
            body_limit: 64 * 1024,
            request_timeout: Duration::from_secs(30),
            schedule,
            argon2_concurrency: 2,
            refresh_interval: Duration::from_secs(1),
            auth_attempts_per_client: 60,
            auth_attempts_per_project: 600,
            retention: Duration::from_secs(30 * 86_400),
            retention_interval: Duration::from_secs(3600),
            ssf_signatures_per_second: 500,
            max_sessions_per_user: 1000,
        };
        adjust(&mut settings);
        let project_id = format!("project-test-{}", uuid::Uuid::new_v4());
        let secret = "a-test-secret-that-is-long-enough-0123456789".to_string();
        hallpass::admin::bootstrap(&db, &master, &schedule, &project_id, &secret, None, START)
            .await
            .unwrap();
        let state = AppState::new(db.clone(), master.clone(), clock, settings, None);
        state.maintain().await;
        TestApp {
            router: router(state.clone()),
            state,
            clock: handle,
            db,
            master,
            schedule,
            creds: Credentials { project_id, secret },
            _dir: dir,
        }
    }

    /// A second instance on the same database, with the same clock and settings: its own
    /// caches and its own touches not yet written, as another replica would have.
    pub async fn replica(&self) -> TestApp {
        let state = AppState::new(
            self.db.clone(),
            self.master.clone(),
            self.state.clock.clone(),
            self.state.settings.clone(),
            None,
        );
        state.maintain().await;
        TestApp {
            router: router(state.clone()),
            state,
            clock: self.clock.clone(),
            db: self.db.clone(),
            master: self.master.clone(),
            schedule: self.schedule,
            creds: self.creds.clone(),
            _dir: None,
        }
    }

    /// The SQLite database's directory (None on Postgres).
    pub fn db_dir(&self) -> Option<&std::path::Path> {
        self._dir.as_ref().map(|d| d.0.as_path())
    }

    /// The Basic authorization header value of the test project.
    pub fn basic(&self) -> String {
        let c = &self.creds;
        format!(
            "Basic {}",
            STANDARD.encode(format!("{}:{}", c.project_id, c.secret))
        )
    }

    pub fn now(&self) -> i64 {
        self.clock.load(Ordering::SeqCst)
    }

    pub fn advance(&self, seconds: i64) {
        self.clock.fetch_add(seconds, Ordering::SeqCst);
    }

    /// Runs what the background task does: converge rings, reload the directory, and
    /// write pending touches.
    pub async fn maintain(&self) {
        self.state.maintain().await;
        self.state.touches.flush(&self.db).await;
    }

    /// Another project on the same server.
    pub async fn other_project(&self, env: Env) -> Credentials {
        let c = hallpass::admin::create_project(
            &self.db,
            &self.master,
            &self.schedule,
            "other",
            env,
            self.now(),
        )
        .await
        .unwrap();
        self.state.directory.refresh().await.unwrap();
        Credentials {
            project_id: c.project_id.to_string(),
            secret: c.secret.expose().to_string(),
        }
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        creds: Option<&Credentials>,
        headers: &[(&str, &str)],
    ) -> Response {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(c) = creds {
            let basic = STANDARD.encode(format!("{}:{}", c.project_id, c.secret));
            req = req.header(header::AUTHORIZATION, format!("Basic {basic}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(serde_json::to_vec(v).unwrap())
            }
            None => Body::empty(),
        };
        self.send(req.body(body).unwrap()).await
    }

    pub async fn send(&self, req: Request<Body>) -> Response {
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!("non-JSON body ({e}): {}", String::from_utf8_lossy(&bytes))
            })
        };
        if status != StatusCode::NOT_MODIFIED {
            // Every response carries the same request id in header and body.
            let header_id = headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            assert!(
                header_id.starts_with("request-id-test-")
                    || header_id.starts_with("request-id-live-"),
                "{header_id}"
            );
            if let Some(id) = body.get("request_id") {
                assert_eq!(id, &Value::String(header_id));
            }
            assert_eq!(
                headers
                    .get(header::CONTENT_TYPE)
                    .map(|v| v.to_str().unwrap()),
                Some("application/json")
            );
        }
        Response {
            status,
            headers,
            body,
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> Response {
        self.request(Method::POST, path, Some(&body), Some(&self.creds), &[])
            .await
    }

    /// An embeddable magic-link token for `user_id`.
    pub async fn magic_link(&self, user_id: &str) -> Value {
        self.post("/v1/magic_links", serde_json::json!({ "user_id": user_id }))
            .await
            .ok()["token"]
            .clone()
    }

    pub async fn authenticate(&self, body: Value) -> Response {
        self.post("/v1/sessions/authenticate", body).await
    }

    pub async fn revoke(&self, body: Value) -> Response {
        self.post("/v1/sessions/revoke", body).await
    }

    pub async fn post_as(&self, creds: &Credentials, path: &str, body: Value) -> Response {
        self.request(Method::POST, path, Some(&body), Some(creds), &[])
            .await
    }

    pub async fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path, None, Some(&self.creds), &[])
            .await
    }

    /// The value of a counter or gauge on GET /metrics (0 when absent).
    pub async fn metric(&self, name: &str) -> u64 {
        let res = self
            .router
            .clone()
            .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .map_or(0, |v| v.parse().unwrap())
    }

    pub async fn get_anonymous(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.request(Method::GET, path, None, None, headers).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Response {
        self.request(Method::PUT, path, Some(&body), Some(&self.creds), &[])
            .await
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.request(Method::DELETE, path, None, Some(&self.creds), &[])
            .await
    }

    /// Creates a user and returns its id.
    /// Stores `policy` (Stytch's RBAC policy JSON) as the project's and reloads it.
    pub async fn set_policy(&self, policy: &str) {
        let project: hallpass::domain::ids::ProjectId = self.creds.project_id.parse().unwrap();
        let parsed = hallpass::domain::rbac::Policy::parse(policy).unwrap();
        hallpass::store::projects::set_rbac_policy(
            &self.db,
            project.uuid,
            &serde_json::to_string(&parsed).unwrap(),
        )
        .await
        .unwrap();
        self.state.directory.refresh().await.unwrap();
    }

    pub async fn user(&self, email: &str) -> String {
        let r = self
            .post("/v1/users", serde_json::json!({ "email": email }))
            .await;
        r.ok()["user_id"].as_str().unwrap().to_string()
    }

    /// Starts a session for a new user; returns the authenticate-shaped body.
    pub async fn session(&self, minutes: i64) -> Value {
        let user = self
            .user(&format!("u{}@example.com", uuid::Uuid::new_v4().simple()))
            .await;
        self.session_for(&user, minutes).await
    }

    pub async fn session_for(&self, user_id: &str, minutes: i64) -> Value {
        self.start_session(user_id, minutes).await.ok().clone()
    }

    /// `POST /v1/sessions` for `user_id` with a password factor, answered as it comes.
    pub async fn start_session(&self, user_id: &str, minutes: i64) -> Response {
        self.post(
            "/v1/sessions",
            serde_json::json!({
                "user_id": user_id,
                "session_duration_minutes": minutes,
                "authentication_factors": [{"type": "password", "delivery_method": "knowledge"}],
            }),
        )
        .await
    }

    /// The ids of `user_id`'s live sessions, newest first (`GET /v1/sessions`).
    pub async fn live_session_ids(&self, user_id: &str) -> Vec<String> {
        let r = self.get(&format!("/v1/sessions?user_id={user_id}")).await;
        r.ok()["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["session_id"].as_str().unwrap().to_string())
            .collect()
    }
}

/// Decodes a JWT's header and claims without verifying.
pub fn decode_jwt(jwt: &str) -> (Value, Value) {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    let d = |p: &str| {
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .unwrap(),
        )
        .unwrap()
    };
    (d(parts[0]), d(parts[1]))
}

pub fn rfc3339(t: i64) -> String {
    hallpass::domain::rfc3339(t)
}
