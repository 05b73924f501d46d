use std::fmt;
use std::io::{self, BufRead, Read};

/// Where an [`Input`] gets its bytes: the connection driver, which decodes the framing.
pub(crate) trait Source {
    /// Body bytes available now, reading from the client if none are buffered. An empty slice
    /// is the end of the body.
    fn fill(&mut self) -> io::Result<&[u8]>;
    /// Marks `n` bytes of the last `fill` as used.
    fn consume(&mut self, n: usize);
}

/// The streaming request body (WSGI's `wsgi.input`).
///
/// It reads exactly the body the request declared, decoding `Content-Length` or chunked
/// framing, and returns end-of-file after it: a gateway can never read into the next request.
/// If the client sent `Expect: 100-continue`, the first read sends `100 Continue`.
///
/// A body left unread, in whole or in part, is skipped by the server after the response:
/// if the rest of it has already arrived and is at most 64 KiB, the connection lives on;
/// otherwise (more than that, or still on its way) the connection closes after the
/// response, with a lingering close so that the client still reads it. (If the client
/// asked for `100 Continue` and the body was never read, it may not send the body at all:
/// the connection closes.)
///
/// A read that fails because of the client decides the answer: whatever response the
/// gateway then returns is replaced by the server's own, and the connection closes. The
/// [`Error`](crate::Error) inside the `io::Error` tells the cases apart
/// (`e.get_ref().and_then(|e| e.downcast_ref::<sgi::Error>())`):
///
/// | the client | `io::ErrorKind` | [`Error`](crate::Error) | the server answers |
/// |---|---|---|---|
/// | sends more than [`Limits::max_body`](crate::Limits) | `InvalidData` | `BodyTooLarge` | `413` |
/// | breaks the chunked coding | `InvalidData` | `BadChunk` | `400` |
/// | sends trailers over the head limits | `InvalidData` | `HeadTooLarge` | `431` |
/// | pauses past [`Timeouts::body`](crate::Timeouts) | `TimedOut` | `Timeout` | `408` |
/// | sends slower than [`Limits::min_body_rate`](crate::Limits) on average, after [`Timeouts::body_grace`](crate::Timeouts) | `TimedOut` | `Timeout` | `408` |
/// | closes before the body's end | `UnexpectedEof` | `Incomplete` | nothing (it is gone) |
/// | resets the connection | `ConnectionReset` (the socket's own error) | none | nothing |
///
/// A body whose declared `Content-Length` is over `max_body` is refused with `413` before
/// the gateway is called at all.
///
/// On the [`PoolServer`](crate::PoolServer), a body of up to
/// [`Limits::max_buffered_body`](crate::Limits) (16 KiB), with either framing, has arrived
/// whole before the gateway is called, so a slow upload holds no worker. A gateway that
/// reads a body as a stream while the client is still producing it (a log or NDJSON feed
/// sent chunked over minutes) needs `max_buffered_body` 0, so that it gets the request at
/// once, and a `min_body_rate` the feed keeps to (or 0).
///
/// ```
/// use std::io::Read;
/// use sgi::{Body, Request, Response, TestClient};
///
/// let app = |mut req: Request<'_>| {
///     let mut text = String::new();
///     req.body_mut().read_to_string(&mut text).unwrap();
///     Response::new(Body::from(text.to_uppercase()))
/// };
/// let res = TestClient::new(app).post("/").body("shout").send();
/// assert_eq!(res.body(), "SHOUT");
/// ```
///
/// It is `Send`, so a gateway may read it on another thread within its call:
///
/// ```
/// use std::io::Read;
/// use sgi::{Body, Request, Response, TestClient};
///
/// let app = |mut req: Request<'_>| {
///     let input = req.body_mut();
///     let text = std::thread::scope(|s| {
///         s.spawn(|| {
///             let mut text = String::new();
///             input.read_to_string(&mut text).map(|_| text)
///         })
///         .join()
///         .unwrap()
///     });
///     Response::new(Body::from(text.unwrap()))
/// };
/// assert_eq!(TestClient::new(app).post("/").body("elsewhere").send().body(), "elsewhere");
/// ```
pub struct Input<'a> {
    inner: Inner<'a>,
}

enum Inner<'a> {
    Source(&'a mut (dyn Source + Send)),
    Slice(&'a [u8]),
    Reader(Box<dyn BufRead + Send + 'a>),
}

impl<'a> Input<'a> {
    pub(crate) fn new(source: &'a mut (dyn Source + Send)) -> Self {
        Input {
            inner: Inner::Source(source),
        }
    }

    /// An input that is already at its end (no body).
    ///
    /// ```
    /// use std::io::Read;
    /// let mut buf = Vec::new();
    /// sgi::Input::empty().read_to_end(&mut buf).unwrap();
    /// assert!(buf.is_empty());
    /// ```
    pub fn empty() -> Input<'a> {
        Input {
            inner: Inner::Slice(&[]),
        }
    }

    /// An input over bytes in memory, for building requests by hand (tests, middleware).
    ///
    /// ```
    /// use std::io::Read;
    /// let mut text = String::new();
    /// sgi::Input::from_slice(b"abc").read_to_string(&mut text).unwrap();
    /// assert_eq!(text, "abc");
    /// ```
    pub fn from_slice(bytes: &'a [u8]) -> Input<'a> {
        Input {
            inner: Inner::Slice(bytes),
        }
    }

    /// An input read from `reader`: for middleware that hands the gateway a changed body
    /// (decompressed, limited, counted), often made from the request's own input.
    ///
    /// ```
    /// use std::io::{BufReader, Read};
    /// use sgi::{Body, Input, Request, Response, TestClient};
    ///
    /// fn app(mut req: Request<'_>) -> Response {
    ///     let mut text = String::new();
    ///     req.body_mut().read_to_string(&mut text).unwrap();
    ///     Response::new(Body::from(text))
    /// }
    /// // A middleware that lets the gateway see only the first 4 bytes of any body.
    /// fn first_four(mut req: Request<'_>) -> Response {
    ///     let input = std::mem::replace(req.body_mut(), Input::empty());
    ///     *req.body_mut() = Input::from_reader(BufReader::new(input.take(4)));
    ///     app(req)
    /// }
    /// assert_eq!(TestClient::new(first_four).post("/").body("abcdefgh").send().body(), "abcd");
    /// ```
    pub fn from_reader(reader: impl BufRead + Send + 'a) -> Input<'a> {
        Input {
            inner: Inner::Reader(Box::new(reader)),
        }
    }
}

impl fmt::Debug for Input<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Input")
    }
}

impl Read for Input<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            // Nothing asked, nothing waited for (no `100 Continue`, no timeout).
            return Ok(0);
        }
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Input<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        match &mut self.inner {
            Inner::Source(source) => source.fill(),
            Inner::Slice(bytes) => Ok(bytes),
            Inner::Reader(reader) => reader.fill_buf(),
        }
    }

    fn consume(&mut self, n: usize) {
        match &mut self.inner {
            Inner::Source(source) => source.consume(n),
            Inner::Slice(bytes) => *bytes = &bytes[n.min(bytes.len())..],
            Inner::Reader(reader) => reader.consume(n),
        }
    }
}
