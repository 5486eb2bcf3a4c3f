//! The key cache: `max-age` honoured, revalidation with `If-None-Match` (304 keeps the keys),
//! one refetch per cooldown for unknown kids, the last good keys when hallpass is down, and
//! health saying so.

use std::time::Duration;

use hallpass_verifier::{Error, ManualClock, Verifier};

use crate::common::*;

fn verifier(fake: &Fake, clock: &ManualClock) -> Verifier {
    builder(fake, clock)
        .revocation_feed(false)
        .unknown_kid_cooldown(Duration::from_secs(30))
        .build()
        .unwrap()
}

#[tokio::test]
async fn max_age_is_honoured_and_revalidation_sends_if_none_match() {
    let fake = Fake::start().await;
    fake.set_max_age(60);
    let clock = clock();
    let v = verifier(&fake, &clock);
    let k = &keys()[0];
    assert!(v.verify(&k.mint(&session_id(1), T0)).await.is_ok());
    assert!(v.verify(&k.mint(&session_id(1), T0)).await.is_ok());
    clock.advance(Duration::from_secs(59));
    assert!(v.verify(&k.mint(&session_id(1), T0 + 59)).await.is_ok());
    let requests = fake.jwks_requests();
    assert_eq!(requests.len(), 1, "fresh for 60 s: {requests:?}");
    assert_eq!(requests[0].if_none_match, None);
    assert_eq!(v.health().keys.max_age, Duration::from_secs(60));

    clock.advance(Duration::from_secs(1));
    assert!(v.verify(&k.mint(&session_id(1), T0 + 60)).await.is_ok());
    let requests = fake.jwks_requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[1].if_none_match.as_deref(),
        Some("\"v1\""),
        "revalidated"
    );
    let h = v.health().keys;
    assert_eq!(h.age, Some(Duration::ZERO), "a 304 renews the keys");
    assert_eq!(h.key_count, 1);
    assert!(!h.stale && h.last_error.is_none());

    // A new document (new ETag) replaces the keys at the next expiry.
    fake.set_keys(vec![keys()[1].jwk()]);
    clock.advance(Duration::from_secs(60));
    let now = unix(&clock);
    assert!(v.verify(&keys()[1].mint(&session_id(1), now)).await.is_ok());
    assert_eq!(fake.jwks_requests().len(), 3);
    assert_eq!(
        v.verify(&k.mint(&session_id(1), now)).await.err(),
        Some(Error::UnknownKey(k.kid.clone())),
        "a key hallpass stopped publishing is refused"
    );
}

#[tokio::test]
async fn an_unknown_kid_refetches_once_per_cooldown() {
    let fake = Fake::start().await;
    let clock = clock();
    let v = verifier(&fake, &clock);
    let [a, b] = keys();
    assert!(v.verify(&a.mint(&session_id(1), T0)).await.is_ok());
    assert_eq!(fake.jwks_requests().len(), 1);

    let unknown = Error::UnknownKey(b.kid.clone());
    assert_eq!(
        v.verify(&b.mint(&session_id(1), T0)).await.err(),
        Some(unknown.clone())
    );
    let requests = fake.jwks_requests();
    assert_eq!(requests.len(), 2, "one refetch");
    assert_eq!(requests[1].if_none_match.as_deref(), Some("\"v1\""));

    // hallpass publishes the new key, but the cooldown holds: no refetch yet.
    fake.set_keys(vec![a.jwk(), b.jwk()]);
    for _ in 0..5 {
        assert_eq!(
            v.verify(&b.mint(&session_id(1), T0)).await.err(),
            Some(unknown.clone())
        );
    }
    clock.advance(Duration::from_secs(29));
    assert_eq!(
        v.verify(&b.mint(&session_id(1), T0)).await.err(),
        Some(unknown.clone())
    );
    assert_eq!(fake.jwks_requests().len(), 2, "cooldown respected");

    clock.advance(Duration::from_secs(1));
    assert!(v.verify(&b.mint(&session_id(1), T0 + 30)).await.is_ok());
    assert_eq!(fake.jwks_requests().len(), 3);
    assert!(v.verify(&a.mint(&session_id(1), T0 + 30)).await.is_ok());
    assert_eq!(fake.jwks_requests().len(), 3);
}

#[tokio::test]
async fn concurrent_verifications_share_one_fetch() {
    let fake = Fake::start().await;
    let clock = clock();
    let v = verifier(&fake, &clock);
    let jwt = keys()[0].mint(&session_id(1), T0);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (v, jwt) = (v.clone(), jwt.clone());
        tasks.push(tokio::spawn(async move { v.verify(&jwt).await }));
    }
    for t in tasks {
        assert!(t.await.unwrap().is_ok());
    }
    assert_eq!(fake.jwks_requests().len(), 1);
}

#[tokio::test]
async fn when_hallpass_is_down_the_cached_keys_keep_working_and_health_says_so() {
    let fake = Fake::start().await;
    fake.set_max_age(60);
    let clock = clock();
    let v = verifier(&fake, &clock);
    let k = &keys()[0];
    assert!(v.verify(&k.mint(&session_id(1), T0)).await.is_ok());

    fake.set_down(true);
    clock.advance(Duration::from_secs(120));
    let now = unix(&clock);
    assert!(
        v.verify(&k.mint(&session_id(1), now)).await.is_ok(),
        "stale keys still verify"
    );
    assert_eq!(fake.jwks_requests().len(), 2, "one failed revalidation");
    let h = v.health();
    assert!(h.accepting, "verification goes on");
    assert!(!h.is_healthy());
    assert!(h.keys.stale);
    assert_eq!(h.keys.age, Some(Duration::from_secs(120)));
    let error = h.keys.last_error.unwrap();
    assert!(
        error.contains("503") && error.contains("service_unavailable"),
        "{error}"
    );
    assert_eq!(
        h.keys
            .last_error_at
            .map(|t| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()),
        Some(now)
    );

    // No retry within the cooldown, however many verifications.
    for _ in 0..10 {
        assert!(v.verify(&k.mint(&session_id(1), now)).await.is_ok());
    }
    assert_eq!(fake.jwks_requests().len(), 2);

    // Back up: the next attempt after the cooldown revalidates and health recovers.
    fake.set_down(false);
    clock.advance(Duration::from_secs(30));
    let now = unix(&clock);
    assert!(v.verify(&k.mint(&session_id(1), now)).await.is_ok());
    assert_eq!(fake.jwks_requests().len(), 3);
    let h = v.health();
    assert!(h.is_healthy() && !h.keys.stale && h.keys.last_error.is_none());
}

#[tokio::test]
async fn with_no_keys_ever_fetched_nothing_verifies() {
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let clock = clock();
    let v = Verifier::builder(url, PROJECT)
        .revocation_feed(false)
        .clock(clock.clone())
        .http_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let jwt = keys()[0].mint(&session_id(1), T0);
    assert!(matches!(
        v.verify(&jwt).await,
        Err(Error::KeysUnavailable(_))
    ));
    assert!(matches!(v.ready().await, Err(Error::KeysUnavailable(_))));
    let h = v.health();
    assert!(!h.accepting && !h.keys.loaded);
    assert!(h.keys.last_error.is_some());
}
