//! The revocation feed: the set of revoked sessions whose JWTs may still be unexpired, and the
//! background task that follows hallpass's feed to keep it current.
//!
//! The task first reads the whole feed (`GET /v1/sessions/revocations/{project}` without
//! `after`, page by page), then follows it from the cursor it reached: over Server-Sent Events
//! (`…/stream` with `Last-Event-ID`), or, while the stream fails, by long-polling
//! (`?after=&wait=`). Errors reconnect with exponential backoff; a `410` (cursor older than
//! what hallpass keeps) reads the whole feed again. A `401` makes it send the project's
//! credentials, when it has them. Each revoked session is kept until its `jwt_expires_by`
//! plus the leeway, when no JWT of it can verify any more, and dropped after.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::clock::{Clock, elapsed};
use crate::health::{FeedHealth, FeedTransport};
use crate::http::{describe, describe_failure, read_body};
use crate::session::rfc3339;
use crate::sse;

/// How long a revocation whose `jwt_expires_by` is missing or unreadable is kept: longer than
/// any JWT hallpass mints lives.
const FALLBACK_RETENTION: Duration = Duration::from_secs(86_400);
/// Events asked for per page.
const PAGE_LIMIT: u32 = 1000;
/// How long the verifier long-polls before trying the stream again, after the stream failed.
const STREAM_RETRY: Duration = Duration::from_secs(30);
/// How often expired revocations are dropped.
const PRUNE_INTERVAL: Duration = Duration::from_secs(10);
/// A long-poll answered empty sooner than this is followed by a pause of this long.
const EARLY_ANSWER: Duration = Duration::from_secs(1);
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// The revoked sessions and the feed's state, shared by verification and the follower task.
pub(crate) struct Revocations {
    clock: Arc<dyn Clock>,
    leeway: Duration,
    loss_bound: Duration,
    state: Mutex<State>,
    synced: watch::Sender<bool>,
}

struct State {
    revoked: HashMap<String, SystemTime>,
    cursor: Option<String>,
    synced: bool,
    connected: bool,
    transport: Option<FeedTransport>,
    since: SystemTime,
    last_event_at: Option<SystemTime>,
    last_contact_at: Option<SystemTime>,
    last_error: Option<(SystemTime, String)>,
    next_prune: SystemTime,
}

impl State {
    fn prune(&mut self, now: SystemTime, force: bool) {
        if force || now >= self.next_prune {
            self.revoked.retain(|_, until| *until > now);
            self.next_prune = now + PRUNE_INTERVAL;
        }
    }
}

/// One revocation event, as hallpass sends it.
#[derive(Debug, Deserialize)]
pub(crate) struct WireEvent {
    #[serde(default, deserialize_with = "cursor_text")]
    cursor: Option<String>,
    session_id: String,
    #[serde(default)]
    jwt_expires_by: Option<String>,
}

/// A page of the poll endpoint.
#[derive(Debug, Deserialize)]
struct Page {
    #[serde(default)]
    events: Vec<WireEvent>,
    #[serde(default, deserialize_with = "cursor_text")]
    next_cursor: Option<String>,
    #[serde(default)]
    has_more: bool,
}

/// Cursors are decimal strings; a JSON number is accepted too.
fn cursor_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::String(s)) if !s.is_empty() => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

