//! Sessions, found by token hash or id together with their user in one round trip.

use sqlx::postgres::PgConnection;
use uuid::Uuid;

use super::Db;
use super::users::UserRow;
use crate::domain::session::{ActiveBounds, Extension};
use crate::with_db;

macro_rules! session_columns {
    () => {
        "s.id AS session_id, s.started_at, s.last_accessed_at, s.expires_at, s.revoked_at, \
         s.ip_address, s.user_agent, s.authentication_factors, s.roles, s.custom_claims"
    };
}

macro_rules! select_session {
    ($key:literal) => {
        concat!(
            "SELECT ",
            session_columns!(),
            ", ",
            crate::user_columns!(),
            " FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.",
            $key,
            " = $1 AND s.project_id = $2"
        )
    };
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    pub session_id: Uuid,
    pub started_at: i64,
    pub last_accessed_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    pub ip_address: String,
    pub user_agent: String,
    /// JSON array text.
    pub authentication_factors: String,
    /// JSON array text.
    pub roles: String,
    /// JSON object text.
    pub custom_claims: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionWithUser {
    #[sqlx(flatten)]
    pub session: SessionRow,
    #[sqlx(flatten)]
    pub user: UserRow,
}

/// Stores a new session and says whether its user now has more live sessions than
/// `limit` (counted with it; sessions started by other requests at the same moment may not
/// be counted yet, so a burst can pass the limit by as many: the next start trims it).
pub async fn insert(
    db: &Db,
    project: Uuid,
    user: Uuid,
    token_hash: &[u8; 32],
    s: &SessionRow,
    limit: u32,
) -> sqlx::Result<bool> {
    // The live sessions besides the new one, counted up to `limit`: the new one makes the
    // total pass it when there are `limit` already.
    macro_rules! others {
        () => {
            "SELECT count(*) FROM (SELECT 1 FROM sessions
               WHERE project_id = $2 AND user_id = $3 AND revoked_at IS NULL AND expires_at > $5
                 AND id <> $1
               LIMIT $13) AS live"
        };
    }
    macro_rules! insert {
        () => {
            "INSERT INTO sessions (id, project_id, user_id, token_hash, started_at, last_accessed_at, expires_at,
                                   ip_address, user_agent, authentication_factors, roles, custom_claims)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        };
    }
    macro_rules! bind_all {
        ($q:expr) => {
            $q.bind(s.session_id)
                .bind(project)
                .bind(user)
                .bind(&token_hash[..])
                .bind(s.started_at)
                .bind(s.last_accessed_at)
                .bind(s.expires_at)
                .bind(&s.ip_address)
                .bind(&s.user_agent)
                .bind(&s.authentication_factors)
                .bind(&s.roles)
                .bind(&s.custom_claims)
                .bind(i64::from(limit))
        };
    }
    let others: i64 = match db {
        // One round trip: the count reads the snapshot from before the insert.
        Db::Postgres(pg) => {
            bind_all!(sqlx::query_scalar(concat!(
                "WITH inserted AS (",
                insert!(),
                " RETURNING 1) SELECT (",
                others!(),
                ") FROM inserted"
            )))
            .fetch_one(&pg.pool)
            .await?
        }
        Db::Sqlite(pool) => {
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            bind_all!(sqlx::query(insert!())).execute(&mut *tx).await?;
            let n = bind_all!(sqlx::query_scalar(others!()))
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            n
        }
    };
    Ok(others >= i64::from(limit))
}

/// How a request names a session: by its token's hash, or by id (from a verified JWT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKey {
    TokenHash([u8; 32]),
    Id(Uuid),
}

/// Reads one session by `$key` and its user on `$executor` (either backend).
macro_rules! select {
    ($key:expr, $project:expr, $executor:expr) => {
        match $key {
            SessionKey::TokenHash(h) => {
                sqlx::query_as(select_session!("token_hash"))
                    .bind(&h[..])
                    .bind($project)
                    .fetch_optional($executor)
                    .await
            }
            SessionKey::Id(id) => {
                sqlx::query_as(select_session!("id"))
                    .bind(*id)
                    .bind($project)
                    .fetch_optional($executor)
                    .await
            }
        }
    };
}

/// The session named by `key` in this project, and its user: one statement (revoked and
/// expired sessions included; the caller applies the project's policy). On Postgres, reads
/// that arrive together share a statement (see [`super::lookups`]).
pub async fn get(
    db: &Db,
    project: Uuid,
    key: &SessionKey,
) -> sqlx::Result<Option<SessionWithUser>> {
    match db {
        Db::Postgres(pg) => pg.lookups.get(project, *key).await,
        // Boxed: sqlx's query future is several kilobytes, and every layer above would
        // otherwise carry (and move) it.
        Db::Sqlite(pool) => Box::pin(async move { select!(key, project, pool) }).await,
    }
}

