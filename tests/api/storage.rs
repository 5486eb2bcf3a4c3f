use hallpass::domain::crypto::sha256;
use hallpass::store::Db;
use hallpass::with_db;
use serde_json::json;

use crate::harness::TestApp;

/// Reads the database directly: tokens, secrets and private keys are stored only as hashes or
/// sealed, never as themselves.
#[tokio::test]
async fn no_raw_token_secret_or_private_key_is_stored() {
    let app = TestApp::new().await;
    let s = app.session(60).await;
    let token = s["session_token"].as_str().unwrap().to_string();
    let user = s["user"]["user_id"].as_str().unwrap();
    let link = app
        .post("/v1/magic_links", json!({"user_id": user}))
        .await
        .ok()["token"]
        .as_str()
        .unwrap()
        .to_string();

    let token_hashes: Vec<(Vec<u8>,)> = with_db!(&app.db, p => sqlx::query_as("SELECT token_hash FROM sessions").fetch_all(p).await.unwrap());
    assert_eq!(token_hashes, vec![(sha256(token.as_bytes()).to_vec(),)]);
    let link_hashes: Vec<(Vec<u8>,)> = with_db!(&app.db, p => sqlx::query_as("SELECT token_hash FROM magic_links").fetch_all(p).await.unwrap());
    assert_eq!(link_hashes, vec![(sha256(link.as_bytes()).to_vec(),)]);

    let secrets: Vec<(String,)> = with_db!(&app.db, p => sqlx::query_as("SELECT secret_hash FROM project_secrets").fetch_all(p).await.unwrap());
    assert!(!secrets.is_empty());
    for (hash,) in &secrets {
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(!hash.contains(&app.creds.secret));
    }

    let keys: Vec<(uuid::Uuid, Vec<u8>, String)> = with_db!(&app.db, p => sqlx::query_as("SELECT id, private_key, master_key_id FROM signing_keys").fetch_all(p).await.unwrap());
    assert_eq!(keys.len(), 2);
    for (id, sealed, master_id) in &keys {
        let plain = app.master.open(sealed, master_id, id.as_bytes()).unwrap();
        assert!(plain.len() > 1000, "a PKCS#8 RSA-2048 key");
        assert!(
            !sealed
                .windows(16)
                .any(|w| plain.windows(16).any(|x| x == w)),
            "no run of the key in the clear"
        );
    }

    // On SQLite, the files themselves hold neither the token nor the secret.
    if let Db::Sqlite(pool) = &app.db {
        sqlx::query("PRAGMA wal_checkpoint(FULL)")
            .execute(pool)
            .await
            .unwrap();
        let dir = app.db_dir().unwrap();
        for entry in std::fs::read_dir(dir).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            for needle in [
                token.as_bytes(),
                link.as_bytes(),
                app.creds.secret.as_bytes(),
            ] {
                assert!(!bytes.windows(needle.len()).any(|w| w == needle));
            }
        }
    }
}
