//! Session revocations and the feed they publish: ending a session and recording its event
//! happen in one transaction, so the feed holds exactly the sessions that were ended.

use uuid::Uuid;

use super::{Db, Tx};
use crate::domain::keys::JWT_LIFETIME_SECONDS;
use crate::with_tx;

/// Why a session stopped being valid (the feed's `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Revoked by id, token or JWT.
    Revoked,
    /// Revoked with every session of its user (`revoke` by `user_id`).
    UserSessionsRevoked,
    UserDeleted,
    IdleTimeout,
    AbsoluteLifetime,
    /// Its user started more sessions than `server.max_sessions_per_user` allows; the oldest
    /// went.
    SessionLimit,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Revoked => "revoked",
            Reason::UserSessionsRevoked => "user_sessions_revoked",
            Reason::UserDeleted => "user_deleted",
            Reason::IdleTimeout => "idle_timeout",
            Reason::AbsoluteLifetime => "absolute_lifetime",
            Reason::SessionLimit => "session_limit",
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Event {
    pub cursor: i64,
    pub session_id: Uuid,
    pub revoked_at: i64,
    pub reason: String,
    pub jwt_expires_by: i64,
}

/// Postgres advisory lock held by every transaction that writes events: cursors (a sequence)
/// are then handed out in commit order, so a reader that has seen cursor N never later meets
/// a smaller one committed behind it. SQLite serialises writers anyway.
const FEED_LOCK: i64 = 726_583_413;

async fn begin(db: &Db) -> sqlx::Result<Tx> {
    match db {
        Db::Postgres(pg) => {
            let mut t = pg.pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(FEED_LOCK)
                .execute(&mut *t)
                .await?;
            Ok(Tx::Postgres(t))
        }
        // IMMEDIATE: these transactions may read before they write, and a deferred one
        // that does is refused at once (SQLITE_BUSY_SNAPSHOT) instead of waiting its turn.
        Db::Sqlite(pool) => Ok(Tx::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?)),
    }
}

/// Events written by one statement: a user's many sessions ended at once cost a statement
/// per this many, not a round trip each, while the transaction holds the feed's lock
/// (5 parameters a row: well within either backend's limit).
const EVENTS_PER_STATEMENT: usize = 500;

/// Records the events of the sessions `ended` (id, expires_at) and returns the newest cursor.
async fn record(
    tx: &mut Tx,
    project: Uuid,
    ended: &[(Uuid, i64)],
    now: i64,
    reason: Reason,
) -> sqlx::Result<Option<i64>> {
    let mut newest = None;
    for chunk in ended.chunks(EVENTS_PER_STATEMENT) {
        let cursors: Vec<i64> = with_tx!(tx, c => {
            let mut insert = sqlx::QueryBuilder::new(
                "INSERT INTO revocations (project_id, session_id, revoked_at, reason, jwt_expires_by) ",
            );
            insert.push_values(chunk, |mut row, (session, expires_at)| {
                // No JWT of the session outlives this: each was minted before now and lives
                // at most five minutes, never past the session's expiry.
                let jwt_expires_by = (now + JWT_LIFETIME_SECONDS).min(*expires_at);
                row.push_bind(project)
                    .push_bind(*session)
                    .push_bind(now)
                    .push_bind(reason.as_str())
                    .push_bind(jwt_expires_by);
            });
            insert.push(" RETURNING cursor");
            insert.build_query_scalar().fetch_all(&mut *c).await?
        });
        newest = newest.max(cursors.into_iter().max());
    }
    Ok(newest)
}

/// Ends one session (revoked_at := now) and publishes its event; `None` when it is unknown,
/// another project's, expired or already ended. Returns the event's cursor.
pub async fn end_session(
    db: &Db,
    project: Uuid,
    session: Uuid,
    now: i64,
    reason: Reason,
) -> sqlx::Result<Option<i64>> {
    end(db, project, session, now, reason, None).await
}

