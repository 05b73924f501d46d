//! Pool workers: each takes a connection with a complete request head, serves it (and any
//! request pipelined behind it), and hands the connection back to the event loop. An idle
//! worker with no job takes a turn at the loop if nobody has it, else sleeps.
//!
//! A gateway that runs past the request timeout is reported, and a replacement worker is
//! started so the pool keeps its capacity; the stuck worker leaves the pool when its gateway
//! finally returns. A thread cannot be killed, so this is the most a server can do.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use http::{Method, Uri};
use parking_lot::Mutex;

use super::event_loop::{stamp, Loop, Readiness, CLIENT_GONE, TICK};
use super::queue::{JobQueue, Sleeper};
use crate::conn::{Conn, Ctx, Next};
use crate::server::Shared;
use crate::transport::Socket;
use crate::Gateway;

/// A connection travelling between the event loop and a worker.
pub(crate) struct Job {
    pub(crate) token: usize,
    pub(crate) conn: Box<Conn<Socket>>,
    pub(crate) readiness: Readiness,
    /// The client had ended its side when its request was queued: it wants the answer
    /// all the same (a half-close after the request).
    pub(crate) ended: bool,
}

/// A connection coming back from a worker, and what to do with it.
pub(crate) struct Done {
    pub(crate) token: usize,
    pub(crate) conn: Box<Conn<Socket>>,
    pub(crate) next: Next,
}

/// How long after its request began to arrive a client may end its side and still be
/// taken to half-close (it wants the answer: `printf ... | nc -N` ends its side right after
/// the request). A client whose end came later, while its request waited in the queue, is
/// taken to have given up (as a client does whose own timeout ran out).
const HALF_CLOSE_WITHIN: Duration = Duration::from_secs(1);

/// Whether the client of a queued request left while it waited: the request is then
/// dropped unserved rather than given to the gateway, as nginx and HAProxy drop a request
/// whose client closed, so that an overloaded pool spends its workers on clients still
/// waiting. Costs nothing unless the loop saw the connection stir while the request
/// waited, and one non-blocking peek then.
fn abandoned(conn: &Conn<Socket>, readiness: &Readiness, ended: bool, epoch: Instant) -> bool {
    let stirred = readiness.load(SeqCst);
    !ended
        && stirred != 0
        && conn.head_started.is_some_and(|started| {
            let sent = stamp(epoch, started);
            stirred.saturating_sub(sent) >= HALF_CLOSE_WITHIN.as_nanos() as u64
        })
        && conn.io.peer_ended()
}

thread_local! {
    /// The stuck clock of the pool worker running on this thread, for [`crate::waiting`].
    static CLOCK: std::cell::RefCell<Option<Arc<Busy>>> = const { std::cell::RefCell::new(None) };
}

/// Runs `wait` with the stuck clock of this thread's pool worker (if it is one) stopped.
pub(crate) fn untimed_here<R>(wait: impl FnOnce() -> R) -> R {
    let clock = CLOCK.with(|c| c.borrow().clone());
    Busy::untimed(clock.as_deref(), wait)
}

/// What a worker is serving right now, for stuck-request reports. The clock runs only while
/// the gateway's own code does (its call, and making each piece of a streamed body), not
/// while a response waits on a slow client: that is bounded by the write timeout instead.
#[derive(Debug)]
pub(crate) struct Busy {
    current: Mutex<Option<(Method, Uri)>>,
    /// When the gateway's code began its current run, in nanoseconds after `epoch`, plus
    /// one; zero while no gateway code runs; [`STARTED`] until a check first sees it.
    running_since: AtomicU64,
    epoch: Instant,
    /// The current request was reported stuck.
    reported: AtomicBool,
    /// A replacement was started for this worker: it leaves the pool when it gets free.
    replaced: AtomicBool,
    /// The slot of the connection the worker is serving ([`NOT_SERVING`] between jobs).
    serving: AtomicUsize,
    /// Since when the worker has been sending a streamed body (its pieces, and its waits
    /// for the client to take them), in nanoseconds after `epoch`, plus one; zero if not;
    /// [`STARTED`] until a check first sees it.
    streaming_since: AtomicU64,
}

