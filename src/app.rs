//! Application state, the router with its middleware, background maintenance and `serve`.

use std::collections::HashMap;
use std::future::Future;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use tokio::net::TcpListener;
use tracing::Instrument;
use uuid::Uuid;

use crate::directory::Directory;
use crate::domain::Clock;
use crate::domain::crypto::MasterKeys;
use crate::domain::ids::{Env, Kind, format};
use crate::domain::keys::Schedule;
use crate::error::Error;
use crate::http::{self, auth::CallerCache, request_id};
use crate::store::{self, Db};

/// Rows deleted per retention statement: short transactions, bounded lock time.
pub const PURGE_BATCH: i64 = 1000;

/// Knobs the request path needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub body_limit: usize,
    pub request_timeout: Duration,
    pub schedule: Schedule,
    pub argon2_concurrency: usize,
    pub refresh_interval: Duration,
    /// Caller verifications allowed per minute per (client address, project), and per project.
    pub auth_attempts_per_client: u32,
    pub auth_attempts_per_project: u32,
    /// How long ended sessions and magic links are kept, and how often the purge runs.
    pub retention: Duration,
    pub retention_interval: Duration,
    /// SSF Security Event Tokens this process may sign for the first time per second.
    pub ssf_signatures_per_second: u32,
    /// Live sessions one user may have; starting one more ends the oldest.
    pub max_sessions_per_user: u32,
}

impl Settings {
    pub fn from_config(c: &crate::config::Config) -> Self {
        Self {
            body_limit: c.server.body_limit_bytes,
            request_timeout: Duration::from_secs(c.server.request_timeout_seconds),
            schedule: Schedule {
                rotation_interval: c.keys.rotation_interval_seconds as i64,
                max_age: c.keys.jwks_max_age_seconds as i64,
                retention: c.keys.retired_retention_seconds as i64,
            },
            argon2_concurrency: c.server.argon2_concurrency,
            refresh_interval: Duration::from_secs(c.keys.refresh_interval_seconds),
            auth_attempts_per_client: c.server.auth_attempts_per_minute_per_client,
            auth_attempts_per_project: c.server.auth_attempts_per_minute_per_project,
            retention: Duration::from_secs(c.retention.seconds),
            retention_interval: Duration::from_secs(c.retention.interval_seconds),
            ssf_signatures_per_second: c.server.ssf_signatures_per_second,
            max_sessions_per_user: c.server.max_sessions_per_user,
        }
    }
}

