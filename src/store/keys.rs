//! Signing keys. Private keys arrive here already sealed; rotation steps run inside a
//! transaction that holds the project's row lock, so one instance performs each step.

use uuid::Uuid;

use super::{Db, Tx};
use crate::{with_db, with_tx};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyRow {
    pub id: Uuid,
    pub project_id: Uuid,
    pub state: String,
    pub private_key: Vec<u8>,
    pub master_key_id: String,
    pub certificate: Vec<u8>,
    pub created_at: i64,
    pub published_at: i64,
    pub signing_since: Option<i64>,
    pub retired_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

macro_rules! key_columns {
    () => {
        "id, project_id, state, private_key, master_key_id, certificate, created_at, \
         published_at, signing_since, retired_at, revoked_at"
    };
}

/// Every published key (next, current, retired) of every project.
pub async fn published(db: &Db) -> sqlx::Result<Vec<KeyRow>> {
    const SQL: &str = concat!(
        "SELECT ",
        key_columns!(),
        " FROM signing_keys WHERE state <> 'revoked' ORDER BY published_at, id"
    );
    with_db!(db, pool => sqlx::query_as(SQL).fetch_all(pool).await)
}

/// Every key of a project, revoked ones included (for operators).
pub async fn of_project(db: &Db, project: Uuid) -> sqlx::Result<Vec<KeyRow>> {
    const SQL: &str = concat!(
        "SELECT ",
        key_columns!(),
        " FROM signing_keys WHERE project_id = $1 ORDER BY published_at, id"
    );
    with_db!(db, pool => sqlx::query_as(SQL).bind(project).fetch_all(pool).await)
}

/// Takes the project's row lock for the rest of the transaction (a no-op write: on Postgres a
/// row lock, on SQLite the database write lock), then reads its ring.
pub async fn lock_ring(tx: &mut Tx, project: Uuid) -> sqlx::Result<Vec<KeyRow>> {
    const SQL: &str = concat!(
        "SELECT ",
        key_columns!(),
        " FROM signing_keys WHERE project_id = $1 AND state <> 'revoked' ORDER BY published_at, id"
    );
    with_tx!(tx, c => {
        sqlx::query("UPDATE projects SET name = name WHERE id = $1").bind(project).execute(&mut *c).await?;
        sqlx::query_as(SQL).bind(project).fetch_all(&mut *c).await
    })
}

pub async fn insert(tx: &mut Tx, k: &KeyRow) -> sqlx::Result<()> {
    with_tx!(tx, c => sqlx::query(
        "INSERT INTO signing_keys (id, project_id, state, private_key, master_key_id, certificate, created_at, published_at, signing_since)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(k.id)
    .bind(k.project_id)
    .bind(&k.state)
    .bind(&k.private_key)
    .bind(&k.master_key_id)
    .bind(&k.certificate)
    .bind(k.created_at)
    .bind(k.published_at)
    .bind(k.signing_since)
    .execute(&mut *c)
    .await
    .map(|_| ()))
}

/// `next` signs from `now`; `current`, if given, retires. Order matters for the one-current
/// index: retire first.
pub async fn promote(tx: &mut Tx, next: Uuid, current: Option<Uuid>, now: i64) -> sqlx::Result<()> {
    with_tx!(tx, c => {
        if let Some(cur) = current {
            sqlx::query("UPDATE signing_keys SET state = 'retired', retired_at = $2 WHERE id = $1 AND state = 'current'")
                .bind(cur)
                .bind(now)
                .execute(&mut *c)
                .await?;
        }
        sqlx::query("UPDATE signing_keys SET state = 'current', signing_since = $2 WHERE id = $1 AND state = 'next'")
            .bind(next)
            .bind(now)
            .execute(&mut *c)
            .await
            .map(|_| ())
    })
}

pub async fn delete(tx: &mut Tx, id: Uuid) -> sqlx::Result<()> {
    with_tx!(tx, c => sqlx::query("DELETE FROM signing_keys WHERE id = $1 AND state = 'retired'")
        .bind(id)
        .execute(&mut *c)
        .await
        .map(|_| ()))
}

/// Revokes a key at once; returns its state before, or `None` when unknown or already revoked.
pub async fn revoke(
    tx: &mut Tx,
    project: Uuid,
    id: Uuid,
    now: i64,
) -> sqlx::Result<Option<String>> {
    with_tx!(tx, c => {
        let before: Option<(String,)> = sqlx::query_as(
            "SELECT state FROM signing_keys WHERE id = $1 AND project_id = $2 AND state <> 'revoked'",
        )
        .bind(id)
        .bind(project)
        .fetch_optional(&mut *c)
        .await?;
        if before.is_some() {
            sqlx::query("UPDATE signing_keys SET state = 'revoked', revoked_at = $2 WHERE id = $1")
                .bind(id)
                .bind(now)
                .execute(&mut *c)
                .await?;
        }
        Ok(before.map(|(s,)| s))
    })
}

/// Replaces a key's sealed private key (master-key rotation).
pub async fn reseal(
    db: &Db,
    id: Uuid,
    private_key: &[u8],
    master_key_id: &str,
) -> sqlx::Result<()> {
    with_db!(db, pool => sqlx::query("UPDATE signing_keys SET private_key = $2, master_key_id = $3 WHERE id = $1")
        .bind(id)
        .bind(private_key)
        .bind(master_key_id)
        .execute(pool)
        .await
        .map(|_| ()))
}

/// Fingerprints of the master keys in use, oldest first.
pub async fn master_keys_in_use(db: &Db) -> sqlx::Result<Vec<String>> {
    crate::with_db!(db, pool => sqlx::query_scalar("SELECT fingerprint FROM master_keys ORDER BY seq")
        .fetch_all(pool)
        .await)
}

/// Records `fingerprint` as the newest master key in use (no-op if already known).
pub async fn record_master_key(db: &Db, fingerprint: &str, now: i64) -> sqlx::Result<()> {
    crate::with_db!(db, pool => sqlx::query(
        "INSERT INTO master_keys (fingerprint, first_used_at) VALUES ($1, $2) ON CONFLICT (fingerprint) DO NOTHING",
    )
    .bind(fingerprint)
    .bind(now)
    .execute(pool)
    .await
    .map(|_| ()))
}