const NOT_SERVING: usize = usize::MAX;

/// A clock started without a reading of the time: the first check that sees it stamps it
/// with its own reading. A worker reads no clock per request or per streamed piece, and
/// a clock is never ahead, only behind by up to a check's interval (a tick, 100 ms), so a
/// gateway is never reported stuck before its time.
const STARTED: u64 = u64::MAX;

impl Default for Busy {
    fn default() -> Busy {
        Busy {
            current: Mutex::new(None),
            running_since: AtomicU64::new(0),
            epoch: Instant::now(),
            reported: AtomicBool::new(false),
            replaced: AtomicBool::new(false),
            serving: AtomicUsize::new(NOT_SERVING),
            streaming_since: AtomicU64::new(0),
        }
    }
}

/// Marks a worker as sending a streamed body while alive (see [`Busy::streaming`]).
pub(crate) struct Streaming<'a>(Option<&'a Busy>);

impl Drop for Streaming<'_> {
    fn drop(&mut self) {
        if let Some(clock) = self.0 {
            clock.streaming_since.store(0, Relaxed);
        }
    }
}

impl Busy {
    /// A request begins, and with it the gateway's call.
    pub(crate) fn begin(&self, request: (Method, Uri)) {
        self.reported.store(false, Relaxed);
        *self.current.lock() = Some(request);
        self.resume();
    }

    /// Whether the current request was reported stuck already.
    pub(crate) fn was_reported(&self) -> bool {
        self.reported.load(Relaxed)
    }

    /// The current request (a resumed stream's) was reported stuck on an earlier turn.
    pub(crate) fn mark_reported(&self) {
        self.reported.store(true, Relaxed);
    }

    /// A copy of the request being served (for a log line).
    pub(crate) fn request(&self) -> Option<(Method, Uri)> {
        self.current.lock().clone()
    }

    /// The request being served, taken for its access line once its answer is out: no
    /// more of the gateway's code runs for it, so there is nothing left to report.
    pub(crate) fn take_request(&self) -> Option<(Method, Uri)> {
        self.current.lock().take()
    }

    /// The gateway's code runs again (it makes the next piece of its body).
    pub(crate) fn resume(&self) {
        self.running_since.store(STARTED, Relaxed);
    }

    /// Now, as the clocks store it: nanoseconds after `epoch`, plus one (zero is "not
    /// running").
    fn stamp(&self) -> u64 {
        stamp(self.epoch, Instant::now())
    }

    /// How long ago a clock was started, `None` if it is not running. A clock seen for the
    /// first time since it started ([`STARTED`]) is stamped now: it has run for no time yet,
    /// as far as the checks can tell.
    fn running_for(&self, clock: &AtomicU64) -> Option<Duration> {
        let since = match clock.load(Relaxed) {
            0 => return None,
            STARTED => {
                // A clock stopped (or stopped and started again) meanwhile is left as it is
                // or stamped for its new run, which began before this reading too.
                let _ = clock.compare_exchange(STARTED, self.stamp(), Relaxed, Relaxed);
                return Some(Duration::ZERO);
            }
            stamp => stamp - 1,
        };
        Some(
            self.epoch
                .elapsed()
                .saturating_sub(Duration::from_nanos(since)),
        )
    }

    /// The gateway's code has returned (with its response, or a piece of its body).
    pub(crate) fn pause(&self) {
        self.running_since.store(0, Relaxed);
    }

    /// Runs `work`, the gateway's code, with `clock` going (if there is one).
    pub(crate) fn timed<R>(clock: Option<&Busy>, work: impl FnOnce() -> R) -> R {
        if let Some(clock) = clock {
            clock.resume();
        }
        let result = work();
        if let Some(clock) = clock {
            clock.pause();
        }
        result
    }

