//! Write-behind: on a pool connection, the end of a response that the client is slow to
//! take is left to the event loop, so a slow reader holds no worker. What waits this way
//! is what needs none of the gateway's code: bytes already in memory (the output buffer, a
//! whole body) and the rest of a file body, read by the loop a piece at a time as the
//! socket makes room (as nginx sends files from its event loop). An iterator or a reader is
//! the gateway's code: it parks here (see [`super::stream`]) and a worker makes its next
//! pieces once the socket has taken what came before.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice, Read};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::access::{Outcome, Pending, Record};
use super::stream::Stream;
use super::Conn;
use crate::pool::Busy;
use crate::server::{Counters, Shared};
use crate::transport::Transport;

/// A part of an answer left to the event loop.
#[derive(Debug)]
enum Piece {
    Bytes(Bytes),
    /// The next `left` bytes of a file body, from its current position; `_slot` is given
    /// back when it is dropped.
    File {
        file: File,
        left: u64,
        _slot: Slot,
    },
    /// A streamed body (the gateway's code) that a worker makes the next pieces of.
    Stream(Box<Stream>),
}

/// Most bytes of a file body the event loop reads at a time: all a slow client's
/// connection holds in memory of it.
const FILE_PIECE: usize = 64 * 1024;

/// Most bytes the event loop writes for one connection in one go before it turns to the
/// others (as nginx's `sendfile_max_chunk`): a client that takes a file as fast as the
/// loop reads it must not hold the loop for the whole file.
const UNSENT_PER_TURN: usize = 2 << 20;

/// How many answers of a kind may wait for the event loop at once: file bodies (each holds
/// a descriptor beside its connection's, and the connection cap leaves room for only so
/// many), or parked streams (each holds whatever the gateway's iterator or reader holds).
#[derive(Debug)]
pub(crate) struct Slots {
    left: AtomicUsize,
}

/// One of the [`Slots`], given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot(Arc<Slots>);

impl Slots {
    pub(crate) fn new(n: usize) -> Arc<Slots> {
        Arc::new(Slots {
            left: AtomicUsize::new(n),
        })
    }

    /// A slot, if one is free.
    pub(crate) fn take(self: &Arc<Self>) -> Option<Slot> {
        self.left
            .fetch_update(Relaxed, Relaxed, |left| left.checked_sub(1))
            .ok()
            .map(|_| Slot(self.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.left.fetch_add(1, Relaxed);
    }
}

/// How far [`Conn::write_unsent_now`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// Everything is written.
    Done,
    /// The socket takes no more now; `progressed` if it took any byte first.
    Blocked { progressed: bool },
    /// [`UNSENT_PER_TURN`] bytes went out and more wait: the loop comes back to it.
    Paused,
    /// All before a parked stream went out: a worker must make its next pieces.
    Streaming,
}

/// Response bytes accepted for the client that its socket did not take yet.
#[derive(Debug, Default)]
pub(crate) struct Unsent {
    pieces: VecDeque<Piece>,
    /// The socket's unacknowledged bytes when the write timer last started.
    unacknowledged: Option<u32>,
    /// Bytes left to the loop so far, and how many of them it has written.
    pushed: u64,
    written: u64,
    /// The requests whose answers end among the pieces, oldest first.
    pending: VecDeque<Pending>,
    /// Where to count them, and whether to log them (set with the first one: a
    /// connection that never holds an answer back never clones the counters).
    accounts: Option<(Arc<Counters>, bool)>,
    /// What waits ends a body delimited by the close: cutting it must reset.
    pub(super) close_delimited: bool,
}

impl Unsent {
    fn push(&mut self, piece: Bytes) {
        if !piece.is_empty() {
            self.pushed += piece.len() as u64;
            self.pieces.push_back(Piece::Bytes(piece));
        }
    }

    fn push_file(&mut self, file: File, len: u64, slot: Slot) {
        if len > 0 {
            self.pushed += len;
            self.pieces.push_back(Piece::File {
                file,
                left: len,
                _slot: slot,
            });
        }
    }

