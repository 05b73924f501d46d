//! The request body as the gateway reads it: framing decoded, limits enforced, `100 Continue`
//! sent on the first read that needs the client's bytes.

use std::io;
use std::time::{Duration, Instant};

use http::StatusCode;

use super::Conn;
use crate::http1::{ChunkedDecoder, Framing, Step};
use crate::input::Source;
use crate::pool::Busy;
use crate::transport::Transport;
use crate::{Config, Error};

#[derive(Debug)]
pub(crate) enum BodyKind {
    Length(u64),
    Chunked(ChunkedDecoder),
    Done,
}

/// Why reading a body stopped early; sticky, so every later read fails the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyError {
    TooLarge,
    /// Over the head limits (`431`, as for a head).
    TrailersTooLarge,
    Malformed(&'static str),
    TimedOut,
    Incomplete,
    Io(io::ErrorKind),
}

impl BodyError {
    /// The crate's error for it.
    fn as_error(self) -> Error {
        match self {
            BodyError::TooLarge => Error::BodyTooLarge,
            BodyError::TrailersTooLarge => Error::HeadTooLarge,
            BodyError::Malformed(why) => Error::BadChunk(why),
            BodyError::TimedOut => Error::Timeout,
            BodyError::Incomplete => Error::Incomplete,
            BodyError::Io(kind) => Error::Io(kind.into()),
        }
    }

    fn to_io(self) -> io::Error {
        self.as_error().into_io()
    }

    /// What to answer the client with; `None` when it broke off the body (nobody to answer).
    pub(crate) fn status(self) -> Option<StatusCode> {
        match self {
            BodyError::Incomplete | BodyError::Io(_) => None,
            error => Some(error.as_error().status()),
        }
    }
}

/// How long the server may have waited for a body of which `read` bytes have come, at
/// [`Limits::min_body_rate`](crate::Limits) after the grace; `None` when there is no
/// minimum rate.
pub(crate) fn rate_allowance(config: &Config, read: u64) -> Option<Duration> {
    let rate = config.limits.min_body_rate;
    if rate == 0 {
        return None;
    }
    let for_bytes = Duration::try_from_secs_f64(read as f64 / f64::from(rate));
    Some(
        config
            .timeouts
            .body_grace
            .saturating_add(for_bytes.unwrap_or(Duration::MAX)),
    )
}

#[derive(Debug)]
pub(crate) struct BodyState {
    pub(crate) kind: BodyKind,
    pub(crate) received: u64,
    /// How long the server has waited for body bytes, and how many it has read: the
    /// body's rate ([`Limits::min_body_rate`](crate::Limits)). Time the gateway spends
    /// between reads does not count against the client.
    pub(crate) arrival: (Duration, u64),
    pub(crate) continue_pending: bool,
    pub(crate) error: Option<BodyError>,
}

impl BodyState {
    pub(crate) fn new(framing: Framing, expect_continue: bool) -> Self {
        let kind = match framing {
            Framing::None => BodyKind::Done,
            Framing::Length(n) => BodyKind::Length(n),
            Framing::Chunked => BodyKind::Chunked(ChunkedDecoder::new()),
        };
        let continue_pending = expect_continue && !matches!(kind, BodyKind::Done);
        BodyState {
            kind,
            received: 0,
            arrival: (Duration::ZERO, 0),
            continue_pending,
            error: None,
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        matches!(self.kind, BodyKind::Done)
    }
}

/// The [`Source`] behind a request's [`Input`](crate::Input).
pub(crate) struct BodyReader<'c, T: Transport> {
    pub(crate) conn: &'c mut Conn<T>,
    pub(crate) config: &'c Config,
    /// Bytes offered by the last `fill`: the most `consume` may take.
    pub(crate) avail: usize,
    /// Whether reads may wait for the client (not while draining).
    pub(crate) wait: bool,
    /// A pool worker's stuck-request clock: stopped while the client is waited for.
    pub(crate) clock: Option<&'c Busy>,
}

