//! [`Verifier`] and its [`VerifierBuilder`]: the configuration, the verification of a session
//! JWT (header, key, signature, claims, revocation), the RBAC check and the health report.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::task::AbortHandle;

use crate::clock::{Clock, SystemClock, unix_seconds};
use crate::feed::{Follower, FollowerConfig, Revocations};
use crate::health::{FeedTransport, Health};
use crate::jwks::Keys;
use crate::rbac::{Authorization, Policy, PolicyCache};
use crate::session::{Expected, Session, check};
use crate::{Error, http};

const DEFAULT_LEEWAY: Duration = Duration::from_secs(5);
const DEFAULT_FEED_LOSS_BOUND: Duration = Duration::from_secs(30);
const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_UNKNOWN_KID_COOLDOWN: Duration = Duration::from_secs(5);
const DEFAULT_POLICY_TTL: Duration = Duration::from_secs(300);
const DEFAULT_LONG_POLL_WAIT: Duration = Duration::from_secs(25);
/// Two missed heartbeats (hallpass sends one every 15 s) and some slack.
const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(35);
/// The longest long-poll hallpass allows.
const MAX_LONG_POLL_WAIT: Duration = Duration::from_secs(30);

/// Verifies hallpass session JWTs locally. Cheap to clone (all clones share the key cache,
/// the revoked set and the feed task); the feed task stops when the last clone is dropped.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    base_url: String,
    project_id: String,
    issuer: String,
    clock: Arc<dyn Clock>,
    leeway: Duration,
    max_token_age: Option<Duration>,
    fail_closed: bool,
    /// Signature-only validation: the claims are checked by `session::check`, with the clock.
    validation: Validation,
    keys: Keys,
    revocations: Option<Arc<Revocations>>,
    policy: PolicyCache,
    feed_task: Option<AbortHandle>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = &self.feed_task {
            task.abort();
        }
    }
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("base_url", &self.inner.base_url)
            .field("project_id", &self.inner.project_id)
            .finish_non_exhaustive()
    }
}

/// Configures a [`Verifier`]; from [`Verifier::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct VerifierBuilder {
    base_url: String,
    project_id: String,
    leeway: Duration,
    max_token_age: Option<Duration>,
    revocation_feed: bool,
    feed_transport: FeedTransport,
    feed_loss_bound: Duration,
    fail_closed: bool,
    http_timeout: Duration,
    unknown_kid_cooldown: Duration,
    policy_ttl: Duration,
    long_poll_wait: Duration,
    heartbeat_timeout: Duration,
    secret: Option<String>,
    clock: Option<Arc<dyn Clock>>,
}

impl VerifierBuilder {
    /// Clock tolerance for `exp`, `nbf` and `iat` (whole seconds). Default 5 s.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Refuse JWTs whose `now - iat` reaches this (as the SDKs' `max_token_age_seconds`; zero
    /// refuses every JWT). Default: none (hallpass JWTs live five minutes anyway).
    pub fn max_token_age(mut self, max_age: Option<Duration>) -> Self {
        self.max_token_age = max_age;
        self
    }

    /// Follow the revocation feed (default on). Off, a revoked session's JWTs keep verifying
    /// until they expire (at most five minutes), as with the SDKs.
    pub fn revocation_feed(mut self, on: bool) -> Self {
        self.revocation_feed = on;
        self
    }

    /// How to follow the feed: SSE with long-poll fallback (default), or only one of them.
    pub fn feed_transport(mut self, transport: FeedTransport) -> Self {
        self.feed_transport = transport;
        self
    }

    /// How long the feed may be disconnected before it counts as lost. Default 30 s.
    pub fn feed_loss_bound(mut self, bound: Duration) -> Self {
        self.feed_loss_bound = bound;
        self
    }

    /// Refuse every JWT with [`Error::FeedLost`] while the feed has not synced yet or has been
    /// lost beyond the bound. Default off: verification goes on with the revocations already
    /// known (a revocation made while the feed is down takes effect when the JWT expires).
    pub fn fail_closed_on_feed_loss(mut self, fail_closed: bool) -> Self {
        self.fail_closed = fail_closed;
        self
    }

