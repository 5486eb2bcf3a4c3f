//! Persistence: one `Db` over Postgres or SQLite, one SQL text per query, embedded migrations.

mod direct;
pub mod keys;
pub mod lookups;
pub mod magic_links;
pub mod projects;
pub mod retention;
pub mod revocations;
pub mod sessions;
pub mod token_profiles;
pub mod users;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

pub use direct::Direct;
pub use lookups::Lookups;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

/// The database, whichever it is. Queries are written once and expanded against either pool
/// by [`with_db!`]; `$1..$n` placeholders work in both dialects.
#[derive(Clone, Debug)]
pub enum Db {
    Postgres(Pg),
    Sqlite(SqlitePool),
}

/// Postgres: sqlx's pool, and a set of connections kept apart for authenticate's statements
/// (see [`direct`]).
#[derive(Clone, Debug)]
pub struct Pg {
    pub pool: PgPool,
    pub direct: Arc<Direct>,
    /// Session reads, coalesced under load (see [`lookups`]).
    pub lookups: Arc<Lookups>,
    /// One connection for the write-behind `last_accessed_at` touches.
    pub touches: Arc<Direct>,
}

/// libpq's default `sslmode`, `prefer`, encrypts whenever the server offers TLS. Over a
/// loopback connection that protects nothing (the bytes never leave the host, and whoever
/// can read them there can read either process's memory) and costs every statement a TLS
/// record at both ends: 11 % of authenticate's throughput on the benchmark machine
/// (bench/README.md). So when neither the URL nor `PGSSLMODE` names an `sslmode` and the
/// host is a loopback address or `localhost`, TLS is off. An `sslmode` that is given is
/// always obeyed, on any host.
fn plain_on_loopback(url: &str, options: PgConnectOptions) -> PgConnectOptions {
    let explicit = url.split_once('?').is_some_and(|(_, query)| {
        query.split('&').any(|pair| {
            let key = pair.split_once('=').map_or(pair, |(k, _)| k);
            matches!(key, "sslmode" | "ssl-mode")
        })
    }) || std::env::var_os("PGSSLMODE").is_some();
    if explicit || !is_loopback(options.get_host()) {
        return options;
    }
    tracing::debug!("Postgres on a loopback address and no sslmode given: TLS off");
    options.ssl_mode(PgSslMode::Disable)
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Runs `$body` with `$pool` bound to the concrete pool (or transaction) of either backend.
#[macro_export]
macro_rules! with_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::store::Db::Postgres($crate::store::Pg { pool: $pool, .. }) => $body,
            $crate::store::Db::Sqlite($pool) => $body,
        }
    };
}

/// A transaction on either backend.
pub enum Tx {
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
}

#[macro_export]
macro_rules! with_tx {
    ($tx:expr, $conn:ident => $body:expr) => {
        match $tx {
            $crate::store::Tx::Postgres(t) => {
                let $conn = &mut **t;
                $body
            }
            $crate::store::Tx::Sqlite(t) => {
                let $conn = &mut **t;
                $body
            }
        }
    };
}

impl Tx {
    pub async fn commit(self) -> sqlx::Result<()> {
        match self {
            Tx::Postgres(t) => t.commit().await,
            Tx::Sqlite(t) => t.commit().await,
        }
    }
}

/// Migrations, embedded; the same names in both directories (a test checks it).
const MIGRATIONS: &[(&str, &str, &str)] = &[
    (
        "0001_init",
        include_str!("../../migrations/postgres/0001_init.sql"),
        include_str!("../../migrations/sqlite/0001_init.sql"),
    ),
    (
        "0002_sessions_fillfactor",
        include_str!("../../migrations/postgres/0002_sessions_fillfactor.sql"),
        include_str!("../../migrations/sqlite/0002_sessions_fillfactor.sql"),
    ),
    (
        "0003_secret_order",
        include_str!("../../migrations/postgres/0003_secret_order.sql"),
        include_str!("../../migrations/sqlite/0003_secret_order.sql"),
    ),
    (
        "0004_rbac",
        include_str!("../../migrations/postgres/0004_rbac.sql"),
        include_str!("../../migrations/sqlite/0004_rbac.sql"),
    ),
    (
        "0005_retention",
        include_str!("../../migrations/postgres/0005_retention.sql"),
        include_str!("../../migrations/sqlite/0005_retention.sql"),
    ),
    (
        "0006_master_keys",
        include_str!("../../migrations/postgres/0006_master_keys.sql"),
        include_str!("../../migrations/sqlite/0006_master_keys.sql"),
    ),
    (
        "0007_bootstrap_secret",
        include_str!("../../migrations/postgres/0007_bootstrap_secret.sql"),
        include_str!("../../migrations/sqlite/0007_bootstrap_secret.sql"),
    ),
    (
        "0008_revocations",
        include_str!("../../migrations/postgres/0008_revocations.sql"),
        include_str!("../../migrations/sqlite/0008_revocations.sql"),
    ),
    (
        "0009_attest",
        include_str!("../../migrations/postgres/0009_attest.sql"),
        include_str!("../../migrations/sqlite/0009_attest.sql"),
    ),
];

