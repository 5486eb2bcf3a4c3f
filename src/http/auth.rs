//! Caller authentication: HTTP Basic `project_id:secret`, checked with argon2id once per
//! secret per process and remembered by a fast hash of the presented value.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use governor::clock::Clock as _;
use governor::{Quota, RateLimiter};
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore, oneshot};
use uuid::Uuid;

use crate::app::AppState;
use crate::directory::Project;
use crate::domain::crypto::{SecretVerifier, sha256};
use crate::domain::ids::ProjectId;
use crate::error::Error;
use crate::metrics::Metrics;

/// Most verified credentials remembered. Only credentials that matched an active secret are
/// remembered, so refusals can neither fill this nor flush it; past the bound (more valid
/// secrets than this), one remembered entry is dropped for each new one.
const MAX_REMEMBERED: usize = 100_000;
/// How long a caller waits for an argon2 slot before being told to retry.
const ARGON2_WAIT: Duration = Duration::from_secs(2);

/// The verification of one set of credentials: the secret row they matched, or `None`.
type Verdict = Arc<OnceCell<Option<Uuid>>>;

type Limiter<K> = governor::DefaultKeyedRateLimiter<K>;

pub struct CallerCache {
    /// sha256(project_id ":" secret) → the secret row those credentials matched.
    verified: Mutex<HashMap<[u8; 32], Uuid>>,
    /// Verifications under way. Requests presenting the same credentials while one runs wait
    /// for it instead of starting their own, so a burst of new connections costs one argon2
    /// run, not one each. Removed once settled: bounded by the requests in flight.
    pending: Mutex<HashMap<[u8; 32], Verdict>>,
    /// Verifications (argon2 runs) allowed per (client address, project) and per project, so
    /// that one client, or a crowd aimed at one project, cannot take every argon2 slot.
    per_client: Limiter<(IpAddr, Uuid)>,
    per_project: Limiter<Uuid>,
    /// Bounds how many argon2 verifications run at once, so wrong secrets cannot make the
    /// server hash (and hold argon2's memory) without limit: one permit per argon2 thread.
    argon2: Arc<Semaphore>,
    threads: Argon2Threads,
}

fn per_minute(n: u32) -> Quota {
    let n = NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN);
    // A quarter of a minute's allowance may come at once.
    let burst = NonZeroU32::new((n.get() / 4).max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(n).allow_burst(burst)
}

impl CallerCache {
    pub fn new(concurrency: usize, per_client: u32, per_project: u32) -> Self {
        let concurrency = concurrency.max(1);
        Self {
            verified: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            per_client: RateLimiter::keyed(per_minute(per_client)),
            per_project: RateLimiter::keyed(per_minute(per_project)),
            argon2: Arc::new(Semaphore::new(concurrency)),
            threads: Argon2Threads::start(concurrency),
        }
    }

    fn remembered(&self, key: &[u8; 32]) -> Option<Uuid> {
        let map = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key).copied()
    }

    fn remember(&self, key: [u8; 32], secret: Uuid) {
        let mut map = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_REMEMBERED
            && !map.contains_key(&key)
            && let Some(old) = map.keys().next().copied()
        {
            map.remove(&old);
        }
        map.insert(key, secret);
    }

    fn forget_verified(&self, key: &[u8; 32]) {
        let mut map = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(key);
    }

    /// The (possibly still running) verification of these credentials.
    fn pending(&self, key: [u8; 32]) -> Verdict {
        let mut map = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(key).or_default().clone()
    }

    /// Drops a settled verification, unless a newer one has replaced it meanwhile.
    fn settled(&self, key: &[u8; 32], verdict: &Verdict) {
        let mut map = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(key).is_some_and(|v| Arc::ptr_eq(v, verdict)) {
            map.remove(key);
        }
    }

    /// Takes one verification from the caller's and the project's allowances; the error is
    /// a 429 saying when to retry.
    fn admit(&self, client: IpAddr, project: Uuid) -> Result<(), Error> {
        let clock = governor::clock::DefaultClock::default();
        if self.per_client.len() > 10_000 {
            self.per_client.retain_recent();
        }
        if self.per_project.len() > 10_000 {
            self.per_project.retain_recent();
        }
        let refused = self
            .per_client
            .check_key(&(client, project))
            .err()
            .or_else(|| self.per_project.check_key(&project).err());
        match refused {
            None => Ok(()),
            Some(not_until) => {
                let wait = not_until.wait_time_from(clock.now());
                Err(Error::TooManyRequests(wait.as_secs().max(1)))
            }
        }
    }
}

/// The address failed verifications are counted against: IPv6 clients by their /64, which
/// one host typically holds whole.
fn client_address(parts: &Parts) -> IpAddr {
    match parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
    {
        Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(
                u128::from(v6) & 0xffff_ffff_ffff_ffff_0000_0000_0000_0000,
            )),
        },
        Some(v4) => v4,
        // In-process callers (tests) have no address.
        None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    }
}

/// The authenticated caller's project.
pub struct Caller(pub Arc<Project>);

