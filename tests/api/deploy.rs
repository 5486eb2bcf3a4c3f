//! Deployment behaviour of the real binary: validate and bind before creating anything, the
//! bootstrap secret replaced when it changes, and the health check the container runs.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::process::{Child, Command};

use crate::harness::{TempDir, fresh_postgres_database, postgres_url};

pub const PROJECT: &str = "project-test-3e0c2f7a-2222-4d1b-8f3e-6a7b8c9d0e1f";

pub struct Env {
    dir: TempDir,
    db_url: String,
    master: String,
}

impl Env {
    pub async fn new() -> Self {
        let dir =
            TempDir(std::env::temp_dir().join(format!("hallpass-deploy-{}", uuid::Uuid::new_v4())));
        std::fs::create_dir_all(&dir.0).unwrap();
        let db_url = match postgres_url() {
            Some(pg) => fresh_postgres_database(&pg).await,
            None => dir.0.join("hallpass.db").display().to_string(),
        };
        Env {
            dir,
            db_url,
            master: hallpass::domain::crypto::MasterKeys::generate_encoded(),
        }
    }

    pub fn command(&self, args: &[&str], vars: &[(&str, &str)]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_hallpass"));
        c.args(args)
            .current_dir(&self.dir.0)
            .env_clear()
            .env("HALLPASS_DATABASE_URL", &self.db_url)
            .env("HALLPASS_MASTER_KEY", &self.master)
            .env("HALLPASS_LOG", "warn")
            // Several servers run at once against one shared Postgres: keep each small.
            .env("HALLPASS_DATABASE_MAX_CONNECTIONS", "4")
            .kill_on_drop(true);
        for (k, v) in vars {
            c.env(k, v);
        }
        c
    }

    pub async fn output(&self, args: &[&str], vars: &[(&str, &str)]) -> Output {
        tokio::time::timeout(Duration::from_secs(60), self.command(args, vars).output())
            .await
            .expect("the command finishes")
            .unwrap()
    }

    /// `hallpass serve` with `secret` as the bootstrap secret; returns once it is ready.
    pub async fn serve(&self, secret: &str) -> (Child, String) {
        self.serve_logging(secret, Stdio::null(), &[]).await
    }