    /// Timeout of each request to hallpass (and of connecting; long-polls add their wait).
    /// Default 10 s.
    pub fn http_timeout(mut self, timeout: Duration) -> Self {
        self.http_timeout = timeout;
        self
    }

    /// Least time between two JWKS refetches caused by unknown `kid`s, and between retries
    /// after a failed fetch. Default 5 s.
    pub fn unknown_kid_cooldown(mut self, cooldown: Duration) -> Self {
        self.unknown_kid_cooldown = cooldown;
        self
    }

    /// The project secret: needed for the RBAC policy fetch (Basic `project_id:secret`), and
    /// sent to the revocation feed if the project made it private.
    pub fn project_secret(mut self, secret: impl Into<String>) -> Self {
        self.secret = Some(secret.into());
        self
    }

    /// How long the RBAC policy is cached. Default 5 minutes (as the Node SDK).
    pub fn policy_cache_ttl(mut self, ttl: Duration) -> Self {
        self.policy_ttl = ttl;
        self
    }

    /// How long each long-poll waits for events (at most 30 s). Default 25 s.
    pub fn long_poll_wait(mut self, wait: Duration) -> Self {
        self.long_poll_wait = wait;
        self
    }

    /// An open stream that delivers nothing (no event, no heartbeat) for this long is
    /// reconnected. Default 35 s (hallpass sends a heartbeat every 15 s).
    pub fn heartbeat_timeout(mut self, timeout: Duration) -> Self {
        self.heartbeat_timeout = timeout;
        self
    }

    /// The clock for every time decision (default: the system clock). For tests.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Builds the verifier. With the revocation feed on it starts following the feed at once
    /// and must be called within a Tokio runtime. Nothing is fetched here: keys are fetched
    /// on first use or by [`Verifier::ready`].
    pub fn build(self) -> Result<Verifier, Error> {
        let base = self.base_url.trim_end_matches('/').to_string();
        let parsed = reqwest::Url::parse(&base)
            .map_err(|e| Error::Config(format!("base URL {base:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(Error::Config(format!(
                "base URL {base:?} must be an http:// or https:// URL with a host"
            )));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(Error::Config(format!(
                "base URL {base:?} must not have a query or fragment"
            )));
        }
        let project = &self.project_id;
        if project.is_empty()
            || !project
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(Error::Config(format!(
                "project id {project:?} is not a project id (project-test-… or project-live-…)"
            )));
        }
        if self.long_poll_wait > MAX_LONG_POLL_WAIT {
            return Err(Error::Config("long_poll_wait is at most 30 s".into()));
        }
        if self.http_timeout.is_zero() || self.heartbeat_timeout.is_zero() {
            return Err(Error::Config(
                "http_timeout and heartbeat_timeout must be positive".into(),
            ));
        }
        let credentials = match &self.secret {
            Some(secret) => Some(http::basic_auth(project, secret).ok_or_else(|| {
                Error::Config("the project secret cannot be sent in a header".into())
            })?),
            None => None,
        };
        let http = reqwest::Client::builder()
            .connect_timeout(self.http_timeout)
            .user_agent(concat!("hallpass-verifier/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let keys = Keys::new(
            format!("{base}/v1/sessions/jwks/{project}"),
            http.clone(),
            clock.clone(),
            self.http_timeout,
            self.unknown_kid_cooldown,
        );
        let policy = PolicyCache::new(
            format!("{base}/v1/rbac/policy"),
            http.clone(),
            clock.clone(),
            credentials.clone(),
            self.policy_ttl,
            self.http_timeout,
        );
        let (revocations, feed_task) = if self.revocation_feed {
            let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
                Error::Config(
                    "build() must run within a Tokio runtime when the revocation feed is on".into(),
                )
            })?;
            let revocations = Arc::new(Revocations::new(
                clock.clone(),
                self.leeway,
                self.feed_loss_bound,
            ));
            let follower = Follower::new(
                revocations.clone(),
                http,
                FollowerConfig {
                    poll_url: format!("{base}/v1/sessions/revocations/{project}"),
                    stream_url: format!("{base}/v1/sessions/revocations/{project}/stream"),
                    http_timeout: self.http_timeout,
                    long_poll_wait: self.long_poll_wait,
                    heartbeat_timeout: self.heartbeat_timeout,
                    transport: self.feed_transport,
                    credentials,
                },
            );
            let task = runtime.spawn(follower.run()).abort_handle();
            (Some(revocations), Some(task))
        } else {
            (None, None)
        };
        let mut validation = Validation::new(Algorithm::RS256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        Ok(Verifier {
            inner: Arc::new(Inner {
                validation,
                issuer: format!("stytch.com/{project}"),
                project_id: self.project_id,
                base_url: base,
                clock,
                leeway: self.leeway,
                max_token_age: self.max_token_age,
                fail_closed: self.fail_closed,
                keys,
                revocations,
                policy,
                feed_task,
            }),
        })
    }
}

