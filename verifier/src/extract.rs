//! axum integration (feature `axum`): the [`Authenticated`] extractor, the [`AuthLayer`] that
//! protects whole routers, and HTTP answers for [`Error`].
//!
//! The session JWT is read from `Authorization: Bearer …` or, failing that, from a cookie
//! (Stytch's `stytch_session_jwt` by default). A bearer token that is present is the one
//! verified: an invalid one is refused, never replaced by the cookie.

use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{FromRef, FromRequestParts, OptionalFromRequestParts};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, WWW_AUTHENTICATE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::{Error, Session, Verifier};

/// The cookie the Stytch frontend SDKs keep the session JWT in.
pub const STYTCH_SESSION_COOKIE: &str = "stytch_session_jwt";

/// A [`Verifier`] and where requests carry their session JWT. Put it in the router's state
/// (so that `Authenticator: FromRef<State>`) to use [`Authenticated`], or make an
/// [`AuthLayer`] of it.
#[derive(Clone, Debug)]
pub struct Authenticator {
    verifier: Verifier,
    cookie: Option<Arc<str>>,
    bearer: bool,
}

impl From<Verifier> for Authenticator {
    fn from(verifier: Verifier) -> Self {
        Self::new(verifier)
    }
}

impl Authenticator {
    /// Reads `Authorization: Bearer` and the `stytch_session_jwt` cookie.
    pub fn new(verifier: Verifier) -> Self {
        Self {
            verifier,
            cookie: Some(Arc::from(STYTCH_SESSION_COOKIE)),
            bearer: true,
        }
    }

    /// Reads the JWT from this cookie instead of `stytch_session_jwt`.
    #[must_use]
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie = Some(Arc::from(name.into()));
        self
    }

    /// Reads no cookie (only `Authorization: Bearer`).
    #[must_use]
    pub fn without_cookie(mut self) -> Self {
        self.cookie = None;
        self
    }

    /// Ignores `Authorization` (only the cookie).
    #[must_use]
    pub fn without_bearer(mut self) -> Self {
        self.bearer = false;
        self
    }

    /// The verifier.
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// A layer that authenticates every request of the routes it wraps.
    pub fn layer(&self) -> AuthLayer {
        AuthLayer { auth: self.clone() }
    }

    /// The session JWT the request carries, if any.
    pub fn token<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        if self.bearer {
            for value in headers.get_all(AUTHORIZATION) {
                let Some((scheme, token)) = value.to_str().ok().and_then(|v| v.split_once(' '))
                else {
                    continue;
                };
                let token = token.trim();
                if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() {
                    return Some(token);
                }
            }
        }
        let name = self.cookie.as_deref()?;
        for value in headers.get_all(COOKIE) {
            let Ok(value) = value.to_str() else {
                continue;
            };
            for pair in value.split(';') {
                if let Some((k, v)) = pair.split_once('=')
                    && k.trim() == name
                {
                    let v = v.trim().trim_matches('"');
                    if !v.is_empty() {
                        return Some(v);
                    }
                }
            }
        }
        None
    }

    /// Verifies the request's session JWT.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Session, AuthRejection> {
        let token = self.token(headers).ok_or(AuthRejection { error: None })?;
        self.verifier
            .verify(token)
            .await
            .map_err(|e| AuthRejection { error: Some(e) })
    }
}

/// The session of an authenticated request. Answers 401 when the request has no valid
/// session JWT (503 when the verifier cannot decide). As `Option<Authenticated>`, a request
/// without any JWT gives `None` (one with an invalid JWT is still refused).
///
/// Behind an [`AuthLayer`] it takes the session the layer verified.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Session);

impl Deref for Authenticated {
    type Target = Session;

    fn deref(&self) -> &Session {
        &self.0
    }
}

impl<S> FromRequestParts<S> for Authenticated
where
    Authenticator: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(session) = parts.extensions.get::<Session>() {
            return Ok(Self(session.clone()));
        }
        let auth = Authenticator::from_ref(state);
        auth.authenticate(&parts.headers).await.map(Self)
    }
}

impl<S> OptionalFromRequestParts<S> for Authenticated
where
    Authenticator: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        if let Some(session) = parts.extensions.get::<Session>() {
            return Ok(Some(Self(session.clone())));
        }
        let auth = Authenticator::from_ref(state);
        if auth.token(&parts.headers).is_none() {
            return Ok(None);
        }
        auth.authenticate(&parts.headers)
            .await
            .map(|s| Some(Self(s)))
    }
}

/// Why a request was not authenticated: no JWT, or the [`Error`] its JWT was refused with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRejection {
    error: Option<Error>,
}

impl AuthRejection {
    /// The verification error; `None` when the request carried no JWT.
    pub fn error(&self) -> Option<&Error> {
        self.error.as_ref()
    }

