use serde_json::{Value, json};

use crate::harness::{START, TestApp, decode_jwt, rfc3339};

#[tokio::test]
async fn create_then_authenticate_by_token() {
    let app = TestApp::new().await;
    let s = app.session(60).await;
    let session = &s["session"];
    assert!(
        session["session_id"]
            .as_str()
            .unwrap()
            .starts_with("session-test-")
    );
    assert_eq!(session["started_at"], rfc3339(START));
    assert_eq!(session["expires_at"], rfc3339(START + 3600));
    assert_eq!(session["roles"], json!(["stytch_user"]));
    assert_eq!(
        session["attributes"],
        json!({"ip_address": "", "user_agent": ""})
    );
    assert_eq!(session["custom_claims"], json!({}));
    let factor = &session["authentication_factors"][0];
    assert_eq!(factor["type"], "password");
    assert_eq!(factor["delivery_method"], "knowledge");
    assert_eq!(factor["created_at"], rfc3339(START));
    let token = s["session_token"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 44);
    assert_eq!(s["user"]["user_id"], session["user_id"]);

    app.advance(120);
    let r = app.authenticate(json!({"session_token": token})).await;
    let b = r.ok();
    assert_eq!(
        b["session_token"],
        token.as_str(),
        "the token never changes"
    );
    assert_eq!(b["session"]["last_accessed_at"], rfc3339(START + 120));
    assert_eq!(
        b["session"]["expires_at"],
        rfc3339(START + 3600),
        "no duration: expiry unchanged"
    );
    assert_eq!(b["session"]["session_id"], session["session_id"]);
    let (_, claims) = decode_jwt(b["session_jwt"].as_str().unwrap());
    assert_eq!(claims["iat"], START + 120, "a fresh JWT per authenticate");

    // With a duration the expiry is now + N, never added to the old one.
    app.advance(60);
    let r = app
        .authenticate(json!({"session_token": token, "session_duration_minutes": 10}))
        .await;
    assert_eq!(r.ok()["session"]["expires_at"], rfc3339(START + 180 + 600));
    // The touch written behind is visible to the next read at once.
    app.advance(5);
    app.authenticate(json!({"session_token": token})).await.ok();
    app.maintain().await;
    let r = app.authenticate(json!({"session_token": token})).await;
    assert_eq!(r.ok()["session"]["last_accessed_at"], rfc3339(START + 185));
}

#[tokio::test]
async fn duration_bounds() {
    let app = TestApp::new().await;
    let s = app.session(60).await;
    let token = s["session_token"].as_str().unwrap();
    for (minutes, ok) in [
        (4, false),
        (5, true),
        (527_040, true),
        (527_041, false),
        (0, false),
        (-1, false),
    ] {
        let r = app
            .authenticate(json!({"session_token": token, "session_duration_minutes": minutes}))
            .await;
        if ok {
            assert_eq!(
                r.ok()["session"]["expires_at"],
                rfc3339(START + minutes * 60)
            );
        } else {
            r.error(400, "invalid_session_duration_minutes");
        }
    }
    let user = s["user"]["user_id"].as_str().unwrap();
    for minutes in [4, 527_041] {
        app.post(
            "/v1/sessions",
            json!({"user_id": user, "session_duration_minutes": minutes, "authentication_factors": [{"type": "otp", "delivery_method": "sms"}]}),
        )
        .await
        .error(400, "invalid_session_duration_minutes");
    }
    app.authenticate(json!({"session_token": token, "session_duration_minutes": "ten"}))
        .await
        .error(400, "bad_request");
}

