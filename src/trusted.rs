//! Trusted auth tokens (attest): verifying a JWT from the app's own identity provider against
//! a profile's issuer, audience and keys (a JWKS URL, fetched and cached, or PEM keys).
//!
//! Verification uses `jsonwebtoken`: this is the server verifying someone else's tokens, with
//! the algorithms providers use (RS256, PS256, ES256, EdDSA), never `none` or an HMAC. Times
//! are checked here against the server's clock (injected in tests), not by the library.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::error::Error;
use crate::store::token_profiles::ProfileRow;

/// Clock skew allowed on `exp`, `nbf` and `iat` (seconds).
pub const LEEWAY_SECONDS: i64 = 30;
/// The most a provider's JWKS may weigh.
const JWKS_MAX_BYTES: usize = 64 * 1024;
/// A provider's JWKS is kept for its `Cache-Control: max-age`, within these bounds, in
/// seconds (300 when it sends none).
const MIN_MAX_AGE: i64 = 60;
const MAX_MAX_AGE: i64 = 86_400;
const DEFAULT_MAX_AGE: i64 = 300;
/// An unknown `kid` refetches the JWKS at most this often (seconds).
const REFETCH_COOLDOWN: i64 = 30;
/// After a failed fetch nothing is fetched for this long, doubling with each failure in a
/// row up to the cap (seconds): a provider that is down is not hit once per attest, and an
/// attest meanwhile answers at once (the cached copy, or 503) instead of waiting 5 s.
const RETRY_FIRST: i64 = 2;
const RETRY_CAP: i64 = 60;

const ACCEPTED: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::EdDSA,
];

fn refuse(status: StatusCode, error_type: &'static str, message: impl Into<String>) -> Error {
    Error::Attest {
        status,
        error_type,
        message: message.into(),
    }
}

/// What a verified token says, through the profile's claim mapping.
#[derive(Debug, Clone)]
pub struct Attested {
    pub email: String,
    pub token_id: String,
    pub external_user_id: Option<String>,
    pub role_ids: Vec<String>,
    pub expires_at: i64,
}

/// One profile's JWKS URL: the last good copy and the state of fetching it. Times are the
/// server's clock (unix seconds), so tests move them.
struct Entry {
    url: String,
    keys: Option<Arc<JwkSet>>,
    fetched_at: i64,
    max_age: i64,
    last_forced: Option<i64>,
    /// Failed fetches in a row, the last one's reason, and when the next may be tried.
    failures: u32,
    last_error: String,
    retry_at: i64,
    /// Held by the one request fetching this URL; the others use the cached copy, or wait
    /// for that fetch when there is none, instead of fetching too.
    fetching: Arc<tokio::sync::Mutex<()>>,
}

impl Entry {
    /// The profile's entry, new when there is none or its JWKS URL changed.
    fn of<'a>(cache: &'a mut HashMap<Uuid, Entry>, profile: Uuid, url: &str) -> &'a mut Entry {
        let entry = cache.entry(profile).or_insert_with(|| Entry::new(url));
        if entry.url != url {
            *entry = Entry::new(url);
        }
        entry
    }

    fn new(url: &str) -> Self {
        Self {
            url: url.to_string(),
            keys: None,
            fetched_at: 0,
            max_age: 0,
            last_forced: None,
            failures: 0,
            last_error: String::new(),
            retry_at: i64::MIN,
            fetching: Arc::default(),
        }
    }
}

/// What the cache says to do for one token.
enum Plan {
    Use(Arc<JwkSet>),
    Unavailable(String),
    Fetch {
        cached: Option<Arc<JwkSet>>,
        fetching: Arc<tokio::sync::Mutex<()>>,
    },
}

/// Providers' JWKS documents, per profile.
#[derive(Default)]
pub struct ProviderKeys {
    cache: Mutex<HashMap<Uuid, Entry>>,
}

impl ProviderKeys {
    fn plan(&self, profile: Uuid, url: &str, kid: Option<&str>, now: i64) -> Plan {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let entry = Entry::of(&mut cache, profile, url);
        let stale = now >= entry.fetched_at.saturating_add(entry.max_age);
        let unknown = kid.is_some_and(|k| entry.keys.as_ref().is_some_and(|s| s.find(k).is_none()));
        let may_force = entry
            .last_forced
            .is_none_or(|t| now >= t.saturating_add(REFETCH_COOLDOWN));
        let force = unknown && may_force;
        if !(stale || force) || now < entry.retry_at {
            return match &entry.keys {
                Some(keys) => Plan::Use(keys.clone()),
                None => Plan::Unavailable(format!(
                    "{} (retried in at most {} s)",
                    entry.last_error,
                    entry.retry_at - now
                )),
            };
        }
        if force {
            entry.last_forced = Some(now);
        }
        Plan::Fetch {
            cached: entry.keys.clone(),
            fetching: entry.fetching.clone(),
        }
    }

