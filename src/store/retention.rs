//! Retention: deleting sessions and magic links that ended long enough ago, in bounded
//! batches, by one instance at a time.

use super::Db;

/// Rows deleted (or, in a dry run, that would be).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    pub sessions: u64,
    pub magic_links: u64,
}

/// Whether a purge ran, or another instance holds the purge lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done(Purged),
    Busy,
}

// A row that ended before the cutoff also began before it: the statements walk the
// never-updated start column (indexed) from a cursor, so each batch reads past a live old
// session at most once.
macro_rules! sessions_due {
    () => {
        " started_at < $1 AND started_at >= $2
          AND (expires_at < $1 OR (revoked_at IS NOT NULL AND revoked_at < $1)) "
    };
}
macro_rules! links_due {
    () => {
        " created_at < $1 AND created_at >= $2
          AND (expires_at < $1 OR (used_at IS NOT NULL AND used_at < $1)) "
    };
}
const DELETE_SESSIONS: &str = concat!(
    "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE",
    sessions_due!(),
    "ORDER BY started_at LIMIT $3) RETURNING started_at"
);
const DELETE_LINKS: &str = concat!(
    "DELETE FROM magic_links WHERE token_hash IN (SELECT token_hash FROM magic_links WHERE",
    links_due!(),
    "ORDER BY created_at LIMIT $3) RETURNING created_at"
);
const COUNT_SESSIONS: &str = concat!("SELECT COUNT(*) FROM sessions WHERE", sessions_due!());
const COUNT_LINKS: &str = concat!("SELECT COUNT(*) FROM magic_links WHERE", links_due!());

/// Postgres advisory lock key for the purge (one instance at a time).
const PURGE_LOCK: i64 = 726_583_412;

/// Deletes sessions and magic links that ended (expired, revoked, used) before `cutoff`, in
/// batches of `batch`; `progress` is called after each batch with the running totals. With
/// `dry_run`, counts instead. On Postgres, an instance that finds another purging returns
/// `Busy` at once.
pub async fn purge(
    db: &Db,
    cutoff: i64,
    batch: i64,
    dry_run: bool,
    mut progress: impl FnMut(Purged),
) -> sqlx::Result<Outcome> {
    macro_rules! run {
        ($conn:expr) => {{
            let mut total = Purged::default();
            if dry_run {
                for (statement, slot) in [
                    (COUNT_SESSIONS, &mut total.sessions),
                    (COUNT_LINKS, &mut total.magic_links),
                ] {
                    let (n,): (i64,) = sqlx::query_as(statement)
                        .bind(cutoff)
                        .bind(i64::MIN)
                        .fetch_one(&mut *$conn)
                        .await?;
                    *slot = n as u64;
                }
                progress(total);
            } else {
                for (statement, is_sessions) in [(DELETE_SESSIONS, true), (DELETE_LINKS, false)] {
                    let mut from = i64::MIN;
                    loop {
                        let rows: Vec<(i64,)> = sqlx::query_as(statement)
                            .bind(cutoff)
                            .bind(from)
                            .bind(batch)
                            .fetch_all(&mut *$conn)
                            .await?;
                        let n = rows.len() as u64;
                        if is_sessions {
                            total.sessions += n;
                        } else {
                            total.magic_links += n;
                        }
                        from = rows.iter().map(|r| r.0).max().unwrap_or(from);
                        progress(total);
                        if (rows.len() as i64) < batch {
                            break;
                        }
                    }
                }
            }
            total
        }};
    }
    match db {
        Db::Postgres(pg) => {
            // A session-level advisory lock on one connection: each batch commits on its own
            // (no long transaction), and the lock goes with the connection if we die.
            let mut conn = pg.pool.acquire().await?;
            let (locked,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
                .bind(PURGE_LOCK)
                .fetch_one(&mut *conn)
                .await?;
            if !locked {
                return Ok(Outcome::Busy);
            }
            let result: sqlx::Result<Purged> = async { Ok(run!(&mut *conn)) }.await;
            let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(PURGE_LOCK)
                .execute(&mut *conn)
                .await;
            if unlocked.is_err() {
                // The lock is held by this connection: close it rather than pool it.
                conn.detach();
            }
            result.map(Outcome::Done)
        }
        Db::Sqlite(pool) => {
            // SQLite serialises writers itself; two purges at once only repeat a count.
            let mut conn = pool.acquire().await?;
            Ok(Outcome::Done(run!(&mut *conn)))
        }
    }
}
