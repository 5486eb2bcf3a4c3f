//! Embeddable magic-link tokens, stored as SHA-256 only and consumed atomically.

use uuid::Uuid;

use super::Db;
use crate::with_db;

pub async fn insert(
    db: &Db,
    hash: &[u8; 32],
    id: Uuid,
    project: Uuid,
    user: Uuid,
    now: i64,
    expires_at: i64,
) -> sqlx::Result<()> {
    with_db!(db, pool => sqlx::query(
        "INSERT INTO magic_links (token_hash, id, project_id, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&hash[..])
    .bind(id)
    .bind(project)
    .bind(user)
    .bind(now)
    .bind(expires_at)
    .execute(pool)
    .await
    .map(|_| ()))
}

/// The user of a token that is still usable (unknown, used, expired or another project's:
/// `None`), without spending it.
pub async fn usable_for(
    db: &Db,
    project: Uuid,
    hash: &[u8; 32],
    now: i64,
) -> sqlx::Result<Option<Uuid>> {
    with_db!(db, pool => sqlx::query_scalar(
        "SELECT user_id FROM magic_links
         WHERE token_hash = $1 AND project_id = $2 AND used_at IS NULL AND expires_at > $3",
    )
    .bind(&hash[..])
    .bind(project)
    .bind(now)
    .fetch_optional(pool)
    .await)
}

/// Makes a link consumed at `used_at` usable again: the request that spent it was refused
/// before it wrote anything.
pub async fn release(db: &Db, project: Uuid, id: Uuid, used_at: i64) -> sqlx::Result<()> {
    with_db!(db, pool => sqlx::query(
        "UPDATE magic_links SET used_at = NULL WHERE id = $1 AND project_id = $2 AND used_at = $3",
    )
    .bind(id)
    .bind(project)
    .bind(used_at)
    .execute(pool)
    .await
    .map(|_| ()))
}

/// Marks the token used and returns `(embedded id, user id)`; `None` when it is unknown, used,
/// expired or another project's. One statement, so two racing callers cannot both win.
pub async fn consume(
    db: &Db,
    project: Uuid,
    hash: &[u8; 32],
    now: i64,
) -> sqlx::Result<Option<(Uuid, Uuid)>> {
    with_db!(db, pool => sqlx::query_as(
        "UPDATE magic_links SET used_at = $3
         WHERE token_hash = $1 AND project_id = $2 AND used_at IS NULL AND expires_at > $3
         RETURNING id, user_id",
    )
    .bind(&hash[..])
    .bind(project)
    .bind(now)
    .fetch_optional(pool)
    .await)
}
