//! An in-process client that drives any [`Gateway`] through the real connection core, over
//! memory instead of a socket (as Werkzeug's test client does). Responses come back with the
//! server's own semantics: framing, `HEAD`, `Date`, error answers.
//!
//! What memory cannot show: the whole request is in before the gateway runs, and the input
//! ends after it, as if the client had sent everything and then closed its side. So
//! - no timeout applies (a request cut short is not answered: see [`TestRequest::send`]);
//! - `Expect: 100-continue` sends a `100 Continue` only for a body larger than the
//!   server's first read (about 80 KiB, head included), as the rest is then not yet
//!   "there"; [`TestResponse`] skips interim responses anyway ([`TestClient::raw`] shows
//!   them);
//! - a panic in the gateway's code (its call, its body, their `Drop`) fails the test: the
//!   exchange runs to its end as on a server (`500`, or a cut response), then the panic
//!   is raised again in the test, as Werkzeug's test client re-raises an app's exception;
//!   [`TestClient::propagate_panics`] turns that off to look at the server's answer;
//! - a body the gateway leaves unread has always arrived whole, so the connection lives on
//!   when that rest is at most 64 KiB (see [`Input`](crate::Input)), where a real server
//!   closes it if the rest was still on its way.

use std::io::Cursor;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

use crate::conn::{panics, Conn, Ctx, Head, Next};
use crate::http1::{ChunkedDecoder, Step};
use crate::server::Shared;
use crate::transport::Memory;
use crate::{Config, Gateway};

/// Drives a gateway in process.
///
/// ```
/// use sgi::{Body, Request, Response, TestClient};
///
/// let client = TestClient::new(|req: Request<'_>| Response::new(Body::from(req.uri().to_string())));
/// let res = client.get("/a?b=c").header("x-test", "1").send();
/// assert_eq!(res.status(), 200);
/// assert_eq!(res.body(), "/a?b=c");
/// assert_eq!(res.headers()["content-length"], "6");
/// ```
pub struct TestClient {
    gateway: Box<dyn Gateway>,
    shared: Arc<Shared>,
    propagate_panics: bool,
}

impl std::fmt::Debug for TestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestClient").finish_non_exhaustive()
    }
}

impl TestClient {
    /// A client for `gateway` with the default [`Config`], but for the access log, which is
    /// off (use [`with_config`](Self::with_config) to test with it).
    pub fn new<G: Gateway>(gateway: G) -> TestClient {
        Self::with_config(gateway, Config::default().access_log(false))
    }

