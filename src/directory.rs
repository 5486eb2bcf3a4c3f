//! The in-memory view of every project: settings, secret hashes and the key ring with its
//! parsed keys and pre-rendered JWKS. Rebuilt from the database every refresh interval, so
//! operator changes and rotations made by any instance reach this one within seconds, and
//! requests read it without touching the database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use uuid::Uuid;

use crate::domain::crypto::{MasterKeys, sha256};
use crate::domain::ids::{Env, ProjectId};
use crate::domain::keys::{KeyInfo, KeyState, PublicKey, SigningKey};
use crate::domain::rbac::Policy;
use crate::domain::session::SessionPolicy;
use crate::store::keys::KeyRow;
use crate::store::{self, Db};

/// A key decrypted and parsed once, reused across refreshes.
pub struct LoadedKey {
    pub signing: Arc<SigningKey>,
    pub public: PublicKey,
}

pub struct Ring {
    /// The key that signs, if the ring has one.
    pub signer: Option<Arc<SigningKey>>,
    /// Published keys (next, current, retired).
    pub keys: Vec<Arc<LoadedKey>>,
    pub info: Vec<KeyInfo>,
    /// The JWKS `keys` array, rendered once per ring.
    pub jwks_keys: String,
    pub etag: String,
}

impl Ring {
    pub fn find(&self, kid: Uuid) -> Option<&PublicKey> {
        self.keys
            .iter()
            .find(|k| k.public.id == kid)
            .map(|k| &k.public)
    }
}

pub struct Project {
    pub id: ProjectId,
    pub name: String,
    pub userinfo_url: Option<String>,
    pub policy: SessionPolicy,
    /// Active secrets: (id, argon2 PHC string).
    pub secrets: Vec<(Uuid, String)>,
    pub ring: Ring,
    /// The RBAC policy (always holding `stytch_user`), and the stored text it came from.
    pub rbac: Arc<Policy>,
    rbac_text: String,
    /// The revocation feed needs the project's credentials (else it is public, like the JWKS).
    pub revocations_private: bool,
}

#[derive(Default)]
struct Snapshot {
    projects: HashMap<Uuid, Arc<Project>>,
    default: Option<Uuid>,
    loaded: bool,
    /// Keys that could not be opened (wrong master key, damaged row): left out of the ring.
    problems: Vec<String>,
}

pub struct Directory {
    db: Db,
    master: MasterKeys,
    /// Operator's choice of default project (`HALLPASS_DEFAULT_PROJECT_ID`), else bootstrap.
    preferred_default: Option<Uuid>,
    snapshot: RwLock<Arc<Snapshot>>,
    keys: Mutex<HashMap<Uuid, Arc<LoadedKey>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error("key {kid}: {message}")]
    Key { kid: Uuid, message: String },
}

impl Directory {
    pub fn new(db: Db, master: MasterKeys, preferred_default: Option<Uuid>) -> Self {
        Self {
            db,
            master,
            preferred_default,
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            keys: Mutex::new(HashMap::new()),
        }
    }

