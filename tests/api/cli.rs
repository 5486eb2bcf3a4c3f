//! The operator CLI, run as a process against the backend under test.

use std::process::{Command, Output};
use std::time::Duration;

use hallpass::app::{AppState, Settings, router};
use hallpass::domain::Clock;
use hallpass::domain::crypto::MasterKeys;
use hallpass::store::Db;
use serde_json::{Value, json};

use crate::harness::{TempDir, fresh_postgres_database, postgres_url};

struct Cli {
    url: String,
    master: String,
    _dir: TempDir,
}

impl Cli {
    async fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("hallpass-cli-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = match postgres_url() {
            Some(pg) => fresh_postgres_database(&pg).await,
            None => dir.join("hallpass.db").display().to_string(),
        };
        let cli = Cli {
            url,
            master: MasterKeys::generate_encoded(),
            _dir: TempDir(dir),
        };
        // Operator commands work on an existing database only; `migrate` creates it.
        let out = cli.ok(&["migrate"]);
        assert!(out.contains("applied 9 migration(s): 0001_init"), "{out}");
        assert!(cli.ok(&["migrate"]).contains("up to date"));
        cli
    }

    fn run_with(&self, args: &[&str], master: &str) -> Output {
        Command::new(env!("CARGO_BIN_EXE_hallpass"))
            .args(args)
            .env_clear()
            .env("HALLPASS_DATABASE_URL", &self.url)
            .env("HALLPASS_MASTER_KEY", master)
            .env("HALLPASS_LOG", "warn")
            .current_dir(&self._dir.0)
            .output()
            .unwrap()
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run_with(args, &self.master);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    #[track_caller]
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run_with(args, &self.master);
        assert!(!out.status.success(), "{args:?} should fail");
        String::from_utf8(out.stderr).unwrap()
    }

    async fn db(&self) -> Db {
        if self.url.starts_with("postgres") {
            Db::connect_postgres(&self.url, 2, std::time::Duration::from_secs(5))
                .await
                .unwrap()
        } else {
            Db::connect_sqlite(
                std::path::Path::new(&self.url),
                2,
                std::time::Duration::from_secs(5),
            )
            .await
            .unwrap()
        }
    }

    /// The HTTP API on the same database, as a running server would see it.
    async fn app(&self) -> AppState {
        let settings = Settings {
            body_limit: 65536,
            request_timeout: Duration::from_secs(10),
            schedule: crate::harness::schedule(),
            argon2_concurrency: 2,
            refresh_interval: Duration::from_secs(1),
            auth_attempts_per_client: 60,
            auth_attempts_per_project: 600,
            retention: Duration::from_secs(30 * 86_400),
            retention_interval: Duration::from_secs(3600),
            ssf_signatures_per_second: 500,
            max_sessions_per_user: 1000,
        };
        let state = AppState::new(
            self.db().await,
            MasterKeys::parse(&self.master).unwrap(),
            Clock::system(),
            settings,
            None,
        );
        state.maintain().await;
        state
    }
}

