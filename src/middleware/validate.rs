//! `Validate`: a contract checker for tests, in the spirit of Python's `wsgiref.validate`.
//! The rules are listed in the [module docs](crate::middleware#the-rules-validate-checks).

use std::fmt::Display;
use std::io::{self, BufRead, Read};

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::{Method, StatusCode};

use crate::body::Kind;
use crate::http1::{only_close_or_upgrade, owned_hop_by_hop};
use crate::input::Source;
use crate::{Body, Environ, Gateway, Input, Request, Response};

/// Checks both sides of the gateway contract and panics, naming the rule, when one is
/// broken: wrap an application in it in tests (it costs a check per header and per body
/// piece, and it panics by design, so it is no production middleware).
///
/// The rules are listed in the [module docs](crate::middleware#the-rules-validate-checks).
/// On the request side it checks what the server and the middleware above the application
/// hand over; on the response side, what the application returns. A body's length is
/// checked up front when it is known and as the body is sent when it is streamed.
///
/// A correct application passes untouched:
///
/// ```
/// use sgi::middleware::Validate;
/// use sgi::http::header::CONTENT_TYPE;
/// use sgi::{Body, Request, Response, TestClient};
///
/// let app = |_req: Request<'_>| {
///     sgi::http::Response::builder()
///         .header(CONTENT_TYPE, "text/plain")
///         .body(Body::from("hello"))
///         .unwrap()
/// };
/// let res = TestClient::new(Validate::new(app)).get("/").send();
/// assert_eq!(res.body(), "hello");
/// ```
///
/// A broken one panics, naming the rule. Behind a server the client then gets `500`;
/// through a [`TestClient`](crate::TestClient) the panic is raised again in the test:
///
/// ```
/// use std::panic::{catch_unwind, AssertUnwindSafe};
/// use sgi::middleware::Validate;
/// use sgi::{Body, Request, Response, TestClient};
///
/// let client = TestClient::new(Validate::new(|_req: Request<'_>| Response::new(Body::from("no type"))));
/// let panic = catch_unwind(AssertUnwindSafe(|| client.get("/").send())).unwrap_err();
/// let message = panic.downcast_ref::<String>().unwrap();
/// assert!(message.contains(r#"rule "content-type-required""#), "{message}");
/// ```
#[derive(Debug)]
pub struct Validate<G> {
    inner: G,
}

impl<G: Gateway> Validate<G> {
    /// Wraps `inner`, checking every request it gets and every response it returns.
    ///
    /// ```
    /// use sgi::middleware::{Mount, Validate};
    /// use sgi::{Body, Request, Response, TestClient};
    ///
    /// let app = |_req: Request<'_>| Response::new(Body::empty());
    /// // Outermost, it checks the server; innermost, the middleware stack above the app too.
    /// let client = TestClient::new(Mount::new("/api", Validate::new(app)));
    /// assert_eq!(client.get("/api/").send().status(), 200);
    /// ```
    pub fn new(inner: G) -> Self {
        Validate { inner }
    }
}

impl<G: Gateway> Gateway for Validate<G> {
    fn call(&self, req: Request<'_>) -> Response {
        check_request(&req);
        let is_head = req.method() == Method::HEAD;
        let (parts, input) = req.into_parts();
        let mut input = CheckedInput {
            declared: request_content_length(&parts.headers),
            inner: input,
            seen: 0,
        };
        let req = Request::from_parts(parts, Input::new(&mut input));
        check_response(self.inner.call(req), is_head)
    }
}

/// Panics with the message every broken rule gives.
fn violated(rule: &str, what: impl Display) -> ! {
    panic!("sgi::middleware::Validate: rule {rule:?}: {what}")
}

fn check_request(req: &Request<'_>) {
    if req.extensions().get::<Environ>().is_none() {
        violated(
            "environ-present",
            "the request has no sgi::Environ in its extensions",
        );
    }
    let uri = req.uri();
    let (scheme, authority, path) = (uri.scheme(), uri.authority(), uri.path());
    let valid = match *req.method() {
        Method::CONNECT => scheme.is_none() && authority.is_some() && path.is_empty(),
        Method::OPTIONS if path == "*" => scheme.is_none() && authority.is_none(),
        _ if scheme.is_some() => authority.is_some() && path.starts_with('/'),
        _ => authority.is_none() && path.starts_with('/'),
    };
    if !valid {
        violated(
            "request-target-form",
            format!(
                "the request target {uri:?} of a {} request is neither origin-form, \
                 absolute-form, `*` for OPTIONS nor an authority for CONNECT",
                req.method()
            ),
        );
    }
}