    /// A client for `gateway` with `config` (limits, mount prefix, server name). The
    /// gateway sees the facts of [`Environ::default`](crate::Environ): server `localhost`
    /// (unless `config` names one) on port 80, no peer or local address, `http`.
    pub fn with_config<G: Gateway>(gateway: G, config: Config) -> TestClient {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 80));
        let config = Config {
            server_name: config
                .server_name
                .clone()
                .or_else(|| Some(Arc::from("localhost"))),
            ..config
        };
        TestClient {
            gateway: Box::new(gateway),
            shared: Shared::new(config, addr),
            propagate_panics: true,
        }
    }

    /// Whether a panic in the gateway's code fails the test (the default): the exchange
    /// runs to its end as it would on a server, and then the panic is raised again here,
    /// so an assertion in a handler or a [`Validate`](crate::middleware::Validate) rule
    /// it breaks is not hidden behind a `500`. With `false`, the test sees only what a
    /// client would: the server's `500`, or a response cut short.
    ///
    /// ```
    /// use sgi::{Request, Response, TestClient};
    ///
    /// let app = |_req: Request<'_>| -> Response { panic!("the handler's bug") };
    /// let res = TestClient::new(app).propagate_panics(false).get("/").send();
    /// assert_eq!(res.status(), 500);
    ///
    /// let raised = std::panic::catch_unwind(|| TestClient::new(app).get("/").send());
    /// assert_eq!(*raised.unwrap_err().downcast::<&str>().unwrap(), "the handler's bug");
    /// ```
    pub fn propagate_panics(mut self, on: bool) -> TestClient {
        self.propagate_panics = on;
        self
    }

    /// Starts a request. The target is sent as given, so it must be one a real client could
    /// send: `/users/a%20b`, not `/users/a b`.
    ///
    /// # Panics
    /// If `target` holds a space, a control character or a non-ASCII byte (percent-encode
    /// them); [`raw`](Self::raw) sends anything.
    pub fn request(&self, method: Method, target: &str) -> TestRequest<'_> {
        assert!(
            target.bytes().all(|b| b.is_ascii_graphic()),
            "TestClient: the target {target:?} has a space, control or non-ASCII byte; \
             percent-encode it, as a real client would"
        );
        TestRequest {
            client: self,
            method,
            target: target.to_string(),
            version: Version::HTTP_11,
            headers: Vec::new(),
            body: Vec::new(),
            peer: None,
        }
    }

    /// Starts a `GET`.
    pub fn get(&self, target: &str) -> TestRequest<'_> {
        self.request(Method::GET, target)
    }

    /// Starts a `HEAD`.
    pub fn head(&self, target: &str) -> TestRequest<'_> {
        self.request(Method::HEAD, target)
    }

    /// Starts a `POST`.
    pub fn post(&self, target: &str) -> TestRequest<'_> {
        self.request(Method::POST, target)
    }

    /// Starts a `PUT`.
    pub fn put(&self, target: &str) -> TestRequest<'_> {
        self.request(Method::PUT, target)
    }

    /// Starts a `DELETE`.
    pub fn delete(&self, target: &str) -> TestRequest<'_> {
        self.request(Method::DELETE, target)
    }

    /// Starts a `PATCH`.
    pub fn patch(&self, target: &str) -> TestRequest<'_> {
        self.request(Method::PATCH, target)
    }

    /// Starts an `OPTIONS` (`"*"` asks about the server as a whole).
    pub fn options(&self, target: &str) -> TestRequest<'_> {
        self.request(Method::OPTIONS, target)
    }

    /// Feeds raw bytes to a fresh connection and returns every byte the server wrote, for
    /// protocol-level tests (pipelining, malformed input).
    ///
    /// ```
    /// let client = sgi::TestClient::new(|_req: sgi::Request<'_>| sgi::Response::new(sgi::Body::empty()));
    /// let out = client.raw(b"GET / HTTP/1.1\r\n\r\n");
    /// assert!(out.starts_with(b"HTTP/1.1 400 "));
    /// ```
    pub fn raw(&self, input: &[u8]) -> Vec<u8> {
        self.exchange(input, None).output
    }

    /// Drives one connection from `peer` over `input`; the memory holds what the server
    /// wrote.
    fn exchange(&self, input: &[u8], peer: Option<SocketAddr>) -> Memory {
        let memory = Memory {
            input: Cursor::new(input.to_vec()),
            ..Memory::default()
        };
        self.drive(memory, peer)
    }

    /// Like [`raw`](Self::raw), but each read returns bytes from one of `chunks` only, in
    /// order, as if they arrived in separate packets (empty chunks are skipped). For fuzz
    /// targets and property tests: a response must not depend on where the input was split.
    ///
    /// ```
    /// let client = sgi::TestClient::new(|_req: sgi::Request<'_>| sgi::Response::new(sgi::Body::empty()));
    /// let whole = client.raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    /// let split = client.raw_chunks(&[b"GET / HT", b"TP/1.1\r\nHost: x\r", b"\n\r\n"]);
    /// assert!(split.starts_with(b"HTTP/1.1 200 OK\r\n"));
    /// assert_eq!(whole.len(), split.len()); // equal but for the time in `date`
    /// ```
    #[doc(hidden)]
    pub fn raw_chunks(&self, chunks: &[&[u8]]) -> Vec<u8> {
        let mut memory = Memory::default();
        for chunk in chunks {
            memory.input.get_mut().extend_from_slice(chunk);
            memory.breaks.push_back(memory.input.get_ref().len() as u64);
        }
        self.drive(memory, None).output
    }

    fn drive(&self, memory: Memory, peer: Option<SocketAddr>) -> Memory {
        // Captured either way, so that a client used inside another's gateway keeps its
        // panics from the outer one's capture.
        let capture = panics::Capture::start();
        let memory = self.drive_uncaptured(memory, peer);
        match capture.finish() {
            Some(payload) if self.propagate_panics => std::panic::resume_unwind(payload),
            _ => memory,
        }
    }

    fn drive_uncaptured(&self, memory: Memory, peer: Option<SocketAddr>) -> Memory {
        let mut conn = Conn::new(memory, peer, None);
        let ctx = Ctx {
            gateway: &self.gateway,
            shared: &self.shared,
            worker: None,
        };
        loop {
            let more = conn
                .read_available(&self.shared, std::time::Instant::now())
                .unwrap_or(false);
            match conn.head(&self.shared) {
                Head::Ready if conn.serve(&ctx) != Next::KeepAlive => break,
                Head::Ready => {}
                Head::Partial if !more => {
                    conn.abandon(StatusCode::BAD_REQUEST, &self.shared);
                    break;
                }
                Head::Empty if !more => break,
                _ => {}
            }
        }
        let _ = conn.flush();
        conn.io
    }
}

