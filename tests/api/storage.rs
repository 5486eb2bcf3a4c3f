use hallpass::domain::crypto::sha256;
use hallpass::store::Db;
use hallpass::with_db;
use serde_json::json;

use crate::harness::TestApp;

/// Reads the database directly: tokens, secrets and private keys are stored only as hashes or
/// sealed, never as themselves.
#[tokio::test]
async fn no_raw_token_secret_or_private_key_is_stored() {
    let app = TestApp::new().await;
    let s = app.session(60).await;
    let token = s["session_token"].as_str().unwrap().to_string();
    let user = s["user"]["user_id"].as_str().unwrap();
    let link = app
        .post("/v1/magic_links", json!({"user_id": user}))
        .await
        .ok()["token"]
        .as_str()
        .unwrap()
        .to_string();

    let token_hashes: Vec<(Vec<u8>,)> = with_db!(&app.db, p => sqlx::query_as("SELECT token_hash FROM sessions").fetch_all(p).await.unwrap());
    assert_eq!(token_hashes, vec![(sha256(token.as_bytes()).to_vec(),)]);
    let link_hashes: Vec<(Vec<u8>,)> = with_db!(&app.db, p => sqlx::query_as("SELECT token_hash FROM magic_links").fetch_all(p).await.unwrap());
    assert_eq!(link_hashes, vec![(sha256(link.as_bytes()).to_vec(),)]);

    let secrets: Vec<(String,)> = with_db!(&app.db, p => sqlx::query_as("SELECT secret_hash FROM project_secrets").fetch_all(p).await.unwrap());
    assert!(!secrets.is_empty());
    for (hash,) in &secrets {
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(!hash.contains(&app.creds.secret));
    }

    let keys: Vec<(uuid::Uuid, Vec<u8>, String)> = with_db!(&app.db, p => sqlx::query_as("SELECT id, private_key, master_key_id FROM signing_keys").fetch_all(p).await.unwrap());
    assert_eq!(keys.len(), 2);
    for (id, sealed, master_id) in &keys {
        let plain = app.master.open(sealed, master_id, id.as_bytes()).unwrap();
        assert!(plain.len() > 1000, "a PKCS#8 RSA-2048 key");
        assert!(
            !sealed
                .windows(16)
                .any(|w| plain.windows(16).any(|x| x == w)),
            "no run of the key in the clear"
        );
    }

    // On SQLite, the files themselves hold neither the token nor the secret.
    if let Db::Sqlite(pool) = &app.db {
        sqlx::query("PRAGMA wal_checkpoint(FULL)")
            .execute(pool)
            .await
            .unwrap();
        let dir = app.db_dir().unwrap();
        for entry in std::fs::read_dir(dir).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            for needle in [
                token.as_bytes(),
                link.as_bytes(),
                app.creds.secret.as_bytes(),
            ] {
                assert!(!bytes.windows(needle.len()).any(|w| w == needle));
            }
        }
    }
}

/// The one-statement extension (`store::sessions::extend`) checks the session policy in SQL;
/// here it must agree with the domain's `is_active` and `expiry`, case by case, on both
/// backends: each case is a fresh row with instants on either side of every bound.
#[tokio::test]
async fn the_database_applies_the_session_policy_as_the_domain_does() {
    use hallpass::domain::ids::{Kind, ProjectId};
    use hallpass::domain::session::{SessionDuration, SessionPolicy, SessionTimes};
    use hallpass::store::sessions::{self, SessionKey, SessionRow};

    let app = TestApp::new().await;
    let project: ProjectId = app.creds.project_id.parse().unwrap();
    let s = app.session(60).await;
    let user = project
        .parse(Kind::User, s["user"]["user_id"].as_str().unwrap())
        .unwrap();
    let now = 2_000_000_000;
    let duration = SessionDuration::parse(90).unwrap();
    let limits = [None, Some(10)];
    let mut checked = 0;
    for idle in limits {
        for lifetime in limits.map(|m| m.map(|m| m * 6)) {
            let policy = SessionPolicy {
                idle_timeout_minutes: idle,
                absolute_lifetime_minutes: lifetime,
            };
            for started in [now - 3601, now - 3600, now - 3599, now - 60] {
                for last in [now - 601, now - 600, now - 599, now] {
                    for expires in [now - 1, now, now + 1, now + 7200] {
                        for revoked in [false, true] {
                            let times = SessionTimes {
                                started_at: started,
                                last_accessed_at: last.max(started),
                                expires_at: expires,
                                revoked,
                            };
                            let id = uuid::Uuid::new_v4();
                            let hash = sha256(id.as_bytes());
                            let row = SessionRow {
                                session_id: id,
                                started_at: times.started_at,
                                last_accessed_at: times.last_accessed_at,
                                expires_at: times.expires_at,
                                revoked_at: None,
                                ip_address: String::new(),
                                user_agent: String::new(),
                                authentication_factors: "[]".into(),
                                roles: "[]".into(),
                                custom_claims: "{}".into(),
                            };
                            sessions::insert(&app.db, project.uuid, user, &hash, &row, u32::MAX)
                                .await
                                .unwrap();
                            if revoked {
                                // Revoked long ago (before any expiry of the cases).
                                hallpass::store::revocations::end_session(
                                    &app.db,
                                    project.uuid,
                                    id,
                                    i64::MIN / 2,
                                    hallpass::store::revocations::Reason::Revoked,
                                )
                                .await
                                .unwrap()
                                .unwrap();
                            }
                            let key = if checked % 2 == 0 {
                                SessionKey::TokenHash(hash)
                            } else {
                                SessionKey::Id(id)
                            };
                            let got = sessions::extend(
                                &app.db,
                                project.uuid,
                                &key,
                                &policy.bounds(now),
                                &policy.extension(now, duration),
                            )
                            .await
                            .unwrap();
                            let case = format!("{policy:?} {times:?}");
                            assert_eq!(got.is_some(), policy.is_active(&times, now), "{case}");
                            let stored = sessions::get(&app.db, project.uuid, &SessionKey::Id(id))
                                .await
                                .unwrap()
                                .unwrap()
                                .session;
                            if let Some(got) = got {
                                assert_eq!(got.user.user_id, user, "{case}");
                                assert_eq!(got.session.session_id, id, "{case}");
                                let expiry = policy.expiry(times.started_at, now, duration);
                                assert_eq!(got.session.expires_at, expiry, "{case}");
                                assert_eq!(got.session.last_accessed_at, now, "{case}");
                                assert_eq!(stored.expires_at, expiry, "durable: {case}");
                            } else {
                                assert_eq!(stored.expires_at, times.expires_at, "{case}");
                                assert_eq!(stored.last_accessed_at, times.last_accessed_at);
                            }
                            checked += 1;
                        }
                    }
                }
            }
        }
    }
    assert_eq!(checked, 4 * 4 * 4 * 4 * 2);
}