    /// Records a fetch's outcome; returns the keys to use.
    fn settle(
        &self,
        profile: Uuid,
        url: &str,
        outcome: Result<(JwkSet, i64), String>,
        now: i64,
    ) -> Result<Arc<JwkSet>, String> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let entry = Entry::of(&mut cache, profile, url);
        match outcome {
            Ok((keys, max_age)) => {
                let keys = Arc::new(keys);
                entry.keys = Some(keys.clone());
                entry.fetched_at = now;
                entry.max_age = max_age;
                entry.failures = 0;
                entry.retry_at = i64::MIN;
                Ok(keys)
            }
            Err(e) => {
                entry.failures = entry.failures.saturating_add(1);
                let shift = (entry.failures - 1).min(16);
                entry.retry_at = now + (RETRY_FIRST << shift).min(RETRY_CAP);
                entry.last_error = e.clone();
                entry.keys.clone().ok_or(e)
            }
        }
    }

    /// The profile's JWKS: cached while fresh; fetched again when stale, or (at most once per
    /// cooldown) when a token names a `kid` it lacks. One request at a time fetches a URL;
    /// after a failure the next attempt waits (see `RETRY_FIRST`), and the last good copy is
    /// used while the provider cannot be reached.
    async fn jwks(
        &self,
        http: &reqwest::Client,
        profile: &ProfileRow,
        url: &str,
        kid: Option<&str>,
        profile_id: &str,
        now: i64,
    ) -> Result<Arc<JwkSet>, Error> {
        let unavailable = |why: &str| {
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "trusted_auth_token_jwks_unavailable",
                format!(
                    "The JWKS of trusted auth token profile {profile_id} could not be fetched: {why}"
                ),
            )
        };
        let (cached, fetching) = match self.plan(profile.id, url, kid, now) {
            Plan::Use(keys) => return Ok(keys),
            Plan::Unavailable(why) => return Err(unavailable(&why)),
            Plan::Fetch { cached, fetching } => (cached, fetching),
        };
        let _turn = match cached {
            // Another request is fetching it: the cached copy serves meanwhile.
            Some(keys) => match fetching.try_lock_owned() {
                Ok(turn) => turn,
                Err(_) => return Ok(keys),
            },
            // Nothing cached: wait for the fetch under way, then look again (it has filled
            // the cache or set the time of the next attempt).
            None => {
                let turn = fetching.lock_owned().await;
                match self.plan(profile.id, url, kid, now) {
                    Plan::Use(keys) => return Ok(keys),
                    Plan::Unavailable(why) => return Err(unavailable(&why)),
                    Plan::Fetch { .. } => turn,
                }
            }
        };
        let outcome = fetch(http, url).await;
        if let Err(e) = &outcome {
            tracing::warn!(profile = profile_id, error = %e, "provider JWKS could not be fetched");
        }
        self.settle(profile.id, url, outcome, now)
            .map_err(|e| unavailable(&e))
    }
}

