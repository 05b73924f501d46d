use std::fmt;
use std::fs::File;
use std::io::{self, Read};

use bytes::Bytes;

/// A response body: WSGI's iterable, with constructors for the common shapes.
///
/// The server picks the framing: `Content-Length` when the length is known, otherwise chunked
/// transfer coding on HTTP/1.1 (and a close-delimited body on HTTP/1.0).
///
/// ```
/// use sgi::bytes::Bytes;
/// use sgi::Body;
///
/// assert_eq!(Body::empty().len(), Some(0));
/// assert_eq!(Body::from("hello").len(), Some(5));
/// let streamed = Body::from_iter(vec![Ok(Bytes::from("a")), Ok(Bytes::from("b"))]);
/// assert_eq!(streamed.len(), None);
/// ```
///
/// # When the server is done with a body
///
/// Where WSGI calls the iterable's `close()`, the server drops the body, and with it the
/// iterator or reader inside: once its last piece is pulled, once a body of known length
/// has been sent whole (it is not asked for more, so an iterator then never yields
/// `None`), when the answer has no body (`HEAD`, `304`), or when it is cut short (the client
/// left, a timeout, a shutdown). Code that must run when a response is over, such as
/// handing back a database connection a streamed body reads from, goes in a `Drop`:
///
/// ```
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use std::sync::Arc;
/// use sgi::{Body, Request, Response, TestClient};
///
/// struct Release(Arc<AtomicBool>);
/// impl Drop for Release {
///     fn drop(&mut self) {
///         self.0.store(true, Ordering::SeqCst);
///     }
/// }
///
/// let released = Arc::new(AtomicBool::new(false));
/// let app = {
///     let released = released.clone();
///     move |_req: Request<'_>| {
///         let guard = Release(released.clone());
///         Response::new(Body::from_iter(["a", "b"].into_iter().map(move |s| {
///             let _held = &guard;
///             Ok(s.into())
///         })))
///     }
/// };
/// let client = TestClient::new(app);
/// assert_eq!(client.get("/").send().body(), "ab");
/// assert!(released.swap(false, Ordering::SeqCst));
/// assert_eq!(client.head("/").send().status(), 200); // never pulled, still dropped
/// assert!(released.load(Ordering::SeqCst));
/// ```
pub struct Body {
    pub(crate) kind: Kind,
}

pub(crate) enum Kind {
    Full(Bytes),
    Iter(Box<dyn Iterator<Item = io::Result<Bytes>> + Send>),
    Reader(Box<dyn Read + Send>, Option<u64>),
    File(File, u64),
}

impl Body {
    /// Whether a file body can be read at all (and is not already at its end), by reading
    /// one byte; other bodies are not touched. For `HEAD`, whose answer must be the one `GET`
    /// would get.
    pub(crate) fn check_readable(&mut self) -> io::Result<()> {
        if let Kind::File(file, len) = &mut self.kind {
            if *len > 0 && file.read(&mut [0u8; 1])? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(())
    }

    /// An empty body.
    pub fn empty() -> Body {
        Body {
            kind: Kind::Full(Bytes::new()),
        }
    }

    /// A body produced piece by piece, streamed as it is produced (chunked, since its length
    /// is unknown). An `Err` item after the head was sent aborts the connection, so the client
    /// never mistakes a truncated body for a whole one.
    ///
    /// The head goes out with the first non-empty piece (as in WSGI), so an iterator that
    /// fails before it is still answered with a clean `500`. A stream whose first piece may be
    /// long in coming (server-sent events, a long poll) should yield one at once, such as an
    /// SSE comment `: open\n\n`, so that clients and proxies see the head (see
    /// [`waiting`](crate::waiting)).
    ///
    /// On the pool server, a stream whose client falls behind waits in the event loop
    /// without a worker, and a worker makes its next pieces once the client has made room:
    /// pieces may be made on different threads (the iterator is `Send`), so they must not
    /// rely on thread-local state set by the ones before. The same holds for
    /// [`from_reader`](Self::from_reader).
    ///
    /// ```
    /// use sgi::bytes::Bytes;
    /// let body = sgi::Body::from_iter((0..3).map(|i| Ok(Bytes::from(format!("line {i}\n")))));
    /// # drop(body);
    /// ```
    // Not `FromIterator`: that would collect eagerly; this streams lazily as it is sent.
    #[allow(clippy::should_implement_trait)]
    pub fn from_iter<I>(iter: I) -> Body
    where
        I: IntoIterator<Item = io::Result<Bytes>>,
        I::IntoIter: Send + 'static,
    {
        Body {
            kind: Kind::Iter(Box::new(iter.into_iter())),
        }
    }

    /// A body read from `reader`, of `len` bytes when known (then sent with
    /// `Content-Length`, and `reader` is read no further than `len`: what follows may belong
    /// to someone else), else streamed chunked until the reader's end.
    ///
    /// ```
    /// let body = sgi::Body::from_reader(std::io::Cursor::new(b"data".to_vec()), Some(4));
    /// assert_eq!(body.len(), Some(4));
    /// ```
    pub fn from_reader<R: Read + Send + 'static>(reader: R, len: Option<u64>) -> Body {
        Body {
            kind: Kind::Reader(Box::new(reader), len),
        }
    }

