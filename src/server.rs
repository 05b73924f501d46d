//! What every backend shares: the configuration, the shutdown signal and the counters
//! behind [`Handle`] and [`Stats`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::Config;

/// A snapshot of a server's counters.
///
/// ```
/// let stats = sgi::Stats::default();
/// assert_eq!(stats.requests_served, 0);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Connections open now.
    pub open_connections: usize,
    /// Open connections that no gateway is serving: waiting between requests (keep-alive),
    /// for their head, or (pool) for a worker (see `queued_requests`) or for the client to
    /// take the end of an answer.
    pub idle_connections: usize,
    /// Open connections whose request a gateway is serving now.
    pub active_connections: usize,
    /// Worker threads (pool) or connection threads (dev) alive now.
    pub workers: usize,
    /// Workers running a gateway now.
    pub busy_workers: usize,
    /// Requests ready and waiting for a worker (pool).
    pub queued_requests: usize,
    /// Requests answered whole since start: the gateway's response, or the server's `500`
    /// in place of one that failed before any of it was sent; whole once the socket has
    /// taken all of it. Every request whose head the server parsed is counted once, here,
    /// in `rejected_requests` or in `aborted_requests` (pipelined requests left unread
    /// behind a closing answer, or behind a request whose client left, are not).
    pub requests_served: u64,
    /// Connections refused with `503`, since start: the dev server's at its connection cap
    /// or when no thread could be started (the pool leaves connections over its cap waiting
    /// in the kernel's backlog instead, and counts none here).
    pub rejected_connections: u64,
    /// Requests the server answered itself since start, as malformed, over a limit or
    /// timed out (`4xx`/`5xx`): before a gateway saw them, or while it read their body.
    pub rejected_requests: u64,
    /// Requests not answered whole since start: the client left (mid-body, mid-answer, or
    /// taking no bytes for the write timeout), or the response body failed after its head
    /// was sent, so the connection was cut.
    pub aborted_requests: u64,
    /// Gateways reported stuck past the request timeout, since start (pool).
    pub stuck_requests: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) open: AtomicUsize,
    pub(crate) active: AtomicUsize,
    pub(crate) workers: AtomicUsize,
    pub(crate) queued: AtomicUsize,
    pub(crate) served: AtomicU64,
    rejected_connections: AtomicU64,
    pub(crate) rejected_requests: AtomicU64,
    pub(crate) aborted_requests: AtomicU64,
    stuck: AtomicU64,
}

impl Counters {
    pub(crate) fn served(&self) {
        self.served.fetch_add(1, Relaxed);
    }
    pub(crate) fn rejected_connection(&self) {
        self.rejected_connections.fetch_add(1, Relaxed);
    }
    pub(crate) fn rejected_request(&self) {
        self.rejected_requests.fetch_add(1, Relaxed);
    }
    pub(crate) fn aborted(&self) {
        self.aborted_requests.fetch_add(1, Relaxed);
    }
    pub(crate) fn stuck(&self) {
        self.stuck.fetch_add(1, Relaxed);
    }
}

/// State shared by a server's threads and its [`Handle`]s.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) server_name: Arc<str>,
    pub(crate) server_port: u16,
    pub(crate) local_addr: SocketAddr,
    pub(crate) stats: Arc<Counters>,
    /// When the server was set up: the origin of times that threads share as numbers.
    pub(crate) epoch: std::time::Instant,
    shutting_down: AtomicBool,
    /// Wakes the backend's accept or event loop when shutdown is asked for.
    waker: Mutex<Option<Arc<mio::Waker>>>,
    /// The pool's keeper thread, which watches the workers and runs the shutdown.
    keeper: Mutex<Option<std::thread::Thread>>,
    /// Errors any client can make the server log (a gateway that accepts every method
    /// accepts `CONNECT` too): at most one a second.
    pub(crate) client_made_errors: Mutex<Throttle>,
}

impl Shared {
    pub(crate) fn new(mut config: Config, local_addr: SocketAddr) -> Arc<Shared> {
        config.timeouts = config.timeouts.bounded();
        let server_name = config
            .server_name
            .clone()
            .unwrap_or_else(|| Arc::from(local_addr.ip().to_string()));
        Arc::new(Shared {
            config,
            server_name,
            server_port: local_addr.port(),
            local_addr,
            stats: Arc::default(),
            epoch: std::time::Instant::now(),
            shutting_down: AtomicBool::new(false),
            waker: Mutex::new(None),
            keeper: Mutex::new(None),
            client_made_errors: Mutex::new(Throttle::default()),
        })
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Relaxed)
    }

    pub(crate) fn set_waker(&self, waker: Arc<mio::Waker>) {
        *self.waker.lock() = Some(waker);
    }

    /// Makes the calling thread the one unparked when shutdown is asked for.
    pub(crate) fn set_keeper(&self) {
        *self.keeper.lock() = Some(std::thread::current());
    }

    /// Wakes the pool's keeper thread (if there is one).
    pub(crate) fn unpark_keeper(&self) {
        if let Some(keeper) = self.keeper.lock().as_ref() {
            keeper.unpark();
        }
    }

    /// Asks for a graceful shutdown and wakes whoever runs it.
    pub(crate) fn begin_shutdown(&self) {
        self.shutting_down.store(true, Relaxed);
        if let Some(waker) = self.waker.lock().as_ref() {
            let _ = waker.wake();
        }
        self.unpark_keeper();
    }
}

