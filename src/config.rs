use std::sync::Arc;
use std::time::Duration;

/// Size limits on what a client may send. The request line, field count and field line
/// limits are Gunicorn's (4094, 100 and 8190 bytes).
///
/// ```
/// let limits = sgi::Limits { max_body: Some(1 << 20), ..Default::default() };
/// assert_eq!(limits.max_headers, 100);
/// ```
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest request line, without its CRLF (414 above it). Default 4094 bytes.
    pub max_request_line: usize,
    /// Most header fields in a request, or trailer fields in a chunked body (431 above it).
    /// Default 100.
    pub max_headers: usize,
    /// Longest single header field line, CRLF included (431 above it). Default 8190 bytes.
    pub max_header_field: usize,
    /// Largest whole request head: request line, fields and the blank line (431 above it).
    /// Default 64 KiB.
    pub max_head: usize,
    /// Largest request body, `None` for no limit (413 above it). Default 64 MiB.
    pub max_body: Option<u64>,
    /// Request bodies up to this size are read whole by the pool's event loop before a
    /// worker takes the request, so a slow upload holds no worker (larger ones are
    /// streamed by the worker). A chunked body is read until its end or this size. 0 turns
    /// this off, for gateways that read a body while it is still being produced (see
    /// [`Input`](crate::Input)). Default 16 KiB.
    pub max_buffered_body: usize,
    /// Slowest average rate, in bytes per second, at which a request body must arrive once
    /// [`Timeouts::body_grace`] has passed (408 below it), as Kestrel does: a client that
    /// trickles an upload a byte at a time, each within `timeouts.body`, would otherwise
    /// hold a pool worker (or a dev server thread) for as long as it likes. A small body
    /// the pool's event loop takes in (see `max_buffered_body`) holds no worker, but a
    /// connection, and keeps to the same rate from the end of its head. 0 turns it off.
    /// Default 240 bytes/s.
    pub min_body_rate: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_line: 4094,
            max_headers: 100,
            max_header_field: 8190,
            max_head: 64 * 1024,
            max_body: Some(64 * 1024 * 1024),
            max_buffered_body: 16 * 1024,
            min_body_rate: 240,
        }
    }
}

/// How long each phase of a connection may take. A client that stalls past one is closed,
/// and nothing else waits on it. Each is used between 1 ms and a year: `Duration::MAX`
/// means "never" in practice, and zero the shortest wait.
///
/// ```
/// use std::time::Duration;
/// let t = sgi::Timeouts { idle: Duration::from_secs(75), ..Default::default() };
/// assert_eq!(t.head, Duration::from_secs(10));
/// ```
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// From the first byte of a request to the end of its head. Default 10 s.
    pub head: Duration,
    /// Longest wait for more body bytes while a gateway reads its input. Default 30 s.
    pub body: Duration,
    /// How long a request body may arrive below [`Limits::min_body_rate`], from the
    /// server's first wait for it. Default 5 s.
    pub body_grace: Duration,
    /// How long a keep-alive connection may wait for its next request. Default 15 s.
    pub idle: Duration,
    /// Longest time the client may take no response bytes at all (on Linux; elsewhere,
    /// the longest wait for room in the socket). Default 30 s.
    pub write: Duration,
    /// How long a gateway's code may run before the pool reports it stuck and starts a
    /// fresh worker in its place: its call, or the making of one piece of a streamed body
    /// (time spent waiting on a slow client is not counted; `write` bounds that). The dev
    /// server's thread per connection needs no replacement and reports nothing. Default
    /// 60 s. Checked every 100 ms: a report comes up to that late, never early.
    ///
    /// A long-lived stream (server-sent events, long polling) whose iterator waits for its
    /// next event counts as gateway code running, unless it waits through
    /// [`sgi::waiting`](crate::waiting); otherwise such a stream is reported stuck and its
    /// worker replaced. Each such stream also holds a pool worker for its whole life, so
    /// size `workers` for them.
    pub request: Duration,
    /// How long a graceful shutdown lets in-flight requests finish. Default 30 s.
    pub shutdown: Duration,
    /// How long a connection the server closes while the client may still be sending
    /// keeps draining the client's bytes, so that the last response is not lost to a TCP
    /// reset: after an error answer, after an answer that leaves a body unread, or after
    /// a close the client did not ask for. Default 2 s.
    pub linger: Duration,
}

