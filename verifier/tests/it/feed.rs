//! The revocation feed: initial sync (paged), revocations applied within a second over SSE and
//! over the long-poll fallback, resume from the cursor, 410 → resync, private feeds, expiry of
//! revocations, and failing closed when the feed is lost.

use std::time::Duration;

use hallpass_verifier::{Error, FeedTransport, ManualClock, Verifier};

use crate::common::*;

const SECOND: Duration = Duration::from_secs(1);

fn verifier(fake: &Fake, clock: &ManualClock, transport: FeedTransport) -> Verifier {
    builder(fake, clock)
        .feed_transport(transport)
        .build()
        .unwrap()
}

async fn connected_over(v: &Verifier, transport: FeedTransport) {
    eventually(Duration::from_secs(5), "connected", async || {
        v.health()
            .feed
            .is_some_and(|f| f.connected && f.transport == Some(transport))
    })
    .await;
}

async fn revoked_within(v: &Verifier, jwt: &str, within: Duration) -> Duration {
    eventually(within, "revocation applied", async || {
        v.verify(jwt).await == Err(Error::Revoked)
    })
    .await
}

#[tokio::test]
async fn a_revocation_over_the_stream_is_applied_within_a_second() {
    let fake = Fake::start().await;
    let clock = clock();
    let v = verifier(&fake, &clock, FeedTransport::Auto);
    ready(&v).await;
    connected_over(&v, FeedTransport::Stream).await;
    let k = &keys()[0];
    let (one, two) = (k.mint(&session_id(1), T0), k.mint(&session_id(2), T0));
    assert!(v.verify(&one).await.is_ok());

    let cursor = fake.revoke(&session_id(1), T0 + 300);
    let took = revoked_within(&v, &one, SECOND).await;
    assert!(took < SECOND, "{took:?}");
    assert!(
        v.verify(&two).await.is_ok(),
        "other sessions are unaffected"
    );
    let h = v.health().feed.unwrap();
    assert_eq!(h.revoked_sessions, 1);
    assert_eq!(h.cursor, Some(cursor.to_string()));
    assert!(h.last_event_at.is_some() && h.synced && !h.lost);
    // The stream was opened from the cursor the initial read reached.
    let streams = fake.stream_requests();
    assert_eq!(streams[0].last_event_id.as_deref(), Some("0"));
}

#[tokio::test]
async fn without_a_stream_long_polling_applies_a_revocation_within_a_second() {
    let fake = Fake::start().await;
    fake.set_stream_enabled(false);
    let clock = clock();
    let v = verifier(&fake, &clock, FeedTransport::Auto);
    ready(&v).await;
    connected_over(&v, FeedTransport::LongPoll).await;
    let jwt = keys()[0].mint(&session_id(1), T0);
    assert!(v.verify(&jwt).await.is_ok());
    // Let the verifier settle into a long-poll, so the event must wake it.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let cursor = fake.revoke(&session_id(1), T0 + 300);
    let took = revoked_within(&v, &jwt, SECOND).await;
    assert!(took < SECOND, "{took:?}");
    assert!(
        !fake.stream_requests().is_empty(),
        "the stream was tried first"
    );
    let polls = fake.poll_requests();
    let follow = polls
        .iter()
        .filter_map(|p| p.query.as_deref())
        .find(|q| q.contains("wait=25"))
        .expect("a long-poll");
    assert!(follow.contains("after=0"), "{follow}");
    assert!(follow.contains("limit="), "{follow}");
    assert_eq!(v.health().feed.unwrap().cursor, Some(cursor.to_string()));
}

#[tokio::test]
async fn a_new_verifier_reads_every_kept_revocation_page_by_page() {
    let fake = Fake::start().await;
    fake.set_page_cap(2);
    for n in 1..=5 {
        fake.revoke(&session_id(n), T0 + 300);
    }
    let clock = clock();
    let v = verifier(&fake, &clock, FeedTransport::Auto);
    ready(&v).await;
    let k = &keys()[0];
    for n in 1..=5 {
        assert_eq!(
            v.verify(&k.mint(&session_id(n), T0)).await.err(),
            Some(Error::Revoked),
            "{n}"
        );
    }
    assert!(v.verify(&k.mint(&session_id(6), T0)).await.is_ok());
    let queries: Vec<String> = fake
        .poll_requests()
        .iter()
        .take(3)
        .map(|p| p.query.clone().unwrap_or_default())
        .collect();
    assert!(!queries[0].contains("after="), "{queries:?}");
    assert!(queries[0].contains("wait=0"), "{queries:?}");
    assert!(queries[1].contains("after=2"), "{queries:?}");
    assert!(queries[2].contains("after=4"), "{queries:?}");
    assert_eq!(v.health().feed.unwrap().revoked_sessions, 5);
}