pub struct Inner {
    pub db: Db,
    pub master: MasterKeys,
    pub directory: Directory,
    pub clock: Clock,
    pub settings: Settings,
    pub callers: CallerCache,
    pub touches: Touches,
    pub http: reqwest::Client,
    pub metrics: crate::metrics::Metrics,
    pub feed: Feed,
    /// Identity providers' keys for attest, cached per profile.
    pub provider_keys: crate::trusted::ProviderKeys,
}

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(
        db: Db,
        master: MasterKeys,
        clock: Clock,
        settings: Settings,
        default_project: Option<Uuid>,
    ) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_else(|e| panic!("the HTTP client cannot be built: {e}"));
        Self(Arc::new(Inner {
            directory: Directory::new(db.clone(), master.clone(), default_project),
            callers: CallerCache::new(
                settings.argon2_concurrency,
                settings.auth_attempts_per_client,
                settings.auth_attempts_per_project,
            ),
            touches: Touches::default(),
            metrics: Default::default(),
            feed: Feed::new(settings.ssf_signatures_per_second),
            provider_keys: Default::default(),
            db,
            master,
            clock,
            settings,
            http,
        }))
    }

    /// Applies every due key-ring step (any instance may; each step happens once).
    pub async fn converge_rings(&self) {
        let now = self.clock.now();
        match crate::keyring::converge_all(&self.db, &self.master, &self.settings.schedule, now)
            .await
        {
            Ok(steps) => {
                self.metrics.key_ring_steps.increment(steps as u64);
            }
            Err(e) => tracing::warn!(error = %e, "key ring maintenance failed; will retry"),
        }
    }

    /// Reloads projects, secrets and keys.
    pub async fn refresh_directory(&self) {
        if let Err(e) = self.directory.refresh().await {
            crate::metrics::Metrics::inc(&self.metrics.refresh_failures);
            tracing::warn!(error = %e, "directory refresh failed; serving the previous view");
        }
    }

    /// Deletes what ended more than the retention window ago (if no other instance is).
    pub async fn purge(&self) {
        let cutoff = self.clock.now() - self.settings.retention.as_secs() as i64;
        match store::retention::purge(&self.db, cutoff, PURGE_BATCH, false, |_| {}).await {
            Ok(store::retention::Outcome::Done(p)) => {
                self.metrics.sessions_purged.increment(p.sessions);
                self.metrics.magic_links_purged.increment(p.magic_links);
                if p.sessions + p.magic_links > 0 {
                    tracing::info!(
                        sessions = p.sessions,
                        magic_links = p.magic_links,
                        "retention: deleted ended rows"
                    );
                }
            }
            Ok(store::retention::Outcome::Busy) => {
                tracing::debug!("retention: another instance is purging");
            }
            Err(e) => tracing::warn!(error = %e, "retention purge failed; will retry"),
        }
        // Feed events are kept past the life of any JWT they concern plus two JWKS cache
        // periods (and at least an hour), so a verifier that was briefly away catches up.
        let keep = (crate::domain::keys::JWT_LIFETIME_SECONDS + 2 * self.settings.schedule.max_age)
            .max(3600);
        if let Err(e) = store::revocations::purge(&self.db, self.clock.now() - keep).await {
            tracing::warn!(error = %e, "revocation feed purge failed; will retry");
        }
        if let Err(e) = store::token_profiles::purge_used(&self.db, self.clock.now()).await {
            tracing::warn!(error = %e, "purging used attest token ids failed; will retry");
        }
    }

    /// One maintenance pass as the background tasks do it: converge, then reload.
    pub async fn maintain(&self) {
        self.converge_rings().await;
        self.refresh_directory().await;
    }

    /// Starts the background tasks, each on its own cadence so a slow one (RSA key
    /// generation under load) never delays another: directory refresh, ring convergence,
    /// and the write-behind of `last_accessed_at`. They stop when `shutdown` fires; the
    /// caller flushes pending touches once they have.
    pub fn spawn_background(
        &self,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let period = self.settings.refresh_interval;
        let (touch_tick, batch) = touch_cadence(&self.db);
        // How far the feed's poll of the database has read (a cursor).
        let polled = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let (a, b, c, d, e, f) = (
            self.clone(),
            self.clone(),
            self.clone(),
            self.clone(),
            self.clone(),
            self.clone(),
        );
        vec![
            every(period, shutdown.clone(), move || {
                let s = a.clone();
                async move { s.refresh_directory().await }
            }),
            every(period, shutdown.clone(), move || {
                let s = b.clone();
                async move { s.converge_rings().await }
            }),
            // A flush as soon as a batch is pending, and at least every second: one flush a
            // second of everything made a burst of Postgres work (thousands of rows at a time
            // under load) that delayed the requests around it.
            every(touch_tick, shutdown.clone(), {
                let mut last = Instant::now();
                move || {
                    let s = c.clone();
                    let pending = s.touches.len();
                    let due =
                        pending >= batch || (pending > 0 && last.elapsed() >= TOUCH_MAX_DELAY);
                    if due {
                        last = Instant::now();
                    }
                    async move {
                        if due {
                            let started = Instant::now();
                            s.touches.flush(&s.db).await;
                            s.metrics
                                .touch_flush_seconds
                                .record(started.elapsed().as_secs_f64());
                        }
                    }
                }
            }),
            every(
                self.settings.retention_interval,
                shutdown.clone(),
                move || {
                    let s = d.clone();
                    async move { s.purge().await }
                },
            ),
            // Other instances' revocations reach this one's long-polls and streams within
            // this period (LISTEN/NOTIFY would be faster on Postgres, but SQLite has nothing
            // like it and a 200 ms poll of one index is cheap).
            // Histogram samples wait in memory until folded into buckets (see
            // `Metrics::upkeep`); at tens of thousands of requests a second, every 2 s.
            every(Duration::from_secs(2), shutdown.clone(), move || {
                let s = f.clone();
                async move { s.metrics.upkeep() }
            }),
            // The poll reads on from where it last read, not from the heads known here:
            // this instance's own events are published at once, and another instance's event
            // with a smaller cursor may have committed before them. (Cursors are handed out
            // in commit order, so nothing can appear behind what the poll has read.)
            every(Duration::from_millis(200), shutdown, move || {
                let (s, polled) = (e.clone(), polled.clone());
                async move {
                    let after = polled.load(std::sync::atomic::Ordering::Relaxed);
                    if let Ok(heads) = store::revocations::heads_after(&s.db, after).await
                        && let Some(newest) = heads.iter().map(|(_, c)| *c).max()
                    {
                        polled.fetch_max(newest, std::sync::atomic::Ordering::Relaxed);
                        s.feed.published_heads(&heads);
                    }
                }
            }),
        ]
    }
}

