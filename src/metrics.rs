//! Process metrics through the `metrics` facade and its Prometheus exporter, served at
//! `/metrics` (no credentials; no label carries a token, secret, user id or session id).
//!
//! Each `AppState` owns its recorder instead of installing a global one: handles are taken
//! from it directly (`Recorder::register_*`), so several servers in one process (the tests)
//! keep separate counts, and the hot path holds its counters as handles, not name lookups.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

/// Buckets for request and statement durations (seconds): sub-millisecond to seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0,
];
/// Buckets for one RSA-2048 signature (seconds): 100 µs to 10 ms.
const SIGNING_BUCKETS: &[f64] = &[
    0.000_1, 0.000_2, 0.000_3, 0.000_5, 0.000_75, 0.001, 0.002, 0.005, 0.01,
];

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// Database errors by SQLSTATE class, counted where errors are converted (which has no
/// access to a server's state); exported by every server of the process.
static DB_ERRORS: std::sync::Mutex<Vec<(String, u64)>> = std::sync::Mutex::new(Vec::new());

/// Counts a database error by its SQLSTATE class ("08", "57", … ; "io", "pool" otherwise).
pub fn database_error(class: &str) {
    let mut errors = DB_ERRORS.lock().unwrap_or_else(|e| e.into_inner());
    match errors.iter_mut().find(|(c, _)| c == class) {
        Some((_, n)) => *n += 1,
        None => errors.push((class.to_string(), 1)),
    }
}

pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    pub jwts_minted: Counter,
    /// SSF Security Event Tokens signed (each once per process; resent ones not counted).
    pub ssf_sets_signed: Counter,
    pub signing_seconds: Histogram,
    pub caller_cache_hits: Counter,
    pub caller_argon2_runs: Counter,
    pub caller_refusals: Counter,
    pub caller_rate_limited: Counter,
    pub argon2_slot_timeouts: Counter,
    pub key_ring_steps: Counter,
    pub refresh_failures: Counter,
    pub sessions_purged: Counter,
    pub magic_links_purged: Counter,
    pub touch_flush_seconds: Histogram,
    /// Requests by status class, for a quick look without PromQL (also in tests).
    served: [AtomicU64; 6],
    /// `http_requests_total` and `http_request_duration_seconds` handles by (method, route,
    /// status).
    per_route: std::sync::RwLock<std::collections::HashMap<RouteKey, (Counter, Histogram)>>,
}