#[tokio::test]
async fn a_broken_stream_resumes_from_its_last_event_id() {
    let fake = Fake::start().await;
    let clock = clock();
    let v = verifier(&fake, &clock, FeedTransport::Stream);
    ready(&v).await;
    connected_over(&v, FeedTransport::Stream).await;
    let k = &keys()[0];
    let one = k.mint(&session_id(1), T0);
    let first = fake.revoke(&session_id(1), T0 + 300);
    revoked_within(&v, &one, SECOND).await;

    // The stream breaks, and a session is revoked while the verifier is away.
    fake.set_down(true);
    fake.drop_streams();
    eventually(Duration::from_secs(5), "disconnected", async || {
        !v.health().feed.unwrap().connected
    })
    .await;
    let two = k.mint(&session_id(2), T0);
    fake.revoke(&session_id(2), T0 + 300);
    fake.set_down(false);
    revoked_within(&v, &two, Duration::from_secs(5)).await;
    let streams = fake.stream_requests();
    assert!(streams.len() >= 2, "{streams:?}");
    assert!(
        streams[1..]
            .iter()
            .all(|s| s.last_event_id == Some(first.to_string())),
        "every reconnection resumes from the last event: {streams:?}"
    );
    assert_eq!(
        v.health().feed.unwrap().transport,
        Some(FeedTransport::Stream)
    );
}

#[tokio::test]
async fn an_expired_cursor_reads_the_whole_feed_again() {
    let fake = Fake::start().await;
    let clock = clock();
    let v = verifier(&fake, &clock, FeedTransport::Auto);
    ready(&v).await;
    connected_over(&v, FeedTransport::Stream).await;
    let k = &keys()[0];
    let one = k.mint(&session_id(1), T0);
    fake.revoke(&session_id(1), T0 + 300);
    revoked_within(&v, &one, SECOND).await;

    // The verifier loses hallpass; meanwhile two sessions are revoked and hallpass forgets
    // everything before the second, so the verifier's cursor (1) is past its window.
    fake.set_down(true);
    fake.drop_streams();
    eventually(Duration::from_secs(5), "disconnected", async || {
        !v.health().feed.unwrap().connected
    })
    .await;
    fake.revoke(&session_id(2), T0 + 300);
    let last = fake.revoke(&session_id(3), T0 + 300);
    fake.expire_before(last);
    let polls_before = fake.poll_requests().len();
    fake.set_down(false);

    let three = k.mint(&session_id(3), T0);
    revoked_within(&v, &three, Duration::from_secs(5)).await;
    assert_eq!(
        v.verify(&one).await.err(),
        Some(Error::Revoked),
        "still unexpired: kept"
    );
    let after_outage: Vec<String> = fake.poll_requests()[polls_before..]
        .iter()
        .map(|p| p.query.clone().unwrap_or_default())
        .collect();
    let gone = after_outage
        .iter()
        .position(|q| q.contains("after=1"))
        .expect("a poll from the old cursor");
    assert!(
        after_outage[gone + 1..]
            .iter()
            .any(|q| !q.contains("after=")),
        "then a read from the start: {after_outage:?}"
    );
    assert_eq!(v.health().feed.unwrap().cursor, Some(last.to_string()));
}

#[tokio::test]
async fn a_private_feed_is_read_with_the_project_secret() {
    let fake = Fake::start().await;
    fake.set_feed_secret(Some(SECRET));
    let clock = clock();
    let v = builder(&fake, &clock)
        .project_secret(SECRET)
        .build()
        .unwrap();
    ready(&v).await;
    connected_over(&v, FeedTransport::Stream).await;
    let polls = fake.poll_requests();
    assert_eq!(
        polls[0].authorization, None,
        "credentials only once asked for"
    );
    assert!(
        polls[1]
            .authorization
            .as_deref()
            .unwrap()
            .starts_with("Basic ")
    );
    let jwt = keys()[0].mint(&session_id(1), T0);
    fake.revoke(&session_id(1), T0 + 300);
    revoked_within(&v, &jwt, SECOND).await;

    // Without a secret the feed cannot be read, and health says why.
    let without = verifier(&fake, &clock, FeedTransport::Auto);
    eventually(Duration::from_secs(5), "an error", async || {
        without.health().feed.unwrap().last_error.is_some()
    })
    .await;
    let h = without.health().feed.unwrap();
    assert!(!h.synced);
    assert!(h.last_error.unwrap().contains("private"));
}