#[tokio::test]
async fn custom_claims_merge() {
    let app = TestApp::new().await;
    let s = app.session(60).await;
    let token = s["session_token"].as_str().unwrap();
    let auth = |claims: Value| {
        app.authenticate(json!({"session_token": token, "session_custom_claims": claims}))
    };

    let r = auth(json!({"tier": "gold", "org": {"id": 1, "name": "acme"}})).await;
    assert_eq!(
        r.ok()["session"]["custom_claims"],
        json!({"tier": "gold", "org": {"id": 1, "name": "acme"}})
    );
    let r = auth(json!({"tier": "platinum", "org": {"name": null, "size": 10}})).await;
    assert_eq!(
        r.ok()["session"]["custom_claims"],
        json!({"tier": "platinum", "org": {"id": 1, "size": 10}})
    );
    let r = auth(json!({"tier": null, "iss": "evil", "sub": "evil", "aud": "x", "exp": 1, "nbf": 1, "iat": 1, "jti": "j", "https://stytch.com/session": {"id": "forged"}, "https://stytch.com/other": 1})).await;
    let b = r.ok();
    assert_eq!(
        b["session"]["custom_claims"],
        json!({"org": {"id": 1, "size": 10}})
    );
    let (_, claims) = decode_jwt(b["session_jwt"].as_str().unwrap());
    assert_eq!(
        claims["org"],
        json!({"id": 1, "size": 10}),
        "custom claims are top-level JWT claims"
    );
    assert_ne!(claims["iss"], "evil");
    assert_ne!(claims["https://stytch.com/session"]["id"], "forged");
    assert!(claims.get("https://stytch.com/other").is_none());
    assert!(claims.get("jti").is_none());

    // Over 4096 bytes after the merge: refused, and nothing changed.
    auth(json!({"blob": "x".repeat(4100)}))
        .await
        .error(400, "custom_claims_too_large");
    let r = app.authenticate(json!({"session_token": token})).await;
    assert_eq!(
        r.ok()["session"]["custom_claims"],
        json!({"org": {"id": 1, "size": 10}})
    );
    auth(json!({"blob": 5})).await.ok();
    auth(json!(["not", "an", "object"]))
        .await
        .error(400, "bad_request");

    // Claims given at creation are stored and in the JWT.
    let user = s["user"]["user_id"].as_str().unwrap();
    let r = app
        .post(
            "/v1/sessions",
            json!({"user_id": user, "session_duration_minutes": 5, "session_custom_claims": {"a": 1, "iat": 0},
                   "authentication_factors": [{"type": "otp", "delivery_method": "sms"}], "attributes": {"ip_address": "203.0.113.9", "user_agent": "curl"}}),
        )
        .await;
    assert_eq!(r.ok()["session"]["custom_claims"], json!({"a": 1}));
    assert_eq!(
        r.body["session"]["attributes"],
        json!({"ip_address": "203.0.113.9", "user_agent": "curl"})
    );
}

#[tokio::test]
async fn authenticate_argument_errors() {
    let app = TestApp::new().await;
    let s = app.session(60).await;
    app.authenticate(json!({}))
        .await
        .error(400, "no_session_arguments");
    app.authenticate(json!({"session_token": "", "session_jwt": ""}))
        .await
        .error(400, "no_session_arguments");
    app.authenticate(json!({"session_token": s["session_token"], "session_jwt": s["session_jwt"]}))
        .await
        .error(400, "too_many_session_arguments");
    app.authenticate(json!({"session_token": "unknown-token"}))
        .await
        .error(404, "session_not_found");
    app.authenticate(json!({"session_jwt": "not.a.jwt"}))
        .await
        .error(401, "unable_to_parse_session_jwt");
    app.authenticate(json!({"session_token": 12}))
        .await
        .error(400, "bad_request");
}

#[tokio::test]
async fn create_session_validation() {
    let app = TestApp::new().await;
    let user = app.user("v@example.com").await;
    let base = json!({"user_id": user, "session_duration_minutes": 30, "authentication_factors": [{"type": "otp", "delivery_method": "email"}]});
    app.post("/v1/sessions", base.clone()).await.ok();
    let with = |key: &str, value: Value| {
        let mut b = base.clone();
        b[key] = value;
        b
    };
    let e = app
        .post("/v1/sessions", with("authentication_factors", json!([])))
        .await;
    e.names_field("authentication_factors");
    let e = app
        .post(
            "/v1/sessions",
            with(
                "authentication_factors",
                json!([{"type": "telepathy", "delivery_method": "email"}]),
            ),
        )
        .await;
    e.names_field("authentication_factors[0].type");
    let e = app
        .post(
            "/v1/sessions",
            with(
                "authentication_factors",
                json!([{"type": "otp", "delivery_method": "pigeon"}]),
            ),
        )
        .await;
    e.names_field("delivery_method");
    let mut no_duration = base.clone();
    no_duration
        .as_object_mut()
        .unwrap()
        .remove("session_duration_minutes");
    app.post("/v1/sessions", no_duration)
        .await
        .error(400, "bad_request");
    app.post(
        "/v1/sessions",
        with(
            "user_id",
            json!("user-test-00000000-0000-0000-0000-000000000000"),
        ),
    )
    .await
    .error(404, "user_not_found");
    let e = app.post("/v1/sessions", with("user_id", json!(7))).await;
    e.names_field("user_id");
}

