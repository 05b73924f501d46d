//! The development server: a thread per connection, like Werkzeug's threaded `run_simple`,
//! but one that sheds load instead of dying of it.
//!
//! At the connection cap ([`Config::max_connections`](crate::Config), default 1024, or less
//! where the descriptor limit allows fewer), or when
//! the OS refuses a new thread, a connection gets `503 Service Unavailable` with
//! `Retry-After` and is closed, a warning is logged, and accepting goes on.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU8, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Token};
use parking_lot::Mutex;

use crate::conn::{Conn, Ctx, Next, Wait};
use crate::linger::Linger;
use crate::server::{adopt, bind, listening_poll, AcceptErrors, Shared, Throttle};
use crate::transport::Socket;
use crate::{Config, Gateway, Handle};

const LISTENER: Token = Token(0);
const WAKE: Token = Token(1);
const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// The default connection cap: 1024 threads, or fewer if the descriptor limit (`soft`)
/// allows fewer connections beside the process's own files and the lingering closes, so
/// that the cap, and its `503`, comes before the accepts that fail with `EMFILE`.
fn default_cap(soft: usize) -> usize {
    DEFAULT_MAX_CONNECTIONS.min(crate::linger::connections_fit(soft, 0))
}

/// The thread-per-connection development server.
///
/// ```no_run
/// use sgi::{Body, Config, DevServer, Request, Response};
///
/// let server = DevServer::bind_with("127.0.0.1:8000", Config::default().max_connections(256))?;
/// server.serve(|_req: Request<'_>| Response::new(Body::from("Hello, World!")))?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct DevServer {
    listener: TcpListener,
    shared: Arc<Shared>,
}

/// Connection states, so shutdown closes idle connections and never in-flight ones.
const IDLE: u8 = 0;
const BUSY: u8 = 1;
const CLOSED: u8 = 2;

struct Slot {
    stream: Arc<TcpStream>,
    state: AtomicU8,
}

/// A connection's place among the live ones, given back on drop (also if its thread
/// panics).
struct Entered {
    id: u64,
    live: Arc<Live>,
    shared: Arc<Shared>,
}

impl Drop for Entered {
    fn drop(&mut self) {
        self.live.slots.lock().remove(&self.id);
        self.shared.stats.open.fetch_sub(1, SeqCst);
        self.shared.stats.workers.fetch_sub(1, SeqCst);
    }
}

/// The live connections, by id, for shutdown.
#[derive(Default)]
struct Live {
    slots: Mutex<HashMap<u64, Arc<Slot>>>,
}

impl Live {
    fn close_idle(&self) {
        for slot in self.slots.lock().values() {
            if slot
                .state
                .compare_exchange(IDLE, CLOSED, SeqCst, SeqCst)
                .is_ok()
            {
                let _ = slot.stream.shutdown(Shutdown::Both);
            }
        }
    }

    fn close_all(&self) {
        for slot in self.slots.lock().values() {
            slot.state.store(CLOSED, SeqCst);
            crate::transport::abort(&slot.stream);
        }
    }

    /// Enters a connection and counts it open; it leaves when the returned guard drops (its
    /// thread ends, or never started).
    fn enter(self: &Arc<Self>, id: u64, slot: Arc<Slot>, shared: &Arc<Shared>) -> Entered {
        self.slots.lock().insert(id, slot);
        shared.stats.open.fetch_add(1, SeqCst);
        shared.stats.workers.fetch_add(1, SeqCst);
        Entered {
            id,
            live: self.clone(),
            shared: shared.clone(),
        }
    }

    fn len(&self) -> usize {
        self.slots.lock().len()
    }
}

impl DevServer {
    /// Binds `addr` with the default [`Config`]. Port 0 picks a free port; see
    /// [`local_addr`](Self::local_addr).
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<DevServer> {
        Self::bind_with(addr, Config::default())
    }

    /// Binds `addr` with `config`.
    pub fn bind_with(addr: impl ToSocketAddrs, config: Config) -> io::Result<DevServer> {
        let listener = bind(addr, config.backlog)?;
        let shared = Shared::new(config, listener.local_addr()?);
        Ok(DevServer { listener, shared })
    }