    /// A file's contents from its current position to its end, sent in 256 KiB pieces
    /// straight from the file (no copy through the body machinery).
    ///
    /// ```no_run
    /// let body = sgi::Body::from_file(std::fs::File::open("Cargo.toml")?)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// A file whose size says nothing of what it reads (a pipe, a device, or a `/proc`
    /// file, which reports a size of 0) is sent as a reader of unknown length, to its end.
    /// A directory is an error (`InvalidInput`), before any answer is promised:
    ///
    /// ```
    /// let dir = std::fs::File::open(std::env::temp_dir())?;
    /// let refused = sgi::Body::from_file(dir).unwrap_err();
    /// assert_eq!(refused.kind(), std::io::ErrorKind::InvalidInput);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn from_file(mut file: File) -> io::Result<Body> {
        use std::io::Seek;
        let meta = file_metadata(&file)?;
        if !meta.is_file() || (meta.len() == 0 && !is_empty(&mut file)?) {
            return Ok(Body::from_reader(file, None));
        }
        let len = meta.len();
        let pos = file.stream_position()?;
        Ok(Body {
            kind: Kind::File(file, len.saturating_sub(pos)),
        })
    }

    /// `len` bytes of a file from byte `start`, sent like [`Body::from_file`]: the body of
    /// a `206 Partial Content` answer to a `Range` request. A range that runs past the
    /// file's end stops at the end; one that starts at or past it is empty, and the answer
    /// to such a request is the gateway's to give (`416 Range Not Satisfiable`, as the
    /// `files` example does).
    ///
    /// ```
    /// use std::io::Write;
    /// let path = std::env::temp_dir().join(format!("sgi-doc-range-{}", std::process::id()));
    /// std::fs::File::create(&path)?.write_all(b"0123456789")?;
    /// let body = sgi::Body::from_file_range(std::fs::File::open(&path)?, 2, 5)?;
    /// assert_eq!(body.len(), Some(5));
    /// assert_eq!(body.into_bytes()?, "23456");
    /// let body = sgi::Body::from_file_range(std::fs::File::open(&path)?, 2, 5)?;
    /// let pieces: Vec<_> = body.into_pieces().collect::<Result<_, _>>()?;
    /// assert_eq!(pieces.concat(), b"23456");
    /// let past_the_end = sgi::Body::from_file_range(std::fs::File::open(&path)?, 8, 5)?;
    /// assert_eq!(past_the_end.len(), Some(2));
    /// # std::fs::remove_file(&path)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// Of a file whose size says nothing of what it reads (see [`Body::from_file`]), up to
    /// `len` bytes from `start` are sent as a reader of unknown length (one that cannot
    /// seek is an error), and a directory is an error as in [`Body::from_file`].
    pub fn from_file_range(mut file: File, start: u64, len: u64) -> io::Result<Body> {
        use std::io::{Read, Seek, SeekFrom};
        let meta = file_metadata(&file)?;
        if !meta.is_file() || (meta.len() == 0 && !is_empty(&mut file)?) {
            file.seek(SeekFrom::Start(start))?;
            return Ok(Body::from_reader(file.take(len), None));
        }
        file.seek(SeekFrom::Start(start))?;
        let size = meta.len();
        Ok(Body {
            kind: Kind::File(file, len.min(size.saturating_sub(start))),
        })
    }

    /// The body's length, when known before it is sent.
    pub fn len(&self) -> Option<u64> {
        match &self.kind {
            Kind::Full(b) => Some(b.len() as u64),
            Kind::Iter(_) => None,
            Kind::Reader(_, len) => *len,
            Kind::File(_, len) => Some(*len),
        }
    }

    /// Whether the body is known to be empty.
    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }

    /// Reads the whole body into memory (the test client and middleware use this).
    ///
    /// ```
    /// assert_eq!(sgi::Body::from("abc").into_bytes().unwrap(), "abc");
    /// ```
    pub fn into_bytes(self) -> io::Result<Bytes> {
        match self.kind {
            Kind::Full(b) => Ok(b),
            Kind::Iter(iter) => {
                let mut out = Vec::new();
                for piece in iter {
                    out.extend_from_slice(&piece?);
                }
                Ok(out.into())
            }
            Kind::Reader(r, len) => {
                let mut out = Vec::new();
                // No further than its length, as the server would send it.
                r.take(len.unwrap_or(u64::MAX)).read_to_end(&mut out)?;
                Ok(out.into())
            }
            Kind::File(f, len) => {
                let mut out = Vec::new();
                f.take(len).read_to_end(&mut out)?;
                Ok(out.into())
            }
        }
    }

    /// The body as the pieces it is made of, still lazy: for middleware that changes or
    /// measures a body while it streams (compression, byte counts), and then hands on
    /// `Body::from_iter` of the result. A whole body is one piece; a reader or a file is
    /// read in pieces here (so it no longer goes out from the file directly).
    ///
    /// `Body::from_iter` of the pieces has no length of its own, so it goes out chunked
    /// (and a `HEAD` answer loses its `Content-Length`). A middleware that keeps the length
    /// (it does not change the bytes' count) says so with a `Content-Length` of
    /// [`len`](Self::len), taken before: on a streamed body the server takes it as a
    /// promise, and sends the body unchunked.
    ///
    /// ```
    /// use sgi::{Body, Request, Response, TestClient};
    ///
    /// // A middleware that upper-cases every piece of any body, streaming.
    /// let app = |_req: Request<'_>| Response::new(Body::from_iter(["a", "b"].map(|s| Ok(s.into()))));
    /// let shout = move |req: Request<'_>| {
    ///     app(req).map(|body| {
    ///         Body::from_iter(body.into_pieces().map(|piece| {
    ///             piece.map(|p| p.to_ascii_uppercase().into())
    ///         }))
    ///     })
    /// };
    /// assert_eq!(TestClient::new(shout).get("/").send().body(), "AB");
    ///
    /// // The same, keeping a known length.
    /// let app = |_req: Request<'_>| Response::new(Body::from("ab"));
    /// let shout = move |req: Request<'_>| {
    ///     let (mut parts, body) = app(req).into_parts();
    ///     if let Some(len) = body.len() {
    ///         parts.headers.insert(sgi::http::header::CONTENT_LENGTH, len.into());
    ///     }
    ///     let body = Body::from_iter(body.into_pieces().map(|piece| {
    ///         piece.map(|p| p.to_ascii_uppercase().into())
    ///     }));
    ///     Response::from_parts(parts, body)
    /// };
    /// let res = TestClient::new(shout).head("/").send();
    /// assert_eq!(res.headers()["content-length"], "2");
    /// ```
    pub fn into_pieces(self) -> Box<dyn Iterator<Item = io::Result<Bytes>> + Send> {
        match self.kind {
            Kind::Full(b) if b.is_empty() => Box::new(std::iter::empty()),
            Kind::Full(b) => Box::new(std::iter::once(Ok(b))),
            Kind::Iter(iter) => iter,
            Kind::Reader(r, Some(len)) => Box::new(read_pieces(r.take(len), PIECE)),
            Kind::Reader(r, None) => Box::new(read_pieces(r, PIECE)),
            Kind::File(f, len) => Box::new(read_pieces(f.take(len), FILE_PIECE)),
        }
    }
}

