//! A relying service's view, through real processes: the `hallpass-verifier` crate following a
//! running `hallpass serve` refuses a revoked session's JWTs within a second, keeps verifying
//! through a restart and a key rotation, and hears of revocations made on another replica.

use std::process::Stdio;
use std::time::{Duration, Instant};

use hallpass_verifier::{Error as VerifyError, Verifier};
use serde_json::{Value, json};

use crate::deploy::{Env, PROJECT, free_port};
use crate::harness::postgres_url;

const SECRET: &str = "relying-service-test-secret-0123456789-abcdef";

async fn call(base: &str, path: &str, body: Value) -> Value {
    let r = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .basic_auth(PROJECT, Some(SECRET))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

/// A new user's session: (session_id, session_token, session_jwt).
async fn session(base: &str) -> (String, String, String) {
    let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
    let user = call(base, "/v1/users", json!({ "email": email })).await;
    let s = call(
        base,
        "/v1/sessions",
        json!({"user_id": user["user_id"], "session_duration_minutes": 60,
               "authentication_factors": [{"type": "password", "delivery_method": "knowledge"}]}),
    )
    .await;
    (
        s["session"]["session_id"].as_str().unwrap().to_string(),
        s["session_token"].as_str().unwrap().to_string(),
        s["session_jwt"].as_str().unwrap().to_string(),
    )
}

async fn verifier(base: &str) -> Verifier {
    let v = Verifier::builder(base, PROJECT)
        .project_secret(SECRET)
        .build()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), v.ready())
        .await
        .expect("ready within 10 s")
        .unwrap();
    v
}

/// How long until `verifier` refuses `jwt` as revoked (polling every 5 ms, up to `limit`).
async fn time_to_refusal(verifier: &Verifier, jwt: &str, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Err(VerifyError::Revoked) = verifier.verify(jwt).await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_session_is_refused_within_a_second_and_across_a_restart() {
    let env = Env::new().await;
    let listen = format!("127.0.0.1:{}", free_port());
    let vars = [("HALLPASS_LISTEN", listen.as_str())];
    let (mut server, base) = env.serve_logging(SECRET, Stdio::null(), &vars).await;
    let verifier = verifier(&base).await;
    let (id, _, jwt) = session(&base).await;
    verifier.verify(&jwt).await.unwrap();
    for attempt in 0..3 {
        let (id, _, jwt) = if attempt == 0 {
            (id.clone(), String::new(), jwt.clone())
        } else {
            session(&base).await
        };
        verifier.verify(&jwt).await.unwrap();
        call(&base, "/v1/sessions/revoke", json!({ "session_id": id })).await;
        let took = time_to_refusal(&verifier, &jwt, Duration::from_secs(3)).await;
        assert!(
            took.is_some_and(|t| t < Duration::from_secs(1)),
            "refused after {took:?}"
        );
    }

    // hallpass goes away: the cached keys keep verifying; when it is back (same address),
    // the verifier catches up with what was revoked meanwhile.
    let (_, _, kept) = session(&base).await;
    let (later_id, _, later) = session(&base).await;
    server.kill().await.unwrap();
    verifier.verify(&kept).await.unwrap();
    verifier.verify(&later).await.unwrap();
    let (mut server, base) = env.serve_logging(SECRET, Stdio::null(), &vars).await;
    call(
        &base,
        "/v1/sessions/revoke",
        json!({ "session_id": later_id }),
    )
    .await;
    let took = time_to_refusal(&verifier, &later, Duration::from_secs(20)).await;
    assert!(
        took.is_some(),
        "the verifier caught up with the feed after the restart"
    );
    verifier.verify(&kept).await.unwrap();
    server.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotating_under_load_never_fail_a_verification() {
    let env = Env::new().await;
    // A rotation every few seconds: the next key is published 2 × max-age (2 s) before it
    // signs, as always.
    let (mut server, base) = env
        .serve_logging(
            SECRET,
            Stdio::null(),
            &[
                ("HALLPASS_KEYS_ROTATION_INTERVAL_SECONDS", "2"),
                ("HALLPASS_KEYS_JWKS_MAX_AGE_SECONDS", "1"),
                ("HALLPASS_KEYS_RETIRED_RETENTION_SECONDS", "60"),
            ],
        )
        .await;
    let verifier = verifier(&base).await;
    let (_, token, _) = session(&base).await;
    let mut kids = std::collections::BTreeSet::new();
    let (mut verified, started) = (0, Instant::now());
    while started.elapsed() < Duration::from_secs(9) {
        let fresh = call(
            &base,
            "/v1/sessions/authenticate",
            json!({ "session_token": token }),
        )
        .await;
        let jwt = fresh["session_jwt"].as_str().unwrap();
        let header: Value = serde_json::from_slice(
            &base64::Engine::decode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                jwt.split('.').next().unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        kids.insert(header["kid"].as_str().unwrap().to_string());
        if let Err(e) = verifier.verify(jwt).await {
            panic!(
                "verification failed during rotation ({} kids so far): {e}",
                kids.len()
            );
        }
        verified += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(kids.len() >= 2, "the key rotated during the test: {kids:?}");
    assert!(verified > 50);
    server.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_one_replica_reaches_a_verifier_following_another() {
    if postgres_url().is_none() {
        return; // replicas share a database server
    }
    let env = Env::new().await;
    let (mut one, base_one) = env.serve(SECRET).await;
    let (mut two, base_two) = env.serve(SECRET).await;
    let verifier = verifier(&base_two).await;
    for _ in 0..3 {
        let (id, _, jwt) = session(&base_one).await;
        verifier.verify(&jwt).await.unwrap();
        call(
            &base_one,
            "/v1/sessions/revoke",
            json!({ "session_id": id }),
        )
        .await;
        let took = time_to_refusal(&verifier, &jwt, Duration::from_secs(3)).await;
        assert!(
            took.is_some_and(|t| t < Duration::from_secs(1)),
            "refused after {took:?}"
        );
    }
    one.kill().await.unwrap();
    two.kill().await.unwrap();
}