/// A request being built by a [`TestClient`].
#[derive(Debug)]
pub struct TestRequest<'c> {
    client: &'c TestClient,
    method: Method,
    target: String,
    version: Version,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    peer: Option<SocketAddr>,
}

impl TestRequest<'_> {
    /// Adds a header field (repeat to send a field more than once). `name` may be a `&str`
    /// or an `http` [`HeaderName`] such as `header::CONTENT_TYPE`.
    ///
    /// # Panics
    /// If `name` is not a field name or `value` not a field value (a CR or LF would make
    /// it a second field); [`TestClient::raw`] sends anything.
    pub fn header(mut self, name: impl AsRef<str>, value: &str) -> Self {
        let name = name.as_ref();
        assert!(
            HeaderName::from_bytes(name.as_bytes()).is_ok(),
            "TestClient: {name:?} is not a header field name"
        );
        assert!(
            HeaderValue::from_str(value).is_ok(),
            "TestClient: {value:?} is not a header field value (no CR, LF or other control)"
        );
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets the body, sent as given: with `Content-Length` unless a `Transfer-Encoding`
    /// was given, in which case `body` must already be in that coding (for chunked:
    /// `"5\r\nhello\r\n0\r\n\r\n"`).
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sends the body in the chunked coding, one chunk per piece (empty pieces are
    /// skipped, as a chunk of size 0 would end the body), with `Transfer-Encoding: chunked`.
    ///
    /// ```
    /// use std::io::Read;
    /// use sgi::{Body, Request, Response, TestClient};
    ///
    /// let client = TestClient::new(|mut req: Request<'_>| {
    ///     let mut body = String::new();
    ///     req.body_mut().read_to_string(&mut body).unwrap();
    ///     Response::new(Body::from(body))
    /// });
    /// let res = client.post("/").chunked(["hel", "", "lo"]).send();
    /// assert_eq!(res.text(), "hello");
    /// ```
    pub fn chunked<P: AsRef<[u8]>>(mut self, pieces: impl IntoIterator<Item = P>) -> Self {
        let mut body = Vec::new();
        for piece in pieces {
            let piece = piece.as_ref();
            if !piece.is_empty() {
                body.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                body.extend_from_slice(piece);
                body.extend_from_slice(b"\r\n");
            }
        }
        body.extend_from_slice(b"0\r\n\r\n");
        self.body = body;
        self.header("transfer-encoding", "chunked")
    }

    /// Sends it from `peer`, which the gateway then finds in
    /// [`Environ::peer_addr`](crate::Environ) (by default there is none): to test code
    /// that looks at the client's address.
    ///
    /// ```
    /// use sgi::{Body, Request, RequestExt, Response, TestClient};
    ///
    /// let client = TestClient::new(|req: Request<'_>| {
    ///     Response::new(Body::from(format!("{:?}", req.environ().peer_addr)))
    /// });
    /// let peer = "203.0.113.7:4321".parse().unwrap();
    /// assert_eq!(client.get("/").peer(peer).send().text(), "Some(203.0.113.7:4321)");
    /// ```
    pub fn peer(mut self, peer: SocketAddr) -> Self {
        self.peer = Some(peer);
        self
    }

    /// Sends it as HTTP/1.0.
    pub fn http10(mut self) -> Self {
        self.version = Version::HTTP_10;
        self
    }

    /// Sends the request through the connection core and returns the response.
    ///
    /// # Panics
    /// If the server wrote no response: the request was cut short (a body shorter than its
    /// `Content-Length`, say), and with the input ended after it, the server sees a client
    /// that closed mid-request, which it does not answer (over a socket, a client that
    /// waits instead gets `408` after the timeout). Also if the server's output is not one
    /// well-formed response, a bug worth a panic in a test. A body cut short (a body that
    /// failed after its head was sent: the server then ends the connection) is not
    /// malformed: see [`TestResponse::is_complete`].
    pub fn send(self) -> TestResponse {
        let has = |name: &str| {
            self.headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(name))
        };
        let version = if self.version == Version::HTTP_10 {
            "HTTP/1.0"
        } else {
            "HTTP/1.1"
        };
        let mut raw = format!("{} {} {version}\r\n", self.method, self.target).into_bytes();
        if !has("host") && self.version == Version::HTTP_11 {
            raw.extend_from_slice(b"host: localhost\r\n");
        }
        if !self.body.is_empty() && !has("content-length") && !has("transfer-encoding") {
            raw.extend_from_slice(format!("content-length: {}\r\n", self.body.len()).as_bytes());
        }
        for (name, value) in &self.headers {
            raw.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        raw.extend_from_slice(&self.body);
        let memory = self.client.exchange(&raw, self.peer);
        assert!(
            !memory.output.is_empty(),
            "TestClient: no response; the request ends before its body does (the input \
             ends after the request, as if the client had closed)"
        );
        let mut response = TestResponse::parse(&memory.output, self.method == Method::HEAD)
            .unwrap_or_else(|| {
                let start = String::from_utf8_lossy(&memory.output[..memory.output.len().min(200)]);
                panic!("TestClient: the server wrote a malformed response: {start:?}")
            });
        // A body delimited by the close ends in a reset when it was cut short.
        response.complete &= !memory.reset;
        response
    }
}

/// A response received by a [`TestClient`].
#[derive(Debug, Clone)]
pub struct TestResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    complete: bool,
}