impl Revocations {
    pub(crate) fn new(clock: Arc<dyn Clock>, leeway: Duration, loss_bound: Duration) -> Self {
        let now = clock.now();
        Self {
            clock,
            leeway,
            loss_bound,
            state: Mutex::new(State {
                revoked: HashMap::new(),
                cursor: None,
                synced: false,
                connected: false,
                transport: None,
                since: now,
                last_event_at: None,
                last_contact_at: None,
                last_error: None,
                next_prune: now + PRUNE_INTERVAL,
            }),
            synced: watch::channel(false).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn is_revoked(&self, session_id: &str) -> bool {
        self.lock().revoked.contains_key(session_id)
    }

    fn lost(&self, s: &State, now: SystemTime) -> bool {
        !s.connected && elapsed(now, s.since) > self.loss_bound
    }

    /// Whether a verifier that fails closed must refuse: the feed never synced, or it has
    /// been disconnected for longer than the bound.
    pub(crate) fn refuses(&self) -> bool {
        let now = self.clock.now();
        let s = self.lock();
        !s.synced || self.lost(&s, now)
    }

    pub(crate) fn health(&self) -> FeedHealth {
        let now = self.clock.now();
        let s = self.lock();
        FeedHealth {
            synced: s.synced,
            connected: s.connected,
            since: s.since,
            transport: s.transport.filter(|_| s.connected),
            last_event_at: s.last_event_at,
            last_contact_at: s.last_contact_at,
            cursor: s.cursor.clone(),
            revoked_sessions: s.revoked.values().filter(|until| **until > now).count(),
            lost: self.lost(&s, now),
            last_error: s.last_error.as_ref().map(|(_, e)| e.clone()),
            last_error_at: s.last_error.as_ref().map(|(at, _)| *at),
        }
    }

    /// Waits until the whole feed has been read once.
    pub(crate) async fn wait_synced(&self) {
        let mut synced = self.synced.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = synced.wait_for(|s| *s).await;
    }

    /// How long a revocation must be kept: until no JWT of the session can verify.
    fn until(&self, event: &WireEvent, now: SystemTime) -> SystemTime {
        event
            .jwt_expires_by
            .as_deref()
            .and_then(rfc3339)
            .map_or(now + FALLBACK_RETENTION, |t| t + self.leeway)
    }

    /// Applies events that follow the cursor; `cursor` is where the feed now stands.
    fn apply(&self, events: Vec<WireEvent>, cursor: Option<String>) {
        let now = self.clock.now();
        let mut s = self.lock();
        if !events.is_empty() {
            s.last_event_at = Some(now);
        }
        for event in events {
            let until = self.until(&event, now);
            if until > now {
                let entry = s.revoked.entry(event.session_id).or_insert(until);
                *entry = (*entry).max(until);
            }
        }
        if cursor.is_some() {
            s.cursor = cursor;
        }
        s.last_contact_at = Some(now);
        s.prune(now, false);
    }

    /// Installs the result of reading the whole feed. Revocations the verifier knew that are
    /// still unexpired are kept too: a revocation is never undone, so dropping one early
    /// could only let a revoked session's JWT through.
    fn replace(&self, events: Vec<WireEvent>, cursor: Option<String>) {
        let now = self.clock.now();
        {
            let mut s = self.lock();
            s.prune(now, true);
            let mut revoked = std::mem::take(&mut s.revoked);
            for event in events {
                let until = self.until(&event, now);
                if until > now {
                    let entry = revoked.entry(event.session_id).or_insert(until);
                    *entry = (*entry).max(until);
                }
            }
            s.revoked = revoked;
            s.cursor = cursor;
            s.synced = true;
            s.last_contact_at = Some(now);
        }
        self.synced.send_replace(true);
    }

    fn connected(&self, transport: FeedTransport) {
        let now = self.clock.now();
        let mut s = self.lock();
        if !s.connected {
            s.connected = true;
            s.since = now;
        }
        s.transport = Some(transport);
        s.last_contact_at = Some(now);
    }

    fn disconnected(&self, error: String) {
        let now = self.clock.now();
        let mut s = self.lock();
        if s.connected {
            s.connected = false;
            s.since = now;
        }
        s.last_error = Some((now, error));
    }

    /// Records an error that did not disconnect the feed (the stream failed; long-polling
    /// takes over).
    fn note_error(&self, error: String) {
        let now = self.clock.now();
        self.lock().last_error = Some((now, error));
    }

    fn contact(&self) {
        let now = self.clock.now();
        let mut s = self.lock();
        s.last_contact_at = Some(now);
        s.prune(now, false);
    }

    fn cursor(&self) -> Option<String> {
        self.lock().cursor.clone()
    }

    fn synced_once(&self) -> bool {
        self.lock().synced
    }
}

/// Why one step of following the feed failed.
enum Failure {
    /// 410: the cursor is older than what hallpass keeps.
    Gone,
    /// Try again at once (the feed asked for credentials, which are now sent).
    Retry,
    /// The stream could not be opened.
    StreamUnavailable(String),
    /// An open stream ended or broke.
    StreamEnded(String),
    /// Anything else.
    Other(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Gone => f.write_str("the cursor has expired (again, while reading the feed)"),
            Failure::Retry => f.write_str("retrying with credentials"),
            Failure::StreamUnavailable(e) => write!(f, "the revocation stream is unavailable: {e}"),
            Failure::StreamEnded(e) => write!(f, "the revocation stream ended: {e}"),
            Failure::Other(e) => f.write_str(e),
        }
    }
}

/// Settings of the follower task.
pub(crate) struct FollowerConfig {
    pub poll_url: String,
    pub stream_url: String,
    pub http_timeout: Duration,
    pub long_poll_wait: Duration,
    pub heartbeat_timeout: Duration,
    pub transport: FeedTransport,
    pub credentials: Option<HeaderValue>,
}

/// The background task.
pub(crate) struct Follower {
    revocations: Arc<Revocations>,
    http: reqwest::Client,
    config: FollowerConfig,
    send_credentials: bool,
    resync: bool,
    /// Poll without waiting next: more events are pending, or the connection is to be
    /// confirmed at once (after a failure or a switch from the stream).
    quick_poll: bool,
}

impl Follower {
    pub(crate) fn new(
        revocations: Arc<Revocations>,
        http: reqwest::Client,
        config: FollowerConfig,
    ) -> Self {
        Self {
            revocations,
            http,
            config,
            send_credentials: false,
            resync: false,
            quick_poll: true,
        }
    }

