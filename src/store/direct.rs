//! Postgres connections for the statements every authenticate runs, outside sqlx's pool.
//!
//! sqlx's pool pings a connection each time one is given back (and, unless told otherwise,
//! each time one is handed out): a second round trip per query, paid by the database. These
//! connections are handed back only after their statement completed, so they are known to be
//! in a clean state and are not tested. One the server closed while it sat idle (a restart, a
//! failover) fails with an I/O error on its next use; the statement then runs once more on a
//! new connection, which is safe because the statements run here are idempotent.

use std::fmt;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use tokio::sync::Semaphore;

/// A statement's future, borrowing the connection it runs on.
pub type Statement<'c, T> = Pin<Box<dyn Future<Output = sqlx::Result<T>> + Send + 'c>>;

pub struct Direct {
    options: PgConnectOptions,
    /// How long a statement waits for a free connection, and for a new one to open.
    wait: Duration,
    size: usize,
    idle: Mutex<Vec<PgConnection>>,
    slots: Semaphore,
}

impl fmt::Debug for Direct {
    // Not derived: the connect options hold the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Direct")
            .field("free_slots", &self.slots.available_permits())
            .finish_non_exhaustive()
    }
}

impl Direct {
    /// At most `size` connections, opened when first needed.
    pub fn new(options: PgConnectOptions, size: u32, wait: Duration) -> Self {
        Self {
            options,
            wait,
            size: size.max(1) as usize,
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(size.max(1) as usize),
        }
    }

    /// How long a statement waits for a free connection.
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// Connections (in use, idle).
    pub fn stats(&self) -> (usize, usize) {
        let idle = self.idle.lock().map_or(0, |v| v.len());
        (self.size - self.slots.available_permits(), idle)
    }

    async fn connect(&self) -> sqlx::Result<PgConnection> {
        tokio::time::timeout(self.wait, self.options.connect())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
    }

    /// Runs an idempotent `statement` on one of the connections. The statement owns what it
    /// binds and borrows only the connection.
    pub async fn run<T>(
        &self,
        statement: impl for<'c> Fn(&'c mut PgConnection) -> Statement<'c, T>,
    ) -> sqlx::Result<T> {
        let _slot = tokio::time::timeout(self.wait, self.slots.acquire())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let reused = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let was_reused = reused.is_some();
        let mut conn = match reused {
            Some(conn) => conn,
            None => self.connect().await?,
        };
        let mut result = statement(&mut conn).await;
        if was_reused && matches!(&result, Err(e) if !leaves_connection_usable(e)) {
            conn = self.connect().await?;
            result = statement(&mut conn).await;
        }
        // A connection whose statement was cancelled never gets here: it is dropped (closed)
        // with the future, never given back half-read.
        if result.as_ref().err().is_none_or(leaves_connection_usable) {
            self.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(conn);
        }
        result
    }
}

/// Errors about the statement itself; the connection is fine after them. A server closing
/// the connection says so first (SQLSTATE class 57, operator intervention, e.g. 57P01 on
/// shutdown or `pg_terminate_backend`; class 08, connection exception).
fn leaves_connection_usable(e: &sqlx::Error) -> bool {
    if let sqlx::Error::Database(db) = e {
        let code = db.code();
        return !matches!(code.as_deref().and_then(|c| c.get(..2)), Some("57" | "08"));
    }
    matches!(
        e,
        sqlx::Error::RowNotFound
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::TypeNotFound { .. }
    )
}
