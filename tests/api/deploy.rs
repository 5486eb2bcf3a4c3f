//! Deployment behaviour of the real binary: validate and bind before creating anything, the
//! bootstrap secret replaced when it changes, and the health check the container runs.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::process::{Child, Command};

use crate::harness::{TempDir, fresh_postgres_database, postgres_url};

const PROJECT: &str = "project-test-3e0c2f7a-2222-4d1b-8f3e-6a7b8c9d0e1f";

struct Env {
    dir: TempDir,
    db_url: String,
    master: String,
}

impl Env {
    async fn new() -> Self {
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

    fn command(&self, args: &[&str], vars: &[(&str, &str)]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_hallpass"));
        c.args(args)
            .current_dir(&self.dir.0)
            .env_clear()
            .env("HALLPASS_DATABASE_URL", &self.db_url)
            .env("HALLPASS_MASTER_KEY", &self.master)
            .env("HALLPASS_LOG", "warn")
            .kill_on_drop(true);
        for (k, v) in vars {
            c.env(k, v);
        }
        c
    }

    async fn output(&self, args: &[&str], vars: &[(&str, &str)]) -> Output {
        tokio::time::timeout(Duration::from_secs(60), self.command(args, vars).output())
            .await
            .expect("the command finishes")
            .unwrap()
    }

    /// `hallpass serve` with `secret` as the bootstrap secret; returns once it is ready.
    async fn serve(&self, secret: &str) -> (Child, String) {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let child = self
            .command(
                &["serve"],
                &[
                    ("HALLPASS_LISTEN", &listen),
                    ("HALLPASS_BOOTSTRAP_PROJECT_ID", PROJECT),
                    ("HALLPASS_BOOTSTRAP_SECRET", secret),
                ],
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
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

fn free_port() -> u16 {
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
