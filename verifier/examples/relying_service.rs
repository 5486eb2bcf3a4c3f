//! A relying service that trusts hallpass sessions: `/me` needs a valid session JWT (Bearer or
//! the `stytch_session_jwt` cookie), `/documents/{id}` also needs the `documents:read`
//! permission, and `/healthz` reports the verifier's health.
//!
//! ```sh
//! HALLPASS_URL=http://127.0.0.1:8080 HALLPASS_PROJECT_ID=project-test-… HALLPASS_SECRET=… \
//!   cargo run -p hallpass-verifier --example relying_service
//! curl -H "Authorization: Bearer $JWT" http://127.0.0.1:3000/me
//! ```

use std::time::{Duration, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use hallpass_verifier::{Authenticated, Authenticator, Verifier};
use serde_json::json;

/// `/me`: who the session is.
async fn me(Authenticated(session): Authenticated) -> Json<serde_json::Value> {
    Json(json!({
        "session_id": session.session_id,
        "user_id": session.user_id,
        "roles": session.roles,
        "custom_claims": session.custom_claims,
    }))
}

/// `/documents/{id}`: only for roles granted `read` on `documents` by the project's policy.
async fn document(
    State(auth): State<Authenticator>,
    session: Authenticated,
    Path(id): Path<String>,
) -> Response {
    match auth
        .verifier()
        .authorize(&session, "documents", "read")
        .await
    {
        Ok(grant) => {
            Json(json!({"document": id, "granted_by": grant.granting_roles})).into_response()
        }
        // 403 when denied, 503 when the policy cannot be fetched: never served.
        Err(e) => e.into_response(),
    }
}

/// `/healthz`: 200 while JWTs can be verified, 503 otherwise, with the details.
async fn healthz(State(auth): State<Authenticator>) -> Response {
    let h = auth.verifier().health();
    let unix = |t: Option<std::time::SystemTime>| {
        t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
    };
    let body = json!({
        "accepting": h.accepting,
        "keys": {
            "loaded": h.keys.loaded,
            "age_seconds": h.keys.age.map(|a| a.as_secs()),
            "stale": h.keys.stale,
            "last_error": h.keys.last_error,
        },
        "feed": h.feed.as_ref().map(|f| json!({
            "synced": f.synced,
            "connected": f.connected,
            "since": unix(Some(f.since)),
            "last_event_at": unix(f.last_event_at),
            "revoked_sessions": f.revoked_sessions,
            "lost": f.lost,
            "last_error": f.last_error,
        })),
    });
    let status = if h.accepting {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let var = |name: &str| std::env::var(name).map_err(|_| format!("set {name}"));
    let mut builder = Verifier::builder(var("HALLPASS_URL")?, var("HALLPASS_PROJECT_ID")?);
    if let Ok(secret) = var("HALLPASS_SECRET") {
        builder = builder.project_secret(secret);
    }
    let verifier = builder.build()?;
    // Serve only once the keys are loaded and every kept revocation is known.
    tokio::time::timeout(Duration::from_secs(30), verifier.ready()).await??;

    let app = Router::new()
        .route("/me", get(me))
        .route("/documents/{id}", get(document))
        .route("/healthz", get(healthz))
        .with_state(Authenticator::new(verifier));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("relying service on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
