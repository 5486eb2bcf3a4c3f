use serde_json::json;

use crate::harness::TestApp;

#[tokio::test]
async fn create_get_update_delete() {
    let app = TestApp::new().await;
    let r = app
        .post(
            "/v1/users",
            json!({"email": "Ada@Example.com", "name": {"first_name": "Ada", "last_name": "Lovelace"},
                   "trusted_metadata": {"plan": "pro"}, "external_id": "ext-1"}),
        )
        .await;
    let body = r.ok();
    let user_id = body["user_id"].as_str().unwrap().to_string();
    assert!(user_id.starts_with("user-test-"));
    assert!(
        body["email_id"]
            .as_str()
            .unwrap()
            .starts_with("email-test-")
    );
    assert_eq!(body["phone_id"], "");
    assert_eq!(body["status"], "active");
    let user = &body["user"];
    for list in [
        "phone_numbers",
        "webauthn_registrations",
        "providers",
        "totps",
        "crypto_wallets",
        "biometric_registrations",
    ] {
        assert_eq!(user[list], json!([]), "{list}");
    }
    assert_eq!(user["emails"][0]["email"], "Ada@Example.com");
    assert_eq!(user["roles"], json!(["stytch_user"]));
    assert_eq!(user["is_locked"], false);
    assert!(user["password"].is_null());
    assert_eq!(user["trusted_metadata"], json!({"plan": "pro"}));
    assert_eq!(user["untrusted_metadata"], json!({}));

    let got = app.get(&format!("/v1/users/{user_id}")).await;
    assert_eq!(got.ok()["name"]["first_name"], "Ada");
    assert_eq!(
        got.body["user_id"],
        user_id.as_str(),
        "user fields at top level"
    );
    // external_id works wherever a user_id does.
    assert_eq!(
        app.get("/v1/users/ext-1").await.ok()["user_id"],
        user_id.as_str()
    );

    let upd = app
        .put(
            &format!("/v1/users/{user_id}"),
            json!({"name": {"middle_name": "King"}, "untrusted_metadata": {"x": 1}}),
        )
        .await;
    let b = upd.ok();
    assert_eq!(
        b["user"]["name"],
        json!({"first_name": "Ada", "middle_name": "King", "last_name": "Lovelace"})
    );
    assert_eq!(b["emails"][0]["email"], "Ada@Example.com");
    assert_eq!(b["phone_numbers"], json!([]));
    assert_eq!(b["crypto_wallets"], json!([]));
    assert_eq!(b["user"]["untrusted_metadata"], json!({"x": 1}));

    let s = app.session_for(&user_id, 60).await;
    let token = s["session_token"].as_str().unwrap();
    assert_eq!(
        app.delete(&format!("/v1/users/{user_id}")).await.ok()["user_id"],
        user_id.as_str()
    );
    app.get(&format!("/v1/users/{user_id}"))
        .await
        .error(404, "user_not_found");
    // Deleting a user ends its sessions.
    app.authenticate(json!({"session_token": token}))
        .await
        .error(404, "session_not_found");
    app.delete(&format!("/v1/users/{user_id}"))
        .await
        .error(404, "user_not_found");
}

#[tokio::test]
async fn email_rules() {
    let app = TestApp::new().await;
    app.post("/v1/users", json!({"email": "not-an-email"}))
        .await
        .error(400, "invalid_email");
    app.user("grace@example.com").await;
    app.post("/v1/users", json!({"email": "GRACE@example.com"}))
        .await
        .error(400, "duplicate_email");
    // A user without email is fine.
    let r = app.post("/v1/users", json!({})).await;
    assert_eq!(r.ok()["email_id"], "");
    assert_eq!(r.body["user"]["emails"], json!([]));
    let e = app.post("/v1/users", json!({"email": 42})).await;
    e.names_field("email");
}

#[tokio::test]
async fn unknown_and_malformed_user_ids() {
    let app = TestApp::new().await;
    app.get("/v1/users/user-test-00000000-0000-0000-0000-000000000000")
        .await
        .error(404, "user_not_found");
    app.get("/v1/users/nobody")
        .await
        .error(404, "user_not_found");
    app.put("/v1/users/nobody", json!({}))
        .await
        .error(404, "user_not_found");
}