impl FromRequestParts<AppState> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let (project_id, secret) = basic_credentials(parts).ok_or(Error::Unauthorized)?;
        // Unknown projects cost no argon2 run.
        let id: ProjectId = project_id.parse().map_err(|_| Error::Unauthorized)?;
        let project = state
            .directory
            .get(id.uuid)
            .filter(|p| p.id == id)
            .ok_or(Error::Unauthorized)?;
        let mut input = Vec::with_capacity(project_id.len() + secret.len() + 1);
        input.extend_from_slice(project_id.as_bytes());
        input.push(b':');
        input.extend_from_slice(secret.as_bytes());
        let key = sha256(&input);
        let active = |secret_id: Uuid| project.secrets.iter().any(|(s, _)| *s == secret_id);

        // A remembered match holds only while that secret is active (revocation reaches the
        // directory on its next refresh).
        if let Some(secret_id) = state.callers.remembered(&key) {
            if active(secret_id) {
                Metrics::inc(&state.metrics.caller_cache_hits);
                super::request_id::set_project(project_id);
                return Ok(Caller(project));
            }
            state.callers.forget_verified(&key);
            return Err(Error::Unauthorized);
        }

        let client = client_address(parts);
        let verdict = state.callers.pending(key);
        let outcome = verdict
            .get_or_try_init(|| async {
                state
                    .callers
                    .admit(client, project.id.uuid)
                    .inspect_err(|_| {
                        Metrics::inc(&state.metrics.caller_rate_limited);
                    })?;
                verify(state, &project, secret).await
            })
            .await
            .copied();
        state.callers.settled(&key, &verdict);
        match outcome? {
            Some(secret_id) if active(secret_id) => {
                state.callers.remember(key, secret_id);
                super::request_id::set_project(project_id);
                Ok(Caller(project))
            }
            _ => {
                Metrics::inc(&state.metrics.caller_refusals);
                Err(Error::Unauthorized)
            }
        }
    }
}

/// Checks `secret` with argon2id against the project's active secrets, off the async
/// workers and at most `argon2_concurrency` at a time; 429 after waiting too long for a slot.
async fn verify(
    state: &AppState,
    project: &Project,
    secret: String,
) -> Result<Option<Uuid>, Error> {
    let permit = tokio::time::timeout(ARGON2_WAIT, state.callers.argon2.clone().acquire_owned())
        .await
        .map_err(|_| {
            Metrics::inc(&state.metrics.argon2_slot_timeouts);
            Error::TooManyRequests(1)
        })?
        .map_err(|_| Error::ServiceUnavailable)?;
    Metrics::inc(&state.metrics.caller_argon2_runs);
    let candidates = project.secrets.clone();
    let (reply, answer) = oneshot::channel();
    let job: Job = Box::new(move |verifier| {
        let matched = candidates
            .into_iter()
            .find(|(_, phc)| verifier.verify(&secret, phc))
            .map(|(id, _)| id);
        let _ = reply.send(matched);
    });
    state.callers.threads.run(job, permit)?;
    answer.await.map_err(Error::internal)
}

type Job = Box<dyn FnOnce(&mut SecretVerifier) + Send>;

/// How long an argon2 thread keeps its work area (7 MiB) after its last verification.
const ARGON2_IDLE: Duration = Duration::from_secs(5);

/// A fixed set of threads for argon2, each with its own work area, rather than tokio's
/// blocking pool. Each verification needs its memory cost at once (7 MiB; 19 MiB for the
/// crate's default), and run on whichever pool thread was free it left such blocks behind in
/// the allocator of every thread it touched: a burst of wrong secrets grew the process past
/// 450 MiB. Here memory is bounded by the thread count, and
/// each thread hands its area back after a few idle seconds. Each thread has its own queue
/// (so each can notice its own idleness); the most recently used idle thread gets the next
/// job, so under light use one area is kept warm and the others are released.
struct Argon2Threads {
    queues: Vec<mpsc::Sender<(Job, OwnedSemaphorePermit)>>,
    idle: Arc<Mutex<Vec<usize>>>,
}

impl Argon2Threads {
    /// Starts `n` threads; they end when this is dropped (their queues close).
    fn start(n: usize) -> Self {
        let idle = Arc::new(Mutex::new((0..n).rev().collect::<Vec<_>>()));
        let queues = (0..n)
            .map(|i| {
                let (queue, jobs) = mpsc::channel::<(Job, OwnedSemaphorePermit)>();
                let idle = idle.clone();
                std::thread::Builder::new()
                    .name(format!("argon2-{i}"))
                    .spawn(move || {
                        let mut verifier = SecretVerifier::default();
                        loop {
                            match jobs.recv_timeout(ARGON2_IDLE) {
                                Ok((job, permit)) => {
                                    job(&mut verifier);
                                    // Back on the idle list before the permit frees a slot.
                                    idle.lock().unwrap_or_else(|e| e.into_inner()).push(i);
                                    drop(permit);
                                }
                                Err(mpsc::RecvTimeoutError::Timeout) => verifier.release(),
                                Err(mpsc::RecvTimeoutError::Disconnected) => return,
                            }
                        }
                    })
                    .unwrap_or_else(|e| panic!("argon2 thread {i} cannot be started: {e}"));
                queue
            })
            .collect();
        Self { queues, idle }
    }

    /// Hands `job` to an idle thread; `permit` (one per thread) guarantees there is one.
    fn run(&self, job: Job, permit: OwnedSemaphorePermit) -> Result<(), Error> {
        let i = self
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .ok_or(Error::ServiceUnavailable)?;
        self.queues[i]
            .send((job, permit))
            .map_err(|_| Error::ServiceUnavailable)
    }
}

fn basic_credentials(parts: &Parts) -> Option<(String, String)> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, pass) = decoded.split_once(':')?;
    Some((user.to_string(), pass.to_string()))
}