/// The request's declared body length; `Transfer-Encoding` overrides it (RFC 9112 §6.3).
fn request_content_length(headers: &HeaderMap) -> Option<u64> {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return None;
    }
    let text = headers.get(header::CONTENT_LENGTH)?.to_str().ok()?;
    text.trim().parse().ok()
}

/// The request body, counted against its declared length as the gateway reads it.
struct CheckedInput<'a> {
    inner: Input<'a>,
    declared: Option<u64>,
    seen: u64,
}

impl Source for CheckedInput<'_> {
    fn fill(&mut self) -> io::Result<&[u8]> {
        let (declared, seen) = (self.declared, self.seen);
        let available = self.inner.fill_buf()?;
        if let Some(declared) = declared {
            let offered = seen + available.len() as u64;
            if offered > declared {
                violated(
                    "input-matches-content-length",
                    format!(
                        "the Input offered {offered} bytes of a body whose Content-Length is \
                         {declared}"
                    ),
                );
            }
            if available.is_empty() && seen < declared {
                violated(
                    "input-matches-content-length",
                    format!(
                        "the Input ended after {seen} bytes of a body whose Content-Length is \
                         {declared}, without an error"
                    ),
                );
            }
        }
        Ok(available)
    }

    fn consume(&mut self, n: usize) {
        self.seen += n as u64;
        self.inner.consume(n);
    }
}

fn check_response(res: Response, is_head: bool) -> Response {
    let status = res.status();
    if status.is_informational() {
        violated(
            "status-final",
            format!("the gateway answered {status}, an interim status, as its final response"),
        );
    }
    let headers = res.headers();
    for (name, value) in headers {
        if let Some(why) = invalid_field_value(value.as_bytes()) {
            violated(
                "header-value-valid",
                format!("the value of {name} {why}: {value:?}"),
            );
        }
    }
    let server_owned = headers
        .iter()
        .find(|(name, value)| owned_hop_by_hop(name) && !only_close_or_upgrade(name, value));
    if let Some((name, _)) = server_owned {
        violated(
            "no-hop-by-hop-headers",
            format!(
                "the response sets {name}, a hop-by-hop field the server owns (with the \
                 connection and the framing)"
            ),
        );
    }
    let declared = match response_content_length(headers) {
        Ok(declared) => declared,
        Err(why) => violated("content-length-matches", why),
    };
    let body_len = res.body().len();
    let has_type = headers.contains_key(header::CONTENT_TYPE);
    if [
        StatusCode::NO_CONTENT,
        StatusCode::RESET_CONTENT,
        StatusCode::NOT_MODIFIED,
    ]
    .contains(&status)
    {
        if let Some(n @ 1..) = body_len {
            violated(
                "no-body-for-status",
                format!("a {status} response has a body of {n} bytes"),
            );
        }
        if status == StatusCode::NO_CONTENT && declared.is_some() {
            violated("no-body-for-status", "a 204 response has a Content-Length");
        }
        if has_type && status != StatusCode::RESET_CONTENT {
            violated(
                "content-type-absent",
                format!("a {status} response, which has no content, has a Content-Type"),
            );
        }
        // The server never sends such a body, so it is not checked as it is sent.
        return res;
    }
    let known_empty = body_len == Some(0) && declared.unwrap_or(0) == 0;
    if !known_empty && !has_type {
        violated(
            "content-type-required",
            format!("a {} response has no Content-Type", status.as_u16()),
        );
    }
    match (declared, body_len) {
        // A HEAD answer may leave out the body it declares (the server sends none anyway).
        (Some(_), Some(0)) if is_head => {}
        (Some(declared), Some(len)) if declared != len => violated(
            "content-length-matches",
            format!("the Content-Length is {declared} but the body has {len} bytes"),
        ),
        _ => {}
    }
    let (parts, body) = res.into_parts();
    Response::from_parts(parts, check_streamed(body, declared))
}

