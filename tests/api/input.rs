//! Bad input gets the same 4xx on both backends, naming what is wrong; never a 500.

use serde_json::json;

use crate::harness::TestApp;

#[tokio::test]
async fn nul_characters_are_refused_wherever_they_appear() {
    let app = TestApp::new().await;
    let user = app.user("ada@example.com").await;
    let nul = "a\u{0}b";
    let cases = [
        (
            "/v1/users",
            json!({"email": "x@example.com", "external_id": nul}),
            "external_id",
        ),
        (
            "/v1/users",
            json!({"name": {"first_name": nul}}),
            "name.first_name",
        ),
        (
            "/v1/users",
            json!({"trusted_metadata": {"k": [1, nul]}}),
            "trusted_metadata.k[1]",
        ),
        (
            "/v1/users",
            json!({"untrusted_metadata": {nul: 1}}),
            "untrusted_metadata",
        ),
        (
            "/v1/sessions/authenticate",
            json!({"session_token": nul}),
            "session_token",
        ),
        (
            "/v1/sessions/revoke",
            json!({"session_id": nul}),
            "session_id",
        ),
        ("/v1/magic_links", json!({"user_id": nul}), "user_id"),
        (
            "/v1/sessions",
            json!({"user_id": user, "session_duration_minutes": 60,
                   "authentication_factors": [{"type": "password", "delivery_method": "knowledge"}],
                   "attributes": {"user_agent": nul}}),
            "attributes.user_agent",
        ),
        (
            "/v1/sessions",
            json!({"user_id": user, "session_duration_minutes": 60,
                   "authentication_factors": [{"type": "password", "delivery_method": "knowledge"}],
                   "session_custom_claims": {"k": nul}}),
            "session_custom_claims.k",
        ),
    ];
    for (path, body, field) in cases {
        app.post(path, body).await.names_field(field);
    }
    app.put(
        &format!("/v1/users/{user}"),
        json!({"name": {"last_name": nul}}),
    )
    .await
    .names_field("name.last_name");
    app.get("/v1/sessions?user_id=a%00b")
        .await
        .names_field("user_id");
    app.get("/v1/users/a%00b").await.names_field("path");
}

#[tokio::test]
async fn bodies_must_be_one_json_object_with_objects_where_objects_belong() {
    let app = TestApp::new().await;
    let user = app.user("ada@example.com").await;
    let raw = |body: &'static str| {
        app.send(
            axum::http::Request::post("/v1/users")
                .header("authorization", app.basic())
                .body(axum::body::Body::from(body))
                .unwrap(),
        )
    };
    let r = raw(r#"{"email": "trailing@example.com"} {}"#).await;
    r.error(400, "bad_request");
    let r = raw(r#"["ada@example.com"]"#).await;
    r.error(400, "bad_request");
    app.post("/v1/users", json!({"name": ["Ada", "M", "Lovelace"]}))
        .await
        .names_field("name");
    app.post(
        "/v1/sessions",
        json!({"user_id": user, "session_duration_minutes": 60,
               "authentication_factors": [{"type": "password", "delivery_method": "knowledge"}],
               "attributes": ["1.2.3.4", "curl"]}),
    )
    .await
    .names_field("attributes");
}

#[tokio::test]
async fn a_declared_body_over_the_limit_is_refused_before_it_is_read() {
    let app = TestApp::new().await;
    let r = app
        .send(
            axum::http::Request::post("/v1/users")
                .header("authorization", app.basic())
                .header("content-length", "10000000000")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    r.error(413, "bad_request");
}

#[tokio::test]
async fn stored_session_parts_are_bounded_so_the_jwt_always_fits() {
    let app = TestApp::new().await;
    let user = app.user("ada@example.com").await;
    let factor = |detail: String| json!({"type": "password", "delivery_method": "knowledge", "password_factor": {"d": detail}});
    let create = |factors: Vec<serde_json::Value>, attributes: serde_json::Value| {
        json!({"user_id": user, "session_duration_minutes": 60,
               "authentication_factors": factors, "attributes": attributes})
    };
    app.post(
        "/v1/sessions",
        create(vec![factor("x".repeat(2000))], json!({})),
    )
    .await
    .names_field("authentication_factors[0].password_factor");
    app.post(
        "/v1/sessions",
        create(vec![factor("x".into()); 17], json!({})),
    )
    .await
    .names_field("authentication_factors");
    app.post(
        "/v1/sessions",
        create(
            vec![factor("x".into())],
            json!({"user_agent": "u".repeat(1025)}),
        ),
    )
    .await
    .names_field("attributes.user_agent");
    // The largest session allowed still mints a JWT that fits in a request body.
    let kinds = [
        "password", "otp", "totp", "webauthn", "oauth", "sso", "crypto", "imported",
    ];
    let factors: Vec<_> = (0..16)
        .map(|i| {
            json!({"type": kinds[i % 8], "delivery_method": if i < 8 { "knowledge" } else { "email" },
                   format!("f{i}_factor"): {"d": "x".repeat(1000)}})
        })
        .collect();
    let claims: serde_json::Map<_, _> = (0..8)
        .map(|i| (format!("c{i}"), json!("y".repeat(490))))
        .collect();
    let mut body = create(
        factors,
        json!({"ip_address": "i".repeat(64), "user_agent": "u".repeat(1024)}),
    );
    body["session_custom_claims"] = json!(claims);
    let s = app.post("/v1/sessions", body).await;
    let jwt = s.ok()["session_jwt"].as_str().unwrap().to_string();
    assert!(jwt.len() < 48 * 1024, "JWT of {} bytes", jwt.len());
    app.authenticate(json!({"session_jwt": jwt})).await.ok();
}
