use hallpass::domain::ids::Env;
use serde_json::json;

use crate::harness::TestApp;

#[tokio::test]
async fn nothing_of_one_project_is_visible_to_another() {
    let app = TestApp::new().await;
    let s = app.session(60).await;
    let user = s["user"]["user_id"].as_str().unwrap();
    let b = app.other_project(Env::Test).await;

    let as_b = |path: &'static str, body| app.post_as(&b, path, body);
    as_b(
        "/v1/sessions/authenticate",
        json!({"session_token": s["session_token"]}),
    )
    .await
    .error(404, "session_not_found");
    as_b(
        "/v1/sessions/authenticate",
        json!({"session_jwt": s["session_jwt"]}),
    )
    .await
    .error(401, "unable_to_parse_session_jwt");
    as_b(
        "/v1/sessions/revoke",
        json!({"session_id": s["session"]["session_id"]}),
    )
    .await
    .error(404, "session_not_found");
    as_b(
        "/v1/sessions/revoke",
        json!({"session_token": s["session_token"]}),
    )
    .await
    .error(404, "session_not_found");
    as_b("/v1/sessions/revoke", json!({"user_id": user}))
        .await
        .error(404, "user_not_found");
    as_b("/v1/magic_links", json!({"user_id": user}))
        .await
        .error(404, "user_not_found");
    as_b(
        "/v1/sessions",
        json!({"user_id": user, "session_duration_minutes": 5, "authentication_factors": [{"type": "otp", "delivery_method": "sms"}]}),
    )
    .await
    .error(404, "user_not_found");
    let r = app
        .request(
            axum::http::Method::GET,
            &format!("/v1/users/{user}"),
            None,
            Some(&b),
            &[],
        )
        .await;
    r.error(404, "user_not_found");
    // B's JWKS does not carry A's keys.
    let a_kid = crate::harness::decode_jwt(s["session_jwt"].as_str().unwrap()).0["kid"].clone();
    let jwks_b = app
        .get_anonymous(&format!("/jwks/{}", b.project_id), &[])
        .await;
    assert!(
        jwks_b.ok()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["kid"] != a_kid)
    );
    // A still sees its session.
    app.authenticate(json!({"session_token": s["session_token"]}))
        .await
        .ok();
    // A live project's ids are not a test project's.
    let live = app.other_project(Env::Live).await;
    app.post_as(
        &live,
        "/v1/sessions/revoke",
        json!({"session_id": s["session"]["session_id"]}),
    )
    .await
    .error(404, "session_not_found");
}