async fn status_with(state: &AppState, project: &str, secret: &str) -> u16 {
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{project}:{secret}"));
    let req = axum::http::Request::post("/v1/sessions/authenticate")
        .header("authorization", format!("Basic {auth}"))
        .body(axum::body::Body::from(r#"{"session_token":"x"}"#))
        .unwrap();
    tower::ServiceExt::oneshot(router(state.clone()), req)
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn projects_are_created_listed_updated_and_their_secrets_rotated() {
    let cli = Cli::new().await;
    let created: Value = serde_json::from_str(&cli.ok(&[
        "project", "create", "--name", "acme", "--env", "live", "--json",
    ]))
    .unwrap();
    let id = created["project_id"].as_str().unwrap().to_string();
    let secret = created["secret"].as_str().unwrap().to_string();
    assert!(id.starts_with("project-live-"));
    assert_eq!(secret.len(), 44);

    let listed: Value = serde_json::from_str(&cli.ok(&["project", "list", "--json"])).unwrap();
    assert_eq!(listed[0]["project_id"], id.as_str());
    assert_eq!(listed[0]["name"], "acme");
    assert!(cli.ok(&["project", "list"]).contains(&id));

    cli.ok(&[
        "project",
        "update",
        &id,
        "--userinfo-url",
        "https://idp.example.com/userinfo",
        "--idle-timeout-minutes",
        "30",
    ]);
    let listed: Value = serde_json::from_str(&cli.ok(&["project", "list", "--json"])).unwrap();
    assert_eq!(
        listed[0]["userinfo_url"],
        "https://idp.example.com/userinfo"
    );
    assert_eq!(listed[0]["idle_timeout_minutes"], 30);
    assert!(listed[0]["absolute_lifetime_minutes"].is_null());
    assert!(
        cli.fails(&["project", "update", &id, "--idle-timeout-minutes", "600000"])
            .contains("idle-timeout-minutes")
    );
    assert!(
        cli.fails(&["project", "update", &id, "--userinfo-url", "ftp://x"])
            .contains("userinfo URL")
    );
    assert!(
        cli.fails(&[
            "project",
            "update",
            "project-live-00000000-0000-0000-0000-000000000000"
        ])
        .contains("no project")
    );

    let state = cli.app().await;
    assert_eq!(
        status_with(&state, &id, &secret).await,
        404,
        "the secret works (session_not_found past auth)"
    );
    let out = cli.ok(&["project", "rotate-secret", &id]);
    let new_secret = out
        .lines()
        .find_map(|l| l.strip_prefix("secret: "))
        .unwrap()
        .trim()
        .to_string();
    state.directory.refresh().await.unwrap();
    assert_eq!(
        status_with(&state, &id, &secret).await,
        404,
        "the old secret keeps working"
    );
    assert_eq!(status_with(&state, &id, &new_secret).await, 404);
    cli.ok(&["project", "rotate-secret", &id, "--revoke-old"]);
    state.directory.refresh().await.unwrap();
    assert_eq!(
        status_with(&state, &id, &secret).await,
        401,
        "the old secret is refused, even from the cache"
    );
    assert_eq!(status_with(&state, &id, &new_secret).await, 404);
}

#[tokio::test]
async fn keys_are_listed_rotated_revoked_and_resealed() {
    let cli = Cli::new().await;
    let created: Value =
        serde_json::from_str(&cli.ok(&["project", "create", "--name", "k", "--json"])).unwrap();
    let id = created["project_id"].as_str().unwrap().to_string();
    // The key list, as a shell with `master` sees it.
    let keys = |master: &str| -> Vec<Value> {
        let out = cli.run_with(&["keys", "list", &id, "--json"], master);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    };
    let state_of = |list: &[Value], s: &str| {
        list.iter()
            .filter(|k| k["state"] == s)
            .map(|k| k["kid"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };

    let list = keys(&cli.master);
    assert_eq!(list.len(), 2);
    let current = state_of(&list, "current")[0].clone();
    let next = state_of(&list, "next")[0].clone();
    assert!(
        list.iter()
            .all(|k| !k["published_since"].is_null() && !k["created_at"].is_null())
    );
    assert!(cli.ok(&["keys", "list", &id]).contains("SIGNING_SINCE"));

    // The waiting key is too young to sign: refused, with the reason.
    let why = cli.fails(&["keys", "rotate", &id]);
    assert!(why.contains("--force") && why.contains("600 s"), "{why}");
    cli.ok(&["keys", "rotate", &id, "--force"]);
    let list = keys(&cli.master);
    assert_eq!(state_of(&list, "current"), vec![next.clone()]);
    assert_eq!(state_of(&list, "retired"), vec![current.clone()]);
    assert!(list.iter().find(|k| k["kid"] == current.as_str()).unwrap()["retires_at"].is_string());
    assert_eq!(state_of(&list, "next").len(), 1);

    // Revoking the signing key promotes the waiting one at once.
    let waiting = state_of(&list, "next")[0].clone();
    cli.ok(&["keys", "revoke", &id, &next]);
    let list = keys(&cli.master);
    assert_eq!(state_of(&list, "revoked"), vec![next.clone()]);
    assert_eq!(state_of(&list, "current"), vec![waiting]);
    assert!(
        cli.fails(&["keys", "revoke", &id, &next])
            .contains("no such unrevoked key")
    );
    assert!(
        cli.fails(&["keys", "revoke", &id, "jwk-test-nonsense"])
            .contains("not a key id")
    );

    // Master-key rotation: new key first, old key second; reencrypt; then the new key alone opens every key.
    let new_master = MasterKeys::generate_encoded();
    let both = format!("{new_master},{}", cli.master);
    let out = cli.run_with(&["keys", "reencrypt"], &both);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("re-sealed"));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("re-sealing keys: "),
        "progress is shown"
    );
    let dir = hallpass::directory::Directory::new(
        cli.db().await,
        MasterKeys::parse(&new_master).unwrap(),
        None,
    );
    dir.refresh().await.unwrap();
    assert!(dir.key_problems().is_empty(), "{:?}", dir.key_problems());
    assert!(dir.is_ready());
    let old_only = hallpass::directory::Directory::new(
        cli.db().await,
        MasterKeys::parse(&cli.master).unwrap(),
        None,
    );
    old_only.refresh().await.unwrap();
    assert!(
        !old_only.key_problems().is_empty(),
        "the old master key no longer opens anything"
    );

    // A stale shell with only the old key cannot seal backwards: no new key, no project.
    for (master, needle) in [
        (cli.master.clone(), "newer master key"),
        (
            MasterKeys::generate_encoded(),
            "none of the configured master keys",
        ),
    ] {
        for args in [
            vec!["keys", "rotate", id.as_str(), "--force"],
            vec!["project", "create", "--name", "stale"],
            vec!["keys", "reencrypt"],
        ] {
            let out = cli.run_with(&args, &master);
            let said = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{args:?} with a stale key must fail");
            assert!(said.contains(needle), "{args:?}: {said}");
        }
    }
    let listed: Value = serde_json::from_slice(
        &cli.run_with(&["project", "list", "--json"], &new_master)
            .stdout,
    )
    .unwrap();
    assert_eq!(
        listed.as_array().unwrap().len(),
        1,
        "no project was created by the refused commands"
    );
    // An emergency revoke goes through from a stale shell too: revoking seals nothing. The
    // ring's completion (a new waiting key) is left to the servers, with a warning, and the
    // command says the revoke succeeded.
    let waiting = state_of(&keys(&new_master), "next")[0].clone();
    let out = cli.run_with(&["keys", "revoke", &id, &waiting], &cli.master);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("completing the ring afterwards failed"),
        "{said}"
    );
    let list = keys(&new_master);
    assert_eq!(state_of(&list, "revoked").len(), 2);
    assert!(state_of(&list, "next").is_empty());
    // With the new key (alone, or first), everything works again.
    let out = cli.run_with(&["keys", "rotate", &id, "--force"], &new_master);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn configuration_errors_name_what_is_wrong() {
    let cli = Cli::new().await;
    let file = cli._dir.0.join("bad.toml");
    std::fs::write(
        &file,
        "[server]\nlisten = \"127.0.0.1:1\"\nlisten_port = 3\n",
    )
    .unwrap();
    let err = cli.fails(&["--config", file.to_str().unwrap(), "project", "list"]);
    assert!(err.contains("server.listen_port"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_hallpass"))
        .args(["project", "list"])
        .env_clear()
        .env(
            "HALLPASS_DATABASE_URL",
            "postgres://postgres@127.0.0.1:5432/postgres",
        )
        .env("HALLPASS_KEYS_JWKS_MAX_AGE_SECONDS", "soon")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("HALLPASS_KEYS_JWKS_MAX_AGE_SECONDS"));
    // A mistyped scheme is not taken for a SQLite file name, and its password is not shown.
    let out = Command::new(env!("CARGO_BIN_EXE_hallpass"))
        .args(["project", "list"])
        .env_clear()
        .env(
            "HALLPASS_DATABASE_URL",
            "Postgres://u:pw-secret@127.0.0.1/db",
        )
        .current_dir(&cli._dir.0)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("HALLPASS_DATABASE_URL") && err.contains("scheme"),
        "{err}"
    );
    assert!(!err.contains("pw-secret"), "{err}");
    if postgres_url().is_some() {
        let out = Command::new(env!("CARGO_BIN_EXE_hallpass"))
            .args(["project", "create", "--name", "x"])
            .env_clear()
            .env("HALLPASS_DATABASE_URL", &cli.url)
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("openssl rand -base64 32"));
    }
    let bad_bootstrap = Command::new(env!("CARGO_BIN_EXE_hallpass"))
        .arg("serve")
        .env_clear()
        .env("HALLPASS_DATABASE_URL", &cli.url)
        .env("HALLPASS_MASTER_KEY", &cli.master)
        .env("HALLPASS_LISTEN", "127.0.0.1:0")
        .env("HALLPASS_BOOTSTRAP_PROJECT_ID", "project-test-123")
        .env("HALLPASS_BOOTSTRAP_SECRET", "short")
        .output()
        .unwrap();
    assert!(!bad_bootstrap.status.success());
    assert!(
        String::from_utf8_lossy(&bad_bootstrap.stderr).contains("HALLPASS_BOOTSTRAP_PROJECT_ID")
    );
    let _ = json!({});
}

#[tokio::test]
async fn sqlite_keeps_its_generated_master_key_and_refuses_to_lose_it() {
    let dir = TempDir(std::env::temp_dir().join(format!("hallpass-mk-{}", uuid::Uuid::new_v4())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let db = dir.0.join("data").join("hallpass.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_hallpass"))
            .args(args)
            .env_clear()
            .env("HALLPASS_DATABASE_URL", &db)
            .env("HALLPASS_LOG", "warn")
            .current_dir(&dir.0)
            .output()
            .unwrap()
    };
    let refused = run(&["project", "list"]);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("no hallpass database at") && said.contains("HALLPASS_DATABASE_URL"),
        "{said}"
    );
    assert!(!db.exists(), "nothing was created");
    assert!(run(&["migrate"]).status.success());
    let first = run(&["project", "create", "--name", "a"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        String::from_utf8_lossy(&first.stderr).contains("generated one beside the SQLite database")
    );
    let key_file = db.parent().unwrap().join("hallpass.master-key");
    assert!(key_file.exists(), "written beside the database file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    // The same key is used again, not a new one.
    assert!(run(&["project", "create", "--name", "b"]).status.success());
    // Losing it is an error that says what to restore, not a silent fresh key.
    std::fs::remove_file(&key_file).unwrap();
    let lost = run(&["project", "create", "--name", "c"]);
    assert!(!lost.status.success());
    assert!(
        String::from_utf8_lossy(&lost.stderr).contains("is missing"),
        "{}",
        String::from_utf8_lossy(&lost.stderr)
    );
    assert!(!key_file.exists());
}

#[tokio::test]
async fn revoke_old_keeps_exactly_the_newest_secret_even_within_one_second() {
    let cli = Cli::new().await;
    let created: Value =
        serde_json::from_str(&cli.ok(&["project", "create", "--name", "a", "--json"])).unwrap();
    let id = created["project_id"].as_str().unwrap().to_string();
    let db = cli.db().await;
    let project: hallpass::domain::ids::ProjectId = id.parse().unwrap();
    // Three secrets stamped with the same second, the last one made last.
    let mut secrets = Vec::new();
    for _ in 0..3 {
        let (_, s) = hallpass::admin::rotate_secret(&db, project.uuid, 1_800_000_000)
            .await
            .unwrap();
        secrets.push(s.expose().to_string());
    }
    cli.ok(&["project", "rotate-secret", &id, "--revoke-old"]);
    let state = cli.app().await;
    let newest = secrets.pop().unwrap();
    assert_eq!(
        status_with(&state, &id, &newest).await,
        404,
        "the newest works"
    );
    for old in secrets
        .iter()
        .chain([created["secret"].as_str().unwrap().to_string()].iter())
    {
        assert_eq!(
            status_with(&state, &id, old).await,
            401,
            "an older one is revoked"
        );
    }
}

#[tokio::test]
async fn rbac_policies_are_set_validated_shown_and_served() {
    let cli = Cli::new().await;
    let created: Value =
        serde_json::from_str(&cli.ok(&["project", "create", "--name", "a", "--json"])).unwrap();
    let id = created["project_id"].as_str().unwrap().to_string();
    let policy = serde_json::json!({
        "roles": [{"role_id": "editor", "description": "", "permissions": [
            {"resource_id": "documents", "actions": ["write"]}]}],
        "resources": [{"resource_id": "documents", "description": "", "actions": ["read", "write"]}],
        "scopes": []
    });
    let file = cli._dir.0.join("policy.json");
    std::fs::write(&file, policy.to_string()).unwrap();
    let out = cli.ok(&["rbac", "set", &id, file.to_str().unwrap()]);
    assert!(
        out.contains("2 roles") && out.contains("1 resources"),
        "{out}"
    );
    let shown: Value = serde_json::from_str(&cli.ok(&["rbac", "show", &id])).unwrap();
    assert_eq!(shown["roles"][0]["role_id"], "stytch_user");
    assert_eq!(shown["roles"][1], policy["roles"][0]);

    // Invalid: refused with the element named, and the stored policy is unchanged.
    let bad = serde_json::json!({"roles": [{"role_id": "x", "permissions": [
        {"resource_id": "documents", "actions": ["delete"]}]}],
        "resources": policy["resources"].clone()});
    std::fs::write(&file, bad.to_string()).unwrap();
    let err = cli.fails(&["rbac", "set", &id, file.to_str().unwrap()]);
    assert!(err.contains("roles[0]") && err.contains("delete"), "{err}");

    // From standard input.
    let mut child = Command::new(env!("CARGO_BIN_EXE_hallpass"))
        .args(["rbac", "set", &id, "-"])
        .env_clear()
        .env("HALLPASS_DATABASE_URL", &cli.url)
        .env("HALLPASS_MASTER_KEY", &cli.master)
        .env("HALLPASS_LOG", "warn")
        .current_dir(&cli._dir.0)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        br#"{"resources": [{"resource_id": "reports", "actions": ["read"]}]}"#,
    )
    .unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    let shown: Value = serde_json::from_str(&cli.ok(&["rbac", "show", &id])).unwrap();
    assert_eq!(shown["resources"][0]["resource_id"], "reports");
    assert_eq!(shown["roles"].as_array().unwrap().len(), 1);

    // A server on the same database serves it after its refresh.
    let state = cli.app().await;
    let project = state
        .directory
        .get(id.parse::<hallpass::domain::ids::ProjectId>().unwrap().uuid);
    assert!(
        project
            .unwrap()
            .rbac
            .resources
            .iter()
            .any(|r| r.resource_id == "reports")
    );
}

#[tokio::test]
async fn token_profiles_are_created_listed_and_deleted() {
    let cli = Cli::new().await;
    let created: Value =
        serde_json::from_str(&cli.ok(&["project", "create", "--name", "a", "--json"])).unwrap();
    let id = created["project_id"].as_str().unwrap().to_string();
    let base = [
        "token-profile",
        "create",
        id.as_str(),
        "--issuer",
        "https://idp/",
        "--audience",
        "app",
    ];
    let made: Value = serde_json::from_str(
        &cli.ok(&[
            &base[..],
            &[
                "--jwks-url",
                "https://idp.example.com/.well-known/jwks.json",
                "--jit-provisioning",
                "--json",
            ],
        ]
        .concat()),
    )
    .unwrap();
    let profile = made["profile_id"].as_str().unwrap().to_string();
    assert!(
        profile.starts_with("trusted-auth-token-profile-test-"),
        "{profile}"
    );
    let listed: Value =
        serde_json::from_str(&cli.ok(&["token-profile", "list", &id, "--json"])).unwrap();
    assert_eq!(listed[0]["profile_id"], profile.as_str());
    assert_eq!(listed[0]["token_id_claim"], "jti");
    assert_eq!(listed[0]["email_claim"], "email");
    assert_eq!(listed[0]["jit_provisioning"], true);
    // http is for loopback only; keys are required; a private key is refused.
    let err = cli.fails(&[&base[..], &["--jwks-url", "http://idp.example.com/jwks"]].concat());
    assert!(err.contains("https"), "{err}");
    cli.ok(&[&base[..], &["--jwks-url", "http://127.0.0.1:8999/jwks"]].concat());
    assert!(cli.fails(&base).contains("--jwks-url"));
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let private = cli._dir.0.join("private.pem");
    std::fs::write(
        &private,
        format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                key.serialize_der()
            )
        ),
    )
    .unwrap();
    let err = cli.fails(&[&base[..], &["--pem-file", private.to_str().unwrap()]].concat());
    assert!(err.contains("not a PEM public key"), "{err}");
    cli.ok(&["token-profile", "delete", &id, &profile]);
    assert!(
        cli.fails(&["token-profile", "delete", &id, &profile])
            .contains("no profile")
    );
}