    /// The HTTP status of the answer: 401, or 503 when the verifier cannot decide.
    pub fn status(&self) -> StatusCode {
        self.error
            .as_ref()
            .map_or(StatusCode::UNAUTHORIZED, status_of)
    }
}

impl fmt::Display for AuthRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.error {
            None => f.write_str("no session JWT in the request"),
            Some(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for AuthRejection {}

fn status_of(e: &Error) -> StatusCode {
    match e {
        _ if e.is_token_error() => StatusCode::UNAUTHORIZED,
        Error::PermissionDenied { .. } => StatusCode::FORBIDDEN,
        Error::KeysUnavailable(_) | Error::FeedLost | Error::PolicyUnavailable(_) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "status_code": status.as_u16(),
        "error_type": code,
        "error_message": message,
    });
    (
        status,
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        body.to_string(),
    )
        .into_response()
}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        let Some(error) = self.error else {
            let mut r = json_error(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "No session JWT in the request.",
            );
            r.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        };
        error.into_response()
    }
}

/// 401 for a refused token (with `WWW-Authenticate`), 403 for a denied permission, 503 when
/// keys, the feed (failing closed) or the policy are unavailable.
impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = status_of(&self);
        let mut r = json_error(status, self.code(), &self.to_string());
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        r
    }
}

/// A tower layer that refuses requests without a valid session JWT and puts the [`Session`]
/// in the request's extensions (read it with [`Authenticated`] or `Extension<Session>`).
#[derive(Clone, Debug)]
pub struct AuthLayer {
    auth: Authenticator,
}

impl AuthLayer {
    /// A layer reading the JWT as `auth` says.
    pub fn new(auth: impl Into<Authenticator>) -> Self {
        Self { auth: auth.into() }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            auth: self.auth.clone(),
            inner,
        }
    }
}

/// The service [`AuthLayer`] wraps around a route.
#[derive(Clone, Debug)]
pub struct AuthService<S> {
    auth: Authenticator,
    inner: S,
}

impl<S, B> tower_service::Service<Request<B>> for AuthService<S>
where
    S: tower_service::Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The clone that was polled ready is the one that is called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        Box::pin(async move {
            match auth.authenticate(request.headers()).await {
                Ok(session) => {
                    request.extensions_mut().insert(session);
                    inner.call(request).await
                }
                Err(rejection) => Ok(rejection.into_response()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Authenticator {
        let v = Verifier::builder("http://127.0.0.1:9", "project-test-x")
            .revocation_feed(false)
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        Authenticator::new(v)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                *k,
                HeaderValue::from_str(v).unwrap_or_else(|e| panic!("{e}")),
            );
        }
        h
    }

    #[test]
    fn bearer_first_then_the_cookie() {
        let a = auth();
        assert_eq!(
            a.token(&headers(&[("authorization", "Bearer abc")])),
            Some("abc")
        );
        assert_eq!(
            a.token(&headers(&[("authorization", "bearer  abc ")])),
            Some("abc")
        );
        let both = headers(&[
            ("authorization", "Bearer abc"),
            ("cookie", "stytch_session_jwt=def"),
        ]);
        assert_eq!(a.token(&both), Some("abc"));
        let basic = headers(&[
            ("authorization", "Basic eDp5"),
            ("cookie", "a=1; stytch_session_jwt=def; b=2"),
        ]);
        assert_eq!(a.token(&basic), Some("def"));
        assert_eq!(a.token(&headers(&[("cookie", "other=1")])), None);
        assert_eq!(a.token(&HeaderMap::new()), None);
    }

    #[test]
    fn cookie_name_and_sources_are_configurable() {
        let a = auth().cookie_name("sid").without_bearer();
        let h = headers(&[
            ("authorization", "Bearer abc"),
            ("cookie", "stytch_session_jwt=def"),
            ("cookie", "sid=\"ghi\""),
        ]);
        assert_eq!(a.token(&h), Some("ghi"));
        let a = auth().without_cookie();
        assert_eq!(
            a.token(&headers(&[("cookie", "stytch_session_jwt=def")])),
            None
        );
    }

    #[test]
    fn errors_map_to_statuses() {
        assert_eq!(status_of(&Error::Expired), StatusCode::UNAUTHORIZED);
        assert_eq!(status_of(&Error::Revoked), StatusCode::UNAUTHORIZED);
        assert_eq!(status_of(&Error::FeedLost), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            status_of(&Error::PolicyUnavailable(String::new())),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status_of(&Error::PermissionDenied {
                resource_id: "r".into(),
                action: "a".into()
            }),
            StatusCode::FORBIDDEN
        );
        let r = AuthRejection { error: None }.into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok()),
            Some("Bearer")
        );
    }
}