/// One read on a Postgres connection, alone (the prepared single-row statement).
pub(super) async fn select_one(
    conn: &mut PgConnection,
    project: Uuid,
    key: &SessionKey,
) -> sqlx::Result<Option<SessionWithUser>> {
    select!(key, project, conn)
}

/// Many reads in one statement: the sessions with any of the token hashes (`$1`, bytea[]),
/// or any of the ids, with their users and what tells which read asked for each row.
macro_rules! select_many {
    ($key:literal) => {
        concat!(
            "SELECT s.project_id, s.token_hash, ",
            session_columns!(),
            ", ",
            crate::user_columns!(),
            " FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.",
            $key,
            " = ANY($1)"
        )
    };
}
pub(super) const SELECT_BY_TOKEN_HASHES: &str = select_many!("token_hash");
pub(super) const SELECT_BY_IDS: &str = select_many!("id");

/// The session columns (as `session_columns!` names them) and the user id, for RETURNING.
macro_rules! returned_columns {
    () => {
        "id AS session_id, started_at, last_accessed_at, expires_at, revoked_at, ip_address, \
         user_agent, authentication_factors, roles, custom_claims, user_id"
    };
}

/// The update `extend` makes and the conditions it checks, in one statement text per
/// dialect and key column. Parameters: $1 key, $2 project, $3 now, $4 idle bound,
/// $5 lifetime bound, $6 wanted expiry, $7 lifetime seconds (NULL: none).
macro_rules! extend_sessions {
    ($least:literal, $key:literal, $returning:expr) => {
        concat!(
            "UPDATE sessions SET last_accessed_at = $3,
                 expires_at = CASE WHEN $7 IS NULL THEN $6 ELSE ",
            $least,
            "($6, started_at + $7) END
             WHERE ",
            $key,
            " = $1 AND project_id = $2 AND revoked_at IS NULL
               AND expires_at > $3 AND last_accessed_at > $4 AND started_at > $5
             RETURNING ",
            $returning
        )
    };
}

macro_rules! extend_postgres {
    ($key:literal) => {
        concat!(
            "WITH s AS (",
            extend_sessions!("LEAST", $key, "*"),
            ") SELECT ",
            session_columns!(),
            ", ",
            crate::user_columns!(),
            " FROM s JOIN users u ON u.id = s.user_id"
        )
    };
}

/// Touches the session named by `key` and gives it the expiry `extension` describes, if it
/// is active by `bounds`; returns it (as updated) with its user, durably written. On
/// Postgres that is one statement, the update joined to the user; SQLite has no data-
/// modifying CTEs, so there it is the update (RETURNING the session) and then a read of the
/// user (in-process, no round trips either way). `None` when no active session matched;
/// the stored `last_accessed_at` may lag a touch still pending in memory, so the caller then
/// looks again.
pub async fn extend(
    db: &Db,
    project: Uuid,
    key: &SessionKey,
    bounds: &ActiveBounds,
    extension: &Extension,
) -> sqlx::Result<Option<SessionWithUser>> {
    macro_rules! bind_rest {
        ($q:expr, $bounds:expr, $extension:expr) => {
            $q.bind(project)
                .bind($bounds.now)
                .bind($bounds.last_accessed_after)
                .bind($bounds.started_after)
                .bind($extension.wanted)
                .bind($extension.lifetime)
        };
    }
    match db {
        Db::Postgres(pg) => {
            let (key, bounds, extension) = (*key, *bounds, *extension);
            pg.direct
                .run(move |conn| {
                    Box::pin(async move {
                        let q = match &key {
                            SessionKey::TokenHash(h) => {
                                sqlx::query_as(extend_postgres!("token_hash")).bind(&h[..])
                            }
                            SessionKey::Id(id) => sqlx::query_as(extend_postgres!("id")).bind(*id),
                        };
                        bind_rest!(q, bounds, extension).fetch_optional(conn).await
                    })
                })
                .await
        }
        Db::Sqlite(pool) => {
            // One autocommit statement, so SQLite's write lock is held for the update alone;
            // the user is read after it (WAL readers do not wait for the writer).
            let q = match key {
                SessionKey::TokenHash(h) => {
                    sqlx::query_as(extend_sessions!("min", "token_hash", returned_columns!()))
                        .bind(&h[..])
                }
                SessionKey::Id(id) => {
                    sqlx::query_as(extend_sessions!("min", "id", returned_columns!())).bind(*id)
                }
            };
            let Some(Returned { session, user_id }) = bind_rest!(q, bounds, extension)
                .fetch_optional(pool)
                .await?
            else {
                return Ok(None);
            };
            let user = super::users::get(db, project, user_id).await?;
            Ok(user.map(|user| SessionWithUser { session, user }))
        }
    }
}