impl Timeouts {
    /// Each timeout brought into what the server can use: at least 1 ms (a socket takes no
    /// zero timeout) and at most a year (`Duration::MAX` reads as "never", and deadlines
    /// after it must still be representable).
    pub(crate) fn bounded(&self) -> Timeouts {
        let bound = |d: Duration| d.clamp(Duration::from_millis(1), YEAR);
        Timeouts {
            head: bound(self.head),
            body: bound(self.body),
            body_grace: bound(self.body_grace),
            idle: bound(self.idle),
            write: bound(self.write),
            request: bound(self.request),
            shutdown: bound(self.shutdown),
            linger: bound(self.linger),
        }
    }
}

const YEAR: Duration = Duration::from_secs(365 * 24 * 60 * 60);

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            head: Duration::from_secs(10),
            body: Duration::from_secs(30),
            body_grace: Duration::from_secs(5),
            idle: Duration::from_secs(15),
            write: Duration::from_secs(30),
            request: Duration::from_secs(60),
            shutdown: Duration::from_secs(30),
            linger: Duration::from_secs(2),
        }
    }
}

/// Server configuration, shared by every backend. Defaults are safe for production.
///
/// ```
/// use std::time::Duration;
/// let config = sgi::Config::default()
///     .workers(8)
///     .max_connections(10_000)
///     .idle_timeout(Duration::from_secs(5))
///     .mount("/api");
/// assert_eq!(config.workers, Some(8));
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    /// Request size limits.
    pub limits: Limits,
    /// Per-phase timeouts.
    pub timeouts: Timeouts,
    /// Worker threads of the [`PoolServer`](crate::PoolServer); `None` picks 4 per core.
    pub workers: Option<usize>,
    /// Most open connections. `None` picks a backend default: 1024 connection threads for
    /// the [`DevServer`](crate::DevServer) (fewer if the file descriptor limit allows fewer),
    /// and what the file descriptor limit allows for the [`PoolServer`](crate::PoolServer).
    ///
    /// At the cap the dev server answers newcomers `503`. The pool closes the connection
    /// idle longest between requests to let a newcomer in (as nginx reuses keep-alive
    /// connections); while none is idle, newcomers wait in the kernel's backlog.
    ///
    /// An idle connection costs the pool about 2 KiB; one whose request is still arriving
    /// holds what it has sent, up to [`Limits::max_head`] + [`Limits::max_buffered_body`]
    /// (80 KiB by default). Where the descriptor limit is in the hundreds of thousands (as
    /// under systemd or in containers), set a cap that this worst case fits in memory.
    pub max_connections: Option<usize>,
    /// How many streamed bodies (a [`Body::from_iter`](crate::Body::from_iter)'s or a
    /// [`Body::from_reader`](crate::Body::from_reader)'s) the
    /// [`PoolServer`](crate::PoolServer) may park at once while their clients fall behind;
    /// `None` (the default) picks the number of workers.
    ///
    /// A parked stream waits in the event loop without a worker, and a worker makes its
    /// next pieces once the client has made room. A stream beyond the cap, or with `0`
    /// every stream, holds its worker until the client has taken it all (as a Gunicorn
    /// worker does). Each parked stream keeps what its iterator or reader holds (a
    /// database cursor, a connection from a pool), so the default keeps their number near
    /// what the workers alone would have open: raise it where streams are cheap to keep
    /// and slow readers many.
    pub parked_streams: Option<usize>,
    /// Listen backlog. Default 1024.
    pub backlog: i32,
    /// Largest number of requests served on one connection before it is closed; `None` for
    /// no limit (the default).
    pub max_requests_per_connection: Option<u64>,
    /// The mount prefix (WSGI's `SCRIPT_NAME`), see [`Config::mount`]. Default empty.
    pub script_name: Arc<str>,
    /// The server name reported to gateways (WSGI's `SERVER_NAME`); `None` uses the local IP.
    pub server_name: Option<Arc<str>>,
    /// Whether to log one access line per request: a `tracing` event at `INFO`, target
    /// `sgi::access`, with fields `peer` (the client's socket address), `method`, `target`,
    /// `status`, `bytes` (of the response body handed to the socket) and `micros` (from
    /// the first byte of the request to the last of the response handed to the socket;
    /// on the pool, an answer the client is slow to take is logged once the event loop
    /// has written its end). Every request gets exactly one line, as it is counted in
    /// [`Stats`](crate::Stats):
    /// - requests the server answers itself (a malformed head, a limit, a timeout, also
    ///   while the gateway reads the body; a `503` from the dev server at its cap) carry
    ///   `rejected = true`, with `method` and `target` from the request line when it can
    ///   be read, else `-`;
    /// - answers cut short (the client left mid-body or mid-answer, took no bytes for the
    ///   write timeout, the body failed after its head was sent, or a shutdown deadline
    ///   passed) carry `aborted = true`, with the status the gateway chose (`499`, as
    ///   nginx logs it, when the client left before a gateway was called; `503` when a
    ///   shutdown cut a request no gateway got to) and the body bytes that went out. An
    ///   answer is counted whole once the socket has taken all of it.
    ///
    /// The `peer` is the socket's: behind a proxy, a middleware that reads the proxy's
    /// fields should log the client's address itself. Default true.
    pub access_log: bool,
    /// Whether the [`PoolServer`](crate::PoolServer)'s workers run under Linux's
    /// `SCHED_BATCH` policy. Default false.
    ///
    /// Such threads keep their fair share of the CPU but do not preempt the running thread
    /// when they wake, so on a saturated core the worker woken to stand by at the event loop
    /// does not interrupt the one serving requests. The price is
    /// paid whenever the core has anything else to run, even a `nice 19` build: every
    /// wake-up of a worker (a request arriving at an idle server) then waits for the
    /// running task's time slice to end, about a scheduler tick. In one measurement with
    /// a niced compiler sharing the server's core, one connection's median latency went
    /// from 58 µs to 1.08 ms (BENCHMARKS.md). Turn it on only for a server that has its
    /// cores to itself and runs them saturated. Threads already under another policy keep
    /// it. No effect on other systems or on the dev server.
    ///
    /// Threads a gateway starts from a worker (a connection pool's, a runtime's) inherit
    /// the policy, as Linux threads do; a gateway that wants them under the normal policy
    /// starts them elsewhere (from `main`, before `serve`).
    pub batch_scheduling: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            workers: None,
            max_connections: None,
            parked_streams: None,
            backlog: 1024,
            max_requests_per_connection: None,
            script_name: Arc::from(""),
            server_name: None,
            access_log: true,
            batch_scheduling: false,
        }
    }
}