impl TestResponse {
    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The header fields as sent by the server.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The body, de-chunked.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Whether the body arrived whole. False when the connection ended before the body
    /// did, as when a body fails after its head was sent: a real client sees such a body
    /// cut short (and `body` holds what came before the cut).
    ///
    /// ```
    /// use sgi::{Body, Request, Response, TestClient};
    ///
    /// let client = TestClient::new(|_req: Request<'_>| {
    ///     let pieces = vec![Ok("partial".into()), Err(std::io::Error::other("the database went away"))];
    ///     Response::new(Body::from_iter(pieces))
    /// });
    /// let res = client.get("/").send();
    /// assert_eq!(res.status(), 200);
    /// assert_eq!((res.text().as_str(), res.is_complete()), ("partial", false));
    /// ```
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// Parses one response (skipping interim 1xx ones) from raw bytes.
    pub(crate) fn parse(raw: &[u8], head_request: bool) -> Option<TestResponse> {
        let mut raw = raw;
        let mut storage = vec![httparse::EMPTY_HEADER; 128];
        loop {
            let mut res = httparse::Response::new(&mut storage);
            let len = match res.parse(raw) {
                Ok(httparse::Status::Complete(len)) => len,
                // Servers send as many fields as the gateway sets.
                Err(httparse::Error::TooManyHeaders) if storage.len() < raw.len() => {
                    storage = vec![httparse::EMPTY_HEADER; storage.len() * 2];
                    continue;
                }
                _ => return None,
            };
            let status = StatusCode::from_u16(res.code?).ok()?;
            let mut headers = HeaderMap::new();
            for h in res.headers.iter() {
                headers.append(
                    HeaderName::from_bytes(h.name.as_bytes()).ok()?,
                    HeaderValue::from_bytes(h.value).ok()?,
                );
            }
            let rest = &raw[len..];
            if status.is_informational() {
                raw = rest;
                continue;
            }
            let no_body = head_request
                || status == StatusCode::NO_CONTENT
                || status == StatusCode::NOT_MODIFIED;
            let (body, complete) = if no_body {
                (Bytes::new(), true)
            } else if headers
                .get("transfer-encoding")
                .is_some_and(|v| v == "chunked")
            {
                dechunk(rest)?
            } else if let Some(len) = headers.get("content-length") {
                let len: usize = len.to_str().ok()?.parse().ok()?;
                let got = rest.len().min(len);
                (Bytes::copy_from_slice(&rest[..got]), got == len)
            } else {
                (Bytes::copy_from_slice(rest), true)
            };
            return Some(TestResponse {
                status,
                headers,
                body,
                complete,
            });
        }
    }
}

/// The de-chunked body and whether it ended (`None` if its framing is broken).
fn dechunk(mut raw: &[u8]) -> Option<(Bytes, bool)> {
    let limits = crate::Limits::default();
    let mut dec = ChunkedDecoder::new();
    let mut out = Vec::new();
    loop {
        match dec.step(raw, &limits).ok()? {
            Step::Framing(n) => raw = &raw[n..],
            Step::Data(n) => {
                out.extend_from_slice(&raw[..n]);
                dec.consume(n);
                raw = &raw[n..];
            }
            Step::Done(_) => return Some((out.into(), true)),
            Step::NeedMore => return Some((out.into(), false)),
        }
    }
}