impl<T: Transport> BodyReader<'_, T> {
    fn fail(&mut self, error: BodyError) -> io::Error {
        self.conn.body.error.get_or_insert(error);
        error.to_io()
    }

    /// Reads more of the body from the client: waiting up to the body timeout, or (while
    /// draining) only what is there now, `WouldBlock` if nothing.
    fn read_more(&mut self) -> io::Result<()> {
        let conn = &mut *self.conn;
        if conn.body.continue_pending && self.wait {
            conn.body.continue_pending = false;
            // Behind any pipelined responses still buffered: interim answers keep order too.
            conn.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        // Answers to earlier pipelined requests, held back to go out together, go out before
        // the server waits on the client: it may be waiting for them before it sends more.
        if !conn.out.is_empty() && self.wait {
            if let Err(e) = conn.flush() {
                return Err(self.fail(BodyError::Io(e.kind())));
            }
        }
        let wait = self.wait;
        let (timeout, too_slow) = match wait {
            true => self.body_wait(),
            false => (self.config.timeouts.body, false),
        };
        let timed = wait && self.config.limits.min_body_rate != 0;
        let waited_from = timed.then(Instant::now);
        let conn = &mut *self.conn;
        let max = self.config.limits.max_head.max(64 * 1024);
        // Time the client takes to send is not the gateway's (`timeouts.body` bounds it).
        let clock = self.clock.filter(|_| wait);
        let read = Busy::untimed(clock, || {
            conn.buf.read_with(&mut conn.io, max, |io, b| {
                if wait {
                    io.read_wait(b, timeout)
                } else {
                    io.read_now(b)
                }
            })
        });
        if let Some(from) = waited_from {
            conn.body.arrival.0 += from.elapsed();
        }
        match read {
            Ok(0) => Err(self.fail(BodyError::Incomplete)),
            Ok(n) => {
                conn.body.arrival.1 += n as u64;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut && too_slow => {
                tracing::debug!(peer = %super::Peer(conn.peer), "request body below the minimum rate; answering 408");
                Err(self.fail(BodyError::TimedOut))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && !wait => Err(e),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Err(self.fail(BodyError::TimedOut)),
            Err(e) => Err(self.fail(BodyError::Io(e.kind()))),
        }
    }

    /// How long the next wait for body bytes may last: the body timeout, or less if the
    /// client would then have kept the server waiting longer than its body's minimum rate
    /// allows (then also `true`).
    fn body_wait(&mut self) -> (Duration, bool) {
        let timeout = self.config.timeouts.body;
        let (waited, read) = self.conn.body.arrival;
        let Some(allowed) = rate_allowance(self.config, read) else {
            return (timeout, false);
        };
        let left = allowed.saturating_sub(waited);
        (timeout.min(left), left < timeout)
    }

    /// How many body bytes sit at the front of the buffer now, reading as needed.
    fn available(&mut self) -> io::Result<usize> {
        loop {
            if let Some(error) = self.conn.body.error {
                return Err(error.to_io());
            }
            let limits = &self.config.limits;
            let conn = &mut *self.conn;
            match &mut conn.body.kind {
                BodyKind::Done => return Ok(0),
                BodyKind::Length(remaining) => {
                    if !conn.buf.is_empty() {
                        let n = conn
                            .buf
                            .filled()
                            .len()
                            .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                        return Ok(n);
                    }
                    self.read_more()?;
                }
                BodyKind::Chunked(decoder) => match decoder.step(conn.buf.filled(), limits) {
                    Ok(Step::Framing(n)) => conn.buf.consume(n),
                    Ok(Step::Done(n)) => {
                        conn.buf.consume(n);
                        conn.body.kind = BodyKind::Done;
                    }
                    Ok(Step::Data(n)) => {
                        if limits
                            .max_body
                            .is_some_and(|max| conn.body.received + n as u64 > max)
                        {
                            return Err(self.fail(BodyError::TooLarge));
                        }
                        return Ok(n);
                    }
                    Ok(Step::NeedMore) => self.read_more()?,
                    Err(Error::HeadTooLarge) => return Err(self.fail(BodyError::TrailersTooLarge)),
                    Err(Error::BadChunk(why)) => return Err(self.fail(BodyError::Malformed(why))),
                    Err(Error::BodyTooLarge) => return Err(self.fail(BodyError::TooLarge)),
                    Err(_) => return Err(self.fail(BodyError::Malformed("invalid chunked body"))),
                },
            }
        }
    }

    /// Reads and drops what is left of the body, up to `budget` bytes, without waiting for
    /// the client: an answer must not wait on an upload. Returns whether the body reached
    /// its end.
    pub(crate) fn drain(&mut self, mut budget: u64) -> bool {
        self.wait = false;
        loop {
            match self.available() {
                Ok(0) => return self.conn.body.is_done(),
                Ok(n) => {
                    if n as u64 > budget {
                        return false;
                    }
                    budget -= n as u64;
                    self.avail = n;
                    self.consume(n);
                }
                Err(_) => return false,
            }
        }
    }
}

impl<T: Transport> Source for BodyReader<'_, T> {
    fn fill(&mut self) -> io::Result<&[u8]> {
        let n = self.available()?;
        self.avail = n;
        Ok(&self.conn.buf.filled()[..n])
    }

    fn consume(&mut self, n: usize) {
        let n = n.min(self.avail);
        self.avail -= n;
        let conn = &mut *self.conn;
        if n == 0 {
            return;
        }
        conn.buf.consume(n);
        conn.body.received += n as u64;
        match &mut conn.body.kind {
            BodyKind::Length(remaining) => {
                *remaining -= n as u64;
                if *remaining == 0 {
                    conn.body.kind = BodyKind::Done;
                }
            }
            BodyKind::Chunked(decoder) => decoder.consume(n),
            BodyKind::Done => {}
        }
    }
}
