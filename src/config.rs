//! Configuration: embedded defaults, an optional TOML file, then environment overrides.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

const DEFAULTS: &str = include_str!("../config/default.toml");

/// A string that must never reach a log: `Debug` and `Display` print a placeholder.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "[redacted]"
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub security: SecurityConfig,
    pub bootstrap: BootstrapConfig,
    pub keys: KeysConfig,
    pub retention: RetentionConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    pub seconds: u64,
    pub interval_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub request_timeout_seconds: u64,
    pub body_limit_bytes: usize,
    pub header_read_timeout_seconds: u64,
    pub idle_timeout_seconds: u64,
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub auth_attempts_per_minute_per_client: u32,
    pub auth_attempts_per_minute_per_project: u32,
    pub argon2_concurrency: usize,
    pub ssf_signatures_per_second: u32,
    pub max_sessions_per_user: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: Secret,
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    pub master_key: Secret,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapConfig {
    pub project_id: String,
    pub secret: Secret,
    pub userinfo_url: String,
    pub default_project_id: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    pub rotation_interval_seconds: u64,
    pub jwks_max_age_seconds: u64,
    pub retired_retention_seconds: u64,
    pub refresh_interval_seconds: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    pub filter: String,
}

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

/// How an environment value is typed before it joins the TOML tree, so that a bad value is
/// reported against the key it overrides.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
}

/// Environment variables and the keys they override.
const ENV: &[(&str, &str, &str, Kind)] = &[
    ("HALLPASS_LISTEN", "server", "listen", Kind::Str),
    (
        "HALLPASS_REQUEST_TIMEOUT_SECONDS",
        "server",
        "request_timeout_seconds",
        Kind::Int,
    ),
    (
        "HALLPASS_HEADER_READ_TIMEOUT_SECONDS",
        "server",
        "header_read_timeout_seconds",
        Kind::Int,
    ),
    (
        "HALLPASS_IDLE_TIMEOUT_SECONDS",
        "server",
        "idle_timeout_seconds",
        Kind::Int,
    ),
    (
        "HALLPASS_MAX_CONNECTIONS",
        "server",
        "max_connections",
        Kind::Int,
    ),
    (
        "HALLPASS_AUTH_ATTEMPTS_PER_MINUTE_PER_CLIENT",
        "server",
        "auth_attempts_per_minute_per_client",
        Kind::Int,
    ),
    (
        "HALLPASS_AUTH_ATTEMPTS_PER_MINUTE_PER_PROJECT",
        "server",
        "auth_attempts_per_minute_per_project",
        Kind::Int,
    ),
    (
        "HALLPASS_SSF_SIGNATURES_PER_SECOND",
        "server",
        "ssf_signatures_per_second",
        Kind::Int,
    ),
    (
        "HALLPASS_MAX_SESSIONS_PER_USER",
        "server",
        "max_sessions_per_user",
        Kind::Int,
    ),
    ("HALLPASS_DATABASE_URL", "database", "url", Kind::Str),
    (
        "HALLPASS_DATABASE_ACQUIRE_TIMEOUT_MS",
        "database",
        "acquire_timeout_ms",
        Kind::Int,
    ),
    (
        "HALLPASS_DATABASE_MAX_CONNECTIONS",
        "database",
        "max_connections",
        Kind::Int,
    ),
    ("HALLPASS_MASTER_KEY", "security", "master_key", Kind::Str),
    (
        "HALLPASS_BOOTSTRAP_PROJECT_ID",
        "bootstrap",
        "project_id",
        Kind::Str,
    ),
    (
        "HALLPASS_BOOTSTRAP_SECRET",
        "bootstrap",
        "secret",
        Kind::Str,
    ),
    (
        "HALLPASS_BOOTSTRAP_USERINFO_URL",
        "bootstrap",
        "userinfo_url",
        Kind::Str,
    ),
    (
        "HALLPASS_DEFAULT_PROJECT_ID",
        "bootstrap",
        "default_project_id",
        Kind::Str,
    ),
    (
        "HALLPASS_KEYS_ROTATION_INTERVAL_SECONDS",
        "keys",
        "rotation_interval_seconds",
        Kind::Int,
    ),
    (
        "HALLPASS_KEYS_JWKS_MAX_AGE_SECONDS",
        "keys",
        "jwks_max_age_seconds",
        Kind::Int,
    ),
    (
        "HALLPASS_KEYS_RETIRED_RETENTION_SECONDS",
        "keys",
        "retired_retention_seconds",
        Kind::Int,
    ),
    (
        "HALLPASS_KEYS_REFRESH_INTERVAL_SECONDS",
        "keys",
        "refresh_interval_seconds",
        Kind::Int,
    ),
    (
        "HALLPASS_RETENTION_SECONDS",
        "retention",
        "seconds",
        Kind::Int,
    ),
    (
        "HALLPASS_RETENTION_INTERVAL_SECONDS",
        "retention",
        "interval_seconds",
        Kind::Int,
    ),
    ("HALLPASS_LOG_FORMAT", "log", "format", Kind::Str),
    ("HALLPASS_LOG", "log", "filter", Kind::Str),
];

