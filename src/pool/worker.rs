//! Pool workers: each takes a connection with a complete request head, serves it (and any
//! request pipelined behind it), and hands the connection back to the event loop.
//!
//! A gateway that runs past the request timeout is reported, and a replacement worker is
//! started so the pool keeps its capacity; the stuck worker leaves the pool when its gateway
//! finally returns. A thread cannot be killed, so this is the most a server can do.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use http::{Method, Uri};
use parking_lot::Mutex;

use super::event_loop::Readiness;
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
}

/// A connection coming back from a worker, and what to do with it.
pub(crate) struct Done {
    pub(crate) token: usize,
    pub(crate) conn: Box<Conn<Socket>>,
    pub(crate) next: Next,
}

/// What a worker is serving right now, for stuck-request reports.
#[derive(Debug, Default)]
pub(crate) struct Busy {
    current: Mutex<Option<(Instant, Method, Uri)>>,
    /// The current request was reported stuck.
    reported: AtomicBool,
    /// A replacement was started for this worker: it leaves the pool when it gets free.
    replaced: AtomicBool,
}

impl Busy {
    pub(crate) fn begin(&self, method: &Method, uri: &Uri) {
        self.reported.store(false, Relaxed);
        *self.current.lock() = Some((Instant::now(), method.clone(), uri.clone()));
    }

    fn end(&self) {
        *self.current.lock() = None;
    }

    /// Whether the current request has run past `timeout`: `Some(true)` the first time (it
    /// is reported then), `Some(false)` after that.
    fn check(&self, timeout: Duration) -> Option<bool> {
        let current = self.current.lock();
        let (since, method, uri) = current.as_ref()?;
        let elapsed = since.elapsed();
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

/// The pool's workers and what the event loop needs to reach and supervise them.
pub(crate) struct Workers<G> {
    gateway: Arc<G>,
    shared: Arc<Shared>,
    jobs: Arc<JobQueue>,
    done: Sender<Done>,
    waker: Arc<mio::Waker>,
    busy: Mutex<Vec<Arc<Busy>>>,
    /// Replacements started for stuck workers and not yet retired.
    extra: AtomicUsize,
    size: usize,
}

impl<G: Gateway> Workers<G> {
    pub(crate) fn start(
        size: usize,
        gateway: Arc<G>,
        shared: Arc<Shared>,
        jobs: Arc<JobQueue>,
        done: Sender<Done>,
        waker: Arc<mio::Waker>,
    ) -> std::io::Result<Arc<Self>> {
        let workers = Arc::new(Workers {
            gateway,
            shared,
            jobs,
            done,
            waker,
            busy: Mutex::new(Vec::new()),
            extra: AtomicUsize::new(0),
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
        let spawned = std::thread::Builder::new()
            .name("sgi-worker".into())
            .spawn(move || workers.run(&busy));
        if spawned.is_ok() {
            self.shared.stats.workers.fetch_add(1, Relaxed);
        }
        spawned.map(drop)
    }

    fn run(&self, busy: &Arc<Busy>) {
        let ctx = Ctx {
            gateway: &*self.gateway,
            shared: &self.shared,
            worker: Some(busy),
        };
        let stats = &self.shared.stats;
        let _batch = super::sched::Batch::enter(self.shared.config.batch_scheduling);
        let me = Sleeper::current();
        while let Some(job) = self.jobs.pop(&me) {
            let Job {
                token,
                mut conn,
                readiness,
            } = job;
            stats.queued.fetch_sub(1, Relaxed);
            stats.active.fetch_add(1, Relaxed);
            let next = loop {
                let next = conn.serve(&ctx);
                // A pipelined request is served here, without a round trip through the loop.
                if next != Next::KeepAlive || !conn.next_pipelined(&self.shared) {
                    break next;
                }
            };
            // Answers held back to go out with the next one leave before the connection does
            // (the next request may wait in the loop for its body).
            let next = match conn.flush() {
                Ok(()) => next,
                Err(_) => Next::Close,
            };
            // Bytes the loop will not hear of (no new readiness event) need it woken.
            let more = conn.may_have_more();
            busy.end();
            stats.active.fetch_sub(1, Relaxed);
            if self.done.send(Done { token, conn, next }).is_err() {
                break;
            }
            // A closing connection needs the loop now; a keep-alive one only if it has bytes
            // to read already or turned readable meanwhile (else its next request's event
            // wakes the loop).
            std::sync::atomic::fence(SeqCst);
            if next != Next::KeepAlive
                || more
                || readiness.load(SeqCst)
                || self.shared.is_shutting_down()
            {
                let _ = self.waker.wake();
            }
            if busy.replaced.load(Relaxed) {
                // This worker was replaced while stuck; the replacement keeps the capacity.
                self.extra.fetch_sub(1, Relaxed);
                break;
            }
        }
        self.busy.lock().retain(|b| !Arc::ptr_eq(b, busy));
        self.shared.stats.workers.fetch_sub(1, Relaxed);
    }

    /// Reports stuck gateways and replaces their workers, up to as many again as the pool.
    /// A stuck worker that cannot be replaced now (every replacement in use, or no thread to
    /// be had) is tried again at every later check, until it is replaced or gets free.
    pub(crate) fn supervise(self: &Arc<Self>) {
        let timeout = self.shared.config.timeouts.request;
        let stuck: Vec<(Arc<Busy>, bool)> = self
            .busy
            .lock()
            .iter()
            .filter_map(|b| Some((b.clone(), b.check(timeout)?)))
            .collect();
        for (busy, first) in stuck {
            if first {
                self.shared.stats.stuck();
            }
            if busy.replaced.load(Relaxed) {
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
