//! The production backend: a fixed pool of worker threads that take turns at one `epoll`
//! event loop.
//!
//! The event loop owns the listener and every connection not being served: new ones, idle
//! keep-alive ones, and ones whose request head is still arriving. A connection reaches a
//! worker only with a complete head, so idle and slow clients (slowloris) never hold a
//! worker. After a response the worker goes straight on to a pipelined request already
//! buffered; otherwise the connection returns to the loop. An answer whose bytes are all in
//! memory, or whose body is a file, and that the client is slow to take is finished by the
//! loop too (write-behind), so slow readers hold no worker either. An iterator or reader
//! body, the gateway's own code, parks in the loop when its client falls behind (as many
//! as `Config::parked_streams` allows), and a worker makes its next pieces once the client
//! has made room; past that bound a stream holds its worker until it is sent.
//!
//! The loop has no thread of its own (leader/follower): an idle worker polls it and serves
//! the requests it found, so on a busy core a request is read, served and answered by one
//! thread with no hand-off. Before a gateway runs, an idle worker is woken to take the loop
//! over, so a gateway that blocks holds up nothing else (where the process has one CPU,
//! the keeper below stands in for that wake-up). The thread that called
//! [`PoolServer::serve`] is the keeper: when every worker is busy it takes the loop's turn
//! each tick (timers, accepting, stuck-worker checks), and it runs the graceful shutdown.

mod event_loop;
mod queue;
mod sched;
mod worker;

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::Arc;

use crate::server::{adopt, bind, Shared};
use crate::{Config, Gateway, Handle};
pub(crate) use worker::{untimed_here, Busy};

/// The thread-pool server.
///
/// Same configuration, same [`Handle`], same gateway as the [`DevServer`](crate::DevServer):
/// swapping one for the other is one line.
///
/// ```no_run
/// use sgi::{Body, Config, PoolServer, Request, Response};
///
/// let server = PoolServer::bind_with("0.0.0.0:8000", Config::default().workers(16))?;
/// server.serve(|_req: Request<'_>| Response::new(Body::from("Hello, World!")))?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct PoolServer {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl PoolServer {
    /// Binds `addr` with the default [`Config`]. Port 0 picks a free port; see
    /// [`local_addr`](Self::local_addr).
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<PoolServer> {
        Self::bind_with(addr, Config::default())
    }

    /// Binds `addr` with `config`.
    pub fn bind_with(addr: impl ToSocketAddrs, config: Config) -> io::Result<PoolServer> {
        let listener = bind(addr, config.backlog)?;
        let shared = Shared::new(config, listener.local_addr()?);
        Ok(PoolServer { listener, shared })
    }

    /// Serves on `listener`, a socket already bound and listening: one made with options
    /// of your own, or one passed down by a process manager (systemd socket activation,
    /// a graceful restart that hands the socket to the next process). The server sets it
    /// non-blocking; [`Config::backlog`] does not apply (the listener's own stands).
    ///
    /// ```
    /// use std::net::TcpListener;
    /// use sgi::{Config, PoolServer};
    ///
    /// // Under systemd socket activation the first passed socket is fd 3:
    /// // let listener = unsafe { std::os::fd::FromRawFd::from_raw_fd(3) };
    /// let listener = TcpListener::bind("127.0.0.1:0")?;
    /// let server = PoolServer::from_listener(listener, Config::default())?;
    /// assert_ne!(server.local_addr().port(), 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn from_listener(listener: TcpListener, config: Config) -> io::Result<PoolServer> {
        let listener = adopt(listener)?;
        let shared = Shared::new(config, listener.local_addr()?);
        Ok(PoolServer { listener, shared })
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

    /// Serves `gateway` until [`Handle::shutdown`]; blocks, keeping the pool (see the
    /// [module](self) notes) on the calling thread.
    ///
    /// Returns once every connection is closed, or cut at the shutdown deadline. The
    /// worker threads are not joined: idle ones leave a moment later, and one still inside
    /// the gateway past the deadline leaves when the gateway returns (a thread cannot be
    /// stopped from outside), so the gateway may be dropped after `serve` has returned.
    pub fn serve<G: Gateway>(self, gateway: G) -> io::Result<()> {
        event_loop::run(self.listener, self.shared, Arc::new(gateway))
    }
}

/// The most connections the file descriptor limit allows, leaving room for the rest of the
/// process and for the sockets that linger after they close (see [`crate::linger::room`]).
/// `soft` is the soft `RLIMIT_NOFILE` ([`crate::linger::fd_soft_limit`]).
pub(crate) fn fd_budget(soft: usize, workers: usize) -> usize {
    crate::linger::connections_fit(soft, 2 * workers + file_budget(soft))
}

/// How many file bodies the event loop may be left to send at once (each holds a
/// descriptor beside its connection's): an eighth of the descriptor limit, 16 to 4,096.
/// Past that, a worker sends a file to its end, however slow its client.
pub(crate) fn file_budget(soft: usize) -> usize {
    (soft / 8).clamp(16, 4096)
}
