use hallpass::domain::ids::Env;

use crate::harness::TestApp;

#[tokio::test]
async fn served_without_credentials_with_caching_headers() {
    let app = TestApp::new().await;
    let p = app.creds.project_id.clone();
    let r = app
        .get_anonymous(&format!("/v1/sessions/jwks/{p}?project_id={p}"), &[])
        .await;
    let keys = r.ok()["keys"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 2, "the current key and the waiting one");
    assert_eq!(r.headers["cache-control"], "public, max-age=300");
    let etag = r.headers["etag"].to_str().unwrap().to_string();
    assert!(etag.starts_with('"'));

    // With credentials too.
    let with_auth = app.get(&format!("/v1/sessions/jwks/{p}")).await;
    assert_eq!(with_auth.ok()["keys"].as_array().unwrap().len(), 2);

    let cached = app
        .get_anonymous(
            &format!("/v1/sessions/jwks/{p}"),
            &[("if-none-match", &etag)],
        )
        .await;
    assert_eq!(cached.status, 304);
    assert_eq!(cached.headers["etag"].to_str().unwrap(), etag);
    let stale = app
        .get_anonymous(
            &format!("/v1/sessions/jwks/{p}"),
            &[("if-none-match", "\"other\"")],
        )
        .await;
    stale.ok();

    for path in [
        format!("/jwks/{p}"),
        "/jwks".to_string(),
        "/.well-known/jwks.json".to_string(),
    ] {
        let r = app.get_anonymous(&path, &[]).await;
        assert_eq!(r.ok()["keys"].as_array().unwrap().len(), 2, "{path}");
        assert_eq!(r.headers["etag"].to_str().unwrap(), etag, "{path}");
    }
    app.get_anonymous(
        "/v1/sessions/jwks/project-test-00000000-0000-0000-0000-000000000000",
        &[],
    )
    .await
    .error(404, "not_found");
    app.get_anonymous("/v1/sessions/jwks/nonsense", &[])
        .await
        .error(404, "not_found");
}

#[tokio::test]
async fn several_projects_need_an_explicit_default() {
    let app = TestApp::new().await;
    let other = app.other_project(Env::Live).await;
    let r = app.get_anonymous("/jwks", &[]).await;
    let message = r.error(404, "not_found")["error_message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("/jwks/{project_id}"), "{message}");
    app.get_anonymous("/.well-known/jwks.json", &[])
        .await
        .error(404, "not_found");
    let live = app
        .get_anonymous(&format!("/jwks/{}", other.project_id), &[])
        .await;
    assert!(
        live.ok()["keys"][0]["kid"]
            .as_str()
            .unwrap()
            .starts_with("jwk-live-")
    );
    assert!(
        live.body["request_id"]
            .as_str()
            .unwrap()
            .starts_with("request-id-live-")
    );
}
