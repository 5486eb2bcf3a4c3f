//! Small HTTP helpers shared by the JWKS cache, the revocation feed and the policy cache:
//! Basic credentials, `Cache-Control` parsing, reading bounded bodies and describing
//! hallpass's JSON error answers.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::header::HeaderValue;

/// Largest body read from hallpass (a JWKS, a policy, a page of revocations).
pub(crate) const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// `Authorization: Basic base64(project_id:secret)`, marked sensitive so it is never logged.
pub(crate) fn basic_auth(project_id: &str, secret: &str) -> Option<HeaderValue> {
    let encoded = STANDARD.encode(format!("{project_id}:{secret}"));
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// The freshness a `Cache-Control` header grants: `max-age=N` seconds, zero for `no-cache`
/// or `no-store`, `None` when the header says nothing about it.
pub(crate) fn cache_max_age(header: Option<&HeaderValue>) -> Option<Duration> {
    let text = header?.to_str().ok()?;
    let mut max_age = None;
    for directive in text.split(',') {
        let directive = directive.trim();
        let (name, value) = match directive.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (directive, None),
        };
        if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
            return Some(Duration::ZERO);
        }
        if name.eq_ignore_ascii_case("max-age")
            && let Some(seconds) = value.and_then(|v| v.parse::<u64>().ok())
        {
            max_age = Some(Duration::from_secs(seconds));
        }
    }
    max_age
}

/// Reads a response body, refusing one larger than [`MAX_BODY_BYTES`].
pub(crate) async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BODY_BYTES as u64)
    {
        return Err("response body too large".into());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(describe)? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err("response body too large".into());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A short description of an unexpected answer: its status and, for hallpass's JSON error
/// shape, its `error_type` and `error_message`.
pub(crate) async fn describe_failure(response: reqwest::Response) -> String {
    let status = response.status();
    let detail = read_body(response)
        .await
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| {
            let t = v.get("error_type")?.as_str()?.to_string();
            let m = v
                .get("error_message")
                .and_then(|m| m.as_str())
                .unwrap_or("");
            Some(format!(": {t}: {m}"))
        })
        .unwrap_or_default();
    format!("HTTP {status}{detail}")
}

/// A transport error's description, with its causes (reqwest's own message is terse).
pub(crate) fn describe(e: reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Option<Duration> {
        cache_max_age(Some(
            &HeaderValue::from_str(s).unwrap_or_else(|e| panic!("{e}")),
        ))
    }

    #[test]
    fn cache_control_max_age() {
        assert_eq!(h("public, max-age=300"), Some(Duration::from_secs(300)));
        assert_eq!(h("MAX-AGE=\"7\""), Some(Duration::from_secs(7)));
        assert_eq!(h("max-age=60, no-cache"), Some(Duration::ZERO));
        assert_eq!(h("no-store"), Some(Duration::ZERO));
        assert_eq!(h("public"), None);
        assert_eq!(h("max-age=soon"), None);
        assert_eq!(cache_max_age(None), None);
    }

    #[test]
    fn basic_credentials_are_base64_and_sensitive() {
        let v = basic_auth("project-test-x", "s3cret").unwrap_or_else(|| panic!("header"));
        assert_eq!(v.to_str().ok(), Some("Basic cHJvamVjdC10ZXN0LXg6czNjcmV0"));
        assert!(v.is_sensitive());
    }
}
