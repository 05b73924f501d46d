//! Lingering close: after an error response, or a `503` at the connection cap, the server
//! half-closes the socket and reads (and drops) what the client still sends for a while.
//! Closing at once with unread bytes makes the kernel send a reset, which can destroy the
//! response before the client reads it. One thread does this for every socket of a server.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::transport::{Socket, Transport};

const WAKE: Token = Token(usize::MAX);

/// The process's soft `RLIMIT_NOFILE`, read from procfs to stay free of `unsafe` (1024 if it
/// cannot be read).
pub(crate) fn fd_soft_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("Max open files"))?;
            line.split_whitespace().nth(3)?.parse().ok()
        })
        .unwrap_or(1024)
}

/// How many sockets may linger at once with `soft` descriptors in all: an eighth of them,
/// 16 to 4,096. A lingering socket holds its descriptor for up to `Timeouts::linger`, so
/// this room is kept out of the connections a server takes; past it, the oldest lingering
/// socket is closed at once (its client has its answer; lingering only guards against a
/// reset from bytes it may still send).
pub(crate) fn room(soft: usize) -> usize {
    (soft / 8).clamp(16, 4096)
}

/// How many connections fit a soft descriptor limit `soft`, beside `reserved` other
/// descriptors, 32 for the rest of the process and the lingering room: at least 16.
pub(crate) fn connections_fit(soft: usize, reserved: usize) -> usize {
    soft.saturating_sub(32 + room(soft) + reserved).max(16)
}

/// Warns at start when a connection cap is over what fits the descriptor limit: past
/// `fits`, accepts fail with `EMFILE` (and back off) before the cap is reached, so
/// newcomers wait unanswered instead of meeting the cap (the dev server's `503`).
pub(crate) fn warn_if_over(max_connections: usize, soft: usize, fits: usize) {
    if max_connections > fits {
        tracing::warn!(
            max_connections,
            fd_soft_limit = soft,
            fits,
            "max_connections is more than the descriptor limit allows; raise `ulimit -n`"
        );
    }
}

#[derive(Debug)]
pub(crate) struct Linger {
    tx: Option<Sender<Arc<TcpStream>>>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

impl Linger {
    /// Starts the lingering thread; at most `capacity` sockets linger at once (the oldest is
    /// closed to make room).
    pub(crate) fn start(timeout: Duration, capacity: usize) -> io::Result<Linger> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        // The thread keeps the waker's descriptor open: closed, it would take a wake-up not
        // yet seen with it (see `Drop`).
        let own_waker = waker.clone();
        let thread = std::thread::Builder::new()
            .name("sgi-linger".into())
            .spawn(move || {
                let _waker = own_waker;
                run(poll, rx, timeout, capacity)
            })?;
        Ok(Linger {
            tx: Some(tx),
            waker,
            thread: Some(thread),
        })
    }

    /// Half-closes `stream` and drains it until the client closes or the timeout passes.
    pub(crate) fn close(&self, stream: Arc<TcpStream>) {
        let _ = stream.shutdown(Shutdown::Write);
        if let Some(tx) = &self.tx {
            match tx.try_send(stream) {
                Ok(()) => {
                    let _ = self.waker.wake();
                }
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {}
            }
        }
    }

    /// Closes a connection's socket through [`close`](Self::close), unless it is set to end
    /// in a reset (a body delimited by the close was cut short): lingering begins with an
    /// orderly end, which would pass the cut body off as whole. Dropped, it resets.
    pub(crate) fn close_socket(&self, socket: Socket) {
        if !socket.resets_on_close() {
            self.close(socket.tcp);
        }
    }

