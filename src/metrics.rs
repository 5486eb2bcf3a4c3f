//! Process counters, served in Prometheus text format at `/metrics` (no credentials, no
//! secrets: counts only).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Default)]
pub struct Metrics {
    /// Responses by status class: 1xx..5xx at index 1..5.
    responses: [AtomicU64; 6],
    pub jwts_minted: AtomicU64,
    pub argon2_verifications: AtomicU64,
    pub argon2_rejections: AtomicU64,
    pub caller_cache_hits: AtomicU64,
    pub caller_rate_limited: AtomicU64,
    pub caller_refusals: AtomicU64,
    pub key_ring_steps: AtomicU64,
    pub sessions_purged: AtomicU64,
    pub magic_links_purged: AtomicU64,
    pub refresh_failures: AtomicU64,
}

impl Metrics {
    pub fn response(&self, status: u16) {
        let class = usize::from(status / 100).min(5);
        self.responses[class].fetch_add(1, Relaxed);
    }

    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    /// Renders every counter; `gauges` are values the caller reads at scrape time.
    pub fn render(&self, gauges: &[(&str, &str, u64)]) -> String {
        let mut out = String::with_capacity(1024);
        out.push_str("# HELP hallpass_http_responses_total HTTP responses by status class.\n");
        out.push_str("# TYPE hallpass_http_responses_total counter\n");
        for (class, n) in self.responses.iter().enumerate().skip(1) {
            let _ = writeln!(
                out,
                "hallpass_http_responses_total{{class=\"{class}xx\"}} {}",
                n.load(Relaxed)
            );
        }
        let counters = [
            (
                "hallpass_jwts_minted_total",
                "Session JWTs signed.",
                &self.jwts_minted,
            ),
            (
                "hallpass_argon2_verifications_total",
                "Caller secrets checked with argon2id (cache misses).",
                &self.argon2_verifications,
            ),
            (
                "hallpass_argon2_rejections_total",
                "Callers told to retry because every argon2 slot was busy.",
                &self.argon2_rejections,
            ),
            (
                "hallpass_caller_cache_hits_total",
                "Callers recognised from an earlier verification (no argon2).",
                &self.caller_cache_hits,
            ),
            (
                "hallpass_caller_rate_limited_total",
                "Caller verifications refused 429 by the per-client or per-project limit.",
                &self.caller_rate_limited,
            ),
            (
                "hallpass_caller_refusals_total",
                "Callers refused 401 after verification.",
                &self.caller_refusals,
            ),
            (
                "hallpass_retention_sessions_deleted_total",
                "Ended sessions deleted by the retention purge.",
                &self.sessions_purged,
            ),
            (
                "hallpass_retention_magic_links_deleted_total",
                "Used or expired magic links deleted by the retention purge.",
                &self.magic_links_purged,
            ),
            (
                "hallpass_key_ring_steps_total",
                "Key-ring rotation steps this instance performed.",
                &self.key_ring_steps,
            ),
            (
                "hallpass_refresh_failures_total",
                "Failed reloads of projects, secrets and keys.",
                &self.refresh_failures,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Relaxed)
            );
        }
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.response(200);
        m.response(404);
        m.response(404);
        Metrics::inc(&m.jwts_minted);
        let text = m.render(&[("hallpass_projects", "Projects loaded.", 3)]);
        assert!(text.contains("hallpass_http_responses_total{class=\"2xx\"} 1\n"));
        assert!(text.contains("hallpass_http_responses_total{class=\"4xx\"} 2\n"));
        assert!(text.contains("hallpass_jwts_minted_total 1\n"));
        assert!(text.contains("# TYPE hallpass_projects gauge\nhallpass_projects 3\n"));
    }
}
