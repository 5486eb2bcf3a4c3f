//! `hallpass-verifier`: verify [hallpass](https://crates.io/crates/hallpass) session JWTs
//! locally, in a relying service, without a round trip per request.
//!
//! - The project's signing keys are fetched from hallpass's JWKS and cached for the
//!   `Cache-Control: max-age` they are served with, revalidated with `If-None-Match`, refetched
//!   (at most once per cooldown) when a JWT names an unknown `kid`, and kept when hallpass is
//!   unreachable.
//! - JWTs are verified exactly as the official Stytch SDKs verify them (RS256, `typ`, `kid`,
//!   `iss`, `aud`, `exp`/`nbf`/`iat` with a leeway, optional maximum age) into a typed
//!   [`Session`].
//! - A background task follows hallpass's revocation feed (Server-Sent Events, falling back
//!   to long-polling) so that a revoked session's JWTs are refused within a second of the
//!   revoke, not when they expire.
//! - [`Verifier::authorize`] checks a permission against the project's RBAC policy.
//! - With the `axum` feature (on by default), the [`Authenticated`] extractor and the
//!   [`AuthLayer`] authenticate requests from `Authorization: Bearer` or a cookie.
//!
//! ```no_run
//! # async fn example() -> Result<(), hallpass_verifier::Error> {
//! use std::time::Duration;
//! use hallpass_verifier::Verifier;
//!
//! let verifier = Verifier::builder("https://auth.example.com", "project-live-…")
//!     .project_secret(std::env::var("HALLPASS_SECRET").unwrap_or_default())
//!     .build()?;
//! tokio::time::timeout(Duration::from_secs(10), verifier.ready())
//!     .await
//!     .map_err(|_| hallpass_verifier::Error::KeysUnavailable("timed out".into()))??;
//! let session = verifier.verify("eyJ…").await?;
//! verifier.authorize(&session, "documents", "read").await?;
//! # Ok(()) }
//! ```
//!
//! See the README for the revocation model and the failure modes.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod clock;
mod error;
mod feed;
mod health;
mod http;
mod jwks;
mod rbac;
mod session;
mod sse;
mod verifier;

#[cfg(feature = "axum")]
mod extract;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::Error;
pub use health::{FeedHealth, FeedTransport, Health, KeysHealth};
pub use rbac::{Authorization, Permission, Policy, Resource, Role, Scope};
pub use session::{Attributes, SESSION_CLAIM, Session};
pub use verifier::{Verifier, VerifierBuilder};

#[cfg(feature = "axum")]
pub use extract::{
    AuthLayer, AuthRejection, AuthService, Authenticated, Authenticator, STYTCH_SESSION_COOKIE,
};
