//! Every way verification, authorization or construction can fail, each a distinct variant so
//! that callers can tell a bad token (the client's fault) from a verifier that cannot decide
//! (hallpass unreachable, feed lost), and a denial from an unavailable policy.

/// Why a JWT was refused, a permission denied, or a [`Verifier`](crate::Verifier) not built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Not three base64url parts with a JSON header and claims, a claim of the wrong type, or
    /// a session claim without its required fields.
    #[error("the token is not a well-formed session JWT: {0}")]
    Malformed(String),
    /// The header's `alg` is not `RS256`.
    #[error("the JWT's algorithm {0:?} is not RS256")]
    UnsupportedAlgorithm(String),
    /// The header's `typ` is missing or not `JWT`.
    #[error("the JWT's typ header is missing or not \"JWT\"")]
    WrongType,
    /// The header has no `kid`.
    #[error("the JWT's header has no kid")]
    MissingKeyId,
    /// No key of the project's JWKS has this `kid` (after the refetch an unknown kid allows).
    #[error("no published key has kid {0:?}")]
    UnknownKey(String),
    /// The signature does not verify with the key the `kid` names.
    #[error("the JWT's signature does not verify")]
    BadSignature,
    /// `iss` is not `stytch.com/{project_id}`.
    #[error("the JWT's iss is not this project's issuer")]
    WrongIssuer,
    /// `aud` does not contain the project id.
    #[error("the JWT's aud does not name this project")]
    WrongAudience,
    /// A required claim (`exp`, `nbf`, `iat`, `sub`, the session claim) is absent.
    #[error("the JWT has no {0} claim")]
    MissingClaim(&'static str),
    /// `exp` is past (beyond the leeway).
    #[error("the JWT has expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("the JWT is not valid yet (nbf)")]
    NotYetValid,
    /// `iat` is in the future (beyond the leeway).
    #[error("the JWT was issued in the future (iat)")]
    IssuedInFuture,
    /// `now - iat` reached the configured maximum token age.
    #[error("the JWT is older than the configured maximum token age")]
    TooOld,
    /// The revocation feed reported the JWT's session revoked.
    #[error("the session has been revoked")]
    Revoked,
    /// No signing keys could ever be fetched from hallpass, so nothing can be verified.
    #[error("no signing keys are available: {0}")]
    KeysUnavailable(String),
    /// The verifier is configured to fail closed and the revocation feed has not synced yet
    /// or has been lost for longer than the configured bound.
    #[error("the revocation feed is lost (or has not synced yet) and the verifier fails closed")]
    FeedLost,
    /// None of the session's roles grants the action on the resource (including a resource or
    /// an action the policy does not know).
    #[error("no role of the session grants {action:?} on {resource_id:?}")]
    PermissionDenied {
        /// The resource of the check.
        resource_id: String,
        /// The action of the check.
        action: String,
    },
    /// The RBAC policy could not be fetched (or no project secret is configured); every
    /// authorization is denied meanwhile.
    #[error("the RBAC policy is unavailable: {0}")]
    PolicyUnavailable(String),
    /// The builder was given an invalid setting, or `build` ran outside a Tokio runtime.
    #[error("invalid verifier configuration: {0}")]
    Config(String),
}

impl Error {
    /// True when the token itself is at fault (malformed, wrong, expired, revoked): answer
    /// 401. False when the verifier could not decide or a permission was denied.
    pub fn is_token_error(&self) -> bool {
        !matches!(
            self,
            Error::KeysUnavailable(_)
                | Error::FeedLost
                | Error::PermissionDenied { .. }
                | Error::PolicyUnavailable(_)
                | Error::Config(_)
        )
    }

    /// A stable machine-readable name for the error, used in HTTP error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Malformed(_) => "jwt_malformed",
            Error::UnsupportedAlgorithm(_) => "jwt_unsupported_algorithm",
            Error::WrongType => "jwt_wrong_type",
            Error::MissingKeyId => "jwt_missing_kid",
            Error::UnknownKey(_) => "jwt_unknown_kid",
            Error::BadSignature => "jwt_bad_signature",
            Error::WrongIssuer => "jwt_wrong_issuer",
            Error::WrongAudience => "jwt_wrong_audience",
            Error::MissingClaim(_) => "jwt_missing_claim",
            Error::Expired => "jwt_expired",
            Error::NotYetValid => "jwt_not_yet_valid",
            Error::IssuedInFuture => "jwt_issued_in_future",
            Error::TooOld => "jwt_too_old",
            Error::Revoked => "session_revoked",
            Error::KeysUnavailable(_) => "keys_unavailable",
            Error::FeedLost => "revocation_feed_lost",
            Error::PermissionDenied { .. } => "permission_denied",
            Error::PolicyUnavailable(_) => "policy_unavailable",
            Error::Config(_) => "configuration_error",
        }
    }
}
