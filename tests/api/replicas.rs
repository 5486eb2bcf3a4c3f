//! Three real `hallpass serve` processes on one Postgres database, rotating every few
//! seconds under continuous authenticate traffic, checked the way a caching verifier sees
//! them. Postgres only (replicas share a database server); skipped on SQLite.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::harness::{decode_jwt, fresh_postgres_database, postgres_url};

const INSTANCES: usize = 3;
const MAX_AGE: u64 = 2;
const ROTATION: u64 = 8;
const RUN: Duration = Duration::from_secs(62);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Instance {
    base: String,
    _child: Child,
}

async fn start(
    db_url: &str,
    master: &str,
    project: &str,
    secret: &str,
    log_dir: &std::path::Path,
    i: usize,
) -> Instance {
    let port = free_port();
    let log = std::fs::File::create(log_dir.join(format!("instance-{i}.log"))).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_hallpass"))
        .arg("serve")
        .env("HALLPASS_LISTEN", format!("127.0.0.1:{port}"))
        .env("HALLPASS_DATABASE_URL", db_url)
        .env("HALLPASS_MASTER_KEY", master)
        .env("HALLPASS_BOOTSTRAP_PROJECT_ID", project)
        .env("HALLPASS_BOOTSTRAP_SECRET", secret)
        .env(
            "HALLPASS_KEYS_ROTATION_INTERVAL_SECONDS",
            ROTATION.to_string(),
        )
        .env("HALLPASS_KEYS_JWKS_MAX_AGE_SECONDS", MAX_AGE.to_string())
        .env("HALLPASS_KEYS_RETIRED_RETENTION_SECONDS", "3600")
        .env("HALLPASS_KEYS_REFRESH_INTERVAL_SECONDS", "1")
        .env("HALLPASS_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    Instance {
        base: format!("http://127.0.0.1:{port}"),
        _child: child,
    }
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{base} not ready within 60 s");
}

