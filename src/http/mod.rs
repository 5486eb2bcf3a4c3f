//! HTTP surface: request ids, our JSON extractor and reply envelope, caller authentication,
//! and one module per resource.

pub mod attest;
pub mod auth;
pub mod jwks;
pub mod magic_links;
pub mod migrate;
pub mod ops;
pub mod rbac;
pub mod revocations;
pub mod sessions;
pub mod users;
pub mod views;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Error;

pub mod request_id {
    //! What is known of the request being served, in a task-local for its whole life: its id
    //! (so every response, errors from extractors included, carries the id of the header and
    //! the logs), the route template it matched and the project that authenticated, for the
    //! access log and the metrics.

    use std::sync::{Arc, OnceLock};

    tokio::task_local! {
        static CURRENT: Arc<Context>;
    }

    #[derive(Debug, Default)]
    pub struct Context {
        pub id: String,
        route: OnceLock<String>,
        project: OnceLock<String>,
    }

    impl Context {
        pub fn new(id: String) -> Arc<Self> {
            Arc::new(Self {
                id,
                ..Default::default()
            })
        }

        /// The route template (`/v1/users/{user_id}`); `unmatched` when no route took it.
        pub fn route(&self) -> &str {
            self.route.get().map_or("unmatched", String::as_str)
        }

        /// The caller's project, once authenticated; `-` otherwise.
        pub fn project(&self) -> &str {
            self.project.get().map_or("-", String::as_str)
        }
    }

    pub async fn scope<F: std::future::Future>(context: Arc<Context>, f: F) -> F::Output {
        CURRENT.scope(context, f).await
    }

    pub fn current() -> String {
        CURRENT
            .try_with(|c| c.id.clone())
            .unwrap_or_else(|_| "request-id-test-00000000-0000-0000-0000-000000000000".into())
    }

    pub fn set_route(route: &str) {
        let _ = CURRENT.try_with(|c| c.route.set(route.to_string()));
    }

    pub fn set_project(project: String) {
        let _ = CURRENT.try_with(|c| c.project.set(project));
    }

    /// An incoming `X-Request-Id` we carry through: 1 to 128 characters, letters, digits and
    /// `-_.:` only (it ends up in logs and response headers).
    pub fn acceptable(id: &str) -> bool {
        (1..=128).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    }
}

/// A JSON body parsed into `T`; any failure is a 400 in our shape that names the field.
/// An empty body reads as `{}`.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| Error::bad_request(format!("could not read the request body: {e}")))?;
        parse_json(&bytes).map(Json)
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let bytes: &[u8] = match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => b"{}",
        Some(b'{') => bytes,
        Some(_) => return Err(Error::bad_request("request body must be a JSON object")),
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if matches!(path.as_str(), "." | "?" | "") {
                Error::bad_request(format!("request body is not valid JSON: {inner}"))
            } else {
                Error::bad_request(format!("{path}: {inner}"))
            }
        })
        .and_then(|v| {
            de.end().map(|()| v).map_err(|e| {
                Error::bad_request(format!("request body has data after the JSON value: {e}"))
            })
        })?;
    // Postgres text cannot hold U+0000, so neither backend stores it: refused wherever it is.
    // JSON can only spell it as an escape; the tree is walked only when one appears.
    if memchr_escape_nul(bytes)
        && let Ok(tree) = serde_json::from_slice::<serde_json::Value>(bytes)
        && let Some(path) = nul_path(&tree)
    {
        return Err(Error::bad_request(format!(
            "{path}: must not contain the NUL character (\\u0000)"
        )));
    }
    Ok(parsed)
}

fn memchr_escape_nul(bytes: &[u8]) -> bool {
    bytes.windows(6).any(|w| w.eq_ignore_ascii_case(b"\\u0000"))
}

/// The path of the first key or string value holding U+0000 (`name.first_name`, `a[2]`).
fn nul_path(v: &serde_json::Value) -> Option<String> {
    nul_segments(v).map(|p| p.strip_prefix('.').map(str::to_string).unwrap_or(p))
}

fn nul_segments(v: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    match v {
        Value::String(s) if s.contains('\0') => Some(String::new()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_segments(item).map(|p| format!("[{i}]{p}"))),
        Value::Object(map) => map.iter().find_map(|(k, item)| {
            if k.contains('\0') {
                Some(format!(".{}", k.escape_debug()))
            } else {
                nul_segments(item).map(|p| format!(".{k}{p}"))
            }
        }),
        _ => None,
    }
}

/// For a field holding a nested object: only a JSON object (or null) is accepted. A derived
/// struct would also take an array, its fields by position, which no client means.
pub fn object<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: DeserializeOwned,
{
    use serde::Deserialize;
    use serde::de::Error as _;
    match Option::<serde_json::Map<String, serde_json::Value>>::deserialize(d)? {
        None => Ok(None),
        Some(map) => serde_path_to_error::deserialize(serde_json::Value::Object(map))
            .map(Some)
            .map_err(|e| {
                let path = e.path().to_string();
                match path.as_str() {
                    "." | "?" | "" => D::Error::custom(e.into_inner()),
                    _ => D::Error::custom(format!("{path}: {}", e.into_inner())),
                }
            }),
    }
}

/// Refuses a path or query value holding U+0000 (see `parse_json`).
fn refuse_nul(what: &str, text: &str) -> Result<(), Error> {
    if text.contains('\0') {
        return Err(Error::bad_request(format!(
            "{what}: must not contain the NUL character"
        )));
    }
    Ok(())
}

/// A path segment; a malformed one (bad percent-encoding) is a 400 in our shape.
pub struct PathText(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathText {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| Error::bad_request(format!("path: {}", e.body_text())))
            .and_then(|p| refuse_nul("path", &p.0).map(|()| PathText(p.0)))
    }
}

/// Query parameters parsed into `T` (unknown ones ignored); failures are 400s in our shape.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        let raw = parts.uri.query().unwrap_or_default();
        if raw.contains('\0') || raw.to_ascii_lowercase().contains("%00") {
            // Names the parameter, as the body check names the field.
            let name = raw
                .split('&')
                .find(|p| p.to_ascii_lowercase().contains("%00"))
                .and_then(|p| p.split('=').next())
                .unwrap_or("query");
            refuse_nul(name, "\0")?;
        }
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| Error::bad_request(format!("query: {}", e.body_text())))
    }
}

/// A 200 reply: `request_id` and `status_code` followed by the fields of `T`.
pub struct Reply<T>(pub T);

#[derive(Serialize)]
struct Envelope<'a, T> {
    request_id: &'a str,
    status_code: u16,
    #[serde(flatten)]
    body: &'a T,
}

impl<T: Serialize> IntoResponse for Reply<T> {
    fn into_response(self) -> Response {
        let id = request_id::current();
        // Sized for an authenticate reply, the most frequent, so it is written without regrowing.
        let mut bytes = Vec::with_capacity(2048);
        let envelope = Envelope {
            request_id: &id,
            status_code: 200,
            body: &self.0,
        };
        match serde_json::to_writer(&mut bytes, &envelope) {
            Ok(()) => json_response(StatusCode::OK, bytes),
            Err(e) => Error::internal(format!("serialising a reply: {e}")).into_response(),
        }
    }
}

pub fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Treats `""` like an absent field: SDKs send empty strings for unset options.
pub fn present(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|v| !v.is_empty())
}