/// Postgres closing every connection (a restart, a failover) costs no request: authenticate's
/// own connections retry once on a new one, the pool tests its connections before use.
#[tokio::test]
async fn requests_survive_the_database_closing_its_connections() {
    let app = TestApp::new().await;
    let Db::Postgres(pg) = &app.db else {
        return; // SQLite's connections are in-process.
    };
    let s = app.session(60).await;
    let token = s["session_token"].as_str().unwrap();
    let user = s["user"]["user_id"].as_str().unwrap();
    app.authenticate(json!({"session_token": token})).await.ok();
    for round in 0..2 {
        let closed: Vec<(bool,)> = sqlx::query_as(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_all(&pg.pool)
        .await
        .unwrap();
        assert!(!closed.is_empty(), "round {round}: connections to close");
        app.authenticate(json!({"session_token": token})).await.ok();
        app.authenticate(json!({"session_jwt": s["session_jwt"], "session_duration_minutes": 30}))
            .await
            .ok();
        app.session_for(user, 60).await;
        app.get(&format!("/v1/sessions?user_id={user}")).await.ok();
    }
}

/// A touch stays pending (seen by readers) while its write-behind is in flight, and is
/// dropped once written; a newer touch recorded meanwhile stays for the next flush. The
/// flush is held in flight by a transaction that has the session's row locked. Postgres
/// only: there the waiting flush can be seen (`pg_stat_activity`); the logic under test is
/// the same for both backends.
#[tokio::test]
async fn touches_stay_visible_until_written() {
    use hallpass::domain::ids::{Kind, ProjectId};
    use hallpass::store::sessions::{self, SessionKey};

    let app = TestApp::new().await;
    let Db::Postgres(pg) = &app.db else {
        return;
    };
    let project: ProjectId = app.creds.project_id.parse().unwrap();
    let s = app.session(60).await;
    let id = project
        .parse(Kind::Session, s["session"]["session_id"].as_str().unwrap())
        .unwrap();
    let touches = &app.state.touches;
    touches.record(id, app.now() + 5);

    let mut blocker = pg.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE")
        .bind(id)
        .execute(&mut *blocker)
        .await
        .unwrap();
    let state = app.state.clone();
    let flush = tokio::spawn(async move { state.touches.flush(&state.db).await });
    // Wait (bounded) until the flush's UPDATE is queued behind the lock.
    let mut waiting = 0i64;
    for _ in 0..1000 {
        tokio::task::yield_now().await;
        (waiting,) = sqlx::query_as(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&pg.pool)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
    }
    assert_eq!(waiting, 1, "the flush is waiting for the row");
    assert_eq!(
        touches.pending(id),
        Some(app.now() + 5),
        "pending while in flight"
    );
    touches.record(id, app.now() + 9);
    blocker.commit().await.unwrap();
    flush.await.unwrap();
    assert_eq!(
        touches.pending(id),
        Some(app.now() + 9),
        "the newer touch waits"
    );
    app.state.touches.flush(&app.db).await;
    assert_eq!(touches.pending(id), None);
    let stored = sessions::get(&app.db, project.uuid, &SessionKey::Id(id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.session.last_accessed_at, app.now() + 9);
}
