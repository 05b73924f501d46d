//! The HTTP/1.1 connection driver shared by every backend: read a request head, call the
//! gateway, write the response, decide whether the connection lives on.
//!
//! Backends differ only in scheduling: the development server runs [`Conn::serve`] in a loop
//! on the connection's own thread; the pool's event loop reads heads without blocking
//! ([`Conn::read_available`]) and hands connections with a complete head to a worker.

pub(crate) mod access;
mod behind;
pub(crate) use behind::{Progress, Slots};
mod body;
mod buffer;
pub(crate) mod panics;
mod send;
mod stream;

use std::io;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use http::{Response as HttpResponse, StatusCode, Version};

use crate::http1::{
    parse_head_exact, parse_request_head, scan_head, ChunkedDecoder, Framing, HeadScan,
    RequestHead, Step,
};
use crate::server::Shared;
use crate::transport::Transport;
use crate::{Body, Environ, Error, Gateway, Input, Limits, Response, Scheme};
use access::Outcome;
use body::{BodyReader, BodyState};
pub(crate) use buffer::ReadBuf;

/// What to do with the connection after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Serve the next request.
    KeepAlive,
    /// Close now (the exchange is over, or the connection is broken).
    Close,
    /// An error response was sent while the client may still be sending: half-close and
    /// drain its bytes for a while, so it reads the response instead of a reset.
    Linger,
}

/// Where the buffered bytes stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Head {
    /// Nothing buffered.
    Empty,
    /// Part of a head.
    Partial,
    /// A complete head, or bytes that already break the rules: either way, serve it.
    Ready,
}

/// How waiting for a request ended (blocking backends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    Ready,
    /// The client closed, or stayed idle past the idle timeout, between requests.
    Closed,
    /// The client stalled or vanished mid-head; answered with 408 or 400 where it helps.
    Abandoned,
}

/// The method and target of the request being served, as sent: kept here, or by the pool
/// worker serving it (which reports it if its gateway is stuck), never copied twice.
struct Requested<'s> {
    here: Option<(http::Method, http::Uri)>,
    worker: Option<&'s crate::pool::Busy>,
}

impl<'s> Requested<'s> {
    /// The request begins: a pool worker takes it over.
    fn new(request: (http::Method, http::Uri), worker: Option<&'s crate::pool::Busy>) -> Self {
        let here = match worker {
            Some(worker) => {
                worker.begin(request);
                None
            }
            None => Some(request),
        };
        Requested { here, worker }
    }

    /// A copy for a log line.
    fn shown(&self) -> (http::Method, http::Uri) {
        self.here
            .clone()
            .or_else(|| self.worker.and_then(|w| w.request()))
            .unwrap_or_default()
    }

    /// For the access line, if it is kept (`None` when no access log is written).
    fn for_log(&mut self, config: &crate::Config) -> Option<(http::Method, http::Uri)> {
        if !config.access_log {
            return None;
        }
        self.take()
    }

    /// Taken back from here or the worker (which then has nothing to report).
    fn take(&mut self) -> Option<(http::Method, http::Uri)> {
        self.here
            .take()
            .or_else(|| self.worker.and_then(|w| w.take_request()))
    }
}

/// The references a connection needs from its server.
pub(crate) struct Ctx<'s, G> {
    pub(crate) gateway: &'s G,
    pub(crate) shared: &'s Shared,
    /// The pool worker running this connection, told what it serves (stuck detection).
    pub(crate) worker: Option<&'s crate::pool::Busy>,
}

