//! Bounds on client connections: how many may be open (in total and per client address), how long
//! one may take to send a request, sit idle, or leave a response unread.
//!
//! A mirror on the network edge meets clients that connect and send nothing, send a request line a
//! byte at a time, keep thousands of keep-alive connections idle, or stop reading a blob half-way.
//! Each holds a file descriptor and a task; left alone they exhaust the process's file table and
//! nobody else is served. This module gives every connection a budget:
//!
//! - [`Limits`] counts open connections; the accept loop takes a [`Slot`] before it accepts, so at
//!   `max_connections` further clients wait in the kernel's listen backlog instead of costing a
//!   descriptor, and a client address over `max_connections_per_ip` is closed at once.
//! - [`Guarded`] wraps a connection's stream (under TLS: the decrypted stream) and ends reads once a
//!   deadline passes while no request is in progress: `header_read_timeout` from the connection's
//!   start (which also bounds hyper's protocol detection and an HTTP/2 preface that never comes),
//!   `header_read_timeout` from the first byte of a later HTTP/1.1 request, and `idle_timeout` from
//!   the end of the last response (checked lazily: hyper may not read again after a response until
//!   the client sends something, so the reader looks again within `idle_timeout`, and an idle
//!   connection closes at most twice that after its last response; a wake-up per request from the
//!   response's end measured 3% of small-hit throughput). A write that makes no progress for `idle_timeout` fails, so a
//!   client that stops reading releases its blob.
//! - [`Active`] marks a request in progress, from the moment hyper hands it over until its response
//!   body is dropped (sent, failed or abandoned).
//! - [`OpenConns`] is the accept loop's list of open connections, so a shutdown can say how many
//!   responses it waits for without a counter shared by every request.
//!
//! hyper's own `header_read_timeout` is not used: since hyper 1.4 it also runs between keep-alive
//! requests, so it cannot be shorter than the idle timeout (hyperium/hyper#3828).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// The HTTP/2 connection preface's first bytes (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// The connection budget of one listener, shared by its accept loop and connection tasks.
pub struct Limits {
    slots: Arc<Semaphore>,
    per_ip: usize,
    by_ip: Mutex<HashMap<IpAddr, usize>>,
    timeouts: Timeouts,
}

/// How long a connection may take at each stage.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// From the connection's start, or the first byte of a later request, to a complete request.
    pub header_read: Duration,
    /// From the end of the last response to the next request, and the longest a write may stall.
    pub idle: Duration,
}

/// One open connection's place in [`Limits`]; dropping it frees the place.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

/// A client address's share of [`Limits`]; dropping it gives it back.
pub struct IpSlot {
    limits: Arc<Limits>,
    ip: IpAddr,
}

/// What a connection's stream and its requests share: how many requests are in progress and
/// when the last one ended.
#[derive(Debug)]
pub struct ConnState {
    opened: Instant,
    in_flight: AtomicUsize,
    /// Nanoseconds from `opened` to when `in_flight` last dropped to zero; `u64::MAX` while no
    /// request has finished yet.
    idle_since: AtomicU64,
}

/// A request in progress on a connection; dropping it (with the response body) ends it.
#[derive(Debug)]
pub struct Active {
    state: Arc<ConnState>,
}

/// A connection's stream with deadlines; see the module docs.
pub struct Guarded<I> {
    inner: I,
    state: Arc<ConnState>,
    timeouts: Timeouts,
    /// HTTP/2 (told by the preface): bytes between requests are pings and settings, not the start
    /// of a request, so only the idle deadline applies.
    h2: Option<bool>,
    /// When the first byte of the next HTTP/1.1 request arrived, while no request was in progress.
    head_started: Option<Instant>,
    /// When the current write started to wait for the client.
    write_stalled: Option<Instant>,
    read_timer: Pin<Box<Sleep>>,
    write_timer: Pin<Box<Sleep>>,
}

/// The connections the accept loop opened, for counting the requests in progress at shutdown.
///
/// Only the accept loop touches it (no lock), once per connection and never per request. Ended
/// connections are dropped from the list whenever it has doubled since they were last dropped, so
/// it holds at most about twice the connections open at once.
#[derive(Debug, Default)]
pub struct OpenConns {
    conns: Vec<Weak<ConnState>>,
    prune_at: usize,
}

/// A response body that keeps its request [`Active`] until it is dropped.
pub struct Tracked<B> {
    inner: B,
    _active: Active,
}

// === impl Limits ===

