//! With [`Config::batch_scheduling`](crate::Config::batch_scheduling) on (it is off by
//! default), the pool's worker threads run under Linux's `SCHED_BATCH` policy.
//!
//! Under the default policy a thread that wakes up preempts the one running if it has used
//! less CPU, and an idle worker, which sleeps most of the time, always has. Before a gateway
//! runs, the worker serving wakes an idle one to stand by at the event loop (in case the
//! gateway blocks); on a busy core, that one would then take the CPU from the worker serving,
//! find the loop taken, and sleep again: two context switches for nothing. `SCHED_BATCH`
//! threads keep their fair share of the CPU but do not preempt on wake-up; they run when the
//! running thread blocks or its time slice ends, which is exactly when standing by is
//! needed. Only a thread under the default policy (`SCHED_OTHER`) is moved; no privilege is
//! needed for that, and a thread given another policy by its owner keeps it.
//!
//! The cost, and why it is off by default: a woken `SCHED_BATCH` worker also waits for any
//! other task on its core, however low its priority, so a request that wakes one waits
//! about a scheduler tick whenever the core is shared (BENCHMARKS.md); and on one CPU,
//! where it mattered, the keeper now stands in for the stand-by wake-up.

/// Keeps the calling thread under `SCHED_BATCH` while alive; restores the default policy
/// when dropped.
#[derive(Debug)]
pub(crate) struct Batch {
    switched: bool,
}

impl Batch {
    /// Moves the calling thread to `SCHED_BATCH` if `wanted` and it runs under the default
    /// policy.
    pub(crate) fn enter(wanted: bool) -> Batch {
        Batch {
            switched: wanted && imp::switch(imp::OTHER, imp::BATCH),
        }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        if self.switched {
            imp::switch(imp::BATCH, imp::OTHER);
        }
    }
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod imp {
    pub(super) const OTHER: libc::c_int = libc::SCHED_OTHER;
    pub(super) const BATCH: libc::c_int = libc::SCHED_BATCH;

    /// Moves the calling thread from policy `from` to `to`; false if it was not under `from`
    /// or the kernel refused.
    pub(super) fn switch(from: libc::c_int, to: libc::c_int) -> bool {
        current() == from && {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: takes a thread id (0: the calling thread), an integer and a pointer
            // to an initialised `sched_param` that outlives the call, which only reads it.
            unsafe { libc::sched_setscheduler(0, to, &param) == 0 }
        }
    }

    /// The calling thread's policy (-1 on error).
    pub(super) fn current() -> libc::c_int {
        // SAFETY: takes a thread id (0: the calling thread) and touches no memory of ours.
        unsafe { libc::sched_getscheduler(0) }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    pub(super) const OTHER: i32 = 0;
    pub(super) const BATCH: i32 = 3;

    pub(super) fn switch(_from: i32, _to: i32) -> bool {
        false
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn batch_is_entered_and_left_on_a_default_thread() {
        std::thread::spawn(|| {
            assert_eq!(imp::current(), libc::SCHED_OTHER);
            let batch = Batch::enter(true);
            assert_eq!(imp::current(), libc::SCHED_BATCH);
            drop(batch);
            assert_eq!(imp::current(), libc::SCHED_OTHER);
            drop(Batch::enter(false));
            assert_eq!(imp::current(), libc::SCHED_OTHER);
        })
        .join()
        .unwrap();
    }
}
