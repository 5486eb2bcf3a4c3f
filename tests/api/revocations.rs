//! The revocation feed: one event per ended session, by every way a session ends; poll,
//! long-poll, stream and SSF; the cursor and its horizon; public or private.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use serde_json::{Value, json};

use crate::harness::{TestApp, decode_jwt, rfc3339};

fn feed_path(app: &TestApp) -> String {
    format!("/v1/sessions/revocations/{}", app.creds.project_id)
}

async fn events(app: &TestApp, query: &str) -> Value {
    let r = app
        .get_anonymous(&format!("{}{query}", feed_path(app)), &[])
        .await;
    r.ok().clone()
}

fn session_ids(body: &Value) -> Vec<String> {
    body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["session_id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn every_way_a_session_ends_publishes_one_event() {
    let app = TestApp::new().await;
    let by_id = app.session(60).await;
    let by_token = app.session(60).await;
    let by_jwt = app.session(60).await;
    let expired = app.session(5).await;
    app.revoke(json!({"session_id": by_id["session"]["session_id"]}))
        .await
        .ok();
    app.revoke(json!({"session_token": by_token["session_token"]}))
        .await
        .ok();
    app.revoke(json!({"session_jwt": by_jwt["session_jwt"]}))
        .await
        .ok();
    // Revoked twice: still one event.
    app.revoke(json!({"session_jwt": by_jwt["session_jwt"]}))
        .await
        .error(404, "session_not_found");

    let user = app.user("many@example.com").await;
    let a = app.session_for(&user, 60).await;
    let b = app.session_for(&user, 60).await;
    app.revoke(json!({"user_id": user})).await.ok();
    let doomed = app.user("doomed@example.com").await;
    let c = app.session_for(&doomed, 60).await;
    app.delete(&format!("/v1/users/{doomed}")).await.ok();
    // An expired session has no JWT left to stop: no event.
    app.advance(600);
    app.revoke(json!({"session_token": expired["session_token"]}))
        .await
        .error(404, "session_not_found");

    let body = events(&app, "").await;
    let id = |s: &Value| s["session"]["session_id"].as_str().unwrap().to_string();
    assert_eq!(
        session_ids(&body),
        vec![
            id(&by_id),
            id(&by_token),
            id(&by_jwt),
            id(&a),
            id(&b),
            id(&c)
        ]
    );
    let reasons: Vec<&str> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "revoked",
            "revoked",
            "revoked",
            "user_sessions_revoked",
            "user_sessions_revoked",
            "user_deleted"
        ]
    );
    let first = &body["events"][0];
    assert_eq!(first["revoked_at"], rfc3339(app.now() - 600));
    assert_eq!(first["jwt_expires_by"], rfc3339(app.now() - 600 + 300));
    assert_eq!(body["next_cursor"], body["events"][5]["cursor"]);
    assert_eq!(body["has_more"], false);
    // Paging and resuming.
    let page = events(&app, "?limit=2").await;
    assert_eq!(session_ids(&page), vec![id(&by_id), id(&by_token)]);
    assert_eq!(page["has_more"], true);
    let rest = events(
        &app,
        &format!("?after={}", page["next_cursor"].as_str().unwrap()),
    )
    .await;
    assert_eq!(session_ids(&rest).len(), 4);
    // A page that ends exactly at the last event says there is no more.
    let exact = events(
        &app,
        &format!("?after={}&limit=4", page["next_cursor"].as_str().unwrap()),
    )
    .await;
    assert_eq!(session_ids(&exact).len(), 4);
    assert_eq!(exact["has_more"], false);
    assert_eq!(exact["next_cursor"], body["next_cursor"]);
    let none = events(
        &app,
        &format!("?after={}", body["next_cursor"].as_str().unwrap()),
    )
    .await;
    assert!(none["events"].as_array().unwrap().is_empty());
    assert_eq!(none["next_cursor"], body["next_cursor"]);
    // No user data in the feed.
    let text = body.to_string();
    assert!(!text.contains("many@example.com") && !text.contains(&user));
}