#[derive(Debug)]
pub(crate) struct Conn<T: Transport> {
    pub(crate) io: T,
    pub(crate) buf: ReadBuf,
    pub(crate) out: Vec<u8>,
    /// How far the head at the front of `buf` has been scanned, and whether a line of it
    /// may be a framing field (without one, the head declares no body).
    scan: HeadScan,
    /// The length of the complete head at the front of `buf`, once found.
    head_len: Option<usize>,
    /// That head, parsed by the event loop while it waits for a small body (boxed: most
    /// requests have no body, and every idle connection carries this field).
    parsed: Option<Box<RequestHead>>,
    /// When the event loop began to wait for that body (its minimum rate counts from here).
    body_awaited: Option<Instant>,
    /// How far the loop has decoded that body, if chunked: each read decodes only the new
    /// bytes (a body trickled in byte by byte costs linear time, not quadratic).
    body_scan: Option<Box<BodyScan>>,
    /// When the first byte of the head being read arrived.
    pub(crate) head_started: Option<Instant>,
    served: u64,
    /// Writes to the client so far (flushes of `out` and large pieces), so that a response
    /// whose body fails can tell whether any of it has left.
    writes: u64,
    /// Body bytes of the response being sent that went to the socket so far (or to the
    /// event loop to write): what the access line of one cut short tells.
    body_sent: u64,
    /// The outcome of the request being served has been told (stats, access line), so a
    /// panic past that point does not tell it again.
    told: bool,
    /// Whether the end of a response the client is slow to take may be left to the event
    /// loop (pool connections).
    pub(crate) write_behind: bool,
    /// Where the rest of a file body may be left to the event loop (pool connections).
    pub(crate) file_slots: Option<Arc<behind::Slots>>,
    /// Where a streamed body may park while its client falls behind (pool connections).
    pub(crate) stream_slots: Option<Arc<behind::Slots>>,
    /// Response bytes left to the event loop, and what follows once they are written.
    unsent: behind::Unsent,
    pub(crate) after_unsent: Next,
    peer: Option<SocketAddr>,
    local: Option<SocketAddr>,
    body: BodyState,
}

impl<T: Transport> Conn<T> {
    pub(crate) fn new(io: T, peer: Option<SocketAddr>, local: Option<SocketAddr>) -> Self {
        Conn {
            io,
            buf: ReadBuf::default(),
            out: Vec::new(),
            scan: HeadScan::default(),
            head_len: None,
            parsed: None,
            body_awaited: None,
            body_scan: None,
            head_started: None,
            writes: 0,
            body_sent: 0,
            told: false,
            write_behind: false,
            file_slots: None,
            stream_slots: None,
            unsent: behind::Unsent::default(),
            after_unsent: Next::Close,
            served: 0,
            peer,
            local,
            body: BodyState::new(Framing::None, false),
        }
    }

    pub(crate) fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// Classifies the buffered bytes (a found head is remembered until it is served).
    pub(crate) fn head(&mut self, shared: &Shared) -> Head {
        if self.head_len.is_some() {
            return Head::Ready;
        }
        if self.buf.is_empty() {
            self.scan = HeadScan::default();
            return Head::Empty;
        }
        self.head_started.get_or_insert_with(Instant::now);
        let limits = &shared.config.limits;
        match scan_head(self.buf.filled(), &mut self.scan, limits) {
            Ok(None) => Head::Partial,
            Ok(Some(len)) => {
                self.head_len = Some(len);
                Head::Ready
            }
            Err(_) => Head::Ready,
        }
    }

