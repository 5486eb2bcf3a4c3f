//! Applies the key-ring state machine to the database. Every instance runs `converge`; the
//! step is re-planned under the project's row lock, so exactly one instance performs it.

use std::mem::discriminant;

use uuid::Uuid;

use crate::domain::crypto::MasterKeys;
use crate::domain::ids::{Env, Kind, format};
use crate::domain::keys::{self, KeyInfo, KeyState, Schedule, Step};
use crate::store::keys::KeyRow;
use crate::store::{self, Db};

#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error("{0}")]
    Key(String),
    #[error("{0}")]
    Refused(String),
}

pub fn infos(rows: &[KeyRow]) -> Vec<KeyInfo> {
    rows.iter()
        .filter_map(|r| {
            Some(KeyInfo {
                id: r.id,
                state: KeyState::parse(&r.state)?,
                published_at: r.published_at,
                signing_since: r.signing_since,
                retired_at: r.retired_at,
            })
        })
        .filter(|k| k.state != KeyState::Revoked)
        .collect()
}

/// Checks that `master` may seal in this database: its newest key must be the newest the
/// database uses, or a new key whose rotation this process starts while holding the newest
/// one. So a shell with an older HALLPASS_MASTER_KEY (after `keys reencrypt` moved on) or
/// with an unrelated key cannot seal a key the servers will not be able to open.
pub async fn may_seal(db: &Db, master: &MasterKeys, now: i64) -> Result<(), RingError> {
    let in_use = store::keys::master_keys_in_use(db).await?;
    let mine = master.newest_id();
    let newest = match in_use.last() {
        None => {
            store::keys::record_master_key(db, mine, now).await?;
            return Ok(());
        }
        Some(newest) if newest == mine => return Ok(()),
        Some(newest) => newest,
    };
    if !in_use.iter().any(|fp| master.holds(fp)) {
        return Err(RingError::Refused(format!(
            "none of the configured master keys opens the keys in this database (they are \
             sealed under master key {newest}); set HALLPASS_MASTER_KEY to that key"
        )));
    }
    if in_use.iter().any(|fp| fp == mine) || !master.holds(newest) {
        return Err(RingError::Refused(format!(
            "refusing to seal under master key {mine}: the database already uses a newer master \
             key ({newest}), which this process does not have. Set HALLPASS_MASTER_KEY to it \
             (newest first, e.g. NEW,OLD)"
        )));
    }
    // A rotation to a new master key starts: this process holds the newest in use as well.
    store::keys::record_master_key(db, mine, now).await?;
    Ok(())
}

/// A new sealed key, generated off the async workers.
async fn new_key(
    db: &Db,
    master: &MasterKeys,
    project: Uuid,
    env: Env,
    state: KeyState,
    now: i64,
) -> Result<KeyRow, RingError> {
    may_seal(db, master, now).await?;
    let id = Uuid::new_v4();
    let kid = format(Kind::Jwk, env, id);
    let generated = tokio::task::spawn_blocking(move || keys::generate(&kid, now))
        .await
        .map_err(|e| RingError::Key(e.to_string()))?
        .map_err(|e| RingError::Key(e.to_string()))?;
    let sealed = master.seal(&generated.pkcs8, id.as_bytes());
    Ok(KeyRow {
        id,
        project_id: project,
        state: state.as_str().to_string(),
        private_key: sealed.ciphertext,
        master_key_id: sealed.master_key_id,
        certificate: generated.certificate,
        created_at: now,
        published_at: now,
        signing_since: (state == KeyState::Current).then_some(now),
        retired_at: None,
        revoked_at: None,
    })
}

/// How far `converge` goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Every due step.
    Converged,
    /// Only the steps that give the ring a signing key: what a starting server waits for.
    /// The rest (publishing the next key) is left to the background task, so start-up
    /// generates at most one RSA key.
    Signing,
}

/// Brings one project's ring up to date at `now`; returns the steps this instance performed.
pub async fn converge(
    db: &Db,
    master: &MasterKeys,
    schedule: &Schedule,
    project: Uuid,
    env: Env,
    now: i64,
    until: Until,
) -> Result<Vec<Step>, RingError> {
    let mut done = Vec::new();
    // A handful of steps at most converge any ring (promote, create, delete…); the bound
    // only guards against a loop if another writer keeps changing it.
    for _ in 0..8 {
        let ring = infos(&store::keys::of_project(db, project).await?);
        let Some(step) = keys::plan(&ring, now, schedule) else {
            break;
        };
        let gives_signer = matches!(
            step,
            Step::CreateCurrent | Step::Promote { current: None, .. }
        );
        if until == Until::Signing && !gives_signer {
            break;
        }
        // Generate before locking: RSA generation is slow and must not hold the lock.
        let fresh = match step {
            Step::CreateCurrent => {
                Some(new_key(db, master, project, env, KeyState::Current, now).await?)
            }
            Step::CreateNext => Some(new_key(db, master, project, env, KeyState::Next, now).await?),
            _ => None,
        };
        let mut tx = db.begin().await?;
        let locked = infos(&store::keys::lock_ring(&mut tx, project).await?);
        match keys::plan(&locked, now, schedule) {
            // Another instance got there first, or the ring changed: plan again.
            Some(again) if discriminant(&again) == discriminant(&step) => {}
            _ => continue,
        }
        let step = keys::plan(&locked, now, schedule).unwrap_or(step);
        match (step, fresh) {
            (Step::CreateCurrent | Step::CreateNext, Some(row)) => {
                store::keys::insert(&mut tx, &row).await?
            }
            (Step::Promote { next, current }, _) => {
                store::keys::promote(&mut tx, next, current, now).await?
            }
            (Step::Delete { id }, _) => store::keys::delete(&mut tx, id).await?,
            _ => continue,
        }
        tx.commit().await?;
        tracing::info!(project = %format(Kind::Project, env, project), ?step, "key ring step");
        done.push(step);
    }
    Ok(done)
}