/// Longest one run of a background job may take. A database connection that stops
/// answering without closing (a failover, a dropped route) would otherwise hold the job until
/// the kernel gives up on it, many minutes later: no directory refresh, no touches written,
/// and a shutdown that waits for it. Each job leaves nothing half done when cut short (its
/// writes are transactions; touches stay pending until written), and the next run starts
/// over.
pub const JOB_DEADLINE: Duration = Duration::from_secs(30);

/// Runs `job` every `period` (the first run at once) until `stop` changes, each run cut
/// short after [`JOB_DEADLINE`] or when `stop` changes.
fn every<F, Fut>(
    period: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut job: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            tokio::select! {
                done = tokio::time::timeout(JOB_DEADLINE, job()) => {
                    if done.is_err() {
                        tracing::warn!(
                            seconds = JOB_DEADLINE.as_secs(),
                            "a background job took too long and was cut short; it runs again next time"
                        );
                    }
                }
                _ = stop.changed() => break,
            }
        }
    })
}

/// How often pending touches are looked at, and how many make a flush due. On Postgres a
/// flush is one statement on a connection of its own (`store::sessions::touch`), so small
/// batches often; on SQLite each flush is a transaction whose commit syncs the log, so fewer.
fn touch_cadence(db: &Db) -> (Duration, usize) {
    match db {
        Db::Postgres(_) => (Duration::from_millis(25), 32),
        Db::Sqlite(_) => (Duration::from_millis(100), 64),
    }
}
/// The longest a touch waits to be written.
const TOUCH_MAX_DELAY: Duration = Duration::from_secs(1);

/// `last_accessed_at` touches not yet written. An authenticate that changes nothing else
/// records its touch here and a task writes them in batches (as soon as a batch is pending,
/// see `touch_cadence`, and at least every second): one database round trip per such request
/// instead of two. Readers of a session consult the pending value, so the idle-timeout check
/// in this instance sees every touch at once, and other instances see it within a second.
#[derive(Default)]
pub struct Touches(Mutex<HashMap<Uuid, i64>>);

impl Touches {
    pub fn record(&self, session: Uuid, at: i64) {
        if let Ok(mut m) = self.0.lock() {
            let slot = m.entry(session).or_insert(at);
            *slot = (*slot).max(at);
        }
    }

    pub fn pending(&self, session: Uuid) -> Option<i64> {
        self.0.lock().ok().and_then(|m| m.get(&session).copied())
    }

