//! Session reads on Postgres, coalesced under load.
//!
//! Every authenticate reads one session and its user. Sent alone, each read is a round trip
//! that wakes a Postgres backend, and under load the wake-up costs more than the read: on the
//! benchmark machine one read costs Postgres about 50 µs of CPU when reads arrive one at a
//! time, 24 µs when they arrive back to back, and each further row of one `= ANY($1)`
//! statement about 6.5 µs (bench/README.md, "Profile"). So at most [`LANES`] reads are in
//! flight at once; a read that arrives while they are waits in a queue, and the next
//! statement to go takes everything queued (up to [`MAX_BATCH`]) in one statement. A quiet
//! server sends every read alone and at once: coalescing costs no latency when there is
//! nothing to coalesce with.
//!
//! Whoever takes a lane runs the statement for everyone it took and hands each waiter its
//! row, so there is no background task to feed or to lose. A waiter whose statement was
//! abandoned (its runner's request was cancelled) reads on its own; one whose statement
//! failed gets a connection-class error (a 503), and the runner, which saw the failure,
//! logs it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sqlx::postgres::PgConnection;
use tokio::sync::oneshot::error::TryRecvError;
use tokio::sync::{Semaphore, oneshot};
use uuid::Uuid;

use super::Direct;
use super::direct::Statement;
use super::sessions::{SessionKey, SessionWithUser};

/// Statements in flight at once. Two: one can be on the wire while the other's rows are
/// handed out; more would let every read go alone again.
pub const LANES: usize = 2;
/// Reads in one statement at most (each row is about a kilobyte).
pub const MAX_BATCH: usize = 64;

type Reply = Result<Option<SessionWithUser>, Failed>;

/// The shared statement failed; the runner logged why.
#[derive(Debug, Clone, Copy)]
struct Failed;

struct Waiter {
    project: Uuid,
    key: SessionKey,
    reply: oneshot::Sender<Reply>,
}

pub struct Lookups {
    direct: Arc<Direct>,
    queue: Mutex<Vec<Waiter>>,
    lanes: Semaphore,
    /// Reads asked for, and statements sent for them (`/metrics`).
    reads: AtomicU64,
    statements: AtomicU64,
}

impl std::fmt::Debug for Lookups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lookups")
            .field("free_lanes", &self.lanes.available_permits())
            .finish_non_exhaustive()
    }
}

/// A row found by a coalesced statement, with what identifies which read asked for it.
#[derive(sqlx::FromRow)]
struct Found {
    project_id: Uuid,
    token_hash: Option<Vec<u8>>,
    #[sqlx(flatten)]
    row: SessionWithUser,
}

impl Found {
    fn answers(&self, project: Uuid, key: &SessionKey) -> bool {
        self.project_id == project
            && match key {
                SessionKey::TokenHash(h) => self.token_hash.as_deref() == Some(&h[..]),
                SessionKey::Id(id) => self.row.session.session_id == *id,
            }
    }
}

impl Lookups {
    pub fn new(direct: Arc<Direct>) -> Self {
        Self {
            direct,
            queue: Mutex::new(Vec::new()),
            lanes: Semaphore::new(LANES),
            reads: AtomicU64::new(0),
            statements: AtomicU64::new(0),
        }
    }