    /// The first piece as bytes to write, reading the next piece of a file first; `None`
    /// when nothing is left. A file that fails or ends before its length is an error: its
    /// answer cannot be finished.
    fn front_bytes(&mut self) -> io::Result<Option<&mut Bytes>> {
        if let Some(Piece::File { file, left, .. }) = self.pieces.front_mut() {
            let mut piece = vec![0; (*left).min(FILE_PIECE as u64) as usize];
            let n = loop {
                match file.read(&mut piece) {
                    Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            };
            piece.truncate(n);
            *left -= n as u64;
            if *left == 0 {
                self.pieces.pop_front();
            }
            self.pieces.push_front(Piece::Bytes(piece.into()));
        }
        Ok(match self.pieces.front_mut() {
            Some(Piece::Bytes(bytes)) => Some(bytes),
            _ => None,
        })
    }

    /// Parks a stream behind what waits.
    pub(super) fn park(&mut self, stream: Box<Stream>) {
        self.pieces.push_back(Piece::Stream(stream));
    }

    /// Whether a parked stream is the next piece to go out.
    pub(super) fn stream_is_next(&self) -> bool {
        matches!(self.pieces.front(), Some(Piece::Stream(_)))
    }

    /// Takes the parked stream out, if it is the next piece to go out.
    pub(super) fn unpark(&mut self) -> Option<Box<Stream>> {
        match self.pieces.pop_front() {
            Some(Piece::Stream(stream)) => Some(stream),
            Some(other) => {
                self.pieces.push_front(other);
                None
            }
            None => None,
        }
    }

    /// Tells the requests whose answers the client has now taken whole.
    fn settle(&mut self) {
        let written = self.written;
        let Some((stats, log)) = &self.accounts else {
            return;
        };
        while self
            .pending
            .front()
            .is_some_and(|p| p.end.is_some_and(|end| end <= written))
        {
            if let Some(p) = self.pending.pop_front() {
                p.record.finish(stats, *log, Outcome::Served);
            }
        }
    }
}

impl Drop for Unsent {
    /// The connection ends with answers not yet taken whole: they were cut short.
    fn drop(&mut self) {
        // A whole body left here is the gateway's own value (`Bytes` may have an owner of
        // its own): the event loop drops it, and must not be unwound by it.
        for piece in self.pieces.drain(..) {
            match piece {
                Piece::Bytes(piece) => drop_piece(piece),
                Piece::Stream(stream) => stream.cut(self.accounts.as_ref()),
                Piece::File { .. } => {}
            }
        }
        self.settle();
        let Some((stats, log)) = &self.accounts else {
            return;
        };
        for mut p in self.pending.drain(..) {
            // Never handed over (held in the output buffer): none of it went out.
            let missing = p.end.map_or(u64::MAX, |end| end - self.written);
            p.record.bytes = p.record.bytes.saturating_sub(missing);
            p.record.finish(stats, *log, Outcome::Aborted);
        }
    }
}

/// Drops a piece of an answer, which may be the gateway's own `Bytes`.
fn drop_piece(piece: Bytes) {
    super::send::drop_catching(piece, "a response body panicked when dropped");
}

impl<T: Transport> Conn<T> {
    /// Leaves a request's outcome to be told once its answer, whose end waits for the
    /// event loop (or is still in the output buffer behind bytes that wait), is written.
    pub(crate) fn account_when_sent(&mut self, record: Record, shared: &Shared) {
        // Still in the output buffer: its end is known once that is handed over.
        let end = self.out.is_empty().then_some(self.unsent.pushed);
        let unsent = &mut self.unsent;
        unsent
            .accounts
            .get_or_insert_with(|| (shared.stats.clone(), shared.config.access_log));
        unsent.pending.push_back(Pending { record, end });
    }

    /// Gives the stream just parked its request's outcome, told once it ends (or is cut),
    /// and whether `clock` has reported it stuck (a request is reported once).
    pub(crate) fn park_record(&mut self, record: Record, shared: &Shared, clock: Option<&Busy>) {
        let stuck = clock.is_some_and(Busy::was_reported);
        let unsent = &mut self.unsent;
        unsent
            .accounts
            .get_or_insert_with(|| (shared.stats.clone(), shared.config.access_log));
        if let Some(Piece::Stream(stream)) = unsent.pieces.back_mut() {
            stream.set_record(record, stuck);
        }
    }