    /// Runs `wait`, a wait inside the gateway's code (for the client, or through
    /// [`crate::waiting`]), with `clock` stopped; a clock that was running starts afresh
    /// after it, one that was not (a nested wait) stays stopped.
    pub(crate) fn untimed<R>(clock: Option<&Busy>, wait: impl FnOnce() -> R) -> R {
        let running = clock.filter(|c| c.running_since.load(Relaxed) != 0);
        if let Some(clock) = running {
            clock.pause();
        }
        let result = wait();
        if let Some(clock) = running {
            clock.resume();
        }
        result
    }

    /// The worker of `clock` (if any) sends a streamed body until the guard drops: until the
    /// client falls behind (the event loop then sends the rest of a file, and a reader or
    /// an iterator parks), or, for a stream that finds no parking place, until the client
    /// has taken the last piece.
    pub(crate) fn streaming(clock: Option<&Busy>) -> Streaming<'_> {
        if let Some(clock) = clock {
            clock.streaming_since.store(STARTED, Relaxed);
        }
        Streaming(clock)
    }

    /// Whether the worker has been sending one streamed body for `at_least`.
    fn streamed_for(&self, at_least: Duration) -> bool {
        self.running_for(&self.streaming_since)
            .is_some_and(|streamed| streamed >= at_least)
    }

    fn end(&self) {
        self.pause();
        *self.current.lock() = None;
    }

    /// Whether the gateway's code has run past `timeout` without returning: `Some(true)`
    /// the first time in a request (it is reported then), `Some(false)` after that.
    fn check(&self, timeout: Duration) -> Option<bool> {
        // The clock is read holding the request: a request that ends and a next one that
        // begins meanwhile cannot be taken for one stuck since the first began.
        let current = self.current.lock();
        let (method, uri) = current.as_ref()?;
        let elapsed = self.running_for(&self.running_since)?;
        if elapsed < timeout {
            return None;
        }
        let first = !self.reported.swap(true, Relaxed);
        if first {
            tracing::error!(%method, target = %uri, elapsed_ms = elapsed.as_millis() as u64,
                "gateway stuck past the request timeout");
        }
        Some(first)
    }
}

/// A worker's way out of the pool, taken however it leaves: a worker unwound by a panic
/// (a gateway's are caught before they reach it, so one in the server's own code) is
/// counted gone and replaced, so a bug costs a connection, not the pool's capacity.
struct Leaving<'a, G: Gateway> {
    workers: &'a Arc<Workers<G>>,
    busy: &'a Arc<Busy>,
}

impl<G: Gateway> Drop for Leaving<'_, G> {
    fn drop(&mut self) {
        let workers = self.workers;
        if std::thread::panicking() {
            tracing::error!("a worker thread panicked; its connection is closed");
            // The connection it served went down with it: the client is told by its end.
            let token = self.busy.serving.swap(NOT_SERVING, Relaxed);
            if token != NOT_SERVING {
                workers.shared.stats.active.fetch_sub(1, Relaxed);
                workers.lp.lock().write_off(token);
            }
            // Read holding its request, as `supervise` decides holding it; the request is
            // over, so no later check can take this worker for a stuck one.
            let replaced = {
                let mut request = self.busy.current.lock();
                request.take();
                self.busy.pause();
                self.busy.replaced.load(Relaxed)
            };
            if replaced {
                // Its replacement is running already and keeps the capacity.
                workers.extra.fetch_sub(1, Relaxed);
            } else if !workers.shared.is_shutting_down() {
                if let Err(e) = workers.spawn() {
                    tracing::error!(error = %e, "cannot start a worker in place of one that panicked");
                }
            }
        }
        workers.forget(self.busy);
        workers.shared.stats.workers.fetch_sub(1, Relaxed);
    }
}