impl Config {
    /// Defaults, then `file`, then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, |name| std::env::var(name).ok())
    }

    /// As `load`, with the environment given as a lookup (tests pass their own).
    pub fn load_from(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        // Where each overridden key's value came from, so an error names what the user set.
        let mut origins: HashMap<String, String> = HashMap::new();
        let mut tree: toml::Table = DEFAULTS
            .parse()
            .map_err(|e| ConfigError(format!("embedded defaults: {e}")))?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
            let overlay: toml::Table = text
                .parse()
                .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
            merge(
                &mut tree,
                overlay,
                "",
                &path.display().to_string(),
                &mut origins,
            )?;
        }
        for (name, section, key, kind) in ENV {
            let Some(raw) = env(name) else { continue };
            // Secrets are named, never echoed.
            let shown = if matches!(
                *name,
                "HALLPASS_MASTER_KEY" | "HALLPASS_DATABASE_URL" | "HALLPASS_BOOTSTRAP_SECRET"
            ) {
                (*name).to_string()
            } else {
                format!("{name}={raw:?}")
            };
            let value = match kind {
                Kind::Str => toml::Value::String(raw),
                Kind::Int => toml::Value::Integer(raw.trim().parse().map_err(|_| {
                    ConfigError(format!("{name}: expected a whole number, got {raw:?}"))
                })?),
            };
            if let Some(toml::Value::Table(t)) = tree.get_mut(*section) {
                t.insert((*key).to_string(), value);
            }
            origins.insert(format!("{section}.{key}"), shown);
        }
        let origin = |path: &str| {
            origins
                .get(path)
                .cloned()
                .unwrap_or_else(|| format!("{path} (built-in default)"))
        };
        // serde_path_to_error names the key whose value is bad; `origin` says who set it
        // ("HALLPASS_LISTEN=\"x\": invalid socket address syntax").
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(tree)).map_err(|e| {
                ConfigError(format!(
                    "{}: {}",
                    origin(&e.path().to_string()),
                    e.inner().message()
                ))
            })?;
        config
            .validate()
            .map_err(|(path, message)| ConfigError(format!("{}: {message}", origin(path))))?;
        Ok(config)
    }

    /// Checks values serde cannot; the error is the key and what is wrong with it.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        let nonzero = [
            (
                "server.request_timeout_seconds",
                self.server.request_timeout_seconds,
            ),
            (
                "server.body_limit_bytes",
                self.server.body_limit_bytes as u64,
            ),
            (
                "server.argon2_concurrency",
                self.server.argon2_concurrency as u64,
            ),
            (
                "server.header_read_timeout_seconds",
                self.server.header_read_timeout_seconds,
            ),
            (
                "server.idle_timeout_seconds",
                self.server.idle_timeout_seconds,
            ),
            (
                "server.auth_attempts_per_minute_per_client",
                u64::from(self.server.auth_attempts_per_minute_per_client),
            ),
            (
                "server.auth_attempts_per_minute_per_project",
                u64::from(self.server.auth_attempts_per_minute_per_project),
            ),
            (
                "server.ssf_signatures_per_second",
                u64::from(self.server.ssf_signatures_per_second),
            ),
            (
                "server.max_sessions_per_user",
                u64::from(self.server.max_sessions_per_user),
            ),
            (
                "database.acquire_timeout_ms",
                self.database.acquire_timeout_ms,
            ),
            (
                "database.max_connections",
                u64::from(self.database.max_connections),
            ),
            (
                "keys.rotation_interval_seconds",
                self.keys.rotation_interval_seconds,
            ),
            ("keys.jwks_max_age_seconds", self.keys.jwks_max_age_seconds),
            ("retention.seconds", self.retention.seconds),
            (
                "retention.interval_seconds",
                self.retention.interval_seconds,
            ),
            (
                "keys.refresh_interval_seconds",
                self.keys.refresh_interval_seconds,
            ),
        ];
        for (key, value) in nonzero {
            if value == 0 {
                return Err((key, "must be greater than 0".to_string()));
            }
        }
        // A new key is published 2 x max-age before it signs. An instance learns of it within
        // the refresh interval, and a verifier may have cached that instance's JWKS just
        // before, for max-age: refresh + max-age must fit in 2 x max-age.
        if self.keys.refresh_interval_seconds > self.keys.jwks_max_age_seconds {
            return Err((
                "keys.refresh_interval_seconds",
                format!(
                    "must not exceed keys.jwks_max_age_seconds ({}): every instance must \
                     publish a new key before it signs and verifiers' cached JWKS expires",
                    self.keys.jwks_max_age_seconds
                ),
            ));
        }
        // A URL with a scheme that is neither Postgres's nor SQLite's would be taken for a
        // SQLite file name, and named in errors with its password. Only the scheme is shown.
        let url = self.database.url.expose().trim();
        if let Some((scheme, _)) = url.split_once("://")
            && !matches!(scheme, "postgres" | "postgresql" | "sqlite")
        {
            let scheme: String = scheme.chars().take(20).collect();
            return Err((
                "database.url",
                format!(
                    "the scheme {scheme:?} is not supported: postgres://… or postgresql://… \
                     (lower case) for Postgres, sqlite:PATH or a file path for SQLite"
                ),
            ));
        }
        // A typo in the filter would otherwise silence every log line, warnings included.
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.filter) {
            return Err((
                "log.filter",
                format!("not a valid tracing filter ({e}); e.g. info or hallpass=debug,info"),
            ));
        }
        Ok(())
    }

    /// Where the database lives, parsed from `database.url`.
    pub fn database_target(&self) -> DatabaseTarget {
        let url = self.database.url.expose().trim();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            DatabaseTarget::Postgres(Secret::new(url))
        } else if url.is_empty() {
            DatabaseTarget::Sqlite(PathBuf::from("hallpass.db"))
        } else {
            let path = url
                .strip_prefix("sqlite://")
                .or_else(|| url.strip_prefix("sqlite:"))
                .unwrap_or(url);
            DatabaseTarget::Sqlite(PathBuf::from(path))
        }
    }
}

