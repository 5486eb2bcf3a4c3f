//! The one error type that crosses the HTTP boundary, rendered as Stytch error JSON.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::http::request_id;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Unauthorized credentials.")]
    Unauthorized,
    #[error("Session could not be found.")]
    SessionNotFound,
    #[error("Request must include either session_token or session_jwt.")]
    NoSessionArguments,
    #[error("Request must include only one of session_token or session_jwt.")]
    TooManySessionArguments,
    #[error("Request must include one of session_id, session_token, session_jwt or user_id.")]
    NoSessionRevokeArguments,
    #[error("Request must include only one of session_id, session_token, session_jwt or user_id.")]
    TooManySessionRevokeArguments,
    #[error("session_id format is invalid.")]
    InvalidSessionId,
    #[error("session_duration_minutes must be between 5 and 527040 (366 days).")]
    InvalidSessionDuration,
    #[error("session_custom_claims exceeds 4096 bytes.")]
    CustomClaimsTooLarge,
    #[error("session_jwt could not be parsed or verified.")]
    UnparsableJwt,
    #[error("User could not be found.")]
    UserNotFound,
    #[error("A user with this email already exists for this project.")]
    DuplicateEmail,
    #[error("email format is invalid.")]
    InvalidEmail,
    #[error("Magic link could not be authenticated: it is unknown, used or expired.")]
    MagicLinkNotFound,
    #[error("The email returned by the userinfo endpoint matches no user.")]
    MigrateEmailDoesNotExist,
    #[error("The userinfo endpoint answered unexpectedly: {0}")]
    MigrateUnexpectedResponse(String),
    #[error("This project has no userinfo URL configured.")]
    InvalidUserinfoUrl,
    #[error("The user is not authorized to perform the requested action on that resource.")]
    AuthorizationDenied,
    /// A trusted auth token (attest) refused, with the status and type of that failure.
    #[error("{message}")]
    Attest {
        status: StatusCode,
        error_type: &'static str,
        message: String,
    },
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error(
        "This cursor is older than the revocation events kept; resync from the start (without `after`)."
    )]
    CursorExpired,
    #[error("Request body exceeds {0} bytes.")]
    PayloadTooLarge(usize),
    #[error("Too many requests; retry after {0} seconds.")]
    TooManyRequests(u64),
    #[error("The service is temporarily unavailable; retry shortly.")]
    ServiceUnavailable,
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest(message.into())
    }

    pub fn internal(what: impl std::fmt::Display) -> Self {
        Self::Internal(what.to_string())
    }

    /// HTTP status and Stytch `error_type`, in one place.
    pub fn status_and_type(&self) -> (StatusCode, &'static str) {
        use Error::*;
        match self {
            Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized_credentials"),
            SessionNotFound => (StatusCode::NOT_FOUND, "session_not_found"),
            NoSessionArguments => (StatusCode::BAD_REQUEST, "no_session_arguments"),
            TooManySessionArguments => (StatusCode::BAD_REQUEST, "too_many_session_arguments"),
            NoSessionRevokeArguments => (StatusCode::BAD_REQUEST, "no_session_revoke_arguments"),
            TooManySessionRevokeArguments => {
                (StatusCode::BAD_REQUEST, "too_many_session_revoke_arguments")
            }
            InvalidSessionId => (StatusCode::BAD_REQUEST, "invalid_session_id"),
            InvalidSessionDuration => (StatusCode::BAD_REQUEST, "invalid_session_duration_minutes"),
            CustomClaimsTooLarge => (StatusCode::BAD_REQUEST, "custom_claims_too_large"),
            UnparsableJwt => (StatusCode::UNAUTHORIZED, "unable_to_parse_session_jwt"),
            UserNotFound => (StatusCode::NOT_FOUND, "user_not_found"),
            DuplicateEmail => (StatusCode::BAD_REQUEST, "duplicate_email"),
            InvalidEmail => (StatusCode::BAD_REQUEST, "invalid_email"),
            MagicLinkNotFound => (StatusCode::NOT_FOUND, "magic_link_not_found"),
            MigrateEmailDoesNotExist => (
                StatusCode::NOT_FOUND,
                "migrate_from_external_email_does_not_exist",
            ),
            MigrateUnexpectedResponse(_) => (
                StatusCode::BAD_REQUEST,
                "migrate_from_external_unexpected_response",
            ),
            InvalidUserinfoUrl => (StatusCode::BAD_REQUEST, "invalid_userinfo_url"),
            AuthorizationDenied => (
                StatusCode::FORBIDDEN,
                "consumer_session_authorization_error",
            ),
            Attest {
                status, error_type, ..
            } => (*status, error_type),
            BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            CursorExpired => (StatusCode::GONE, "revocation_cursor_expired"),
            PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "bad_request"),
            TooManyRequests(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
            ServiceUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "service_unavailable"),
            Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_server_error"),
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        crate::metrics::database_error(&sqlstate_class(&e));
        if is_unavailable(&e) {
            tracing::warn!(error = %e, "database unavailable");
            return Self::ServiceUnavailable;
        }
        Self::Internal(format!("database: {e}"))
    }
}