    /// Whether what waits ends a body delimited by the close (a cut must then reset).
    pub(crate) fn unsent_ends_with_close(&self) -> bool {
        self.unsent.close_delimited
    }

    /// Whether response bytes wait for the event loop to write them.
    pub(crate) fn has_unsent(&self) -> bool {
        !self.unsent.pieces.is_empty()
    }

    /// The write timer starts: notes how much the client has yet to acknowledge.
    pub(crate) fn start_write_timer(&mut self) {
        self.unsent.unacknowledged = self.io.unacknowledged();
    }

    /// Whether the client has taken bytes since the write timer started (it then starts
    /// anew). The socket tells the writer it has room only once a good part of its buffer
    /// has drained, so a slow but steady reader can take bytes for a whole write timeout
    /// without a writable event.
    pub(crate) fn took_bytes(&mut self) -> bool {
        let now = self.io.unacknowledged();
        let took = crate::transport::took_bytes(self.unsent.unacknowledged, now);
        if took {
            self.unsent.unacknowledged = now;
        }
        took
    }

    /// Sends the output buffer at the end of a response (see [`Conn::send_or_leave`]).
    pub(crate) fn flush_or_leave(&mut self) -> io::Result<()> {
        self.send_or_leave(Bytes::new())
    }

    /// Sends the output buffer and then `body`. A connection that may write behind sends
    /// what its socket takes now and leaves the rest for the event loop; any other waits
    /// for its client (up to the write timeout), as [`Conn::flush`] does.
    pub(crate) fn send_or_leave(&mut self, body: Bytes) -> io::Result<()> {
        let taken = self.write_some(&body, b"", Duration::ZERO)?;
        if taken < body.len() {
            self.unsent.push(body.slice(taken..));
        }
        Ok(())
    }

    /// Writes the output buffer and then `body` and `tail` as far as the socket takes them,
    /// after waits for room of up to `patience` each (with none, one attempt); what is left
    /// of the output buffer waits for the event loop. Returns how much of `body` and `tail`
    /// went: the caller leaves the rest behind it. A connection that may not write behind
    /// waits for its client instead (up to the write timeout), and sends it all. Of what
    /// the socket takes, `body` counts in `body_sent`.
    pub(crate) fn write_some(
        &mut self,
        body: &[u8],
        tail: &[u8],
        patience: Duration,
    ) -> io::Result<usize> {
        if self.has_unsent() {
            // Behind already: the order of the bytes is kept.
            let out = Bytes::from(std::mem::take(&mut self.out));
            self.unsent.push(out);
            let out_end = self.unsent.pushed;
            self.handed_over(Some(out_end));
            return Ok(0);
        }
        if self.out.is_empty() && body.is_empty() && tail.is_empty() {
            return Ok(0);
        }
        if !self.write_behind {
            self.write_out_wait(body, tail)?;
            return Ok(body.len() + tail.len());
        }
        self.writes += 1;
        let total = self.out.len() + body.len() + tail.len();
        let mut written = 0;
        let (mut failed, mut blocked) = (None, false);
        while written < total && !blocked {
            let mut slices = [
                IoSlice::new(&self.out),
                IoSlice::new(body),
                IoSlice::new(tail),
            ];
            let result = if patience.is_zero() {
                // One attempt, from the start: the common case, kept short.
                self.io.write_now(&slices)
            } else {
                let mut bufs = &mut slices[..];
                IoSlice::advance_slices(&mut bufs, written);
                self.io.write_within(bufs, patience)
            };
            match result {
                Ok(0) => failed = Some(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted && !patience.is_zero() => {}
                // No room within the wait (or, with none, now): the rest is left behind.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    blocked = true
                }
                Err(e) => failed = Some(e),
            }
            if failed.is_some() || patience.is_zero() {
                break; // with no patience, one attempt: what the socket takes now
            }
        }
        let taken = written.saturating_sub(self.out.len());
        self.body_sent += taken.min(body.len()) as u64;
        if let Some(e) = failed {
            // Answers held in the output buffer that went out whole are told as sent.
            if written >= self.out.len() {
                self.handed_over(None);
            }
            self.out.clear();
            return Err(e);
        }
        let mut out_end = None;
        if written < self.out.len() {
            self.unsent
                .push(Bytes::copy_from_slice(&self.out[written..]));
            out_end = Some(self.unsent.pushed);
        }
        self.out.clear();
        self.handed_over(out_end);
        Ok(taken)
    }