/// Why `value` is no field value (RFC 9110 §5.5), if it is not.
fn invalid_field_value(value: &[u8]) -> Option<String> {
    if let Some(b) = value
        .iter()
        .find(|&&b| (b < 0x20 && b != b'\t') || b == 0x7f)
    {
        return Some(format!("holds the control character {b:#04x}"));
    }
    let blank = |b: Option<&u8>| matches!(b, Some(b' ' | b'\t'));
    if blank(value.first()) || blank(value.last()) {
        return Some("has leading or trailing whitespace".into());
    }
    None
}

/// The response's `Content-Length`, if any; every field of that name must say one number.
fn response_content_length(headers: &HeaderMap) -> Result<Option<u64>, String> {
    let mut found = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        let text = value.to_str().unwrap_or("");
        let n = match text.parse::<u64>() {
            Ok(n) if text.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(format!("the Content-Length {value:?} is no decimal number")),
        };
        match found {
            Some(m) if m != n => {
                return Err(format!("the response declares Content-Length {m} and {n}"))
            }
            _ => found = Some(n),
        }
    }
    Ok(found)
}

/// Wraps a streamed body so its length is checked as the server pulls it.
fn check_streamed(body: Body, declared: Option<u64>) -> Body {
    match body.kind {
        Kind::Iter(inner) => match declared {
            Some(expected) => Body::from_iter(CheckedIter {
                inner,
                count: Count::new(expected),
                held: None,
                done: false,
            }),
            None => Body {
                kind: Kind::Iter(inner),
            },
        },
        Kind::Reader(inner, len) => match declared.or(len) {
            Some(expected) => Body::from_reader(
                CheckedReader {
                    inner,
                    count: Count::new(expected),
                },
                len,
            ),
            None => Body {
                kind: Kind::Reader(inner, len),
            },
        },
        kind => Body { kind },
    }
}

/// Body bytes produced so far against the length promised.
struct Count {
    expected: u64,
    seen: u64,
}

impl Count {
    fn new(expected: u64) -> Self {
        Count { expected, seen: 0 }
    }

    /// Counts `n` more bytes; returns whether the promised length is reached.
    fn add(&mut self, n: usize) -> bool {
        self.seen += n as u64;
        if self.seen > self.expected {
            violated(
                "content-length-matches",
                format!(
                    "the streamed body is longer than its declared {} bytes ({} so far)",
                    self.expected, self.seen
                ),
            );
        }
        self.seen == self.expected
    }

    fn end(&self) {
        if self.seen < self.expected {
            violated(
                "content-length-matches",
                format!(
                    "the streamed body ended after {} of its declared {} bytes",
                    self.seen, self.expected
                ),
            );
        }
    }
}

struct CheckedIter {
    inner: Box<dyn Iterator<Item = io::Result<Bytes>> + Send>,
    count: Count,
    /// An error met while looking past the promised end, returned on the next call.
    held: Option<io::Error>,
    done: bool,
}

impl Iterator for CheckedIter {
    type Item = io::Result<Bytes>;

    fn next(&mut self) -> Option<io::Result<Bytes>> {
        if let Some(e) = self.held.take() {
            return Some(Err(e));
        }
        if self.done {
            return None;
        }
        match self.inner.next() {
            None => {
                self.done = true;
                self.count.end();
                None
            }
            Some(Ok(piece)) => {
                if self.count.add(piece.len()) {
                    // The server stops pulling at the promised length: look past it now,
                    // or a body that goes on would pass unseen.
                    self.done = true;
                    loop {
                        match self.inner.next() {
                            Some(Ok(more)) if more.is_empty() => continue,
                            Some(Ok(more)) => {
                                self.count.add(more.len());
                            }
                            Some(Err(e)) => self.held = Some(e),
                            None => {}
                        }
                        break;
                    }
                }
                Some(Ok(piece))
            }
            Some(Err(e)) => Some(Err(e)),
        }
    }
}

struct CheckedReader {
    inner: Box<dyn Read + Send>,
    count: Count,
}

impl Read for CheckedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return self.inner.read(buf);
        }
        // No further than the promised length, as the server reads: what follows may be
        // someone else's (`Body::from_reader`), so nothing past it is read or probed.
        let left = self.count.expected - self.count.seen;
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            self.count.end();
        } else {
            self.count.add(n);
        }
        Ok(n)
    }
}