    /// Follows the feed until the task is aborted.
    pub(crate) async fn run(mut self) {
        let mut backoff = Backoff::default();
        let mut mode = match self.config.transport {
            FeedTransport::LongPoll => FeedTransport::LongPoll,
            _ => FeedTransport::Stream,
        };
        let mut stream_retry_at: Option<Instant> = None;
        loop {
            if mode == FeedTransport::LongPoll
                && stream_retry_at.is_some_and(|at| Instant::now() >= at)
            {
                mode = FeedTransport::Stream;
                stream_retry_at = None;
            }
            let reading_all = self.resync || !self.revocations.synced_once();
            let result = if reading_all {
                self.read_all().await
            } else if mode == FeedTransport::Stream {
                self.stream().await
            } else {
                self.poll().await
            };
            let failure = match result {
                Ok(()) => {
                    backoff.reset();
                    continue;
                }
                Err(Failure::Retry) => continue,
                Err(Failure::Gone) if !reading_all => {
                    tracing::info!("revocation cursor expired; reading the whole feed again");
                    self.resync = true;
                    continue;
                }
                Err(f) => f,
            };
            self.quick_poll = true;
            let stream_failed = matches!(
                failure,
                Failure::StreamUnavailable(_) | Failure::StreamEnded(_)
            );
            if stream_failed && self.config.transport == FeedTransport::Auto {
                // Long-poll at once (still connected if it answers), and try the stream again
                // later.
                tracing::info!(error = %failure, "revocation feed: long-polling for now");
                self.revocations.note_error(failure.to_string());
                mode = FeedTransport::LongPoll;
                stream_retry_at = Some(Instant::now() + STREAM_RETRY);
                continue;
            }
            tracing::warn!(error = %failure, "revocation feed");
            self.revocations.disconnected(failure.to_string());
            if matches!(failure, Failure::StreamEnded(_)) {
                // It was up: reconnect soon.
                backoff.reset();
            }
            tokio::time::sleep(backoff.next()).await;
        }
    }

    fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match (&self.config.credentials, self.send_credentials) {
            (Some(credentials), true) => request.header(AUTHORIZATION, credentials.clone()),
            _ => request,
        }
    }

    /// A 401: send the credentials from now on if there are some and they were not sent yet.
    fn unauthorized(&mut self, detail: String) -> Failure {
        if self.config.credentials.is_some() && !self.send_credentials {
            self.send_credentials = true;
            return Failure::Retry;
        }
        if self.config.credentials.is_none() {
            Failure::Other(format!(
                "the project's revocation feed is private; configure the project secret ({detail})"
            ))
        } else {
            Failure::Other(format!("the project secret was refused ({detail})"))
        }
    }

    /// One page of the poll endpoint.
    async fn page(&mut self, after: Option<&str>, wait: Duration) -> Result<Page, Failure> {
        let mut url = format!(
            "{}?limit={PAGE_LIMIT}&wait={}",
            self.config.poll_url,
            wait.as_secs()
        );
        if let Some(after) = after {
            url.push_str("&after=");
            url.push_str(&encode(after));
        }
        let request = self
            .http
            .get(url)
            .timeout(wait + self.config.http_timeout)
            .header(ACCEPT, "application/json");
        let response = self
            .authorize(request)
            .send()
            .await
            .map_err(|e| Failure::Other(describe(e)))?;
        match response.status() {
            StatusCode::OK => {
                let body = read_body(response).await.map_err(Failure::Other)?;
                serde_json::from_slice(&body)
                    .map_err(|e| Failure::Other(format!("unreadable revocation page: {e}")))
            }
            StatusCode::GONE => Err(Failure::Gone),
            StatusCode::UNAUTHORIZED => {
                let detail = describe_failure(response).await;
                Err(self.unauthorized(detail))
            }
            _ => Err(Failure::Other(describe_failure(response).await)),
        }
    }

