//! Trusted auth tokens (attest): verifying a JWT from the app's own identity provider against
//! a profile's issuer, audience and keys (a JWKS URL, fetched and cached, or PEM keys).
//!
//! Verification uses `jsonwebtoken`: this is the server verifying someone else's tokens, with
//! the algorithms providers use (RS256, PS256, ES256, EdDSA), never `none` or an HMAC. Times
//! are checked here against the server's clock (injected in tests), not by the library.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
/// A provider's JWKS is kept for its `Cache-Control: max-age`, within these bounds
/// (300 s when it sends none).
const MIN_MAX_AGE: Duration = Duration::from_secs(60);
const MAX_MAX_AGE: Duration = Duration::from_secs(86_400);
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);
/// An unknown `kid` refetches the JWKS at most this often.
const REFETCH_COOLDOWN: Duration = Duration::from_secs(30);

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

struct Cached {
    keys: Arc<JwkSet>,
    fetched: Instant,
    max_age: Duration,
    last_forced: Option<Instant>,
}

/// Providers' JWKS documents, per profile.
#[derive(Default)]
pub struct ProviderKeys {
    cache: Mutex<HashMap<Uuid, Cached>>,
}

impl ProviderKeys {
    /// The profile's JWKS: cached while fresh; fetched again when stale, or (at most once per
    /// cooldown) when a token names a `kid` it lacks. The last good copy is used when the
    /// provider cannot be reached.
    async fn jwks(
        &self,
        http: &reqwest::Client,
        profile: &ProfileRow,
        url: &str,
        kid: Option<&str>,
        profile_id: &str,
    ) -> Result<Arc<JwkSet>, Error> {
        let (cached, must_fetch) = {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            match cache.get_mut(&profile.id) {
                Some(c) => {
                    let stale = c.fetched.elapsed() >= c.max_age;
                    let unknown = kid.is_some_and(|k| c.keys.find(k).is_none());
                    let may_force = c
                        .last_forced
                        .is_none_or(|t| t.elapsed() >= REFETCH_COOLDOWN);
                    let force = unknown && may_force;
                    if force {
                        c.last_forced = Some(Instant::now());
                    }
                    (Some(c.keys.clone()), stale || force)
                }
                None => (None, true),
            }
        };
        if !must_fetch && let Some(keys) = cached {
            return Ok(keys);
        }
        match fetch(http, url).await {
            Ok((keys, max_age)) => {
                let keys = Arc::new(keys);
                let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                let last_forced = cache.get(&profile.id).and_then(|c| c.last_forced);
                cache.insert(
                    profile.id,
                    Cached {
                        keys: keys.clone(),
                        fetched: Instant::now(),
                        max_age,
                        last_forced,
                    },
                );
                Ok(keys)
            }
            Err(e) => match cached {
                Some(keys) => {
                    tracing::warn!(profile = profile_id, error = %e, "provider JWKS unreachable; using the cached copy");
                    Ok(keys)
                }
                None => Err(refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "trusted_auth_token_jwks_unavailable",
                    format!(
                        "The JWKS of trusted auth token profile {profile_id} could not be fetched: {e}"
                    ),
                )),
            },
        }
    }
}

async fn fetch(http: &reqwest::Client, url: &str) -> Result<(JwkSet, Duration), String> {
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
            Duration::from_secs(s).clamp(MIN_MAX_AGE, MAX_MAX_AGE)
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
) -> Result<Vec<DecodingKey>, Error> {
    if let Some(url) = &profile.jwks_url {
        let set = keys.jwks(http, profile, url, kid, profile_id).await?;
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