/// The JWKS at `url` and how long it may be kept (seconds).
async fn fetch(http: &reqwest::Client, url: &str) -> Result<(JwkSet, i64), String> {
    let mut response = http.get(url).send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("{url} answered {}", response.status()));
    }
    let max_age = response
        .headers()
        .get(reqwest::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',')
                .find_map(|d| d.trim().strip_prefix("max-age=")?.parse::<u64>().ok())
        })
        .map_or(DEFAULT_MAX_AGE, |s| {
            i64::try_from(s)
                .unwrap_or(MAX_MAX_AGE)
                .clamp(MIN_MAX_AGE, MAX_MAX_AGE)
        });
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > JWKS_MAX_BYTES {
            return Err(format!("{url} sent more than {JWKS_MAX_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    let keys = serde_json::from_slice(&body).map_err(|e| format!("{url}: not a JWKS: {e}"))?;
    Ok((keys, max_age))
}

/// Keys of the profile that may have signed a token of `alg` (and `kid`, when it names one).
async fn candidates(
    keys: &ProviderKeys,
    http: &reqwest::Client,
    profile: &ProfileRow,
    alg: Algorithm,
    kid: Option<&str>,
    profile_id: &str,
    now: i64,
) -> Result<Vec<DecodingKey>, Error> {
    if let Some(url) = &profile.jwks_url {
        let set = keys.jwks(http, profile, url, kid, profile_id, now).await?;
        let chosen: Vec<DecodingKey> = set
            .keys
            .iter()
            .filter(|k| kid.is_none_or(|kid| k.common.key_id.as_deref() == Some(kid)))
            .filter_map(|k| DecodingKey::from_jwk(k).ok())
            .collect();
        return Ok(chosen);
    }
    let pems: Vec<String> = serde_json::from_str(&profile.pem_keys).unwrap_or_default();
    Ok(pems
        .iter()
        .filter_map(|pem| {
            let pem = pem.as_bytes();
            match alg {
                Algorithm::RS256 | Algorithm::PS256 => DecodingKey::from_rsa_pem(pem).ok(),
                Algorithm::ES256 => DecodingKey::from_ec_pem(pem).ok(),
                Algorithm::EdDSA => DecodingKey::from_ed_pem(pem).ok(),
                _ => None,
            }
        })
        .collect())
}

fn claim_text(claims: &Map<String, Value>, name: &str) -> Option<String> {
    claims
        .get(name)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Verifies `token` against `profile` at `now` and reads its mapped claims.
pub async fn verify(
    keys: &ProviderKeys,
    http: &reqwest::Client,
    profile: &ProfileRow,
    profile_id: &str,
    token: &str,
    now: i64,
) -> Result<Attested, Error> {
    let bad_signature = |why: &str| {
        refuse(
            StatusCode::UNAUTHORIZED,
            "invalid_trusted_auth_token_signature",
            format!(
                "The token's signature does not verify with profile {profile_id}'s keys: {why}."
            ),
        )
    };
    let header = jsonwebtoken::decode_header(token)
        .map_err(|_| bad_signature("the token is not a signed JWT"))?;
    if !ACCEPTED.contains(&header.alg) {
        return Err(bad_signature(&format!(
            "algorithm {:?} is not accepted (RS256, PS256, ES256 or EdDSA)",
            header.alg
        )));
    }
    let mut validation = Validation::new(header.alg);
    // Times are checked below against the server's clock; issuer and audience here.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let candidates = candidates(
        keys,
        http,
        profile,
        header.alg,
        header.kid.as_deref(),
        profile_id,
        now,
    )
    .await?;
    if candidates.is_empty() {
        return Err(bad_signature(match header.kid {
            Some(_) => "no key of the profile has the token's kid and algorithm",
            None => "no key of the profile fits the token's algorithm",
        }));
    }
    let claims = candidates
        .iter()
        .find_map(|key| {
            jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation)
                .ok()
                .map(|d| d.claims)
        })
        .ok_or_else(|| bad_signature("no key of the profile verifies it"))?;

    if claims.get("iss").and_then(Value::as_str) != Some(profile.issuer.as_str()) {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "invalid_trusted_auth_token_issuer",
            format!(
                "The token's iss is not {:?}, the issuer of profile {profile_id}.",
                profile.issuer
            ),
        ));
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(a)) => *a == profile.audience,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(&profile.audience)),
        _ => false,
    };
    if !audience_ok {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "invalid_trusted_auth_token_audience",
            format!(
                "The token's aud does not include {:?}, the audience of profile {profile_id}.",
                profile.audience
            ),
        ));
    }
    let instant = |name: &str| claims.get(name).and_then(Value::as_i64);
    let Some(exp) = instant("exp") else {
        return Err(missing(profile_id, "exp"));
    };
    if exp + LEEWAY_SECONDS <= now {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "trusted_auth_token_expired",
            "The token has expired (exp is in the past).",
        ));
    }
    for name in ["nbf", "iat"] {
        if instant(name).is_some_and(|t| t > now + LEEWAY_SECONDS) {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                "trusted_auth_token_not_yet_valid",
                format!("The token is not valid yet ({name} is in the future)."),
            ));
        }
    }
    let email = claim_text(&claims, &profile.email_claim)
        .ok_or_else(|| missing(profile_id, &profile.email_claim))?;
    let token_id = claim_text(&claims, &profile.token_id_claim)
        .ok_or_else(|| missing(profile_id, &profile.token_id_claim))?;
    let external_user_id = match &profile.external_user_id_claim {
        Some(name) => Some(claim_text(&claims, name).ok_or_else(|| missing(profile_id, name))?),
        None => None,
    };
    let role_ids = match profile.role_ids_claim.as_ref().and_then(|n| claims.get(n)) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(Value::String(one)) => vec![one.clone()],
        _ => Vec::new(),
    };
    Ok(Attested {
        email,
        token_id,
        external_user_id,
        role_ids,
        expires_at: exp,
    })
}

fn missing(profile_id: &str, claim: &str) -> Error {
    refuse(
        StatusCode::BAD_REQUEST,
        "trusted_auth_token_missing_claim",
        format!("The token has no {claim:?} claim, which profile {profile_id} requires."),
    )
}
