//! Admitting connections and the slots that hold them: accepting (paused on errors), the
//! connection cap (a newcomer takes the place of the connection idle longest), and
//! closing.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use mio::unix::SourceFd;
use mio::{Interest, Token};

use super::{Loop, Readiness, Slot};
use crate::conn::Conn;
use crate::transport::{Socket, Transport};

impl Loop {
    pub(super) fn accept(&mut self) {
        if let Some(until) = self.accept_paused_until {
            if Instant::now() < until {
                return;
            }
            self.accept_paused_until = None;
        }
        let Some(listener) = self.listener.take() else {
            return;
        };
        self.accept_from(&listener);
        self.listener = Some(listener);
    }

    pub(super) fn accept_from(&mut self, listener: &TcpListener) {
        loop {
            // At the cap, a newcomer takes the place of a connection idle between requests
            // (the longest idle), as nginx reuses keep-alive connections: idle clients
            // must not lock out new ones until the idle timeout. None idle: it waits.
            // (Not during a shutdown: requests already in idle connections' sockets are
            // served first then, and newcomers are refused.)
            let evict = match self.open < self.max_connections {
                true => None,
                false if self.shared.is_shutting_down() => break,
                false => match self.next_evictable() {
                    Some(victim) => Some(victim),
                    None => break,
                },
            };
            match listener.accept() {
                Ok((tcp, peer)) => {
                    if let Some((victim, _)) = evict {
                        self.evict(victim);
                    }
                    let local = tcp.local_addr().ok();
                    match Socket::new(tcp, true, self.shared.config.timeouts.write) {
                        Ok(socket) => {
                            let mut conn = Box::new(Conn::new(socket, Some(peer), local));
                            conn.write_behind = true;
                            conn.file_slots = Some(self.file_slots.clone());
                            conn.stream_slots = Some(self.stream_slots.clone());
                            self.insert(conn)
                        }
                        Err(e) => tracing::debug!(error = %e, "cannot set up an accepted socket"),
                    }
                }
                Err(e) => {
                    // Nobody took the idle one's place: it stays a candidate.
                    self.evictable.extend(evict);
                    if e.kind() == io::ErrorKind::WouldBlock {
                        self.accepting = false;
                    } else {
                        self.accept_paused_until =
                            Some(Instant::now() + self.accept_errors.failed(e));
                    }
                    return;
                }
            }
        }
        // At the cap: the kernel backlog holds newcomers until a connection closes (which
        // sets `accepting` again), one turns idle (the tick does), or another comes (its
        // edge does). Not tried again meanwhile, so the warning counts these, not turns.
        self.accepting = false;
        if let Some(times) = self.at_cap.pass() {
            self.tell_at_cap(times);
        }
    }

    pub(super) fn tell_at_cap(&self, times: u64) {
        tracing::warn!(
            max_connections = self.max_connections,
            times,
            "connection limit reached; pausing accept"
        );
    }

    /// The longest-idle connection picked at the last tick that is still idle since then.
    fn next_evictable(&mut self) -> Option<(usize, Instant)> {
        while let Some((token, parked)) = self.evictable.pop() {
            if let Some(Slot::Live {
                conn: Some(conn),
                since,
                ..
            }) = self.slots.get(token)
            {
                // A request that arrived since (its event not yet handled) keeps it.
                if *since == parked && conn.is_idle() && !conn.io.bytes_waiting() {
                    return Some((token, parked));
                }
            }
        }
        None
    }

    /// Closes an idle connection to make room for a newcomer.
    fn evict(&mut self, token: usize) {
        if let Some(conn) = self.take(token) {
            tracing::debug!(peer = %crate::conn::Peer(conn.peer()), "at the connection cap: closing the longest idle connection for a new one");
            self.close(token, conn, false);
        }
    }

    fn insert(&mut self, conn: Box<Conn<Socket>>) {
        let token = if self.free != usize::MAX {
            let token = self.free;
            if let Slot::Vacant { next_free } = self.slots[token] {
                self.free = next_free;
            }
            token
        } else {
            self.slots.push(Slot::Vacant {
                next_free: usize::MAX,
            });
            self.slots.len() - 1
        };
        let fd = conn.io.tcp.as_raw_fd();
        let registry = self.poll.registry();
        if let Err(e) = registry.register(&mut SourceFd(&fd), Token(token), Interest::READABLE) {
            tracing::debug!(error = %e, "cannot register a connection");
            self.slots[token] = Slot::Vacant {
                next_free: self.free,
            };
            self.free = token;
            return;
        }
        self.slots[token] = Slot::Live {
            stream: conn.io.tcp.clone(),
            conn: Some(conn),
            since: self.now(),
            readiness: Readiness::default(),
        };
        self.open += 1;
        self.shared.stats.open.store(self.open, Relaxed);
    }

    /// Closes a connection the loop holds: at once, or through the lingering thread after
    /// an error answer.
    ///
    /// A connection set to end in a reset (a body delimited by the close was cut short)
    /// never lingers: lingering begins with an orderly end, which would pass the cut body
    /// off as whole.
    pub(super) fn close(&mut self, token: usize, mut conn: Box<Conn<Socket>>, linger: bool) {
        if conn.has_unsent() && conn.unsent_ends_with_close() {
            // An answer cut short (write timeout, shutdown, error): a body delimited by the
            // close would look whole after an orderly end.
            conn.io.reset_on_close();
        }
        self.vacate(token, &conn.io.tcp);
        if linger {
            self.linger.close_socket(conn.io);
        }
    }

    /// Frees a connection's slot and stops watching its socket.
    pub(super) fn vacate(&mut self, token: usize, tcp: &TcpStream) {
        let _ = self
            .poll
            .registry()
            .deregister(&mut SourceFd(&tcp.as_raw_fd()));
        self.slots[token] = Slot::Vacant {
            next_free: self.free,
        };
        self.free = token;
        self.open -= 1;
        self.shared.stats.open.store(self.open, Relaxed);
        // Room again: newcomers waiting in the backlog raise no new edge.
        self.accepting = true;
    }

    /// Takes a parked connection out of its slot (the slot then shows it away).
    pub(super) fn take(&mut self, token: usize) -> Option<Box<Conn<Socket>>> {
        match self.slots.get_mut(token) {
            Some(Slot::Live { conn, .. }) => conn.take(),
            _ => None,
        }
    }
}