impl Db {
    /// `max_connections` in all (at least 3): half for authenticate's statements, one for
    /// the write-behind touches, the rest for the pool.
    pub async fn connect_postgres(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> sqlx::Result<Self> {
        let options = plain_on_loopback(url, PgConnectOptions::from_str(url)?);
        let direct = (max_connections / 2).max(1);
        // The pool keeps sqlx's test of each connection before use: the statements that go
        // through it are not all safe to retry, and a restarted server must cost no request.
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.saturating_sub(direct + 1).max(1))
            .min_connections(1)
            .acquire_timeout(acquire_timeout)
            .connect_with(options.clone())
            .await?;
        // The write-behind touches' own connection, outside sqlx's pool (no ping around each
        // flush; the touch is idempotent, so `Direct` may retry it on a new connection), with
        // `synchronous_commit` off for the whole session: a touch may be lost in a crash and
        // nothing else is written there. A flush is one statement, one round trip.
        let touches = Arc::new(Direct::new(
            options.clone().options([("synchronous_commit", "off")]),
            1,
            acquire_timeout,
        ));
        let direct = Arc::new(Direct::new(options, direct, acquire_timeout));
        Ok(Db::Postgres(Pg {
            pool,
            lookups: Arc::new(Lookups::new(direct.clone())),
            direct,
            touches,
        }))
    }

    pub async fn connect_sqlite(
        path: &Path,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> sqlx::Result<Self> {
        // WAL lets readers run beside the writer. synchronous=FULL makes every commit durable
        // before we answer (creates, extensions and revocations must survive a power cut);
        // under WAL that costs one fsync of the log per commit, not a rewrite of the file.
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        // Each SQLite connection is a thread with its own page cache; on two cores, four
        // readers (writes serialise on SQLite's lock anyway) keep the CPUs busy and the
        // memory small.
        // No ping before each use: an in-process connection cannot be cut, and the ping is
        // a message to the connection's thread and back.
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections.clamp(1, 4))
            .acquire_timeout(acquire_timeout.max(Duration::from_secs(5)))
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        Ok(Db::Sqlite(pool))
    }

    /// Session reads by token or id and the statements sent for them (Postgres coalesces
    /// concurrent reads; on SQLite every read is its own statement and nothing is counted).
    pub fn session_read_stats(&self) -> Option<(u64, u64)> {
        match self {
            Db::Postgres(pg) => Some(pg.lookups.stats()),
            Db::Sqlite(_) => None,
        }
    }

    /// Connections by kind (`pool`, `direct`): (in use, idle).
    pub fn connection_stats(&self) -> Vec<(&'static str, usize, usize)> {
        match self {
            Db::Postgres(pg) => {
                let idle = pg.pool.num_idle();
                let (direct_busy, direct_idle) = pg.direct.stats();
                let (touch_busy, touch_idle) = pg.touches.stats();
                vec![
                    ("pool", (pg.pool.size() as usize).saturating_sub(idle), idle),
                    ("direct", direct_busy, direct_idle),
                    ("touches", touch_busy, touch_idle),
                ]
            }
            Db::Sqlite(pool) => {
                let idle = pool.num_idle();
                vec![("pool", (pool.size() as usize).saturating_sub(idle), idle)]
            }
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Db::Postgres(_) => "postgres",
            Db::Sqlite(_) => "sqlite",
        }
    }

    pub async fn begin(&self) -> sqlx::Result<Tx> {
        Ok(match self {
            Db::Postgres(pg) => Tx::Postgres(pg.pool.begin().await?),
            Db::Sqlite(p) => Tx::Sqlite(p.begin().await?),
        })
    }