    /// Closes every lingering socket and ends the thread, waiting for it.
    pub(crate) fn stop(&mut self) {
        self.tx = None;
        let _ = self.waker.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Linger {
    /// Ends the thread without waiting for it: with the sender gone, it closes its sockets
    /// and returns as soon as the wake-up reaches it.
    fn drop(&mut self) {
        self.tx = None;
        let _ = self.waker.wake();
    }
}

fn run(mut poll: Poll, rx: Receiver<Arc<TcpStream>>, timeout: Duration, capacity: usize) {
    let mut events = Events::with_capacity(256);
    let mut sockets: HashMap<usize, Arc<TcpStream>> = HashMap::new();
    let mut deadlines: VecDeque<(Instant, usize)> = VecDeque::new();
    let mut next_token = 0usize;
    let mut scratch = vec![0u8; 16 * 1024];
    loop {
        let wait = deadlines
            .front()
            .map(|(at, _)| at.saturating_duration_since(Instant::now()));
        if let Err(e) = poll.poll(&mut events, wait) {
            if e.kind() != io::ErrorKind::Interrupted {
                tracing::error!(error = %e, "linger poll failed");
                return;
            }
        }
        for event in events.iter() {
            let token = event.token().0;
            let Some(stream) = sockets.get_mut(&token) else {
                continue;
            };
            let done = loop {
                match (&**stream).read(&mut scratch) {
                    Ok(0) => break true,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break true,
                }
            };
            if done {
                if let Some(stream) = sockets.remove(&token) {
                    let _ = poll
                        .registry()
                        .deregister(&mut SourceFd(&stream.as_raw_fd()));
                }
            }
        }
        loop {
            match rx.try_recv() {
                Ok(stream) => {
                    if sockets.len() >= capacity {
                        // Make room: close the oldest still lingering (deadlines of sockets
                        // already done are skipped).
                        while let Some((_, oldest)) = deadlines.pop_front() {
                            if let Some(stream) = sockets.remove(&oldest) {
                                let _ = poll
                                    .registry()
                                    .deregister(&mut SourceFd(&stream.as_raw_fd()));
                                break;
                            }
                        }
                    }
                    next_token = (next_token + 1) % (usize::MAX - 1);
                    let token = next_token;
                    if stream.set_nonblocking(true).is_err()
                        || poll
                            .registry()
                            .register(
                                &mut SourceFd(&stream.as_raw_fd()),
                                Token(token),
                                Interest::READABLE,
                            )
                            .is_err()
                    {
                        continue;
                    }
                    sockets.insert(token, stream);
                    deadlines.push_back((Instant::now() + timeout, token));
                }
                Err(crossbeam_channel::TryRecvError::Empty) => break,
                Err(crossbeam_channel::TryRecvError::Disconnected) => return,
            }
        }
        let now = Instant::now();
        while let Some(&(at, token)) = deadlines.front() {
            if at > now {
                break;
            }
            deadlines.pop_front();
            if let Some(stream) = sockets.remove(&token) {
                let _ = poll
                    .registry()
                    .deregister(&mut SourceFd(&stream.as_raw_fd()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits until only the test holds `stream` (the linger thread let go of it).
    fn released(stream: &Arc<TcpStream>) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(stream) > 1 {
            assert!(
                Instant::now() < deadline,
                "the linger thread kept the socket"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn at_capacity_the_oldest_lingering_socket_makes_room() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut clients = Vec::new();
        let mut accept = || {
            clients.push(TcpStream::connect(addr).unwrap());
            Arc::new(listener.accept().unwrap().0)
        };
        let mut linger = Linger::start(Duration::from_secs(60), 2).unwrap();
        let (a, b, c, d) = (accept(), accept(), accept(), accept());
        linger.close(a.clone());
        linger.close(b.clone());
        // A's client closes, so A is done; its deadline stays queued in front of B's.
        clients[0].shutdown(Shutdown::Both).unwrap();
        released(&a);
        linger.close(c.clone());
        // Two linger (B, C): D makes room by closing B, the oldest one still lingering.
        linger.close(d.clone());
        released(&b);
        assert_eq!(Arc::strong_count(&c), 2, "C still lingers");
        linger.stop();
    }

    #[test]
    fn dropping_it_ends_the_thread() {
        let mut linger = Linger::start(Duration::from_secs(60), 16).unwrap();
        let thread = linger.thread.take().unwrap();
        drop(linger);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !thread.is_finished() {
            assert!(
                Instant::now() < deadline,
                "the linger thread outlived its Linger"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