#[tokio::test]
async fn revocations_are_dropped_once_their_jwts_have_expired() {
    let fake = Fake::start().await;
    let clock = clock();
    let v = verifier(&fake, &clock, FeedTransport::Auto);
    ready(&v).await;
    let jwt = keys()[0].mint(&session_id(1), T0);
    fake.revoke(&session_id(1), T0 + 100);
    revoked_within(&v, &jwt, SECOND).await;
    assert_eq!(v.health().feed.unwrap().revoked_sessions, 1);
    // Kept through jwt_expires_by + leeway (5 s), dropped after.
    clock.advance(Duration::from_secs(104));
    assert_eq!(v.health().feed.unwrap().revoked_sessions, 1);
    clock.advance(Duration::from_secs(1));
    assert_eq!(v.health().feed.unwrap().revoked_sessions, 0);
}

#[tokio::test]
async fn failing_closed_refuses_every_jwt_while_the_feed_is_lost() {
    let fake = Fake::start().await;
    let clock = clock();
    let closed = builder(&fake, &clock)
        .fail_closed_on_feed_loss(true)
        .feed_loss_bound(Duration::from_secs(10))
        .build()
        .unwrap();
    let open = builder(&fake, &clock)
        .feed_loss_bound(Duration::from_secs(10))
        .build()
        .unwrap();
    ready(&closed).await;
    ready(&open).await;
    connected_over(&closed, FeedTransport::Stream).await;
    let jwt = keys()[0].mint(&session_id(1), T0);
    assert!(closed.verify(&jwt).await.is_ok());

    fake.set_down(true);
    fake.drop_streams();
    for v in [&closed, &open] {
        eventually(Duration::from_secs(5), "disconnected", async || {
            !v.health().feed.unwrap().connected
        })
        .await;
    }
    clock.advance(Duration::from_secs(10));
    assert!(closed.verify(&jwt).await.is_ok(), "within the bound");
    clock.advance(Duration::from_secs(1));
    assert_eq!(closed.verify(&jwt).await.err(), Some(Error::FeedLost));
    let h = closed.health();
    assert!(!h.accepting && h.feed.unwrap().lost);
    // Failing open (the default) keeps verifying, and health reports the loss.
    assert!(open.verify(&jwt).await.is_ok());
    let h = open.health();
    assert!(h.accepting && !h.is_healthy() && h.feed.unwrap().lost);

    fake.set_down(false);
    eventually(Duration::from_secs(15), "reconnected", async || {
        closed.health().feed.unwrap().connected
    })
    .await;
    assert!(closed.verify(&jwt).await.is_ok());
}

#[tokio::test]
async fn failing_closed_refuses_until_the_first_sync() {
    let fake = Fake::start().await;
    fake.set_down(true);
    let clock = clock();
    let v = builder(&fake, &clock)
        .revocation_feed(true)
        .fail_closed_on_feed_loss(true)
        .build()
        .unwrap();
    let jwt = keys()[0].mint(&session_id(1), T0);
    assert_eq!(v.verify(&jwt).await.err(), Some(Error::FeedLost));
    fake.set_down(false);
    ready(&v).await;
    assert!(v.verify(&jwt).await.is_ok());
}

#[tokio::test]
async fn dropping_the_verifier_stops_following_the_feed() {
    let fake = Fake::start().await;
    let clock = clock();
    let v = verifier(&fake, &clock, FeedTransport::LongPoll);
    ready(&v).await;
    connected_over(&v, FeedTransport::LongPoll).await;
    let clone = v.clone();
    drop(v);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        clone.health().feed.unwrap().connected,
        "a clone keeps it going"
    );
    let polls = fake.poll_requests().len();
    fake.revoke(&session_id(1), T0 + 300);
    eventually(
        SECOND,
        "the pending long-poll answered and another one sent",
        async || fake.poll_requests().len() > polls,
    )
    .await;

    drop(clone);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let polls = fake.poll_requests().len();
    fake.revoke(&session_id(2), T0 + 300);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        fake.poll_requests().len(),
        polls,
        "no request after the last clone is gone"
    );
}
