//! The connection layer: accepting, bounding and closing HTTP/1.1 connections.
//!
//! hyper serves each connection; this module decides which connections may exist. A client
//! controls how many sockets it opens and how slowly it speaks, so:
//! - **header-read timeout**: a connection that has started a request (or has just
//!   connected) must deliver the whole request head within `header_read_timeout`;
//! - **idle timeout**: a kept-alive connection with no request for `idle_timeout` is closed;
//! - **cap**: at most `max_connections` are open (derived from the file-descriptor limit);
//!   at the cap, the connection idle the longest (no request in flight: kept alive, or no
//!   complete request yet) is closed to make room, the way nginx reuses idle connections,
//!   so a new caller is served while slow or silent sockets hold the rest.
//!
//! Written here rather than taken from a library: hyper's own `header_read_timeout` also
//! runs while a kept-alive connection waits for its next request (one knob for two limits),
//! and neither hyper-util nor tower-http counts open connections or closes the idle ones at
//! a cap; both need the per-connection state kept below.
//!
//! Errors hyper answers itself (a malformed request, 431, 414) are written by hyper with an
//! empty body and no hook to change it; [`Io`] rewrites exactly those responses into the
//! JSON error shape every other response has (see `Io::poll_write`).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tower::ServiceExt;

/// The limits of the connection layer.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// Largest request head hyper buffers (start line and headers).
    pub max_header_bytes: usize,
}

/// Binds the listener with a deep accept backlog (the kernel default of 128 makes new
/// callers wait for a SYN retransmit, a second, whenever a burst fills it).
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Raises the soft open-file limit to the hard one and returns the connection cap it allows:
/// `configured` when set (non-zero), else the limit less `reserve` descriptors for the
/// database, logs and the process itself.
pub fn connection_cap(configured: usize, reserve: u64) -> (usize, u64) {
    let limit = rlimit::increase_nofile_limit(u64::MAX)
        .or_else(|_| rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft))
        .unwrap_or(1024);
    let derived = limit.saturating_sub(reserve).max(16);
    let cap = if configured > 0 {
        configured
    } else {
        usize::try_from(derived).unwrap_or(usize::MAX)
    };
    (cap, limit)
}

