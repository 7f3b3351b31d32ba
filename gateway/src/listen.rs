//! The HTTP listener: accepts connections up to a cap, serves each with hyper's HTTP/1.1 and
//! the router, and closes connections that stall.
//!
//! - At the cap (`--max-connections`) the listener stops accepting: new connections wait in
//!   the kernel's listen backlog until an open one closes, then are served.
//! - A watchdog per connection enforces two separate timeouts. The header-read timeout runs
//!   while a request head is being received: from the connection opening for the first
//!   request, from the first byte of each later one. The idle timeout runs while a keep-alive
//!   connection waits, after a response, with no byte of a next request. Neither runs while a
//!   request is in progress (from its head until its response body is written); body reads are
//!   timed by the handlers. A connection the watchdog closes is dropped at once: it has no
//!   request in progress, so no answer is cut short.
//! - The watchdog is not told of each request: requests only record what they do, and the
//!   watchdog wakes at the earlier of the connection's deadline and the shorter timeout from
//!   now. No deadline that bytes arriving meanwhile could set is earlier than that, so each
//!   closes on time, and a busy connection pays nothing per request for its watchdog.
//! - At shutdown the listener stops accepting, asks every connection to close once its
//!   request in flight (if any) is answered, and returns when all have closed.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::Response;
use axum::Router;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use prometheus::IntGauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tower::ServiceExt as _;
use tracing::{debug, info, warn};

/// How many connections may be open and how long they may stall.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// How long a request head may take to arrive.
    pub header_read_timeout: Duration,
    /// How long a connection may wait for its next request after a response.
    pub idle_timeout: Duration,
}

/// Raises the soft limit on open files to the hard limit, so thousands of connections do not
/// run out of descriptors, and logs the limit in force.
pub fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => info!(open_files = limit, "open files limit"),
        Err(e) => warn!(error = %e, "cannot raise the open files limit"),
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then until every connection has
/// closed. `open` tracks the connections open.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    open: IntGauge,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let (stream, peer, slot) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = accept(&listener, &slots) => accepted,
        };
        let conn = Conn {
            router: router.clone(),
            peer,
            limits,
            stop: stop_rx.clone(),
            _open: OpenSlot::new(open.clone(), slot),
        };
        tokio::spawn(conn.serve(stream));
    }
    drop(listener);
    drop(stop_rx);
    let _ = stop_tx.send(());
    // Each connection holds a receiver until it has closed.
    stop_tx.closed().await;
}