/// The pool: its workers, the event loop they take turns at, and what supervises them.
pub(crate) struct Workers<G> {
    lp: Mutex<Loop>,
    gateway: Arc<G>,
    shared: Arc<Shared>,
    jobs: Arc<JobQueue>,
    done: Sender<Done>,
    waker: Arc<mio::Waker>,
    busy: Mutex<Vec<Arc<Busy>>>,
    /// Held while stuck workers are checked.
    supervising: Mutex<()>,
    /// Every worker was found held by a streamed body at the last check (told once).
    all_streaming: AtomicBool,
    /// Replacements started for stuck workers and not yet retired.
    extra: AtomicUsize,
    size: usize,
    /// Turns taken at the loop and jobs taken from the queue: the keeper's sign of life.
    progress: AtomicUsize,
    /// The keeper checks for progress every [`WATCH`] (on one CPU, while there is work).
    watching: AtomicBool,
}

/// How long, on one CPU, the loop or queued work may wait behind a gateway before the
/// keeper wakes an idle worker for it.
const WATCH: Duration = Duration::from_millis(1);
/// Watch checks with nothing waiting after which the keeper stops watching.
const QUIET_CHECKS: u32 = 100;
/// How long every worker must have been sending a streamed body before the pool warns
/// that new requests wait for one.
const HELD_BY_STREAMS: Duration = Duration::from_secs(1);

impl<G: Gateway> Workers<G> {
    pub(crate) fn start(
        size: usize,
        gateway: Arc<G>,
        shared: Arc<Shared>,
        lp: Loop,
        jobs: Arc<JobQueue>,
        done: Sender<Done>,
        waker: Arc<mio::Waker>,
    ) -> std::io::Result<Arc<Self>> {
        let workers = Arc::new(Workers {
            lp: Mutex::new(lp),
            gateway,
            shared,
            jobs,
            done,
            waker,
            busy: Mutex::new(Vec::new()),
            supervising: Mutex::new(()),
            all_streaming: AtomicBool::new(false),
            extra: AtomicUsize::new(0),
            progress: AtomicUsize::new(0),
            watching: AtomicBool::new(false),
            size,
        });
        for _ in 0..size {
            workers.spawn()?;
        }
        Ok(workers)
    }

    fn spawn(self: &Arc<Self>) -> std::io::Result<()> {
        let busy = Arc::new(Busy::default());
        self.busy.lock().push(busy.clone());
        let workers = self.clone();
        let own = busy.clone();
        let spawned = std::thread::Builder::new()
            .name("sgi-worker".into())
            .spawn(move || workers.run(&own));
        match &spawned {
            Ok(_) => {
                self.shared.stats.workers.fetch_add(1, Relaxed);
            }
            // No thread: no entry left behind for the checks to visit.
            Err(_) => self.forget(&busy),
        }
        spawned.map(drop)
    }

    /// Takes a worker that is gone (or never started) off the list the stuck checks visit.
    fn forget(&self, busy: &Arc<Busy>) {
        self.busy.lock().retain(|b| !Arc::ptr_eq(b, busy));
    }

    fn run(self: &Arc<Self>, busy: &Arc<Busy>) {
        let ctx = Ctx {
            gateway: &*self.gateway,
            shared: &self.shared,
            worker: Some(busy),
        };
        let _batch = super::sched::Batch::enter(self.shared.config.batch_scheduling);
        let _leaving = Leaving {
            workers: self,
            busy,
        };
        CLOCK.with(|c| *c.borrow_mut() = Some(busy.clone()));
        let me = Sleeper::current();
        let mut woken = false;
        loop {
            if std::mem::take(&mut woken) {
                // On its way no longer: taking a job with more behind it may wake the next
                // worker, and a gateway or a turn at the loop may block from here on.
                self.jobs.searched();
            }
            if let Some(job) = self.jobs.take() {
                self.progress.fetch_add(1, Relaxed);
                self.attend_loop();
                if self.serve(job, &ctx, busy) {
                    continue;
                }
                break;
            }
            if self.lead() {
                continue;
            }
            let vacant = || !self.lp.is_locked() && !self.shared.is_shutting_down();
            match self.jobs.sleep(&me, vacant) {
                Some(was_woken) => woken = was_woken,
                None => break,
            }
        }
    }

