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

mod admit;
mod shutdown;
mod timeouts;

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
use crate::transport::Socket;
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
            // In a shutdown a connection between requests closes. One with a request
            // pipelined behind the answer, its head in and its small body still arriving,
            // is in flight: as at the start of the shutdown, it waits here for the rest of
            // its body (then a worker serves it), or is cut, counted, at the deadline.
            Next::KeepAlive if self.shared.is_shutting_down() && !conn.awaiting_body() => {
                self.close(token, conn, unread)
            }
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
                // In a shutdown, a request already read is served, as the last one; one
                // whose small body is still arriving waits here for it (the read tells),
                // as at the start of the shutdown, and takes no worker meanwhile.
                (Next::KeepAlive, head)
                    if !self.shared.is_shutting_down() || head == Head::Ready =>
                {
                    self.park(token, conn);
                    // The next request may have arrived meanwhile.
                    self.read(token, false);
                }
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
}

#[cfg(test)]
mod tests;