/// What the accept loop and the watchdog know of one connection.
struct Conn {
    /// Requests handed to the application and not yet answered.
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` when the connection last became idle (opened, or its last
    /// response was produced).
    idle_since: AtomicU64,
    /// Milliseconds since `epoch` of the first byte of a request not yet handed over; 0 when
    /// none has arrived since the connection went idle.
    head_started: AtomicU64,
    close: Notify,
    closing: AtomicBool,
}

struct Registry {
    epoch: Instant,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    drained: Notify,
    /// Notified whenever a connection ends.
    removed: Notify,
}

impl Registry {
    fn now_ms(&self) -> u64 {
        // Never 0, which `head_started` uses for "none".
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn len(&self) -> usize {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Asks the connection idle the longest to close; `false` when every one is busy.
    fn evict_one(&self) -> bool {
        let conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let victim = conns
            .values()
            .filter(|c| {
                c.in_flight.load(Ordering::Acquire) == 0 && !c.closing.load(Ordering::Acquire)
            })
            .min_by_key(|c| c.idle_since.load(Ordering::Acquire));
        match victim {
            Some(c) => {
                c.closing.store(true, Ordering::Release);
                c.close.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets in-flight requests
/// finish and closes idle connections.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let registry = Arc::new(Registry {
        epoch: Instant::now(),
        next_id: AtomicU64::new(1),
        conns: Mutex::new(HashMap::new()),
        drained: Notify::new(),
        removed: Notify::new(),
    });
    // Connections asked to close still hold their descriptor until their task ends; past
    // this many over the cap, accepting waits for them so the process stays within its
    // open-file limit.
    let slack = (limits.max_connections / 8).clamp(4, 64);
    let mut last_accept_warning: Option<Instant> = None;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        while registry.len() >= limits.max_connections + slack {
            let removed = registry.removed.notified();
            if registry.len() < limits.max_connections + slack {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), removed).await;
        }
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and the like: the cap should prevent them; do not spin, and
                    // under attack do not log each one.
                    if last_accept_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        tracing::warn!(error = %e, "accept failed (further failures for 10 s are not logged)");
                        last_accept_warning = Some(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if registry.len() >= limits.max_connections && !registry.evict_one() {
            // Every connection has a request in flight: refuse this one rather than queue it.
            tracing::debug!(%peer, "connection refused: every connection has a request in flight");
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let id = registry.next_id.fetch_add(1, Ordering::Relaxed);
        let now = registry.now_ms();
        let conn = Arc::new(Conn {
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(now),
            head_started: AtomicU64::new(now),
            close: Notify::new(),
            closing: AtomicBool::new(false),
        });
        registry
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, conn.clone());
        let (registry, router, stop) = (registry.clone(), router.clone(), stop_rx.clone());
        tokio::spawn(async move {
            connection(stream, peer, router, limits, &registry, conn, stop).await;
            let mut conns = registry.conns.lock().unwrap_or_else(|e| e.into_inner());
            conns.remove(&id);
            if conns.is_empty() {
                registry.drained.notify_waiters();
            }
            registry.removed.notify_waiters();
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    loop {
        let drained = registry.drained.notified();
        if registry.len() == 0 {
            return Ok(());
        }
        drained.await;
    }
}

/// A streamed response body that keeps its request in flight until it ends.
struct Guarded {
    inner: Body,
    _guard: InFlight,
}

impl hyper::body::Body for Guarded {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Marks a request in flight for as long as it lives.
struct InFlight {
    conn: Arc<Conn>,
    registry: Arc<Registry>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.conn
            .idle_since
            .store(self.registry.now_ms(), Ordering::Release);
        self.conn.head_started.store(0, Ordering::Release);
        self.conn.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: Limits,
    registry: &Arc<Registry>,
    conn: Arc<Conn>,
    mut stop: watch::Receiver<bool>,
) {
    let io = Io {
        inner: stream,
        conn: conn.clone(),
        registry: registry.clone(),
        replacement: None,
    };
    let service = {
        let (conn, registry) = (conn.clone(), registry.clone());
        hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            conn.in_flight.fetch_add(1, Ordering::AcqRel);
            let guard = InFlight {
                conn: conn.clone(),
                registry: registry.clone(),
            };
            req.extensions_mut().insert(ConnectInfo(peer));
            let router = router.clone();
            async move {
                let response = router.oneshot(req.map(Body::new)).await;
                // A body of known size goes out at once; a stream (the revocation feed) keeps
                // the connection busy, out of the idle watchdog's reach, until it ends.
                Ok::<_, std::convert::Infallible>(match response {
                    Ok(r) if hyper::body::Body::size_hint(r.body()).exact().is_none() => {
                        r.map(|inner| {
                            Body::new(Guarded {
                                inner,
                                _guard: guard,
                            })
                        })
                    }
                    Ok(r) => {
                        drop(guard);
                        r
                    }
                    Err(never) => match never {},
                })
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // Our watchdog enforces both timeouts (see the module comment).
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    let served = builder.serve_connection(TokioIo::new(io), service);
    let mut served = std::pin::pin!(served);
    let mut stopping = false;
    loop {
        let deadline = watchdog_deadline(&conn, registry, &limits);
        tokio::select! {
            _ = served.as_mut() => return,
            _ = conn.close.notified() => return,
            // Also while stopping: hyper's graceful shutdown closes only connections that
            // have read nothing of a request, so one that sent part of a head and no more
            // would hold the shutdown open for good without the header-read timeout.
            _ = tokio::time::sleep_until(deadline) => {
                if conn.in_flight.load(Ordering::Acquire) == 0 && expired(&conn, registry, &limits) {
                    return;
                }
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                served.as_mut().graceful_shutdown();
            }
        }
    }
}

/// When the watchdog should next look at this connection.
fn watchdog_deadline(conn: &Conn, registry: &Registry, limits: &Limits) -> tokio::time::Instant {
    let now = registry.now_ms();
    let remaining = if conn.in_flight.load(Ordering::Acquire) > 0 {
        // Busy: the request deadline bounds it; look again after a header-read period.
        limits.header_read_timeout.as_millis() as u64
    } else {
        let (start, limit) = match conn.head_started.load(Ordering::Acquire) {
            0 => (conn.idle_since.load(Ordering::Acquire), limits.idle_timeout),
            started => (started, limits.header_read_timeout),
        };
        (start + limit.as_millis() as u64).saturating_sub(now)
    };
    tokio::time::Instant::now() + Duration::from_millis(remaining.max(10))
}

fn expired(conn: &Conn, registry: &Registry, limits: &Limits) -> bool {
    let now = registry.now_ms();
    match conn.head_started.load(Ordering::Acquire) {
        0 => {
            now.saturating_sub(conn.idle_since.load(Ordering::Acquire))
                >= limits.idle_timeout.as_millis() as u64
        }
        started => now.saturating_sub(started) >= limits.header_read_timeout.as_millis() as u64,
    }
}

/// The socket, as hyper sees it: notes when a request starts arriving, and rewrites hyper's
/// own bodiless error responses into our JSON error shape.
struct Io {
    inner: TcpStream,
    conn: Arc<Conn>,
    registry: Arc<Registry>,
    /// A rewritten response still being written, and how much of it is out.
    replacement: Option<(Vec<u8>, usize)>,
}

impl AsyncRead for Io {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let conn = &self.conn;
            if conn.in_flight.load(Ordering::Acquire) == 0 {
                let now = self.registry.now_ms();
                let _ =
                    conn.head_started
                        .compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire);
            }
        }
        polled
    }
}

impl Io {
    /// Writes out a pending replacement; `Ready(Ok)` once it is all out.
    fn drain_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.replacement {
            if *written == bytes.len() {
                self.replacement = None;
                break;
            }
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.drain_replacement(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
        // hyper answers a request it cannot parse itself, with a bodiless 4xx/5xx. Every
        // error the application produces has a JSON body, so a bodiless error response is
        // hyper's own: write ours instead (same status, then the connection closes).
        if let Some(status) = hyper_error_status(buf) {
            let (bytes, id) = error_response(status);
            tracing::info!(request_id = %id, status, "refused a request hyper could not parse");
            self.replacement = Some((bytes, 0));
            return match self.drain_replacement(cx) {
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                // Written, or still going out: hyper's bytes count as taken either way.
                _ => Poll::Ready(Ok(buf.len())),
            };
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.drain_replacement(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.drain_replacement(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.inner).poll_shutdown(cx),
            other => other,
        }
    }
}

/// The status of a response head hyper wrote for its own error: `HTTP/1.x 4xx|5xx` with
/// `content-length: 0`.
fn hyper_error_status(buf: &[u8]) -> Option<u16> {
    let head = buf.strip_prefix(b"HTTP/1.")?;
    let status: u16 = std::str::from_utf8(head.get(2..5)?).ok()?.parse().ok()?;
    if status < 400 {
        return None;
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = &buf[..end];
    let bodiless = head
        .split(|b| *b == b'\n')
        .any(|line| line.trim_ascii().eq_ignore_ascii_case(b"content-length: 0"));
    (bodiless && buf.len() == end + 4).then_some(status)
}

/// The JSON error response for `status`, and its request id.
fn error_response(status: u16) -> (Vec<u8>, String) {
    let (reason, message) = match status {
        431 => (
            "Request Header Fields Too Large",
            "The request's header fields are too large.",
        ),
        414 => ("URI Too Long", "The request URI is too long."),
        408 => ("Request Timeout", "The request took too long to arrive."),
        505 => (
            "HTTP Version Not Supported",
            "Only HTTP/1.0 and HTTP/1.1 are served.",
        ),
        _ => ("Bad Request", "The request is not valid HTTP/1.1."),
    };
    let status = if matches!(status, 431 | 414 | 408 | 505) {
        status
    } else {
        400
    };
    let id = crate::domain::ids::format(
        crate::domain::ids::Kind::Request,
        crate::domain::ids::Env::Test,
        uuid::Uuid::new_v4(),
    );
    let body = serde_json::json!({
        "status_code": status,
        "request_id": id,
        "error_type": "bad_request",
        "error_message": message,
        "error_url": format!("https://stytch.com/docs/api/errors/{status}"),
    })
    .to_string();
    let bytes = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\nx-request-id: {id}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes();
    (bytes, id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_only_hyper_bodiless_errors() {
        assert_eq!(
            hyper_error_status(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n"),
            Some(431)
        );
        assert_eq!(
            hyper_error_status(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n"),
            Some(400)
        );
        assert_eq!(
            hyper_error_status(b"HTTP/1.1 304 Not Modified\r\ncontent-length: 0\r\n\r\n"),
            None
        );
        assert_eq!(
            hyper_error_status(
                b"HTTP/1.1 404 Not Found\r\ncontent-length: 12\r\n\r\n{\"a\":1}xxxxx"
            ),
            None
        );
        let r = String::from_utf8(error_response(431).0).unwrap();
        let body = r.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["status_code"], 431);
        assert_eq!(v["error_type"], "bad_request");
    }
}