/// Converges every project's ring.
pub async fn converge_all(
    db: &Db,
    master: &MasterKeys,
    schedule: &Schedule,
    now: i64,
) -> Result<usize, RingError> {
    let mut steps = 0;
    for p in store::projects::list(db).await? {
        steps += converge(
            db,
            master,
            schedule,
            p.id,
            Env::from_live(p.live),
            now,
            Until::Converged,
        )
        .await?
        .len();
    }
    Ok(steps)
}

/// Operator rotation: the waiting key signs now. Refused while it has been published for
/// less than 2 × max-age (a verifier could still hold a JWKS without it), unless `force`.
pub async fn rotate_now(
    db: &Db,
    master: &MasterKeys,
    schedule: &Schedule,
    project: Uuid,
    env: Env,
    now: i64,
    force: bool,
) -> Result<Uuid, RingError> {
    // A rotation is completed by a new waiting key: a shell that cannot seal one is refused
    // before anything changes (an emergency revoke, below, goes through regardless).
    may_seal(db, master, now).await?;
    converge(db, master, schedule, project, env, now, Until::Converged).await?;
    let mut tx = db.begin().await?;
    let ring = infos(&store::keys::lock_ring(&mut tx, project).await?);
    let next = keys::next(&ring)
        .copied()
        .ok_or_else(|| RingError::Refused("the ring has no waiting key".into()))?;
    let age = now - next.published_at;
    if age < schedule.prepublish() && !force {
        return Err(RingError::Refused(format!(
            "the waiting key {} has been published for {age} s; verifiers may cache the JWKS for {} s, \
             so it may sign only after {} s (in {} s). Use --force to rotate anyway.",
            format(Kind::Jwk, env, next.id),
            schedule.max_age,
            schedule.prepublish(),
            schedule.prepublish() - age
        )));
    }
    let current = keys::current(&ring).map(|k| k.id);
    store::keys::promote(&mut tx, next.id, current, now).await?;
    tx.commit().await?;
    settle_after(db, master, schedule, project, env, now, "rotated").await;
    Ok(next.id)
}

/// Emergency revocation: the key leaves the JWKS and verification at once; if it was the
/// signing key, the waiting key is promoted immediately.
pub async fn revoke(
    db: &Db,
    master: &MasterKeys,
    schedule: &Schedule,
    project: Uuid,
    env: Env,
    kid: Uuid,
    now: i64,
) -> Result<KeyState, RingError> {
    let mut tx = db.begin().await?;
    store::keys::lock_ring(&mut tx, project).await?;
    let before = store::keys::revoke(&mut tx, project, kid, now)
        .await?
        .and_then(|s| KeyState::parse(&s))
        .ok_or_else(|| RingError::Refused("no such unrevoked key in this project".into()))?;
    tx.commit().await?;
    settle_after(db, master, schedule, project, env, now, "revoked").await;
    Ok(before)
}

/// Completes a ring after an operator's step has committed (a new waiting key, say). The
/// step itself is done whatever happens here, so a failure is a warning, not the command's
/// error (an operator told "failed" after a revoke that went through would retry it and be
/// told there is no such key); every running server converges the ring again on its own.
async fn settle_after(
    db: &Db,
    master: &MasterKeys,
    schedule: &Schedule,
    project: Uuid,
    env: Env,
    now: i64,
    done: &str,
) {
    if let Err(e) = converge(db, master, schedule, project, env, now, Until::Converged).await {
        tracing::warn!(
            error = %e,
            "the key was {done}; completing the ring afterwards failed (running servers complete it on their own)"
        );
    }
}

/// Re-seals every private key under the newest master key; returns how many changed.
pub async fn reencrypt(
    db: &Db,
    master: &MasterKeys,
    project_ids: &[Uuid],
    mut progress: impl FnMut(usize, usize),
) -> Result<usize, RingError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    may_seal(db, master, now).await?;
    let mut rows = Vec::new();
    for p in project_ids {
        rows.extend(store::keys::of_project(db, *p).await?);
    }
    let total = rows.len();
    let mut changed = 0;
    for (i, row) in rows.iter().enumerate() {
        if row.master_key_id != master.newest_id() {
            let plain = master
                .open(&row.private_key, &row.master_key_id, row.id.as_bytes())
                .map_err(|e| RingError::Key(format!("key {}: {e}", row.id)))?;
            let sealed = master.seal(&plain, row.id.as_bytes());
            store::keys::reseal(db, row.id, &sealed.ciphertext, &sealed.master_key_id).await?;
            changed += 1;
        }
        progress(i + 1, total);
    }
    Ok(changed)
}