impl Limits {
    /// A budget of `total` connections, `per_ip` of them per client address (0: no cap).
    pub fn new(total: usize, per_ip: usize, timeouts: Timeouts) -> Arc<Self> {
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(total)),
            per_ip,
            by_ip: Mutex::new(HashMap::new()),
            timeouts,
        })
    }

    /// Waits for a free place (while every place is taken, clients queue in the listen backlog).
    pub async fn slot(&self) -> Slot {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the connection semaphore is never closed");
        Slot { _permit: permit }
    }

    /// Takes a place for `ip`, or `None` when it already holds `max_connections_per_ip`.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        if self.per_ip == 0 {
            return Some(IpSlot {
                limits: self.clone(),
                ip,
            });
        }
        let mut by_ip = self.by_ip.lock();
        let held = by_ip.entry(ip).or_insert(0);
        if *held >= self.per_ip {
            return None;
        }
        *held += 1;
        Some(IpSlot {
            limits: self.clone(),
            ip,
        })
    }

    /// Connections open now (for tests and metrics).
    pub fn open(&self, ip: IpAddr) -> usize {
        self.by_ip.lock().get(&ip).copied().unwrap_or(0)
    }

    /// The deadlines every connection gets.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }
}

// === impl IpSlot ===

impl Drop for IpSlot {
    fn drop(&mut self) {
        if self.limits.per_ip == 0 {
            return;
        }
        let mut by_ip = self.limits.by_ip.lock();
        if let Some(held) = by_ip.get_mut(&self.ip) {
            *held -= 1;
            if *held == 0 {
                by_ip.remove(&self.ip);
            }
        }
    }
}

// === impl ConnState ===

impl ConnState {
    /// The state of a connection opened now.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(u64::MAX),
        })
    }

    /// Marks a request in progress until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>) -> Active {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Active {
            state: self.clone(),
        }
    }

    fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    /// How many requests are in progress on this connection (more than one only over HTTP/2).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// When the connection last became idle: `None` if no request has finished yet.
    fn idle_since(&self) -> Option<Instant> {
        match self.idle_since.load(Ordering::Acquire) {
            u64::MAX => None,
            nanos => Some(self.opened + Duration::from_nanos(nanos)),
        }
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        if self.state.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            let nanos = u64::try_from(self.state.opened.elapsed().as_nanos())
                .unwrap_or(u64::MAX - 1)
                .min(u64::MAX - 1);
            self.state.idle_since.store(nanos, Ordering::Release);
        }
    }
}

// === impl OpenConns ===

impl OpenConns {
    /// The list is pruned no more often than at this length.
    const MIN_PRUNE: usize = 64;

    /// Adds a connection the accept loop just opened.
    pub fn push(&mut self, state: &Arc<ConnState>) {
        if self.conns.len() >= self.prune_at.max(Self::MIN_PRUNE) {
            self.conns.retain(|c| c.strong_count() > 0);
            self.prune_at = self.conns.len() * 2;
        }
        self.conns.push(Arc::downgrade(state));
    }

    /// How many requests are in progress on the connections still open.
    pub fn requests(&self) -> usize {
        self.conns
            .iter()
            .filter_map(Weak::upgrade)
            .map(|c| c.in_flight())
            .sum()
    }

    /// How many entries the list holds (open connections and ended ones not yet pruned).
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }
}

// === impl Guarded ===

impl<I> Guarded<I> {
    /// Wraps a connection's stream.
    pub fn new(inner: I, state: Arc<ConnState>, timeouts: Timeouts) -> Self {
        let now = Instant::now();
        Self {
            inner,
            state,
            timeouts,
            h2: None,
            head_started: None,
            write_stalled: None,
            read_timer: Box::pin(tokio::time::sleep_until(now + timeouts.header_read)),
            write_timer: Box::pin(tokio::time::sleep_until(now + timeouts.idle)),
        }
    }