    /// Serves a job and hands its connection back; false when this worker leaves the pool.
    fn serve(&self, job: Job, ctx: &Ctx<'_, G>, busy: &Busy) -> bool {
        let stats = &self.shared.stats;
        let Job {
            token,
            mut conn,
            readiness,
            ended,
        } = job;
        stats.queued.fetch_sub(1, Relaxed);
        stats.active.fetch_add(1, Relaxed);
        busy.serving.store(token, Relaxed);
        let next = if abandoned(&conn, &readiness, ended, self.shared.epoch) {
            conn.cut_unserved(&self.shared, CLIENT_GONE);
            Next::Close
        } else {
            self.serve_conn(&mut conn, ctx)
        };
        // Answers held back to go out with the next one leave before the connection does
        // (the next request may wait in the loop for its body).
        let next = match conn.flush_or_leave() {
            Ok(()) => next,
            Err(_) => {
                conn.cut_pipelined(&self.shared);
                Next::Close
            }
        };
        // Bytes the loop will not hear of (no new readiness event), or answers it must
        // write, need it woken.
        let more = conn.may_have_more() || conn.has_unsent();
        busy.serving.store(NOT_SERVING, Relaxed);
        busy.end();
        stats.active.fetch_sub(1, Relaxed);
        let done = Done { token, conn, next };
        // Nobody is at the loop (on a busy core, the usual case: this worker led it last):
        // the connection goes straight back, with no wake-up. Not once shutdown has begun
        // (checked holding the loop: the keeper raises the flag before it takes the loop
        // to shut down): past the deadline the loop has written every connection off and
        // must not be handed one back. Nor from a worker about to leave the pool, which
        // would not serve a request the loop found on the connection meanwhile.
        let lp = self
            .lp
            .try_lock()
            .filter(|_| !self.shared.is_shutting_down() && !busy.replaced.load(Relaxed));
        if let Some(mut lp) = lp {
            lp.hand_back(done);
        } else if !self.give_back(done, readiness, more) {
            return false;
        }
        if busy.replaced.load(Relaxed) {
            // This worker was replaced while stuck; the replacement keeps the capacity.
            self.extra.fetch_sub(1, Relaxed);
            return false;
        }
        true
    }

    /// Serves the request a job brought, and any request pipelined behind it.
    fn serve_conn(&self, conn: &mut Conn<Socket>, ctx: &Ctx<'_, G>) -> Next {
        loop {
            let next = if conn.stream_waits() {
                // Queued for its parked stream, whose client made room: its next pieces.
                conn.resume_stream(&self.shared, ctx.worker)
            } else {
                conn.serve(ctx)
            };
            #[cfg(test)]
            tests::panic_if_asked(self.shared.local_addr.port());
            // A pipelined request is served here, without a round trip through the loop,
            // unless the client is slow to take the answers (they wait in the loop).
            if next != Next::KeepAlive || conn.has_unsent() || !conn.next_pipelined(&self.shared) {
                return next;
            }
        }
    }

    /// Hands a connection back through the channel to the loop (whoever takes the next
    /// turn picks it up), and wakes the loop if it has to act; false if the loop is gone.
    fn give_back(&self, done: Done, readiness: Readiness, more: bool) -> bool {
        let next = done.next;
        if self.done.send(done).is_err() {
            return false;
        }
        // A closing connection needs the loop now; a keep-alive one only if it has bytes
        // to read already or turned readable meanwhile (else its next request's event
        // wakes the loop).
        std::sync::atomic::fence(SeqCst);
        if next != Next::KeepAlive
            || more
            || readiness.load(SeqCst) != 0
            || self.shared.is_shutting_down()
        {
            let _ = self.waker.wake();
        }
        true
    }

