//! Writing a response: the head, then the body in the framing the plan chose. Small
//! responses are gathered in the connection's output buffer (and pipelined ones batched);
//! large bodies go out in one gathered write (`sendmsg`) with the head, files in large
//! pieces.

use std::io::{self, IoSlice, Read, Seek, SeekFrom};
use std::panic::{catch_unwind, AssertUnwindSafe};

use bytes::Bytes;
use http::{StatusCode, Version};

use super::stream::{Pumped, Source, Stream, STREAM_PATIENCE};
use super::{error_response, Conn, Next, Peer};
use crate::body::Kind;
use crate::http1::{
    drops_for_the_connection, only_close_or_upgrade, plan_response, write_head, BodyFraming,
};
use crate::pool::Busy;
use crate::transport::{write_all_wait, Transport};
use crate::Response;

/// Bodies up to this size are copied into the output buffer: one write for head and body.
const COPY_LIMIT: usize = 16 * 1024;
/// Piece size for file bodies: a quarter of the system calls per byte of a 64 KiB loop.
const FILE_CHUNK: usize = 256 * 1024;
/// How long a pool worker waits for room in the socket while it sends a file before it
/// leaves the rest to the event loop: a client that keeps up makes room well within it.
const FILE_PATIENCE: std::time::Duration = std::time::Duration::from_millis(20);

pub(crate) struct Sent {
    /// The status sent (the server's `500` if it replaced the gateway's response).
    pub(crate) status: StatusCode,
    pub(crate) bytes: u64,
    pub(crate) next: Next,
    /// The body failed: the connection must end now (no lingering).
    pub(crate) cut: bool,
    /// A streamed body parked to wait for its client (see [`super::stream`]): its outcome
    /// is told once it ends.
    pub(crate) parked: bool,
}

/// Why a body could not be sent whole; the connection is cut so the client cannot take a
/// truncated body for a complete one.
pub(super) enum Abort {
    Io(io::Error),
    Gateway(String),
}

/// Runs the gateway's code of a body (making a piece, dropping it): a panic there fails the
/// body like an error, and the thread goes on.
pub(super) fn catching<R>(work: impl FnOnce() -> Result<R, Abort>) -> Result<R, Abort> {
    catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|payload| {
        let why = format!("it panicked: {}", super::panics::message(&*payload));
        super::panics::caught(payload);
        Err(Abort::Gateway(why))
    })
}