    /// When reading must have produced a request, while none is in progress.
    fn read_deadline(&self) -> Instant {
        match self.state.idle_since() {
            // The first request: it must arrive promptly, whatever the protocol.
            None => self.state.opened + self.timeouts.header_read,
            Some(idle) => match self.head_started {
                Some(head) if self.h2 != Some(true) => {
                    (head + self.timeouts.header_read).min(idle + self.timeouts.idle)
                }
                _ => idle + self.timeouts.idle,
            },
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Guarded<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                if !this.state.busy() && Instant::now() >= this.read_deadline() {
                    // Bytes that come after the deadline (a request trickled in) are not read.
                    buf.set_filled(before);
                    return Poll::Ready(Ok(()));
                }
                if !read.is_empty() {
                    if this.h2.is_none() {
                        this.h2 = Some(read.starts_with(&H2_PREFACE[..read.len().min(14)]));
                    }
                    if this.state.busy() {
                        this.head_started = None;
                    } else if this.head_started.is_none() && this.state.idle_since().is_some() {
                        this.head_started = Some(Instant::now());
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if this.state.busy() {
                    // A request is in progress: no read deadline. hyper may not read again after
                    // the response until the client sends something, so look again within the
                    // idle timeout (a wake-up per request from the response's end costs more).
                    this.head_started = None;
                    let now = Instant::now();
                    let armed = this.read_timer.deadline();
                    if armed <= now || armed > now + this.timeouts.idle {
                        this.read_timer.as_mut().reset(now + this.timeouts.idle);
                    }
                    let _ = this.read_timer.as_mut().poll(cx);
                    return Poll::Pending;
                }
                let now = Instant::now();
                let deadline = this.read_deadline();
                if now >= deadline {
                    // End of stream: hyper closes an idle connection quietly.
                    return Poll::Ready(Ok(()));
                }
                // The deadline moves later with every request of a keep-alive connection. Moving
                // the timer each time costs a timer-wheel update per request; instead it stays
                // armed for the earlier moment, wakes this reader then, and is moved on once.
                let armed = this.read_timer.deadline();
                if armed > deadline || armed <= now {
                    this.read_timer.as_mut().reset(deadline);
                }
                if this.read_timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> Guarded<I> {
    /// Polls a write-side operation, failing it once it has waited for the client too long.
    fn stall_bounded<T>(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut I>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match op(Pin::new(&mut self.inner), cx) {
            Poll::Ready(result) => {
                self.write_stalled = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let since = *self.write_stalled.get_or_insert_with(Instant::now);
                let deadline = since + self.timeouts.idle;
                if self.write_timer.deadline() != deadline {
                    self.write_timer.as_mut().reset(deadline);
                }
                if self.write_timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client stopped reading",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Guarded<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .stall_bounded(cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .stall_bounded(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().stall_bounded(cx, AsyncWrite::poll_flush)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().stall_bounded(cx, AsyncWrite::poll_shutdown)
    }
}

// === impl Tracked ===

impl<B> Tracked<B> {
    /// Keeps `active` until `inner` is dropped.
    pub fn new(inner: B, active: Active) -> Self {
        Self {
            inner,
            _active: active,
        }
    }
}

impl<B: HttpBody<Data = Bytes> + Unpin> HttpBody for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Raises the soft open-file limit to the hard limit, and returns the limit now in force (`None`
/// when unlimited or unknown).
pub fn raise_file_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return limit.maximum;
        }
    }
    limit.current
}

/// How many connections a process with `file_limit` descriptors may hold: half of them, because
/// each connection may also need a blob file or an upstream socket, and the index, logs and
/// staging files need the rest.
pub fn connections_for(file_limit: Option<u64>, configured: usize) -> usize {
    match file_limit {
        None => configured,
        Some(limit) => configured.min(usize::try_from(limit / 2).unwrap_or(usize::MAX).max(1)),
    }
}

/// The client address a connection counts against: IPv4-mapped IPv6 addresses count as IPv4.
pub fn client_ip(peer: SocketAddr) -> IpAddr {
    match peer.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn timeouts() -> Timeouts {
        Timeouts {
            header_read: Duration::from_secs(10),
            idle: Duration::from_secs(60),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_ends_after_the_header_timeout() {
        let (client, server) = tokio::io::duplex(64);
        let state = ConnState::new();
        let mut guarded = Guarded::new(server, state, timeouts());
        let started = Instant::now();
        let mut buf = [0u8; 16];
        let n = guarded.read(&mut buf).await.unwrap();
        assert_eq!(n, 0, "end of stream");
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickled_first_request_does_not_extend_the_deadline() {
        let (mut client, server) = tokio::io::duplex(64);
        let state = ConnState::new();
        let mut guarded = Guarded::new(server, state, timeouts());
        let started = Instant::now();
        let mut buf = [0u8; 16];
        loop {
            client.write_all(b"G").await.unwrap();
            let n = tokio::time::timeout(Duration::from_secs(1), guarded.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            if n == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        assert!(started.elapsed() <= Duration::from_secs(11));
    }

    #[tokio::test(start_paused = true)]
    async fn no_read_deadline_while_a_request_is_in_progress() {
        let (mut client, server) = tokio::io::duplex(64);
        let state = ConnState::new();
        let mut guarded = Guarded::new(server, state.clone(), timeouts());
        let active = state.begin();
        let read = tokio::spawn(async move {
            let mut buf = [0u8; 4];
            let n = guarded.read(&mut buf).await.unwrap();
            (n, guarded)
        });
        tokio::time::sleep(Duration::from_secs(300)).await;
        assert!(!read.is_finished(), "a busy connection is not cut");
        client.write_all(b"next").await.unwrap();
        let (n, mut guarded) = read.await.unwrap();
        assert_eq!(n, 4);
        // The response ends: now the idle timeout runs, from that moment.
        drop(active);
        let idle = Instant::now();
        let mut buf = [0u8; 4];
        assert_eq!(guarded.read(&mut buf).await.unwrap(), 0);
        assert_eq!(idle.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn the_idle_deadline_starts_when_the_last_response_ends() {
        let (_client, server) = tokio::io::duplex(64);
        let state = ConnState::new();
        let mut guarded = Guarded::new(server, state.clone(), timeouts());
        let active = state.begin();
        // hyper polls for the next request while the response is still being sent, and may not
        // poll again until something wakes it.
        let read = tokio::spawn(async move {
            let mut buf = [0u8; 4];
            guarded.read(&mut buf).await.unwrap()
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(active);
        let idle = Instant::now();
        let n = tokio::time::timeout(Duration::from_secs(200), read)
            .await
            .expect("the reader looked again")
            .unwrap();
        assert_eq!(n, 0);
        assert!(idle.elapsed() >= Duration::from_secs(60));
        assert!(idle.elapsed() <= Duration::from_secs(120));
    }

    #[tokio::test(start_paused = true)]
    async fn a_keep_alive_request_must_finish_its_head_in_time() {
        let (mut client, server) = tokio::io::duplex(64);
        let state = ConnState::new();
        let mut guarded = Guarded::new(server, state.clone(), timeouts());
        drop(state.begin());
        tokio::time::sleep(Duration::from_secs(30)).await;
        client.write_all(b"GET /v2/ HT").await.unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(guarded.read(&mut buf).await.unwrap(), 11);
        let head = Instant::now();
        assert_eq!(guarded.read(&mut buf).await.unwrap(), 0);
        assert_eq!(head.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn h2_pings_between_requests_do_not_start_a_header_deadline() {
        let (mut client, server) = tokio::io::duplex(256);
        let state = ConnState::new();
        let mut guarded = Guarded::new(server, state.clone(), timeouts());
        client
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(guarded.read(&mut buf).await.unwrap(), 24);
        drop(state.begin());
        let idle = Instant::now();
        tokio::time::sleep(Duration::from_secs(20)).await;
        client.write_all(b"ping").await.unwrap();
        assert_eq!(guarded.read(&mut buf).await.unwrap(), 4);
        assert_eq!(guarded.read(&mut buf).await.unwrap(), 0);
        assert_eq!(idle.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_the_client_never_reads_fails_after_the_idle_timeout() {
        let (_client, server) = tokio::io::duplex(16);
        let state = ConnState::new();
        let mut guarded = Guarded::new(server, state, timeouts());
        let started = Instant::now();
        let error = guarded.write_all(&[0u8; 1024]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(60));
    }

    #[test]
    fn per_address_cap_and_release() {
        let limits = Limits::new(10, 2, timeouts());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let a = limits.admit(ip).unwrap();
        let _b = limits.admit(ip).unwrap();
        assert!(limits.admit(ip).is_none());
        assert!(limits.admit("192.0.2.2".parse().unwrap()).is_some());
        drop(a);
        assert!(limits.admit(ip).is_some());
    }

    #[test]
    fn connections_fit_the_file_limit() {
        assert_eq!(connections_for(Some(1024), 10_000), 512);
        assert_eq!(connections_for(Some(65_536), 10_000), 10_000);
        assert_eq!(connections_for(None, 10_000), 10_000);
        assert_eq!(connections_for(Some(1), 10_000), 1);
    }

    #[test]
    fn mapped_addresses_count_as_ipv4() {
        let peer: SocketAddr = "[::ffff:192.0.2.1]:5000".parse().unwrap();
        assert_eq!(client_ip(peer), "192.0.2.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn open_conns_count_requests_in_progress_on_open_connections() {
        let mut open = OpenConns::default();
        let (a, b, c) = (ConnState::new(), ConnState::new(), ConnState::new());
        for state in [&a, &b, &c] {
            open.push(state);
        }
        assert_eq!(
            open.requests(),
            0,
            "idle keep-alive connections wait for nothing"
        );
        let first = a.begin();
        let _second = b.begin();
        let _third = b.begin(); // HTTP/2: two streams on one connection
        assert_eq!(open.requests(), 3);
        drop(first);
        assert_eq!(open.requests(), 2);
        // A connection that ended (its task dropped its state) with a request's guard gone too.
        drop(c);
        assert_eq!(open.requests(), 2);
    }

    #[test]
    fn open_conns_prune_ended_connections() {
        let mut open = OpenConns::default();
        let kept: Vec<_> = (0..10).map(|_| ConnState::new()).collect();
        for state in &kept {
            open.push(state);
        }
        let _busy = kept[0].begin();
        for _ in 0..10_000 {
            open.push(&ConnState::new()); // opened and ended at once
        }
        assert!(open.len() <= 2 * OpenConns::MIN_PRUNE, "{}", open.len());
        assert_eq!(open.requests(), 1);
    }
}