    /// Before a gateway runs (and may block), makes sure new requests will not wait for
    /// it. With more than one CPU: if nobody is at the loop, wakes an idle worker to take
    /// it over (it runs beside this one). On one CPU that worker could run only once this
    /// one blocks, and usually by then this one is back at the loop, so the wake-up and
    /// two context switches per request would buy nothing: the keeper watches instead, and
    /// wakes a worker only when nothing has moved for [`WATCH`].
    fn attend_loop(&self) {
        if self.shared.is_shutting_down() {
            // The loop is the keeper's now, busy with the shutdown: jobs it queued are
            // shared out here.
            if !self.jobs.is_empty() {
                self.jobs.notify();
            }
            return;
        }
        if !self.jobs.eager {
            if !self.watching.load(Relaxed) && !self.watching.swap(true, SeqCst) {
                self.shared.unpark_keeper();
            }
        } else if !self.lp.is_locked() {
            // The fence in `notify` pairs with the one in `JobQueue::sleep`: a worker
            // falling asleep either sees the loop vacant or is woken here.
            self.jobs.notify();
        }
    }

    /// Takes a turn at the event loop unless someone has it (or shutdown has begun): polls
    /// and queues what is ready, which this worker then serves. False if it did not get
    /// the loop.
    fn lead(self: &Arc<Self>) -> bool {
        if self.shared.is_shutting_down() {
            return false;
        }
        let Some(mut lp) = self.lp.try_lock() else {
            return false;
        };
        self.progress.fetch_add(1, Relaxed);
        let ticked = lp.turn(true);
        drop(lp);
        if ticked {
            self.supervise();
        }
        true
    }

