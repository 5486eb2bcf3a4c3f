use axum::body::Body;
use axum::http::{Method, Request, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use crate::harness::{Credentials, TestApp};

#[tokio::test]
async fn caller_credentials_are_required_and_checked() {
    let app = TestApp::new().await;
    let path = "/v1/sessions/authenticate";
    let body = json!({"session_token": "x"});
    app.request(Method::POST, path, Some(&body), None, &[])
        .await
        .error(401, "unauthorized_credentials");
    let wrong = Credentials {
        project_id: app.creds.project_id.clone(),
        secret: "wrong-secret-wrong-secret-wrong-secret".into(),
    };
    app.request(Method::POST, path, Some(&body), Some(&wrong), &[])
        .await
        .error(401, "unauthorized_credentials");
    let unknown = Credentials {
        project_id: "project-test-00000000-0000-0000-0000-000000000000".into(),
        secret: app.creds.secret.clone(),
    };
    app.request(Method::POST, path, Some(&body), Some(&unknown), &[])
        .await
        .error(401, "unauthorized_credentials");
    let not_an_id = Credentials {
        project_id: "admin".into(),
        secret: app.creds.secret.clone(),
    };
    app.request(Method::POST, path, Some(&body), Some(&not_an_id), &[])
        .await
        .error(401, "unauthorized_credentials");
    for auth in [
        "Bearer abc",
        "Basic !!!",
        "Basic",
        &format!("Basic {}", STANDARD.encode("no-colon")),
    ] {
        app.request(
            Method::POST,
            path,
            Some(&body),
            None,
            &[("authorization", auth)],
        )
        .await
        .error(401, "unauthorized_credentials");
    }
    // The right secret works, and keeps working from the in-memory cache.
    for _ in 0..3 {
        app.post(path, body.clone())
            .await
            .error(404, "session_not_found");
    }
}

/// Sends one authenticate request per secret, all at once; their status codes.
async fn burst<S: AsRef<str>>(app: &TestApp, secrets: &[S]) -> Vec<u16> {
    let mut tasks = Vec::new();
    for secret in secrets {
        let secret = secret.as_ref();
        let router = app.router.clone();
        let auth = STANDARD.encode(format!("{}:{secret}", app.creds.project_id));
        tasks.push(tokio::spawn(async move {
            let req = Request::post("/v1/sessions/authenticate")
                .header(header::AUTHORIZATION, format!("Basic {auth}"))
                .body(Body::from("{}"))
                .unwrap();
            tower::ServiceExt::oneshot(router, req)
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    statuses
}

#[tokio::test]
async fn many_wrong_secrets_at_once_are_refused_not_failed() {
    let app = TestApp::new().await;
    let wrong: Vec<String> = (0..24).map(|i| format!("wrong-{i}")).collect();
    for status in burst(&app, &wrong).await {
        assert!(status == 401 || status == 429, "{status}");
    }
}

#[tokio::test]
async fn a_burst_of_new_callers_with_one_secret_costs_one_argon2_run() {
    let app = TestApp::new().await;
    // No session arguments: 400 once the caller is let in.
    let statuses = burst(&app, &[&app.creds.secret; 16]).await;
    assert!(statuses.iter().all(|s| *s == 400), "{statuses:?}");
    assert_eq!(
        app.metric("hallpass_caller_auth_total{result=\"argon2\"}")
            .await,
        1
    );
    // Refusals are not remembered: the same wrong secret is checked again each time.
    for expected in [2, 3] {
        assert_eq!(burst(&app, &["wrong-secret"]).await, [401]);
        assert_eq!(
            app.metric("hallpass_caller_auth_total{result=\"argon2\"}")
                .await,
            expected
        );
    }
    assert_eq!(burst(&app, &[&app.creds.secret; 4]).await, [400; 4]);
    assert_eq!(
        app.metric("hallpass_caller_auth_total{result=\"argon2\"}")
            .await,
        3
    );
}

#[tokio::test]
async fn malformed_input_gets_json_400s_that_name_the_field() {
    let app = TestApp::new().await;
    let raw = |body: &'static str| {
        let auth = STANDARD.encode(format!("{}:{}", app.creds.project_id, app.creds.secret));
        Request::post("/v1/sessions/authenticate")
            .header(header::AUTHORIZATION, format!("Basic {auth}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap()
    };
    let r = app.send(raw("{not json")).await;
    r.names_field("not valid JSON");
    let r = app.send(raw(r#"{"session_custom_claims": "text"}"#)).await;
    r.names_field("session_custom_claims");
    let r = app.send(raw("[]")).await;
    r.error(400, "bad_request");
    // An empty body reads as {}.
    app.send(raw("")).await.error(400, "no_session_arguments");
}

#[tokio::test]
async fn oversized_bodies_unknown_routes_and_methods() {
    let app = TestApp::new().await;
    let big = json!({"session_token": "x".repeat(70 * 1024)});
    let r = app.authenticate(big).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.body["status_code"], 413);
    app.get("/v1/nothing-here").await.error(404, "not_found");
    // A malformed path is a 400 in our shape, never plain text; a query value that is not
    // UTF-8 is read lossily, so it names no user.
    app.get("/v1/users/%FF%FE").await.error(400, "bad_request");
    app.get("/v1/sessions?user_id=%FF")
        .await
        .error(404, "user_not_found");
    app.request(
        Method::DELETE,
        "/v1/sessions/authenticate",
        None,
        Some(&app.creds),
        &[],
    )
    .await
    .error(400, "bad_request");
}

#[tokio::test]
async fn health_and_readiness() {
    let app = TestApp::new().await;
    assert_eq!(
        app.get_anonymous("/healthz", &[]).await.ok()["status"],
        "ok"
    );
    assert_eq!(
        app.get_anonymous("/readyz", &[]).await.ok()["status"],
        "ready"
    );
}

#[tokio::test]
async fn metrics_count_without_revealing_anything() {
    let app = TestApp::new().await;
    let s = app.session(60).await;
    app.authenticate(json!({"session_token": "nope"}))
        .await
        .error(404, "session_not_found");
    let res = tower::ServiceExt::oneshot(
        app.router.clone(),
        Request::get("/metrics").body(Body::empty()).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let bytes = http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap()
        .to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    for expected in [
        "http_requests_total{method=\"POST\",route=\"/v1/sessions/authenticate\",status=\"404\"} 1\n",
        "http_request_duration_seconds_bucket{route=\"/v1/sessions/authenticate\",le=\"0.0005\"}",
        "hallpass_jwts_minted_total 1\n",
        "hallpass_projects 1\n",
        "hallpass_build_info{version=\"",
        "hallpass_jwt_signing_duration_seconds_count 1\n",
        "hallpass_caller_auth_total{result=\"argon2\"} 1\n",
        "hallpass_database_connections{kind=\"pool\",state=\"idle\"}",
        "# TYPE hallpass_signing_keys gauge",
        "hallpass_key_ring_next_change_seconds{project=",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
    let token = s["session_token"].as_str().unwrap();
    let user = s["session"]["user_id"].as_str().unwrap();
    let session = s["session"]["session_id"].as_str().unwrap();
    for secret in [app.creds.secret.as_str(), token, user, session] {
        assert!(!text.contains(secret));
    }
    // Valid Prometheus text, by Prometheus's own checker when it is installed (CI installs
    // it and sets HALLPASS_REQUIRE_PROMTOOL so the check cannot be skipped there).
    match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "promtool: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(e) => assert!(
            std::env::var_os("HALLPASS_REQUIRE_PROMTOOL").is_none(),
            "promtool is required here: {e}"
        ),
    }
}

/// A body that is announced and never sent is cut off at the request deadline on every path,
/// the revocation feed's included (whose handlers run without the deadline), instead of
/// holding its connection for ever. Time is paused: the deadline passes without waiting.
#[tokio::test]
async fn a_body_that_never_arrives_ends_at_the_deadline_on_every_path() {
    let app = TestApp::new().await;
    let feed = format!("/v1/sessions/revocations/{}", app.creds.project_id);
    tokio::time::pause();
    for (method, path) in [
        (Method::POST, "/v1/sessions/authenticate".to_string()),
        (Method::POST, format!("{feed}/ssf/poll")),
        (Method::GET, feed.clone()),
        (Method::GET, format!("{feed}/stream")),
    ] {
        let never = futures_util::stream::pending::<Result<axum::body::Bytes, std::io::Error>>();
        let req = Request::builder()
            .method(method)
            .uri(&path)
            .header(header::AUTHORIZATION, app.basic())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, "100")
            .body(Body::from_stream(never))
            .unwrap();
        let r = tokio::time::timeout(std::time::Duration::from_secs(3600), app.send(req))
            .await
            .unwrap_or_else(|_| panic!("{path}: no answer an hour after the deadline"));
        r.error(503, "service_unavailable");
    }
}
