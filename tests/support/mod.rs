//! What the integration tests share: a server started on a free port of 127.0.0.1 and
//! stopped when dropped, a raw HTTP/1.1 client for framing cases, a ureq agent for ordinary
//! traffic, and a gate that holds gateways until a test lets them go.
//!
//! Every wait here is bounded: sockets time out after [`PATIENCE`], and conditions are polled
//! until [`PATIENCE`] passes, so a bug fails a test instead of hanging it.
#![allow(dead_code)] // each test file uses its own part of this module

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sgi::{
    Body, Config, DevServer, Gateway, Handle, PoolServer, Request, RequestExt, Response, Timeouts,
};

/// The longest any test waits for the server before failing.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A backend to run a test against. Adding one takes a variant here, its arm in [`start`]
/// and its line in [`on_every_backend!`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The thread-per-connection [`DevServer`].
    Dev,
    /// The worker pool behind an event loop, [`PoolServer`].
    Pool,
}

/// Declares each listed `fn name(backend: Backend)` as a test on every backend, in a module
/// named after the backend (`dev::name`). A listed name without its function fails to
/// compile, and a function left off the list is reported as dead code.
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        $crate::on_every_backend!(@backend dev Dev [$($name),*]);
        $crate::on_every_backend!(@backend pool Pool [$($name),*]);
    };
    (@backend $module:ident $variant:ident [$($name:ident),*]) => {
        mod $module {
            $(
                #[test]
                fn $name() {
                    super::$name($crate::support::Backend::$variant)
                }
            )*
        }
    };
}

/// A configuration for tests: the defaults, with a shutdown and a linger short enough that a
/// failing test still ends quickly.
pub fn config() -> Config {
    Config::default().timeouts(Timeouts {
        shutdown: Duration::from_secs(5),
        linger: Duration::from_secs(1),
        ..Timeouts::default()
    })
}

/// The test [`config`] with its timeouts changed by `change`.
pub fn with_timeouts(change: impl FnOnce(&mut Timeouts)) -> Config {
    let mut config = config();
    change(&mut config.timeouts);
    config
}

/// Starts `gateway` on `backend`, bound to a free port of 127.0.0.1 (`bind_with`).
pub fn start<G: Gateway>(backend: Backend, config: Config, gateway: G) -> Running {
    start_with(backend, None, config, gateway)
}

/// Starts `gateway` on `backend`, serving on `listener` (bound and listening already:
/// `from_listener`).
pub fn start_on<G: Gateway>(
    backend: Backend,
    listener: std::net::TcpListener,
    config: Config,
    gateway: G,
) -> Running {
    start_with(backend, Some(listener), config, gateway)
}

fn start_with<G: Gateway>(
    backend: Backend,
    listener: Option<std::net::TcpListener>,
    config: Config,
    gateway: G,
) -> Running {
    const FREE_PORT: &str = "127.0.0.1:0";
    let (addr, handle, serving) = match backend {
        Backend::Dev => {
            let server = match listener {
                Some(listener) => DevServer::from_listener(listener, config),
                None => DevServer::bind_with(FREE_PORT, config),
            };
            let server = server.expect("bind");
            (
                server.local_addr(),
                server.handle(),
                spawn(|| server.serve(gateway)),
            )
        }
        Backend::Pool => {
            // A small pool unless the test sets one, so work also queues behind busy workers.
            let config = match config.workers {
                Some(_) => config,
                None => config.workers(4),
            };
            let server = match listener {
                Some(listener) => PoolServer::from_listener(listener, config),
                None => PoolServer::bind_with(FREE_PORT, config),
            };
            let server = server.expect("bind");
            (
                server.local_addr(),
                server.handle(),
                spawn(|| server.serve(gateway)),
            )
        }
    };
    Running {
        addr,
        handle,
        serving: Some(serving),
    }
}

fn spawn(serve: impl FnOnce() -> io::Result<()> + Send + 'static) -> JoinHandle<io::Result<()>> {
    std::thread::Builder::new()
        .name("test-serve".into())
        .spawn(serve)
        .expect("spawn the serving thread")
}

