//! Trusted auth token profiles (for attest) and the token ids already accepted.

use uuid::Uuid;

use super::Db;
use crate::with_db;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProfileRow {
    pub id: Uuid,
    pub project_id: Uuid,
    pub issuer: String,
    pub audience: String,
    pub jwks_url: Option<String>,
    /// JSON array of PEM public keys.
    pub pem_keys: String,
    pub email_claim: String,
    pub token_id_claim: String,
    pub external_user_id_claim: Option<String>,
    pub role_ids_claim: Option<String>,
    pub jit_provisioning: bool,
    pub created_at: i64,
}

const COLUMNS: &str = "id, project_id, issuer, audience, jwks_url, pem_keys, email_claim, \
     token_id_claim, external_user_id_claim, role_ids_claim, jit_provisioning, created_at";

pub async fn insert(db: &Db, p: &ProfileRow) -> sqlx::Result<()> {
    with_db!(db, pool => sqlx::query(
        "INSERT INTO token_profiles (id, project_id, issuer, audience, jwks_url, pem_keys, email_claim,
             token_id_claim, external_user_id_claim, role_ids_claim, jit_provisioning, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(p.id)
    .bind(p.project_id)
    .bind(&p.issuer)
    .bind(&p.audience)
    .bind(&p.jwks_url)
    .bind(&p.pem_keys)
    .bind(&p.email_claim)
    .bind(&p.token_id_claim)
    .bind(&p.external_user_id_claim)
    .bind(&p.role_ids_claim)
    .bind(p.jit_provisioning)
    .bind(p.created_at)
    .execute(pool)
    .await
    .map(|_| ()))
}

pub async fn get(db: &Db, project: Uuid, id: Uuid) -> sqlx::Result<Option<ProfileRow>> {
    with_db!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM token_profiles WHERE project_id = $1 AND id = $2"
    )))
    .bind(project)
    .bind(id)
    .fetch_optional(pool)
    .await)
}

pub async fn list(db: &Db, project: Uuid) -> sqlx::Result<Vec<ProfileRow>> {
    with_db!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM token_profiles WHERE project_id = $1 ORDER BY created_at, id"
    )))
    .bind(project)
    .fetch_all(pool)
    .await)
}

pub async fn delete(db: &Db, project: Uuid, id: Uuid) -> sqlx::Result<bool> {
    let n = with_db!(db, pool => sqlx::query("DELETE FROM token_profiles WHERE project_id = $1 AND id = $2")
        .bind(project)
        .bind(id)
        .execute(pool)
        .await?
        .rows_affected());
    Ok(n == 1)
}

/// Records a token id as used until `expires_at`; `false` when it already was (a replay).
/// One statement: of two concurrent attests of one token, exactly one records it.
pub async fn consume_token_id(
    db: &Db,
    profile: Uuid,
    token_id_hash: &[u8; 32],
    expires_at: i64,
) -> sqlx::Result<bool> {
    let n = with_db!(db, pool => sqlx::query(
        "INSERT INTO attested_tokens (profile_id, token_id_hash, expires_at) VALUES ($1, $2, $3)
         ON CONFLICT (profile_id, token_id_hash) DO NOTHING",
    )
    .bind(profile)
    .bind(&token_id_hash[..])
    .bind(expires_at)
    .execute(pool)
    .await?
    .rows_affected());
    Ok(n == 1)
}

/// Gives a used token id back: the request that spent it was refused before it wrote
/// anything.
pub async fn release_token_id(
    db: &Db,
    profile: Uuid,
    token_id_hash: &[u8; 32],
) -> sqlx::Result<()> {
    with_db!(db, pool => sqlx::query(
        "DELETE FROM attested_tokens WHERE profile_id = $1 AND token_id_hash = $2",
    )
    .bind(profile)
    .bind(&token_id_hash[..])
    .execute(pool)
    .await
    .map(|_| ()))
}

/// Forgets used token ids whose tokens have expired (they can no longer be presented).
pub async fn purge_used(db: &Db, now: i64) -> sqlx::Result<u64> {
    with_db!(db, pool => sqlx::query("DELETE FROM attested_tokens WHERE expires_at < $1")
        .bind(now)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))
}