/// A JWT as minted, with when and by which instance.
struct Minted {
    at: Instant,
    instance: usize,
    jwt: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_rotate_together_and_no_cached_verifier_meets_an_unknown_kid() {
    let Some(pg) = postgres_url() else {
        eprintln!("skipped: set TEST_DATABASE_URL to run the multi-process rotation test");
        return;
    };
    let db_url = fresh_postgres_database(&pg).await;
    let master = hallpass::domain::crypto::MasterKeys::generate_encoded();
    let project = format!("project-test-{}", uuid::Uuid::new_v4());
    let secret = "replica-test-secret-0123456789-0123456789";
    let log_dir = std::env::temp_dir().join(format!("hallpass-replicas-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&log_dir).unwrap();

    // Started together: bootstrap and migrations must be idempotent across replicas.
    let mut instances = Vec::new();
    for i in 0..INSTANCES {
        instances.push(start(&db_url, &master, &project, secret, &log_dir, i).await);
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for inst in &instances {
        wait_ready(&client, &inst.base).await;
    }
    let bases: Vec<String> = instances.iter().map(|i| i.base.clone()).collect();

    let post = |path: &str, body: Value| {
        let req = client
            .post(format!("{}{path}", bases[0]))
            .basic_auth(&project, Some(secret))
            .json(&body);
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let user = post("/v1/users", json!({"email": "replica@example.com"})).await;
    let session = post(
        "/v1/sessions",
        json!({"user_id": user["user_id"], "session_duration_minutes": 60,
               "authentication_factors": [{"type": "password", "delivery_method": "knowledge"}]}),
    )
    .await;
    let token = session["session_token"].as_str().unwrap().to_string();

    let started = Instant::now();
    let minted: Arc<Mutex<Vec<Minted>>> = Arc::default();
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let snapshots: Arc<Mutex<Vec<(Instant, Value)>>> = Arc::default();

    let mut tasks = Vec::new();
    // Continuous authenticate traffic, spread over the instances.
    for worker in 0..4 {
        let (client, bases, token, project) = (
            client.clone(),
            bases.clone(),
            token.clone(),
            project.clone(),
        );
        let (minted, failures) = (minted.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = worker;
            while started.elapsed() < RUN {
                let instance = n % INSTANCES;
                n += 1;
                let sent = Instant::now();
                let r = client
                    .post(format!("{}/v1/sessions/authenticate", bases[instance]))
                    .basic_auth(&project, Some(secret))
                    .json(&json!({"session_token": token}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        let body: Value = r.json().await.unwrap();
                        let jwt = body["session_jwt"].as_str().unwrap().to_string();
                        minted.lock().unwrap().push(Minted {
                            at: sent,
                            instance,
                            jwt,
                        });
                    }
                    Ok(r) => failures
                        .lock()
                        .unwrap()
                        .push(format!("instance {instance}: HTTP {}", r.status())),
                    Err(e) => failures
                        .lock()
                        .unwrap()
                        .push(format!("instance {instance}: {e}")),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    // A verifier's JWKS copies, fetched from any instance, no credentials.
    {
        let (client, bases, project, snapshots) = (
            client.clone(),
            bases.clone(),
            project.clone(),
            snapshots.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while started.elapsed() < RUN {
                let base = &bases[n % INSTANCES];
                n += 1;
                let at = Instant::now();
                if let Ok(r) = client
                    .get(format!("{base}/v1/sessions/jwks/{project}"))
                    .send()
                    .await
                    && let Ok(v) = r.json::<Value>().await
                {
                    snapshots.lock().unwrap().push((at, v));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }

    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failed requests, first: {:?}",
        failures.len(),
        failures.first()
    );
    let minted = std::mem::take(&mut *minted.lock().unwrap());
    let snapshots = std::mem::take(&mut *snapshots.lock().unwrap());
    assert!(
        minted.len() > 500,
        "continuous traffic: {} JWTs",
        minted.len()
    );

    // Every JWT verifies against the oldest JWKS copy fetched within max-age before it was
    // minted: a verifier caching for max-age never meets an unknown kid.
    let max_age = Duration::from_secs(MAX_AGE);
    let mut checked = 0;
    for m in &minted {
        let Some((_, jwks)) = snapshots.iter().find(|(at, _)| *at + max_age >= m.at) else {
            continue;
        };
        let kid = decode_jwt(&m.jwt).0["kid"].as_str().unwrap().to_string();
        let jwk = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid.as_str());
        let jwk = jwk.unwrap_or_else(|| {
            panic!(
                "kid {kid} (instance {}) missing from a JWKS fetched up to {MAX_AGE} s earlier",
                m.instance
            )
        });
        let key = DecodingKey::from_rsa_components(
            jwk["n"].as_str().unwrap(),
            jwk["e"].as_str().unwrap(),
        )
        .unwrap();
        let mut v = Validation::new(Algorithm::RS256);
        v.set_audience(&[&project]);
        v.set_issuer(&[format!("stytch.com/{project}")]);
        jsonwebtoken::decode::<Value>(&m.jwt, &key, &v).unwrap();
        checked += 1;
    }
    assert!(
        checked as f64 > minted.len() as f64 * 0.95,
        "checked {checked} of {}",
        minted.len()
    );

    // Signing keys in order of first use, and how long instances disagreed at each change.
    let mut first_use: BTreeMap<Instant, String> = BTreeMap::new();
    let mut seen = HashSet::new();
    let mut last_use: HashMap<String, Instant> = HashMap::new();
    for m in &minted {
        let kid = decode_jwt(&m.jwt).0["kid"].as_str().unwrap().to_string();
        if seen.insert(kid.clone()) {
            first_use.insert(m.at, kid.clone());
        }
        let e = last_use.entry(kid).or_insert(m.at);
        *e = (*e).max(m.at);
    }
    let order: Vec<&String> = first_use.values().collect();
    assert!(
        order.len() >= 4,
        "at least three rotations in {RUN:?}: {} signing keys",
        order.len()
    );
    for pair in order.windows(2) {
        let (old, new) = (pair[0], pair[1]);
        let new_from = *first_use.iter().find(|(_, k)| *k == new).unwrap().0;
        let overlap = last_use[old].saturating_duration_since(new_from);
        assert!(
            overlap <= Duration::from_secs(5),
            "{old} still signed {overlap:?} after {new} began"
        );
    }

    // Stop the replicas so the ring cannot move while it is counted.
    drop(instances);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Exactly one new key per rotation step: every key ever created is in the table (retired
    // keys are kept an hour here): one current, at most one waiting, the rest retired.
    let db = hallpass::store::Db::connect_postgres(&db_url, 2, std::time::Duration::from_secs(5))
        .await
        .unwrap();
    let rows: Vec<(String,)> = hallpass::with_db!(&db, p => sqlx::query_as("SELECT state FROM signing_keys").fetch_all(p).await.unwrap());
    let count = |s: &str| rows.iter().filter(|(x,)| x == s).count();
    assert_eq!(count("current"), 1);
    // A replica stopped between a promotion and publishing the next waiting key leaves none
    // (the next start publishes it); never two.
    let waiting = count("next");
    assert!(waiting <= 1, "{rows:?}");
    let retired = count("retired");
    assert_eq!(rows.len(), retired + 1 + waiting, "{rows:?}");
    // Every key that has signed is current or retired; keys created = rotations + 2.
    assert!(
        retired + 1 >= order.len(),
        "{retired} retired, {} signed",
        order.len()
    );
    assert!(
        retired <= order.len(),
        "no key was created without being used: {retired} retired, {} signed",
        order.len()
    );
    let _ = std::fs::remove_dir_all(&log_dir);
}