#[derive(Deserialize)]
struct JoseHeader {
    alg: Option<String>,
    typ: Option<String>,
    kid: Option<String>,
    crit: Option<Value>,
}

/// jose's reading of `typ`: case-insensitive, `application/` optional.
fn is_jwt_type(typ: &str) -> bool {
    let typ = typ.to_ascii_lowercase();
    typ.strip_prefix("application/").unwrap_or(&typ) == "jwt"
}

impl Verifier {
    /// Starts configuring a verifier for `project_id`'s JWTs, issued by the hallpass at
    /// `base_url` (for example `https://auth.example.com`).
    pub fn builder(base_url: impl Into<String>, project_id: impl Into<String>) -> VerifierBuilder {
        VerifierBuilder {
            base_url: base_url.into(),
            project_id: project_id.into(),
            leeway: DEFAULT_LEEWAY,
            max_token_age: None,
            revocation_feed: true,
            feed_transport: FeedTransport::Auto,
            feed_loss_bound: DEFAULT_FEED_LOSS_BOUND,
            fail_closed: false,
            http_timeout: DEFAULT_HTTP_TIMEOUT,
            unknown_kid_cooldown: DEFAULT_UNKNOWN_KID_COOLDOWN,
            policy_ttl: DEFAULT_POLICY_TTL,
            long_poll_wait: DEFAULT_LONG_POLL_WAIT,
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
            secret: None,
            clock: None,
        }
    }

    /// The project whose JWTs this verifier accepts.
    pub fn project_id(&self) -> &str {
        &self.inner.project_id
    }

    /// The hallpass base URL (without a trailing slash).
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// Fetches the signing keys (unless cached) and, with the feed on, waits until the whole
    /// revocation feed has been read once. Call it before serving traffic; wrap it in a
    /// timeout, since it waits for as long as hallpass's feed is unreachable.
    pub async fn ready(&self) -> Result<(), Error> {
        self.inner.keys.load().await?;
        if let Some(revocations) = &self.inner.revocations {
            revocations.wait_synced().await;
        }
        Ok(())
    }