    /// (reads asked for, statements sent for them) since the start.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.reads.load(Ordering::Relaxed),
            self.statements.load(Ordering::Relaxed),
        )
    }

    /// The session named by `key` in `project`, and its user (see
    /// [`super::sessions::get`]).
    pub async fn get(
        &self,
        project: Uuid,
        key: SessionKey,
    ) -> sqlx::Result<Option<SessionWithUser>> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let (reply, mut answer) = oneshot::channel();
        self.lock().push(Waiter {
            project,
            key,
            reply,
        });
        let deadline = tokio::time::Instant::now() + self.direct.wait();
        loop {
            let lane = tokio::select! {
                biased;
                answered = &mut answer => return self.answered(answered, project, key).await,
                lane = tokio::time::timeout_at(deadline, self.lanes.acquire()) => lane,
            };
            let _lane = lane
                .map_err(|_| sqlx::Error::PoolTimedOut)?
                .map_err(|_| sqlx::Error::PoolClosed)?;
            let batch = {
                // The oldest first; the rest waits for the next lane.
                let mut queue = self.lock();
                let n = queue.len().min(MAX_BATCH);
                queue.drain(..n).collect::<Vec<_>>()
            };
            if batch.is_empty() {
                // Ours was taken by a statement in flight: its runner answers.
                break;
            }
            // Boxed (as `single` is): the statement's future is large and runs once per
            // batch, while this future is built and moved for every read.
            let outcome = Box::pin(self.run(batch)).await;
            match (answer.try_recv(), outcome) {
                (Ok(Ok(found)), _) => return Ok(found),
                // Ours was in the statement that failed: the runner has the error itself.
                (Ok(Err(Failed)), Err(e)) => return Err(e),
                (Ok(Err(Failed)), Ok(())) => return Err(shared_failure()),
                (Err(TryRecvError::Empty), outcome) => {
                    if let Err(e) = outcome {
                        tracing::warn!(error = %e, "a coalesced session read failed");
                    }
                }
                (Err(TryRecvError::Closed), _) => return self.single(project, key).await,
            }
        }
        let answered = answer.await;
        self.answered(answered, project, key).await
    }

    async fn answered(
        &self,
        answered: Result<Reply, oneshot::error::RecvError>,
        project: Uuid,
        key: SessionKey,
    ) -> sqlx::Result<Option<SessionWithUser>> {
        match answered {
            Ok(Ok(found)) => Ok(found),
            Ok(Err(Failed)) => Err(shared_failure()),
            // The statement's runner was cancelled with it: read alone.
            Err(_) => self.single(project, key).await,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Waiter>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One read alone, as the prepared single-row statement. Boxed here, for every caller:
    /// the statement's future is large, and `get`'s future (built and moved for every read)
    /// would otherwise carry it.
    fn single(
        &self,
        project: Uuid,
        key: SessionKey,
    ) -> Pin<Box<dyn Future<Output = sqlx::Result<Option<SessionWithUser>>> + Send + '_>> {
        Box::pin(async move {
            self.statements.fetch_add(1, Ordering::Relaxed);
            self.direct
                .run(move |conn| {
                    Box::pin(async move { super::sessions::select_one(conn, project, &key).await })
                })
                .await
        })
    }

    /// Runs the statement(s) for `batch` and answers every waiter in it.
    async fn run(&self, batch: Vec<Waiter>) -> sqlx::Result<()> {
        let rows = match &batch[..] {
            [one] => self.single(one.project, one.key).await.map(|row| vec![row]),
            _ => self.many(&batch).await,
        };
        match rows {
            Ok(rows) => {
                for (w, row) in batch.into_iter().zip(rows) {
                    let _ = w.reply.send(Ok(row));
                }
                Ok(())
            }
            Err(e) => {
                for w in batch {
                    let _ = w.reply.send(Err(Failed));
                }
                Err(e)
            }
        }
    }

    /// Many reads in one statement per kind of key; the rows in `batch`'s order.
    async fn many(&self, batch: &[Waiter]) -> sqlx::Result<Vec<Option<SessionWithUser>>> {
        let mut hashes: Vec<Vec<u8>> = Vec::new();
        let mut ids: Vec<Uuid> = Vec::new();
        for w in batch {
            match w.key {
                SessionKey::TokenHash(h) => hashes.push(h.to_vec()),
                SessionKey::Id(id) => ids.push(id),
            }
        }
        hashes.sort_unstable();
        hashes.dedup();
        ids.sort_unstable();
        ids.dedup();
        let kinds = u64::from(!hashes.is_empty()) + u64::from(!ids.is_empty());
        self.statements.fetch_add(kinds, Ordering::Relaxed);
        let found = self
            .direct
            .run(move |conn| select_many(conn, hashes.clone(), ids.clone()))
            .await?;
        Ok(batch
            .iter()
            .map(|w| {
                found
                    .iter()
                    .find(|f| f.answers(w.project, &w.key))
                    .map(|f| f.row.clone())
            })
            .collect())
    }
}

/// The error of a read whose shared statement failed (the runner logged the cause): a
/// connection-class error, so the request is answered 503.
fn shared_failure() -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::other(
        "the database statement this read shared failed (see the log)",
    ))
}

/// The sessions with any of these token hashes or ids, with their users and what
/// identifies them: one statement per kind of key present.
fn select_many(
    conn: &mut PgConnection,
    hashes: Vec<Vec<u8>>,
    ids: Vec<Uuid>,
) -> Statement<'_, Vec<Found>> {
    Box::pin(async move {
        let mut found = Vec::new();
        if !hashes.is_empty() {
            found.extend(fetch(conn, super::sessions::SELECT_BY_TOKEN_HASHES, hashes).await?);
        }
        if !ids.is_empty() {
            found.extend(fetch(conn, super::sessions::SELECT_BY_IDS, ids).await?);
        }
        Ok(found)
    })
}

async fn fetch<K>(
    conn: &mut PgConnection,
    sql: &'static str,
    keys: Vec<K>,
) -> sqlx::Result<Vec<Found>>
where
    Vec<K>: for<'q> sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send,
{
    sqlx::query_as::<_, Found>(sql)
        .bind(keys)
        .fetch_all(conn)
        .await
}