impl<T: Transport> Conn<T> {
    /// Writes `response` (buffered; see [`Conn::flush`]). `keep_alive` is whether the
    /// request side allows the connection to live on; `clock`, a pool worker's, times the
    /// gateway's code that makes the body.
    pub(crate) fn send_response(
        &mut self,
        response: Response,
        version: Version,
        is_head: bool,
        keep_alive: bool,
        clock: Option<&Busy>,
    ) -> Sent {
        self.body_sent = 0;
        let (mut parts, mut body) = response.into_parts();
        // An interim status cannot end an exchange, and codes past 599 are not HTTP's
        // (RFC 9110 §15; the `http` crate takes up to 999).
        let unusable = match parts.status.as_u16() {
            100..=199 => Some("an interim status"),
            600.. => Some("a status outside 100-599"),
            _ => None,
        };
        if let Some(what) = unusable {
            tracing::error!(
                status = parts.status.as_u16(),
                "gateway returned {what} as its response; answering 500"
            );
            let (fixed, replacement) =
                error_response(StatusCode::INTERNAL_SERVER_ERROR).into_parts();
            drop_unsent(std::mem::replace(&mut body, replacement));
            let unsent = std::mem::replace(&mut parts, fixed);
            drop_catching(unsent, "a response's parts panicked when dropped");
        }
        let method = if is_head {
            http::Method::HEAD
        } else {
            http::Method::GET
        };
        let plan = plan_response(
            &method,
            version,
            keep_alive,
            parts.status,
            &parts.headers,
            body.len(),
        );
        if plan.length_mismatch {
            tracing::warn!(
                declared = ?parts.headers.get(http::header::CONTENT_LENGTH),
                body = body.len().unwrap_or(0),
                "gateway's Content-Length differs from its body's length; sending the body's length"
            );
        }
        // `HEAD` reads nothing, yet answers as `GET` would (RFC 9110 §9.3.2): a file that
        // cannot be read is a 500 there too.
        if is_head && matches!(plan.framing, BodyFraming::Length(n) if n > 0) {
            if let Err(e) = body.check_readable() {
                tracing::error!(peer = %Peer(self.peer), error = %e, "reading the file failed; answering 500");
                // The head writer, which notes fields left out, is not reached here.
                warn_on_server_owned_fields(&parts.headers);
                drop_unsent(body);
                return self.send_500_and_close(version, is_head);
            }
        }
        let head_at = self.out.len();
        let left_out = write_head(&mut self.out, parts.status, &parts.headers, &plan, version);
        if left_out.owned {
            warn_on_server_owned_fields(&parts.headers);
        }
        let dropped = left_out.dropped;
        // The gateway's extensions may run its code when dropped: never past this answer.
        if !parts.extensions.is_empty() {
            let extensions = std::mem::take(&mut parts.extensions);
            drop_catching(extensions, "a response's extensions panicked when dropped");
        }
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "dropped response header fields with control characters in their value"
            );
        }
        let close_next = if plan.close {
            Next::Close
        } else {
            Next::KeepAlive
        };
        if !plan.send_body {
            if !is_head && !body.is_empty() {
                tracing::debug!(
                    status = parts.status.as_u16(),
                    "dropping the body of a bodiless response"
                );
            }
            drop_unsent(body);
            return Sent {
                status: parts.status,
                bytes: 0,
                next: close_next,
                cut: false,
                parked: false,
            };
        }
        // The body is the gateway's code too (an iterator, a reader, their `Drop`): a panic
        // there aborts this response like a failure, never the thread serving it.
        let writes = self.writes;
        let sent = catching(|| self.send_body(body.kind, plan.framing, clock));
        let status = parts.status;
        match sent {
            Ok(pumped) => Sent {
                status,
                bytes: match pumped {
                    Pumped::Ended(bytes) => bytes,
                    Pumped::Parked => self.body_sent,
                },
                next: close_next,
                cut: false,
                parked: matches!(pumped, Pumped::Parked),
            },
            Err(Abort::Io(e)) => {
                self.send_lost(&e, plan.framing == BodyFraming::CloseDelimited);
                Sent {
                    status,
                    bytes: self.body_sent,
                    next: Next::Close,
                    cut: true,
                    parked: false,
                }
            }
            Err(Abort::Gateway(why)) if self.writes == writes => {
                // Nothing of this response has left yet: it can still be a clean 500.
                tracing::error!(peer = %Peer(self.peer), "response body failed before any of it was sent ({why}); answering 500");
                self.out.truncate(head_at);
                self.send_500_and_close(version, is_head)
            }
            Err(Abort::Gateway(why)) => {
                self.body_failed(&why, plan.framing == BodyFraming::CloseDelimited);
                Sent {
                    status,
                    bytes: self.body_sent,
                    next: Next::Close,
                    cut: true,
                    parked: false,
                }
            }
        }
    }

    /// A body failed after its head was sent: what was sent of it goes out, and the
    /// connection is to end so the client cannot take the rest for missing by design.
    pub(super) fn body_failed(&mut self, why: &str, close_delimited: bool) {
        tracing::error!(peer = %Peer(self.peer), "response body failed after the head was sent ({why}); aborting the connection");
        let _ = self.flush();
        // A body that ends with the connection would look whole after an orderly close:
        // only a reset tells the client it was cut short.
        if close_delimited {
            self.io.reset_on_close();
        }
    }

    /// The connection failed while a body was sent (the client left, or took no bytes for
    /// the write timeout): nothing more goes out, and the connection is to end.
    pub(super) fn send_lost(&mut self, error: &io::Error, close_delimited: bool) {
        tracing::debug!(peer = %Peer(self.peer), %error, "connection lost while sending a response");
        self.out.clear();
        // After an orderly close a body that ends with the connection would look whole:
        // only a reset tells the client it was cut short.
        if close_delimited {
            self.io.reset_on_close();
        }
    }

    /// Answers `500` in place of a response whose body cannot be sent, and closes after it.
    fn send_500_and_close(&mut self, version: Version, is_head: bool) -> Sent {
        let error = error_response(StatusCode::INTERNAL_SERVER_ERROR);
        let mut sent = self.send_response(error, version, is_head, false, None);
        sent.next = Next::Close;
        sent
    }

    fn send_body(
        &mut self,
        kind: Kind,
        framing: BodyFraming,
        clock: Option<&Busy>,
    ) -> Result<Pumped, Abort> {
        let declared = match framing {
            BodyFraming::Length(n) => Some(n),
            _ => None,
        };
        let chunked = framing == BodyFraming::Chunked;
        match kind {
            Kind::Full(bytes) => {
                let n = bytes.len() as u64;
                if self.write_behind && bytes.len() > COPY_LIMIT {
                    self.send_or_leave(bytes).map_err(Abort::Io)?;
                    self.body_sent = n;
                } else if bytes.len() > COPY_LIMIT {
                    self.write_piece(&bytes, b"", false, false)?;
                    self.body_sent = n;
                } else {
                    // Copied behind the head; handed over when the output buffer is.
                    self.write_piece(&bytes, b"", false, false)?;
                }
                Ok(Pumped::Ended(n))
            }
            Kind::File(mut file, len) => {
                // A file holds its worker until the client falls behind.
                let _streaming = Busy::streaming(clock);
                // Large pieces, read and written by hand: std's io::copy would move them
                // through an 8 KiB buffer (no sendfile without unsafe code). The head goes
                // out with the first piece, so a file that cannot be read has sent nothing
                // and still gets a clean 500.
                let mut buf = vec![0u8; len.clamp(1, FILE_CHUNK as u64) as usize];
                // A slot for leaving the rest to the event loop, if the client falls behind
                // (none left: this worker sends it all, waiting for the client as needed).
                let mut slot = self.file_slots.as_ref().and_then(|slots| slots.take());
                let mut sent = 0u64;
                while sent < len {
                    let want = buf.len().min((len - sent) as usize);
                    let n = match file.read(&mut buf[..want]) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            return Err(Abort::Gateway(format!("reading the file failed: {e}")))
                        }
                    };
                    let piece = &buf[..n];
                    if slot.is_none() {
                        self.write_out_wait(piece, b"").map_err(Abort::Io)?;
                        sent += n as u64;
                        self.body_sent = sent;
                        continue;
                    }
                    let taken = self
                        .write_some(piece, b"", FILE_PATIENCE)
                        .map_err(Abort::Io)?;
                    sent += taken as u64;
                    if taken < n {
                        // The client does not keep up: the event loop sends the rest of the
                        // file, from the first byte the socket did not take, as it makes
                        // room; no worker waits for it.
                        let rest = n - taken;
                        let mut from_file = len - sent;
                        if file.seek(SeekFrom::Current(-(rest as i64))).is_err() {
                            // Not sought back: the rest of this piece goes as a copy.
                            self.leave(Bytes::copy_from_slice(&piece[taken..]));
                            from_file -= rest as u64;
                        }
                        if let Some(slot) = slot.take() {
                            self.leave_file(file, from_file, slot);
                        }
                        self.body_sent = len;
                        return Ok(Pumped::Ended(len));
                    }
                    self.body_sent = sent;
                }
                if sent < len {
                    return Err(Abort::Gateway(format!(
                        "file ended after {sent} of {len} bytes"
                    )));
                }
                Ok(Pumped::Ended(sent))
            }
            Kind::Iter(iter) => {
                self.pump(Stream::new(Source::Iter(iter), declared, chunked), clock)
            }
            Kind::Reader(reader, _) => {
                let source = Stream::reader(reader, declared);
                self.pump(Stream::new(source, declared, chunked), clock)
            }
        }
    }

    /// Sends one piece of a streamed body; returns the body bytes sent so far. A stream
    /// that `parks` sends what the socket takes within [`STREAM_PATIENCE`] and leaves the
    /// rest to the event loop.
    pub(super) fn stream_piece(
        &mut self,
        mut piece: &[u8],
        sent: u64,
        declared: Option<u64>,
        chunked: bool,
        parks: bool,
    ) -> Result<u64, Abort> {
        if piece.is_empty() {
            return Ok(sent);
        }
        if let Some(n) = declared {
            let room = n - sent;
            if piece.len() as u64 > room {
                tracing::warn!(
                    declared = n,
                    "body is longer than its Content-Length; sending only the declared bytes"
                );
                piece = &piece[..room as usize];
            }
        }
        let len = piece.len() as u64;
        // A chunk goes out whole, its closing CRLF included: a client's chunked decoder
        // hands a chunk on only once it has read that CRLF.
        let tail: &[u8] = if chunked {
            crate::http1::append_hex(&mut self.out, len);
            self.out.extend_from_slice(b"\r\n");
            b"\r\n"
        } else {
            b""
        };
        self.write_piece(piece, tail, true, parks)?;
        self.body_sent = sent + len;
        Ok(sent + len)
    }

    pub(super) fn finish_stream(
        &mut self,
        sent: u64,
        declared: Option<u64>,
        chunked: bool,
    ) -> Result<u64, Abort> {
        if let Some(n) = declared {
            if sent < n {
                return Err(Abort::Gateway(format!(
                    "body ended after {sent} of its declared {n} bytes"
                )));
            }
        }
        if chunked {
            self.out.extend_from_slice(b"0\r\n\r\n");
        }
        Ok(sent)
    }

    /// Queues `piece` and then `tail` behind the output buffer, writing when it is large.
    /// A streamed piece is written at once (waiting for the client, or if the stream
    /// `parks`, leaving what the socket does not take within [`STREAM_PATIENCE`] to the
    /// event loop).
    fn write_piece(
        &mut self,
        piece: &[u8],
        tail: &[u8],
        streaming: bool,
        parks: bool,
    ) -> Result<(), Abort> {
        if parks {
            let (piece, tail) = if piece.len() <= COPY_LIMIT {
                self.out.extend_from_slice(piece);
                self.out.extend_from_slice(tail);
                (&b""[..], &b""[..])
            } else {
                (piece, tail)
            };
            let taken = self
                .write_some(piece, tail, STREAM_PATIENCE)
                .map_err(Abort::Io)?;
            if taken < piece.len() {
                self.leave(Bytes::copy_from_slice(&piece[taken..]));
            }
            let tail_taken = taken.saturating_sub(piece.len());
            if tail_taken < tail.len() {
                self.leave(Bytes::copy_from_slice(&tail[tail_taken..]));
            }
            return Ok(());
        }
        // Each streamed piece goes out before the next is asked for (as PEP 3333 asks), so a
        // slow producer's output reaches the client as it is made.
        if piece.len() <= COPY_LIMIT {
            self.out.extend_from_slice(piece);
            self.out.extend_from_slice(tail);
            if streaming {
                self.flush().map_err(Abort::Io)?;
            }
            return Ok(());
        }
        self.write_out_wait(piece, tail).map_err(Abort::Io)
    }

    /// Writes the output buffer, then `piece` and `tail`, in one gathered write when the
    /// socket takes it all, waiting for the client up to the write timeout.
    ///
    /// `piece` is body bytes: those the socket took count in `body_sent`, also when the
    /// write then fails. Answers held back in the output buffer go out first on their own
    /// when a piece follows, so that they are told as sent even if the piece's write fails.
    pub(crate) fn write_out_wait(&mut self, piece: &[u8], tail: &[u8]) -> io::Result<()> {
        if !piece.is_empty() && !self.out.is_empty() && self.holds_answers() {
            self.write_out_wait(b"", b"")?;
        }
        self.writes += 1;
        let mut written = 0;
        let result = write_all_wait(
            &mut self.io,
            &mut [
                IoSlice::new(&self.out),
                IoSlice::new(piece),
                IoSlice::new(tail),
            ],
            &mut written,
        );
        let of_piece = written.saturating_sub(self.out.len()).min(piece.len());
        self.body_sent += of_piece as u64;
        self.out.clear();
        if result.is_ok() {
            self.handed_over(None);
        }
        result
    }
}

