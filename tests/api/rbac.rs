//! RBAC: the policy endpoint, roles on users and sessions, and `authorization_check`, which
//! is granted by a role's permission or refused 403, never ignored.

use serde_json::{Value, json};

use crate::harness::{TestApp, decode_jwt};

fn policy() -> Value {
    json!({
        "roles": [
            {"role_id": "stytch_user", "description": "everyone", "permissions": [
                {"resource_id": "documents", "actions": ["read"]}]},
            {"role_id": "editor", "description": "edits", "permissions": [
                {"resource_id": "documents", "actions": ["read", "write"]}]},
            {"role_id": "billing_admin", "description": "", "permissions": [
                {"resource_id": "billing", "actions": ["*"]}]}
        ],
        "resources": [
            {"resource_id": "documents", "description": "", "actions": ["read", "write", "delete"]},
            {"resource_id": "billing", "description": "", "actions": ["read", "refund"]}
        ],
        "scopes": []
    })
}

async fn with_policy() -> TestApp {
    let app = TestApp::new().await;
    app.set_policy(&policy().to_string()).await;
    app
}

/// A session for a new user holding `roles`; returns (user_id, the create response).
async fn session_with_roles(app: &TestApp, roles: &[&str]) -> (String, Value) {
    let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
    let created = app
        .post("/v1/users", json!({"email": email, "roles": roles}))
        .await;
    let user_id = created.ok()["user_id"].as_str().unwrap().to_string();
    (user_id.clone(), app.session_for(&user_id, 60).await)
}

#[tokio::test]
async fn the_policy_is_served_with_stytch_user() {
    let app = TestApp::new().await;
    let empty = app.get("/v1/rbac/policy").await;
    assert_eq!(
        empty.ok()["policy"],
        json!({"roles": [{"role_id": "stytch_user", "description": "Every user holds this role.", "permissions": []}],
               "resources": [], "scopes": []})
    );
    let app = with_policy().await;
    let got = app.get("/v1/rbac/policy").await;
    assert_eq!(got.ok()["policy"], policy());
    app.get_anonymous("/v1/rbac/policy", &[])
        .await
        .error(401, "unauthorized_credentials");
}

#[tokio::test]
async fn users_carry_stytch_user_and_their_assigned_roles() {
    let app = with_policy().await;
    let created = app
        .post(
            "/v1/users",
            json!({"email": "a@example.com", "roles": ["editor"]}),
        )
        .await;
    let user_id = created.ok()["user_id"].as_str().unwrap().to_string();
    assert_eq!(
        created.body["user"]["roles"],
        json!(["stytch_user", "editor"])
    );
    app.post(
        "/v1/users",
        json!({"email": "b@example.com", "roles": ["editor", "root"]}),
    )
    .await
    .names_field("roles[1]");
    let updated = app
        .put(
            &format!("/v1/users/{user_id}"),
            json!({"roles": ["billing_admin"]}),
        )
        .await;
    assert_eq!(
        updated.ok()["user"]["roles"],
        json!(["stytch_user", "billing_admin"])
    );
    let got = app.get(&format!("/v1/users/{user_id}")).await;
    assert_eq!(got.ok()["roles"], json!(["stytch_user", "billing_admin"]));
    // Updating something else keeps the roles.
    let renamed = app
        .put(
            &format!("/v1/users/{user_id}"),
            json!({"name": {"first_name": "A"}}),
        )
        .await;
    assert_eq!(
        renamed.ok()["user"]["roles"],
        json!(["stytch_user", "billing_admin"])
    );
}

#[tokio::test]
async fn granted_checks_answer_with_the_granting_roles() {
    let app = with_policy().await;
    let (_, s) = session_with_roles(&app, &["editor"]).await;
    let token = s["session_token"].as_str().unwrap();
    assert_eq!(s["session"]["roles"], json!(["stytch_user", "editor"]));
    let write = app
        .authenticate(json!({"session_token": token,
            "authorization_check": {"resource_id": "documents", "action": "write"}}))
        .await;
    assert_eq!(
        write.ok()["verdict"],
        json!({"authorized": true, "granting_roles": ["editor"]})
    );
    let read = app
        .authenticate(json!({"session_jwt": s["session_jwt"],
            "authorization_check": {"resource_id": "documents", "action": "read"}}))
        .await;
    assert_eq!(
        read.ok()["verdict"]["granting_roles"],
        json!(["stytch_user", "editor"])
    );
    let plain = app.authenticate(json!({"session_token": token})).await;
    assert!(plain.ok().get("verdict").is_none(), "no check, no verdict");
    let (_, claims) = decode_jwt(plain.body["session_jwt"].as_str().unwrap());
    assert_eq!(
        claims["https://stytch.com/session"]["roles"],
        json!(["stytch_user", "editor"])
    );
}