    /// Leaves `bytes` to the event loop, behind what waits already.
    pub(crate) fn leave(&mut self, bytes: Bytes) {
        self.unsent.push(bytes);
    }

    /// Leaves the next `len` bytes of `file` to the event loop, behind what waits already;
    /// `slot` is given back once the loop is done with it.
    pub(crate) fn leave_file(&mut self, file: File, len: u64, slot: Slot) {
        self.unsent.push_file(file, len, slot);
    }

    /// Whether answers held back in the output buffer wait to be told once it is out.
    pub(crate) fn holds_answers(&self) -> bool {
        self.unsent.pending.back().is_some_and(|p| p.end.is_none())
    }

    /// The output buffer went to the socket, whole (`None`), or up to `out_end` in the
    /// bytes left to the event loop: answers held in it are told as served, or wait for
    /// the loop to write that far.
    pub(crate) fn handed_over(&mut self, out_end: Option<u64>) {
        let unsent = &mut self.unsent;
        if unsent.pending.is_empty() {
            return;
        }
        let end = out_end.unwrap_or(unsent.written);
        for pending in unsent.pending.iter_mut().filter(|p| p.end.is_none()) {
            pending.end = Some(end);
        }
        unsent.settle();
    }

    /// Writes what waits, as far as the socket takes it now and up to [`UNSENT_PER_TURN`]
    /// bytes (event loop).
    pub(crate) fn write_unsent_now(&mut self) -> io::Result<Progress> {
        let mut this_turn = 0;
        loop {
            if self.unsent.stream_is_next() {
                return Ok(Progress::Streaming);
            }
            let piece = match self.unsent.front_bytes() {
                Ok(Some(piece)) => piece,
                Ok(None) => return Ok(Progress::Done),
                Err(e) => {
                    tracing::error!(peer = %super::Peer(self.peer), error = %e,
                        "reading a file body failed after its head was sent; closing the connection");
                    return Err(e);
                }
            };
            if this_turn >= UNSENT_PER_TURN {
                return Ok(Progress::Paused);
            }
            match self.io.write_now(&[IoSlice::new(piece)]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    this_turn += n;
                    if n == piece.len() {
                        if let Some(Piece::Bytes(piece)) = self.unsent.pieces.pop_front() {
                            drop_piece(piece);
                        }
                    } else {
                        *piece = piece.slice(n..);
                    }
                    self.unsent.written += n as u64;
                    self.unsent.settle();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(Progress::Blocked {
                        progressed: this_turn > 0,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Memory;

    #[test]
    fn file_slots_run_out_and_come_back() {
        let slots = Slots::new(2);
        let (a, b) = (slots.take(), slots.take());
        assert!(a.is_some() && b.is_some());
        assert!(slots.take().is_none(), "a third file past a budget of two");
        drop(a);
        assert!(slots.take().is_some(), "a slot given back is free again");
    }

    #[test]
    fn the_loop_writes_at_most_a_turns_worth_for_one_connection_at_a_time() {
        let path = std::env::temp_dir().join(format!("sgi-unsent-turn-{}", std::process::id()));
        let content: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &content).unwrap();
        let slots = Slots::new(1);
        let mut conn = Conn::new(Memory::default(), None, None);
        conn.unsent.push(Bytes::from_static(b"head"));
        let file = File::open(&path).unwrap();
        conn.leave_file(file, content.len() as u64, slots.take().unwrap());
        std::fs::remove_file(&path).unwrap();
        assert_eq!(conn.write_unsent_now().unwrap(), Progress::Paused);
        assert_eq!(conn.io.output.len(), UNSENT_PER_TURN + 4);
        assert!(slots.take().is_none(), "the file still waits");
        assert_eq!(conn.write_unsent_now().unwrap(), Progress::Done);
        assert_eq!(&conn.io.output[..4], b"head");
        assert!(
            conn.io.output[4..] == content[..],
            "the file went out changed"
        );
        assert!(slots.take().is_some(), "the file's slot is given back");
    }
}