type RouteKey = (&'static str, String, u16);

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn key(name: &'static str, labels: Vec<Label>) -> Key {
    Key::from_parts(name, labels)
}

impl Metrics {
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("http_request_duration_seconds".into()),
                LATENCY_BUCKETS,
            )
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("hallpass_touch_flush_duration_seconds".into()),
                    LATENCY_BUCKETS,
                )
            })
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("hallpass_jwt_signing_duration_seconds".into()),
                    SIGNING_BUCKETS,
                )
            })
            .unwrap_or_else(|e| panic!("bucket lists are non-empty constants: {e}"))
            .build_recorder();
        let handle = recorder.handle();
        let describe = |name: &'static str, help: &'static str| {
            recorder.describe_counter(
                KeyName::from_const_str(name),
                None,
                SharedString::const_str(help),
            );
        };
        for (name, help) in DESCRIPTIONS {
            describe(name, help);
        }
        let counter = |name: &'static str, labels: Vec<Label>| {
            recorder.register_counter(&key(name, labels), &METADATA)
        };
        let caller = |result: &'static str| {
            counter(
                "hallpass_caller_auth_total",
                vec![Label::new("result", result)],
            )
        };
        let purged = |table: &'static str| {
            counter(
                "hallpass_retention_deleted_total",
                vec![Label::new("table", table)],
            )
        };
        let version = env!("CARGO_PKG_VERSION");
        let commit = option_env!("HALLPASS_COMMIT").unwrap_or("unknown");
        recorder
            .register_gauge(
                &key(
                    "hallpass_build_info",
                    vec![Label::new("version", version), Label::new("commit", commit)],
                ),
                &METADATA,
            )
            .set(1.0);
        Self {
            jwts_minted: counter("hallpass_jwts_minted_total", vec![]),
            ssf_sets_signed: counter("hallpass_ssf_sets_signed_total", vec![]),
            signing_seconds: recorder.register_histogram(
                &key("hallpass_jwt_signing_duration_seconds", vec![]),
                &METADATA,
            ),
            caller_cache_hits: caller("cache_hit"),
            caller_argon2_runs: caller("argon2"),
            caller_refusals: caller("refused"),
            caller_rate_limited: caller("rate_limited"),
            argon2_slot_timeouts: counter("hallpass_argon2_slot_timeouts_total", vec![]),
            key_ring_steps: counter("hallpass_key_ring_steps_total", vec![]),
            refresh_failures: counter("hallpass_refresh_failures_total", vec![]),
            sessions_purged: purged("sessions"),
            magic_links_purged: purged("magic_links"),
            touch_flush_seconds: recorder.register_histogram(
                &key("hallpass_touch_flush_duration_seconds", vec![]),
                &METADATA,
            ),
            served: Default::default(),
            per_route: Default::default(),
            recorder,
            handle,
        }
    }

    pub fn inc(counter: &Counter) {
        counter.increment(1);
    }

    /// One request answered: counted by method, route template and status, and timed.
    pub fn request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let class = usize::from(status / 100).min(5);
        self.served[class].fetch_add(1, Ordering::Relaxed);
        // The method is the client's word: anything but the usual ones counts as "other", so
        // no client can grow the label set (routes are templates, statuses are few).
        let method: &'static str = match method {
            "GET" => "GET",
            "POST" => "POST",
            "PUT" => "PUT",
            "DELETE" => "DELETE",
            "PATCH" => "PATCH",
            "HEAD" => "HEAD",
            "OPTIONS" => "OPTIONS",
            _ => "other",
        };
        let key = (method, route.to_string(), status);
        // Handles are kept per label set: registering them anew would allocate the labels and
        // look them up on every request of the hot path.
        let cached = self
            .per_route
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        let (counter, histogram) = match cached {
            Some(handles) => handles,
            None => {
                let route = SharedString::from(route.to_string());
                let handles = (
                    self.recorder.register_counter(
                        &metrics::Key::from_parts(
                            "http_requests_total",
                            vec![
                                Label::new("method", method),
                                Label::new("route", route.clone()),
                                Label::new("status", status.to_string()),
                            ],
                        ),
                        &METADATA,
                    ),
                    self.recorder.register_histogram(
                        &metrics::Key::from_parts(
                            "http_request_duration_seconds",
                            vec![Label::new("route", route)],
                        ),
                        &METADATA,
                    ),
                );
                self.per_route
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key, handles.clone());
                handles
            }
        };
        counter.increment(1);
        histogram.record(elapsed.as_secs_f64());
    }

    /// Responses so far with this status class (2 for 2xx …).
    pub fn served(&self, class: usize) -> u64 {
        self.served[class.min(5)].load(Ordering::Relaxed)
    }

    /// A counter whose value is kept elsewhere and set at scrape time (`absolute`).
    pub fn counter(&self, name: &'static str, labels: Vec<Label>) -> Counter {
        self.recorder
            .register_counter(&key(name, labels), &METADATA)
    }

    pub fn gauge(&self, name: &'static str, labels: Vec<Label>) -> Gauge {
        self.recorder.register_gauge(&key(name, labels), &METADATA)
    }

    /// Folds recorded histogram samples into their buckets. The exporter keeps raw samples
    /// until then, so without this (or a scrape) memory grows with every request: the
    /// server runs it every few seconds.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// The exposition text, after `refresh` has set the gauges read at scrape time.
    pub fn render(&self, refresh: impl FnOnce(&Self)) -> String {
        refresh(self);
        let errors = DB_ERRORS.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (class, n) in errors {
            self.recorder
                .register_counter(
                    &key(
                        "hallpass_database_errors_total",
                        vec![Label::new("sqlstate_class", class)],
                    ),
                    &METADATA,
                )
                .absolute(n);
        }
        self.handle.run_upkeep();
        self.handle.render()
    }
}