    /// Verifies a session JWT as the official Stytch SDKs do (RS256 only; `typ` JWT and `kid`
    /// required; `iss` = `stytch.com/{project_id}`; `aud` contains the project id; `exp`,
    /// `nbf`, `iat` required and checked with the leeway; the maximum token age), and refuses
    /// it if the feed reported its session revoked.
    pub async fn verify(&self, jwt: &str) -> Result<Session, Error> {
        let inner = &*self.inner;
        if inner.fail_closed
            && let Some(revocations) = &inner.revocations
            && revocations.refuses()
        {
            return Err(Error::FeedLost);
        }
        let mut parts = jwt.split('.');
        let (Some(header), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Error::Malformed("not three dot-separated parts".into()));
        };
        let header = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| Error::Malformed("the header is not base64url".into()))?;
        let header: JoseHeader = serde_json::from_slice(&header)
            .map_err(|_| Error::Malformed("the header is not a JSON object".into()))?;
        match header.alg.as_deref() {
            Some("RS256") => {}
            other => return Err(Error::UnsupportedAlgorithm(other.unwrap_or("").into())),
        }
        if !header.typ.as_deref().is_some_and(is_jwt_type) {
            return Err(Error::WrongType);
        }
        if header.crit.is_some() {
            // No extension is understood, so a critical one must be refused (RFC 7515 §4.1.11).
            return Err(Error::Malformed(
                "the header lists critical extensions".into(),
            ));
        }
        let kid = header.kid.ok_or(Error::MissingKeyId)?;
        let key = inner.keys.key(&kid).await?;
        let claims = jsonwebtoken::decode::<Map<String, Value>>(jwt, &key, &inner.validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => Error::BadSignature,
                _ => Error::Malformed(e.to_string()),
            })?
            .claims;
        let expected = Expected {
            issuer: &inner.issuer,
            project_id: &inner.project_id,
            leeway: i64::try_from(inner.leeway.as_secs()).unwrap_or(i64::MAX),
            max_age: inner
                .max_token_age
                .map(|m| i64::try_from(m.as_secs()).unwrap_or(i64::MAX)),
        };
        let session = check(claims, &expected, unix_seconds(inner.clock.now()))?;
        if inner
            .revocations
            .as_ref()
            .is_some_and(|r| r.is_revoked(&session.session_id))
        {
            return Err(Error::Revoked);
        }
        Ok(session)
    }

    /// The project's RBAC policy, from the cache or fetched (needs the project secret).
    pub async fn policy(&self) -> Result<Arc<Policy>, Error> {
        self.inner.policy.get().await
    }

    /// Checks that one of the session's roles may perform `action` on `resource_id`, as the
    /// SDKs and hallpass decide it. Denied ([`Error::PermissionDenied`]) when no role grants
    /// it, including for a resource or action the policy does not know; denied too
    /// ([`Error::PolicyUnavailable`]) when the policy cannot be fetched.
    pub async fn authorize(
        &self,
        session: &Session,
        resource_id: &str,
        action: &str,
    ) -> Result<Authorization, Error> {
        let policy = self.policy().await?;
        let granting_roles = policy.granting_roles(&session.roles, resource_id, action);
        if granting_roles.is_empty() {
            return Err(Error::PermissionDenied {
                resource_id: resource_id.to_string(),
                action: action.to_string(),
            });
        }
        Ok(Authorization { granting_roles })
    }

    /// The state of the key cache and of the revocation feed.
    pub fn health(&self) -> Health {
        let inner = &*self.inner;
        let keys = inner.keys.health();
        let feed = inner.revocations.as_ref().map(|r| r.health());
        let refuses = inner.fail_closed && inner.revocations.as_ref().is_some_and(|r| r.refuses());
        Health {
            accepting: inner.keys.loaded() && !refuses,
            keys,
            feed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typ_is_read_as_jose_reads_it() {
        for ok in ["JWT", "jwt", "application/jwt", "application/JWT"] {
            assert!(is_jwt_type(ok), "{ok}");
        }
        for bad in ["", "at+jwt", "JWS", "application/json"] {
            assert!(!is_jwt_type(bad), "{bad}");
        }
    }

    #[test]
    fn bad_configurations_are_refused_without_a_runtime() {
        let p = "project-test-11111111-1111-4111-8111-111111111111";
        let cases = [
            Verifier::builder("ftp://host", p),
            Verifier::builder("not a url", p),
            Verifier::builder("http://host/?q=1", p),
            Verifier::builder("http://host", "project/../x"),
            Verifier::builder("http://host", ""),
            Verifier::builder("http://host", p).long_poll_wait(Duration::from_secs(31)),
            // The feed is on by default and needs a runtime.
            Verifier::builder("http://host", p),
        ];
        for builder in cases {
            assert!(matches!(builder.build(), Err(Error::Config(_))));
        }
        let v = Verifier::builder("http://host:8080/", p)
            .revocation_feed(false)
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v.base_url(), "http://host:8080");
        assert!(v.health().feed.is_none());
        assert!(!v.health().accepting, "no keys yet");
    }
}
