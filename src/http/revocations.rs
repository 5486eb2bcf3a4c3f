//! The revocation feed: every session that stopped being valid while JWTs of it may still be
//! unexpired, as a poll / long-poll, as Server-Sent Events, and as CAEP `session-revoked`
//! Security Event Tokens from an RFC 8936 poll endpoint. Readable without credentials, like
//! the JWKS (events carry session ids, times and a reason only), unless the project made it
//! private.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::Caller;
use super::sessions::render;
use super::{Json, PathText, Query};
use crate::app::AppState;
use crate::directory::Project;
use crate::domain::ids::{Kind, ProjectId};
use crate::domain::keys::{KeyError, SigningKey};
use crate::domain::rfc3339;
use crate::error::{Error, Result};
use crate::store::revocations::{self, Event};

pub const PREFIX: &str = "/v1/sessions/revocations/";
/// Events per page.
const MAX_LIMIT: i64 = 1000;
/// Longest long-poll a caller may ask for.
const MAX_WAIT_SECONDS: u64 = 30;
const CAEP_SESSION_REVOKED: &str =
    "https://schemas.openid.net/secevent/caep/event-type/session-revoked";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/sessions/revocations/{project_id}", get(poll))
        .route("/v1/sessions/revocations/{project_id}/stream", get(stream))
        .route(
            "/v1/sessions/revocations/{project_id}/ssf/poll",
            post(ssf_poll),
        )
}

/// Waits until this process knows of an event of `project` newer than `seen` (a cursor up to
/// which the caller has read the database: `Feed::head_of` before its read, or the client's
/// cursor, whichever is greater), so that waiters read again only for their own project's
/// events. False when the server stops.
async fn newer(
    state: &AppState,
    changes: &mut tokio::sync::watch::Receiver<()>,
    closing: &mut tokio::sync::watch::Receiver<bool>,
    project: uuid::Uuid,
    seen: i64,
) -> bool {
    loop {
        if state.feed.head_of(project) > seen {
            return true;
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return false },
            _ = closing.wait_for(|closed| *closed) => return false,
        }
    }
}

/// One event on the wire.
#[derive(Serialize)]
struct WireEvent {
    cursor: String,
    session_id: String,
    revoked_at: String,
    reason: String,
    jwt_expires_by: String,
}

fn wire(project: &ProjectId, e: &Event) -> WireEvent {
    WireEvent {
        cursor: e.cursor.to_string(),
        session_id: project.id(Kind::Session, e.session_id),
        revoked_at: rfc3339(e.revoked_at),
        reason: e.reason.clone(),
        jwt_expires_by: rfc3339(e.jwt_expires_by),
    }
}

/// The project named in the path, with the caller's credentials checked when its feed is
/// private (an unknown project is 404, as for the JWKS).
async fn feed_project(
    state: &AppState,
    parts: &mut Parts,
    project_id: &str,
) -> Result<Arc<Project>> {
    let id: ProjectId = project_id
        .parse()
        .map_err(|_| Error::NotFound("No such project.".into()))?;
    let project = state
        .directory
        .get(id.uuid)
        .filter(|p| p.id == id)
        .ok_or_else(|| Error::NotFound("No such project.".into()))?;
    if project.revocations_private {
        let Caller(caller) = Caller::from_request_parts(parts, state).await?;
        if caller.id != project.id {
            return Err(Error::Unauthorized);
        }
    }
    Ok(project)
}

fn parse_cursor(name: &str, text: Option<&str>) -> Result<Option<i64>> {
    match text.filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(t) => t
            .parse::<i64>()
            .ok()
            .filter(|c| *c >= 0)
            .map(Some)
            .ok_or_else(|| Error::bad_request(format!("{name} must be a cursor from this feed"))),
    }
}