/// Piece sizes [`Body::into_pieces`] reads readers and files in.
const PIECE: usize = 64 * 1024;
const FILE_PIECE: usize = 256 * 1024;

/// `reader` in pieces of up to `size` bytes, ending at its end or first error.
fn read_pieces<R: Read>(mut reader: R, size: usize) -> impl Iterator<Item = io::Result<Bytes>> {
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let mut piece = vec![0; size];
        loop {
            return match reader.read(&mut piece) {
                Ok(0) => {
                    done = true;
                    None
                }
                Ok(n) => {
                    piece.truncate(n);
                    Some(Ok(piece.into()))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    done = true;
                    Some(Err(e))
                }
            };
        }
    })
}

impl Default for Body {
    fn default() -> Self {
        Body::empty()
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Full(_) => "Full",
            Kind::Iter(_) => "Iter",
            Kind::Reader(..) => "Reader",
            Kind::File(..) => "File",
        };
        f.debug_struct("Body")
            .field("kind", &kind)
            .field("len", &self.len())
            .finish()
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Self {
        Body {
            kind: Kind::Full(b),
        }
    }
}

impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Self {
        Bytes::from(v).into()
    }
}

impl From<&'static [u8]> for Body {
    fn from(s: &'static [u8]) -> Self {
        Bytes::from_static(s).into()
    }
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Self {
        Bytes::from_static(s.as_bytes()).into()
    }
}

impl From<String> for Body {
    fn from(s: String) -> Self {
        Bytes::from(s).into()
    }
}

impl From<()> for Body {
    fn from(_: ()) -> Self {
        Body::empty()
    }
}

/// Whether a regular file that reports a size of 0 reads nothing either (a `/proc` file
/// reports 0 and reads text); its position is left where it was.
/// A file's metadata, or an error for a directory: it has no contents to send, and only
/// reading it would tell (a `500` for `GET` where `HEAD` got the `200` promised).
fn file_metadata(file: &File) -> io::Result<std::fs::Metadata> {
    let meta = file.metadata()?;
    if meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a directory is not a file body",
        ));
    }
    Ok(meta)
}

fn is_empty(file: &mut File) -> io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let pos = file.stream_position()?;
    // A file that cannot be read (opened for writing) has nothing to send either.
    let empty = !matches!(file.read(&mut [0u8]), Ok(n) if n > 0);
    file.seek(SeekFrom::Start(pos))?;
    Ok(empty)
}