    /// Reads whatever the socket has now, without blocking (event loop). Returns `false`
    /// once the client has closed its side. `now` is when the bytes read arrived, for a
    /// request they begin.
    pub(crate) fn read_available(&mut self, shared: &Shared, now: Instant) -> io::Result<bool> {
        let limits = &shared.config.limits;
        let max = limits
            .max_head
            .saturating_add(limits.max_buffered_body)
            .saturating_add(1);
        loop {
            if self.head_len.is_some() && !self.awaits_body(shared) {
                return Ok(true);
            }
            match self
                .buf
                .read_with(&mut self.io, max, |io, b| io.read_now(b))
            {
                Ok(0) => return Ok(false),
                Ok(_) => {
                    // A request begins with its first bytes (`now` spares `head` a clock).
                    self.head_started.get_or_insert(now);
                    // Bytes that already break the rules (414, 431) are ready to be
                    // answered; reading on would only fill the buffer.
                    if self.head(shared) == Head::Ready && self.head_len.is_none() {
                        return Ok(true);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                // A head over the limit is Ready: `serve` answers 431.
                Err(e) if e.kind() == io::ErrorKind::OutOfMemory => return Ok(true),
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether bytes of a next request may be waiting: buffered, or left in the socket by a
    /// read that filled the buffer (no new readiness event will announce those).
    pub(crate) fn may_have_more(&self) -> bool {
        !self.buf.is_empty() || self.io.maybe_readable()
    }

    /// After a response, whether the next pipelined request is ready to serve on this
    /// thread: its head is buffered, or it is read now, without blocking, from bytes a read
    /// that filled the buffer left in the socket. A small body still to come is not waited
    /// for here.
    pub(crate) fn next_pipelined(&mut self, shared: &Shared) -> bool {
        let ready = self.head(shared) == Head::Ready
            || (self.io.maybe_readable()
                && matches!(self.read_available(shared, Instant::now()), Ok(true))
                && self.head(shared) == Head::Ready);
        // A small body still on its way is waited for in the event loop, not here.
        ready && !self.awaits_body(shared)
    }

    /// Whether the event loop should keep this connection until its body is in: a small
    /// body ([`Limits::max_buffered_body`](crate::Limits)) not yet fully buffered, with no
    /// `100-continue` to wait for. A slow upload then holds no worker. The head is parsed
    /// here once and kept for [`serve`](Self::serve).
    pub(crate) fn awaits_body(&mut self, shared: &Shared) -> bool {
        let limits = &shared.config.limits;
        let Some(len) = self.head_len else {
            return false;
        };
        if limits.max_buffered_body == 0 {
            return false;
        }
        if self.parsed.is_none()
            && !(self.scan.may_frame && declares_body(&self.buf.filled()[..len]))
        {
            return false; // the common GET: no parse in the loop, the worker does it
        }
        if self.parsed.is_none() {
            match parse_head_exact(&self.buf.filled()[..len], limits) {
                Ok(head) => {
                    self.parsed = Some(Box::new(head));
                    self.body_awaited = Some(Instant::now());
                }
                Err(_) => return false, // a worker answers the error
            }
        }
        let Some(head) = &self.parsed else {
            return false;
        };
        let after = &self.buf.filled()[len..];
        match head.framing {
            _ if head.expect_continue => false,
            Framing::None => false,
            // Over max_body, a worker answers 413 at once rather than after the upload.
            Framing::Length(n) => {
                n <= limits.max_buffered_body as u64
                    && limits.max_body.map_or(true, |max| n <= max)
                    && (after.len() as u64) < n
            }
            Framing::Chunked => {
                let scan = self.body_scan.get_or_insert_with(Default::default);
                after.len() <= limits.max_buffered_body && !chunked_complete(after, scan, limits)
            }
        }
    }

    /// Whether the connection waits between requests: nothing buffered, no request begun,
    /// no answer still being written (the pool may close it to admit another at its cap).
    pub(crate) fn is_idle(&self) -> bool {
        self.head_started.is_none() && self.buf.is_empty() && !self.has_unsent()
    }

    /// Whether a request whose head is in waits to be served (its small body arriving, or
    /// pipelined behind the answer going out): one a closing connection cuts, unserved.
    pub(crate) fn holds_unserved_request(&mut self, shared: &Shared) -> bool {
        self.awaiting_body() || (self.head(shared) == Head::Ready && self.head_len.is_some())
    }

    /// Whether the loop holds a parsed head while its body arrives.
    pub(crate) fn awaiting_body(&self) -> bool {
        self.parsed.is_some()
    }

    /// When a small body the loop waits for falls below [`Limits::min_body_rate`]
    /// (crate::Limits) if no more of it comes: the same rule as for a body a gateway
    /// reads, so a client cannot hold a connection for days by trickling one. `None` when
    /// no body is awaited or the rate is off.
    pub(crate) fn body_rate_deadline(&self, shared: &Shared) -> Option<Instant> {
        let (awaited, head_len) = (self.body_awaited?, self.head_len?);
        let read = self.buf.filled().len().saturating_sub(head_len);
        awaited.checked_add(body::rate_allowance(&shared.config, read as u64)?)
    }

    /// Blocks until a complete head is buffered, within the idle and head timeouts.
    pub(crate) fn wait_head<G>(&mut self, ctx: &Ctx<'_, G>) -> Wait {
        let timeouts = &ctx.shared.config.timeouts;
        let max = ctx.shared.config.limits.max_head.saturating_add(1);
        loop {
            let timeout = match self.head(ctx.shared) {
                Head::Ready => return Wait::Ready,
                Head::Empty => timeouts.idle,
                Head::Partial => {
                    let started = self.head_started.unwrap_or_else(Instant::now);
                    match timeouts.head.checked_sub(started.elapsed()) {
                        Some(left) if !left.is_zero() => left,
                        _ => return self.abandon(StatusCode::REQUEST_TIMEOUT, ctx.shared),
                    }
                }
            };
            if ctx.shared.is_shutting_down() && self.buf.is_empty() {
                return Wait::Closed;
            }
            match self
                .buf
                .read_with(&mut self.io, max, |io, b| io.read_wait(b, timeout))
            {
                Ok(0) if self.buf.is_empty() => return Wait::Closed,
                // A shutdown closes connections still waiting for their head (dev server):
                // the end is the server's own, not the client's mistake.
                Ok(0) if ctx.shared.is_shutting_down() => return Wait::Closed,
                Ok(0) => return self.abandon(StatusCode::BAD_REQUEST, ctx.shared),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::OutOfMemory => return Wait::Ready,
                Err(e) if e.kind() == io::ErrorKind::TimedOut && self.buf.is_empty() => {
                    return Wait::Closed
                }
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
                Err(_) => return Wait::Closed,
            }
        }
    }

    /// Gives up on a half-received head: answers `status` (408 or 400) if the bytes so far
    /// are more than blank lines, so the client learns why.
    pub(crate) fn abandon(&mut self, status: StatusCode, shared: &Shared) -> Wait {
        if !self.only_blank() {
            self.rejected(shared, status);
            let _ = self.send_error(status, Version::HTTP_11);
        }
        Wait::Abandoned
    }

    /// [`abandon`](Self::abandon) from the event loop: one write attempt that never blocks.
    /// Returns whether it answered (the connection should then linger).
    pub(crate) fn abandon_now(&mut self, status: StatusCode, shared: &Shared) -> bool {
        if self.only_blank() {
            return false;
        }
        self.rejected(shared, status);
        self.write_error_now(status);
        true
    }

    /// Counts a request the server rejects itself, and logs its access line.
    fn rejected(&mut self, shared: &Shared, status: StatusCode) {
        self.told = true;
        self.tell_unanswered(shared, status, Outcome::Rejected);
    }

    /// The connection ends with answers that could not go out: a request read behind them
    /// and not yet served (whole, or its small body still arriving) is cut with them, and
    /// counted (logged with the `503` it would have been given).
    pub(crate) fn cut_pipelined(&mut self, shared: &Shared) {
        if self.holds_unserved_request(shared) {
            self.cut_unserved(shared, StatusCode::SERVICE_UNAVAILABLE);
        }
    }

    /// Counts and logs, as aborted, a request whose head was read but that no answer
    /// reached: its connection cut by a shutdown (past the deadline, or closed as idle just
    /// as the request came; logged with the `503` it would have been given), or its client
    /// gone while the event loop waited for its body (logged `499`, as nginx does).
    pub(crate) fn cut_unserved(&self, shared: &Shared, status: StatusCode) {
        self.tell_unanswered(shared, status, Outcome::Aborted);
    }

    /// Tells the outcome of a request no gateway answered, named by its request line.
    fn tell_unanswered(&self, shared: &Shared, status: StatusCode, outcome: Outcome) {
        let log = shared.config.access_log;
        let record = access::Record {
            peer: self.peer,
            request: log
                .then(|| self.request_line(&shared.config.limits))
                .flatten(),
            status,
            bytes: 0,
            started: self.head_started.unwrap_or_else(Instant::now),
        };
        record.finish(&shared.stats, log, outcome);
    }

    /// The method and target of the buffered request line, for the access line of a
    /// request rejected before it was parsed, if they are well-formed and complete.
    fn request_line(&self, limits: &Limits) -> Option<(http::Method, http::Uri)> {
        let filled = self.buf.filled();
        let start = filled.iter().position(|&b| b != b'\r' && b != b'\n')?;
        let line = &filled[start..];
        let line = &line[..memchr::memchr(b'\r', line)?];
        if line.len() > limits.max_request_line {
            return None;
        }
        let mut parts = line.split(|&b| b == b' ');
        let method = http::Method::from_bytes(parts.next()?).ok()?;
        let target = http::Uri::try_from(parts.next()?).ok()?;
        let version = parts.next()?;
        (version.starts_with(b"HTTP/") && parts.next().is_none()).then_some((method, target))
    }

    /// Whether the request at the front of the buffer is a `HEAD`: no answer to it, the
    /// server's own errors included, carries content (RFC 9110 §9.3.2).
    fn requested_head(&self) -> bool {
        let filled = self.buf.filled();
        let start = filled
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .unwrap_or(filled.len());
        filled[start..].starts_with(b"HEAD ")
    }

    /// Whether the bytes so far are only the blank lines a client may send between requests.
    fn only_blank(&self) -> bool {
        self.buf.filled().iter().all(|b| b.is_ascii_whitespace())
    }

    /// Serves the request whose head is buffered (see [`Conn::head`]). The gateway's own
    /// panic is answered with 500 inside; a panic anywhere else (a body's `Drop`, say)
    /// closes the connection here instead of unwinding the thread serving it.
    pub(crate) fn serve<G: Gateway>(&mut self, ctx: &Ctx<'_, G>) -> Next {
        match catch_unwind(AssertUnwindSafe(|| self.serve_request(ctx))) {
            Ok(next) => next,
            Err(payload) => {
                if !self.told {
                    // Past the gateway's own catch (a response's `Drop`, say): the request
                    // ends here, cut, and is told once.
                    let record = access::Record {
                        peer: self.peer,
                        request: None,
                        status: StatusCode::INTERNAL_SERVER_ERROR,
                        bytes: self.body_sent,
                        started: self.head_started.unwrap_or_else(Instant::now),
                    };
                    let shared = ctx.shared;
                    record.finish(&shared.stats, shared.config.access_log, Outcome::Aborted);
                }
                let panic = panics::message(&*payload);
                tracing::error!(peer = %Peer(self.peer), panic, "serving a request panicked; closing");
                panics::caught(payload);
                Next::Close
            }
        }
    }

    fn serve_request<G: Gateway>(&mut self, ctx: &Ctx<'_, G>) -> Next {
        let shared = ctx.shared;
        let config = &shared.config;
        self.told = false;
        // Left in place for the access line of a rejection, taken once the head is good.
        let started = *self.head_started.get_or_insert_with(Instant::now);
        self.scan = HeadScan::default();
        let filled = self.buf.filled();
        self.body_scan = None;
        self.body_awaited = None;
        let parsed = match (self.parsed.take(), self.head_len.take()) {
            (Some(head), _) => Ok(*head),
            (None, Some(len)) => parse_head_exact(&filled[..len], &config.limits),
            // Only a head over its limit is "ready" yet incomplete.
            (None, None) => parse_request_head(filled, &config.limits)
                .and_then(|head| head.ok_or(Error::HeadTooLarge)),
        };
        let head = match parsed {
            Ok(head) => head,
            Err(e) => return self.reject(ctx, e),
        };
        // Rejections answer with the request line still buffered (see `requested_head`).
        if let (Framing::Length(n), Some(max)) = (head.framing, config.limits.max_body) {
            if n > max {
                return self.reject(ctx, Error::BodyTooLarge);
            }
        }
        self.head_started = None;
        self.buf.consume(head.len);
        let RequestHead {
            method,
            mut uri,
            version,
            headers,
            framing,
            keep_alive,
            expect_continue,
            ..
        } = head;
        // Buggy HTTP/1.0 clients send a CRLF after a POST body (RFC 9112 §2.2; an HTTP/1.1
        // client must not), which may come after the close.
        let crlf_may_follow = version == Version::HTTP_10 && framing != Framing::None;
        self.body = BodyState::new(framing, expect_continue);
        let mut original_uri = None;
        if !config.script_name.is_empty() {
            if let Some(under) = crate::middleware::under_prefix(&uri, &config.script_name) {
                original_uri = Some(std::mem::replace(&mut uri, under));
            }
        }
        // For the access line, the log of a gateway that panics and (pool) the report of
        // one stuck: the target as sent. A pool worker holds it while it serves.
        let mut requested = Requested::new(
            (
                method.clone(),
                original_uri.as_ref().unwrap_or(&uri).clone(),
            ),
            ctx.worker,
        );
        let environ = Environ {
            peer_addr: self.peer,
            local_addr: self.local,
            url_scheme: Scheme::Http,
            server_name: shared.server_name.clone(),
            server_port: shared.server_port,
            script_name: config.script_name.clone(),
            original_uri,
            started,
            request_index: self.served,
        };
        self.served += 1;
        let is_head = method == http::Method::HEAD;
        let is_connect = method == http::Method::CONNECT;

        let mut reader = BodyReader {
            conn: self,
            config,
            avail: 0,
            wait: true,
            clock: ctx.worker,
        };
        let mut request = http::Request::new(Input::new(&mut reader));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.version_mut() = version;
        *request.headers_mut() = headers;
        request.extensions_mut().insert(environ);
        // One span per request around the gateway, so its own events carry the request.
        let span =
            tracing::info_span!("request", method = %request.method(), target = %request.uri());
        let call = || span.in_scope(|| ctx.gateway.call(request));
        // The answer is replaced in place on the rare paths below: a large value that the
        // common path then never copies.
        let mut close = false;
        let mut response = match catch_unwind(AssertUnwindSafe(call)) {
            Ok(response) => response,
            Err(payload) => {
                let (method, target) = requested.shown();
                tracing::error!(
                    peer = %Peer(reader.conn.peer),
                    %method,
                    %target,
                    panic = panics::message(&*payload),
                    "gateway panicked; answering 500"
                );
                panics::caught(payload);
                close = true;
                error_response(StatusCode::INTERNAL_SERVER_ERROR)
            }
        };
        if let Some(worker) = ctx.worker {
            worker.pause();
        }

        // A body the gateway broke off decides the answer: 413/400/408, or nothing at all.
        let mut outcome = Outcome::Served;
        if let Some(error) = reader.conn.body.error {
            match error.status() {
                Some(status) => {
                    outcome = Outcome::Rejected;
                    close = true;
                    let answer = error_response(status);
                    send::drop_replaced(std::mem::replace(&mut response, answer));
                }
                None => {
                    // The client is gone mid-body; answers to requests before it still go.
                    let status = response.status();
                    send::drop_replaced(response);
                    let _ = reader.conn.flush();
                    let record = access::Record {
                        peer: reader.conn.peer,
                        request: requested.for_log(config),
                        status,
                        bytes: 0,
                        started,
                    };
                    record.finish(&shared.stats, config.access_log, Outcome::Aborted);
                    reader.conn.told = true;
                    return Next::Close;
                }
            }
        }
        // A 2xx to CONNECT makes the connection a tunnel (RFC 9110 §9.3.6), which a gateway
        // cannot be given: the client (or a proxy) would send tunnel bytes that the server
        // then read as requests.
        if is_connect && response.status().is_success() {
            // Any client can send CONNECT to a gateway that accepts every method: logged
            // at most once a second, with the count.
            if let Some(count) = shared.client_made_errors.lock().pass() {
                tracing::error!(
                    status = response.status().as_u16(),
                    count,
                    "gateway accepted a CONNECT, but sgi cannot open a tunnel; answering 501"
                );
            }
            close = true;
            let answer = error_response(StatusCode::NOT_IMPLEMENTED);
            send::drop_replaced(std::mem::replace(&mut response, answer));
        }
        let body = &reader.conn.body;
        // The client did not ask for the close: it may pipeline another request at any time.
        let client_may_send = keep_alive;
        // Whether 100 Continue was never sent (the client may not send the body at all), close.
        let mut keep_alive = keep_alive
            && !close
            && (!body.continue_pending || body.is_done())
            && !shared.is_shutting_down()
            && config
                .max_requests_per_connection
                .map_or(true, |max| reader.conn.served < max);
        // Unread body on a connection that lives on: drain a little (it must not be parsed as
        // the next request), else close.
        if keep_alive && !reader.conn.body.is_done() {
            keep_alive = reader.drain(DRAIN_BUDGET);
        }
        // Bytes may still be on their way (the rest of the body, requests pipelined by a
        // client that did not ask for the close, or that CRLF): a closing connection
        // lingers, so the client reads this response instead of a reset (RFC 9112 §9.6).
        let unread =
            !self.body.is_done() || client_may_send || crlf_may_follow || self.may_have_more();
        let mut sent = self.send_response(response, version, is_head, keep_alive, ctx.worker);
        // Bytes already sent after a bodiless request the client asked to be the last would
        // make the close a reset too: a peek tells.
        if sent.next == Next::Close && !sent.cut && (unread || self.io.bytes_waiting()) {
            sent.next = Next::Linger;
        }
        if sent.cut {
            outcome = Outcome::Aborted;
        }
        let mut record = access::Record {
            peer: self.peer,
            request: requested.for_log(config),
            status: sent.status,
            bytes: sent.bytes,
            started,
        };
        if sent.parked {
            // The stream waits for its client: its outcome is told once it ends. The record
            // keeps the method and target (logged or not) for the worker that resumes it.
            if record.request.is_none() {
                record.request = requested.take();
            }
            self.park_record(record, shared, ctx.worker);
            self.told = true;
            return sent.next;
        }
        let pipelined = sent.next == Next::KeepAlive && self.head(shared) == Head::Ready;
        // A pipelined request behind this one lets its response wait and go out together,
        // up to a bound: a client that pipelines many requests and reads nothing must not
        // make the server hold their answers in memory.
        let hold = pipelined && self.out.len() < MAX_HELD_OUTPUT;
        let lost = !hold && self.flush_or_leave().is_err();
        if lost {
            // What was left in the output buffer never went out.
            outcome = Outcome::Aborted;
            record.bytes = self.body_sent;
        }
        if outcome == Outcome::Aborted {
            self.cut_pipelined(shared);
        }
        if outcome == Outcome::Served && (!self.out.is_empty() || self.has_unsent()) {
            // Held back for the next answer, or its end waits for the event loop: told
            // once the client has taken it, or left.
            self.account_when_sent(record, shared);
        } else {
            record.finish(&shared.stats, config.access_log, outcome);
        }
        self.told = true;
        if lost {
            return Next::Close;
        }
        sent.next
    }

    /// Answers a request that breaks the rules; the connection then lingers and closes.
    fn reject<G>(&mut self, ctx: &Ctx<'_, G>, error: Error) -> Next {
        tracing::debug!(peer = %Peer(self.peer), %error, "rejecting request");
        self.rejected(ctx.shared, error.status());
        let _ = self.send_error(error.status(), Version::HTTP_11);
        Next::Linger
    }

    /// Sends whatever is buffered for the client.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        if self.has_unsent() {
            // Bytes wait for the event loop: these go behind them.
            return self.flush_or_leave();
        }
        self.write_out_wait(b"", b"")
    }

    /// Sends a short error response with `Connection: close`.
    pub(crate) fn send_error(&mut self, status: StatusCode, version: Version) -> io::Result<()> {
        let is_head = self.requested_head();
        self.send_response(error_response(status), version, is_head, false, None);
        self.flush()
    }

    /// Answers `status` and closes, from the event loop: one write attempt that never
    /// blocks (a client that does not read loses the courtesy, not the loop its time).
    pub(crate) fn write_error_now(&mut self, status: StatusCode) {
        self.out.clear();
        let is_head = self.requested_head();
        self.send_response(
            error_response(status),
            Version::HTTP_11,
            is_head,
            false,
            None,
        );
        let _ = self.io.write_now(&[io::IoSlice::new(&self.out)]);
        self.out.clear();
    }

    /// Storage the connection can give back while it idles.
    pub(crate) fn release_buffers(&mut self) -> Option<Vec<u8>> {
        if self.out.capacity() > 64 * 1024 {
            self.out = Vec::new();
        }
        self.buf.release()
    }
}

/// How much of an unread request body is drained to keep a connection alive.
const DRAIN_BUDGET: u64 = 64 * 1024;
/// Most bytes of answers held back to go out with those of the pipelined requests behind
/// them; past this they are written before the next request is served.
const MAX_HELD_OUTPUT: usize = 64 * 1024;

/// A plain-text error response the server itself sends.
pub(crate) fn error_response(status: StatusCode) -> Response {
    let reason = status.canonical_reason().unwrap_or("Error");
    let mut response = HttpResponse::new(Body::from(format!("{} {reason}\n", status.as_u16())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// How far the event loop has decoded a chunked body it waits for.
#[derive(Debug, Default)]
struct BodyScan {
    decoder: ChunkedDecoder,
    /// Bytes after the head gone through.
    at: usize,
    /// Body data among them.
    data: u64,
}

/// Whether `bytes` hold a whole chunked body, or one that a worker should answer now (it is
/// malformed or over `max_body`), going on from where `scan` stopped.
fn chunked_complete(bytes: &[u8], scan: &mut BodyScan, limits: &Limits) -> bool {
    let over = |scan: &BodyScan| limits.max_body.is_some_and(|max| scan.data > max);
    if over(scan) {
        return true; // decided already (the decoder itself would only ask for more)
    }
    loop {
        match scan.decoder.step(&bytes[scan.at..], limits) {
            Ok(Step::Framing(n)) => scan.at += n,
            Ok(Step::Data(n)) => {
                scan.decoder.consume(n);
                scan.at += n;
                scan.data += n as u64;
                if over(scan) {
                    return true;
                }
            }
            Ok(Step::NeedMore) => return false,
            Ok(Step::Done(_)) | Err(_) => return true,
        }
    }
}

/// Whether a head has a field line that may frame a body (a quick look at line starts;
/// the parser decides for real).
fn declares_body(head: &[u8]) -> bool {
    // A field line starts after a line end (the request line cannot declare a body). A
    // false "yes" costs only a parse in the loop.
    memchr::memchr_iter(b'\n', head).any(|nl| {
        let line = &head[nl + 1..];
        let starts =
            |name: &[u8]| line.len() > name.len() && line[..name.len()].eq_ignore_ascii_case(name);
        starts(b"content-length:") || starts(b"transfer-encoding:")
    })
}

/// A peer address in the access log: the address, or `-` when unknown.
pub(crate) struct Peer(pub(crate) Option<SocketAddr>);

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) => addr.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// The access line (and count) of a connection the dev server sheds with `503`: no request
/// of it was read, so its method and target are `-`.
pub(crate) fn log_shed(shared: &Shared, peer: Option<SocketAddr>) {
    if shared.config.access_log {
        tracing::info!(
            target: "sgi::access",
            peer = %Peer(peer),
            method = "-",
            target = "-",
            status = StatusCode::SERVICE_UNAVAILABLE.as_u16(),
            rejected = true,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::declares_body;
    use crate::http1::{scan_head, HeadScan};

    #[test]
    fn a_head_declares_a_body_by_a_framing_field_at_a_line_start() {
        let get = b"GET / HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n";
        assert!(!declares_body(get));
        assert!(declares_body(
            b"POST / HTTP/1.1\r\nHost: x\r\ncontent-LENGTH: 5\r\n\r\n"
        ));
        assert!(declares_body(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nHost: x\r\n\r\n"
        ));
        // The names inside a value, or in the target, are not fields.
        assert!(!declares_body(
            b"GET /content-length:5 HTTP/1.1\r\nX: transfer-encoding: chunked\r\n\r\n"
        ));
        // A name alone at the very end is not a field line with a value.
        assert!(!declares_body(b"GET / HTTP/1.1\r\nContent-Length:"));
    }

    /// The head scan's hint never misses a framing field, whatever pieces the head
    /// arrives in, and stays off for heads without one.
    #[test]
    fn the_head_scan_notes_every_line_that_may_frame_a_body() {
        let limits = crate::Limits::default();
        let heads: [&[u8]; 6] = [
            b"POST / HTTP/1.1\r\nHost: x\r\ncontent-LENGTH: 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nHost: x\r\n\r\n",
            b"\r\nPUT /c HTTP/1.1\r\nTRANSFER-ENCODING: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n",
            b"GET /content-length:5 HTTP/1.1\r\nX: transfer-encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        ];
        for head in heads {
            for split in 1..head.len() {
                let mut scan = HeadScan::default();
                let first = scan_head(&head[..split], &mut scan, &limits);
                assert_eq!(first.unwrap(), None);
                let found = scan_head(head, &mut scan, &limits).unwrap();
                assert_eq!(found, Some(head.len()));
                if declares_body(head) {
                    assert!(
                        scan.may_frame,
                        "{:?} split at {split}",
                        String::from_utf8_lossy(head)
                    );
                }
            }
            let mut scan = HeadScan::default();
            scan_head(head, &mut scan, &limits).unwrap();
            let starts_c_or_t = head.starts_with(b"GET / HTTP/1.1\r\nHost: x\r\nC");
            assert_eq!(scan.may_frame, declares_body(head) || starts_c_or_t);
        }
    }
}