/// Ends one session that the project's policy has ended: started at or before
/// `started_by` (absolute lifetime), or last accessed at or before `accessed_by` (idle
/// timeout), checked again by the statement itself, so that a touch or an extension stored
/// after the caller read the session keeps it alive. Otherwise as [`end_session`].
pub async fn end_by_policy(
    db: &Db,
    project: Uuid,
    session: Uuid,
    now: i64,
    reason: Reason,
    started_and_accessed_by: (i64, i64),
) -> sqlx::Result<Option<i64>> {
    end(
        db,
        project,
        session,
        now,
        reason,
        Some(started_and_accessed_by),
    )
    .await
}

async fn end(
    db: &Db,
    project: Uuid,
    session: Uuid,
    now: i64,
    reason: Reason,
    policy: Option<(i64, i64)>,
) -> sqlx::Result<Option<i64>> {
    let (started_by, accessed_by) = policy.unwrap_or((i64::MAX, i64::MAX));
    let mut tx = begin(db).await?;
    let ended: Vec<(Uuid, i64)> = with_tx!(&mut tx, c => sqlx::query_as(
        "UPDATE sessions SET revoked_at = $3
         WHERE id = $1 AND project_id = $2 AND revoked_at IS NULL AND expires_at > $3
           AND (started_at <= $4 OR last_accessed_at <= $5)
         RETURNING id, expires_at",
    )
    .bind(session)
    .bind(project)
    .bind(now)
    .bind(started_by)
    .bind(accessed_by)
    .fetch_all(&mut *c)
    .await?);
    let cursor = record(&mut tx, project, &ended, now, reason).await?;
    tx.commit().await?;
    Ok(cursor)
}

/// Ends every live session of a user and publishes their events; returns their ids and the
/// newest cursor.
pub async fn end_user_sessions(
    db: &Db,
    project: Uuid,
    user: Uuid,
    now: i64,
) -> sqlx::Result<(Vec<Uuid>, Option<i64>)> {
    let mut tx = begin(db).await?;
    let ended: Vec<(Uuid, i64)> = with_tx!(&mut tx, c => sqlx::query_as(
        "UPDATE sessions SET revoked_at = $3
         WHERE project_id = $1 AND user_id = $2 AND revoked_at IS NULL AND expires_at > $3
         RETURNING id, expires_at",
    )
    .bind(project)
    .bind(user)
    .bind(now)
    .fetch_all(&mut *c)
    .await?);
    let cursor = record(&mut tx, project, &ended, now, Reason::UserSessionsRevoked).await?;
    tx.commit().await?;
    Ok((ended.into_iter().map(|(id, _)| id).collect(), cursor))
}

/// Ends the live sessions of a user but the newest `keep` (by start time, then id: session
/// ids are time-ordered, so the session whose start asked for this is among the newest
/// unless `keep` others were started after it) and publishes their events; returns the
/// newest cursor. Each such statement runs under the feed's lock on a snapshot taken after
/// the last one committed, and all of them rank sessions alike: two starts that both went
/// over the limit end each session once and never more than the limit asks.
pub async fn end_beyond_newest(
    db: &Db,
    project: Uuid,
    user: Uuid,
    keep: u32,
    now: i64,
) -> sqlx::Result<Option<i64>> {
    let mut tx = begin(db).await?;
    // SQLite takes an OFFSET only after a LIMIT: the largest one, on both backends.
    let ended: Vec<(Uuid, i64)> = with_tx!(&mut tx, c => sqlx::query_as(
        "UPDATE sessions SET revoked_at = $3
         WHERE id IN (
           SELECT id FROM sessions
           WHERE project_id = $1 AND user_id = $2 AND revoked_at IS NULL AND expires_at > $3
           ORDER BY started_at DESC, id DESC
           LIMIT 9223372036854775807 OFFSET $4)
         RETURNING id, expires_at",
    )
    .bind(project)
    .bind(user)
    .bind(now)
    .bind(i64::from(keep))
    .fetch_all(&mut *c)
    .await?);
    let cursor = record(&mut tx, project, &ended, now, Reason::SessionLimit).await?;
    tx.commit().await?;
    Ok(cursor)
}

