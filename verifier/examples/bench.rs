//! Measurements of the verifier against a running hallpass, for `bench/run.sh`. Each mode
//! prints one JSON line on stdout (progress and errors go to stderr).
//!
//! ```sh
//! cargo build --release -p hallpass-verifier --example bench
//! # How long after a revoke's 200 the verifier refuses the session's JWT (N sessions, one
//! # at a time); --transport auto (default: SSE, long-poll fallback) | stream | long-poll.
//! target/release/examples/bench revocation-latency [--transport long-poll] BASE_URL PROJECT_ID SECRET N
//! # Verifications of one JWT per second on one thread (feed off, keys loaded).
//! target/release/examples/bench verify-throughput BASE_URL PROJECT_ID SECRET SECONDS
//! ```
//!
//! Revocation latency: the sessions are created through the HTTP API (`POST /v1/users`, then
//! `POST /v1/sessions`), the verifier is built with the feed on and waited for (`ready()`),
//! every JWT is checked to verify, then each session in turn is revoked (`POST
//! /v1/sessions/revoke`); the clock starts when the revoke's 200 arrives and `verify` is
//! called at once and then every millisecond until it answers `Error::Revoked`. A session
//! still accepted after 5 s is a miss and counts as 5 s in the percentiles. After 10 misses
//! in a row the run stops (the feed is evidently not delivering).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use hallpass_verifier::{Error, FeedTransport, Verifier};
use serde_json::{Value, json};

/// A revocation not seen within this is a miss.
const MISS_AFTER: Duration = Duration::from_secs(5);
/// Stop a revocation run after this many misses in a row.
const MAX_CONSECUTIVE_MISSES: u32 = 10;
/// The most `ready()` may take.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const USAGE: &str = "usage:
  bench revocation-latency [--transport auto|stream|long-poll] BASE_URL PROJECT_ID SECRET N
  bench verify-throughput BASE_URL PROJECT_ID SECRET SECONDS";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(args) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Vec<String>) -> Result<Value, BoxError> {
    let mut transport = "auto".to_string();
    let mut positional = Vec::new();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        if arg == "--transport" {
            transport = it.next().ok_or("--transport needs a value")?;
        } else if let Some(v) = arg.strip_prefix("--transport=") {
            transport = v.to_string();
        } else if arg == "-h" || arg == "--help" {
            return Err(USAGE.into());
        } else {
            positional.push(arg);
        }
    }
    let [mode, base, project, secret, count] = <[String; 5]>::try_from(positional)
        .map_err(|_| format!("expected a mode and four arguments\n{USAGE}"))?;
    let count: u64 = count
        .parse()
        .map_err(|_| format!("not a positive number: {count}\n{USAGE}"))?;
    if count == 0 {
        return Err(format!("N / SECONDS must be positive\n{USAGE}").into());
    }
    let api = Api::new(&base, &project, &secret)?;
    match mode.as_str() {
        "revocation-latency" => {
            let transport = match transport.as_str() {
                "auto" => FeedTransport::Auto,
                "stream" => FeedTransport::Stream,
                "long-poll" | "longpoll" | "long_poll" => FeedTransport::LongPoll,
                other => return Err(format!("unknown transport {other:?}\n{USAGE}").into()),
            };
            let n = usize::try_from(count)?;
            // The feed task needs a worker besides the one that polls `verify`.
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?
                .block_on(revocation_latency(api, transport, n))
        }
        "verify-throughput" => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(verify_throughput(api, Duration::from_secs(count))),
        other => Err(format!("unknown mode {other:?}\n{USAGE}").into()),
    }
}

/// The few hallpass API calls the benchmark makes (Basic `project_id:secret`).
struct Api {
    http: reqwest::Client,
    base: String,
    project: String,
    secret: String,
}

/// A session as `POST /v1/sessions` answers it.
struct Minted {
    session_id: String,
    jwt: String,
}