/// What SQLite's `UPDATE … RETURNING` gives back: the session's columns and its user's id.
#[derive(sqlx::FromRow)]
struct Returned {
    #[sqlx(flatten)]
    session: SessionRow,
    user_id: Uuid,
}

/// A user's sessions that are neither revoked nor past `expires_at`, newest first.
pub async fn live_for_user(
    db: &Db,
    project: Uuid,
    user: Uuid,
    now: i64,
) -> sqlx::Result<Vec<SessionRow>> {
    with_db!(db, pool => sqlx::query_as(concat!(
        "SELECT ", session_columns!(),
        " FROM sessions s WHERE s.project_id = $1 AND s.user_id = $2 AND s.revoked_at IS NULL AND s.expires_at > $3
          ORDER BY s.started_at DESC, s.id DESC"
    ))
    .bind(project)
    .bind(user)
    .bind(now)
    .fetch_all(pool)
    .await)
}

/// A session row held for a read-modify-write: Postgres holds its row lock (`FOR UPDATE`),
/// SQLite the database's write lock (`BEGIN IMMEDIATE`: a deferred transaction that later
/// writes can fail with SQLITE_BUSY instead of waiting). Whatever a request changes in it is
/// computed from this row and written back before the lock is released, so concurrent
/// changes apply one after another and none is lost. Dropping it rolls back.
pub struct Locked {
    tx: super::Tx,
    pub row: SessionRow,
    pub user_id: Uuid,
}

/// Locks the session `id` of `project` (revoked and expired ones included; the caller
/// applies the policy). `None` when there is no such session.
pub async fn lock(db: &Db, project: Uuid, id: Uuid) -> sqlx::Result<Option<Locked>> {
    // The dialects differ on purpose: SQLite has no row locks (`FOR UPDATE` is a syntax
    // error there), its transaction already excludes every other writer.
    const PG: &str = concat!(
        "SELECT ",
        returned_columns!(),
        " FROM sessions WHERE id = $1 AND project_id = $2 FOR UPDATE"
    );
    const LITE: &str = concat!(
        "SELECT ",
        returned_columns!(),
        " FROM sessions WHERE id = $1 AND project_id = $2"
    );
    let (tx, found): (super::Tx, Option<Returned>) = match db {
        Db::Postgres(pg) => {
            let mut tx = pg.pool.begin().await?;
            let found = sqlx::query_as(PG)
                .bind(id)
                .bind(project)
                .fetch_optional(&mut *tx)
                .await?;
            (super::Tx::Postgres(tx), found)
        }
        Db::Sqlite(pool) => {
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            let found = sqlx::query_as(LITE)
                .bind(id)
                .bind(project)
                .fetch_optional(&mut *tx)
                .await?;
            (super::Tx::Sqlite(tx), found)
        }
    };
    Ok(found.map(|Returned { session, user_id }| Locked {
        tx,
        row: session,
        user_id,
    }))
}

impl Locked {
    /// Writes what an authentication changed and releases the lock.
    pub async fn save(mut self, s: &SessionRow) -> sqlx::Result<()> {
        crate::with_tx!(&mut self.tx, c => sqlx::query(
            "UPDATE sessions SET last_accessed_at = $2, expires_at = $3, authentication_factors = $4,
                                 custom_claims = $5
             WHERE id = $1",
        )
        .bind(s.session_id)
        .bind(s.last_accessed_at)
        .bind(s.expires_at)
        .bind(&s.authentication_factors)
        .bind(&s.custom_claims)
        .execute(&mut *c)
        .await
        .map(|_| ())?);
        self.tx.commit().await
    }
}

/// Moves `last_accessed_at` forward for many sessions at once (the write-behind touch). The
/// dialects differ here, on purpose: Postgres takes the whole batch as one array parameter,
/// in one statement on the touches' own connection, which does not wait for the WAL flush
/// (a touch is allowed to be lost in a crash); SQLite has no arrays, and in-process
/// statements cost no round trip, so it runs one prepared single-row update per session in
/// one transaction.
pub async fn touch(db: &Db, ids: &[Uuid], at: i64) -> sqlx::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    const ONE: &str =
        "UPDATE sessions SET last_accessed_at = $1 WHERE id = $2 AND last_accessed_at < $1";
    match db {
        Db::Postgres(pg) => {
            pg.touches
                .run(|conn| {
                    let ids = ids.to_vec();
                    Box::pin(async move {
                        sqlx::query(
                            "UPDATE sessions SET last_accessed_at = $1 \
                             WHERE id = ANY($2) AND last_accessed_at < $1",
                        )
                        .bind(at)
                        .bind(ids)
                        .execute(conn)
                        .await
                        .map(|_| ())
                    })
                })
                .await
        }
        Db::Sqlite(pool) => {
            let mut tx = pool.begin().await?;
            for id in ids {
                sqlx::query(ONE)
                    .bind(at)
                    .bind(*id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        }
    }
}
