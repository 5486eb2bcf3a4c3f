//! Caller authentication: HTTP Basic `project_id:secret`, checked with argon2id once per
//! secret per process and remembered by a fast hash of the presented value.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore, oneshot};
use uuid::Uuid;

use crate::app::AppState;
use crate::directory::Project;
use crate::domain::crypto::{SecretVerifier, sha256};
use crate::domain::ids::ProjectId;
use crate::error::Error;
use crate::metrics::Metrics;

/// Remembered verifications are forgotten wholesale past this many (a bound on memory that
/// a stream of distinct valid secrets could otherwise grow).
const MAX_REMEMBERED: usize = 10_000;
/// How long a caller waits for an argon2 slot before being told to retry.
const ARGON2_WAIT: Duration = Duration::from_secs(2);

/// The verification of one set of credentials: the secret row they matched, or `None`.
type Verdict = Arc<OnceCell<Option<Uuid>>>;

pub struct CallerCache {
    /// sha256(project_id ":" secret) → the verification of those credentials: the secret row
    /// they matched, or `None`. Requests presenting the same credentials while it runs wait
    /// for it instead of starting their own, so a burst of new connections costs one argon2
    /// run, not one each. Refusals are forgotten once settled (a secret added later must be
    /// able to match).
    verdicts: Mutex<HashMap<[u8; 32], Verdict>>,
    /// Bounds how many argon2 verifications run at once, so wrong secrets cannot make the
    /// server hash (and hold argon2's memory) without limit: one permit per argon2 thread.
    argon2: Arc<Semaphore>,
    threads: Argon2Threads,
}

impl CallerCache {
    pub fn new(concurrency: usize) -> Self {
        let concurrency = concurrency.max(1);
        Self {
            verdicts: Mutex::new(HashMap::new()),
            argon2: Arc::new(Semaphore::new(concurrency)),
            threads: Argon2Threads::start(concurrency),
        }
    }

    /// The (possibly still running) verification of these credentials.
    fn verdict(&self, key: [u8; 32]) -> Verdict {
        let mut map = self.verdicts.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_REMEMBERED && !map.contains_key(&key) {
            map.clear();
        }
        map.entry(key).or_default().clone()
    }

    /// Drops a settled verdict, unless a newer one has replaced it meanwhile.
    fn forget(&self, key: &[u8; 32], verdict: &Verdict) {
        let mut map = self.verdicts.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(key).is_some_and(|v| Arc::ptr_eq(v, verdict)) {
            map.remove(key);
        }
    }
}

/// The authenticated caller's project.
pub struct Caller(pub Arc<Project>);

impl FromRequestParts<AppState> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let (project_id, secret) = basic_credentials(parts).ok_or(Error::Unauthorized)?;
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

        let verdict = state.callers.verdict(key);
        let matched = *verdict
            .get_or_try_init(|| verify(state, &project, secret))
            .await?;
        // A remembered match holds only while that secret is active (revocation reaches the
        // directory on its next refresh).
        match matched {
            Some(secret_id) if project.secrets.iter().any(|(s, _)| *s == secret_id) => {
                Ok(Caller(project))
            }
            _ => {
                state.callers.forget(&key, &verdict);
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
            Metrics::inc(&state.metrics.argon2_rejections);
            Error::TooManyRequests(1)
        })?
        .map_err(|_| Error::ServiceUnavailable)?;
    Metrics::inc(&state.metrics.argon2_verifications);
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