    pub async fn ping(&self) -> sqlx::Result<()> {
        with_db!(self, p => sqlx::query("SELECT 1").execute(p).await.map(|_| ()))
    }

    /// Applies pending migrations. Replicas starting together on Postgres serialise on an
    /// advisory lock held for the transaction, so each migration runs once.
    pub async fn migrate(&self) -> sqlx::Result<Vec<&'static str>> {
        let mut tx = self.begin().await?;
        if let Tx::Postgres(t) = &mut tx {
            sqlx::query("SELECT pg_advisory_xact_lock(726583411)")
                .execute(&mut **t)
                .await?;
        }
        with_tx!(&mut tx, c => {
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS hallpass_migrations (name text PRIMARY KEY, applied_at bigint NOT NULL)",
            )
            .execute(&mut *c)
            .await
            .map(|_| ())?
        });
        let mut applied = Vec::new();
        for (name, postgres, sqlite) in MIGRATIONS {
            let done: Option<(String,)> = with_tx!(&mut tx, c => {
                sqlx::query_as("SELECT name FROM hallpass_migrations WHERE name = $1")
                    .bind(*name)
                    .fetch_optional(&mut *c)
                    .await?
            });
            if done.is_some() {
                continue;
            }
            match &mut tx {
                Tx::Postgres(t) => sqlx::raw_sql(*postgres)
                    .execute(&mut **t)
                    .await
                    .map(|_| ())?,
                Tx::Sqlite(t) => sqlx::raw_sql(*sqlite).execute(&mut **t).await.map(|_| ())?,
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            with_tx!(&mut tx, c => {
                sqlx::query("INSERT INTO hallpass_migrations (name, applied_at) VALUES ($1, $2)")
                    .bind(*name)
                    .bind(now)
                    .execute(&mut *c)
                    .await
                    .map(|_| ())?
            });
            applied.push(*name);
        }
        tx.commit().await?;
        Ok(applied)
    }

    pub async fn close(&self) {
        with_db!(self, p => p.close().await)
    }
}

/// Whether an error is a unique-constraint violation (constraint names exist only on
/// Postgres, so callers decide from context which one it was).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// A row names another that is gone: for a session or a magic link, its user was deleted
/// while the request ran.
pub fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_foreign_key_violation())
}

/// The error of an insert that names a user: `user_not_found` when the user was deleted
/// meanwhile (a 404, as if the request had come after the delete), else the database's.
pub fn user_gone(e: sqlx::Error) -> crate::error::Error {
    if is_foreign_key_violation(&e) {
        crate::error::Error::UserNotFound
    } else {
        e.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_is_off_by_default_only_on_loopback() {
        // PGSSLMODE would count as explicit; no test in this process sets it.
        let mode = |url: &str| {
            let options = PgConnectOptions::from_str(url).unwrap();
            format!("{:?}", plain_on_loopback(url, options).get_ssl_mode())
        };
        for url in [
            "postgres://postgres@127.0.0.1:5432/db",
            "postgres://postgres@127.0.0.2/db",
            "postgres://postgres@localhost/db",
            "postgres://postgres@LOCALHOST:5433/db?application_name=x",
            "postgres://postgres@[::1]:5432/db",
        ] {
            assert_eq!(mode(url), "Disable", "{url}");
        }
        for url in [
            "postgres://postgres@db.internal:5432/db",
            "postgres://postgres@10.0.0.5/db",
            "postgres://postgres@localhost.example.com/db",
        ] {
            assert_eq!(mode(url), "Prefer", "{url}");
        }
        // Given, it is obeyed, on loopback too.
        assert_eq!(
            mode("postgres://postgres@127.0.0.1/db?sslmode=require"),
            "Require"
        );
        assert_eq!(
            mode("postgres://postgres@localhost/db?x=1&ssl-mode=prefer"),
            "Prefer"
        );
        assert_eq!(
            mode("postgres://postgres@db.internal/db?sslmode=verify-full"),
            "VerifyFull"
        );
    }

    #[test]
    fn migration_directories_are_in_lock_step() {
        let names = |dir: &str| {
            let mut v: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        let pg = names(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"));
        let lite = names(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"));
        assert_eq!(pg, lite);
        let embedded: Vec<String> = super::MIGRATIONS
            .iter()
            .map(|(n, _, _)| format!("{n}.sql"))
            .collect();
        assert_eq!(pg, embedded, "every migration file is embedded");
    }
}
