//! The project's signing keys, fetched from `{base}/v1/sessions/jwks/{project_id}` and cached
//! for the `Cache-Control: max-age` they were served with. Stale keys are revalidated with
//! `If-None-Match` (a 304 keeps them); a `kid` the cache lacks triggers at most one refetch per
//! cooldown; when hallpass cannot be reached the last good keys stay in use and the failure is
//! reported through health. Fetches are single-flight: concurrent verifications wait for one.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use jsonwebtoken::DecodingKey;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CACHE_CONTROL, ETAG, HeaderValue, IF_NONE_MATCH};
use serde::Deserialize;
use serde_json::Value;

use crate::Error;
use crate::clock::{Clock, elapsed};
use crate::health::KeysHealth;
use crate::http::{cache_max_age, describe, describe_failure, read_body};

/// Freshness when hallpass sends no `max-age` (the SDKs' five minutes).
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);
/// Least freshness honoured, so that `no-cache` cannot turn every verification into a request.
const MIN_MAX_AGE: Duration = Duration::from_secs(1);
/// Most freshness honoured.
const MAX_MAX_AGE: Duration = Duration::from_secs(86_400);

pub(crate) struct Keys {
    url: String,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    timeout: Duration,
    cooldown: Duration,
    state: RwLock<State>,
    fetching: tokio::sync::Mutex<()>,
}

struct State {
    keys: HashMap<String, Arc<DecodingKey>>,
    loaded: bool,
    etag: Option<HeaderValue>,
    fetched_at: Option<SystemTime>,
    max_age: Duration,
    last_error: Option<(SystemTime, String)>,
    unknown_kid_refetch_at: Option<SystemTime>,
}

impl State {
    fn fresh(&self, now: SystemTime) -> bool {
        self.loaded
            && self
                .fetched_at
                .is_some_and(|at| elapsed(now, at) < self.max_age)
    }

    /// Stale (or never loaded), and no failed fetch within the cooldown.
    fn due(&self, now: SystemTime, cooldown: Duration) -> bool {
        !self.fresh(now)
            && self
                .last_error
                .as_ref()
                .is_none_or(|(at, _)| elapsed(now, *at) >= cooldown)
    }
}

enum Reason<'a> {
    /// Stale or never loaded.
    Due,
    /// A JWT names this kid, which the cache lacks.
    UnknownKid(&'a str),
}

enum Fetched {
    Keys {
        keys: HashMap<String, Arc<DecodingKey>>,
        etag: Option<HeaderValue>,
        max_age: Option<Duration>,
    },
    NotModified {
        max_age: Option<Duration>,
    },
}

