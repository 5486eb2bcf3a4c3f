//! What [`Verifier::health`](crate::Verifier::health) reports: the age and last error of the
//! cached signing keys, and the state of the revocation feed.

use std::time::{Duration, SystemTime};

/// A snapshot of the verifier's state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// The signing-key cache.
    pub keys: KeysHealth,
    /// The revocation feed; `None` when it is turned off.
    pub feed: Option<FeedHealth>,
    /// Whether [`Verifier::verify`](crate::Verifier::verify) can accept a JWT right now: keys
    /// are loaded and, when the verifier fails closed, the feed is synced and not lost.
    pub accepting: bool,
}

impl Health {
    /// True when nothing is wrong: keys loaded and current (the last fetch succeeded), and
    /// the feed (if on) synced and connected.
    pub fn is_healthy(&self) -> bool {
        self.accepting
            && self.keys.last_error.is_none()
            && self.feed.as_ref().is_none_or(|f| f.synced && f.connected)
    }
}

/// The signing-key cache.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeysHealth {
    /// Whether a JWKS was ever fetched.
    pub loaded: bool,
    /// How many usable (RSA, RS256, signing) keys the cache holds.
    pub key_count: usize,
    /// When hallpass last confirmed the keys (a 200, or a 304 to a revalidation).
    pub fetched_at: Option<SystemTime>,
    /// How long ago that was.
    pub age: Option<Duration>,
    /// The freshness hallpass granted (`Cache-Control: max-age`).
    pub max_age: Duration,
    /// True when the keys are older than `max_age`. They are revalidated at the next
    /// verification; with `last_error` set, hallpass could not be reached and the last good
    /// keys are in use.
    pub stale: bool,
    /// Why the last fetch failed; `None` once a fetch succeeds.
    pub last_error: Option<String>,
    /// When it failed.
    pub last_error_at: Option<SystemTime>,
}

/// How the feed is followed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum FeedTransport {
    /// Server-Sent Events, falling back to long-polling while the stream fails (the default).
    #[default]
    Auto,
    /// Server-Sent Events only.
    Stream,
    /// Long-polling only.
    LongPoll,
}

/// The revocation feed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FeedHealth {
    /// Whether the feed has been read in full once (every revocation hallpass keeps is known).
    pub synced: bool,
    /// Whether the verifier is following the feed now (a stream is open, or the last poll
    /// answered).
    pub connected: bool,
    /// Since when it has been connected, or disconnected.
    pub since: SystemTime,
    /// The transport in use (`Stream` or `LongPoll`) while connected.
    pub transport: Option<FeedTransport>,
    /// When the last revocation event arrived.
    pub last_event_at: Option<SystemTime>,
    /// When hallpass last answered on the feed (an event, a heartbeat, a poll).
    pub last_contact_at: Option<SystemTime>,
    /// The cursor the verifier resumes from.
    pub cursor: Option<String>,
    /// Revoked sessions held (those whose JWTs may still be unexpired).
    pub revoked_sessions: usize,
    /// True when the feed has been disconnected for longer than the configured bound.
    pub lost: bool,
    /// The last feed error.
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_at: Option<SystemTime>,
}