/// A server serving on its own thread; dropping it shuts it down and waits for `serve`.
#[derive(Debug)]
pub struct Running {
    /// The bound address.
    pub addr: SocketAddr,
    /// The server's handle.
    pub handle: Handle,
    serving: Option<JoinHandle<io::Result<()>>>,
}

impl Running {
    /// `http://127.0.0.1:port{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Opens a raw connection.
    pub fn connect(&self) -> RawClient {
        RawClient::connect(self.addr)
    }

    /// Whether `serve` has returned.
    pub fn has_stopped(&self) -> bool {
        self.serving.as_ref().map_or(true, |t| t.is_finished())
    }

    /// Starts a graceful shutdown and returns what `serve` returned.
    pub fn stop(mut self) -> io::Result<()> {
        self.handle.shutdown();
        self.join()
    }

    /// Waits (within [`PATIENCE`]) for `serve` to return, and returns its result.
    pub fn join(&mut self) -> io::Result<()> {
        let Some(serving) = self.serving.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + PATIENCE;
        while !serving.is_finished() {
            assert!(
                Instant::now() < deadline,
                "serve did not return within {PATIENCE:?} of shutdown"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        match serving.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.handle.shutdown();
        if std::thread::panicking() {
            // The test already failed; do not hide its message behind a second panic.
            if let Some(serving) = self.serving.take() {
                let deadline = Instant::now() + PATIENCE;
                while !serving.is_finished() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        } else {
            self.join().expect("serve returned an error");
        }
    }
}

/// Polls `condition` until it holds; panics naming `what` after [`PATIENCE`].
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "gave up after {PATIENCE:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A ureq agent with bounded timeouts (it keeps connections alive between requests).
pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(PATIENCE).build()
}

/// The response to a ureq request; an error status is a response here, not an error.
pub fn response(result: Result<ureq::Response, ureq::Error>) -> ureq::Response {
    match result {
        Ok(response) | Err(ureq::Error::Status(_, response)) => response,
        Err(e) => panic!("request failed: {e}"),
    }
}

/// Answers `{METHOD} {target}\n{body}`, reading the whole body first.
pub fn echo(mut req: Request<'_>) -> Response {
    let mut body = Vec::new();
    if let Err(e) = req.body_mut().read_to_end(&mut body) {
        // The server replaces this answer with its own (413, 400, 408).
        return Response::new(Body::from(format!("body error: {e}")));
    }
    Response::new(Body::from(format!(
        "{} {}\n{}",
        req.method(),
        req.uri(),
        String::from_utf8_lossy(&body)
    )))
}

/// Answers the request target without reading the body.
pub fn target(req: Request<'_>) -> Response {
    Response::new(Body::from(req.uri().to_string()))
}

/// Answers the request's [`Environ`](sgi::Environ) as JSON.
pub fn environ(req: Request<'_>) -> Response {
    let env = req.environ();
    let json = serde_json::json!({
        "peer_addr": env.peer_addr.map(|a| a.to_string()),
        "local_addr": env.local_addr.map(|a| a.to_string()),
        "url_scheme": env.url_scheme.as_str(),
        "server_name": &*env.server_name,
        "server_port": env.server_port,
        "script_name": &*env.script_name,
        "request_index": env.request_index,
    });
    Response::new(Body::from(json.to_string()))
}

/// Holds gateways until the test opens it, counting who waits.
#[derive(Debug, Default)]
pub struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    open: bool,
    waiting: usize,
}

impl Gate {
    pub fn new() -> Arc<Gate> {
        Arc::default()
    }

    /// Blocks until the gate opens (or [`PATIENCE`] passes, so a failed test still ends).
    pub fn pass(&self) {
        let mut state = self.state.lock().unwrap();
        state.waiting += 1;
        self.changed.notify_all();
        let (mut state, _) = self
            .changed
            .wait_timeout_while(state, PATIENCE, |s| !s.open)
            .unwrap();
        state.waiting -= 1;
    }