impl Config {
    /// Sets the number of pool worker threads.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n.max(1));
        self
    }
    /// Sets how many streamed bodies the pool may park while their clients fall behind
    /// (see [`Config::parked_streams`]; `0` parks none).
    ///
    /// ```
    /// let config = sgi::Config::default().workers(8).parked_streams(64);
    /// assert_eq!(config.parked_streams, Some(64));
    /// ```
    pub fn parked_streams(mut self, n: usize) -> Self {
        self.parked_streams = Some(n);
        self
    }
    /// Sets the most open connections.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = Some(n.max(1));
        self
    }
    /// Sets the size limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
    /// Sets the timeouts.
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }
    /// Sets the idle keep-alive timeout.
    pub fn idle_timeout(mut self, d: std::time::Duration) -> Self {
        self.timeouts.idle = d;
        self
    }
    /// Sets the largest accepted request body (`None`: no limit).
    pub fn max_body(mut self, n: Option<u64>) -> Self {
        self.limits.max_body = n;
        self
    }
    /// Sets the mount prefix (WSGI's `SCRIPT_NAME`): gateways see it as
    /// [`Environ::script_name`](crate::Environ), and a request path that starts with it has
    /// it taken off (`/api/users` comes as `/users`), so that prefix and path together are
    /// the path as sent; the prefix alone, `/api` as `/api/`, comes as `/` (a path cannot
    /// be empty; [`RequestExt::original_uri`](crate::RequestExt::original_uri) tells the
    /// two apart, and the access log shows the target as sent). A path that does not start with it is
    /// passed on as it is, `script_name` still set (a proxy in front may strip the prefix
    /// itself). To answer `404` outside the prefix instead, wrap the gateway in
    /// [`Mount`](crate::middleware::Mount), which also matches the path as sent (`%61pi`
    /// is not `api` to it).
    ///
    /// ```
    /// use sgi::{Body, Config, Request, RequestExt, Response, TestClient};
    ///
    /// let app = |req: Request<'_>| {
    ///     Response::new(Body::from(format!("{} {}", req.environ().script_name, req.uri())))
    /// };
    /// let client = TestClient::with_config(app, Config::default().mount("/api/"));
    /// assert_eq!(client.get("/api/users?x=1").send().body(), "/api /users?x=1");
    /// assert_eq!(client.get("/users").send().body(), "/api /users");
    ///
    /// // The prefix is a path: a missing leading `/` is supplied.
    /// assert_eq!(&*Config::default().mount("api").script_name, "/api");
    /// ```
    pub fn mount(mut self, prefix: &str) -> Self {
        self.script_name = crate::middleware::normalize_prefix(prefix);
        self
    }
    /// Sets the server name reported to gateways (WSGI's `SERVER_NAME`).
    pub fn server_name(mut self, name: &str) -> Self {
        self.server_name = Some(Arc::from(name));
        self
    }
    /// Sets the listen backlog.
    pub fn backlog(mut self, n: i32) -> Self {
        self.backlog = n;
        self
    }
    /// Turns the per-request access log on or off (see
    /// [`access_log`](Config#structfield.access_log) for its fields).
    ///
    /// ```
    /// let config = sgi::Config::default().access_log(false);
    /// assert!(!config.access_log);
    /// ```
    pub fn access_log(mut self, on: bool) -> Self {
        self.access_log = on;
        self
    }
    /// Turns `SCHED_BATCH` for the pool's threads on or off (see
    /// [`batch_scheduling`](Config#structfield.batch_scheduling)).
    ///
    /// ```
    /// let config = sgi::Config::default().batch_scheduling(true);
    /// assert!(config.batch_scheduling);
    /// ```
    pub fn batch_scheduling(mut self, on: bool) -> Self {
        self.batch_scheduling = on;
        self
    }

    /// The pool size this configuration asks for.
    /// The pool's size: at least 1, as the setter ensures (the field is public, and a pool
    /// of none would accept connections and never answer them).
    pub(crate) fn pool_workers(&self) -> usize {
        self.workers
            .unwrap_or_else(|| 4 * std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1)
    }

    /// How many streams the pool may park (see [`Config::parked_streams`]).
    pub(crate) fn pool_parked_streams(&self) -> usize {
        self.parked_streams.unwrap_or_else(|| self.pool_workers())
    }

    /// The connection cap, `default` if none is set; at least 1, as the setter ensures.
    pub(crate) fn connection_cap(&self, default: impl FnOnce() -> usize) -> usize {
        self.max_connections.unwrap_or_else(default).max(1)
    }
}