    pub fn len(&self) -> usize {
        self.0.lock().map_or(0, |m| m.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn forget(&self, session: Uuid) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(&session);
        }
    }

    /// Writes the pending touches. They stay pending (visible to readers) until written, so
    /// a read racing with the write never sees the older stored value alone; one touched
    /// again meanwhile stays for the next flush. A failed write leaves them for the next one.
    pub async fn flush(&self, db: &Db) {
        let mut by_instant: HashMap<i64, Vec<Uuid>> = HashMap::new();
        match self.0.lock() {
            Ok(m) => {
                for (id, at) in m.iter() {
                    by_instant.entry(*at).or_default().push(*id);
                }
            }
            Err(_) => return,
        }
        for (at, ids) in by_instant {
            match store::sessions::touch(db, &ids, at).await {
                Ok(()) => {
                    if let Ok(mut m) = self.0.lock() {
                        for id in &ids {
                            if m.get(id) == Some(&at) {
                                m.remove(id);
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, sessions = ids.len(), "last_accessed_at write-behind failed; will retry");
                }
            }
        }
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(http::sessions::routes())
        .merge(http::users::routes())
        .merge(http::magic_links::routes())
        .merge(http::jwks::routes())
        .merge(http::ops::routes())
        .merge(http::rbac::routes())
        .merge(http::revocations::routes())
        .route_layer(tower::layer::layer_fn(RecordRoute))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(from_fn_with_state(state.clone(), request_context))
        .with_state(state)
}

async fn not_found() -> Error {
    Error::NotFound("No such endpoint.".into())
}

async fn method_not_allowed() -> Error {
    Error::bad_request("This endpoint does not accept that HTTP method.")
}

/// Gives every request an id (body, header, logs): a well-formed incoming `X-Request-Id`,
/// else a new `request-id-{env}-{uuid}`. When it ends: one access-log line at info (target
/// `hallpass::access`, so `HALLPASS_LOG=info,hallpass::access=off` turns it off) and the
/// request metrics.
async fn request_context(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let incoming = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| request_id::acceptable(v));
    let id = match incoming {
        Some(id) => id.to_string(),
        None => format(
            Kind::Request,
            env_hint(&req),
            crate::domain::ids::request_uuid(),
        ),
    };
    let context = request_id::Context::new(id);
    let method = req.method().clone();
    let span = tracing::debug_span!("request", id = %context.id, method = %method, path = %req.uri().path());
    let started = Instant::now();
    let feed = req.uri().path().starts_with(http::revocations::PREFIX);
    let bounded = within_deadline(&state, feed, read_body(&state, req, next, feed));
    let mut response = request_id::scope(context.clone(), bounded.instrument(span)).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    state
        .metrics
        .request(method.as_str(), context.route(), status, elapsed);
    // Never the path's own values, the body, a token or a secret: the route template only.
    tracing::info!(
        target: "hallpass::access",
        request_id = %context.id,
        method = %method,
        route = context.route(),
        status,
        micros = elapsed.as_micros() as u64,
        project = context.project(),
        "request"
    );
    if let Ok(v) = HeaderValue::from_str(&context.id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

/// Records the matched route template for the access log and the metrics: a layer on every
/// route (only there is the template known), a plain service wrapper so that it adds no
/// boxed future of its own to every request.
#[derive(Clone)]
struct RecordRoute<S>(S);

impl<S: tower::Service<Request>> tower::Service<Request> for RecordRoute<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if let Some(path) = req.extensions().get::<axum::extract::MatchedPath>() {
            request_id::set_route(path.as_str());
        }
        self.0.call(req)
    }
}

/// The environment for the request id: the caller's project if it says, else `test`.
fn env_hint(req: &Request) -> Env {
    let live_basic = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Basic "))
        // Only the first 15 bytes matter ("project-live-" is 13): 20 base64 characters.
        .and_then(|b| b.trim().get(..20))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .is_some_and(|d| d.starts_with(b"project-live-"));
    if live_basic || req.uri().path().contains("project-live-") {
        Env::Live
    } else {
        Env::Test
    }
}

/// A request that runs past the deadline is answered 503; the caller may retry. The
/// request-context layer runs this (and `read_body`) itself rather than as layers of their
/// own: each `from_fn` layer boxes and copies the request's future once more.
async fn within_deadline(
    state: &AppState,
    feed: bool,
    served: impl Future<Output = Response>,
) -> Response {
    // The feed's long-polls bound their own wait (at most 30 s) and its streams are meant
    // to last; their request bodies are bounded by `read_body`.
    if feed {
        return served.await;
    }
    match tokio::time::timeout(state.settings.request_timeout, served).await {
        Ok(r) => r,
        Err(_) => Error::ServiceUnavailable.into_response(),
    }
}

/// Reads the whole body (up to the limit) before any handler runs, on every path: a body
/// left unread poisons the next request on a kept-alive connection. The read is bounded by
/// the request deadline on every path: elsewhere `within_deadline` covers it, and on the
/// feed's paths (which it leaves unbounded) the deadline is applied here, so a body that
/// never arrives cannot hold a connection, which the idle and header watchdogs leave alone
/// once a request is in flight.
async fn read_body(state: &AppState, req: Request, next: Next, feed: bool) -> Response {
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    // A declared length over the limit is refused before a byte of the body is read.
    let read = match declared {
        Some(n) if n > state.settings.body_limit as u64 => Err(()),
        _ => {
            let reading = axum::body::to_bytes(body, state.settings.body_limit);
            if feed {
                match tokio::time::timeout(state.settings.request_timeout, reading).await {
                    Ok(read) => read.map_err(|_| ()),
                    Err(_) => return Error::ServiceUnavailable.into_response(),
                }
            } else {
                reading.await.map_err(|_| ())
            }
        }
    };
    match read {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(_) => {
            // The rest of the body is still on the wire: close the connection after this.
            let mut r = Error::PayloadTooLarge(state.settings.body_limit).into_response();
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            r
        }
    }
}

/// Serves until `shutdown` resolves, then finishes in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    limits: crate::server::Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let feed = state.clone();
    let shutdown = async move {
        shutdown.await;
        feed.feed.close();
    };
    crate::server::serve(listener, router(state), limits, shutdown).await
}

/// Each project's newest revocation-feed cursor this instance knows of: bumped by its own
/// revocations at once, and by a poll of the database (every 200 ms) for other instances'.
/// Long-polls and streams wait for a signal that some head moved and read the database again
/// only when their own project's head passed what they have: an event of one project does
/// not make every waiter of every project query.
pub struct Feed {
    /// Signals that some project's head moved (the heads say which).
    moved: tokio::sync::watch::Sender<()>,
    /// Each project's newest cursor known here (updated before `moved` signals).
    heads: std::sync::Mutex<HashMap<Uuid, i64>>,
    /// Set when the server stops: open streams end so the shutdown is not held up by them.
    closed: tokio::sync::watch::Sender<bool>,
    /// Long-polls and streams hold a request (and a connection) open: at most this many at
    /// once, so a public feed cannot be used to fill the server's connection cap.
    waiters: Arc<tokio::sync::Semaphore>,
    /// The SSF poll's Security Event Tokens already signed.
    pub sets: crate::http::revocations::SignedSets,
}

/// Most feed long-polls and streams open at once per process.
pub const MAX_FEED_WAITERS: usize = 256;

impl Feed {
    /// `ssf_signatures_per_second`: see [`crate::http::revocations::SignedSets`].
    pub fn new(ssf_signatures_per_second: u32) -> Self {
        Self {
            moved: tokio::sync::watch::Sender::new(()),
            heads: Default::default(),
            closed: tokio::sync::watch::Sender::new(false),
            waiters: Arc::new(tokio::sync::Semaphore::new(MAX_FEED_WAITERS)),
            sets: crate::http::revocations::SignedSets::new(ssf_signatures_per_second),
        }
    }
}

impl Feed {
    /// A revocation of `project` committed with `cursor` (`None`: nothing was revoked).
    pub fn published(&self, project: Uuid, cursor: Option<i64>) {
        if let Some(cursor) = cursor {
            self.published_heads(&[(project, cursor)]);
        }
    }

