//! Streamed bodies, an iterator's or a reader's (the gateway's code), sent a piece at a
//! time. On a pool connection whose client falls behind, the stream parks among the bytes
//! left to the event loop and its worker goes free; once the socket has taken what came
//! before it, the loop queues the connection again, and a worker makes the next pieces
//! ([`Conn::resume_stream`]). Only a client that keeps up holds a worker while it streams.

use std::fmt;
use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::access::{Outcome, Record};
use super::behind::Slot;
use super::send::{catching, drop_catching, Abort};
use super::{Conn, Next};
use crate::pool::Busy;
use crate::server::{Counters, Shared};
use crate::transport::Transport;

/// How long a pool worker waits for room in the socket while it streams before it parks
/// the stream: a client that keeps up makes room well within it.
pub(super) const STREAM_PATIENCE: Duration = Duration::from_millis(20);
/// Read size for reader bodies.
const READ_CHUNK: usize = 64 * 1024;

/// Where a streamed body's pieces come from.
pub(super) enum Source {
    Iter(Box<dyn Iterator<Item = io::Result<Bytes>> + Send>),
    /// A reader, and the buffer its pieces are read into.
    Reader(Box<dyn Read + Send>, Vec<u8>),
}

/// A streamed body being sent, with its framing and how far it got.
pub(crate) struct Stream {
    source: Source,
    /// The length the head announced (`Content-Length`), if any.
    declared: Option<u64>,
    chunked: bool,
    /// The body ends with the connection: a failure resets it.
    close_delimited: bool,
    /// Body bytes sent so far (or left to the event loop).
    sent: u64,
    /// The request's outcome, told once the stream has ended; its method and target are
    /// there for the stuck-gateway report of the worker that resumes the stream.
    record: Option<Record>,
    /// Held while a piece is written and while the stream is parked (see
    /// [`Conn::stream_slots`]).
    slot: Option<Slot>,
    /// Its request was reported stuck already (told once per request).
    stuck: bool,
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream")
            .field("declared", &self.declared)
            .field("chunked", &self.chunked)
            .field("sent", &self.sent)
            .finish_non_exhaustive()
    }
}

impl Stream {
    pub(super) fn new(source: Source, declared: Option<u64>, chunked: bool) -> Box<Stream> {
        Box::new(Stream {
            source,
            declared,
            chunked,
            close_delimited: declared.is_none() && !chunked,
            sent: 0,
            record: None,
            slot: None,
            stuck: false,
        })
    }

    /// A reader's source, its buffer sized for the first piece.
    pub(super) fn reader(reader: Box<dyn Read + Send>, declared: Option<u64>) -> Source {
        let room = declared.map_or(READ_CHUNK, |n| n.min(READ_CHUNK as u64) as usize);
        Source::Reader(reader, vec![0; room])
    }

    /// Its outcome, told once it ends.
    pub(super) fn set_record(&mut self, record: Record, stuck: bool) {
        self.record = Some(record);
        self.stuck = stuck;
    }

    /// The stream is dropped unfinished (its connection ended): its outcome is told.
    pub(super) fn cut(self: Box<Self>, accounts: Option<&(Arc<Counters>, bool)>) {
        let Stream { source, record, .. } = *self;
        drop_catching(source, "a response body panicked when dropped");
        if let (Some(record), Some((stats, log))) = (record, accounts) {
            record.finish(stats, *log, Outcome::Aborted);
        }
    }
}

/// How sending a stream stopped, short of a failure.
pub(super) enum Pumped {
    /// The body ended: this many bytes of it were sent (the chunked end is in the output
    /// buffer).
    Ended(u64),
    /// The client fell behind: the stream waits among the unsent pieces.
    Parked,
}