    /// Serves on `listener`, a socket already bound and listening: one made with options
    /// of your own, or one passed down by a process manager (systemd socket activation,
    /// a graceful restart that hands the socket to the next process). The server sets it
    /// non-blocking; [`Config::backlog`] does not apply (the listener's own stands).
    ///
    /// ```
    /// use std::net::TcpListener;
    /// use sgi::{Config, DevServer};
    ///
    /// // Under systemd socket activation the first passed socket is fd 3:
    /// // let listener = unsafe { std::os::fd::FromRawFd::from_raw_fd(3) };
    /// let listener = TcpListener::bind("127.0.0.1:0")?;
    /// let server = DevServer::from_listener(listener, Config::default())?;
    /// assert_ne!(server.local_addr().port(), 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn from_listener(listener: TcpListener, config: Config) -> io::Result<DevServer> {
        let listener = adopt(listener)?;
        let shared = Shared::new(config, listener.local_addr()?);
        Ok(DevServer { listener, shared })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// A handle to shut the server down or read its statistics from another thread.
    pub fn handle(&self) -> Handle {
        Handle {
            shared: self.shared.clone(),
        }
    }

    /// Serves `gateway` until [`Handle::shutdown`]; blocks.
    ///
    /// Returns once every connection is closed, or cut at the shutdown deadline. Connection
    /// threads are not joined: one still inside the gateway past the deadline ends when the
    /// gateway returns (a thread cannot be stopped from outside), so the gateway may be
    /// dropped after `serve` has returned.
    pub fn serve<G: Gateway>(self, gateway: G) -> io::Result<()> {
        let DevServer { listener, shared } = self;
        let config = &shared.config;
        let soft = crate::linger::fd_soft_limit();
        let cap = config.connection_cap(|| default_cap(soft));
        crate::linger::warn_if_over(cap, soft, crate::linger::connections_fit(soft, 0));
        let gateway = Arc::new(gateway);
        let linger = Arc::new(Linger::start(
            config.timeouts.linger,
            crate::linger::room(soft),
        )?);
        let live = Arc::new(Live::default());

        let (mut poll, _waker) = listening_poll(&listener, &shared, LISTENER, WAKE)?;
        tracing::info!(addr = %shared.local_addr, max_connections = cap, "development server listening");

        let mut events = Events::with_capacity(64);
        let mut backoff: Option<Duration> = None;
        let mut shed = Shedding::default();
        let mut accept_errors = AcceptErrors::default();
        let mut next_id = 0u64;
        while !shared.is_shutting_down() {
            // Shed connections not told yet are told once their second is up, even if no
            // more come.
            let wait = [backoff, shed.warnings.held_for(), accept_errors.held_for()]
                .into_iter()
                .flatten()
                .min();
            if let Err(e) = poll.poll(&mut events, wait) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            if let Some(shed) = shed.warnings.held_due() {
                tracing::warn!(shed, "shedding load: answered 503 (since the last warning)");
            }
            accept_errors.tell_held();
            backoff = None;
            while !shared.is_shutting_down() {
                let (stream, peer) = match listener.accept() {
                    Ok(accepted) => accepted,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        backoff = Some(accept_errors.failed(e));
                        break;
                    }
                };
                if live.len() >= cap {
                    shed.reject(Arc::new(stream), &linger, &shared, "connection cap reached");
                    continue;
                }
                next_id += 1;
                let id = next_id;
                let socket = match Socket::new(stream, false, config.timeouts.write) {
                    Ok(socket) => socket,
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot set up an accepted socket");
                        continue;
                    }
                };
                let slot = Arc::new(Slot {
                    stream: socket.tcp.clone(),
                    state: AtomicU8::new(IDLE),
                });
                let entered = live.enter(id, slot.clone(), &shared);
                let spawned = {
                    let (gateway, shared, linger, slot) = (
                        gateway.clone(),
                        shared.clone(),
                        linger.clone(),
                        slot.clone(),
                    );
                    std::thread::Builder::new()
                        .name("sgi-conn".into())
                        .spawn(move || {
                            let _entered = entered;
                            connection(socket, peer, &gateway, &shared, &linger, &slot);
                        })
                };
                // A thread that could not start dropped its guard with the closure.
                if let Err(e) = spawned {
                    let why = format!("cannot spawn a thread: {e}");
                    shed.reject(slot.stream.clone(), &linger, &shared, &why);
                }
            }
        }

        // Graceful shutdown: stop accepting, close idle connections, let in-flight requests
        // finish within the deadline, then cut what is left.
        drop(listener);
        tracing::info!(connections = live.len(), "shutting down");
        let deadline = Instant::now() + config.timeouts.shutdown;
        while live.len() > 0 && Instant::now() < deadline {
            live.close_idle();
            std::thread::sleep(Duration::from_millis(10));
        }
        if live.len() > 0 {
            tracing::warn!(
                connections = live.len(),
                "shutdown deadline passed; closing connections"
            );
            live.close_all();
        }
        // Connection threads still ending hold the linger thread too; the last one to go
        // stops it.
        drop(linger);
        Ok(())
    }
}

