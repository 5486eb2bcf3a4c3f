//! Migrate against a small UserInfo server started on 127.0.0.1 by the test.

use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;

use crate::harness::TestApp;

async fn userinfo(headers: HeaderMap) -> axum::response::Response {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_string();
    match token.as_str() {
        "good" => {
            axum::Json(json!({"sub": "auth0|1", "email": "MIGRATED@example.com"})).into_response()
        }
        "stranger" => {
            axum::Json(json!({"sub": "auth0|2", "email": "nobody@example.com"})).into_response()
        }
        "no-email" => axum::Json(json!({"sub": "auth0|3"})).into_response(),
        "not-json" => "<html>hello</html>".into_response(),
        "huge" => {
            axum::Json(json!({"email": "migrated@example.com", "pad": "x".repeat(70 * 1024)}))
                .into_response()
        }
        "slow" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            axum::Json(json!({"email": "migrated@example.com"})).into_response()
        }
        "redirect" => (StatusCode::FOUND, [("location", "http://127.0.0.1:1/")]).into_response(),
        _ => StatusCode::UNAUTHORIZED.into_response(),
    }
}

async fn start_userinfo() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, Router::new().route("/userinfo", get(userinfo)))
            .await
            .unwrap();
    });
    format!("http://{addr}/userinfo")
}

async fn set_userinfo_url(app: &TestApp, url: Option<String>) {
    let row = hallpass::admin::get_project(&app.db, &app.creds.project_id)
        .await
        .unwrap();
    let change = hallpass::store::projects::SettingsChange {
        userinfo_url: Some(url),
        ..Default::default()
    };
    hallpass::store::projects::update_settings(&app.db, row.id, &change)
        .await
        .unwrap();
    app.maintain().await;
}

#[tokio::test]
async fn migrate_starts_a_session_for_the_matching_user() {
    let app = TestApp::new().await;
    app.post("/v1/sessions/migrate", json!({"session_token": "good"}))
        .await
        .error(400, "invalid_userinfo_url");
    set_userinfo_url(&app, Some(start_userinfo().await)).await;
    let user = app.user("migrated@example.com").await;

    let r = app.post("/v1/sessions/migrate", json!({"session_token": "good", "session_duration_minutes": 60, "session_custom_claims": {"from": "auth0"}})).await;
    let b = r.ok();
    assert_eq!(b["user_id"], user.as_str());
    assert_eq!(b["user"]["user_id"], user.as_str());
    let factor = &b["session"]["authentication_factors"][0];
    assert_eq!(factor["type"], "imported");
    assert_eq!(factor["delivery_method"], "imported_auth0");
    assert_eq!(b["session"]["custom_claims"], json!({"from": "auth0"}));
    app.authenticate(json!({"session_token": b["session_token"]}))
        .await
        .ok();
    app.authenticate(json!({"session_jwt": b["session_jwt"]}))
        .await
        .ok();

    let r = app
        .post("/v1/sessions/migrate", json!({"session_token": "good"}))
        .await;
    let b = r.ok();
    assert!(b["session"].is_null());
    assert_eq!(b["session_token"], "");
    assert_eq!(b["session_jwt"], "");
    assert_eq!(b["user_id"], user.as_str());

    app.post(
        "/v1/sessions/migrate",
        json!({"session_token": "good", "session_duration_minutes": 4}),
    )
    .await
    .error(400, "invalid_session_duration_minutes");
    app.post("/v1/sessions/migrate", json!({}))
        .await
        .error(400, "bad_request");
}

#[tokio::test]
async fn every_userinfo_failure_has_its_own_4xx() {
    let app = TestApp::new().await;
    set_userinfo_url(&app, Some(start_userinfo().await)).await;
    app.user("migrated@example.com").await;
    let migrate = |token: &'static str| {
        app.post(
            "/v1/sessions/migrate",
            json!({"session_token": token, "session_duration_minutes": 60}),
        )
    };
    migrate("stranger")
        .await
        .error(404, "migrate_from_external_email_does_not_exist");
    for token in ["rejected", "no-email", "not-json", "huge", "redirect"] {
        let r = migrate(token).await;
        assert!(
            !r.error(400, "migrate_from_external_unexpected_response")["error_message"]
                .as_str()
                .unwrap()
                .contains(token)
        );
    }
    let started = Instant::now();
    migrate("slow")
        .await
        .error(400, "migrate_from_external_unexpected_response");
    // The endpoint would answer after 30 s: an answer well before that came from our timeout.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "answered by the 5 s timeout, not by waiting"
    );

    // Nothing listens on port 1.
    set_userinfo_url(&app, Some("http://127.0.0.1:1/userinfo".into())).await;
    migrate("good")
        .await
        .error(400, "migrate_from_external_unexpected_response");
}
