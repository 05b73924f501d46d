//! The loop's tick: idle, head, body and write timeouts, and the list of connections a
//! newcomer may take the place of at the cap.

use std::time::Instant;

use http::StatusCode;

use super::{Loop, Slot, EVICTABLE};

impl Loop {
    /// Closes connections past their idle, head, body or write timeout (a `408` where a
    /// request was under way and nothing of an answer went out), and lists, at the cap,
    /// the connections idle longest, whose place a newcomer may take.
    pub(super) fn tick(&mut self, now: Instant) {
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
}