    /// Reads the whole feed from its start and installs it as the revoked set.
    async fn read_all(&mut self) -> Result<(), Failure> {
        let mut events = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.page(after.as_deref(), Duration::ZERO).await?;
            let last = page.events.last().and_then(|e| e.cursor.clone());
            let got = page.events.len();
            events.extend(page.events);
            after = page.next_cursor.or(last).or(after);
            if !page.has_more || got == 0 {
                break;
            }
        }
        self.revocations.replace(events, after);
        self.revocations.connected(FeedTransport::LongPoll);
        self.resync = false;
        Ok(())
    }

    /// One long-poll.
    async fn poll(&mut self) -> Result<(), Failure> {
        let wait = if self.quick_poll {
            Duration::ZERO
        } else {
            self.config.long_poll_wait
        };
        let cursor = self.revocations.cursor();
        let started = Instant::now();
        let page = self.page(cursor.as_deref(), wait).await?;
        self.revocations.connected(FeedTransport::LongPoll);
        if !wait.is_zero() && page.events.is_empty() && started.elapsed() < EARLY_ANSWER {
            // The server did not wait: do not turn long-polling into a busy loop.
            tokio::time::sleep(EARLY_ANSWER).await;
        }
        self.quick_poll = page.has_more && !page.events.is_empty();
        let last = page.events.last().and_then(|e| e.cursor.clone());
        self.revocations
            .apply(page.events, page.next_cursor.or(last));
        Ok(())
    }

    /// Follows the stream from the cursor until it ends or breaks.
    async fn stream(&mut self) -> Result<(), Failure> {
        let mut request = self
            .http
            .get(&self.config.stream_url)
            .header(ACCEPT, "text/event-stream")
            .header(CACHE_CONTROL, "no-cache");
        if let Some(cursor) = self.revocations.cursor() {
            request = request.header("last-event-id", cursor);
        }
        let unavailable = |e: String| Failure::StreamUnavailable(e);
        let sent = tokio::time::timeout(self.config.http_timeout, self.authorize(request).send());
        let mut response = sent
            .await
            .map_err(|_| unavailable("no answer in time".into()))?
            .map_err(|e| unavailable(describe(e)))?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::GONE => return Err(Failure::Gone),
            StatusCode::UNAUTHORIZED => {
                let detail = describe_failure(response).await;
                return Err(self.unauthorized(detail));
            }
            _ => return Err(unavailable(describe_failure(response).await)),
        }
        let is_event_stream = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
        if !is_event_stream {
            return Err(unavailable("the answer is not an event stream".into()));
        }
        self.revocations.connected(FeedTransport::Stream);
        let mut parser = sse::Parser::default();
        let ended = Failure::StreamEnded;
        loop {
            let chunk =
                match tokio::time::timeout(self.config.heartbeat_timeout, response.chunk()).await {
                    Err(_) => {
                        return Err(ended(format!(
                            "nothing received for {} s",
                            self.config.heartbeat_timeout.as_secs()
                        )));
                    }
                    Ok(Err(e)) => return Err(ended(describe(e))),
                    Ok(Ok(None)) => return Err(ended("closed by hallpass".into())),
                    Ok(Ok(Some(chunk))) => chunk,
                };
            self.revocations.contact();
            for event in parser.push(&chunk).map_err(|e| ended(e.0))? {
                if event.event != "revocation" {
                    continue;
                }
                let wire: WireEvent = serde_json::from_str(&event.data)
                    .map_err(|e| ended(format!("unreadable revocation event: {e}")))?;
                let cursor = wire.cursor.clone().or(event.id);
                self.revocations.apply(vec![wire], cursor);
            }
        }
    }
}