/// Controls a running server from any thread: graceful shutdown and statistics.
///
/// Shutdown stops accepting, closes idle connections, lets in-flight requests finish (their
/// responses say `Connection: close`) within [`Timeouts::shutdown`](crate::Timeouts), then
/// closes the rest; `serve` returns after that.
///
/// ```
/// use sgi::{Body, DevServer, Response};
///
/// let server = DevServer::bind("127.0.0.1:0")?;
/// let handle = server.handle();
/// let thread = std::thread::spawn(move || server.serve(|_req: sgi::Request<'_>| Response::new(Body::empty())));
/// handle.shutdown();
/// thread.join().unwrap()?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Handle {
    pub(crate) shared: Arc<Shared>,
}

impl Handle {
    /// Starts a graceful shutdown; returns at once.
    pub fn shutdown(&self) {
        self.shared.begin_shutdown();
    }

    /// Whether shutdown has been asked for.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.is_shutting_down()
    }

    /// The address the server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// A snapshot of the server's counters.
    pub fn stats(&self) -> Stats {
        let c = &self.shared.stats;
        let open = c.open.load(Relaxed);
        let active = c.active.load(Relaxed).min(open);
        Stats {
            open_connections: open,
            idle_connections: open - active,
            active_connections: active,
            workers: c.workers.load(Relaxed),
            // A worker (pool) or connection thread (dev) is busy while its request is active.
            busy_workers: active,
            queued_requests: c.queued.load(Relaxed),
            requests_served: c.served.load(Relaxed),
            rejected_connections: c.rejected_connections.load(Relaxed),
            rejected_requests: c.rejected_requests.load(Relaxed),
            aborted_requests: c.aborted_requests.load(Relaxed),
            stuck_requests: c.stuck.load(Relaxed),
        }
    }
}

/// Binds a listening socket with the configured backlog (and `SO_REUSEADDR`, so a restarted
/// server can bind its port at once).
pub(crate) fn bind(
    addr: impl std::net::ToSocketAddrs,
    backlog: i32,
) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut last = None;
    for addr in addr.to_socket_addrs()? {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        if let Err(e) = socket
            .bind(&addr.into())
            .and_then(|()| socket.listen(backlog))
        {
            // The operator reads which address failed, not only why.
            last = Some(std::io::Error::new(
                e.kind(),
                format!("cannot bind {addr}: {e}"),
            ));
            continue;
        }
        return Ok(socket.into());
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to bind")
    }))
}

/// Checks that a listener handed to a backend listens: `accept` on a socket that does not
/// fails each time, and the server would only log it.
pub(crate) fn adopt(listener: std::net::TcpListener) -> std::io::Result<std::net::TcpListener> {
    match socket2::SockRef::from(&listener).is_listener() {
        Ok(true) => Ok(listener),
        Ok(false) => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the socket given is not listening (call listen first)",
        )),
        Err(e) => Err(e),
    }
}

/// How both backends meet a failed `accept`: never by giving up. Besides running out of
/// descriptors or memory, Linux reports a new connection's pending network errors (EPROTO,
/// ENETDOWN, EHOSTUNREACH, ...) through `accept`, to be retried like EAGAIN. Each failure
/// pauses accepting for a moment and is logged at most once a second: a warning for the
/// kinds expected under load, an error for the rest.
#[derive(Debug, Default)]
pub(crate) struct AcceptErrors {
    throttle: Throttle,
    /// The last failure held back, told with the count once its second is up.
    held: Option<std::io::Error>,
}

impl AcceptErrors {
    /// How long accepting pauses after a failure.
    pub(crate) const PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

    /// Logs `e` (throttled) and returns how long to pause accepting.
    pub(crate) fn failed(&mut self, e: std::io::Error) -> std::time::Duration {
        match self.throttle.pass() {
            Some(times) => Self::tell(&e, times),
            None => self.held = Some(e),
        }
        Self::PAUSE
    }

    /// Tells the failures held back once their second is up, even if no more come: for a
    /// caller that looks now and then (at least every [`held_for`](Self::held_for)).
    pub(crate) fn tell_held(&mut self) {
        if let Some(times) = self.throttle.held_due() {
            if let Some(e) = self.held.take() {
                Self::tell(&e, times);
            }
        }
    }

