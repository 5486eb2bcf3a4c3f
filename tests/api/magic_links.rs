use serde_json::json;

use crate::harness::{START, TestApp};

#[tokio::test]
async fn create_and_authenticate_to_start_a_session() {
    let app = TestApp::new().await;
    let user = app.user("ml@example.com").await;
    let r = app.post("/v1/magic_links", json!({"user_id": user})).await;
    let token = r.ok()["token"].as_str().unwrap().to_string();
    assert_eq!(r.body["user_id"], user.as_str());

    let r = app
        .post(
            "/v1/magic_links/authenticate",
            json!({"token": token, "session_duration_minutes": 60}),
        )
        .await;
    let b = r.ok();
    assert_eq!(b["user_id"], user.as_str());
    assert_eq!(b["reset_sessions"], false);
    let method_id = b["method_id"].as_str().unwrap();
    assert!(method_id.starts_with("embedded-test-"));
    let factor = &b["session"]["authentication_factors"][0];
    assert_eq!(factor["type"], "magic_link");
    assert_eq!(factor["delivery_method"], "embedded");
    assert_eq!(
        factor["embeddable_magic_link_factor"]["embedded_id"],
        method_id
    );
    assert_eq!(b["user"]["user_id"], user.as_str());
    app.authenticate(json!({"session_token": b["session_token"]}))
        .await
        .ok();

    // Single use.
    app.post(
        "/v1/magic_links/authenticate",
        json!({"token": token, "session_duration_minutes": 60}),
    )
    .await
    .error(404, "magic_link_not_found");
    app.post("/v1/magic_links/authenticate", json!({"token": "unknown"}))
        .await
        .error(404, "magic_link_not_found");
    app.post("/v1/magic_links/authenticate", json!({}))
        .await
        .error(400, "bad_request");
}

#[tokio::test]
async fn without_a_duration_no_session_starts() {
    let app = TestApp::new().await;
    let user = app.user("nosession@example.com").await;
    let token = app.magic_link(&user).await;
    let r = app
        .post("/v1/magic_links/authenticate", json!({"token": token}))
        .await;
    let b = r.ok();
    assert!(b["session"].is_null());
    assert_eq!(b["session_token"], "");
    assert_eq!(b["session_jwt"], "");
    assert_eq!(b["user_id"], user.as_str());
}

#[tokio::test]
async fn expiry_and_bounds() {
    let app = TestApp::new().await;
    let user = app.user("exp@example.com").await;
    let token = app.magic_link(&user).await;
    app.advance(5 * 60);
    app.post("/v1/magic_links/authenticate", json!({"token": token}))
        .await
        .error(404, "magic_link_not_found");
    let long = app
        .post(
            "/v1/magic_links",
            json!({"user_id": user, "expiration_minutes": 60}),
        )
        .await
        .ok()["token"]
        .clone();
    app.advance(59 * 60);
    app.post("/v1/magic_links/authenticate", json!({"token": long}))
        .await
        .ok();
    for bad in [0, 61] {
        app.post(
            "/v1/magic_links",
            json!({"user_id": user, "expiration_minutes": bad}),
        )
        .await
        .error(400, "bad_request");
    }
    app.post("/v1/magic_links", json!({"user_id": "nobody"}))
        .await
        .error(404, "user_not_found");
    app.post("/v1/magic_links", json!({}))
        .await
        .error(400, "bad_request");
    assert!(app.now() > START);
}

#[tokio::test]
async fn adds_a_factor_to_an_existing_session() {
    let app = TestApp::new().await;
    let user = app.user("stepup@example.com").await;
    let s = app.session_for(&user, 60).await;
    let token = app.magic_link(&user).await;
    let r = app
        .post("/v1/magic_links/authenticate", json!({"token": token, "session_token": s["session_token"], "session_custom_claims": {"stepped": true}}))
        .await;
    let b = r.ok();
    assert_eq!(b["session"]["session_id"], s["session"]["session_id"]);
    assert_eq!(b["session_token"], s["session_token"]);
    let kinds: Vec<&str> = b["session"]["authentication_factors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["password", "magic_link"]);
    assert_eq!(b["session"]["custom_claims"], json!({"stepped": true}));

    // Another user's link cannot step up this session, and the session must be live.
    let stranger = app.user("stranger@example.com").await;
    let t2 = app.magic_link(&stranger).await;
    app.post(
        "/v1/magic_links/authenticate",
        json!({"token": t2, "session_jwt": s["session_jwt"]}),
    )
    .await
    .error(404, "session_not_found");
    // ... and that link was not spent: its own user can still use it.
    app.post("/v1/magic_links/authenticate", json!({"token": t2}))
        .await
        .ok();
    let t3 = app.magic_link(&user).await;
    app.post(
        "/v1/magic_links/authenticate",
        json!({"token": t3, "session_token": "gone"}),
    )
    .await
    .error(404, "session_not_found");
    // The failed attempt did not burn the link.
    app.post("/v1/magic_links/authenticate", json!({"token": t3}))
        .await
        .ok();
    // Claims that would not fit the session are refused before the link is spent.
    let t4 = app.magic_link(&user).await;
    app.post(
        "/v1/magic_links/authenticate",
        json!({"token": t4, "session_token": s["session_token"],
               "session_custom_claims": {"big": "x".repeat(5000)}}),
    )
    .await
    .error(400, "custom_claims_too_large");
    app.post(
        "/v1/magic_links/authenticate",
        json!({"token": t4, "session_duration_minutes": 60,
               "session_custom_claims": {"big": "x".repeat(5000)}}),
    )
    .await
    .error(400, "custom_claims_too_large");
    app.post(
        "/v1/magic_links/authenticate",
        json!({"token": t4, "session_token": s["session_token"]}),
    )
    .await
    .ok();
}
