//! The queue of ready connections between the event loop and the workers.
//!
//! Jobs travel through a bounded queue under a lock (held for a push or a pop only, and
//! skipped when the queue is seen empty); idle workers sleep here, without
//! spinning. With more than one CPU, a worker about to run a gateway wakes an idle one if
//! nobody is at the loop, and a worker that takes a job with more behind it wakes the next,
//! so neither queued work nor the loop waits behind a gateway that blocks (on one CPU the
//! keeper does this when nothing moves; see `worker`). Two rules keep a busy core from
//! thrashing:
//!
//! - Idle workers wait on a stack and the last to fall asleep is the first woken: its stack
//!   and data are still in the cache, and under light load the same one or two threads do
//!   all the work instead of the whole pool taking turns.
//! - At most one woken worker is on its way at a time ("searching"): until it has looked at
//!   the queue and the loop, whoever else finds queued work leaves it to that one instead
//!   of waking a third. A worker stops searching before it takes a job, so this never
//!   leaves work behind a gateway that blocks.

use std::collections::VecDeque;
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::thread::Thread;

use parking_lot::Mutex;

use super::worker::Job;

/// How a worker is woken from its place on the idle stack.
pub(crate) struct Sleeper {
    thread: Thread,
    woken: AtomicBool,
}

impl Sleeper {
    /// The sleeper for the calling worker thread.
    pub(crate) fn current() -> Arc<Sleeper> {
        Arc::new(Sleeper {
            thread: std::thread::current(),
            woken: AtomicBool::new(false),
        })
    }

    fn wake(&self) {
        self.woken.store(true, SeqCst);
        self.thread.unpark();
    }
}

#[derive(Default)]
struct Idle {
    /// Sleeping workers, the most recent last.
    stack: Vec<Arc<Sleeper>>,
    closed: bool,
}

pub(crate) struct JobQueue {
    queue: Mutex<VecDeque<Job>>,
    /// `queue.len()`, read without the lock.
    len: AtomicUsize,
    idle: Mutex<Idle>,
    /// `idle.stack.len()`, read without the lock to skip it when nobody sleeps.
    sleepers: AtomicUsize,
    /// Workers woken and not yet back at the queue; no second one is woken meanwhile.
    searching: AtomicUsize,
    capacity: usize,
    /// The loop holds jobs that did not fit: wake it when the queue is half empty.
    refill: AtomicBool,
    /// More than one CPU to run on: a worker that takes a job with more behind it wakes
    /// another to share them. On one CPU that would only add context switches; the keeper
    /// wakes a worker when queued work waits behind a gateway that blocks.
    pub(crate) eager: bool,
    loop_waker: Arc<mio::Waker>,
}

impl JobQueue {
    pub(crate) fn new(capacity: usize, loop_waker: Arc<mio::Waker>, eager: bool) -> JobQueue {
        JobQueue {
            queue: Mutex::new(VecDeque::with_capacity(capacity)),
            len: AtomicUsize::new(0),
            idle: Mutex::new(Idle::default()),
            sleepers: AtomicUsize::new(0),
            searching: AtomicUsize::new(0),
            capacity,
            refill: AtomicBool::new(false),
            eager,
            loop_waker,
        }
    }

    /// Whether the queue is at most half full.
    pub(crate) fn below_half(&self) -> bool {
        self.len.load(SeqCst) <= self.capacity / 2
    }

    /// Says whether the loop has overflow waiting, so workers wake it at the low-water mark
    /// (once per refill, not once per job).
    pub(crate) fn want_refill(&self, wanted: bool) {
        self.refill.store(wanted, SeqCst);
        fence(SeqCst);
    }

    /// Queues a job without waking anyone (see [`notify`](Self::notify)); gives it back
    /// when the queue is full.
    pub(crate) fn try_push(&self, job: Job) -> Result<(), Job> {
        let mut queue = self.queue.lock();
        if queue.len() >= self.capacity {
            return Err(job);
        }
        queue.push_back(job);
        self.len.store(queue.len(), SeqCst);
        Ok(())
    }

    /// Wakes the most recently idle worker, unless a woken one is already on its way.
    pub(crate) fn notify(&self) {
        // Pairs with the fence in `sleep`: a worker going to sleep either sees the job just
        // queued (or the loop left), or is on the stack here.
        fence(SeqCst);
        if self.sleepers.load(SeqCst) == 0 || self.searching.load(SeqCst) > 0 {
            return;
        }
        let mut idle = self.idle.lock();
        if self.searching.load(SeqCst) > 0 {
            return;
        }
        if let Some(sleeper) = idle.stack.pop() {
            self.sleepers.fetch_sub(1, SeqCst);
            self.searching.fetch_add(1, SeqCst);
            drop(idle);
            sleeper.wake();
        }
    }

    /// Whether no job is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.len.load(SeqCst) == 0
    }

    /// Takes the next job, if any. With more than one CPU, a worker that takes one with
    /// more behind it wakes the next idle worker to share them.
    pub(crate) fn take(&self) -> Option<Job> {
        if self.is_empty() {
            // A job queued meanwhile is seen by `sleep`, after its fence.
            return None;
        }
        let (job, more) = {
            let mut queue = self.queue.lock();
            let job = queue.pop_front()?;
            self.len.store(queue.len(), SeqCst);
            (job, !queue.is_empty())
        };
        if self.eager && more {
            self.notify();
        }
        fence(SeqCst);
        if self.refill.load(SeqCst) && self.below_half() && self.refill.swap(false, SeqCst) {
            let _ = self.loop_waker.wake();
        }
        Some(job)
    }

    /// A woken worker has looked at the queue (and the loop): it is no longer on its way,
    /// and the next notice may wake another.
    pub(crate) fn searched(&self) {
        // Saturating, as a wake-up by `close` was never counted.
        let _ = (self.searching).fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1));
    }

    /// Sleeps until [`notify`](Self::notify) picks this worker (`Some(true)`: it must call
    /// [`searched`](Self::searched) once it has looked for work); returns `Some(false)` at
    /// once if a job is queued or `vacant()` says the event loop has nobody at it; `None`
    /// once closed.
    pub(crate) fn sleep(&self, me: &Arc<Sleeper>, vacant: impl Fn() -> bool) -> Option<bool> {
        let mut idle = self.idle.lock();
        if idle.closed {
            return None;
        }
        me.woken.store(false, SeqCst);
        idle.stack.push(me.clone());
        self.sleepers.fetch_add(1, SeqCst);
        // Pairs with the fence in `notify`: whoever queued a job or left the loop either
        // sees this worker on the stack, or this worker sees the job or the empty loop.
        fence(SeqCst);
        if !self.is_empty() || vacant() {
            // Holding the lock since the push, this worker is still on top of the stack.
            idle.stack.pop();
            self.sleepers.fetch_sub(1, SeqCst);
            return Some(false);
        }
        drop(idle);
        while !me.woken.load(SeqCst) {
            std::thread::park();
        }
        Some(true)
    }

    /// Takes every queued job out, for the caller to drop.
    pub(crate) fn discard(&self) -> Vec<Job> {
        let mut queue = self.queue.lock();
        self.len.store(0, SeqCst);
        queue.drain(..).collect()
    }

    /// Lets every worker finish the queued jobs; `sleep` then returns `None`.
    pub(crate) fn close(&self) {
        let mut idle = self.idle.lock();
        idle.closed = true;
        self.sleepers.store(0, SeqCst);
        for sleeper in idle.stack.drain(..) {
            sleeper.wake();
        }
    }
}
