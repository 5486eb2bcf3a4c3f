//! RBAC: grants and denials against the fetched policy, the policy cached five minutes, and a
//! fetch failure (or no secret) denying every check.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hallpass_verifier::{Error, Session, Verifier};

use crate::common::*;

async fn session(v: &Verifier) -> Session {
    v.verify(&keys()[0].mint(&session_id(1), T0)).await.unwrap()
}

fn denied(resource_id: &str, action: &str) -> Error {
    Error::PermissionDenied {
        resource_id: resource_id.into(),
        action: action.into(),
    }
}

#[tokio::test]
async fn checks_are_granted_by_a_held_role_and_denied_otherwise() {
    let fake = Fake::start().await;
    let clock = clock();
    let v = builder(&fake, &clock)
        .revocation_feed(false)
        .project_secret(SECRET)
        .build()
        .unwrap();
    let s = session(&v).await; // roles: stytch_user, editor
    let granted = v.authorize(&s, "documents", "write").await.unwrap();
    assert_eq!(granted.granting_roles, ["editor"]);
    assert!(v.authorize(&s, "documents", "read").await.is_ok());
    assert_eq!(
        v.authorize(&s, "documents", "delete").await.err(),
        Some(denied("documents", "delete"))
    );
    assert_eq!(
        v.authorize(&s, "billing", "read").await.err(),
        Some(denied("billing", "read"))
    );
    assert_eq!(
        v.authorize(&s, "unknown", "read").await.err(),
        Some(denied("unknown", "read"))
    );
    assert_eq!(
        v.authorize(&s, "documents", "unknown").await.err(),
        Some(denied("documents", "unknown"))
    );

    // A wildcard grants every action on its resource.
    let mut admin = s.clone();
    admin.roles = vec!["stytch_user".into(), "billing_admin".into()];
    assert_eq!(
        v.authorize(&admin, "billing", "refund")
            .await
            .unwrap()
            .granting_roles,
        ["billing_admin"]
    );

    // One fetch, with the project's Basic credentials.
    let requests = fake.policy_requests();
    assert_eq!(requests.len(), 1);
    let basic = format!("Basic {}", STANDARD.encode(format!("{PROJECT}:{SECRET}")));
    assert_eq!(requests[0].authorization.as_deref(), Some(basic.as_str()));
    assert_eq!(v.policy().await.unwrap().roles[0].role_id, "stytch_user");
}

#[tokio::test]
async fn the_policy_is_cached_five_minutes_and_a_failed_fetch_denies() {
    let fake = Fake::start().await;
    let clock = clock();
    let v = builder(&fake, &clock)
        .revocation_feed(false)
        .project_secret(SECRET)
        .build()
        .unwrap();
    let s = session(&v).await;
    assert!(v.authorize(&s, "documents", "read").await.is_ok());
    clock.advance(Duration::from_secs(299));
    assert!(v.authorize(&s, "documents", "read").await.is_ok());
    assert_eq!(fake.policy_requests().len(), 1);
    clock.advance(Duration::from_secs(1));
    assert!(v.authorize(&s, "documents", "read").await.is_ok());
    assert_eq!(fake.policy_requests().len(), 2);

    // Expired and hallpass fails: denied, not answered from the expired copy.
    fake.set_policy_status(500);
    clock.advance(Duration::from_secs(300));
    let e = v.authorize(&s, "documents", "read").await.unwrap_err();
    assert!(
        matches!(&e, Error::PolicyUnavailable(why) if why.contains("500")),
        "{e}"
    );
    fake.set_policy_status(200);
    // Within a second of the failure, denied without asking again.
    assert!(matches!(
        v.authorize(&s, "documents", "read").await,
        Err(Error::PolicyUnavailable(_))
    ));
    assert_eq!(fake.policy_requests().len(), 3);
    clock.advance(Duration::from_secs(1));
    assert!(
        v.authorize(&s, "documents", "read").await.is_ok(),
        "recovered"
    );
    assert_eq!(fake.policy_requests().len(), 4);
}

#[tokio::test]
async fn without_a_secret_every_check_is_denied() {
    let fake = Fake::start().await;
    let clock = clock();
    let v = builder(&fake, &clock)
        .revocation_feed(false)
        .build()
        .unwrap();
    let s = session(&v).await;
    assert!(matches!(
        v.authorize(&s, "documents", "read").await,
        Err(Error::PolicyUnavailable(_))
    ));
    assert!(fake.policy_requests().is_empty());

    // A wrong secret is a fetch failure like any other.
    let wrong = builder(&fake, &clock)
        .revocation_feed(false)
        .project_secret("wrong")
        .build()
        .unwrap();
    let e = wrong.authorize(&s, "documents", "read").await.unwrap_err();
    assert!(
        matches!(&e, Error::PolicyUnavailable(why) if why.contains("401")),
        "{e}"
    );
}