impl Api {
    fn new(base: &str, project: &str, secret: &str) -> Result<Self, BoxError> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            base: base.trim_end_matches('/').to_string(),
            project: project.to_string(),
            secret: secret.to_string(),
        })
    }

    /// POSTs `body` as JSON; the parsed answer, or an error naming the status and body.
    async fn post(&self, path: &str, body: &Value) -> Result<Value, BoxError> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .basic_auth(&self.project, Some(&self.secret))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(body)?)
            .send()
            .await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes);
            return Err(format!("POST {path}: {status}: {}", &text[..text.len().min(500)]).into());
        }
        Ok(serde_json::from_slice(&bytes)?)
    }

    async fn create_user(&self) -> Result<String, BoxError> {
        let v = self.post("/v1/users", &json!({})).await?;
        str_field(&v, &["user_id"])
    }

    async fn create_session(&self, user_id: &str) -> Result<Minted, BoxError> {
        let v = self
            .post(
                "/v1/sessions",
                &json!({
                    "user_id": user_id,
                    "session_duration_minutes": 60,
                    "authentication_factors": [{"type": "password", "delivery_method": "knowledge"}],
                }),
            )
            .await?;
        Ok(Minted {
            session_id: str_field(&v, &["session", "session_id"])?,
            jwt: str_field(&v, &["session_jwt"])?,
        })
    }

    async fn revoke(&self, session_id: &str) -> Result<(), BoxError> {
        self.post("/v1/sessions/revoke", &json!({"session_id": session_id}))
            .await
            .map(drop)
    }
}

fn str_field(v: &Value, path: &[&str]) -> Result<String, BoxError> {
    let mut cur = v;
    for key in path {
        cur = &cur[*key];
    }
    cur.as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| format!("no {} in the answer", path.join(".")).into())
}

fn transport_name(t: Option<FeedTransport>) -> &'static str {
    match t {
        Some(FeedTransport::Stream) => "stream",
        Some(FeedTransport::LongPoll) => "long-poll",
        Some(FeedTransport::Auto) => "auto",
        None => "disconnected",
    }
}

async fn ready(verifier: &Verifier) -> Result<(), BoxError> {
    tokio::time::timeout(READY_TIMEOUT, verifier.ready())
        .await
        .map_err(|_| format!("the verifier was not ready within {READY_TIMEOUT:?}"))??;
    Ok(())
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

async fn revocation_latency(
    api: Api,
    transport: FeedTransport,
    n: usize,
) -> Result<Value, BoxError> {
    let user = api.create_user().await?;
    eprintln!("bench: creating {n} sessions for {user}");
    let mut sessions = Vec::with_capacity(n);
    for _ in 0..n {
        sessions.push(api.create_session(&user).await?);
    }
    let verifier = Verifier::builder(&api.base, &api.project)
        .project_secret(api.secret.clone())
        .feed_transport(transport)
        .build()?;
    ready(&verifier).await?;
    for s in &sessions {
        let session = verifier
            .verify(&s.jwt)
            .await
            .map_err(|e| format!("a fresh JWT does not verify: {} ({e})", e.code()))?;
        if session.session_id != s.session_id {
            return Err(format!("JWT of {} names {}", s.session_id, session.session_id).into());
        }
    }
    let transport_at_start = verifier.health().feed.and_then(|f| f.transport);
    eprintln!(
        "bench: verifier ready (feed {}); revoking {n} sessions one at a time",
        transport_name(transport_at_start)
    );

    let mut latencies = Vec::with_capacity(n);
    let (mut misses, mut consecutive_misses, mut errors) = (0u32, 0u32, 0u32);
    let mut first_error = None;
    let mut stopped_early = false;
    let started = Instant::now();
    for s in &sessions {
        api.revoke(&s.session_id).await?;
        let t0 = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await; // the first tick is immediate
            match verifier.verify(&s.jwt).await {
                Ok(_) => {
                    let waited = t0.elapsed();
                    if waited >= MISS_AFTER {
                        misses += 1;
                        consecutive_misses += 1;
                        latencies.push(ms(MISS_AFTER));
                        break;
                    }
                }
                Err(Error::Revoked) => {
                    latencies.push(ms(t0.elapsed()));
                    consecutive_misses = 0;
                    break;
                }
                Err(e) => {
                    // Not the refusal measured (an expired JWT, no keys): left out.
                    errors += 1;
                    first_error.get_or_insert_with(|| format!("{}: {e}", e.code()));
                    break;
                }
            }
        }
        if consecutive_misses >= MAX_CONSECUTIVE_MISSES {
            eprintln!("bench: {consecutive_misses} misses in a row; stopping");
            stopped_early = true;
            break;
        }
    }
    let elapsed = started.elapsed();
    let feed = verifier.health().feed;
    latencies.sort_by(f64::total_cmp);
    let transport_at_end = feed.as_ref().and_then(|f| f.transport);
    let transport_seen = if transport_at_start == transport_at_end {
        transport_name(transport_at_end).to_string()
    } else {
        format!(
            "{}→{}",
            transport_name(transport_at_start),
            transport_name(transport_at_end)
        )
    };
    Ok(json!({
        "mode": "revocation-latency",
        "n": latencies.len(),
        "requested": n,
        "p50_ms": percentile(&latencies, 50.0),
        "p90_ms": percentile(&latencies, 90.0),
        "p99_ms": percentile(&latencies, 99.0),
        "max_ms": latencies.last(),
        "mean_ms": (!latencies.is_empty())
            .then(|| (latencies.iter().sum::<f64>() / latencies.len() as f64 * 1e3).round() / 1e3),
        "misses": misses,
        "miss_after_ms": ms(MISS_AFTER),
        "errors": errors,
        "first_error": first_error,
        "stopped_early": stopped_early,
        "transport": transport_seen,
        "transport_config": match transport {
            FeedTransport::Auto => "auto",
            FeedTransport::Stream => "stream",
            FeedTransport::LongPoll => "long-poll",
        },
        "feed_connected": feed.as_ref().map(|f| f.connected),
        "revoked_sessions_held": feed.as_ref().map(|f| f.revoked_sessions),
        "revoke_phase_s": (elapsed.as_secs_f64() * 1e3).round() / 1e3,
    }))
}