impl Keys {
    pub(crate) fn new(
        url: String,
        http: reqwest::Client,
        clock: Arc<dyn Clock>,
        timeout: Duration,
        cooldown: Duration,
    ) -> Self {
        Self {
            url,
            http,
            clock,
            timeout,
            cooldown,
            state: RwLock::new(State {
                keys: HashMap::new(),
                loaded: false,
                etag: None,
                fetched_at: None,
                max_age: DEFAULT_MAX_AGE,
                last_error: None,
                unknown_kid_refetch_at: None,
            }),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn unavailable(&self) -> Error {
        let why = self
            .read()
            .last_error
            .as_ref()
            .map_or_else(|| "not fetched yet".to_string(), |(_, e)| e.clone());
        Error::KeysUnavailable(why)
    }

    /// The key named `kid`, fetching or revalidating the JWKS as the cache requires.
    pub(crate) async fn key(&self, kid: &str) -> Result<Arc<DecodingKey>, Error> {
        let mut fetched = false;
        if self.read().due(self.clock.now(), self.cooldown) {
            fetched = self.refresh(Reason::Due).await;
        }
        if let Some(key) = self.read().keys.get(kid) {
            return Ok(key.clone());
        }
        if !self.read().loaded {
            return Err(self.unavailable());
        }
        if !fetched
            && self.refresh(Reason::UnknownKid(kid)).await
            && let Some(key) = self.read().keys.get(kid)
        {
            return Ok(key.clone());
        }
        Err(Error::UnknownKey(kid.to_string()))
    }

    /// Makes sure keys are loaded (fetching now if they are not, or are stale).
    pub(crate) async fn load(&self) -> Result<(), Error> {
        if !self.read().fresh(self.clock.now()) {
            self.refresh(Reason::Due).await;
        }
        if self.read().loaded {
            Ok(())
        } else {
            Err(self.unavailable())
        }
    }

    /// Fetches the JWKS unless another task just did or the reason no longer holds; true
    /// when this call fetched.
    async fn refresh(&self, reason: Reason<'_>) -> bool {
        let _single_flight = self.fetching.lock().await;
        let now = self.clock.now();
        let etag = {
            let mut s = self.write();
            match reason {
                Reason::Due if !s.due(now, self.cooldown) => return false,
                Reason::UnknownKid(kid) => {
                    let cooling = s
                        .unknown_kid_refetch_at
                        .is_some_and(|at| elapsed(now, at) < self.cooldown);
                    if cooling || s.keys.contains_key(kid) {
                        return false;
                    }
                    s.unknown_kid_refetch_at = Some(now);
                }
                Reason::Due => {}
            }
            s.loaded.then(|| s.etag.clone()).flatten()
        };
        let result = self.fetch(etag).await;
        let now = self.clock.now();
        let mut s = self.write();
        match result {
            Ok(Fetched::Keys {
                keys,
                etag,
                max_age,
            }) => {
                tracing::debug!(keys = keys.len(), "hallpass JWKS fetched");
                s.keys = keys;
                s.etag = etag;
                s.loaded = true;
                s.fetched_at = Some(now);
                s.max_age = clamp(max_age.unwrap_or(DEFAULT_MAX_AGE));
                s.last_error = None;
            }
            Ok(Fetched::NotModified { max_age }) => {
                s.fetched_at = Some(now);
                if let Some(m) = max_age {
                    s.max_age = clamp(m);
                }
                s.last_error = None;
            }
            Err(e) => {
                tracing::warn!(error = %e, url = %self.url, "hallpass JWKS fetch failed; keeping the cached keys");
                s.last_error = Some((now, e));
            }
        }
        true
    }

    async fn fetch(&self, etag: Option<HeaderValue>) -> Result<Fetched, String> {
        let mut request = self
            .http
            .get(&self.url)
            .timeout(self.timeout)
            .header(ACCEPT, "application/json");
        if let Some(etag) = etag {
            request = request.header(IF_NONE_MATCH, etag);
        }
        let response = request.send().await.map_err(describe)?;
        let max_age = cache_max_age(response.headers().get(CACHE_CONTROL));
        match response.status() {
            StatusCode::NOT_MODIFIED => Ok(Fetched::NotModified { max_age }),
            StatusCode::OK => {
                let etag = response.headers().get(ETAG).cloned();
                let body = read_body(response).await?;
                let keys = parse(&body)?;
                Ok(Fetched::Keys {
                    keys,
                    etag,
                    max_age,
                })
            }
            _ => Err(describe_failure(response).await),
        }
    }

    pub(crate) fn health(&self) -> KeysHealth {
        let now = self.clock.now();
        let s = self.read();
        KeysHealth {
            loaded: s.loaded,
            key_count: s.keys.len(),
            fetched_at: s.fetched_at,
            age: s.fetched_at.map(|at| elapsed(now, at)),
            max_age: s.max_age,
            stale: s.loaded && !s.fresh(now),
            last_error: s.last_error.as_ref().map(|(_, e)| e.clone()),
            last_error_at: s.last_error.as_ref().map(|(at, _)| *at),
        }
    }

    pub(crate) fn loaded(&self) -> bool {
        self.read().loaded
    }
}

fn clamp(max_age: Duration) -> Duration {
    max_age.clamp(MIN_MAX_AGE, MAX_MAX_AGE)
}

#[derive(Deserialize)]
struct Document {
    keys: Vec<Value>,
}

/// The usable keys of a JWKS document by kid: RSA keys whose `alg` (if any) is RS256, whose
/// `use` (if any) is `sig` and whose `key_ops` (if any) include `verify`, as jose selects them.
fn parse(body: &[u8]) -> Result<HashMap<String, Arc<DecodingKey>>, String> {
    let document: Document = serde_json::from_slice(body)
        .map_err(|e| format!("the JWKS is not a JWKS document: {e}"))?;
    let mut keys = HashMap::new();
    for key in &document.keys {
        let text = |name: &str| key.get(name).and_then(Value::as_str);
        let usable = text("kty") == Some("RSA")
            && text("alg").is_none_or(|a| a == "RS256")
            && text("use").is_none_or(|u| u == "sig")
            && key
                .get("key_ops")
                .and_then(Value::as_array)
                .is_none_or(|ops| ops.iter().any(|o| o.as_str() == Some("verify")));
        let (Some(kid), Some(n), Some(e)) = (text("kid"), text("n"), text("e")) else {
            continue;
        };
        if !usable {
            continue;
        }
        match DecodingKey::from_rsa_components(n, e) {
            Ok(k) => {
                keys.insert(kid.to_string(), Arc::new(k));
            }
            Err(e) => tracing::warn!(kid, error = %e, "skipping an unusable JWK"),
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rsa_signing_keys_are_kept() {
        let doc = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "a", "n": "AQAB", "e": "AQAB", "alg": "RS256", "use": "sig", "key_ops": ["verify"]},
            {"kty": "RSA", "kid": "b", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "kid": "c", "n": "AQAB", "e": "AQAB", "alg": "RS512"},
            {"kty": "RSA", "kid": "d", "n": "AQAB", "e": "AQAB", "use": "enc"},
            {"kty": "RSA", "kid": "e", "n": "AQAB", "e": "AQAB", "key_ops": ["encrypt"]},
            {"kty": "EC", "kid": "f", "x": "AQAB", "y": "AQAB"},
            {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
        ], "request_id": "r", "status_code": 200});
        let keys = parse(doc.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let mut kids: Vec<&str> = keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        assert_eq!(kids, ["a", "b"]);
        assert!(parse(b"{\"nokeys\": []}").is_err());
        assert!(parse(b"<html>").is_err());
    }

    #[test]
    fn freshness_is_clamped() {
        assert_eq!(clamp(Duration::ZERO), MIN_MAX_AGE);
        assert_eq!(clamp(Duration::from_secs(1 << 40)), MAX_MAX_AGE);
        assert_eq!(clamp(Duration::from_secs(300)), Duration::from_secs(300));
    }
}
