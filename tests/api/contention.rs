//! Concurrent changes to one row, run many times on both backends: nothing a 200 acknowledged
//! may be lost, and no change may be undone by a request that read the row before it.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::harness::{TestApp, decode_jwt};

/// Runs `n` copies of `request(i)` at once and returns their responses in index order.
async fn at_once<F, Fut>(app: &Arc<TestApp>, n: usize, request: F) -> Vec<crate::harness::Response>
where
    F: Fn(Arc<TestApp>, usize) -> Fut,
    Fut: Future<Output = crate::harness::Response> + Send + 'static,
{
    let mut set = JoinSet::new();
    for i in 0..n {
        let fut = request(app.clone(), i);
        set.spawn(async move { (i, fut.await) });
    }
    let mut out: Vec<_> = set.join_all().await;
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

fn token(session: &Value) -> String {
    session["session_token"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claim_merges_are_all_kept() {
    let app = Arc::new(TestApp::new().await);
    for _trial in 0..3 {
        let t = token(&app.session(600).await);
        let responses = at_once(&app, 50, |app, i| {
            let t = t.clone();
            async move {
                app.authenticate(
                    json!({"session_token": t, "session_custom_claims": {format!("k{i}"): i}}),
                )
                .await
            }
        })
        .await;
        for r in &responses {
            r.ok();
        }
        let after = app.authenticate(json!({"session_token": t})).await;
        let claims = &after.ok()["session"]["custom_claims"];
        let (_, jwt_claims) = decode_jwt(after.body["session_jwt"].as_str().unwrap());
        for i in 0..50 {
            assert_eq!(claims[format!("k{i}")], i, "k{i} lost: {claims}");
            assert_eq!(jwt_claims[format!("k{i}")], i, "k{i} missing from the JWT");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shortened_expiry_is_never_undone_by_a_racing_claim_update() {
    let app = Arc::new(TestApp::new().await);
    for trial in 0..25 {
        let t = token(&app.session(600).await);
        let responses = at_once(&app, 2, |app, i| {
            let t = t.clone();
            async move {
                if i == 0 {
                    app.authenticate(json!({"session_token": t, "session_duration_minutes": 5}))
                        .await
                } else {
                    app.authenticate(
                        json!({"session_token": t, "session_custom_claims": {"x": trial}}),
                    )
                    .await
                }
            }
        })
        .await;
        responses.iter().for_each(|r| {
            r.ok();
        });
        let after = app.authenticate(json!({"session_token": t})).await;
        let session = &after.ok()["session"];
        assert_eq!(
            session["expires_at"],
            crate::harness::rfc3339(app.now() + 300),
            "trial {trial}: the shortening was undone"
        );
        assert_eq!(session["custom_claims"]["x"], trial);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_claims_limit_holds_under_concurrency() {
    let app = Arc::new(TestApp::new().await);
    let t = token(&app.session(600).await);
    // Each merge adds about 400 bytes; only about ten fit in 4096.
    let responses = at_once(&app, 30, |app, i| {
        let t = t.clone();
        async move {
            app.authenticate(
                json!({"session_token": t, "session_custom_claims": {format!("k{i:02}"): "v".repeat(390)}}),
            )
            .await
        }
    })
    .await;
    let accepted: Vec<usize> = (0..30).filter(|i| responses[*i].status == 200).collect();
    for (i, r) in responses.iter().enumerate() {
        if !accepted.contains(&i) {
            r.error(400, "custom_claims_too_large");
        }
    }
    let after = app.authenticate(json!({"session_token": t})).await;
    let claims = after.ok()["session"]["custom_claims"]
        .as_object()
        .unwrap()
        .clone();
    assert!(serde_json::to_vec(&claims).unwrap().len() <= 4096);
    let mut stored: Vec<usize> = claims.keys().map(|k| k[1..].parse().unwrap()).collect();
    stored.sort();
    assert_eq!(
        stored, accepted,
        "exactly the acknowledged merges are stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_user_updates_keep_every_field() {
    let app = Arc::new(TestApp::new().await);
    for trial in 0..10 {
        let user = app.user(&format!("u{trial}@example.com")).await;
        let responses = at_once(&app, 3, |app, i| {
            let path = format!("/v1/users/{user}");
            let body = match i {
                0 => json!({"name": {"first_name": "Ada"}}),
                1 => json!({"name": {"last_name": "Lovelace"}}),
                _ => json!({"trusted_metadata": {"tier": trial}}),
            };
            async move { app.put(&path, body).await }
        })
        .await;
        responses.iter().for_each(|r| {
            r.ok();
        });
        let got = app.get(&format!("/v1/users/{user}")).await;
        let got = got.ok();
        assert_eq!(got["name"]["first_name"], "Ada");
        assert_eq!(got["name"]["last_name"], "Lovelace");
        assert_eq!(got["trusted_metadata"]["tier"], trial);
    }
}

/// Many reads at once (on Postgres they share statements): every request gets exactly its
/// own session and user, a token of another project is not found through this one, and a
/// revoked or unknown token stays not found in the company of found ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reads_each_get_their_own_session() {
    use hallpass::domain::ids::Env;

    let app = Arc::new(TestApp::new().await);
    let mut sessions = Vec::new();
    for _ in 0..12 {
        sessions.push(app.session(600).await);
    }
    let revoked = app.session(600).await;
    app.revoke(json!({"session_token": token(&revoked)}))
        .await
        .ok();
    let other = app.other_project(Env::Test).await;
    let other_user = app
        .post_as(&other, "/v1/users", json!({"email": "o@example.com"}))
        .await
        .ok()["user_id"]
        .clone();
    let foreign = app
        .post_as(
            &other,
            "/v1/sessions",
            json!({
                "user_id": other_user,
                "session_duration_minutes": 60,
                "authentication_factors": [{"type": "password", "delivery_method": "knowledge"}],
            }),
        )
        .await
        .ok()
        .clone();
    let sessions = Arc::new(sessions);
    let (reads_before, statements_before) = (
        app.metric("hallpass_session_reads_total").await,
        app.metric("hallpass_session_read_statements_total").await,
    );
    let n = 240;
    for _trial in 0..3 {
        let (all, revoked, foreign) = (sessions.clone(), token(&revoked), token(&foreign));
        let responses = at_once(&app, n, move |app, i| {
            let body = match i % 16 {
                12 => json!({"session_token": revoked}),
                13 => json!({"session_token": foreign}),
                14 => json!({"session_token": format!("no-such-token-{i}")}),
                k if i % 2 == 0 => json!({"session_token": token(&all[k % 12])}),
                k => json!({"session_jwt": all[k % 12]["session_jwt"]}),
            };
            async move { app.authenticate(body).await }
        })
        .await;
        for (i, r) in responses.iter().enumerate() {
            match i % 16 {
                12..=14 => {
                    r.error(404, "session_not_found");
                }
                k => {
                    let want = &sessions[k % 12];
                    let got = r.ok();
                    assert_eq!(
                        got["session"]["session_id"], want["session"]["session_id"],
                        "request {i}"
                    );
                    assert_eq!(
                        got["user"]["user_id"], want["user"]["user_id"],
                        "request {i}"
                    );
                    assert_eq!(
                        got["session"]["user_id"], want["user"]["user_id"],
                        "request {i}"
                    );
                }
            }
        }
    }
    if crate::harness::postgres_url().is_some() {
        let reads = app.metric("hallpass_session_reads_total").await - reads_before;
        let statements =
            app.metric("hallpass_session_read_statements_total").await - statements_before;
        // Every token read is counted (a JWT that fails to verify is refused before reading).
        assert!(reads >= 3 * n as u64 - 3 * 16, "reads: {reads}");
        assert!(
            statements < reads,
            "{n} reads at a time were not coalesced: {statements} statements for {reads} reads"
        );
    }
}

/// A magic link that adds claims to a session races an authenticate that fills it: a link
/// refused with `custom_claims_too_large`, wherever the race was decided, is not spent: it
/// then signs in (without claims).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_magic_link_refused_at_the_claim_merge_stays_usable() {
    let app = Arc::new(TestApp::new().await);
    let user = app.user("ml-race@example.com").await;
    for trial in 0..40 {
        let s = app.session_for(&user, 60).await;
        let link = app.magic_link(&user).await;
        let responses = at_once(&app, 2, |app, i| {
            let (t, link) = (token(&s), link.clone());
            async move {
                match i {
                    0 => {
                        app.post("/v1/magic_links/authenticate",
                            json!({"token": link, "session_token": t,
                                   "session_custom_claims": {"from_link": "x".repeat(2500)}}))
                            .await
                    }
                    _ => {
                        app.authenticate(json!({"session_token": t,
                                                "session_custom_claims": {"filler": "y".repeat(2500)}}))
                            .await
                    }
                }
            }
        })
        .await;
        if responses[0].status == 200 {
            responses[1].error(400, "custom_claims_too_large");
            continue;
        }
        responses[0].error(400, "custom_claims_too_large");
        responses[1].ok();
        let retry = app
            .post("/v1/magic_links/authenticate", json!({"token": link}))
            .await;
        assert_eq!(retry.status, 200, "trial {trial}: {}", retry.body);
    }
}

/// A user deleted while a session is being created for it: either the session was created
/// first, and the deletion publishes its `user_deleted` event (relying services learn of it),
/// or the create comes second and is `404 user_not_found`: never a session silently removed
/// without an event, never a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_created_while_its_user_is_deleted_is_announced_or_refused() {
    let app = Arc::new(TestApp::new().await);
    let feed = format!("/v1/sessions/revocations/{}", app.creds.project_id);
    for trial in 0..30 {
        let user = app.user(&format!("gone{trial}@example.com")).await;
        let responses = at_once(&app, 3, |app, i| {
            let user = user.clone();
            async move {
                match i {
                    0 => app.delete(&format!("/v1/users/{user}")).await,
                    1 => app.post("/v1/magic_links", json!({"user_id": user})).await,
                    _ => app.start_session(&user, 60).await,
                }
            }
        })
        .await;
        responses[0].ok();
        for r in &responses[1..] {
            if r.status != 200 {
                r.error(404, "user_not_found");
            }
        }
        if responses[2].status == 200 {
            let id = &responses[2].body["session"]["session_id"];
            let events = app.get(&feed).await;
            let announced = events.ok()["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| &e["session_id"] == id && e["reason"] == "user_deleted");
            assert!(
                announced,
                "trial {trial}: session {id} was created and deleted without an event"
            );
        }
    }
}

/// A replica starting with a bootstrap userinfo URL while an operator changes the idle
/// timeout: each writes only its own field, so neither undoes the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bootstrap_and_a_settings_change_at_once_both_stick() {
    use hallpass::store::projects::{SettingsChange, update_settings};
    let app = Arc::new(TestApp::new().await);
    let id = hallpass::admin::get_project(&app.db, &app.creds.project_id)
        .await
        .unwrap()
        .id;
    for trial in 1..=30i64 {
        let reset = SettingsChange {
            userinfo_url: Some(None),
            idle_timeout_minutes: Some(None),
            ..Default::default()
        };
        update_settings(&app.db, id, &reset).await.unwrap();
        let url = format!("https://idp.example.com/userinfo/{trial}");
        let mut set = JoinSet::new();
        let a = app.clone();
        let u = url.clone();
        set.spawn(async move {
            hallpass::admin::bootstrap(
                &a.db,
                &a.master,
                &a.schedule,
                &a.creds.project_id,
                &a.creds.secret,
                Some(&u),
                a.now(),
            )
            .await
            .unwrap();
        });
        let b = app.clone();
        set.spawn(async move {
            let change = SettingsChange {
                idle_timeout_minutes: Some(Some(trial)),
                ..Default::default()
            };
            update_settings(&b.db, id, &change).await.unwrap();
        });
        set.join_all().await;
        let row = hallpass::store::projects::get(&app.db, id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            row.userinfo_url.as_deref(),
            Some(url.as_str()),
            "trial {trial}"
        );
        assert_eq!(row.idle_timeout_minutes, Some(trial), "trial {trial}");
    }
}

/// Starts racing past the per-user limit: every session a start answered is either live or
/// ended with exactly one `session_limit` event (none is lost without one, none ended
/// twice), the overshoot is at most the starts in flight, and the next start trims the
/// user back to the limit exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_session_limit_holds_under_concurrent_starts() {
    const LIMIT: usize = 4;
    const STARTS: usize = 10;
    let app = Arc::new(TestApp::with_max_sessions_per_user(LIMIT as u32).await);
    for trial in 0..6 {
        let user = app.user(&format!("racer{trial}@example.com")).await;
        let responses = at_once(&app, STARTS, {
            let user = user.clone();
            move |app, _| {
                let user = user.clone();
                async move { app.start_session(&user, 60).await }
            }
        })
        .await;
        let started: Vec<String> = responses
            .iter()
            .map(|r| {
                r.ok()["session"]["session_id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        let listed = app.live_session_ids(&user).await;
        assert!(
            (LIMIT..LIMIT + STARTS).contains(&listed.len()),
            "trial {trial}: {} live",
            listed.len()
        );
        let feed = app
            .get_anonymous(
                &format!("/v1/sessions/revocations/{}", app.creds.project_id),
                &[],
            )
            .await;
        let ended: Vec<String> = feed.ok()["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| started.contains(&e["session_id"].as_str().unwrap().to_string()))
            .map(|e| {
                assert_eq!(e["reason"], "session_limit");
                e["session_id"].as_str().unwrap().to_string()
            })
            .collect();
        for id in &started {
            let (is_live, events) = (
                listed.contains(id),
                ended.iter().filter(|e| *e == id).count(),
            );
            assert!(
                (is_live && events == 0) || (!is_live && events == 1),
                "trial {trial}: {id} live {is_live}, {events} events"
            );
        }
        // One more start, alone: exactly the limit again.
        let last = app.session_for(&user, 60).await;
        let listed = app.live_session_ids(&user).await;
        assert_eq!(listed.len(), LIMIT, "trial {trial}");
        assert!(listed.contains(&last["session"]["session_id"].as_str().unwrap().to_string()));
    }
}