/// HELP texts (the exporter writes them for counters, gauges and histograms alike).
const DESCRIPTIONS: &[(&str, &str)] = &[
    (
        "hallpass_session_reads_total",
        "Postgres: sessions read by token or id (authenticate, get by JWT).",
    ),
    (
        "hallpass_session_read_statements_total",
        "Postgres: statements those reads were sent in; fewer than the reads when concurrent reads shared one.",
    ),
    (
        "http_requests_total",
        "HTTP requests answered, by method, route template and status.",
    ),
    (
        "http_request_duration_seconds",
        "Time from request to response, by route template.",
    ),
    (
        "hallpass_build_info",
        "The running build: version and git commit.",
    ),
    ("hallpass_jwts_minted_total", "Session JWTs signed."),
    (
        "hallpass_ssf_sets_signed_total",
        "SSF Security Event Tokens signed (once each per process; resending is not counted).",
    ),
    (
        "hallpass_jwt_signing_duration_seconds",
        "Time to sign one session JWT (RSA-2048).",
    ),
    (
        "hallpass_caller_auth_total",
        "Caller authentications by result: cache_hit, argon2 (a verification ran), refused, rate_limited.",
    ),
    (
        "hallpass_argon2_slot_timeouts_total",
        "Callers told to retry because every argon2 thread stayed busy.",
    ),
    (
        "hallpass_key_ring_steps_total",
        "Key-ring rotation steps this instance performed.",
    ),
    (
        "hallpass_refresh_failures_total",
        "Failed reloads of projects, secrets and keys.",
    ),
    (
        "hallpass_retention_deleted_total",
        "Rows deleted by the retention purge, by table.",
    ),
    (
        "hallpass_touch_flush_duration_seconds",
        "Time to write one batch of last_accessed_at touches.",
    ),
    (
        "hallpass_touches_pending",
        "last_accessed_at writes waiting for the next batch.",
    ),
    (
        "hallpass_database_errors_total",
        "Database errors by SQLSTATE class (io and pool for connection-level failures).",
    ),
    (
        "hallpass_database_connections",
        "Database connections by kind (pool, direct) and state (in_use, idle).",
    ),
    ("hallpass_projects", "Projects loaded in this instance."),
    (
        "hallpass_keys_unusable",
        "Stored signing keys this instance cannot open.",
    ),
    (
        "hallpass_signing_keys",
        "Signing keys by project and state (next, current, retired).",
    ),
    (
        "hallpass_key_ring_next_change_seconds",
        "Seconds until a project's key ring next changes by itself.",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_labelled_counters_histograms_and_build_info() {
        let m = Metrics::new();
        m.request(
            "POST",
            "/v1/sessions/authenticate",
            200,
            Duration::from_micros(800),
        );
        m.request(
            "POST",
            "/v1/sessions/authenticate",
            404,
            Duration::from_millis(2),
        );
        for i in 0..50 {
            m.request(
                &format!("M{i}"),
                "unmatched",
                400,
                Duration::from_micros(10),
            );
        }
        Metrics::inc(&m.jwts_minted);
        let text = m.render(|m| m.gauge("hallpass_projects", vec![]).set(3.0));
        assert!(text.contains(
            "http_requests_total{method=\"POST\",route=\"/v1/sessions/authenticate\",status=\"200\"} 1"
        ), "{text}");
        assert!(text.contains("# TYPE http_request_duration_seconds histogram"));
        assert!(text.contains("http_request_duration_seconds_bucket{route=\"/v1/sessions/authenticate\",le=\"0.001\"} 1"), "{text}");
        assert!(text.contains("hallpass_jwts_minted_total 1"));
        assert!(
            text.contains(
                "http_requests_total{method=\"other\",route=\"unmatched\",status=\"400\"} 50"
            ),
            "client-chosen methods share one label: {text}"
        );
        assert!(text.contains("hallpass_projects 3"));
        assert!(text.contains("hallpass_build_info{version=\""));
        assert_eq!(m.served(2), 1);
        assert_eq!(m.served(4), 51);
    }
}