#[tokio::test]
async fn denied_unknown_and_malformed_checks_are_refused_and_change_nothing() {
    let app = with_policy().await;
    let (_, s) = session_with_roles(&app, &["editor"]).await;
    let token = s["session_token"].as_str().unwrap();
    app.advance(60);
    for (resource, action) in [
        ("billing", "refund"),
        ("documents", "delete"),
        ("nonexistent", "read"),
        ("documents", "fly"),
        ("documents", "*"),
    ] {
        app.authenticate(
            json!({"session_token": token, "session_duration_minutes": 600,
            "session_custom_claims": {"sneaky": true},
            "authorization_check": {"resource_id": resource, "action": action}}),
        )
        .await
        .error(403, "consumer_session_authorization_error");
        app.authenticate(json!({"session_jwt": s["session_jwt"],
            "authorization_check": {"resource_id": resource, "action": action}}))
            .await
            .error(403, "consumer_session_authorization_error");
    }
    app.maintain().await;
    let after = app
        .get(&format!(
            "/v1/sessions?user_id={}",
            s["session"]["user_id"].as_str().unwrap()
        ))
        .await;
    let stored = &after.ok()["sessions"][0];
    assert_eq!(
        stored["expires_at"], s["session"]["expires_at"],
        "not extended"
    );
    assert_eq!(stored["custom_claims"], json!({}), "no claim merged");
    assert_eq!(
        stored["last_accessed_at"], s["session"]["last_accessed_at"],
        "not touched"
    );

    for (check, field) in [
        (json!({"action": "read"}), "resource_id"),
        (json!({"resource_id": "documents"}), "action"),
        (json!({"resource_id": 1, "action": "read"}), "resource_id"),
        (json!({"resource_id": "", "action": "read"}), "resource_id"),
        (json!(["documents", "read"]), "authorization_check"),
        (json!("documents:read"), "authorization_check"),
    ] {
        app.authenticate(json!({"session_token": token, "authorization_check": check}))
            .await
            .names_field(field);
    }
}

#[tokio::test]
async fn a_role_change_reaches_the_next_authenticate_and_jwt() {
    let app = with_policy().await;
    let (user_id, s) = session_with_roles(&app, &[]).await;
    let token = s["session_token"].as_str().unwrap();
    let check = json!({"resource_id": "billing", "action": "refund"});
    app.authenticate(json!({"session_token": token, "authorization_check": check}))
        .await
        .error(403, "consumer_session_authorization_error");
    app.put(
        &format!("/v1/users/{user_id}"),
        json!({"roles": ["billing_admin"]}),
    )
    .await
    .ok();
    let granted = app
        .authenticate(json!({"session_token": token, "authorization_check": check}))
        .await;
    assert_eq!(
        granted.ok()["verdict"]["granting_roles"],
        json!(["billing_admin"])
    );
    assert_eq!(
        granted.body["session"]["roles"],
        json!(["stytch_user", "billing_admin"])
    );
    let (_, claims) = decode_jwt(granted.body["session_jwt"].as_str().unwrap());
    assert_eq!(
        claims["https://stytch.com/session"]["roles"],
        json!(["stytch_user", "billing_admin"])
    );
    // Taking the role away takes the grant away.
    app.put(&format!("/v1/users/{user_id}"), json!({"roles": []}))
        .await
        .ok();
    app.authenticate(json!({"session_token": token, "authorization_check": check}))
        .await
        .error(403, "consumer_session_authorization_error");
}

#[tokio::test]
async fn fields_that_could_restrict_access_are_refused_not_ignored() {
    let app = with_policy().await;
    let user = app.user("ada@example.com").await;
    for (body, field) in [
        (
            json!({"email": "p@example.com", "phone_number": "+15555550100"}),
            "phone_number",
        ),
        (
            json!({"email": "q@example.com", "create_user_as_pending": true}),
            "create_user_as_pending",
        ),
    ] {
        app.post("/v1/users", body).await.names_field(field);
    }
    for (extra, field) in [
        (
            json!({"options": {"ip_match_required": true}}),
            "ip_match_required",
        ),
        (
            json!({"options": {"user_agent_match_required": true}}),
            "user_agent_match_required",
        ),
        (json!({"code_verifier": "abc"}), "code_verifier"),
    ] {
        let link = app.magic_link(&user).await;
        let mut body = json!({"token": link, "session_duration_minutes": 60});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        app.post("/v1/magic_links/authenticate", body)
            .await
            .names_field(field);
    }
    // Harmless hooks are accepted.
    let link = app.magic_link(&user).await;
    app.post(
        "/v1/magic_links/authenticate",
        json!({"token": link, "session_duration_minutes": 60, "telemetry_id": "t",
               "attributes": {"ip_address": "1.2.3.4"},
               "options": {"ip_match_required": false, "user_agent_match_required": false}}),
    )
    .await
    .ok();
    app.post(
        "/v1/sessions/exchange_access_token",
        json!({"access_token": "x"}),
    )
    .await
    .names_field("attest");
}