/// Drops a body that is not sent where a panic in its `Drop` (the gateway's code) cannot
/// take the response that replaces or goes without it.
fn drop_unsent(body: crate::Body) {
    drop_catching(
        body,
        "a response body that was not sent panicked when dropped",
    );
}

/// Drops a gateway's response that the server answers in place of (a body error, a
/// `CONNECT` it cannot tunnel): its body and extensions are the gateway's code.
pub(super) fn drop_replaced(response: Response) {
    drop_catching(
        response,
        "a response the server replaced panicked when dropped",
    );
}

/// Drops `value` (the gateway's), logging a panic in its `Drop` as `what` and keeping it
/// for a test client, never letting it unwind the thread that serves.
pub(super) fn drop_catching<T>(value: T, what: &'static str) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(value))) {
        let panic = super::panics::message(&*payload);
        tracing::error!(panic, "{what}");
        super::panics::caught(payload);
    }
}

/// The server owns framing and hop-by-hop fields; a gateway setting them is told why they
/// vanish (a dropped `Transfer-Encoding: gzip` would otherwise be a mystery). The same for
/// fields the gateway's `Connection` field names, and for a second `Date`.
fn warn_on_server_owned_fields(headers: &http::HeaderMap) {
    // Passes over the (few) fields cost less than a hashed lookup of each owned name.
    let connection = headers.keys().any(|name| name == http::header::CONNECTION);
    let mut dated = false;
    for (name, value) in headers {
        if *name == http::header::DATE && std::mem::replace(&mut dated, true) {
            tracing::warn!(
                ?value,
                "gateway set more than one Date field; the server sends the first"
            );
        }
        if !drops_for_the_connection(headers, connection, name) {
            continue;
        }
        if only_close_or_upgrade(name, value) {
            continue; // honoured, not dropped
        }
        tracing::warn!(field = %name, ?value, "gateway set a hop-by-hop field; the server drops it");
    }
}