#[tokio::test]
async fn list_sessions_of_a_user() {
    let app = TestApp::new().await;
    let user = app.user("list@example.com").await;
    let r = app.get(&format!("/v1/sessions?user_id={user}")).await;
    assert_eq!(r.ok()["sessions"], json!([]));
    let first = app.session_for(&user, 60).await;
    app.advance(10);
    let second = app.session_for(&user, 60).await;
    app.advance(10);
    let third = app.session_for(&user, 5).await;
    app.revoke(json!({"session_id": first["session"]["session_id"]}))
        .await
        .ok();
    let r = app
        .get(&format!("/v1/sessions?user_id={user}&project_id=ignored"))
        .await;
    let ids: Vec<&Value> = r.ok()["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["session_id"])
        .collect();
    assert_eq!(
        ids,
        vec![
            &third["session"]["session_id"],
            &second["session"]["session_id"]
        ],
        "active only, newest first"
    );
    app.advance(6 * 60);
    let r = app.get(&format!("/v1/sessions?user_id={user}")).await;
    assert_eq!(
        r.ok()["sessions"].as_array().unwrap().len(),
        1,
        "expired sessions are not listed"
    );
    app.get("/v1/sessions?user_id=user-test-00000000-0000-0000-0000-000000000000")
        .await
        .error(404, "user_not_found");
    app.get("/v1/sessions").await.error(400, "bad_request");
}

#[tokio::test]
async fn revoke_by_each_selector() {
    let app = TestApp::new().await;
    let by_id = app.session(60).await;
    let by_token = app.session(60).await;
    let by_jwt = app.session(60).await;

    app.revoke(json!({"session_id": by_id["session"]["session_id"]}))
        .await
        .ok();
    app.revoke(json!({"session_token": by_token["session_token"]}))
        .await
        .ok();
    // An expired JWT with a valid signature still revokes its session.
    app.advance(600);
    app.revoke(json!({"session_jwt": by_jwt["session_jwt"]}))
        .await
        .ok();

    for s in [&by_id, &by_token, &by_jwt] {
        app.authenticate(json!({"session_token": s["session_token"]}))
            .await
            .error(404, "session_not_found");
        app.authenticate(json!({"session_jwt": s["session_jwt"]}))
            .await
            .error(404, "session_not_found");
    }
    app.revoke(json!({"session_id": by_id["session"]["session_id"]}))
        .await
        .error(404, "session_not_found");
    app.revoke(json!({"session_token": "nope"}))
        .await
        .error(404, "session_not_found");
    app.revoke(json!({"session_id": "session-test-nonsense"}))
        .await
        .error(400, "invalid_session_id");
    app.revoke(json!({"session_id": "session-test-00000000-0000-0000-0000-000000000000"}))
        .await
        .error(404, "session_not_found");
    app.revoke(json!({}))
        .await
        .error(400, "no_session_revoke_arguments");
    app.revoke(json!({"session_id": by_id["session"]["session_id"], "session_token": "x"}))
        .await
        .error(400, "too_many_session_revoke_arguments");
    app.revoke(json!({"session_jwt": "bad"}))
        .await
        .error(401, "unable_to_parse_session_jwt");
}

#[tokio::test]
async fn revoke_every_session_of_a_user() {
    let app = TestApp::new().await;
    let user = app.user("many@example.com").await;
    let a = app.session_for(&user, 60).await;
    let b = app.session_for(&user, 60).await;
    let other = app.session(60).await;
    let r = app.revoke(json!({"user_id": user})).await;
    let mut ids: Vec<String> = r.ok()["revoked_session_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    ids.sort();
    let mut want = vec![
        a["session"]["session_id"].as_str().unwrap().to_string(),
        b["session"]["session_id"].as_str().unwrap().to_string(),
    ];
    want.sort();
    assert_eq!(ids, want);
    app.authenticate(json!({"session_token": a["session_token"]}))
        .await
        .error(404, "session_not_found");
    app.authenticate(json!({"session_token": other["session_token"]}))
        .await
        .ok();
    app.revoke(json!({"user_id": "nobody"}))
        .await
        .error(404, "user_not_found");
}

/// A new session, authenticated once (a bare touch) nine minutes after it started.
async fn touched_nine_minutes_in(app: &TestApp) -> Value {
    let s = app.session(60).await;
    app.advance(9 * 60);
    app.authenticate(json!({"session_token": s["session_token"]}))
        .await
        .ok();
    s
}

/// Sets the project's idle timeout and absolute lifetime (minutes; `None`: off).
async fn set_lifetimes(app: &TestApp, idle: Option<i64>, absolute: Option<i64>) {
    let row = hallpass::admin::get_project(&app.db, &app.creds.project_id)
        .await
        .unwrap();
    let change = hallpass::store::projects::SettingsChange {
        idle_timeout_minutes: Some(idle),
        absolute_lifetime_minutes: Some(absolute),
        ..Default::default()
    };
    hallpass::store::projects::update_settings(&app.db, row.id, &change)
        .await
        .unwrap();
    app.maintain().await;
}

#[tokio::test]
async fn idle_timeout_and_absolute_lifetime() {
    let app = TestApp::new().await;
    set_lifetimes(&app, Some(10), Some(60)).await;

    let s = app.session(600).await;
    assert_eq!(
        s["session"]["expires_at"],
        rfc3339(START + 3600),
        "capped by the absolute lifetime"
    );
    let token = s["session_token"].as_str().unwrap();
    // Kept alive by activity every 9 minutes…
    for _ in 0..5 {
        app.advance(9 * 60);
        let r = app
            .authenticate(json!({"session_token": token, "session_duration_minutes": 600}))
            .await;
        assert_eq!(
            r.ok()["session"]["expires_at"],
            rfc3339(START + 3600),
            "extension never passes started_at + lifetime"
        );
    }
    // …but not past the absolute lifetime.
    app.advance(15 * 60);
    app.authenticate(json!({"session_token": token}))
        .await
        .error(404, "session_not_found");

    // Idle for ten minutes: gone, even though expires_at is later. The bare touch (written
    // behind) counts as activity.
    let s = touched_nine_minutes_in(&app).await;
    let token = s["session_token"].as_str().unwrap();
    app.advance(9 * 60);
    app.authenticate(json!({"session_token": token})).await.ok();
    app.maintain().await;
    app.advance(10 * 60);
    for body in [
        json!({"session_token": token}),
        json!({"session_jwt": s["session_jwt"]}),
        json!({"session_token": token, "session_duration_minutes": 30}),
    ] {
        app.authenticate(body).await.error(404, "session_not_found");
    }

    // An extension sees a touch still pending in memory too: the stored last_accessed_at is
    // 18 minutes old, the pending one 9.
    let s = touched_nine_minutes_in(&app).await;
    let token = s["session_token"].as_str().unwrap();
    app.advance(9 * 60);
    let r = app
        .authenticate(json!({"session_jwt": s["session_jwt"], "session_duration_minutes": 30}))
        .await;
    let b = r.ok();
    assert_eq!(b["session"]["expires_at"], rfc3339(app.now() + 1800));
    assert_eq!(b["session"]["last_accessed_at"], rfc3339(app.now()));
    // …and the extension is stored: 9 minutes later a plain authenticate still succeeds,
    // and sees the new expiry.
    app.advance(9 * 60);
    let r = app.authenticate(json!({"session_token": token})).await;
    assert_eq!(r.ok()["session"]["expires_at"], b["session"]["expires_at"]);
}

#[tokio::test]
async fn an_expired_session_is_not_found() {
    let app = TestApp::new().await;
    let s = app.session(5).await;
    app.advance(5 * 60 - 1);
    app.authenticate(json!({"session_token": s["session_token"]}))
        .await
        .ok();
    app.advance(1);
    app.authenticate(json!({"session_token": s["session_token"]}))
        .await
        .error(404, "session_not_found");
}

/// Two instances on one database. One answers an authenticate whose touch it has not
/// written yet; the other reads the stored, older `last_accessed_at` just past the idle
/// timeout. It does not find the session, but it must not end it for good: once the touch
/// is stored the session is alive everywhere, and no `idle_timeout` event was published.
/// Past the margin with nothing newer stored, the session is ended and published.
#[tokio::test]
async fn an_idle_end_read_on_another_instance_waits_for_touches_not_yet_written() {
    let app = TestApp::new().await;
    set_lifetimes(&app, Some(10), None).await;
    let other = app.replica().await;
    let feed = format!("/v1/sessions/revocations/{}", app.creds.project_id);
    let idle_events = |body: &Value| {
        body["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["reason"] == "idle_timeout")
            .count()
    };

    let s = app.session(600).await;
    let token = json!({"session_token": s["session_token"]});
    app.advance(9 * 60);
    app.authenticate(token.clone()).await.ok();
    // The stored last_accessed_at is now 1 s past the idle bound; the one on `app`, 9 min.
    app.advance(60 + 1);
    other
        .authenticate(token.clone())
        .await
        .error(404, "session_not_found");
    app.authenticate(token.clone()).await.ok();
    app.maintain().await;
    other.authenticate(token.clone()).await.ok();
    assert_eq!(idle_events(app.get_anonymous(&feed, &[]).await.ok()), 0);

    // Idle for real: ended for good once past the margin, on either instance, and published.
    other.maintain().await;
    app.advance(10 * 60 + 6);
    other
        .authenticate(token.clone())
        .await
        .error(404, "session_not_found");
    assert_eq!(idle_events(app.get_anonymous(&feed, &[]).await.ok()), 1);
    app.authenticate(token)
        .await
        .error(404, "session_not_found");
}

#[tokio::test]
async fn starting_past_the_session_limit_ends_the_oldest() {
    let app = TestApp::with_max_sessions_per_user(3).await;
    let user = app.user("many-logins@example.com").await;
    let other = app.user("bystander@example.com").await;
    let bystander = app.session_for(&other, 60).await;
    let mut started = Vec::new();
    for _ in 0..5 {
        started.push(app.session_for(&user, 60).await);
        app.advance(1);
    }
    let id = |s: &Value| s["session"]["session_id"].as_str().unwrap().to_string();
    assert_eq!(
        app.live_session_ids(&user).await,
        vec![id(&started[4]), id(&started[3]), id(&started[2])],
        "the newest three are kept"
    );
    for gone in &started[..2] {
        app.authenticate(json!({"session_token": gone["session_token"]}))
            .await
            .error(404, "session_not_found");
    }
    app.authenticate(json!({"session_token": started[4]["session_token"]}))
        .await
        .ok();
    app.authenticate(json!({"session_token": bystander["session_token"]}))
        .await
        .ok();
    // Each ended session has one event, with the reason.
    let feed = app
        .get_anonymous(
            &format!("/v1/sessions/revocations/{}", app.creds.project_id),
            &[],
        )
        .await;
    let events: Vec<(Value, Value)> = feed.ok()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["session_id"].clone(), e["reason"].clone()))
        .collect();
    assert_eq!(
        events,
        vec![
            (json!(id(&started[0])), json!("session_limit")),
            (json!(id(&started[1])), json!("session_limit")),
        ]
    );

    // Started in one second (ties broken by id): a start never ends its own session.
    for _ in 0..4 {
        let s = app.session_for(&user, 60).await;
        app.authenticate(json!({"session_token": s["session_token"]}))
            .await
            .ok();
        let live = app.live_session_ids(&user).await;
        assert_eq!(live.len(), 3, "{live:?}");
        assert!(live.contains(&id(&s)));
    }
}