impl<T: Transport> Conn<T> {
    /// Sends `stream`'s pieces (its head is in the output buffer, or went before) until it
    /// ends or, on a connection that writes behind, until the client falls behind: it then
    /// parks among the unsent pieces, if a slot is free.
    pub(super) fn pump(
        &mut self,
        mut stream: Box<Stream>,
        clock: Option<&Busy>,
    ) -> Result<Pumped, Abort> {
        // A stream holds its worker while the client keeps up.
        let _streaming = Busy::streaming(clock);
        loop {
            let Stream {
                source,
                declared,
                chunked,
                sent,
                slot,
                ..
            } = &mut *stream;
            // A body of known length is not pulled once that length is sent (nor at all
            // when it is 0): a next piece may block or fail, and could not be sent.
            if declared.is_some_and(|n| *sent >= n) {
                break;
            }
            match source {
                // Making the next piece is the gateway's code: the stuck clock runs, and a
                // panic is caught here, before the stream is dropped (a panic in its drop
                // while the first unwinds would abort the process).
                Source::Iter(iter) => match Busy::timed(clock, || catching(|| Ok(iter.next())))? {
                    None => break,
                    Some(Err(e)) => {
                        return Err(Abort::Gateway(format!("body iterator failed: {e}")))
                    }
                    Some(Ok(piece)) => {
                        let parks = self.may_park(slot);
                        *sent = self.stream_piece(&piece, *sent, *declared, *chunked, parks)?
                    }
                },
                // A reader of known length is read no further than that length: what
                // follows may be someone else's (a shared file offset, a pipe, an upstream).
                Source::Reader(reader, chunk) => {
                    let want = declared
                        .map_or(READ_CHUNK, |n| (n - *sent).min(READ_CHUNK as u64) as usize);
                    if chunk.len() < want {
                        chunk.resize(want, 0);
                    }
                    let read = || catching(|| Ok(reader.read(&mut chunk[..want])));
                    let n = match Busy::timed(clock, read)? {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(Abort::Gateway(format!("body reader failed: {e}"))),
                    };
                    let parks = self.may_park(slot);
                    *sent = self.stream_piece(&chunk[..n], *sent, *declared, *chunked, parks)?;
                }
            }
            if stream.close_delimited && self.has_unsent() {
                self.unsent.close_delimited = true;
            }
            if stream.slot.is_some() && self.has_unsent() {
                self.unsent.park(stream);
                return Ok(Pumped::Parked);
            }
            // Taken only for a piece's write (and kept while parked): a stream waiting for
            // its next event holds none.
            stream.slot = None;
        }
        let done = self.finish_stream(stream.sent, stream.declared, stream.chunked);
        drop_catching(
            stream,
            "a response body panicked when dropped after it was sent whole",
        );
        done.map(Pumped::Ended)
    }

    /// Whether the next piece's write may leave what the socket does not take to the event
    /// loop, the stream then parking: on a connection that writes behind, while `slot`
    /// holds (or can take) one of the connection's [`Conn::stream_slots`].
    fn may_park(&self, slot: &mut Option<Slot>) -> bool {
        if self.write_behind && slot.is_none() {
            *slot = self.stream_slots.as_ref().and_then(|slots| slots.take());
        }
        slot.is_some()
    }

    /// Whether a parked stream is next to go out: a worker must make its pieces.
    pub(crate) fn stream_waits(&self) -> bool {
        self.unsent.stream_is_next()
    }

    /// Makes the next pieces of the parked stream at the front of what waits (a pool
    /// worker, once the event loop has written everything before it), until it ends or
    /// parks again. Returns what the connection does next.
    pub(crate) fn resume_stream(&mut self, shared: &Shared, clock: Option<&Busy>) -> Next {
        let Some(mut stream) = self.unsent.unpark() else {
            return self.after_unsent;
        };
        self.told = true;
        let record = stream.record.take();
        let request = record.as_ref().and_then(|r| r.request.clone());
        if let (Some(clock), Some(request)) = (clock, request) {
            clock.begin(request);
            clock.pause();
            if stream.stuck {
                clock.mark_reported();
            }
        }
        self.body_sent = stream.sent;
        let close_delimited = stream.close_delimited;
        let pumped = catching(|| self.pump(stream, clock));
        let (outcome, next) = match pumped {
            Ok(Pumped::Parked) => {
                if let Some(mut record) = record {
                    record.bytes = self.body_sent;
                    self.park_record(record, shared, clock);
                }
                return self.after_unsent;
            }
            Ok(Pumped::Ended(_)) => match self.flush_or_leave() {
                Ok(()) => (Outcome::Served, self.after_unsent),
                Err(_) => (Outcome::Aborted, Next::Close),
            },
            Err(Abort::Io(e)) => {
                self.send_lost(&e, close_delimited);
                (Outcome::Aborted, Next::Close)
            }
            Err(Abort::Gateway(why)) => {
                self.body_failed(&why, close_delimited);
                (Outcome::Aborted, Next::Close)
            }
        };
        if let Some(mut record) = record {
            record.bytes = self.body_sent;
            if outcome == Outcome::Served && self.has_unsent() {
                self.account_when_sent(record, shared);
            } else {
                record.finish(&shared.stats, shared.config.access_log, outcome);
            }
        }
        next
    }
}