/// Deletes a user (its sessions and magic links go with it), publishing an event for each
/// session that was still live. `None` when there is no such user.
pub async fn delete_user(
    db: &Db,
    project: Uuid,
    user: Uuid,
    now: i64,
) -> sqlx::Result<Option<Option<i64>>> {
    let mut tx = begin(db).await?;
    // Postgres: the user's row is locked first. A session (or magic link) insert checks its
    // user under a key-share lock, which this one excludes: an insert that committed before
    // is seen by the select below and gets its event; one that comes after waits for this
    // transaction and then fails (the user is gone) instead of being deleted by the cascade
    // with no event. SQLite's write transaction excludes every other writer anyway.
    if let Tx::Postgres(t) = &mut tx {
        sqlx::query("SELECT 1 FROM users WHERE project_id = $1 AND id = $2 FOR UPDATE")
            .bind(project)
            .bind(user)
            .fetch_optional(&mut **t)
            .await?;
    }
    let live: Vec<(Uuid, i64)> = with_tx!(&mut tx, c => sqlx::query_as(
        "SELECT id, expires_at FROM sessions
         WHERE project_id = $1 AND user_id = $2 AND revoked_at IS NULL AND expires_at > $3",
    )
    .bind(project)
    .bind(user)
    .bind(now)
    .fetch_all(&mut *c)
    .await?);
    let deleted = with_tx!(&mut tx, c => sqlx::query("DELETE FROM users WHERE project_id = $1 AND id = $2")
        .bind(project)
        .bind(user)
        .execute(&mut *c)
        .await?
        .rows_affected());
    if deleted == 0 {
        return Ok(None);
    }
    let cursor = record(&mut tx, project, &live, now, Reason::UserDeleted).await?;
    tx.commit().await?;
    Ok(Some(cursor))
}

/// Events of `project` after `after` (all kept ones when `None`), oldest first, at most
/// `limit`.
pub async fn after(
    db: &Db,
    project: Uuid,
    after: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<Event>> {
    crate::with_db!(db, pool => sqlx::query_as(
        "SELECT cursor, session_id, revoked_at, reason, jwt_expires_by FROM revocations
         WHERE project_id = $1 AND cursor > $2 ORDER BY cursor LIMIT $3",
    )
    .bind(project)
    .bind(after.unwrap_or(0))
    .bind(limit)
    .fetch_all(pool)
    .await)
}

/// Each project's newest cursor among the events after `after`.
pub async fn heads_after(db: &Db, after: i64) -> sqlx::Result<Vec<(Uuid, i64)>> {
    crate::with_db!(db, pool => sqlx::query_as(
        "SELECT project_id, MAX(cursor) FROM revocations WHERE cursor > $1 GROUP BY project_id",
    )
    .bind(after)
    .fetch_all(pool)
    .await)
}

/// The newest cursor of any project (0 when none), and the newest deleted one: a cursor
/// older than the horizon may have missed deleted events.
pub async fn head_and_horizon(db: &Db) -> sqlx::Result<(i64, i64)> {
    let (newest, horizon): (i64, i64) = crate::with_db!(db, pool => sqlx::query_as(
        "SELECT COALESCE((SELECT MAX(cursor) FROM revocations), 0),
                (SELECT cursor FROM feed_horizon WHERE id = 1)",
    )
    .fetch_one(pool)
    .await?);
    // With every event deleted, the newest cursor handed out is the horizon.
    Ok((newest.max(horizon), horizon))
}

/// Deletes the events revoked before `cutoff` (a prefix of the feed) and moves the horizon;
/// returns how many.
pub async fn purge(db: &Db, cutoff: i64) -> sqlx::Result<u64> {
    let mut tx = begin(db).await?;
    let newest: Option<i64> = with_tx!(&mut tx, c => sqlx::query_scalar(
        "SELECT MAX(cursor) FROM revocations WHERE revoked_at < $1",
    )
    .bind(cutoff)
    .fetch_one(&mut *c)
    .await?);
    let Some(newest) = newest else {
        return Ok(0);
    };
    let n = with_tx!(&mut tx, c => sqlx::query("DELETE FROM revocations WHERE cursor <= $1")
        .bind(newest)
        .execute(&mut *c)
        .await?
        .rows_affected());
    with_tx!(&mut tx, c => sqlx::query(
        "UPDATE feed_horizon SET cursor = $1 WHERE id = 1 AND cursor < $1",
    )
    .bind(newest)
    .execute(&mut *c)
    .await
    .map(|_| ())?);
    tx.commit().await?;
    Ok(n)
}