/// Refuses a cursor whose following events may have been deleted.
/// A cursor past the newest event is refused too: it cannot come from this database (it was
/// restored from a backup, say), and following it would silently skip what comes next.
async fn check_horizon(state: &AppState, after: Option<i64>) -> Result<i64> {
    let (head, horizon) = revocations::head_and_horizon(&state.db).await?;
    if after.is_some_and(|a| a < horizon || a > head) {
        return Err(Error::CursorExpired);
    }
    Ok(head)
}

#[derive(Deserialize)]
struct PollQuery {
    after: Option<String>,
    wait: Option<u64>,
    limit: Option<i64>,
}

#[derive(Serialize)]
struct PollBody {
    events: Vec<WireEvent>,
    next_cursor: String,
    has_more: bool,
}

/// `GET /v1/sessions/revocations/{project_id}?after=&wait=&limit=`.
async fn poll(
    State(state): State<AppState>,
    PathText(project_id): PathText,
    Query(q): Query<PollQuery>,
    mut parts: Parts,
) -> Result<Response> {
    let project = feed_project(&state, &mut parts, &project_id).await?;
    let after = parse_cursor("after", q.after.as_deref())?;
    let wait = q.wait.unwrap_or(0);
    if wait > MAX_WAIT_SECONDS {
        return Err(Error::bad_request(format!(
            "wait must be between 0 and {MAX_WAIT_SECONDS} seconds"
        )));
    }
    let limit = q.limit.unwrap_or(MAX_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(Error::bad_request(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    // Subscribed before the first read, so an event committed in between still wakes us.
    let mut changes = state.feed.subscribe();
    let mut closing = state.feed.closing();
    // A caller that cannot get a waiting slot is answered at once (it polls again).
    let slot = if wait > 0 { state.feed.waiter() } else { None };
    let wait = if slot.is_some() { wait } else { 0 };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    let (events, head, has_more) = loop {
        let head = check_horizon(&state, after).await?;
        let known = state.feed.head_of(project.id.uuid);
        // One more than asked: it tells `has_more` without a false positive at exactly `limit`.
        let mut events = revocations::after(&state.db, project.id.uuid, after, limit + 1).await?;
        if !events.is_empty() {
            let more = events.len() as i64 > limit;
            events.truncate(limit as usize);
            break (events, head, more);
        }
        let seen = known.max(after.unwrap_or(0));
        let waited = newer(&state, &mut changes, &mut closing, project.id.uuid, seen);
        if !matches!(tokio::time::timeout_at(deadline, waited).await, Ok(true)) {
            break (events, head, false);
        }
    };
    drop(slot);
    let next = events
        .last()
        .map(|e| e.cursor)
        .unwrap_or_else(|| after.unwrap_or(0).max(head));
    Ok(render(PollBody {
        has_more,
        events: events.iter().map(|e| wire(&project.id, e)).collect(),
        next_cursor: next.to_string(),
    }))
}

#[derive(Deserialize)]
struct StreamQuery {
    after: Option<String>,
}

/// `GET /v1/sessions/revocations/{project_id}/stream`: Server-Sent Events, resumable with
/// `Last-Event-ID` (or `?after=`), with a comment line every 15 s.
async fn stream(
    State(state): State<AppState>,
    PathText(project_id): PathText,
    Query(q): Query<StreamQuery>,
    mut parts: Parts,
) -> Result<Response> {
    let project = feed_project(&state, &mut parts, &project_id).await?;
    let last_event_id = parts
        .headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let after = match last_event_id {
        Some(id) => parse_cursor("Last-Event-ID", Some(&id))?,
        None => parse_cursor("after", q.after.as_deref())?,
    };
    check_horizon(&state, after).await?;
    // Streams are long-lived requests: bounded in number, so they cannot hold every
    // connection the server may open.
    let slot = state.feed.waiter().ok_or(Error::TooManyRequests(5))?;

    struct Follow {
        state: AppState,
        project: Arc<Project>,
        cursor: Option<i64>,
        pending: VecDeque<Event>,
        changes: tokio::sync::watch::Receiver<()>,
        closing: tokio::sync::watch::Receiver<bool>,
        _slot: tokio::sync::OwnedSemaphorePermit,
    }
    let follow = Follow {
        _slot: slot,
        changes: state.feed.subscribe(),
        closing: state.feed.closing(),
        state,
        project,
        cursor: after,
        pending: VecDeque::new(),
    };
    let events = futures_util::stream::unfold(follow, |mut f| async move {
        loop {
            if let Some(e) = f.pending.pop_front() {
                f.cursor = Some(e.cursor);
                let data = serde_json::to_string(&wire(&f.project.id, &e)).unwrap_or_default();
                let event = SseEvent::default()
                    .id(e.cursor.to_string())
                    .event("revocation")
                    .data(data);
                return Some((Ok::<_, Infallible>(event), f));
            }
            let project = f.project.id.uuid;
            let known = f.state.feed.head_of(project);
            match revocations::after(&f.state.db, project, f.cursor, 500).await {
                Ok(batch) if !batch.is_empty() => f.pending.extend(batch),
                Ok(_) => {
                    // Caught up: wait for the project's next event (heartbeats come from
                    // KeepAlive), or end when the server stops (the client resumes elsewhere).
                    let seen = known.max(f.cursor.unwrap_or(0));
                    if !newer(&f.state, &mut f.changes, &mut f.closing, project, seen).await {
                        return None;
                    }
                }
                Err(e) => {
                    // The database is away: end the stream; the client resumes from its
                    // last id (or falls back to long-polling).
                    tracing::warn!(error = %e, "revocation stream ended: database error");
                    return None;
                }
            }
        }
    });
    Ok(Sse::new(events)
        .keep_alive(
            KeepAlive::new()
                .interval(Duration::from_secs(15))
                .text("keep-alive"),
        )
        .into_response())
}

/// RFC 8936 poll request (the parts hallpass uses).
#[derive(Deserialize, Default)]
struct SsfPollRequest {
    ack: Option<Vec<String>>,
    #[serde(rename = "maxEvents")]
    max_events: Option<i64>,
    #[serde(rename = "returnImmediately")]
    return_immediately: Option<bool>,
}

/// Security Event Tokens this process has signed, by cursor (cursors are unique across
/// projects). A SET is issued once and sent as it is on every poll until acknowledged (RFC
/// 8936 retransmits the same SET), so a poll signs only the events it is the first to send:
/// the feed is readable without credentials, and polling it again must not cost a signature
/// per event each time. The oldest cursors go first past [`MAX_SIGNED_SETS`] (about 1 KB each).
///
/// What is signed for the first time is bounded too, since a public feed with more kept
/// events than are remembered here could otherwise be read round and round to make the
/// server sign without end: one poll at a time signs, on a blocking thread (not a request
/// worker), at most [`MAX_NEW_SETS_PER_POLL`] SETs, out of a process-wide allowance of
/// signatures per second. A page is cut short (with `moreAvailable`) where the allowance ran
/// out; a poll that can send nothing is answered 429 with Retry-After.
pub struct SignedSets {
    kept: Mutex<BTreeMap<i64, SignedSet>>,
    signing: tokio::sync::Semaphore,
    allowance: governor::DefaultDirectRateLimiter,
}

struct SignedSet {
    project: uuid::Uuid,
    /// The key that signed it: after a rotation the SET is signed again with the new one.
    key: uuid::Uuid,
    set: Arc<str>,
}

/// Most SETs kept.
const MAX_SIGNED_SETS: usize = 10_000;
/// Most SETs one poll signs for the first time (about 0.4 ms of CPU each).
const MAX_NEW_SETS_PER_POLL: usize = 100;
/// How long a poll waits for another poll's signing to finish.
const SIGNING_WAIT: Duration = Duration::from_secs(2);

impl SignedSets {
    /// `per_second`: new signatures allowed per second in this process (a second's worth
    /// may come at once).
    pub fn new(per_second: u32) -> Self {
        let n = std::num::NonZeroU32::new(per_second).unwrap_or(std::num::NonZeroU32::MIN);
        Self {
            kept: Default::default(),
            signing: tokio::sync::Semaphore::new(1),
            allowance: governor::RateLimiter::direct(governor::Quota::per_second(n)),
        }
    }

    fn get(&self, cursor: i64, project: uuid::Uuid, key: uuid::Uuid) -> Option<Arc<str>> {
        let sets = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        sets.get(&cursor)
            .filter(|s| s.project == project && s.key == key)
            .map(|s| s.set.clone())
    }

    fn put(&self, cursor: i64, project: uuid::Uuid, key: uuid::Uuid, set: Arc<str>) {
        let mut sets = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        sets.insert(cursor, SignedSet { project, key, set });
        while sets.len() > MAX_SIGNED_SETS {
            sets.pop_first();
        }
    }

    /// The SETs of `events` (in order), the longest prefix of them that can be sent now:
    /// those signed before, and up to the bounds above signed now with the project's current
    /// key. An empty answer for a non-empty `events` is a 429.
    async fn page(
        &self,
        project: &Project,
        events: &[Event],
        now: i64,
        signed_count: &metrics::Counter,
    ) -> Result<Vec<(String, Arc<str>)>> {
        let key = project
            .ring
            .signer
            .clone()
            .ok_or(Error::ServiceUnavailable)?;
        let (pid, kid) = (project.id.uuid, key.id);
        let mut sets: Vec<_> = events
            .iter()
            .map_while(|e| Some((e.cursor.to_string(), self.get(e.cursor, pid, kid)?)))
            .collect();
        let rest = &events[sets.len()..];
        // Another poll may be signing these very events: once it is done they are kept.
        if !rest.is_empty()
            && let Ok(Ok(_signing)) =
                tokio::time::timeout(SIGNING_WAIT, self.signing.acquire()).await
        {
            let fresh = self.sign_missing(project, key, rest, now).await?;
            signed_count.increment(fresh.len() as u64);
            // What was just signed is taken as signed, not read back: a full store may
            // already have evicted an old cursor it kept.
            let mut fresh = fresh.into_iter().peekable();
            for e in rest {
                let Some(set) = fresh
                    .next_if(|(cursor, _)| *cursor == e.cursor)
                    .map(|(_, set)| set)
                    .or_else(|| self.get(e.cursor, pid, kid))
                else {
                    break;
                };
                sets.push((e.cursor.to_string(), set));
            }
        }
        if sets.is_empty() && !events.is_empty() {
            return Err(Error::TooManyRequests(1));
        }
        Ok(sets)
    }

    /// Signs and keeps, in order, the SETs of `events` not kept yet, up to where the bounds
    /// stop (at most [`MAX_NEW_SETS_PER_POLL`], and what the allowance grants), on the
    /// blocking pool. Called holding `signing`. Returns them by cursor.
    async fn sign_missing(
        &self,
        project: &Project,
        key: Arc<SigningKey>,
        events: &[Event],
        now: i64,
    ) -> Result<Vec<(i64, Arc<str>)>> {
        let (pid, kid, env) = (project.id.uuid, key.id, project.id.env);
        let mut unsigned = Vec::new();
        for e in events {
            if self.get(e.cursor, pid, kid).is_some() {
                continue;
            }
            if unsigned.len() == MAX_NEW_SETS_PER_POLL || self.allowance.check().is_err() {
                break;
            }
            unsigned.push((e.cursor, set_claims(project, e, now)?));
        }
        let signed = tokio::task::spawn_blocking(move || {
            unsigned
                .into_iter()
                .map(|(cursor, claims)| {
                    let set = key.sign_with_typ("secevent+jwt", env, &claims)?;
                    Ok((cursor, Arc::<str>::from(set)))
                })
                .collect::<std::result::Result<Vec<_>, KeyError>>()
        })
        .await
        .map_err(Error::internal)?
        .map_err(Error::internal)?;
        for (cursor, set) in &signed {
            self.put(*cursor, pid, kid, set.clone());
        }
        Ok(signed)
    }
}

/// The claims of `event`'s SET, first issued at `now`.
fn set_claims(project: &Project, e: &Event, now: i64) -> Result<Vec<u8>> {
    let project_id = project.id.to_string();
    let claims = json!({
        "iss": format!("stytch.com/{project_id}"),
        "aud": project_id,
        "jti": e.cursor.to_string(),
        "iat": now,
        "events": {
            CAEP_SESSION_REVOKED: {
                "subject": {"format": "opaque", "id": project.id.id(Kind::Session, e.session_id)},
                "event_timestamp": e.revoked_at,
                "reason_admin": {"en": e.reason},
            }
        }
    });
    serde_json::to_vec(&claims).map_err(Error::internal)
}

/// `sets` written in cursor order (oldest first): a JSON object whose keys keep the order of
/// the events, not a sorted map (where "10" would come before "2").
struct OrderedSets(Vec<(String, Arc<str>)>);

impl Serialize for OrderedSets {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (jti, set) in &self.0 {
            map.serialize_entry(jti, &**set)?;
        }
        map.end()
    }
}

#[derive(Serialize)]
struct SsfPollBody {
    sets: OrderedSets,
    #[serde(rename = "moreAvailable")]
    more_available: bool,
}

/// `POST /v1/sessions/revocations/{project_id}/ssf/poll`: the feed as CAEP `session-revoked`
/// Security Event Tokens (RFC 8417), signed with the project's current key (verify them with
/// the JWKS). Each SET's `jti` is its cursor. hallpass keeps no per-receiver state: a poll
/// returns the events after the highest `jti` it acknowledges (all kept events when it
/// acknowledges none), so a receiver acknowledges what it has processed, as RFC 8936 asks.
async fn ssf_poll(
    State(state): State<AppState>,
    PathText(project_id): PathText,
    mut parts: Parts,
    Json(req): Json<SsfPollRequest>,
) -> Result<Response> {
    let project = feed_project(&state, &mut parts, &project_id).await?;
    let mut after = None;
    let return_immediately = req.return_immediately.unwrap_or(false);
    for (i, jti) in req.ack.iter().flatten().enumerate() {
        let cursor = parse_cursor(&format!("ack[{i}]"), Some(jti))?;
        after = after.max(cursor);
    }
    let limit = req.max_events.unwrap_or(100);
    if !(0..=MAX_LIMIT).contains(&limit) {
        return Err(Error::bad_request(format!(
            "maxEvents must be between 0 and {MAX_LIMIT}"
        )));
    }
    let mut changes = state.feed.subscribe();
    let mut closing = state.feed.closing();
    let slot = if return_immediately || limit == 0 {
        None
    } else {
        state.feed.waiter()
    };
    let wait = if slot.is_some() { 25 } else { 0 };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    let events = loop {
        check_horizon(&state, after).await?;
        let known = state.feed.head_of(project.id.uuid);
        let events = revocations::after(&state.db, project.id.uuid, after, limit.max(1)).await?;
        if limit == 0 {
            break Vec::new();
        }
        if !events.is_empty() {
            break events;
        }
        let seen = known.max(after.unwrap_or(0));
        let waited = newer(&state, &mut changes, &mut closing, project.id.uuid, seen);
        if !matches!(tokio::time::timeout_at(deadline, waited).await, Ok(true)) {
            break events;
        }
    };
    drop(slot);
    let now = state.clock.now();
    let sets = state
        .feed
        .sets
        .page(&project, &events, now, &state.metrics.ssf_sets_signed)
        .await?;
    Ok(render(SsfPollBody {
        more_available: sets.len() < events.len() || (events.len() as i64 == limit && limit > 0),
        sets: OrderedSets(sets),
    }))
}