/// Serves one connection on its own thread until it closes.
fn connection<G: Gateway>(
    socket: Socket,
    peer: SocketAddr,
    gateway: &G,
    shared: &Shared,
    linger: &Linger,
    slot: &Slot,
) {
    let local = socket.tcp.local_addr().ok();
    let ctx = Ctx {
        gateway,
        shared,
        worker: None,
    };
    let mut conn = Conn::new(socket, Some(peer), local);
    loop {
        // In a shutdown nothing new is waited for, but a request whose head is in (pipelined
        // behind the last answer, its body still arriving) is in flight: it is served, as
        // the last one.
        if shared.is_shutting_down() && !conn.holds_unserved_request(shared) {
            break;
        }
        match conn.wait_head(&ctx) {
            Wait::Ready => {}
            Wait::Closed => break,
            Wait::Abandoned => return linger_on(conn, linger),
        }
        // Shutdown may have closed this connection as idle just as its request arrived.
        if slot
            .state
            .compare_exchange(IDLE, BUSY, SeqCst, SeqCst)
            .is_err()
        {
            conn.cut_unserved(shared, http::StatusCode::SERVICE_UNAVAILABLE);
            break;
        }
        shared.stats.active.fetch_add(1, SeqCst);
        let mut next = conn.serve(&ctx);
        // A pipelined request is served at once, while the connection still counts as
        // busy: the answers held back to go out with its own are never left behind by a
        // shutdown that closes idle connections.
        while next == Next::KeepAlive && conn.next_pipelined(shared) {
            next = conn.serve(&ctx);
        }
        let next = match conn.flush() {
            Ok(()) => next,
            Err(_) => {
                conn.cut_pipelined(shared);
                Next::Close
            }
        };
        shared.stats.active.fetch_sub(1, SeqCst);
        if slot
            .state
            .compare_exchange(BUSY, IDLE, SeqCst, SeqCst)
            .is_err()
        {
            break;
        }
        match next {
            Next::KeepAlive => {}
            Next::Close => break,
            Next::Linger => return linger_on(conn, linger),
        }
    }
}

fn linger_on(conn: Conn<Socket>, linger: &Linger) {
    linger.close_socket(conn.io);
}

/// Answers connections the server cannot take with `503`, warning at most once a second.
#[derive(Default)]
struct Shedding {
    warnings: Throttle,
}

impl Shedding {
    fn reject(&mut self, stream: Arc<TcpStream>, linger: &Linger, shared: &Shared, why: &str) {
        shared.stats.rejected_connection();
        crate::conn::log_shed(shared, stream.peer_addr().ok());
        if let Some(shed) = self.warnings.pass() {
            tracing::warn!(reason = why, shed, "shedding load: answering 503");
        }
        let mut response = Vec::with_capacity(192);
        response.extend_from_slice(
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
              retry-after: 1\r\ncontent-length: 24\r\nconnection: close\r\ndate: ",
        );
        crate::http1::date::append_now(&mut response);
        response.extend_from_slice(b"\r\n\r\n503 Service Unavailable\n");
        // A fresh socket's send buffer takes this whole; never block the accept loop on it.
        let _ = stream.set_nonblocking(true);
        let _ = (&*stream).write(&response);
        linger.close(stream);
    }
}

#[cfg(test)]
mod tests {
    use super::default_cap;

    #[test]
    fn the_default_cap_fits_the_descriptor_limit() {
        // Plenty of descriptors: the thread cap.
        assert_eq!(default_cap(65_536), 1024);
        // The common soft limit: room is left for the process's own files and the
        // lingering closes (an eighth), so accepts do not fail before the cap's 503.
        assert_eq!(default_cap(1024), 1024 - 32 - 128);
        // A tiny limit still serves a few.
        assert_eq!(default_cap(64), 16);
    }
}