#[tokio::test]
async fn sessions_ended_by_the_project_policy_are_published_when_noticed() {
    let app = TestApp::new().await;
    let project: hallpass::domain::ids::ProjectId = app.creds.project_id.parse().unwrap();
    let change = hallpass::store::projects::SettingsChange {
        idle_timeout_minutes: Some(Some(30)),
        ..Default::default()
    };
    hallpass::store::projects::update_settings(&app.db, project.uuid, &change)
        .await
        .unwrap();
    app.state.directory.refresh().await.unwrap();
    let s = app.session(600).await;
    app.advance(31 * 60);
    for _ in 0..2 {
        app.authenticate(json!({"session_token": s["session_token"]}))
            .await
            .error(404, "session_not_found");
    }
    let body = events(&app, "").await;
    assert_eq!(body["events"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["events"][0]["reason"], "idle_timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_returns_as_soon_as_an_event_is_committed() {
    let app = Arc::new(TestApp::new().await);
    let s = app.session(60).await;
    let head = events(&app, "").await["next_cursor"]
        .as_str()
        .unwrap()
        .to_string();
    let waiting = {
        let app = app.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let body = events(&app, &format!("?after={head}&wait=10")).await;
            (started.elapsed(), body)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.revoke(json!({"session_token": s["session_token"]}))
        .await
        .ok();
    let (elapsed, body) = waiting.await.unwrap();
    assert_eq!(
        session_ids(&body),
        vec![s["session"]["session_id"].as_str().unwrap()]
    );
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    // With nothing to report, a long poll ends after its wait, empty.
    let started = Instant::now();
    let none = events(
        &app,
        &format!("?after={}&wait=1", body["next_cursor"].as_str().unwrap()),
    )
    .await;
    assert!(none["events"].as_array().unwrap().is_empty());
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn the_stream_sends_events_with_their_cursor_as_id_and_resumes() {
    let app = TestApp::new().await;
    let first = app.session(60).await;
    let second = app.session(60).await;
    app.revoke(json!({"session_token": first["session_token"]}))
        .await
        .ok();
    app.revoke(json!({"session_token": second["session_token"]}))
        .await
        .ok();
    let read_two = |headers: Vec<(&'static str, String)>| {
        let mut req = Request::get(format!("{}/stream", feed_path(&app)));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let res = app.router.clone();
        async move {
            let response = tower::ServiceExt::oneshot(res, req.body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.headers()["content-type"], "text/event-stream");
            let mut body = response.into_body();
            let mut text = String::new();
            while text.matches("\n\n").count() < 1 {
                let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
                    .await
                    .expect("an event arrives")
                    .unwrap()
                    .unwrap();
                if let Ok(data) = frame.into_data() {
                    text.push_str(std::str::from_utf8(&data).unwrap());
                }
            }
            text
        }
    };
    let text = read_two(vec![]).await;
    let id_line = text.lines().find(|l| l.starts_with("id:")).unwrap();
    let data: Value = serde_json::from_str(
        text.lines()
            .find_map(|l| l.strip_prefix("data:"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    assert_eq!(data["session_id"], first["session"]["session_id"]);
    assert!(text.contains("event: revocation"));
    let cursor = id_line.trim_start_matches("id:").trim().to_string();
    assert_eq!(data["cursor"], cursor.as_str());
    // Resuming after the first event starts with the second.
    let text = read_two(vec![("last-event-id", cursor)]).await;
    assert!(text.contains(second["session"]["session_id"].as_str().unwrap()));
}

#[tokio::test]
async fn a_cursor_older_than_the_kept_events_is_gone() {
    let app = TestApp::new().await;
    let s = app.session(60).await;
    app.revoke(json!({"session_token": s["session_token"]}))
        .await
        .ok();
    let body = events(&app, "").await;
    let cursor: i64 = body["next_cursor"].as_str().unwrap().parse().unwrap();
    app.advance(2 * 3600);
    app.state.purge().await;
    let gone = app
        .get_anonymous(&format!("{}?after={}", feed_path(&app), cursor - 1), &[])
        .await;
    let message = gone.error(410, "revocation_cursor_expired")["error_message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("resync"), "{message}");
    // From the start (or the newest cursor) it works.
    assert!(
        events(&app, "").await["events"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    events(&app, &format!("?after={cursor}")).await;
    // A cursor past the newest event (a restored database): resync too.
    app.get_anonymous(&format!("{}?after={}", feed_path(&app), cursor + 1000), &[])
        .await
        .error(410, "revocation_cursor_expired");
    app.get_anonymous(&format!("{}?after=x", feed_path(&app)), &[])
        .await
        .names_field("after");
    app.get_anonymous(&format!("{}?wait=31", feed_path(&app)), &[])
        .await
        .names_field("wait");
}

#[tokio::test]
async fn a_private_feed_needs_the_project_credentials() {
    let app = TestApp::new().await;
    let project: hallpass::domain::ids::ProjectId = app.creds.project_id.parse().unwrap();
    hallpass::store::projects::set_revocations_private(&app.db, project.uuid, true)
        .await
        .unwrap();
    app.state.directory.refresh().await.unwrap();
    app.get_anonymous(&feed_path(&app), &[])
        .await
        .error(401, "unauthorized_credentials");
    app.get(&feed_path(&app)).await.ok();
    let other = app.other_project(hallpass::domain::ids::Env::Test).await;
    let r = app
        .request(
            axum::http::Method::GET,
            &feed_path(&app),
            None,
            Some(&other),
            &[],
        )
        .await;
    r.error(401, "unauthorized_credentials");
    app.get_anonymous(
        "/v1/sessions/revocations/project-test-00000000-0000-4000-8000-000000000000",
        &[],
    )
    .await
    .error(404, "not_found");
}

#[tokio::test]
async fn the_ssf_poll_endpoint_serves_caep_session_revoked_sets() {
    let app = TestApp::new().await;
    let s = app.session(60).await;
    app.revoke(json!({"session_token": s["session_token"]}))
        .await
        .ok();
    let path = format!("{}/ssf/poll", feed_path(&app));
    let r = app
        .request(
            axum::http::Method::POST,
            &path,
            Some(&json!({"returnImmediately": true})),
            None,
            &[],
        )
        .await;
    let body = r.ok();
    let sets = body["sets"].as_object().unwrap();
    assert_eq!(sets.len(), 1);
    let (jti, set) = sets.iter().next().unwrap();
    let (header, claims) = decode_jwt(set.as_str().unwrap());
    assert_eq!(header["typ"], "secevent+jwt");
    assert_eq!(header["alg"], "RS256");
    assert_eq!(claims["jti"], jti.as_str());
    let event =
        &claims["events"]["https://schemas.openid.net/secevent/caep/event-type/session-revoked"];
    assert_eq!(event["subject"]["format"], "opaque");
    assert_eq!(event["subject"]["id"], s["session"]["session_id"]);
    // The signature verifies with the project's published keys.
    let jwks = app
        .get_anonymous(&format!("/v1/sessions/jwks/{}", app.creds.project_id), &[])
        .await;
    let key = jwks.body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .unwrap();
    let decoding = jsonwebtoken::DecodingKey::from_rsa_components(
        key["n"].as_str().unwrap(),
        key["e"].as_str().unwrap(),
    )
    .unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[app.creds.project_id.as_str()]);
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<Value>(set.as_str().unwrap(), &decoding, &validation).unwrap();
    // Not acknowledged, polled again a minute later: the same SET, byte for byte (issued
    // once, not signed again for every poll), and a second event signed once too.
    app.advance(60);
    let t = app.session(60).await;
    app.revoke(json!({"session_token": t["session_token"]}))
        .await
        .ok();
    let again = |ack: Value| {
        let (app, path) = (&app, &path);
        async move {
            app.request(
                axum::http::Method::POST,
                path,
                Some(&json!({"ack": ack, "returnImmediately": true})),
                None,
                &[],
            )
            .await
            .ok()["sets"]
                .as_object()
                .unwrap()
                .clone()
        }
    };
    let both = again(json!([])).await;
    assert_eq!(both.len(), 2);
    assert_eq!(&both[jti], set);
    let (second_jti, second) = both.iter().find(|(j, _)| *j != jti).unwrap();
    app.advance(60);
    let later = again(json!([])).await;
    assert_eq!(&later[jti], set);
    assert_eq!(&later[second_jti], second);
    assert_eq!(
        decode_jwt(second.as_str().unwrap()).1["iat"],
        app.now() - 60
    );
    // Acknowledged: nothing more.
    let r = app
        .request(
            axum::http::Method::POST,
            &path,
            Some(&json!({"ack": [jti, second_jti], "returnImmediately": true})),
            None,
            &[],
        )
        .await;
    assert!(r.ok()["sets"].as_object().unwrap().is_empty());
}

/// A user with `n` sessions, deleted: `n` events on the feed.
async fn deleted_user_with_sessions(app: &TestApp, n: usize) {
    let user = app.user(&format!("many-{n}@example.com")).await;
    for _ in 0..n {
        app.session_for(&user, 60).await;
    }
    app.delete(&format!("/v1/users/{user}")).await.ok();
}

async fn ssf_poll(app: &TestApp, ack: Value) -> crate::harness::Response {
    app.request(
        axum::http::Method::POST,
        &format!("{}/ssf/poll", feed_path(app)),
        Some(&json!({"ack": ack, "maxEvents": 1000, "returnImmediately": true})),
        None,
        &[],
    )
    .await
}

/// The feed is public: polling it round and round must not make the server sign without
/// end. Concurrent polls sign each SET once; one poll signs at most 100 new ones, and the
/// page says more are available.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ssf_polls_sign_each_set_once_and_at_most_a_hundred_at_a_time() {
    let app = Arc::new(TestApp::new().await);
    deleted_user_with_sessions(&app, 150).await;
    let mut polls = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let app = app.clone();
        polls.spawn(async move { ssf_poll(&app, json!([])).await });
    }
    let pages = polls.join_all().await;
    let mut first: Option<serde_json::Map<String, Value>> = None;
    for page in &pages {
        let body = page.ok();
        let sets = body["sets"].as_object().unwrap();
        // Each page is the feed's first events, in order; 100 or (after another poll
        // signed the first 100) all 150.
        assert!(sets.len() == 100 || sets.len() == 150, "{}", sets.len());
        assert_eq!(body["moreAvailable"], sets.len() == 100);
        let first = first.get_or_insert_with(|| sets.clone());
        for (jti, set) in sets {
            if let Some(seen) = first.get(jti) {
                assert_eq!(seen, set);
            }
        }
    }
    // The first poll to sign signed 100; the next signed the other 50.
    let short = pages
        .iter()
        .filter(|p| p.body["sets"].as_object().unwrap().len() == 100);
    assert_eq!(short.count(), 1);
    assert_eq!(app.metric("hallpass_ssf_sets_signed_total").await, 150);
    // Polled again: nothing is signed again.
    let again = ssf_poll(&app, json!([])).await;
    assert_eq!(again.ok()["sets"].as_object().unwrap().len(), 150);
    assert_eq!(app.metric("hallpass_ssf_sets_signed_total").await, 150);
}

/// Past the allowance of new signatures per second, a page is cut short; a poll that can
/// send nothing is told to retry.
#[tokio::test]
async fn ssf_polls_past_the_signing_allowance_get_a_short_page_then_429() {
    let app = TestApp::with_ssf_signatures_per_second(3).await;
    deleted_user_with_sessions(&app, 5).await;
    let started = Instant::now();
    let page = ssf_poll(&app, json!([])).await;
    let body = page.ok();
    let sets = body["sets"].as_object().unwrap();
    let jtis: Vec<i64> = sets.keys().map(|k| k.parse().unwrap()).collect();
    let refused = ssf_poll(&app, json!([jtis.iter().max().unwrap().to_string()])).await;
    if started.elapsed() < Duration::from_millis(300) {
        // Within a third of a second, the allowance (3 per second, 3 at once) has not
        // grown back.
        assert_eq!(sets.len(), 3);
        assert_eq!(body["moreAvailable"], true);
        refused.error(429, "too_many_requests");
        assert_eq!(refused.headers["retry-after"], "1");
    }
    assert_eq!(
        app.metric("hallpass_ssf_sets_signed_total").await,
        jtis.len() as u64
    );
}

/// A user's many sessions ended at once are written a batch of events per statement: every
/// session gets exactly one event, across batches, on revoke by user and on user delete.
#[tokio::test]
async fn ending_a_users_many_sessions_publishes_one_event_each() {
    // More sessions than the default per-user limit, all live.
    let app = TestApp::with_max_sessions_per_user(2_000).await;
    let user = app.user("busy@example.com").await;
    let mut ids = std::collections::BTreeSet::new();
    for _ in 0..1_100 {
        let s = app.session_for(&user, 60).await;
        ids.insert(s["session"]["session_id"].as_str().unwrap().to_string());
    }
    app.revoke(json!({"user_id": user})).await.ok();
    let mut seen = std::collections::BTreeSet::new();
    let mut query = "?limit=1000".to_string();
    loop {
        let page = events(&app, &query).await;
        let batch = session_ids(&page);
        for e in page["events"].as_array().unwrap() {
            assert_eq!(e["reason"], "user_sessions_revoked");
        }
        for id in &batch {
            assert!(seen.insert(id.clone()), "{id} published twice");
        }
        if batch.is_empty() {
            break;
        }
        query = format!(
            "?after={}&limit=1000",
            page["next_cursor"].as_str().unwrap()
        );
    }
    assert_eq!(seen, ids);
    let r = app.get(&format!("/v1/sessions?user_id={user}")).await;
    assert!(r.ok()["sessions"].as_array().unwrap().is_empty());

    // A deleted user's live sessions too.
    deleted_user_with_sessions(&app, 600).await;
    let page = events(&app, &query).await;
    assert_eq!(session_ids(&page).len(), 600);
    let unique: std::collections::BTreeSet<_> = session_ids(&page).into_iter().collect();
    assert_eq!(unique.len(), 600);
}