/// Waits for a free slot, then for a connection.
async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> (TcpStream, SocketAddr, OwnedSemaphorePermit) {
    let Ok(slot) = slots.clone().acquire_owned().await else {
        unreachable!("the connection semaphore is never closed");
    };
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => return (stream, peer, slot),
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of descriptors and the like: wait for some to be released.
                warn!(error = %e, "cannot accept connections; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Errors that concern one connection only (it went away before it was accepted).
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// A connection's place under the cap, counted in the gauge while it is held.
struct OpenSlot {
    gauge: IntGauge,
    _slot: OwnedSemaphorePermit,
}

impl OpenSlot {
    fn new(gauge: IntGauge, slot: OwnedSemaphorePermit) -> OpenSlot {
        gauge.inc();
        OpenSlot { gauge, _slot: slot }
    }
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// One accepted connection.
struct Conn {
    router: Router,
    peer: SocketAddr,
    limits: Limits,
    stop: watch::Receiver<()>,
    _open: OpenSlot,
}

impl Conn {
    /// Serves the connection until it ends, stalls past a timeout, or shutdown closes it.
    async fn serve(mut self, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Watched {
            inner: stream,
            activity: activity.clone(),
        });
        let (router, peer) = (self.router.clone(), self.peer);
        let service = hyper::service::service_fn({
            let activity = activity.clone();
            move |request| handle(router.clone(), peer, activity.clone(), request)
        });
        // Header reads are timed by the watchdog below, not by hyper: hyper's timer also runs
        // while a keep-alive connection waits, which would make the idle timeout no longer
        // than the header timeout.
        // Upgrades (WebSocket, GET /v1/ws) leave this loop: the upgraded connection is served
        // by its own task.
        let conn = http1::Builder::new()
            .header_read_timeout(None)
            .serve_connection(io, service)
            .with_upgrades();
        tokio::pin!(conn);
        let mut stopping = false;
        loop {
            let check_at = activity.next_check(&self.limits);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        debug!(peer = %self.peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                () = tokio::time::sleep_until(check_at) => {
                    if let Some(reason) = activity.expired(&self.limits) {
                        debug!(peer = %self.peer, reason, "closing a stalled connection");
                        return;
                    }
                }
                _ = self.stop.changed(), if !stopping => {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Runs one request through the router, with the peer address as `ConnectInfo`. The request
/// counts as in progress until its response body has been written.
async fn handle(
    router: Router,
    peer: SocketAddr,
    activity: Arc<Activity>,
    request: hyper::Request<Incoming>,
) -> Result<Response, Infallible> {
    let busy = activity.request_started();
    let mut request = request.map(Body::new);
    request.extensions_mut().insert(ConnectInfo(peer));
    let response = router.oneshot(request).await?;
    Ok(response.map(|body| {
        Body::new(body.map_frame(move |frame| {
            let _in_progress = &busy;
            frame
        }))
    }))
}

/// The watchdog looks at a connection no more often than this, whatever the timeouts.
const MIN_CHECK_INTERVAL: Duration = Duration::from_millis(10);

/// What a connection is doing, as its watchdog needs to know.
struct Activity {
    state: Mutex<State>,
}

struct State {
    /// Requests in progress.
    in_flight: usize,
    /// Whether any request has been received.
    served: bool,
    /// When the connection opened, or its last request ended.
    since: Instant,
    /// When the first byte of the next request arrived.
    head_started: Option<Instant>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            state: Mutex::new(State {
                in_flight: 0,
                served: false,
                since: Instant::now(),
                head_started: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes arrived: with no request in progress, they begin the next request's head.
    fn read_bytes(&self) {
        let mut s = self.lock();
        if s.in_flight == 0 && s.head_started.is_none() {
            s.head_started = Some(Instant::now());
        }
    }

    fn request_started(self: &Arc<Self>) -> Busy {
        let mut s = self.lock();
        s.in_flight += 1;
        s.served = true;
        s.head_started = None;
        drop(s);
        Busy(self.clone())
    }

    /// When the connection is due to be closed, and why; `None` while a request is in
    /// progress.
    fn due(&self, limits: &Limits) -> Option<(Instant, &'static str)> {
        let s = self.lock();
        if s.in_flight > 0 {
            return None;
        }
        Some(match s.head_started {
            _ if !s.served => (s.since + limits.header_read_timeout, "header read timeout"),
            Some(t) => (t + limits.header_read_timeout, "header read timeout"),
            None => (s.since + limits.idle_timeout, "idle timeout"),
        })
    }

    /// When the watchdog should look again: the deadline, or sooner. A request that starts
    /// or ends only moves the deadline later, but bytes of a next request arriving on an idle
    /// connection start its header timeout, which can end before the idle one would; waking
    /// no later than the shorter timeout from now keeps every deadline met without a wakeup
    /// per request.
    fn next_check(&self, limits: &Limits) -> Instant {
        let shorter = limits
            .header_read_timeout
            .min(limits.idle_timeout)
            .max(MIN_CHECK_INTERVAL);
        let soon = Instant::now() + shorter;
        self.due(limits).map_or(soon, |(at, _)| at.min(soon))
    }

    /// Why the connection should be closed now, if it should.
    fn expired(&self, limits: &Limits) -> Option<&'static str> {
        self.due(limits)
            .filter(|(at, _)| *at <= Instant::now())
            .map(|(_, why)| why)
    }
}

/// A request in progress; its end starts the idle timeout.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        if s.in_flight == 0 {
            s.since = Instant::now();
        }
    }
}

/// The connection's socket, telling its [`Activity`] when bytes arrive.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read_bytes();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