/// Percent-encodes a query value (cursors are decimal, but they are opaque to the verifier).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Exponential backoff with jitter, from 250 ms to 10 s.
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    fn reset(&mut self) {
        self.failures = 0;
    }

    fn next(&mut self) -> Duration {
        let base = BACKOFF_MIN
            .saturating_mul(1 << self.failures.min(6))
            .min(BACKOFF_MAX);
        self.failures = self.failures.saturating_add(1);
        // ±25 %, from the clock's nanoseconds: enough to spread reconnecting verifiers.
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let spread = f64::from(nanos % 1000) / 1000.0 * 0.5 + 0.75;
        base.mul_f64(spread)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn event(id: &str, expires_by: Option<&str>) -> WireEvent {
        WireEvent {
            cursor: Some(id.into()),
            session_id: format!("session-test-{id}"),
            jwt_expires_by: expires_by.map(str::to_string),
        }
    }

    #[test]
    fn revocations_are_kept_until_their_jwts_expire_plus_leeway() {
        let clock = ManualClock::at_unix(1_800_000_000); // 2027-01-15T08:00:00Z
        let r = Revocations::new(
            Arc::new(clock.clone()),
            Duration::from_secs(5),
            Duration::from_secs(30),
        );
        r.replace(
            vec![event("1", Some("2027-01-15T08:05:00Z"))],
            Some("1".into()),
        );
        r.apply(vec![event("2", None)], Some("2".into()));
        r.apply(
            vec![event("3", Some("2027-01-15T07:00:00Z"))],
            Some("3".into()),
        );
        assert!(r.is_revoked("session-test-1"));
        assert!(r.is_revoked("session-test-2"), "unreadable expiry: kept");
        assert!(!r.is_revoked("session-test-3"), "already expired: not kept");
        assert_eq!(r.cursor().as_deref(), Some("3"));
        assert_eq!(r.health().revoked_sessions, 2);
        clock.advance(Duration::from_secs(304));
        r.contact();
        assert!(r.is_revoked("session-test-1"), "within the leeway");
        clock.advance(Duration::from_secs(11));
        r.contact();
        assert!(!r.is_revoked("session-test-1"));
        assert!(r.is_revoked("session-test-2"));
        assert_eq!(r.health().revoked_sessions, 1);
    }

    #[test]
    fn a_resync_keeps_what_is_still_live() {
        let clock = ManualClock::at_unix(1_800_000_000);
        let r = Revocations::new(Arc::new(clock), Duration::ZERO, Duration::from_secs(30));
        r.replace(
            vec![event("1", Some("2027-01-15T08:05:00Z"))],
            Some("1".into()),
        );
        r.replace(
            vec![event("9", Some("2027-01-15T08:05:00Z"))],
            Some("9".into()),
        );
        assert!(r.is_revoked("session-test-1"));
        assert!(r.is_revoked("session-test-9"));
        assert_eq!(r.cursor().as_deref(), Some("9"));
    }

    #[test]
    fn loss_is_counted_from_the_disconnection() {
        let clock = ManualClock::at_unix(1_800_000_000);
        let r = Revocations::new(
            Arc::new(clock.clone()),
            Duration::ZERO,
            Duration::from_secs(30),
        );
        assert!(r.refuses(), "never synced");
        r.replace(vec![], Some("0".into()));
        r.connected(FeedTransport::Stream);
        clock.advance(Duration::from_secs(100));
        assert!(!r.refuses());
        r.disconnected("gone".into());
        clock.advance(Duration::from_secs(30));
        assert!(!r.refuses());
        clock.advance(Duration::from_secs(1));
        assert!(r.refuses());
        let h = r.health();
        assert!(h.lost && !h.connected && h.transport.is_none());
        assert_eq!(h.last_error.as_deref(), Some("gone"));
        r.connected(FeedTransport::LongPoll);
        assert!(!r.refuses());
    }

    #[test]
    fn pages_read_string_or_number_cursors() {
        let page: Page = serde_json::from_str(
            r#"{"events":[{"cursor":"12","session_id":"s","revoked_at":"x","reason":"revoked","jwt_expires_by":"2027-01-15T08:05:00Z"}],"next_cursor":13,"has_more":true,"request_id":"r","status_code":200}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(page.events[0].cursor.as_deref(), Some("12"));
        assert_eq!(page.next_cursor.as_deref(), Some("13"));
        assert!(page.has_more);
    }

    #[test]
    fn backoff_grows_to_its_cap_and_resets() {
        let mut b = Backoff::default();
        let first = b.next();
        assert!(first >= BACKOFF_MIN.mul_f64(0.75) && first <= BACKOFF_MIN.mul_f64(1.25));
        for _ in 0..20 {
            assert!(b.next() <= BACKOFF_MAX.mul_f64(1.25));
        }
        b.reset();
        assert!(b.next() <= BACKOFF_MIN.mul_f64(1.25));
        assert_eq!(encode("12 a/b"), "12%20a%2Fb");
    }
}
