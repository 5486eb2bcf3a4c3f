//! Operator commands: serve, migrate, project …, keys …. They read the same configuration as
//! the server and talk to the database directly.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::json;

use crate::admin::{self, AdminError};
use crate::app::{self, AppState, Settings};
use crate::config::{Config, DatabaseTarget, LogFormat};
use crate::domain::crypto::MasterKeys;
use crate::domain::ids::{self, Env, Kind, ProjectId};
use crate::domain::{Clock, rfc3339};
use crate::keyring;
use crate::store::{self, Db};

/// The environment variables every command reads (config/default.toml documents each key).
const ENVIRONMENT: &str = "\
Configuration: built-in defaults < --config FILE < environment variables.
Environment variables (each overrides one key of config/default.toml):
  HALLPASS_LISTEN                          server.listen (127.0.0.1:8080)
  HALLPASS_REQUEST_TIMEOUT_SECONDS         server.request_timeout_seconds (10)
  HALLPASS_HEADER_READ_TIMEOUT_SECONDS     server.header_read_timeout_seconds (10)
  HALLPASS_IDLE_TIMEOUT_SECONDS            server.idle_timeout_seconds (60)
  HALLPASS_MAX_CONNECTIONS                 server.max_connections (0: from the open-file limit)
  HALLPASS_AUTH_ATTEMPTS_PER_MINUTE_PER_CLIENT   server.auth_attempts_per_minute_per_client (60)
  HALLPASS_AUTH_ATTEMPTS_PER_MINUTE_PER_PROJECT  server.auth_attempts_per_minute_per_project (600)
  HALLPASS_SSF_SIGNATURES_PER_SECOND       server.ssf_signatures_per_second (500)
  HALLPASS_MAX_SESSIONS_PER_USER           server.max_sessions_per_user (1000)
  HALLPASS_DATABASE_URL                    database.url (SQLite file hallpass.db; or postgres://…?sslmode=…)
  HALLPASS_DATABASE_MAX_CONNECTIONS        database.max_connections (16)
  HALLPASS_DATABASE_ACQUIRE_TIMEOUT_MS     database.acquire_timeout_ms (1000)
  HALLPASS_MASTER_KEY                      security.master_key (required with Postgres)
  HALLPASS_BOOTSTRAP_PROJECT_ID            bootstrap.project_id
  HALLPASS_BOOTSTRAP_SECRET                bootstrap.secret
  HALLPASS_BOOTSTRAP_USERINFO_URL          bootstrap.userinfo_url
  HALLPASS_DEFAULT_PROJECT_ID              bootstrap.default_project_id
  HALLPASS_KEYS_ROTATION_INTERVAL_SECONDS  keys.rotation_interval_seconds (2592000)
  HALLPASS_KEYS_JWKS_MAX_AGE_SECONDS       keys.jwks_max_age_seconds (300)
  HALLPASS_KEYS_RETIRED_RETENTION_SECONDS  keys.retired_retention_seconds (86400)
  HALLPASS_KEYS_REFRESH_INTERVAL_SECONDS   keys.refresh_interval_seconds (1)
  HALLPASS_RETENTION_SECONDS               retention.seconds (2592000)
  HALLPASS_RETENTION_INTERVAL_SECONDS      retention.interval_seconds (3600)
  HALLPASS_LOG_FORMAT                      log.format (pretty | json)
  HALLPASS_LOG                             log.filter (info)";

#[derive(Parser, Debug)]
#[command(
    name = "hallpass",
    version,
    about = "A self-hosted session authority that speaks Stytch's Sessions API",
    after_help = ENVIRONMENT
)]
pub struct Cli {
    /// A TOML file laid over the built-in defaults (config/default.toml lists every key).
    #[arg(long, global = true, value_name = "FILE", env = "HALLPASS_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server (configured by the environment variables below).
    #[command(after_help = ENVIRONMENT)]
    Serve,
    /// Apply pending database migrations, print which, and exit.
    Migrate,
    /// Exit 0 when the server this configuration describes answers GET /healthz with 200
    /// within 2 s (the container's HEALTHCHECK; follows HALLPASS_LISTEN).
    Healthcheck,
    /// Manage projects.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Manage signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage a project's RBAC policy.
    #[command(subcommand)]
    Rbac(RbacCommand),
    /// Manage trusted auth token profiles (for POST /v1/sessions/attest).
    #[command(subcommand, name = "token-profile")]
    TokenProfile(TokenProfileCommand),
    /// Delete sessions and magic links that ended more than HALLPASS_RETENTION_SECONDS ago
    /// (what every server does in the background), printing progress and what was deleted.
    Purge {
        /// Count what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenProfileCommand {
    /// Create a profile: how to verify tokens from your identity provider (issuer, audience,
    /// its JWKS URL or up to five PEM public keys) and which claims to read. Prints its
    /// profile_id.
    Create {
        /// The project (project-test-… or project-live-…).
        project_id: String,
        /// The tokens' `iss`, exactly.
        #[arg(long)]
        issuer: String,
        /// A value the tokens' `aud` must hold.
        #[arg(long)]
        audience: String,
        /// The provider's JWKS URL (https; http only on a loopback address).
        #[arg(long, value_name = "URL", conflicts_with = "pem_file")]
        jwks_url: Option<String>,
        /// A PEM public key file (RSA, EC P-256 or Ed25519); repeat for up to five.
        #[arg(long, value_name = "FILE")]
        pem_file: Vec<PathBuf>,
        /// The claim holding the user's email.
        #[arg(long, value_name = "NAME", default_value = "email")]
        email_claim: String,
        /// The claim holding the token's unique id (replay protection).
        #[arg(long, value_name = "NAME", default_value = "jti")]
        token_id_claim: String,
        /// A claim holding the user's external id (then users are found by external_id).
        #[arg(long, value_name = "NAME")]
        external_user_id_claim: Option<String>,
        /// A claim holding role ids to add to the user (those the RBAC policy defines).
        #[arg(long, value_name = "NAME")]
        role_ids_claim: Option<String>,
        /// Create a user who does not exist yet (off: such tokens are refused).
        #[arg(long)]
        jit_provisioning: bool,
        /// Print {"profile_id": …} as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List a project's profiles.
    List {
        /// The project (project-test-… or project-live-…).
        project_id: String,
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Delete a profile (its tokens are refused from then on).
    Delete {
        /// The project (project-test-… or project-live-…).
        project_id: String,
        /// The profile (trusted-auth-token-profile-test-… or …-live-…).
        profile_id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum RbacCommand {
    /// Replace the project's whole RBAC policy with a JSON document (Stytch's shape:
    /// roles, resources, scopes); validated as a whole, applied atomically. Running servers
    /// apply it within the refresh interval.
    Set {
        /// The project (project-test-… or project-live-…).
        project_id: String,
        /// The policy file, or - for standard input.
        file: PathBuf,
    },
    /// Print the project's RBAC policy as JSON.
    Show {
        /// The project (project-test-… or project-live-…).
        project_id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ProjectCommand {
    /// Create a project and print its credentials (shown once).
    Create {
        /// A name for people (shown by `project list`).
        #[arg(long)]
        name: String,
        /// The environment in the project's ids: test or live.
        #[arg(long, default_value = "test", value_parser = ["test", "live"])]
        env: String,
        /// Print {"project_id","secret"} as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List projects.
    List {
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Change a project's settings. A value of 0 (or "" for the URL) turns a setting off.
    Update {
        /// The project (project-test-… or project-live-…).
        project_id: String,
        /// The OIDC UserInfo URL `POST /v1/sessions/migrate` calls ("" turns migrate off).
        #[arg(long, value_name = "URL")]
        userinfo_url: Option<String>,
        /// Expire a session not authenticated for this many minutes (0: off).
        #[arg(long, value_name = "N")]
        idle_timeout_minutes: Option<i64>,
        /// No session outlives its start by more than this many minutes (0: off).
        #[arg(long, value_name = "N")]
        absolute_lifetime_minutes: Option<i64>,
        /// Who may read the revocation feed: public (like the JWKS; events carry no user
        /// data) or private (the project's Basic credentials).
        #[arg(long, value_name = "MODE", value_parser = ["public", "private"])]
        revocations_feed: Option<String>,
    },
    /// Issue a new secret (the old ones keep working), or with --revoke-old revoke every
    /// secret but the newest.
    RotateSecret {
        /// The project (project-test-… or project-live-…).
        project_id: String,
        /// Revoke every secret but the newest instead of issuing one.
        #[arg(long)]
        revoke_old: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// List a project's signing keys and their schedule.
    List {
        /// The project (project-test-… or project-live-…).
        project_id: String,
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Promote the waiting key now.
    Rotate {
        /// The project (project-test-… or project-live-…).
        project_id: String,
        /// Rotate even if the waiting key was published less than 2 x max-age ago.
        #[arg(long)]
        force: bool,
    },
    /// Revoke a key at once: it leaves the JWKS and its JWTs are refused.
    Revoke {
        /// The project (project-test-… or project-live-…).
        project_id: String,
        /// The key id (jwk-test-… or jwk-live-…), as `keys list` shows it.
        kid: String,
    },
    /// Re-seal every private key under the newest HALLPASS_MASTER_KEY.
    Reencrypt,
}

/// An error for the operator, printed without a backtrace.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Fatal(pub String);

impl From<AdminError> for Fatal {
    fn from(e: AdminError) -> Self {
        Fatal(e.to_string())
    }
}
impl From<sqlx::Error> for Fatal {
    fn from(e: sqlx::Error) -> Self {
        Fatal(format!("database: {e}"))
    }
}
impl From<keyring::RingError> for Fatal {
    fn from(e: keyring::RingError) -> Self {
        Fatal(e.to_string())
    }
}

pub async fn run(cli: Cli) -> Result<(), Fatal> {
    let config = Config::load(cli.config.as_deref()).map_err(|e| Fatal(e.to_string()))?;
    init_tracing(&config);
    match cli.command {
        Command::Serve => serve(config).await,
        Command::Migrate => {
            let db = open(&config).await?;
            let applied = db.migrate().await?;
            if applied.is_empty() {
                println!(
                    "{}: the schema is up to date; no migration applied",
                    db.backend()
                );
            } else {
                println!(
                    "{}: applied {} migration(s): {}",
                    db.backend(),
                    applied.len(),
                    applied.join(", ")
                );
            }
            Ok(())
        }
        Command::Healthcheck => healthcheck(&config).await,
        Command::Project(cmd) => project(config, cmd).await,
        Command::Keys(cmd) => keys(config, cmd).await,
        Command::Rbac(cmd) => rbac(config, cmd).await,
        Command::Purge { dry_run } => purge(config, dry_run).await,
        Command::TokenProfile(cmd) => token_profile(config, cmd).await,
    }
}

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (tests) is harmless: the first subscriber stays.
    let _ = match config.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

/// Connects to an existing database (an operator command run in the wrong directory must not
/// create an empty SQLite file and report nothing) and migrates it.
pub async fn connect(config: &Config) -> Result<Db, Fatal> {
    if let DatabaseTarget::Sqlite(path) = config.database_target()
        && !path.exists()
    {
        return Err(Fatal(format!(
            "no hallpass database at {} (it is created by `hallpass serve` or `hallpass migrate`); \
             set HALLPASS_DATABASE_URL (or database.url in the --config file) to the database to use",
            path.display()
        )));
    }
    let db = open(config).await?;
    db.migrate().await?;
    Ok(db)
}

/// Connects (waiting up to 30 s for a database that is still starting), creating a SQLite
/// file if there is none; does not migrate.
pub async fn open(config: &Config) -> Result<Db, Fatal> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let acquire = Duration::from_millis(config.database.acquire_timeout_ms);
    let db = loop {
        let attempt = match config.database_target() {
            DatabaseTarget::Postgres(url) => {
                Db::connect_postgres(url.expose(), config.database.max_connections, acquire).await
            }
            DatabaseTarget::Sqlite(path) => {
                Db::connect_sqlite(&path, config.database.max_connections, acquire).await
            }
        };
        match attempt {
            Ok(db) => break db,
            Err(e) if std::time::Instant::now() < deadline && is_transient(&e) => {
                tracing::warn!(error = %e, "database not reachable yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(Fatal(format!("cannot open the database: {}", explain(&e)))),
        }
    };
    Ok(db)
}

fn is_transient(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut) && tls_failure(e).is_none()
}

/// A TLS verification failure, in words an operator can act on. Retrying cannot fix one.
fn tls_failure(e: &sqlx::Error) -> Option<String> {
    let text = e.to_string();
    let (_, detail) = text.split_once("invalid peer certificate: ")?;
    Some(
        if detail.starts_with("NotValidForName")
            || detail.starts_with("certificate not valid for name")
        {
            format!(
                "TLS: the server's certificate is not valid for the host name in the URL \
             (sslmode=verify-full checks it; {detail})"
            )
        } else if detail.starts_with("UnknownIssuer") {
            "TLS: the server's certificate is not signed by a trusted authority (sslmode=verify-ca/\
         verify-full; give the CA with sslrootcert=/path/to/root.crt in the URL)"
                .to_string()
        } else {
            format!("TLS: the server's certificate was refused: {detail}")
        },
    )
}

/// An error opening the database, with TLS failures spelled out.
fn explain(e: &sqlx::Error) -> String {
    tls_failure(e).unwrap_or_else(|| e.to_string())
}

/// The operator's master keys; with SQLite and none configured, one kept beside the file
/// (generated only while the database holds no sealed key: a missing key file beside keys
/// it sealed is an error, not a reason to start over).
pub async fn master_keys(config: &Config, db: &Db) -> Result<MasterKeys, Fatal> {
    let configured = config.security.master_key.expose().trim();
    if !configured.is_empty() {
        return MasterKeys::parse(configured).map_err(|e| Fatal(e.to_string()));
    }
    match config.database_target() {
        DatabaseTarget::Postgres(_) => Err(Fatal(
            "HALLPASS_MASTER_KEY is required with Postgres: it encrypts the private signing keys. \
             Make one with: openssl rand -base64 32"
                .into(),
        )),
        DatabaseTarget::Sqlite(db_path) => {
            let path = master_key_path(&db_path);
            if path.exists() {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| Fatal(format!("{}: {e}", path.display())))?;
                return MasterKeys::parse(text.trim())
                    .map_err(|e| Fatal(format!("{}: {e}", path.display())));
            }
            let mut sealed = 0;
            for p in store::projects::list(db).await? {
                sealed += store::keys::of_project(db, p.id).await?.len();
            }
            if sealed > 0 {
                return Err(Fatal(format!(
                    "{} is missing, but the database holds {sealed} signing key(s) sealed under a master \
                     key: restore that file, or set HALLPASS_MASTER_KEY to the key they were sealed under",
                    path.display()
                )));
            }
            let key = MasterKeys::generate_encoded();
            write_private_file(&path, &key)?;
            tracing::warn!(
                path = %path.display(),
                "no HALLPASS_MASTER_KEY given: generated one beside the SQLite database; \
                 back it up with the database, or set HALLPASS_MASTER_KEY"
            );
            MasterKeys::parse(&key).map_err(|e| Fatal(e.to_string()))
        }
    }
}

fn master_key_path(db_path: &Path) -> PathBuf {
    db_path
        .parent()
        .map(|dir| dir.join("hallpass.master-key"))
        .unwrap_or_else(|| PathBuf::from("hallpass.master-key"))
}

fn write_private_file(path: &Path, contents: &str) -> Result<(), Fatal> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|e| Fatal(format!("{}: {e}", path.display())))?;
    file.write_all(contents.as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(|e| Fatal(format!("{}: {e}", path.display())))
}

async fn serve(config: Config) -> Result<(), Fatal> {
    let started = std::time::Instant::now();
    // Validate, bind, then act: nothing is created (and no once-only secret printed) until
    // the whole configuration is known to be usable and the port is ours.
    let default_project = match config.bootstrap.default_project_id.as_str() {
        "" => None,
        text => Some(
            text.parse::<ProjectId>()
                .map_err(|e| Fatal(format!("HALLPASS_DEFAULT_PROJECT_ID: {e}")))?,
        ),
    };
    let bootstrapping =
        !config.bootstrap.project_id.is_empty() || !config.bootstrap.secret.is_empty();
    if bootstrapping {
        let url = Some(config.bootstrap.userinfo_url.as_str()).filter(|u| !u.is_empty());
        admin::validate_bootstrap(
            &config.bootstrap.project_id,
            config.bootstrap.secret.expose(),
            url,
        )?;
    }
    if !config.security.master_key.is_empty() {
        MasterKeys::parse(config.security.master_key.expose())
            .map_err(|e| Fatal(format!("HALLPASS_MASTER_KEY: {e}")))?;
    }
    let listener = crate::server::bind(config.server.listen)
        .map_err(|e| Fatal(format!("cannot listen on {}: {e}", config.server.listen)))?;

    let db = open(&config).await?;
    db.migrate().await?;
    let master = master_keys(&config, &db).await?;
    let settings = Settings::from_config(&config);
    let clock = Clock::system();
    let now = clock.now();

    let mut preferred = None;
    if bootstrapping {
        let url = Some(config.bootstrap.userinfo_url.as_str()).filter(|u| !u.is_empty());
        let id = admin::bootstrap(
            &db,
            &master,
            &settings.schedule,
            &config.bootstrap.project_id,
            config.bootstrap.secret.expose(),
            url,
            now,
        )
        .await?;
        tracing::info!(project = %id, "bootstrap project ready");
        preferred = Some(id.uuid);
    } else if store::projects::list(&db).await?.is_empty() {
        let creds = admin::create_project(
            &db,
            &master,
            &settings.schedule,
            "development",
            Env::Test,
            now,
        )
        .await?;
        print_dev_credentials(&config, &creds);
    }
    if let Some(id) = default_project {
        preferred = Some(id.uuid);
    }

    let state = AppState::new(db.clone(), master, clock, settings, preferred);
    // Load what is there and serve; the background task (first run: now) converges the
    // rings, so start-up waits for no key generation beyond a missing signing key.
    if let Err(e) = state.directory.refresh().await {
        return Err(Fatal(format!("cannot load projects and keys: {e}")));
    }
    let problems = state.directory.key_problems();
    if !problems.is_empty() {
        return Err(Fatal(format!(
            "{} stored signing key(s) cannot be opened: {}. Start with the HALLPASS_MASTER_KEY they \
             were sealed under (several may be given, comma-separated, newest first).",
            problems.len(),
            problems.join("; ")
        )));
    }
    // Descriptors kept back from the connection cap: the database connections, argon2
    // threads, logs and the process's own files.
    let reserve = 64 + u64::from(config.database.max_connections);
    let (max_connections, nofile) =
        crate::server::connection_cap(config.server.max_connections, reserve);
    let limits = crate::server::Limits {
        header_read_timeout: Duration::from_secs(config.server.header_read_timeout_seconds),
        idle_timeout: Duration::from_secs(config.server.idle_timeout_seconds),
        max_connections,
        max_header_bytes: config.server.max_header_bytes,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tasks = state.spawn_background(stop_rx);
    tracing::info!(
        max_connections,
        open_file_limit = nofile,
        header_read_timeout_s = config.server.header_read_timeout_seconds,
        idle_timeout_s = config.server.idle_timeout_seconds,
        "connection limits"
    );
    tracing::info!(
        listen = %config.server.listen,
        database = db.backend(),
        projects = state.directory.project_count(),
        ready_ms = started.elapsed().as_millis() as u64,
        "hallpass is serving"
    );
    let state_for_shutdown = state.clone();
    app::serve(listener, state, limits, shutdown_signal())
        .await
        .map_err(|e| Fatal(format!("server: {e}")))?;
    tracing::info!("shutting down: finishing background work");
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    // Bounded like every background run: a database that stopped answering must not hold the
    // exit (touches not written by then are lost, as `last_accessed_at` writes are on a kill).
    if tokio::time::timeout(app::JOB_DEADLINE, state_for_shutdown.touches.flush(&db))
        .await
        .is_err()
    {
        tracing::warn!("pending last_accessed_at writes could not be flushed before exit");
    }
    if tokio::time::timeout(Duration::from_secs(5), db.close())
        .await
        .is_err()
    {
        tracing::warn!("database connections did not close cleanly");
    }
    Ok(())
}

fn print_dev_credentials(config: &Config, creds: &admin::Credentials) {
    let listen = config.server.listen;
    println!();
    println!("Created a development project (its secret is shown only now):");
    println!("  project_id: {}", creds.project_id);
    println!("  secret:     {}", creds.secret.expose());
    println!();
    println!("Try it:");
    println!(
        "  curl -u '{}:{}' -H 'Content-Type: application/json' -d '{{\"email\":\"ada@example.com\"}}' http://{listen}/v1/users",
        creds.project_id,
        creds.secret.expose()
    );
    println!();
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown signal received");
}

async fn healthcheck(config: &Config) -> Result<(), Fatal> {
    let mut addr = config.server.listen;
    // A wildcard listen address is reached on loopback.
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let url = format!("http://{addr}/healthz");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| Fatal(format!("healthcheck: {e}")))?;
    match client.get(&url).send().await {
        Ok(r) if r.status() == reqwest::StatusCode::OK => {
            println!("healthy: {url} answered 200");
            Ok(())
        }
        Ok(r) => Err(Fatal(format!("unhealthy: {url} answered {}", r.status()))),
        Err(e) => Err(Fatal(format!("unhealthy: {url}: {e}"))),
    }
}

async fn token_profile(config: Config, cmd: TokenProfileCommand) -> Result<(), Fatal> {
    use crate::store::token_profiles::{self, ProfileRow};
    let db = connect(&config).await?;
    match cmd {
        TokenProfileCommand::Create {
            project_id,
            issuer,
            audience,
            jwks_url,
            pem_file,
            email_claim,
            token_id_claim,
            external_user_id_claim,
            role_ids_claim,
            jit_provisioning,
            json,
        } => {
            let project = admin::get_project(&db, &project_id).await?;
            for (name, value) in [
                ("--issuer", &issuer),
                ("--audience", &audience),
                ("--email-claim", &email_claim),
                ("--token-id-claim", &token_id_claim),
            ] {
                if value.trim().is_empty() {
                    return Err(Fatal(format!("{name} must not be empty")));
                }
            }
            if let Some(url) = &jwks_url {
                validate_jwks_url(url)?;
            }
            let pems = match (&jwks_url, pem_file.len()) {
                (None, 0) => {
                    return Err(Fatal(
                        "give the provider's keys: --jwks-url URL or --pem-file FILE".into(),
                    ));
                }
                (Some(_), _) => Vec::new(),
                (None, n) if n > 5 => return Err(Fatal("at most five --pem-file keys".into())),
                (None, _) => pem_file
                    .iter()
                    .map(|path| {
                        let pem = std::fs::read_to_string(path)
                            .map_err(|e| Fatal(format!("{}: {e}", path.display())))?;
                        let bytes = pem.as_bytes();
                        let usable = jsonwebtoken::DecodingKey::from_rsa_pem(bytes).is_ok()
                            || jsonwebtoken::DecodingKey::from_ec_pem(bytes).is_ok()
                            || jsonwebtoken::DecodingKey::from_ed_pem(bytes).is_ok();
                        if !usable || pem.contains("PRIVATE KEY") {
                            return Err(Fatal(format!(
                                "{}: not a PEM public key (RSA, EC P-256 or Ed25519)",
                                path.display()
                            )));
                        }
                        Ok(pem)
                    })
                    .collect::<Result<Vec<_>, Fatal>>()?,
            };
            let id = uuid::Uuid::new_v4();
            let row = ProfileRow {
                id,
                project_id: project.id,
                issuer,
                audience,
                jwks_url,
                pem_keys: serde_json::to_string(&pems).map_err(|e| Fatal(e.to_string()))?,
                email_claim,
                token_id_claim,
                external_user_id_claim: external_user_id_claim.filter(|c| !c.is_empty()),
                role_ids_claim: role_ids_claim.filter(|c| !c.is_empty()),
                jit_provisioning,
                created_at: Clock::system().now(),
            };
            token_profiles::insert(&db, &row).await?;
            let env = Env::from_live(project.live);
            let profile_id = ids::format(Kind::TokenProfile, env, id);
            if json {
                println!("{}", json!({ "profile_id": profile_id }));
            } else {
                println!("profile_id: {profile_id}");
            }
        }
        TokenProfileCommand::List { project_id, json } => {
            let project = admin::get_project(&db, &project_id).await?;
            let env = Env::from_live(project.live);
            let rows = token_profiles::list(&db, project.id).await?;
            let view: Vec<_> = rows
                .iter()
                .map(|p| {
                    let pems: Vec<String> = serde_json::from_str(&p.pem_keys).unwrap_or_default();
                    json!({
                        "profile_id": ids::format(Kind::TokenProfile, env, p.id),
                        "issuer": p.issuer,
                        "audience": p.audience,
                        "jwks_url": p.jwks_url,
                        "pem_keys": pems.len(),
                        "email_claim": p.email_claim,
                        "token_id_claim": p.token_id_claim,
                        "external_user_id_claim": p.external_user_id_claim,
                        "role_ids_claim": p.role_ids_claim,
                        "jit_provisioning": p.jit_provisioning,
                        "created_at": rfc3339(p.created_at),
                    })
                })
                .collect();
            if json {
                println!("{}", serde_json::Value::Array(view));
            } else {
                for p in &view {
                    println!(
                        "{}  iss={} aud={} keys={} jit={}",
                        p["profile_id"].as_str().unwrap_or_default(),
                        p["issuer"].as_str().unwrap_or_default(),
                        p["audience"].as_str().unwrap_or_default(),
                        p["jwks_url"]
                            .as_str()
                            .map_or_else(|| format!("{} PEM", p["pem_keys"]), str::to_string),
                        p["jit_provisioning"]
                    );
                }
            }
        }
        TokenProfileCommand::Delete {
            project_id,
            profile_id,
        } => {
            let project = admin::get_project(&db, &project_id).await?;
            let env = Env::from_live(project.live);
            let id = ids::parse(Kind::TokenProfile, &profile_id)
                .filter(|(e, _)| *e == env)
                .map(|(_, id)| id)
                .ok_or_else(|| {
                    Fatal(format!(
                        "{profile_id:?} is not a profile id of this project"
                    ))
                })?;
            if !token_profiles::delete(&db, project.id, id).await? {
                return Err(Fatal(format!("no profile {profile_id} in {project_id}")));
            }
            println!("deleted {profile_id}");
        }
    }
    Ok(())
}

/// A provider JWKS URL: https, or http on a loopback address (tests, sidecars).
fn validate_jwks_url(url: &str) -> Result<(), Fatal> {
    let parsed = reqwest::Url::parse(url).map_err(|e| Fatal(format!("--jwks-url: {e}")))?;
    let host = parsed.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(Fatal(
            "--jwks-url must be https (http only on a loopback address)".into(),
        )),
    }
}

async fn purge(config: Config, dry_run: bool) -> Result<(), Fatal> {
    use crate::store::retention::{Outcome, Purged};
    let db = connect(&config).await?;
    let cutoff = Clock::system().now() - config.retention.seconds as i64;
    let mut last = Purged::default();
    let outcome = store::retention::purge(&db, cutoff, app::PURGE_BATCH, dry_run, |p| {
        // Progress on long runs: one line per 10,000 rows.
        if !dry_run
            && (p.sessions + p.magic_links) / 10_000 > (last.sessions + last.magic_links) / 10_000
        {
            eprintln!(
                "… {} sessions, {} magic links deleted so far",
                p.sessions, p.magic_links
            );
        }
        last = p;
    })
    .await?;
    match outcome {
        Outcome::Busy => {
            return Err(Fatal(
                "another instance is purging right now; try again when it is done".into(),
            ));
        }
        Outcome::Done(p) => println!(
            "{} {} sessions and {} magic links that ended before {}",
            if dry_run { "would delete" } else { "deleted" },
            p.sessions,
            p.magic_links,
            rfc3339(cutoff)
        ),
    }
    if !dry_run {
        // What the servers' background task also does: feed events past their window, and
        // attest token ids whose tokens expired.
        let now = Clock::system().now();
        let keep = (crate::domain::keys::JWT_LIFETIME_SECONDS
            + 2 * config.keys.jwks_max_age_seconds as i64)
            .max(3600);
        let events = store::revocations::purge(&db, now - keep).await?;
        let token_ids = store::token_profiles::purge_used(&db, now).await?;
        println!("deleted {events} revocation feed events and {token_ids} used attest token ids");
    }
    Ok(())
}

async fn rbac(config: Config, cmd: RbacCommand) -> Result<(), Fatal> {
    use crate::domain::rbac::Policy;
    let db = connect(&config).await?;
    match cmd {
        RbacCommand::Set { project_id, file } => {
            let row = admin::get_project(&db, &project_id).await?;
            let text = if file.as_os_str() == "-" {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                    .map_err(|e| Fatal(format!("reading the policy from stdin: {e}")))?;
                text
            } else {
                std::fs::read_to_string(&file)
                    .map_err(|e| Fatal(format!("{}: {e}", file.display())))?
            };
            let policy = Policy::parse(&text).map_err(|e| Fatal(e.to_string()))?;
            let stored = serde_json::to_string(&policy).map_err(|e| Fatal(e.to_string()))?;
            if !store::projects::set_rbac_policy(&db, row.id, &stored).await? {
                return Err(Fatal(format!("no project {project_id}")));
            }
            let permissions: usize = policy.roles.iter().map(|r| r.permissions.len()).sum();
            println!(
                "RBAC policy of {project_id} set: {} roles ({permissions} permissions), {} resources, {} scopes",
                policy.roles.len(),
                policy.resources.len(),
                policy.scopes.len()
            );
        }
        RbacCommand::Show { project_id } => {
            let row = admin::get_project(&db, &project_id).await?;
            let text = store::projects::rbac_policy(&db, row.id)
                .await?
                .unwrap_or_default();
            let policy = Policy::parse(&text).map_err(|e| Fatal(e.to_string()))?;
            println!(
                "{}",
                serde_json::to_string_pretty(&policy).map_err(|e| Fatal(e.to_string()))?
            );
        }
    }
    Ok(())
}

async fn project(config: Config, cmd: ProjectCommand) -> Result<(), Fatal> {
    let db = connect(&config).await?;
    let now = Clock::system().now();
    match cmd {
        ProjectCommand::Create { name, env, json } => {
            let master = master_keys(&config, &db).await?;
            let env: Env = env.parse().map_err(Fatal)?;
            let schedule = Settings::from_config(&config).schedule;
            let creds = admin::create_project(&db, &master, &schedule, &name, env, now).await?;
            if json {
                println!(
                    "{}",
                    json!({"project_id": creds.project_id.to_string(), "secret": creds.secret.expose()})
                );
            } else {
                println!("project_id: {}", creds.project_id);
                println!("secret:     {}", creds.secret.expose());
                println!("(the secret is shown only now; store it safely)");
            }
        }
        ProjectCommand::List { json } => {
            let rows = store::projects::list(&db).await?;
            if json {
                let list: Vec<_> = rows
                    .iter()
                    .map(|p| {
                        json!({
                            "project_id": ids::format(Kind::Project, Env::from_live(p.live), p.id),
                            "name": p.name,
                            "userinfo_url": p.userinfo_url,
                            "idle_timeout_minutes": p.idle_timeout_minutes,
                            "absolute_lifetime_minutes": p.absolute_lifetime_minutes,
                            "created_at": rfc3339(p.created_at),
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                println!(
                    "{:<54} {:<20} {:<22} USERINFO_URL",
                    "PROJECT_ID", "NAME", "CREATED"
                );
                for p in rows {
                    println!(
                        "{:<54} {:<20} {:<22} {}",
                        ids::format(Kind::Project, Env::from_live(p.live), p.id),
                        p.name,
                        rfc3339(p.created_at),
                        p.userinfo_url.as_deref().unwrap_or("-")
                    );
                }
            }
        }
        ProjectCommand::Update {
            project_id,
            userinfo_url,
            idle_timeout_minutes,
            absolute_lifetime_minutes,
            revocations_feed,
        } => {
            let row = admin::get_project(&db, &project_id).await?;
            let mut change = store::projects::SettingsChange::default();
            if let Some(url) = userinfo_url {
                if url.is_empty() {
                    change.userinfo_url = Some(None);
                } else {
                    admin::validate_userinfo_url(&url)?;
                    change.userinfo_url = Some(Some(url));
                }
            }
            let minutes = |name: &str, v: i64| -> Result<Option<i64>, Fatal> {
                match v {
                    0 => Ok(None),
                    1..=527_040 => Ok(Some(v)),
                    _ => Err(Fatal(format!(
                        "--{name} must be between 0 (off) and 527040"
                    ))),
                }
            };
            if let Some(v) = idle_timeout_minutes {
                change.idle_timeout_minutes = Some(minutes("idle-timeout-minutes", v)?);
            }
            if let Some(v) = absolute_lifetime_minutes {
                change.absolute_lifetime_minutes = Some(minutes("absolute-lifetime-minutes", v)?);
            }
            // Only the fields given are written (a concurrent update of another field keeps it).
            let row = store::projects::update_settings(&db, row.id, &change)
                .await?
                .ok_or_else(|| Fatal(format!("no such project: {project_id}")))?;
            if let Some(mode) = &revocations_feed {
                store::projects::set_revocations_private(&db, row.id, mode == "private").await?;
            }
            println!(
                "updated {project_id}: userinfo_url={} idle_timeout_minutes={} absolute_lifetime_minutes={}{}",
                row.userinfo_url.as_deref().unwrap_or("-"),
                row.idle_timeout_minutes
                    .map_or("off".into(), |v| v.to_string()),
                row.absolute_lifetime_minutes
                    .map_or("off".into(), |v| v.to_string()),
                revocations_feed.map_or(String::new(), |m| format!(" revocations_feed={m}")),
            );
        }
        ProjectCommand::RotateSecret {
            project_id,
            revoke_old,
        } => {
            let row = admin::get_project(&db, &project_id).await?;
            if revoke_old {
                let n = store::projects::revoke_all_but_newest_secret(&db, row.id, now).await?;
                println!("revoked {n} older secret(s); only the newest is accepted now");
            } else {
                let (_, secret) = admin::rotate_secret(&db, row.id, now).await?;
                println!("secret: {}", secret.expose());
                println!(
                    "(the old secret keeps working until: hallpass project rotate-secret {project_id} --revoke-old)"
                );
            }
        }
    }
    Ok(())
}

async fn keys(config: Config, cmd: KeysCommand) -> Result<(), Fatal> {
    let db = connect(&config).await?;
    let master = master_keys(&config, &db).await?;
    let schedule = Settings::from_config(&config).schedule;
    let now = Clock::system().now();
    match cmd {
        KeysCommand::List { project_id, json } => {
            let row = admin::get_project(&db, &project_id).await?;
            let env = Env::from_live(row.live);
            let keys = store::keys::of_project(&db, row.id).await?;
            let retires_at = |k: &store::keys::KeyRow| match k.state.as_str() {
                "retired" => k.retired_at.map(|t| t + schedule.retention()),
                _ => None,
            };
            if json {
                let list: Vec<_> = keys
                    .iter()
                    .map(|k| {
                        json!({
                            "kid": ids::format(Kind::Jwk, env, k.id),
                            "state": k.state,
                            "created_at": rfc3339(k.created_at),
                            "published_since": rfc3339(k.published_at),
                            "signing_since": k.signing_since.map(rfc3339),
                            "retired_at": k.retired_at.map(rfc3339),
                            "retires_at": retires_at(k).map(rfc3339),
                            "revoked_at": k.revoked_at.map(rfc3339),
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                println!(
                    "{:<50} {:<8} {:<21} {:<21} {:<21} RETIRES_AT",
                    "KID", "STATE", "CREATED", "PUBLISHED_SINCE", "SIGNING_SINCE"
                );
                let opt = |t: Option<i64>| t.map_or("-".to_string(), rfc3339);
                for k in &keys {
                    println!(
                        "{:<50} {:<8} {:<21} {:<21} {:<21} {}",
                        ids::format(Kind::Jwk, env, k.id),
                        k.state,
                        rfc3339(k.created_at),
                        rfc3339(k.published_at),
                        opt(k.signing_since),
                        opt(retires_at(k))
                    );
                }
            }
        }
        KeysCommand::Rotate { project_id, force } => {
            let row = admin::get_project(&db, &project_id).await?;
            let env = Env::from_live(row.live);
            let kid = keyring::rotate_now(&db, &master, &schedule, row.id, env, now, force).await?;
            println!(
                "{} now signs; running servers pick it up within seconds",
                ids::format(Kind::Jwk, env, kid)
            );
        }
        KeysCommand::Revoke { project_id, kid } => {
            let row = admin::get_project(&db, &project_id).await?;
            let env = Env::from_live(row.live);
            let id = ids::parse(Kind::Jwk, &kid)
                .filter(|(e, _)| *e == env)
                .map(|(_, id)| id)
                .ok_or_else(|| {
                    Fatal(format!(
                        "{kid:?} is not a key id of this project (jwk-{}-<uuid>)",
                        env.as_str()
                    ))
                })?;
            let before = keyring::revoke(&db, &master, &schedule, row.id, env, id, now).await?;
            println!(
                "revoked {kid} (was {}); servers refuse its JWTs within seconds",
                before.as_str()
            );
        }
        KeysCommand::Reencrypt => {
            let projects: Vec<_> = store::projects::list(&db)
                .await?
                .into_iter()
                .map(|p| p.id)
                .collect();
            let changed = keyring::reencrypt(&db, &master, &projects, |done, total| {
                eprint!("\rre-sealing keys: {done}/{total}");
            })
            .await?;
            eprintln!();
            println!(
                "{changed} key(s) re-sealed under master key {}",
                master.newest_id()
            );
        }
    }
    Ok(())
}
