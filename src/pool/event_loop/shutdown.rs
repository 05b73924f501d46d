//! Graceful shutdown of the pool's connections.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use http::StatusCode;
use mio::Events;

use super::{Loop, Slot, TICK};

impl Loop {
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
                let mut conn = job.conn;
                // A job queued for a parked stream's next pieces is no unserved request:
                // its stream is told (cut) as the connection drops. A request read behind
                // it is one.
                if !conn.stream_waits() || conn.holds_unserved_request(&self.shared) {
                    conn.cut_unserved(&self.shared, StatusCode::SERVICE_UNAVAILABLE);
                }
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