    /// How long until failures held back may be told (`None` if none are).
    pub(crate) fn held_for(&self) -> Option<std::time::Duration> {
        self.throttle.held_for()
    }

    fn tell(e: &std::io::Error, times: u64) {
        if accept_error_is_transient(e) {
            tracing::warn!(error = %e, times, "accept failed; backing off");
        } else {
            tracing::error!(error = %e, times, "accept failed; backing off");
        }
    }
}

/// Whether an `accept` error is one expected under load (rather than a surprise).
fn accept_error_is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock | OutOfMemory
    ) || matches!(e.raw_os_error(), Some(23 | 24 | 105 | 12)) // ENFILE, EMFILE, ENOBUFS, ENOMEM
}

/// Lets a repeated warning through at most once a second, counting the ones held back.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    last: Option<std::time::Instant>,
    held: u64,
}

impl Throttle {
    /// `Some(n)` when the warning may be logged now (`n` occurrences since the last one).
    pub(crate) fn pass(&mut self) -> Option<u64> {
        self.held += 1;
        self.due()
    }

    /// The occurrences held back, once their warning may be logged (`None` before, or if
    /// none are held): for a caller that looks now and then, so that a burst's last ones
    /// are told even when nothing follows them.
    pub(crate) fn held_due(&mut self) -> Option<u64> {
        if self.held == 0 {
            return None;
        }
        self.due()
    }

    /// How long until held occurrences may be told (`None` if none are held).
    pub(crate) fn held_for(&self) -> Option<std::time::Duration> {
        let since = self.last?.elapsed();
        (self.held > 0).then(|| THROTTLE.saturating_sub(since))
    }

    fn due(&mut self) -> Option<u64> {
        let due = self.last.map_or(true, |at| at.elapsed() >= THROTTLE);
        due.then(|| {
            self.last = Some(std::time::Instant::now());
            std::mem::take(&mut self.held)
        })
    }
}

/// The least time between two lines of one throttled warning.
const THROTTLE: std::time::Duration = std::time::Duration::from_secs(1);

/// The poll both backends wait on: the listener (made non-blocking) registered as
/// `listener_token`, and a waker, also handed to [`Handle::shutdown`], as `wake_token`.
pub(crate) fn listening_poll(
    listener: &std::net::TcpListener,
    shared: &Shared,
    listener_token: mio::Token,
    wake_token: mio::Token,
) -> std::io::Result<(mio::Poll, Arc<mio::Waker>)> {
    use std::os::fd::AsRawFd;
    let poll = mio::Poll::new()?;
    let waker = Arc::new(mio::Waker::new(poll.registry(), wake_token)?);
    shared.set_waker(waker.clone());
    listener.set_nonblocking(true)?;
    poll.registry().register(
        &mut mio::unix::SourceFd(&listener.as_raw_fd()),
        listener_token,
        mio::Interest::READABLE,
    )?;
    Ok((poll, waker))
}

/// Runs `work` with this thread's `tracing` events captured, and returns what it logged.
#[cfg(test)]
pub(crate) fn captured_log<R>(work: impl FnOnce() -> R) -> (R, String) {
    #[derive(Clone, Default)]
    struct Captured(Arc<parking_lot::Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let result = tracing::subscriber::with_default(subscriber, work);
    let text = String::from_utf8_lossy(&log.0.lock()).into_owned();
    (result, text)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// The sum of `times=N` over the lines that contain `needle`.
    pub(crate) fn times_told(log: &str, needle: &str) -> u64 {
        log.lines()
            .filter(|line| line.contains(needle))
            .filter_map(|line| {
                line.split("times=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }

    #[test]
    fn accept_failures_held_back_are_told_once_their_second_is_up() {
        let ((), log) = captured_log(|| {
            let mut errors = AcceptErrors::default();
            let emfile = || std::io::Error::from_raw_os_error(24);
            errors.failed(emfile());
            errors.failed(emfile());
            errors.failed(emfile());
            // Held: nothing more is told before the second is up...
            errors.tell_held();
            let wait = errors.held_for().expect("two failures are held");
            assert!(wait <= Duration::from_secs(1));
            // ...and everything after it, though no failure comes.
            let deadline = Instant::now() + Duration::from_secs(10);
            while errors.held_for().is_some() {
                assert!(
                    Instant::now() < deadline,
                    "the held failures were never told"
                );
                std::thread::sleep(Duration::from_millis(10));
                errors.tell_held();
            }
        });
        assert_eq!(log.lines().count(), 2, "{log}");
        assert_eq!(times_told(&log, "accept failed; backing off"), 3, "{log}");
    }
}
