//! The pool's event loop: accepts, reads request heads without blocking, parks idle
//! connections, writes the end of answers their clients are slow to take (write-behind,
//! see `conn::behind`), enforces the idle, head and write timeouts, and queues ready
//! connections for the workers.
//!
//! The loop has no thread of its own: it is a state behind a lock, and an idle worker takes
//! a turn at it (leader/follower). The worker that polled serves what it found itself, so on
//! a busy core a request costs no hand-off between threads. Before a gateway runs, an idle
//! worker is woken to take the loop over (on one CPU, only if the keeper sees nothing move
//! for a millisecond; see `worker`). When every worker is busy, the thread that called
//! `serve` (the keeper) takes a turn each tick, so timers, stuck-worker checks and accepting
//! go on regardless; it also runs the shutdown.

use std::collections::VecDeque;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use http::StatusCode;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::queue::JobQueue;
use super::worker::{Done, Job, Workers};
use crate::conn::{Conn, Head, Next, Progress, Slots};
use crate::linger::Linger;
use crate::server::{listening_poll, AcceptErrors, Shared, Throttle};
use crate::transport::{Socket, Transport};
use crate::Gateway;

const LISTENER: Token = Token(usize::MAX - 1);
pub(crate) const WAKE: Token = Token(usize::MAX - 2);
/// How often timers and stuck workers are checked.
pub(crate) const TICK: Duration = Duration::from_millis(100);
/// Recycled read buffers kept for connections that wake up.
const SPARE_BUFFERS: usize = 1024;
/// The status an access line gives a request whose client left before any answer was
/// chosen (nginx's "client closed request").
pub(crate) const CLIENT_GONE: StatusCode = match StatusCode::from_u16(499) {
    Ok(status) => status,
    Err(_) => StatusCode::BAD_REQUEST,
};
/// Idle connections picked at each tick while at the connection cap, to be closed one by
/// one to make room for newcomers waiting in the backlog.
const EVICTABLE: usize = 64;
/// Ready requests the job queue holds per worker before the loop keeps the rest itself.
const QUEUE_PER_WORKER: usize = 64;

/// Set by the loop when a connection turns readable while a worker has it, so the worker
/// wakes the loop when it hands the connection back. Otherwise a worker hands back a
/// keep-alive connection without a wake-up: the next readiness event, which wakes the loop
/// anyway, finds it there. That saves a system call and a context switch per request.
///
/// Zero while nothing stirred; else when it last did, as [`stamp`] gives it (at the loop's
/// last clock reading, a little early, so no clock is read per event): a worker taking a
/// queued request tells from it whether its client ended its side with the request or
/// gave up later.
pub(crate) type Readiness = Arc<AtomicU64>;

/// `at` as the pool's atomic clocks store a time (a [`Readiness`], a worker's stuck and
/// streaming clocks): nanoseconds after `epoch`, plus one, so that zero is "no time".
pub(crate) fn stamp(epoch: Instant, at: Instant) -> u64 {
    at.saturating_duration_since(epoch).as_nanos() as u64 + 1
}

enum Slot {
    /// A live connection: `conn` is `None` while a worker has it (or it waits for one).
    Live {
        conn: Option<Box<Conn<Socket>>>,
        /// When it was last parked (start of its idle time).
        since: Instant,
        readiness: Readiness,
        /// The socket, also while a worker has the connection: shutdown may have to cut it.
        stream: Arc<TcpStream>,
    },
    Vacant {
        next_free: usize,
    },
}

/// The event loop's state; whoever holds it (a worker or the keeper) runs a [`turn`](Self::turn).
pub(crate) struct Loop {
    /// File bodies the loop may be left to send: each holds a descriptor.
    file_slots: Arc<Slots>,
    /// Streamed bodies that may wait for their clients here (`Config::parked_streams`).
    stream_slots: Arc<Slots>,
    poll: Poll,
    events: Events,
    listener: Option<TcpListener>,
    shared: Arc<Shared>,
    slots: Vec<Slot>,
    free: usize,
    open: usize,
    max_connections: usize,
    jobs: Arc<JobQueue>,
    done: Receiver<Done>,
    /// Ready connections waiting for room in the job queue.
    ready: VecDeque<Job>,
    linger: Linger,
    spare: Vec<Vec<u8>>,
    accepting: bool,
    accept_paused_until: Option<Instant>,
    /// Hitting the connection cap is logged at most once a second: under a flood it is hit
    /// again each time a connection closes.
    at_cap: Throttle,
    /// At the cap: the connections idle longest at the last tick, the oldest last, with
    /// when each was parked. A newcomer takes the place of one (see `accept_from`).
    evictable: Vec<(usize, Instant)>,
    accept_errors: AcceptErrors,
    next_tick: Instant,
    /// When the last turn's poll returned.
    turned: Instant,
    /// When this turn's poll returned, while its events are handled (see [`Loop::now`]).
    polled: Option<Instant>,
    /// A poll failure that ended the loop; `serve` returns it.
    pub(crate) failed: Option<io::Error>,
    /// The shutdown deadline passed and every connection was written off at once.
    cut_all: bool,
}

