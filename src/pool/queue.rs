//! The queue of ready connections between the event loop and the workers.
//!
//! Jobs travel through a bounded crossbeam channel; waiting for one is done here, without
//! spinning. An idle worker sleeps on a condition variable; the loop wakes one per batch of
//! jobs, and a worker that takes a job with more behind it wakes the next. On a busy core
//! this keeps wake-ups (and context switches) to about one per batch instead of one per
//! job, while queued work never waits behind a gateway that blocks.

use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::{Condvar, Mutex};

use super::worker::Job;

pub(crate) struct JobQueue {
    tx: Sender<Job>,
    rx: Receiver<Job>,
    /// Workers asleep in `pop` (read without the lock to skip it when nobody sleeps).
    sleepers: AtomicUsize,
    closed: Mutex<bool>,
    wake: Condvar,
    capacity: usize,
    /// The loop holds jobs that did not fit: wake it when the queue is half empty.
    refill: AtomicBool,
    loop_waker: Arc<mio::Waker>,
}

impl JobQueue {
    pub(crate) fn new(capacity: usize, loop_waker: Arc<mio::Waker>) -> JobQueue {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        JobQueue {
            tx,
            rx,
            sleepers: AtomicUsize::new(0),
            closed: Mutex::new(false),
            wake: Condvar::new(),
            capacity,
            refill: AtomicBool::new(false),
            loop_waker,
        }
    }

    /// Whether the queue is at most half full.
    pub(crate) fn below_half(&self) -> bool {
        self.rx.len() <= self.capacity / 2
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
        self.tx.try_send(job).map_err(|e| match e {
            TrySendError::Full(job) | TrySendError::Disconnected(job) => job,
        })
    }

    /// Wakes one sleeping worker, if any.
    pub(crate) fn notify(&self) {
        // Pairs with the fence in `pop`: a worker going to sleep either sees the job just
        // queued, or is counted here.
        fence(SeqCst);
        if self.sleepers.load(SeqCst) > 0 {
            let _closed = self.closed.lock();
            self.wake.notify_one();
        }
    }

    /// Takes the next job, sleeping while there is none; `None` once closed and empty.
    pub(crate) fn pop(&self) -> Option<Job> {
        loop {
            if let Ok(job) = self.rx.try_recv() {
                if !self.rx.is_empty() {
                    self.notify();
                }
                fence(SeqCst);
                if self.refill.load(SeqCst) && self.below_half() && self.refill.swap(false, SeqCst)
                {
                    let _ = self.loop_waker.wake();
                }
                return Some(job);
            }
            let mut closed = self.closed.lock();
            if *closed {
                return None;
            }
            self.sleepers.fetch_add(1, SeqCst);
            fence(SeqCst);
            if self.rx.is_empty() {
                self.wake.wait(&mut closed);
            }
            self.sleepers.fetch_sub(1, SeqCst);
        }
    }

    /// Lets every worker finish the queued jobs and then return from `pop`.
    pub(crate) fn close(&self) {
        *self.closed.lock() = true;
        self.wake.notify_all();
    }
}
