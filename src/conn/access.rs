//! How each request ended, told once: to the stats (exactly one of served, rejected or
//! aborted) and to the access log (target `sgi::access`).

use std::net::SocketAddr;
use std::time::Instant;

use http::{Method, StatusCode, Uri};

use super::Peer;
use crate::server::Counters;

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Answered whole: the gateway's response, or the server's `500` in its place.
    Served,
    /// Answered by the server itself: malformed, over a limit, timed out (`4xx`/`5xx`),
    /// before a gateway saw the request or while it read the body.
    Rejected,
    /// Not answered whole: the client left (mid-body, mid-answer, or taking no bytes for
    /// the write timeout), or the body failed after its head was sent.
    Aborted,
}

/// One request's line, before its outcome is known.
#[derive(Debug)]
pub(crate) struct Record {
    pub(crate) peer: Option<SocketAddr>,
    /// Method and target, when the access log is on and the request line was read (and for
    /// a parked stream in any case: the worker that resumes it reports them if stuck).
    pub(crate) request: Option<(Method, Uri)>,
    pub(crate) status: StatusCode,
    /// Body bytes sent (handed to the socket).
    pub(crate) bytes: u64,
    pub(crate) started: Instant,
}

impl Record {
    /// Counts the request in `stats` and, if `log`, writes its access line (out of line: the
    /// common case, counted and not logged, neither copies the record nor calls).
    #[inline]
    pub(crate) fn finish(&self, stats: &Counters, log: bool, outcome: Outcome) {
        match outcome {
            Outcome::Served => stats.served(),
            Outcome::Rejected => stats.rejected_request(),
            Outcome::Aborted => stats.aborted(),
        }
        if log {
            self.log(outcome);
        }
    }

    /// Writes the access line.
    #[cold]
    fn log(&self, outcome: Outcome) {
        let (method, target) = match &self.request {
            Some((method, uri)) => (method.as_str(), uri as &dyn std::fmt::Display),
            None => ("-", &"-" as &dyn std::fmt::Display),
        };
        let micros = self.started.elapsed().as_micros() as u64;
        let (peer, status, bytes) = (Peer(self.peer), self.status.as_u16(), self.bytes);
        match outcome {
            Outcome::Served => tracing::info!(
                target: "sgi::access",
                peer = %peer, method = %method, target = %target, status, bytes, micros,
            ),
            Outcome::Rejected => tracing::info!(
                target: "sgi::access",
                peer = %peer, method = %method, target = %target, status, bytes, micros, rejected = true,
            ),
            Outcome::Aborted => tracing::info!(
                target: "sgi::access",
                peer = %peer, method = %method, target = %target, status, bytes, micros, aborted = true,
            ),
        }
    }
}

/// A request whose answer waits, wholly or in part, for the event loop to write it
/// (write-behind): its outcome is known only once the client has taken it, or left.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) record: Record,
    /// Where the answer ends in the stream of bytes left to the loop; `None` while it is
    /// still in the output buffer (held back to go out with the next answer).
    pub(crate) end: Option<u64>,
}