    /// Lets every waiting and later caller through.
    pub fn open(&self) {
        self.state.lock().unwrap().open = true;
        self.changed.notify_all();
    }

    /// Blocks until `n` callers wait at the gate; panics after [`PATIENCE`].
    pub fn wait_for_waiting(&self, n: usize) {
        let state = self.state.lock().unwrap();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, PATIENCE, |s| s.waiting < n)
            .unwrap();
        assert!(
            state.waiting >= n,
            "{} gateway(s) reached the gate, expected {n}",
            state.waiting
        );
    }
}

/// One response as read off the wire.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// Header fields in order, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Reply {
    /// The first value of field `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.all(name).into_iter().next()
    }

    /// Every value of field `name`.
    pub fn all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Whether the response says `Connection: close`.
    pub fn closes(&self) -> bool {
        self.all("connection")
            .iter()
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client that writes raw bytes and reads responses with strict HTTP/1.1 framing.
#[derive(Debug)]
pub struct RawClient {
    stream: TcpStream,
    /// Bytes received and not yet parsed.
    pending: Vec<u8>,
}

impl RawClient {
    pub fn connect(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.set_write_timeout(Some(PATIENCE)).unwrap();
        RawClient {
            stream,
            pending: Vec::new(),
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().unwrap()
    }

    /// Another handle to the same socket (to write from a second thread).
    pub fn try_clone_stream(&self) -> TcpStream {
        self.stream.try_clone().unwrap()
    }

    pub fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream
            .write_all(bytes.as_ref())
            .expect("write to the server");
    }

    /// Reads one response (an interim 1xx one included) to a request other than `HEAD`.
    pub fn response(&mut self) -> Reply {
        self.try_response(false)
            .unwrap_or_else(|e| panic!("no complete response: {e}"))
    }

    /// Reads one response to a `HEAD` request (no body follows, whatever the framing says).
    pub fn head_response(&mut self) -> Reply {
        self.try_response(true)
            .unwrap_or_else(|e| panic!("no complete response: {e}"))
    }

    /// Reads one response; `UnexpectedEof` if the connection ends before it is complete.
    pub fn try_response(&mut self, to_head: bool) -> io::Result<Reply> {
        let status_line = self.line()?;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        assert!(
            version == "HTTP/1.1" || version == "HTTP/1.0",
            "bad status line {status_line:?}"
        );
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let line = self.line()?;
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("bad header line {line:?}"));
            assert!(
                !name.is_empty() && !name.contains(char::is_whitespace),
                "bad header name in {line:?}"
            );
            headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
        }
        let mut reply = Reply {
            status,
            headers,
            body: Vec::new(),
        };
        let bodiless = to_head || (100..200).contains(&status) || status == 204 || status == 304;
        if bodiless {
            return Ok(reply);
        }
        let chunked = reply.header("transfer-encoding").map(|te| {
            te.rsplit(',')
                .next()
                .unwrap()
                .trim()
                .eq_ignore_ascii_case("chunked")
        });
        reply.body = match (chunked, reply.header("content-length")) {
            (Some(true), None) => self.chunked_body()?,
            (Some(_), _) => panic!("bad response framing: {:?}", reply.headers),
            (None, Some(len)) => {
                let len: usize = len
                    .parse()
                    .unwrap_or_else(|_| panic!("bad Content-Length {len:?}"));
                self.exactly(len)?
            }
            (None, None) => self.read_to_end(),
        };
        Ok(reply)
    }

    /// Reads until the bytes received and not yet parsed contain `needle`; panics if they
    /// do not within `within`. What was read stays for the readers above.
    pub fn wait_for(&mut self, needle: &[u8], within: Duration) {
        let deadline = Instant::now() + within;
        while !self.pending.windows(needle.len()).any(|w| w == needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{:?} not received within {within:?}; so far: {:?}",
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(&self.pending)
            );
            self.stream.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!(
                    "closed before {:?} came; so far: {:?}",
                    String::from_utf8_lossy(needle),
                    String::from_utf8_lossy(&self.pending)
                ),
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("reading from the server: {e}"),
            }
        }
        self.stream.set_read_timeout(Some(PATIENCE)).unwrap();
    }

    /// Reads until the server closes; returns everything not parsed yet.
    pub fn read_to_end(&mut self) -> Vec<u8> {
        while self.fill().expect("read until the server closes") > 0 {}
        std::mem::take(&mut self.pending)
    }

    /// Closes the connection with a reset (`SO_LINGER` 0), as a client that gives up does.
    pub fn reset(self) {
        socket2::SockRef::from(&self.stream)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    }

    /// Asserts that the connection ends in a reset (after whatever bytes came first), not
    /// in an orderly close, nor by the server keeping it open (the read times out).
    pub fn expect_reset(&mut self) {
        loop {
            match self.fill() {
                Ok(0) => panic!(
                    "ended in an orderly close after {:?}",
                    String::from_utf8_lossy(&self.pending)
                ),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return,
                Err(e) => panic!("expected a reset, got {e}"),
            }
        }
    }

    /// Asserts that the server closes the connection with nothing more to say.
    pub fn expect_closed(&mut self) {
        let read = match self.pending.len() {
            0 => self.fill(),
            n => Ok(n),
        };
        match read {
            Ok(0) => {}
            // A reset also ends the connection; what matters is that no bytes came first.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("connection not closed: {e}"),
            Ok(_) => {
                panic!(
                    "expected the connection to close, got {:?}",
                    String::from_utf8_lossy(&self.pending)
                );
            }
        }
    }

    /// One read from the socket into `pending`; 0 at end of stream. A timeout panics.
    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(n) => {
                self.pending.extend_from_slice(&chunk[..n]);
                Ok(n)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                panic!(
                    "the server sent nothing for {PATIENCE:?}; so far: {:?}",
                    String::from_utf8_lossy(&self.pending)
                )
            }
            Err(e) => Err(e),
        }
    }

    fn eof() -> io::Error {
        io::Error::new(io::ErrorKind::UnexpectedEof, "server closed mid-response")
    }

    /// One CRLF-terminated line, without its CRLF.
    fn line(&mut self) -> io::Result<String> {
        loop {
            if let Some(i) = self.pending.windows(2).position(|w| w == b"\r\n") {
                let line = self.pending.drain(..i + 2).take(i).collect::<Vec<u8>>();
                return Ok(String::from_utf8(line).expect("response line is not UTF-8"));
            }
            if self.fill()? == 0 {
                return Err(Self::eof());
            }
        }
    }

    fn exactly(&mut self, len: usize) -> io::Result<Vec<u8>> {
        while self.pending.len() < len {
            if self.fill()? == 0 {
                return Err(Self::eof());
            }
        }
        Ok(self.pending.drain(..len).collect())
    }

    fn chunked_body(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.line()?;
            let size = line.split(';').next().unwrap().trim();
            let size = usize::from_str_radix(size, 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
            if size == 0 {
                break;
            }
            body.extend(self.exactly(size)?);
            let end = self.exactly(2)?;
            assert_eq!(end, b"\r\n", "chunk data not followed by CRLF");
        }
        while !self.line()?.is_empty() {} // trailer fields
        Ok(body)
    }
}

/// Log output captured from this test binary's process-wide `tracing` subscriber.
#[derive(Clone, Default)]
pub struct CapturedLog(Arc<Mutex<Vec<u8>>>);

impl Write for CapturedLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl CapturedLog {
    /// Installs the subscriber with `filter` (e.g. `"sgi::access=info"`) on first use; the
    /// subscriber is process-wide, so a test binary uses one filter.
    pub fn install(filter: &'static str) -> &'static CapturedLog {
        static LOG: std::sync::OnceLock<CapturedLog> = std::sync::OnceLock::new();
        LOG.get_or_init(|| {
            let log = CapturedLog::default();
            let writer = log.clone();
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .init();
            log
        })
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}