    /// Projects' newest cursors, as the database has them.
    pub fn published_heads(&self, heads: &[(Uuid, i64)]) {
        // Any project's head that moved wakes the waiters, even below cursors already
        // published here: another instance's event can be older than this instance's and
        // still new to its project's waiters.
        let mut moved = false;
        {
            let mut known = self.heads.lock().unwrap_or_else(|e| e.into_inner());
            for (project, cursor) in heads {
                let slot = known.entry(*project).or_insert(0);
                moved |= *cursor > *slot;
                *slot = (*slot).max(*cursor);
            }
        }
        if moved {
            self.moved.send_replace(());
        }
    }

    /// The newest cursor known here of `project`'s events (0: none since this process
    /// started): a waiter that has read up to a cursor at least this has nothing new.
    pub fn head_of(&self, project: Uuid) -> i64 {
        let known = self.heads.lock().unwrap_or_else(|e| e.into_inner());
        known.get(&project).copied().unwrap_or(0)
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<()> {
        self.moved.subscribe()
    }

    /// A slot for a long-poll or a stream; `None` when all are taken.
    pub fn waiter(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.waiters.clone().try_acquire_owned().ok()
    }

    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    pub fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_background_job_that_hangs_is_cut_short_and_stopped() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        // The first run never finishes (a connection that stopped answering); later runs do.
        let runs = Arc::new(AtomicUsize::new(0));
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let counted = runs.clone();
        let task = every(Duration::from_secs(1), stop, move || {
            let n = counted.fetch_add(1, SeqCst);
            async move {
                if n == 0 {
                    std::future::pending::<()>().await
                }
            }
        });
        tokio::time::sleep(JOB_DEADLINE - Duration::from_secs(1)).await;
        assert_eq!(runs.load(SeqCst), 1);
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(runs.load(SeqCst) >= 2, "runs again after the deadline");
        stop_tx.send_replace(true);
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .unwrap()
            .unwrap();
        // A stop ends the loop in the middle of a run that hangs, without waiting for it.
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let task = every(Duration::from_secs(1), stop, std::future::pending::<()>);
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop_tx.send_replace(true);
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn a_feed_waiter_learns_only_of_its_own_projects_events() {
        let feed = Feed::new(1);
        let (p, q) = (Uuid::new_v4(), Uuid::new_v4());
        let mut changes = feed.subscribe();
        assert_eq!((feed.head_of(p), feed.head_of(q)), (0, 0));
        feed.published(p, Some(7));
        // Every waiter is woken, but only p's has anything newer to read.
        assert!(changes.has_changed().unwrap());
        changes.borrow_and_update();
        assert_eq!((feed.head_of(p), feed.head_of(q)), (7, 0));
        // The database poll brings other instances' heads; none goes backwards.
        feed.published_heads(&[(q, 9), (p, 5)]);
        assert_eq!((feed.head_of(p), feed.head_of(q)), (7, 9));
        assert!(changes.has_changed().unwrap());
        changes.borrow_and_update();
        // Nothing revoked, or nothing newer: no wake-up.
        feed.published(p, None);
        feed.published_heads(&[(q, 8)]);
        feed.published_heads(&[]);
        assert!(!changes.has_changed().unwrap());
        // Another instance's event older than the newest cursor known here is still new to
        // its own project: its waiters are woken.
        let r = Uuid::new_v4();
        feed.published_heads(&[(r, 3)]);
        assert_eq!(feed.head_of(r), 3);
        assert!(changes.has_changed().unwrap());
    }
}