/// CPU time of the calling thread (Linux `/proc/thread-self/schedstat`, nanoseconds).
fn thread_cpu() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

async fn verify_throughput(api: Api, seconds: Duration) -> Result<Value, BoxError> {
    let user = api.create_user().await?;
    let session = api.create_session(&user).await?;
    let verifier = Verifier::builder(&api.base, &api.project)
        .project_secret(api.secret.clone())
        .revocation_feed(false)
        .build()?;
    ready(&verifier).await?;
    // Warm: the first verifications load and parse whatever is lazily built.
    for _ in 0..100 {
        verifier
            .verify(&session.jwt)
            .await
            .map_err(|e| format!("the JWT does not verify: {} ({e})", e.code()))?;
    }
    let cpu0 = thread_cpu();
    let t0 = Instant::now();
    let mut count: u64 = 0;
    let mut failures: u64 = 0;
    while t0.elapsed() < seconds {
        match verifier.verify(&session.jwt).await {
            Ok(_) => count += 1,
            Err(_) => failures += 1,
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = match (cpu0, thread_cpu()) {
        (Some(a), Some(b)) if b > a => Some((b - a).as_secs_f64()),
        _ => None,
    };
    let round = |v: f64| (v * 10.0).round() / 10.0;
    let per_wall = count as f64 / wall;
    Ok(json!({
        "mode": "verify-throughput",
        "verifications": count,
        "failures": failures,
        "seconds": (wall * 1e3).round() / 1e3,
        "cpu_seconds": cpu.map(|c| (c * 1e3).round() / 1e3),
        // Per second of this thread's CPU time when it can be read (a busy machine takes
        // the core away now and then), otherwise per wall-clock second.
        "per_second_per_core": round(cpu.map_or(per_wall, |c| count as f64 / c)),
        "per_second_wall": round(per_wall),
        "us_per_verification": cpu.map(|c| (c * 1e9 / count.max(1) as f64).round() / 1e3),
    }))
}