    /// The keeper, on the thread that called `serve`. While every worker is busy (nobody
    /// at the loop for a tick), it takes the loop's turn itself, so timers, accepting and
    /// stuck-worker checks go on. On one CPU, while there is work, it also checks every
    /// [`WATCH`] that the loop or queued work is not waiting behind a gateway that blocks,
    /// and wakes an idle worker if so. Then it runs the graceful shutdown; returns a poll
    /// failure that ended the loop, if any.
    pub(crate) fn keep(self: &Arc<Self>) -> std::io::Result<()> {
        let mut last = self.progress.load(Relaxed);
        let mut quiet = 0;
        let mut tried = Instant::now();
        // The loop has nobody at it, or jobs wait for a worker.
        let work_waits = || !self.lp.is_locked() || !self.jobs.is_empty();
        while !self.shared.is_shutting_down() {
            let watching = self.watching.load(SeqCst);
            std::thread::park_timeout(if watching { WATCH } else { TICK });
            if watching {
                let progress = self.progress.load(Relaxed);
                let stalled = std::mem::replace(&mut last, progress) == progress;
                let waiting = work_waits();
                if stalled && waiting {
                    self.jobs.notify();
                }
                quiet = if waiting { 0 } else { quiet + 1 };
                if quiet >= QUIET_CHECKS {
                    // The next gateway call asks again. One that began meanwhile left the
                    // loop vacant: then watch on.
                    self.watching.store(false, SeqCst);
                    std::sync::atomic::fence(SeqCst);
                    if work_waits() {
                        self.watching.store(true, SeqCst);
                    }
                    quiet = 0;
                }
            }
            // The loop's turn, when no worker took one for a tick. The lock is tried a
            // few times a tick at most, as a worker that finds it taken goes to sleep.
            if tried.elapsed() < TICK / 2 {
                continue;
            }
            tried = Instant::now();
            let Some(mut lp) = self.lp.try_lock() else {
                continue;
            };
            let ticked = lp.tick_due() && !self.shared.is_shutting_down() && lp.turn(false);
            drop(lp);
            // A worker that came for the loop meanwhile found it taken and went to sleep;
            // wake one for the loop (and for any jobs this turn queued).
            self.jobs.notify();
            if ticked {
                self.supervise();
            }
        }
        let mut lp = self.lp.lock();
        lp.shut_down(|| self.supervise());
        match lp.failed.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Stops the loop's lingering thread (after shutdown).
    pub(crate) fn stop_linger(&self) {
        self.lp.lock().stop_linger();
    }

    /// Reports stuck gateways and replaces their workers, up to as many again as the pool.
    /// A stuck worker that cannot be replaced now (every replacement in use, or no thread to
    /// be had) is tried again at every later check, until it is replaced or gets free.
    pub(crate) fn supervise(self: &Arc<Self>) {
        // One check at a time (a leader and the keeper may both come from a turn): two
        // would both replace the same stuck worker. The one that finds a check running
        // leaves it to that one.
        let Some(_checking) = self.supervising.try_lock() else {
            return;
        };
        let timeout = self.shared.config.timeouts.request;
        let (stuck, held): (Vec<(Arc<Busy>, bool)>, _) = {
            let busy = self.busy.lock();
            let stuck = busy
                .iter()
                .filter_map(|b| Some((b.clone(), b.check(timeout)?)))
                .collect();
            let held = busy.iter().all(|b| b.streamed_for(HELD_BY_STREAMS));
            (stuck, held.then_some(busy.len()))
        };
        self.tell_if_held_by_streams(held);
        for (busy, first) in stuck {
            if first {
                self.shared.stats.stuck();
            }
            // Decided holding the worker's request: one whose gateway returns meanwhile
            // (`end` takes the same lock, before the worker looks at `replaced`) is either
            // replaced before it looks, or found done here and not replaced.
            let request = busy.current.lock();
            if request.is_none() || !busy.reported.load(Relaxed) || busy.replaced.load(Relaxed) {
                // Done, or on to a request of its own since the check (`begin` clears
                // `reported` before it takes the lock), or replaced already.
                continue;
            }
            if self.extra.load(Relaxed) >= self.size {
                if first {
                    tracing::error!(
                        "every replacement worker is in use; the pool is running short"
                    );
                }
                continue;
            }
            self.extra.fetch_add(1, Relaxed);
            match self.spawn() {
                Ok(()) => busy.replaced.store(true, Relaxed),
                Err(e) => {
                    self.extra.fetch_sub(1, Relaxed);
                    if first {
                        tracing::error!(error = %e, "cannot start a replacement worker");
                    }
                }
            }
        }
    }
}

impl<G> Workers<G> {
    /// Warns, once each time it happens, that every worker is held by a streamed body: a
    /// reader or iterator holds its worker while the client keeps up, and until the client
    /// has taken all of it once `Config::parked_streams` streams are parked (a file, while
    /// the client keeps up), so slow clients or endless streams can leave none for new
    /// requests, which then wait.
    fn tell_if_held_by_streams(&self, held: Option<usize>) {
        let Some(workers) = held else {
            self.all_streaming.store(false, Relaxed);
            return;
        };
        if !self.all_streaming.swap(true, Relaxed) {
            tracing::warn!(
                workers,
                "every worker has been sending a streamed response for over a second (slow \
                 clients, or long streams); new requests wait until one is done. A buffering \
                 proxy in front, or more workers, keeps the pool free"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Body, Config, PoolServer, Request, Response, Timeouts};
    use std::io::{Read, Write};
    use std::net::TcpStream;

    /// The ports of the pools whose workers are to panic in the server's own code (after
    /// serving a request), and of those that did. Keyed by port: tests run side by side.
    static PANIC_PORTS: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    static PANICKED: Mutex<Vec<u16>> = Mutex::new(Vec::new());

    pub(super) fn panic_if_asked(port: u16) {
        if PANIC_PORTS.lock().contains(&port) {
            PANICKED.lock().push(port);
            panic!("a panic in the worker's own code, injected by a test");
        }
    }

    fn panic_on(port: u16, wanted: bool) {
        let mut ports = PANIC_PORTS.lock();
        ports.retain(|&p| p != port);
        if wanted {
            ports.push(port);
        }
    }

    fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn get(addr: std::net::SocketAddr) -> TcpStream {
        let mut client = TcpStream::connect(addr).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        client
    }

    #[test]
    fn a_worker_unwound_while_serving_closes_its_connection_and_is_replaced() {
        // One worker: the next request is served only if another took its place.
        let server = PoolServer::bind_with("127.0.0.1:0", Config::default().workers(1)).unwrap();
        let (addr, handle) = (server.local_addr(), server.handle());
        let serving = std::thread::spawn(move || {
            server.serve(|_req: Request<'_>| Response::new(Body::from("hi")))
        });
        panic_on(addr.port(), true);
        let mut client = get(addr);
        // The connection went down with the worker: an orderly end, not a hang.
        let mut rest = Vec::new();
        assert!(client.read_to_end(&mut rest).is_ok());
        assert!(PANICKED.lock().contains(&addr.port()));
        wait_until("the slot is freed", || handle.stats().open_connections == 0);
        panic_on(addr.port(), false);
        let mut client = get(addr);
        let mut answer = [0u8; 512];
        let n = client.read(&mut answer).unwrap();
        assert!(answer[..n].starts_with(b"HTTP/1.1 200"));
        wait_until("nothing runs", || {
            let stats = handle.stats();
            stats.open_connections == 1 && stats.busy_workers == 0
        });
        handle.shutdown();
        serving.join().unwrap().unwrap();
    }

    #[test]
    fn a_worker_unwound_during_shutdown_leaves_no_connection_counted() {
        // The keeper holds the loop through the shutdown: the unwound worker can only
        // write its connection off once the deadline has written off every one.
        let timeouts = Timeouts {
            shutdown: Duration::from_millis(300),
            ..Timeouts::default()
        };
        let config = Config::default().workers(2).timeouts(timeouts);
        let server = PoolServer::bind_with("127.0.0.1:0", config).unwrap();
        let (addr, handle) = (server.local_addr(), server.handle());
        let (entered_tx, entered) = std::sync::mpsc::channel::<()>();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (entered_tx, released) = (Mutex::new(entered_tx), Mutex::new(released));
        let serving = std::thread::spawn(move || {
            server.serve(move |_req: Request<'_>| {
                entered_tx.lock().send(()).unwrap();
                let _ = released.lock().recv();
                Response::new(Body::from("hi"))
            })
        });
        let mut client = get(addr);
        entered.recv_timeout(Duration::from_secs(20)).unwrap();
        let mut idle = TcpStream::connect(addr).unwrap();
        idle.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        wait_until("both are open", || handle.stats().open_connections == 2);
        panic_on(addr.port(), true);
        handle.shutdown();
        // The idle one's end: the keeper has the loop, for the shutdown.
        let _ = idle.read_to_end(&mut Vec::new());
        release.send(()).unwrap();
        serving.join().unwrap().unwrap();
        wait_until("every worker has left", || handle.stats().workers == 0);
        panic_on(addr.port(), false);
        assert!(PANICKED.lock().contains(&addr.port()), "no worker panicked");
        assert_eq!(handle.stats().open_connections, 0);
        let _ = client.read_to_end(&mut Vec::new());
    }

    fn running(clock: &Busy) -> bool {
        clock.running_since.load(Relaxed) != 0
    }

    #[test]
    fn a_wait_stops_the_clock_and_a_nested_wait_does_not_restart_it() {
        let clock = Busy::default();
        Busy::timed(Some(&clock), || {
            assert!(running(&clock));
            Busy::untimed(Some(&clock), || {
                assert!(!running(&clock));
                Busy::untimed(Some(&clock), || assert!(!running(&clock)));
                assert!(!running(&clock), "the inner wait restarted the clock");
            });
            assert!(running(&clock), "the clock runs again after the wait");
        });
        assert!(!running(&clock));
    }
}