pub(crate) fn run<G: Gateway>(
    listener: TcpListener,
    shared: Arc<Shared>,
    gateway: Arc<G>,
) -> io::Result<()> {
    let config = &shared.config;
    let size = config.pool_workers();
    let soft = crate::linger::fd_soft_limit();
    let budget = super::fd_budget(soft, size);
    let max_connections = config.connection_cap(|| budget);
    crate::linger::warn_if_over(max_connections, soft, budget);
    let (poll, waker) = listening_poll(&listener, &shared, LISTENER, WAKE)?;
    // Room for every request a busy server has ready, so workers rarely find it full and
    // overflow (which makes every returning worker wake the loop) stays rare.
    let eager = std::thread::available_parallelism().map_or(true, |n| n.get() > 1);
    let jobs = Arc::new(JobQueue::new(QUEUE_PER_WORKER * size, waker.clone(), eager));
    let (done_tx, done) = crossbeam_channel::unbounded();
    let linger = Linger::start(config.timeouts.linger, crate::linger::room(soft))?;
    tracing::info!(addr = %shared.local_addr, workers = size, max_connections, "pool server listening");
    // Before any worker starts, so the first one to call for the keeper reaches it.
    shared.set_keeper();
    let lp = Loop::new(
        poll,
        listener,
        &shared,
        &jobs,
        done,
        linger,
        max_connections,
    );
    let workers = Workers::start(
        size,
        gateway,
        shared.clone(),
        lp,
        jobs.clone(),
        done_tx,
        waker,
    )
    .inspect_err(|_| {
        // The workers that did start stop taking turns at the loop, see the queue
        // close, and exit.
        shared.begin_shutdown();
        jobs.close();
    })?;
    let result = workers.keep();
    jobs.close(); // idle workers see the queue close and exit
    workers.stop_linger();
    result
}

impl Loop {
    fn new(
        poll: Poll,
        listener: TcpListener,
        shared: &Arc<Shared>,
        jobs: &Arc<JobQueue>,
        done: Receiver<Done>,
        linger: Linger,
        max_connections: usize,
    ) -> Loop {
        let soft = crate::linger::fd_soft_limit();
        Loop {
            // The workers' own files (one each while they send one) come out of the
            // descriptors `fd_budget` sets aside for them, not out of the slow readers'.
            file_slots: Slots::new(super::file_budget(soft) + shared.config.pool_workers()),
            stream_slots: Slots::new(shared.config.pool_parked_streams()),
            poll,
            events: Events::with_capacity(1024),
            listener: Some(listener),
            shared: shared.clone(),
            slots: Vec::new(),
            free: usize::MAX,
            open: 0,
            max_connections,
            jobs: jobs.clone(),
            done,
            ready: VecDeque::new(),
            linger,
            spare: Vec::new(),
            accepting: true,
            accept_paused_until: None,
            at_cap: Throttle::default(),
            evictable: Vec::new(),
            accept_errors: AcceptErrors::default(),
            next_tick: Instant::now() + TICK,
            turned: Instant::now(),
            polled: None,
            failed: None,
            cut_all: false,
        }
    }

