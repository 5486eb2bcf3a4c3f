use hallpass::domain::ids::Env;
use hallpass::domain::keys::Schedule;
use hallpass::keyring;
use serde_json::json;

use crate::harness::{TestApp, decode_jwt};
use crate::jwt::verify_with_jwks;

fn kid_of(jwt: &serde_json::Value) -> String {
    decode_jwt(jwt.as_str().unwrap()).0["kid"]
        .as_str()
        .unwrap()
        .to_string()
}

fn project_uuid(app: &TestApp) -> uuid::Uuid {
    app.creds
        .project_id
        .parse::<hallpass::domain::ids::ProjectId>()
        .unwrap()
        .uuid
}

#[tokio::test]
async fn rotation_moves_signing_to_the_waiting_key_and_old_jwts_keep_working() {
    let app = TestApp::new().await;
    let before = app.session(60).await;
    let old_kid = kid_of(&before["session_jwt"]);
    let jwks_before = app.get_anonymous("/jwks", &[]).await.ok().clone();
    let waiting: Vec<String> = jwks_before["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .filter(|k| *k != old_kid)
        .collect();
    assert_eq!(waiting.len(), 1);

    // Too young to sign: refused unless forced.
    let p = project_uuid(&app);
    let err = keyring::rotate_now(
        &app.db,
        &app.master,
        &app.schedule,
        p,
        Env::Test,
        app.now(),
        false,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("--force"), "{err}");
    app.advance(2 * 300);
    keyring::rotate_now(
        &app.db,
        &app.master,
        &app.schedule,
        p,
        Env::Test,
        app.now(),
        false,
    )
    .await
    .unwrap();
    app.maintain().await;

    let after = app.session(60).await;
    let new_kid = kid_of(&after["session_jwt"]);
    assert_eq!(
        new_kid, waiting[0],
        "the key published in advance now signs"
    );
    // The JWKS fetched before the rotation verifies the new JWT: no verifier meets an unknown kid.
    verify_with_jwks(
        after["session_jwt"].as_str().unwrap(),
        &jwks_before,
        &app.creds.project_id,
        app.now(),
    );
    // The old JWT (now expired) still authenticates and is refreshed with the new key.
    let r = app
        .authenticate(json!({"session_jwt": before["session_jwt"]}))
        .await;
    assert_eq!(kid_of(&r.ok()["session_jwt"]), new_kid);
    let jwks_after = app.get_anonymous("/jwks", &[]).await;
    let kids: Vec<&str> = jwks_after.ok()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids.len(), 3, "retired, current and a new waiting key");
    assert!(kids.contains(&old_kid.as_str()));
}

#[tokio::test]
async fn a_revoked_kid_is_refused_and_leaves_the_jwks_at_once() {
    let app = TestApp::new().await;
    let s = app.session(60).await;
    let kid = kid_of(&s["session_jwt"]);
    let id = hallpass::domain::ids::parse(hallpass::domain::ids::Kind::Jwk, &kid)
        .unwrap()
        .1;
    let state = keyring::revoke(
        &app.db,
        &app.master,
        &app.schedule,
        project_uuid(&app),
        Env::Test,
        id,
        app.now(),
    )
    .await
    .unwrap();
    assert_eq!(state.as_str(), "current");
    app.maintain().await;
    app.authenticate(json!({"session_jwt": s["session_jwt"]}))
        .await
        .error(401, "unable_to_parse_session_jwt");
    app.revoke(json!({"session_jwt": s["session_jwt"]}))
        .await
        .error(401, "unable_to_parse_session_jwt");
    let jwks = app.get_anonymous("/jwks", &[]).await;
    assert!(
        jwks.ok()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["kid"] != kid.as_str())
    );
    // The session itself is fine, and is served with the promoted key.
    let r = app
        .authenticate(json!({"session_token": s["session_token"]}))
        .await;
    assert_ne!(kid_of(&r.ok()["session_jwt"]), kid);
    let again = keyring::revoke(
        &app.db,
        &app.master,
        &app.schedule,
        project_uuid(&app),
        Env::Test,
        id,
        app.now(),
    )
    .await;
    assert!(again.is_err());
}

#[tokio::test]
async fn the_schedule_rotates_by_itself_and_caps_the_cache_lifetime() {
    let schedule = Schedule {
        rotation_interval: 3_600,
        max_age: 60,
        retention: 0,
    };
    let app = TestApp::with_schedule(schedule).await;
    let mut kids = vec![kid_of(&app.session(60).await["session_jwt"])];
    let jwks = app.get_anonymous("/jwks", &[]).await;
    assert_eq!(jwks.headers["cache-control"], "public, max-age=60");
    for hour in 1..=3 {
        app.advance(3_600 - 30);
        app.maintain().await;
        let r = app.get_anonymous("/jwks", &[]).await;
        assert_eq!(
            r.headers["cache-control"], "public, max-age=30",
            "never cached past the next change (hour {hour})"
        );
        app.advance(30);
        app.maintain().await;
        kids.push(kid_of(&app.session(60).await["session_jwt"]));
    }
    kids.dedup();
    assert_eq!(kids.len(), 4, "one new signing key per interval: {kids:?}");
    app.advance(420);
    app.maintain().await;
    let count: (i64,) = hallpass::with_db!(&app.db, p => sqlx::query_as("SELECT COUNT(*) FROM signing_keys").fetch_one(p).await.unwrap());
    // Retired keys are deleted after JWT life + 2 x max-age (420 s): current + next only.
    assert_eq!(count.0, 2);
}