/// The SQLSTATE class of a database error (SQLite's result code as is), or what failed
/// below SQL: `io`, `tls`, `pool`, `protocol`, `decode`, `other`.
fn sqlstate_class(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => match d.code() {
            Some(code) if code.len() == 5 => code[..2].to_string(),
            Some(code) => format!("sqlite_{code}"),
            None => "other".into(),
        },
        sqlx::Error::Io(_) => "io".into(),
        sqlx::Error::Tls(_) => "tls".into(),
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => "pool".into(),
        sqlx::Error::Protocol(_) => "protocol".into(),
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => "decode".into(),
        _ => "other".into(),
    }
}

/// Whether a database error says the database is away, restarting or saturated, so that the
/// caller may retry (503), rather than that the statement is wrong (a bug, 500): pool and
/// connection failures, SQLSTATE classes 08 (connection exception), 57 (operator
/// intervention: shutting down, starting up, terminated), 53 (insufficient resources), 58
/// (system error: I/O) and 40 (serialization failure, deadlock), 25006 (a read-only
/// transaction: a standby after a failover), and SQLite's codes for the same conditions
/// (busy, locked, out of memory, read-only, I/O error, disk full, cannot open), so that both
/// backends answer a database in trouble alike.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d) => {
            let code = d.code();
            let code = code.as_deref().unwrap_or_default();
            matches!(code.get(..2), Some("08" | "57" | "53" | "40" | "58"))
                // A read-only transaction: connected to a standby (during a failover).
                || code == "25006"
                // SQLite: busy, locked, out of memory, read-only, I/O error, disk full,
                // cannot open (7, 8, 10, 13, 14), with extended codes.
                || matches!(
                    code.parse::<i32>().map(|c| c & 0xff),
                    Ok(5 | 6 | 7 | 8 | 10 | 13 | 14)
                ) && code.len() <= 4
        }
        _ => false,
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    status_code: u16,
    request_id: &'a str,
    error_type: &'static str,
    error_message: String,
    error_url: String,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, error_type) = self.status_and_type();
        let id = request_id::current();
        let error_message = match &self {
            Error::Internal(detail) => {
                // Logged once, here, with the request id; the client gets a fixed message.
                tracing::error!(request_id = %id, detail = %detail, "internal error");
                "An internal error occurred.".to_string()
            }
            other => other.to_string(),
        };
        let body = ErrorBody {
            status_code: status.as_u16(),
            request_id: &id,
            error_type,
            error_message,
            error_url: format!("https://stytch.com/docs/api/errors/{}", status.as_u16()),
        };
        let mut response = (status, axum::Json(body)).into_response();
        if let Error::TooManyRequests(after) = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(after));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::is_unavailable;

    /// A database error carrying only a code, as Postgres (SQLSTATE) or SQLite (a number)
    /// would report it.
    #[derive(Debug)]
    struct Coded(&'static str);

    impl std::fmt::Display for Coded {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "code {}", self.0)
        }
    }

    impl std::error::Error for Coded {}

    impl sqlx::error::DatabaseError for Coded {
        fn message(&self) -> &str {
            self.0
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.0))
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    fn unavailable(code: &'static str) -> bool {
        is_unavailable(&sqlx::Error::Database(Box::new(Coded(code))))
    }

    #[test]
    fn a_database_in_trouble_is_unavailable_on_both_backends() {
        // Postgres: connection, shutdown, resources (disk full 53100), I/O (58030),
        // deadlock, a standby's read-only transaction.
        for code in ["08006", "57P01", "53100", "58030", "40P01", "25006"] {
            assert!(unavailable(code), "{code}");
        }
        // SQLite: busy, locked, out of memory, read-only, I/O error (and IOERR_READ, 266),
        // disk full, cannot open.
        for code in ["5", "6", "7", "8", "10", "266", "13", "14", "517"] {
            assert!(unavailable(code), "{code}");
        }
        // A statement's own fault stays a 500 (or is mapped where it is expected):
        // Postgres unique and foreign-key violations, undefined table; SQLite constraint
        // (19, 1555, 787), SQL error (1).
        for code in ["23505", "23503", "42P01", "19", "1555", "787", "1"] {
            assert!(!unavailable(code), "{code}");
        }
    }
}