    /// One round of the loop: waits for readiness events (up to the next tick if `wait`,
    /// else not at all), reads what arrived, takes connections back from workers, accepts,
    /// and runs the timers when a tick is due (then returns true: the caller checks for
    /// stuck workers). Ready requests go to the job queue; waking workers for them is the
    /// caller's part.
    pub(crate) fn turn(&mut self, wait: bool) -> bool {
        // Connections handed back before this turn began are parked before polling.
        self.take_back();
        // Timed from the end of the last turn rather than a fresh clock read: if that was a
        // while ago (a worker served in between), the wait still ends at most a tick late,
        // as `next_tick` is at most a tick after it.
        let timeout = match wait && self.jobs.is_empty() && !self.shared.is_shutting_down() {
            true => self.next_tick.saturating_duration_since(self.turned),
            false => Duration::ZERO,
        };
        let mut events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                tracing::error!(error = %e, "the event loop cannot poll; shutting down");
                self.failed = Some(e);
                self.shared.begin_shutdown();
            }
        }
        self.polled = Some(Instant::now());
        for event in events.iter() {
            match event.token() {
                LISTENER => self.accepting = true,
                WAKE => {}
                Token(token) => self.readable(token, event.is_read_closed()),
            }
        }
        self.events = events;
        self.take_back();
        if self.accepting && !self.shared.is_shutting_down() {
            self.accept();
        }
        let now = self.polled.take().unwrap_or_else(Instant::now);
        self.turned = now;
        if now < self.next_tick {
            return false;
        }
        self.tick(now);
        self.next_tick = now + TICK;
        true
    }

    /// Whether no turn has run the timers for a tick.
    pub(crate) fn tick_due(&self) -> bool {
        Instant::now() >= self.next_tick
    }

    /// Stops the lingering thread (after shutdown).
    pub(crate) fn stop_linger(&mut self) {
        self.linger.stop();
    }

    fn accept(&mut self) {
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

    fn accept_from(&mut self, listener: &TcpListener) {
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

    fn tell_at_cap(&self, times: u64) {
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
    fn close(&mut self, token: usize, conn: Box<Conn<Socket>>, linger: bool) {
        self.vacate(token, &conn.io.tcp);
        if linger {
            self.linger.close_socket(conn.io);
        }
    }

    /// Frees a connection's slot and stops watching its socket.
    fn vacate(&mut self, token: usize, tcp: &TcpStream) {
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
    fn take(&mut self, token: usize) -> Option<Box<Conn<Socket>>> {
        match self.slots.get_mut(token) {
            Some(Slot::Live { conn, .. }) => conn.take(),
            _ => None,
        }
    }

    /// A connection's readiness event; `ended` if the client has also ended its side (that
    /// edge comes once: a request read with it must not be followed by a wait for more).
    fn readable(&mut self, token: usize, ended: bool) {
        match self.slots.get(token) {
            // Its answer is still going out: nothing is read before that is done.
            Some(Slot::Live {
                conn: Some(conn), ..
            }) if conn.has_unsent() => self.write_unsent(token),
            Some(Slot::Live { conn: Some(_), .. }) => self.read(token, ended),
            Some(Slot::Live { conn: None, .. }) => self.stirred(token),
            _ => {}
        }
    }

    /// Now, for a request begun or a timer started: while a turn's events are handled, when
    /// its poll returned (one clock reading for all of them: what they bring arrived by
    /// then), else a fresh reading.
    fn now(&self) -> Instant {
        self.polled.unwrap_or_else(Instant::now)
    }

    /// A connection a worker has (or that waits for one) turned readable: new bytes, or
    /// the client's end.
    fn stirred(&self, token: usize) {
        if let Some(Slot::Live {
            conn: None,
            readiness,
            ..
        }) = self.slots.get(token)
        {
            readiness.store(stamp(self.shared.epoch, self.turned), SeqCst);
        }
    }

    /// Reads what a parked connection has; dispatches it once its head is complete.
    fn read(&mut self, token: usize, ended: bool) {
        self.isolated(token, |lp| lp.read_inner(token, ended));
    }

    /// Runs `work` on one connection so that a panic in it (a bug in head parsing, say)
    /// costs that connection only: it is closed, and the loop, whose state the whole pool
    /// shares, goes on.
    fn isolated(&mut self, token: usize, work: impl FnOnce(&mut Self)) {
        let Err(panic) = catch_unwind(AssertUnwindSafe(|| work(self))) else {
            return;
        };
        let panic = crate::conn::panics::message(&*panic);
        tracing::error!(panic, "the event loop panicked on a connection; closing it");
        match self.slots.get_mut(token) {
            Some(Slot::Live { conn: Some(_), .. }) => {
                if let Some(conn) = self.take(token) {
                    self.close(token, conn, false);
                }
            }
            // The connection was dropped in the unwind; its slot and socket remain.
            Some(Slot::Live { conn: None, .. }) => self.write_off(token),
            _ => {}
        }
    }

    /// Ends a connection lost in an unwind (by the loop, or by the worker that had it):
    /// its socket is shut and its slot freed, so the client sees the end and the
    /// connection no longer counts.
    pub(crate) fn write_off(&mut self, token: usize) {
        if self.cut_all {
            // Past the shutdown deadline: written off with every other one already.
            return;
        }
        if let Some(Slot::Live {
            conn: None, stream, ..
        }) = self.slots.get(token)
        {
            let stream = stream.clone();
            let _ = stream.shutdown(std::net::Shutdown::Both);
            self.vacate(token, &stream);
        }
    }

    fn read_inner(&mut self, token: usize, ended: bool) {
        let Some(mut conn) = self.take(token) else {
            return;
        };
        if conn.buf.is_empty() {
            if let Some(storage) = self.spare.pop() {
                conn.buf.provide(storage);
            }
        }
        match conn.read_available(&self.shared, self.now()) {
            Ok(open) => match conn.head(&self.shared) {
                // A small body still arriving waits here, not on a worker. If the client
                // ended its side before the rest of it, the request can never be whole, and
                // no gateway is called for it (as after a reset).
                Head::Ready if conn.awaits_body(&self.shared) => {
                    if open {
                        self.park(token, conn)
                    } else {
                        conn.cut_unserved(&self.shared, CLIENT_GONE);
                        self.close(token, conn, false)
                    }
                }
                Head::Ready => self.dispatch(token, conn, ended || !open),
                Head::Empty if !open => self.close(token, conn, false),
                Head::Partial if !open => {
                    // The client ended its side mid-head: answer 400 and close.
                    let answered = conn.abandon_now(StatusCode::BAD_REQUEST, &self.shared);
                    self.close(token, conn, answered)
                }
                _ => self.park(token, conn),
            },
            Err(_) => {
                // A client gone while its small body was awaited here: no answer reaches it.
                if conn.awaiting_body() {
                    conn.cut_unserved(&self.shared, CLIENT_GONE);
                }
                self.close(token, conn, false)
            }
        }
    }

    fn park(&mut self, token: usize, mut conn: Box<Conn<Socket>>) {
        if let Some(storage) = conn.release_buffers() {
            if self.spare.len() < SPARE_BUFFERS {
                self.spare.push(storage);
            }
        }
        self.put_back(token, conn);
    }

    /// Queues a connection with a request to serve. `ended`: the client has ended its side,
    /// so the loop reads again when the worker is done (it finds the end and closes).
    fn dispatch(&mut self, token: usize, conn: Box<Conn<Socket>>, ended: bool) {
        let Slot::Live { readiness, .. } = &self.slots[token] else {
            return;
        };
        // A client that ended its side along with the request stirred before it was queued.
        readiness.store(u64::from(ended), SeqCst);
        let job = Job {
            token,
            conn,
            readiness: readiness.clone(),
            ended,
        };
        self.shared.stats.queued.fetch_add(1, Relaxed);
        if !self.ready.is_empty() {
            self.ready.push_back(job);
            return;
        }
        if let Err(job) = self.jobs.try_push(job) {
            self.ready.push_back(job);
        }
    }

    /// Takes connections back from workers and refills the job queue.
    fn take_back(&mut self) {
        // Pairs with the worker's fence: either it sees the readiness flag set, or the loop
        // sees its returned connection here.
        std::sync::atomic::fence(SeqCst);
        self.take_back_once();
        self.fill_queue();
    }

    /// Moves overflow into the job queue; while some is left, workers are asked to wake the
    /// loop when the queue runs half empty.
    fn fill_queue(&mut self) {
        loop {
            while let Some(job) = self.ready.pop_front() {
                if let Err(job) = self.jobs.try_push(job) {
                    self.ready.push_front(job);
                    break;
                }
            }
            let overflow = !self.ready.is_empty();
            self.jobs.want_refill(overflow);
            // Drained below half before the flag was up, no worker will call: go round again.
            if !overflow || !self.jobs.below_half() {
                break;
            }
        }
    }

    fn take_back_once(&mut self) {
        // Most connections come back by `hand_back`: the channel is usually empty, which
        // this tells for less than a failed receive.
        while !self.done.is_empty() {
            match self.done.try_recv() {
                Ok(done) => self.returned(done),
                Err(_) => break,
            }
        }
    }

    /// A worker hands a connection back directly, holding the loop (nobody is polling):
    /// no trip through the channel and no wake-up.
    pub(crate) fn hand_back(&mut self, done: Done) {
        self.returned(done);
        self.fill_queue();
    }

    /// Goes on with a connection a worker is done with, as the worker decided.
    fn returned(&mut self, done: Done) {
        let Done {
            token,
            mut conn,
            next,
        } = done;
        if conn.has_unsent() {
            // The client is slow to take its answer: the loop writes the rest as the
            // socket makes room, and then goes on as the worker decided.
            conn.after_unsent = next;
            if let Slot::Live { readiness, .. } = &self.slots[token] {
                readiness.store(0, SeqCst);
            }
            if self.interest(token, &conn, Interest::READABLE | Interest::WRITABLE) {
                self.put_back(token, conn);
            } else {
                self.close(token, conn, false);
            }
            return;
        }
        let readable = match &self.slots[token] {
            Slot::Live { readiness, .. } => readiness.swap(0, SeqCst) != 0,
            Slot::Vacant { .. } => false,
        };
        // Bytes the client sent that nobody has read yet. On a close, a plain close would
        // answer them with a reset, which can destroy the end of the answer still in the
        // socket's send buffer, so the connection lingers instead.
        let unread = readable || conn.may_have_more();
        match next {
            Next::KeepAlive if self.shared.is_shutting_down() => self.close(token, conn, unread),
            Next::KeepAlive => {
                self.park(token, conn);
                // Bytes may have arrived while a worker had the connection.
                if unread {
                    self.read(token, false);
                }
            }
            Next::Close => self.close(token, conn, unread),
            Next::Linger => self.close(token, conn, true),
        }
    }

    /// Writes what a connection's answer still has unsent; once it is all out, the
    /// connection goes on as its worker decided.
    fn write_unsent(&mut self, token: usize) {
        self.isolated(token, |lp| lp.write_unsent_inner(token));
    }

    fn write_unsent_inner(&mut self, token: usize) {
        let Some(mut conn) = self.take(token) else {
            return;
        };
        match conn.write_unsent_now() {
            Ok(Progress::Blocked { progressed: true }) => self.put_back(token, conn),
            Ok(Progress::Blocked { progressed: false }) => self.return_untouched(token, conn),
            Ok(Progress::Paused) => {
                // The socket may still have room, so no new edge would come: asking for
                // the same events again makes the next poll report it, after the others.
                if self.interest(token, &conn, Interest::READABLE | Interest::WRITABLE) {
                    self.put_back(token, conn);
                } else {
                    self.close(token, conn, false);
                }
            }
            // A parked stream is next: a worker makes its next pieces (the loop waits for no
            // room meanwhile; a worker that parks it again hands it back for that).
            Ok(Progress::Streaming) if self.interest(token, &conn, Interest::READABLE) => {
                self.dispatch(token, conn, false)
            }
            Ok(Progress::Streaming) => self.close(token, conn, false),
            Ok(Progress::Done) if !self.interest(token, &conn, Interest::READABLE) => {
                self.close(token, conn, false)
            }
            Ok(Progress::Done) => match (conn.after_unsent, conn.head(&self.shared)) {
                (Next::KeepAlive, _) if !self.shared.is_shutting_down() => {
                    self.park(token, conn);
                    // The next request may have arrived meanwhile.
                    self.read(token, false);
                }
                // In a shutdown, a request already read is served, as the last one.
                (Next::KeepAlive, Head::Ready) => self.dispatch(token, conn, false),
                // The client may have sent bytes meanwhile (not read while the answer went
                // out): lingering keeps a reset from destroying the answer's last bytes.
                _ => self.close(token, conn, true),
            },
            Err(_) => self.close(token, conn, false),
        }
    }

    /// Changes what the loop waits for on a connection; false if it cannot.
    fn interest(&self, token: usize, conn: &Conn<Socket>, interest: Interest) -> bool {
        let fd = conn.io.tcp.as_raw_fd();
        let registry = self.poll.registry();
        registry
            .reregister(&mut SourceFd(&fd), Token(token), interest)
            .map_err(|e| tracing::debug!(error = %e, "cannot change a connection's interest"))
            .is_ok()
    }

    /// Puts a connection back in its slot, its timer (idle, head, body or write) starting
    /// now. [`park`](Self::park) also takes back its idle buffers.
    fn put_back(&mut self, token: usize, mut conn: Box<Conn<Socket>>) {
        if conn.has_unsent() {
            conn.start_write_timer();
        }
        let now = self.now();
        if let Slot::Live {
            conn: slot, since, ..
        } = &mut self.slots[token]
        {
            *slot = Some(conn);
            *since = now;
        }
    }

    /// Parks a connection again without touching its timer (nothing moved).
    fn return_untouched(&mut self, token: usize, conn: Box<Conn<Socket>>) {
        if let Slot::Live { conn: slot, .. } = &mut self.slots[token] {
            *slot = Some(conn);
        }
    }

    /// Closes connections past their idle or head timeout.
    fn tick(&mut self, now: Instant) {
        // Warnings held back by their throttle are told once their second is up, even when
        // the burst that raised them is over.
        if let Some(times) = self.at_cap.held_due() {
            self.tell_at_cap(times);
        }
        self.accept_errors.tell_held();
        let timeouts = &self.shared.config.timeouts;
        let (idle, head, body, write) =
            (timeouts.idle, timeouts.head, timeouts.body, timeouts.write);
        let mut expired = Vec::new();
        let at_cap = self.open >= self.max_connections;
        self.evictable.clear();
        for (token, slot) in self.slots.iter_mut().enumerate() {
            if let Slot::Live {
                conn: Some(conn),
                since,
                ..
            } = slot
            {
                if at_cap && conn.is_idle() {
                    self.evictable.push((token, *since));
                }
                // A small body the loop waits for may pause up to the body timeout between
                // reads (each read parks the connection anew), and must keep to the
                // minimum rate.
                let deadline = match conn.head_started {
                    // An answer waiting on its client: since the last byte it took.
                    _ if conn.has_unsent() => *since + write,
                    Some(_) if conn.awaiting_body() => {
                        let paused = *since + body;
                        conn.body_rate_deadline(&self.shared)
                            .map_or(paused, |slow| slow.min(paused))
                    }
                    Some(started) => started + head,
                    None => *since + idle,
                };
                if now < deadline {
                    continue;
                }
                if conn.has_unsent() && conn.took_bytes() {
                    // A slow reader, not a stalled one: its timer starts anew.
                    *since = now;
                    continue;
                }
                expired.push(token);
            }
        }
        // The oldest last, as `next_evictable` pops them.
        if self.evictable.len() > EVICTABLE {
            self.evictable
                .select_nth_unstable_by_key(EVICTABLE - 1, |&(_, since)| since);
            self.evictable.truncate(EVICTABLE);
        }
        self.evictable
            .sort_unstable_by_key(|&(_, since)| std::cmp::Reverse(since));
        if !self.evictable.is_empty() {
            // Newcomers may wait in the backlog with no new edge to announce them.
            self.accepting = true;
        }
        for token in expired {
            let Some(mut conn) = self.take(token) else {
                continue;
            };
            let answered = conn.head_started.is_some()
                && !conn.has_unsent()
                && conn.abandon_now(StatusCode::REQUEST_TIMEOUT, &self.shared);
            if answered {
                tracing::debug!(peer = %crate::conn::Peer(conn.peer()), "request timed out; answered 408");
            }
            self.close(token, conn, answered);
        }
    }

    /// Graceful shutdown: idle connections close now; requests already read finish within
    /// the deadline (their responses say `Connection: close`), and so do requests whose
    /// small body is still arriving, once it is in.
    /// `supervise` checks for stuck workers meanwhile.
    pub(crate) fn shut_down(&mut self, supervise: impl Fn()) {
        // While every worker was busy nobody may have been at the loop for up to a tick:
        // what arrived before the shutdown (connections in the backlog, requests in socket
        // buffers) is taken in first. Newcomers are refused from then on.
        if let Some(listener) = self.listener.take() {
            self.accept_from(&listener);
        }
        self.turn(false);
        let deadline = Instant::now() + self.shared.config.timeouts.shutdown;
        tracing::info!(connections = self.open, "shutting down");
        for token in 0..self.slots.len() {
            if let Some(conn) = self.take(token) {
                // A request whose head is in and whose small body is still arriving is in
                // flight: it stays here until its body is in (then a worker serves it),
                // so a stalled upload holds no worker that ready requests need. An answer
                // still being written is in flight too.
                if conn.has_unsent() || conn.awaiting_body() {
                    self.return_untouched(token, conn);
                } else {
                    self.close(token, conn, false);
                }
            }
        }
        self.take_back();
        self.jobs.notify();
        while self.open > 0 && Instant::now() < deadline {
            let mut events = std::mem::replace(&mut self.events, Events::with_capacity(0));
            let _ = self.poll.poll(&mut events, Some(TICK));
            // Only answers still being written, bodies still arriving and queued requests
            // (whose client may leave) need the events now.
            self.turned = Instant::now();
            for event in events.iter() {
                let token = event.token().0;
                match self.slots.get(token) {
                    Some(Slot::Live {
                        conn: Some(conn), ..
                    }) => {
                        if conn.has_unsent() {
                            self.write_unsent(token);
                        } else if conn.awaiting_body() {
                            self.read(token, event.is_read_closed());
                        }
                    }
                    Some(Slot::Live { conn: None, .. }) => self.stirred(token),
                    _ => {}
                }
            }
            self.events = events;
            self.take_back();
            self.jobs.notify();
            supervise();
            // Answers still being written keep their write timeout.
            let now = Instant::now();
            if now >= self.next_tick {
                self.tick(now);
                self.next_tick = now + TICK;
            }
        }
        if self.open > 0 {
            tracing::warn!(
                connections = self.open,
                "shutdown deadline passed; closing connections still being served"
            );
            for slot in &mut self.slots {
                if let Slot::Live { stream, conn, .. } = slot {
                    crate::transport::abort(stream);
                    // Dropped now, not when the last stuck worker lets the loop go, so what
                    // they held is told before `serve` returns: a request whose body was
                    // still arriving, answers still being written (aborted in their drop).
                    if let Some(mut conn) = conn.take() {
                        if conn.holds_unserved_request(&self.shared) {
                            conn.cut_unserved(&self.shared, StatusCode::SERVICE_UNAVAILABLE);
                        }
                    }
                }
            }
            // Requests still queued would reach a gateway after `serve` returned: drop them
            // (their sockets are cut already), each counted as cut.
            let mut dropped = 0;
            for job in self.ready.drain(..).chain(self.jobs.discard()) {
                job.conn
                    .cut_unserved(&self.shared, StatusCode::SERVICE_UNAVAILABLE);
                dropped += 1;
            }
            self.shared.stats.queued.fetch_sub(dropped, Relaxed);
            // Cut, so no longer open (workers still holding one drop it when they finish).
            self.cut_all = true;
            self.open = 0;
            self.shared.stats.open.store(0, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::bind;
    use crate::Config;
    use std::io::Read;

    /// A loop on a fresh listener, with nobody serving its queue.
    fn lonely_loop() -> (Loop, std::net::SocketAddr) {
        let listener = bind("127.0.0.1:0", 16).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Shared::new(Config::default(), addr);
        let (poll, waker) = listening_poll(&listener, &shared, LISTENER, WAKE).unwrap();
        let jobs = Arc::new(JobQueue::new(8, waker, false));
        let (_, done) = crossbeam_channel::unbounded();
        let linger = Linger::start(Duration::from_secs(1), 16).unwrap();
        (
            Loop::new(poll, listener, &shared, &jobs, done, linger, 64),
            addr,
        )
    }

    /// Turns the loop until it holds `n` open connections (generous deadline).
    fn accept(lp: &mut Loop, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while lp.open < n {
            assert!(Instant::now() < deadline, "the loop never accepted");
            lp.turn(false);
            std::thread::yield_now();
        }
    }

    fn token_of_the_only_connection(lp: &Loop) -> usize {
        let live: Vec<usize> = (lp.slots.iter().enumerate())
            .filter(|(_, slot)| matches!(slot, Slot::Live { .. }))
            .map(|(token, _)| token)
            .collect();
        assert_eq!(live.len(), 1);
        live[0]
    }

    /// Half of a small body, sent: the request's client, once the loop waits for the rest.
    fn half_a_body(lp: &mut Loop, addr: std::net::SocketAddr, cork: bool) -> TcpStream {
        use std::io::Write;
        let mut client = TcpStream::connect(addr).unwrap();
        socket2::SockRef::from(&client).set_cork(cork).unwrap();
        client
            .write_all(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabcde")
            .unwrap();
        if cork {
            // Held back until the client's end, which goes with it.
            return client;
        }
        accept(lp, 1);
        let token = token_of_the_only_connection(lp);
        let awaiting = |lp: &Loop| matches!(&lp.slots[token], Slot::Live { conn: Some(c), .. } if c.awaiting_body());
        let deadline = Instant::now() + Duration::from_secs(10);
        while !awaiting(lp) {
            assert!(Instant::now() < deadline, "the loop never read the head");
            lp.turn(false);
        }
        client
    }

    #[test]
    fn a_client_reset_while_its_small_body_is_awaited_is_counted_aborted() {
        let (mut lp, addr) = lonely_loop();
        let client = half_a_body(&mut lp, addr, false);
        let deadline = Instant::now() + Duration::from_secs(10);
        socket2::SockRef::from(&client)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(client);
        while lp.open > 0 {
            assert!(Instant::now() < deadline, "the loop never saw the reset");
            lp.turn(false);
        }
        let stats = &lp.shared.stats;
        assert_eq!(stats.aborted_requests.load(Relaxed), 1);
        assert_eq!(
            stats.served.load(Relaxed) + stats.rejected_requests.load(Relaxed),
            0
        );
    }

    /// A lonely loop with a cap of one connection, and that connection, mid-head (so not
    /// idle: no newcomer takes its place).
    fn at_a_cap_of_one() -> (Loop, std::net::SocketAddr, TcpStream) {
        use std::io::Write;
        let (mut lp, addr) = lonely_loop();
        lp.max_connections = 1;
        let mut first = TcpStream::connect(addr).unwrap();
        first.write_all(b"GET / HT").unwrap();
        accept(&mut lp, 1);
        (lp, addr, first)
    }

    /// The cap warning is throttled to once a second; what it held back when the cap
    /// stopped being hit is still told, at a tick a second later.
    #[test]
    fn the_connection_cap_held_back_in_a_burst_is_told_when_it_ends() {
        const WARNING: &str = "connection limit reached";
        let ((), log) = crate::server::captured_log(|| {
            let (mut lp, addr, first) = at_a_cap_of_one();
            // At the cap: told once, then held for the rest of the second.
            let _newcomer = TcpStream::connect(addr).unwrap();
            for _ in 0..3 {
                lp.accepting = true;
                lp.turn(false);
            }
            assert!(lp.at_cap.held_for().is_some(), "nothing was held back");
            // The cap is no longer hit once `first` is gone and the newcomer is in.
            drop(first);
            let deadline = Instant::now() + Duration::from_secs(10);
            while lp.at_cap.held_for().is_some() {
                assert!(
                    Instant::now() < deadline,
                    "the held warnings were never told"
                );
                lp.turn(true);
            }
        });
        let lines = log.lines().filter(|line| line.contains(WARNING)).count();
        assert_eq!(lines, 2, "{log}");
        assert!(
            crate::server::tests::times_told(&log, WARNING) >= 3,
            "{log}"
        );
    }

    /// At the cap with nobody waiting to come in, the loop does not go on warning (it
    /// counted its turns at the cap, ten a second from the timer alone).
    #[test]
    fn the_connection_cap_is_not_told_again_while_nobody_waits() {
        const WARNING: &str = "connection limit reached";
        let ((), log) = crate::server::captured_log(|| {
            let (mut lp, _, _only) = at_a_cap_of_one();
            let quiet = Instant::now();
            while quiet.elapsed() < Duration::from_millis(1500) {
                lp.turn(true);
            }
            assert!(
                lp.at_cap.held_for().is_none(),
                "turns at the cap were counted"
            );
        });
        let lines = log.lines().filter(|line| line.contains(WARNING)).count();
        assert!(lines <= 1, "{log}");
    }

    /// A client that ends its side before the rest of a small body the loop waits for
    /// (whether the end comes later or with the head) gets no gateway call: counted
    /// aborted, as after a reset, and nothing is queued.
    #[test]
    fn a_client_ending_its_side_mid_body_is_counted_aborted_and_not_queued() {
        let (mut lp, addr) = lonely_loop();
        for corked in [false, true] {
            let client = half_a_body(&mut lp, addr, corked);
            client.shutdown(std::net::Shutdown::Write).unwrap();
            let aborted = lp.shared.stats.aborted_requests.load(Relaxed);
            let deadline = Instant::now() + Duration::from_secs(10);
            while lp.shared.stats.aborted_requests.load(Relaxed) == aborted {
                assert!(Instant::now() < deadline, "the request was never counted");
                lp.turn(false);
            }
            assert_eq!(lp.open, 0, "corked: {corked}");
            assert!(
                lp.jobs.is_empty() && lp.ready.is_empty(),
                "corked: {corked}"
            );
        }
        let stats = &lp.shared.stats;
        assert_eq!(stats.aborted_requests.load(Relaxed), 2);
        assert_eq!(
            stats.served.load(Relaxed) + stats.rejected_requests.load(Relaxed),
            0
        );
    }

    #[test]
    fn a_panic_on_one_connection_closes_it_and_the_loop_goes_on() {
        let (mut lp, addr) = lonely_loop();
        // A panic with the connection in its slot, and one after it was taken out (it is
        // dropped in the unwind, and only its slot and socket remain).
        for take_it_out in [false, true] {
            let mut client = TcpStream::connect(addr).unwrap();
            client
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            accept(&mut lp, 1);
            let token = token_of_the_only_connection(&lp);
            lp.isolated(token, |lp| {
                let _conn = take_it_out.then(|| lp.take(token));
                panic!("a bug in head parsing");
            });
            assert_eq!(lp.open, 0, "the connection stayed open");
            assert_eq!(lp.shared.stats.open.load(Relaxed), 0);
            assert!(matches!(lp.slots[token], Slot::Vacant { .. }));
            // The client sees its connection end, and the next one is accepted.
            let mut rest = Vec::new();
            assert_eq!(client.read_to_end(&mut rest).unwrap_or(0), 0);
        }
    }
}