    fn read(&self) -> Arc<Snapshot> {
        match self.snapshot.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn get(&self, id: Uuid) -> Option<Arc<Project>> {
        self.read().projects.get(&id).cloned()
    }

    /// Every loaded project.
    pub fn projects(&self) -> Vec<Arc<Project>> {
        self.read().projects.values().cloned().collect()
    }

    /// The project served at `/jwks`: the only one, or the preferred one.
    pub fn default_project(&self) -> Option<Arc<Project>> {
        let s = self.read();
        s.default.and_then(|id| s.projects.get(&id).cloned())
    }

    /// Loaded at least once, and every project has a key that signs.
    pub fn is_ready(&self) -> bool {
        let s = self.read();
        s.loaded && s.projects.values().all(|p| p.ring.signer.is_some())
    }

    /// Stored keys this instance could not open, as messages naming them.
    pub fn key_problems(&self) -> Vec<String> {
        self.read().problems.clone()
    }

    pub fn project_count(&self) -> usize {
        self.read().projects.len()
    }

    /// Rebuilds the view from the database.
    pub async fn refresh(&self) -> Result<(), RefreshError> {
        let rows = store::projects::list(&self.db).await?;
        let secrets = store::projects::active_secrets(&self.db).await?;
        let key_rows = store::keys::published(&self.db).await?;
        let mut extras: HashMap<Uuid, (String, bool)> = store::projects::extras(&self.db)
            .await?
            .into_iter()
            .map(|(id, policy, private)| (id, (policy, private)))
            .collect();
        let previous = self.read();

        let mut secrets_by_project: HashMap<Uuid, Vec<(Uuid, String)>> = HashMap::new();
        for s in secrets {
            secrets_by_project
                .entry(s.project_id)
                .or_default()
                .push((s.id, s.secret_hash));
        }
        let mut keys_by_project: HashMap<Uuid, Vec<KeyRow>> = HashMap::new();
        for k in key_rows {
            keys_by_project.entry(k.project_id).or_default().push(k);
        }

        let mut projects = HashMap::with_capacity(rows.len());
        let mut live_keys = HashMap::new();
        let mut problems = Vec::new();
        for row in rows {
            let id = ProjectId {
                env: Env::from_live(row.live),
                uuid: row.id,
            };
            let key_rows = keys_by_project.remove(&row.id).unwrap_or_default();
            let ring = self.build_ring(&id, &key_rows, &mut live_keys, &mut problems)?;
            let (rbac_text, revocations_private) = extras.remove(&row.id).unwrap_or_default();
            let rbac = match previous.projects.get(&row.id) {
                Some(p) if p.rbac_text == rbac_text => p.rbac.clone(),
                _ => Arc::new(Policy::parse(&rbac_text).unwrap_or_else(|e| {
                    // Set through validation, so this is damage: deny everything.
                    tracing::error!(project = %id, error = %e, "stored RBAC policy unreadable; every check is denied");
                    Policy::default().validated().unwrap_or_default()
                })),
            };
            projects.insert(
                row.id,
                Arc::new(Project {
                    id,
                    name: row.name,
                    userinfo_url: row.userinfo_url.filter(|u| !u.is_empty()),
                    policy: SessionPolicy {
                        idle_timeout_minutes: row.idle_timeout_minutes,
                        absolute_lifetime_minutes: row.absolute_lifetime_minutes,
                    },
                    secrets: secrets_by_project.remove(&row.id).unwrap_or_default(),
                    ring,
                    rbac,
                    rbac_text,
                    revocations_private,
                }),
            );
        }
        let default = match self.preferred_default {
            Some(id) if projects.contains_key(&id) => Some(id),
            _ if projects.len() == 1 => projects.keys().next().copied(),
            _ => None,
        };
        if let Ok(mut cache) = self.keys.lock() {
            *cache = live_keys;
        }
        if problems != self.read().problems {
            for p in &problems {
                tracing::error!(problem = %p, "a stored signing key cannot be used; it is left out");
            }
        }
        let next = Arc::new(Snapshot {
            projects,
            default,
            loaded: true,
            problems,
        });
        match self.snapshot.write() {
            Ok(mut s) => *s = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
        Ok(())
    }

    fn build_ring(
        &self,
        project: &ProjectId,
        rows: &[KeyRow],
        live_keys: &mut HashMap<Uuid, Arc<LoadedKey>>,
        problems: &mut Vec<String>,
    ) -> Result<Ring, RefreshError> {
        let mut keys = Vec::with_capacity(rows.len());
        let mut info = Vec::with_capacity(rows.len());
        let mut signer = None;
        for row in rows {
            let Some(state) = KeyState::parse(&row.state) else {
                continue;
            };
            // One unusable key must not take every project down with it.
            let loaded = match self.load_key(project.env, row) {
                Ok(k) => k,
                Err(e) => {
                    problems.push(e.to_string());
                    continue;
                }
            };
            live_keys.insert(row.id, loaded.clone());
            if state == KeyState::Current {
                signer = Some(loaded.signing.clone());
            }
            info.push(KeyInfo {
                id: row.id,
                state,
                published_at: row.published_at,
                signing_since: row.signing_since,
                retired_at: row.retired_at,
            });
            keys.push(loaded);
        }
        let jwks: Vec<_> = keys.iter().map(|k| &k.public.jwk).collect();
        let jwks_keys = serde_json::to_string(&jwks).map_err(|e| RefreshError::Key {
            kid: Uuid::nil(),
            message: e.to_string(),
        })?;
        let digest = sha256(jwks_keys.as_bytes());
        let etag = format!(
            "\"{}\"",
            digest[..12]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        Ok(Ring {
            signer,
            keys,
            info,
            jwks_keys,
            etag,
        })
    }

    fn load_key(&self, env: Env, row: &KeyRow) -> Result<Arc<LoadedKey>, RefreshError> {
        if let Some(k) = self.keys.lock().ok().and_then(|c| c.get(&row.id).cloned()) {
            return Ok(k);
        }
        let err = |message: String| RefreshError::Key {
            kid: row.id,
            message,
        };
        let pkcs8 = self
            .master
            .open(&row.private_key, &row.master_key_id, row.id.as_bytes())
            .map_err(|e| err(e.to_string()))?;
        let signing =
            SigningKey::from_pkcs8(row.id, env, &pkcs8).map_err(|e| err(e.to_string()))?;
        let public = signing
            .public(env, &row.certificate)
            .map_err(|e| err(e.to_string()))?;
        Ok(Arc::new(LoadedKey {
            signing: Arc::new(signing),
            public,
        }))
    }
}
