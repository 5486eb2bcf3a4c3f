//! Retention: what ended more than the window ago is deleted, in batches; nothing live is.

use hallpass::store::retention::{Outcome, Purged, purge};
use serde_json::json;

use crate::harness::TestApp;

const DAY: i64 = 86_400;

#[tokio::test]
async fn ended_rows_are_deleted_after_the_window_and_live_ones_never() {
    let app = TestApp::new().await;
    // Live for a year; ends in five minutes; revoked now; extended to stay alive.
    let long = app.session(527_040).await;
    let short = app.session(5).await;
    let revoked = app.session(600).await;
    app.revoke(json!({"session_token": revoked["session_token"]}))
        .await
        .ok();
    let kept = app.session(5).await;
    app.authenticate(
        json!({"session_token": kept["session_token"], "session_duration_minutes": 527_040}),
    )
    .await
    .ok();
    let user = app.user("links@example.com").await;
    let used = app.magic_link(&user).await;
    app.post("/v1/magic_links/authenticate", json!({"token": used}))
        .await
        .ok();
    let _expired = app.magic_link(&user).await;

    // Thirty days on: nothing has been over for 30 days yet.
    app.advance(30 * DAY - 3600);
    let cutoff = app.now() - 30 * DAY;
    assert_eq!(
        purge(&app.db, cutoff, 1000, false, |_| {}).await.unwrap(),
        Outcome::Done(Purged::default())
    );

    // Two hours later, everything that ended at the start has been over for 30 days.
    app.advance(2 * 3600);
    let cutoff = app.now() - 30 * DAY;
    let dry = purge(&app.db, cutoff, 1000, true, |_| {}).await.unwrap();
    assert_eq!(
        dry,
        Outcome::Done(Purged {
            sessions: 2,
            magic_links: 2
        })
    );
    // Batches of one: the cursor walks on, and progress is reported per batch.
    let mut reports = 0;
    let done = purge(&app.db, cutoff, 1, false, |_| reports += 1)
        .await
        .unwrap();
    assert_eq!(
        done,
        Outcome::Done(Purged {
            sessions: 2,
            magic_links: 2
        })
    );
    assert!(reports >= 4, "{reports} progress reports");
    assert_eq!(
        purge(&app.db, cutoff, 1000, true, |_| {}).await.unwrap(),
        Outcome::Done(Purged::default()),
        "a second pass finds nothing"
    );
    for live in [&long, &kept] {
        app.authenticate(json!({"session_token": live["session_token"]}))
            .await
            .ok();
    }
    for gone in [&short, &revoked] {
        app.authenticate(json!({"session_token": gone["session_token"]}))
            .await
            .error(404, "session_not_found");
    }
}

#[tokio::test]
async fn the_background_purge_uses_the_configured_window() {
    let app = TestApp::new().await;
    let s = app.session(5).await;
    app.advance(31 * DAY);
    app.state.purge().await;
    assert_eq!(
        app.metric("hallpass_retention_deleted_total{table=\"sessions\"}")
            .await,
        1
    );
    let _ = s;
}
