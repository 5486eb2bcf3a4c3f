//! A real `hallpass serve` process: killed hard and restarted (nothing acknowledged is lost),
//! and stopped with SIGTERM (pending `last_accessed_at` writes are flushed, exit 0).

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::harness::{TempDir, fresh_postgres_database, postgres_url};

struct Server {
    child: Child,
    base: String,
}

const PROJECT: &str = "project-test-7d1c4a4e-1111-4c3b-9d6e-2f0a5b6c7d8e";
const SECRET: &str = "process-test-secret-0123456789-0123456789";

async fn start(db_url: &str, master: &str, dir: &std::path::Path) -> Server {
    start_with(db_url, master, dir, &[]).await
}

async fn start_with(
    db_url: &str,
    master: &str,
    dir: &std::path::Path,
    env: &[(&str, &str)],
) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_hallpass"))
        .arg("serve")
        .current_dir(dir)
        .env_clear()
        .env("HALLPASS_LISTEN", format!("127.0.0.1:{port}"))
        .env("HALLPASS_DATABASE_URL", db_url)
        .env("HALLPASS_MASTER_KEY", master)
        .env("HALLPASS_BOOTSTRAP_PROJECT_ID", PROJECT)
        .env("HALLPASS_BOOTSTRAP_SECRET", SECRET)
        .env("HALLPASS_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "server not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Server { child, base }
}

/// Sends SIGTERM and expects a clean exit within 15 s (`why` says what is being checked).
async fn stop(server: &mut Server, why: &str) {
    let pid = server.child.id().unwrap();
    let status = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(15), server.child.wait())
        .await
        .expect(why)
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}

async fn call(base: &str, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .basic_auth(PROJECT, Some(SECRET))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn a_killed_server_loses_nothing_and_a_stopped_one_flushes_its_touches() {
    let dir = TempDir(std::env::temp_dir().join(format!("hallpass-proc-{}", uuid::Uuid::new_v4())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let db_url = match postgres_url() {
        Some(pg) => fresh_postgres_database(&pg).await,
        None => dir.0.join("hallpass.db").display().to_string(),
    };
    let master = hallpass::domain::crypto::MasterKeys::generate_encoded();

    let mut server = start(&db_url, &master, &dir.0).await;
    let (_, user) = call(
        &server.base,
        "/v1/users",
        json!({"email": "durable@example.com"}),
    )
    .await;
    let (status, s) = call(
        &server.base,
        "/v1/sessions",
        json!({"user_id": user["user_id"], "session_duration_minutes": 10,
               "authentication_factors": [{"type": "password", "delivery_method": "knowledge"}]}),
    )
    .await;
    assert_eq!(status, 200, "{s}");
    let token = s["session_token"].clone();
    let (status, extended) = call(
        &server.base,
        "/v1/sessions/authenticate",
        json!({"session_token": token, "session_duration_minutes": 600}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, revoked) = call(
        &server.base,
        "/v1/sessions",
        json!({"user_id": user["user_id"], "session_duration_minutes": 10,
        "authentication_factors": [{"type": "password", "delivery_method": "knowledge"}]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        call(
            &server.base,
            "/v1/sessions/revoke",
            json!({"session_id": revoked["session"]["session_id"]})
        )
        .await
        .0,
        200
    );

    // SIGKILL: no chance to flush anything.
    server.child.start_kill().unwrap();
    server.child.wait().await.unwrap();
    let mut server = start(&db_url, &master, &dir.0).await;
    let (status, after) = call(
        &server.base,
        "/v1/sessions/authenticate",
        json!({"session_token": token}),
    )
    .await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(
        after["session"]["expires_at"], extended["session"]["expires_at"],
        "the extension survived"
    );
    assert_eq!(
        call(
            &server.base,
            "/v1/sessions/authenticate",
            json!({"session_token": revoked["session_token"]})
        )
        .await
        .0,
        404,
        "the revocation survived"
    );
    // The same keys sign after the restart.
    let kid = |jwt: &Value| crate::harness::decode_jwt(jwt.as_str().unwrap()).0["kid"].clone();
    assert_eq!(kid(&after["session_jwt"]), kid(&s["session_jwt"]));

    // A bare authenticate is written behind; SIGTERM flushes it before exit.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, touched) = call(
        &server.base,
        "/v1/sessions/authenticate",
        json!({"session_token": token}),
    )
    .await;
    stop(&mut server, "stops on SIGTERM").await;
    let server = start(&db_url, &master, &dir.0).await;
    let (_, list) = reqwest::Client::new()
        .get(format!(
            "{}/v1/sessions?user_id={}",
            server.base,
            user["user_id"].as_str().unwrap()
        ))
        .basic_auth(PROJECT, Some(SECRET))
        .send()
        .await
        .map(|r| (r.status(), r))
        .unwrap();
    let list: Value = list.json().await.unwrap();
    assert_eq!(
        list["sessions"][0]["last_accessed_at"],
        touched["session"]["last_accessed_at"]
    );
}

/// A connection that sent part of a request head and then nothing does not hold a stopping
/// server open: the header-read timeout still closes it, and the process exits.
#[tokio::test]
async fn a_half_sent_request_does_not_hold_up_the_shutdown() {
    let dir = TempDir(std::env::temp_dir().join(format!("hallpass-stop-{}", uuid::Uuid::new_v4())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let db_url = match postgres_url() {
        Some(pg) => fresh_postgres_database(&pg).await,
        None => dir.0.join("hallpass.db").display().to_string(),
    };
    let master = hallpass::domain::crypto::MasterKeys::generate_encoded();
    let mut server = start_with(
        &db_url,
        &master,
        &dir.0,
        &[("HALLPASS_HEADER_READ_TIMEOUT_SECONDS", "1")],
    )
    .await;
    let addr = server.base.trim_start_matches("http://").to_string();
    let mut stalled = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stalled, b"GET /readyz HTTP/1.1\r\nHost: x")
        .await
        .unwrap();
    // The server has the partial head before it is told to stop.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop(
        &mut server,
        "stops on SIGTERM although a request head is half sent",
    )
    .await;
    drop(stalled);
}