#[derive(Debug, Clone)]
pub enum DatabaseTarget {
    Postgres(Secret),
    Sqlite(PathBuf),
}

/// Lay `overlay` over `base`, refusing keys the defaults do not know.
fn merge(
    base: &mut toml::Table,
    overlay: toml::Table,
    prefix: &str,
    source: &str,
    origins: &mut HashMap<String, String>,
) -> Result<(), ConfigError> {
    for (key, value) in overlay {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(inner)), toml::Value::Table(over)) => {
                merge(inner, over, &path, source, origins)?
            }
            (Some(toml::Value::Table(_)), _) => {
                return Err(ConfigError(format!("{source}: {path} must be a table")));
            }
            (Some(slot), value) => {
                origins.insert(path.clone(), format!("{source}: {path}"));
                *slot = value
            }
            (None, _) => {
                return Err(ConfigError(format!("{source}: unknown key {path}")));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn defaults_load_and_pick_sqlite() {
        let c = Config::load_from(None, env(&[])).unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
        assert!(
            matches!(c.database_target(), DatabaseTarget::Sqlite(p) if p == Path::new("hallpass.db"))
        );
        assert_eq!(c.keys.jwks_max_age_seconds, 300);
    }

    #[test]
    fn environment_overrides_and_names_bad_values() {
        let c = Config::load_from(
            None,
            env(&[
                ("HALLPASS_LISTEN", "0.0.0.0:9000"),
                ("HALLPASS_DATABASE_URL", "postgres://u@h/db"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server.listen.to_string(), "0.0.0.0:9000");
        assert!(matches!(c.database_target(), DatabaseTarget::Postgres(_)));
        let err = Config::load_from(None, env(&[("HALLPASS_KEYS_JWKS_MAX_AGE_SECONDS", "soon")]))
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("HALLPASS_KEYS_JWKS_MAX_AGE_SECONDS")
        );
        let err = Config::load_from(None, env(&[("HALLPASS_LOG_FORMAT", "xml")])).unwrap_err();
        assert!(err.to_string().contains("xml"), "{err}");
    }

    #[test]
    fn unknown_file_keys_are_refused_with_their_name() {
        let dir = std::env::temp_dir().join(format!("hallpass-cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "[server]\nlisten_addr = \"x\"\n").unwrap();
        let err = Config::load_from(Some(&file), env(&[])).unwrap_err();
        assert!(err.to_string().contains("server.listen_addr"), "{err}");
        std::fs::write(&file, "[server]\nlisten = \"nonsense\"\n").unwrap();
        let err = Config::load_from(Some(&file), env(&[])).unwrap_err();
        assert!(
            err.to_string().contains("listen") || err.to_string().contains("address"),
            "{err}"
        );
    }

    #[test]
    fn a_database_url_of_another_scheme_is_refused_without_its_password() {
        for url in ["Postgres://u:pw-secret@h/db", "mysql://u:pw-secret@h/db"] {
            let err = Config::load_from(None, env(vec![("HALLPASS_DATABASE_URL", url)].leak()))
                .unwrap_err();
            let err = err.to_string();
            assert!(
                err.contains("HALLPASS_DATABASE_URL") && err.contains("scheme"),
                "{err}"
            );
            assert!(!err.contains("pw-secret"), "{err}");
        }
        for url in [
            "sqlite:///tmp/x.db",
            "sqlite:x.db",
            "x.db",
            "postgresql://u@h/db",
        ] {
            Config::load_from(None, env(vec![("HALLPASS_DATABASE_URL", url)].leak())).unwrap();
        }
    }

    #[test]
    fn the_refresh_interval_may_not_exceed_the_jwks_max_age() {
        let err = Config::load_from(
            None,
            env(&[
                ("HALLPASS_KEYS_REFRESH_INTERVAL_SECONDS", "301"),
                ("HALLPASS_KEYS_JWKS_MAX_AGE_SECONDS", "300"),
            ]),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("HALLPASS_KEYS_REFRESH_INTERVAL_SECONDS"),
            "{err}"
        );
        Config::load_from(
            None,
            env(&[
                ("HALLPASS_KEYS_REFRESH_INTERVAL_SECONDS", "300"),
                ("HALLPASS_KEYS_JWKS_MAX_AGE_SECONDS", "300"),
            ]),
        )
        .unwrap();
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let s = Secret::new("hunter2hunter2");
        assert_eq!(format!("{s:?}"), "[redacted]");
    }
}