    pub async fn serve_logging(
        &self,
        secret: &str,
        stderr: Stdio,
        vars: &[(&str, &str)],
    ) -> (Child, String) {
        let listen = vars
            .iter()
            .find(|(k, _)| *k == "HALLPASS_LISTEN")
            .map(|(_, v)| v.to_string())
            .unwrap_or_else(|| format!("127.0.0.1:{}", free_port()));
        let child = self
            .command(
                &["serve"],
                &[
                    ("HALLPASS_LISTEN", &listen),
                    ("HALLPASS_BOOTSTRAP_PROJECT_ID", PROJECT),
                    ("HALLPASS_BOOTSTRAP_SECRET", secret),
                ],
            )
            .envs(vars.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let base = format!("http://{listen}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = reqwest::get(format!("{base}/readyz")).await
                && r.status() == 200
            {
                return (child, base);
            }
            assert!(Instant::now() < deadline, "server not ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn status_with(base: &str, secret: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{base}/v1/sessions/authenticate"))
        .basic_auth(PROJECT, Some(secret))
        .json(&json!({"session_token": "unknown"}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn serve_validates_and_binds_before_it_creates_anything() {
    let env = Env::new().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let out = env
        .output(&["serve"], &[("HALLPASS_LISTEN", &listen)])
        .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen"));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("secret"),
        "no development project was created and announced"
    );
    let free = format!("127.0.0.1:{}", free_port());
    let out = env
        .output(
            &["serve"],
            &[
                ("HALLPASS_LISTEN", &free),
                ("HALLPASS_DEFAULT_PROJECT_ID", "project-nope"),
            ],
        )
        .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("HALLPASS_DEFAULT_PROJECT_ID"));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("secret"));
    if postgres_url().is_none() {
        assert!(
            !std::path::Path::new(&env.db_url).exists(),
            "no database was created"
        );
    }
}

#[tokio::test]
async fn a_changed_bootstrap_secret_replaces_the_previous_one_only() {
    let env = Env::new().await;
    let first = "bootstrap-secret-number-one-0123456789-abcdef";
    let second = "bootstrap-secret-number-two-0123456789-abcdef";
    let (mut server, base) = env.serve(first).await;
    assert_eq!(
        status_with(&base, first).await,
        404,
        "accepted (session_not_found)"
    );
    server.kill().await.unwrap();
    // A secret made with the CLI is not the bootstrap's and survives it.
    let out = env
        .output(&["project", "rotate-secret", PROJECT], &[])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli_secret = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("secret: ").map(str::to_string))
        .unwrap();

    let (mut server, base) = env.serve(second).await;
    assert_eq!(status_with(&base, second).await, 404);
    assert_eq!(
        status_with(&base, first).await,
        401,
        "the previous bootstrap secret is gone"
    );
    assert_eq!(
        status_with(&base, &cli_secret).await,
        404,
        "the CLI's secret is kept"
    );
    server.kill().await.unwrap();
    // Restarting with the same secret changes nothing.
    let (mut server, base) = env.serve(second).await;
    assert_eq!(status_with(&base, second).await, 404);
    server.kill().await.unwrap();
}

#[tokio::test]
async fn the_health_check_follows_the_configured_listen_address() {
    let env = Env::new().await;
    let (mut server, base) = env
        .serve("healthcheck-bootstrap-secret-0123456789-abcdef")
        .await;
    let listen = base.trim_start_matches("http://").to_string();
    let out = env
        .output(&["healthcheck"], &[("HALLPASS_LISTEN", &listen)])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A wildcard address is checked on loopback.
    let port = listen.rsplit(':').next().unwrap();
    let out = env
        .output(
            &["healthcheck"],
            &[("HALLPASS_LISTEN", &format!("0.0.0.0:{port}"))],
        )
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.kill().await.unwrap();
    let started = Instant::now();
    let out = env
        .output(&["healthcheck"], &[("HALLPASS_LISTEN", &listen)])
        .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unhealthy"));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn every_request_is_logged_once_with_its_carried_request_id_and_no_secret() {
    let env = Env::new().await;
    let secret = "access-log-bootstrap-secret-0123456789-abcdef";
    let log_path = env.dir.0.join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let (mut server, base) = env
        .serve_logging(
            secret,
            Stdio::from(log),
            &[("HALLPASS_LOG", "info"), ("HALLPASS_LOG_FORMAT", "json")],
        )
        .await;
    let client = reqwest::Client::new();
    let carried = client
        .get(format!(
            "{base}/v1/users/user-test-00000000-0000-4000-8000-000000000000"
        ))
        .basic_auth(PROJECT, Some(secret))
        .header("x-request-id", "trace-me-1")
        .send()
        .await
        .unwrap();
    assert_eq!(carried.status(), 404);
    assert_eq!(carried.headers()["x-request-id"], "trace-me-1");
    let body: serde_json::Value = carried.json().await.unwrap();
    assert_eq!(body["request_id"], "trace-me-1");
    // Malformed ids are replaced, not echoed.
    let replaced = client
        .get(format!("{base}/healthz"))
        .header("x-request-id", "bad id\twith spaces")
        .send()
        .await
        .unwrap();
    let id = replaced.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(id.starts_with("request-id-test-"), "{id}");
    let refused = client
        .get(format!("{base}/v1/rbac/policy"))
        .basic_auth(PROJECT, Some("wrong-secret-wrong-secret-wrong-secret"))
        .header("x-request-id", "trace-me-2")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    server.kill().await.unwrap();
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(!text.contains(secret), "the secret is never logged");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|l: &serde_json::Value| l["target"] == "hallpass::access")
        .collect();
    let find = |id: &str| {
        lines
            .iter()
            .filter(|l| l["fields"]["request_id"] == id)
            .cloned()
            .collect::<Vec<_>>()
    };
    let first = find("trace-me-1");
    assert_eq!(first.len(), 1, "one line per request: {text}");
    assert_eq!(first[0]["fields"]["route"], "/v1/users/{user_id}");
    assert_eq!(first[0]["fields"]["status"], 404);
    assert_eq!(first[0]["fields"]["method"], "GET");
    assert_eq!(first[0]["fields"]["project"], PROJECT);
    assert!(first[0]["fields"]["micros"].as_u64().is_some());
    let second = find("trace-me-2");
    assert_eq!(
        second[0]["fields"]["status"], 401,
        "refusals are logged too"
    );
    assert_eq!(second[0]["fields"]["project"], "-");
}
