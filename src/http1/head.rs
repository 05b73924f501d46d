//! Request heads: find where a head ends, then parse and validate it with `httparse` and the
//! `http` crate's types. Everything that could let a request be read two ways (smuggling) is
//! rejected here, before a gateway sees the request.

use std::cell::RefCell;
use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri, Version};

use crate::{Error, Limits};

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
}

/// A parsed and validated request head.
#[derive(Debug)]
pub struct RequestHead {
    /// The method.
    pub method: Method,
    /// The request target, as sent.
    pub uri: Uri,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// The header fields, repeated fields kept.
    pub headers: HeaderMap,
    /// How the body is delimited.
    pub framing: Framing,
    /// Whether the client asked to keep the connection open after this exchange.
    pub keep_alive: bool,
    /// Whether the client waits for `100 Continue` before sending the body.
    pub expect_continue: bool,
    /// Bytes the head took in the buffer, its blank line included.
    pub len: usize,
}

/// Looks for the end of a request head in `buf`, resuming the scan at `*scanned`.
///
/// Returns `Ok(Some(len))` with the head's length once its blank line is in, `Ok(None)` while
/// more bytes are needed, and an error as soon as the bytes so far break a size limit (so a
/// client cannot make the server buffer an endless head) or hold a line ending in a bare LF.
///
/// Every line of a head ends in CRLF. RFC 9112 §2.2 lets a recipient also take a bare LF,
/// but parsers differ on it, and behind a front end that lets an LF through inside a field
/// value, a server that splits there sees a field (a `Content-Length`, say) the front end
/// never did: a bare LF is answered `400`. Blank lines before the request line are
/// ignored, whatever their line ending.
///
/// ```
/// let mut scanned = 0;
/// let limits = sgi::Limits::default();
/// assert_eq!(sgi::http1::find_head_end(b"GET / HTTP/1.1\r\n", &mut scanned, &limits).unwrap(), None);
/// assert_eq!(sgi::http1::find_head_end(b"GET / HTTP/1.1\r\n\r\n", &mut scanned, &limits).unwrap(), Some(18));
/// ```
pub fn find_head_end(
    buf: &[u8],
    scanned: &mut usize,
    limits: &Limits,
) -> Result<Option<usize>, Error> {
    let mut scan = HeadScan {
        scanned: *scanned,
        may_frame: false,
    };
    let end = scan_head(buf, &mut scan, limits);
    *scanned = scan.scanned;
    end
}

/// How far a head has been scanned, and what the scan saw: the state [`scan_head`] resumes
/// from, reset (to the default) for each new head.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct HeadScan {
    /// Bytes searched for the head's end so far.
    pub(crate) scanned: usize,
    /// A line after the request line starts with `c` or `t` (either case): only then can
    /// the head hold a `Content-Length` or `Transfer-Encoding` field, so a head scanned
    /// without one declares no body.
    pub(crate) may_frame: bool,
}

/// [`find_head_end`], also noting in `scan` whether a line may frame a body: a byte's look
/// per line, where a separate pass would cost a search per line again.
pub(crate) fn scan_head(
    buf: &[u8],
    scan: &mut HeadScan,
    limits: &Limits,
) -> Result<Option<usize>, Error> {
    let HeadScan { scanned, may_frame } = scan;
    // Leading blank lines before a request line are ignored (RFC 9112 §2.2).
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let body = &buf[start..];
    let from = scanned.saturating_sub(start).saturating_sub(3);
    let mut end = None;
    let mut i = from;
    // The request line's end, when this scan starts at it (else searched for below).
    let mut first_nl = None;
    while let Some(off) = memchr::memchr(b'\n', &body[i..]) {
        let nl = i + off;
        if i == 0 {
            first_nl = Some(nl);
        }
        // `body` starts with neither CR nor LF, so `nl` is at least 1.
        if body[nl - 1] != b'\r' {
            return Err(Error::BadRequest("a line ends in a bare LF"));
        }
        match body.get(nl + 1) {
            Some(b'\r') if body.get(nl + 2) == Some(&b'\n') => {
                end = Some(nl + 3);
                break;
            }
            Some(&first) => {
                *may_frame |= matches!(first | 0x20, b'c' | b't');
                i = nl + 1;
            }
            None => break,
        }
    }
    if end.is_none() {
        // Resume after what was searched; a found head is found again from the same place.
        *scanned = buf.len();
    }
    // The request line's length without its CRLF; while the line is incomplete, its last
    // byte may yet be the CR of its CRLF.
    let line_len = match first_nl.or_else(|| memchr::memchr(b'\n', body)) {
        Some(n) if n > 0 && body[n - 1] == b'\r' => n - 1,
        Some(n) => n,
        None => body.len().saturating_sub(1),
    };
    if line_len > limits.max_request_line {
        return Err(Error::UriTooLong);
    }
    // A field line still without its end that is already over the limit is answered now,
    // not when the head timeout runs out.
    if end.is_none() {
        if let Some(nl) = memchr::memrchr(b'\n', body) {
            if body.len() - nl - 1 > limits.max_header_field {
                return Err(Error::HeadTooLarge);
            }
        }
    }
    // The blank lines count against the limit too: a client may send one or two, not an
    // endless stream of them.
    match end {
        Some(end) if start + end <= limits.max_head => Ok(Some(start + end)),
        Some(_) => Err(Error::HeadTooLarge),
        None if buf.len() > limits.max_head => Err(Error::HeadTooLarge),
        None => Ok(None),
    }
}

/// Parses and validates a request head at the start of `buf`.
///
/// `Ok(None)` means the head is not complete yet. Errors carry the status to answer with
/// ([`Error::status`]); after any of them the connection must be closed.
///
/// ```
/// use sgi::{http1::parse_request_head, Error, Limits};
/// let smuggle = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
/// assert!(matches!(parse_request_head(smuggle, &Limits::default()), Err(Error::BadRequest(_))));
/// ```
pub fn parse_request_head(buf: &[u8], limits: &Limits) -> Result<Option<RequestHead>, Error> {
    let mut scanned = 0;
    let Some(len) = find_head_end(buf, &mut scanned, limits)? else {
        return Ok(None);
    };
    parse_head_exact(&buf[..len], limits).map(Some)
}

/// A head httparse refused for its version: HTTP/1.2 and later minors are read as HTTP/1.1
/// (RFC 9110 §2.5). httparse knows 1.0 and 1.1 only, so the digit is patched in a copy (a
/// rare path, kept out of the common one).
#[cold]
fn parse_later_minor(head: &[u8], limits: &Limits) -> Result<RequestHead, Error> {
    match later_minor_version(head) {
        Some(at) => {
            let mut patched = head.to_vec();
            patched[at] = b'1';
            parse_head_exact(&patched, limits)
        }
        None => Err(version_error(head)),
    }
}

/// The request line (without its line ending) and where it starts, after any blank lines.
fn request_line(head: &[u8]) -> Option<(usize, &[u8])> {
    let start = head.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let end = head[start..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(head.len(), |n| start + n);
    let line = &head[start..end];
    Some((start, line.strip_suffix(b"\r").unwrap_or(line)))
}

/// Where the minor digit of an `HTTP/1.2`..`HTTP/1.9` request line is.
fn later_minor_version(head: &[u8]) -> Option<usize> {
    let (start, line) = request_line(head)?;
    match line {
        [.., b' ', b'H', b'T', b'T', b'P', b'/', b'1', b'.', b'2'..=b'9'] => {
            Some(start + line.len() - 1)
        }
        _ => None,
    }
}

/// Parses `head`, known to be exactly one complete head (see [`find_head_end`]).
pub(crate) fn parse_head_exact(head: &[u8], limits: &Limits) -> Result<RequestHead, Error> {
    const STACK: usize = 128;
    // A field line takes at least three bytes (`a:` and a line end), so this head holds
    // no more fields than this: a huge `max_headers` must not size the storage.
    let room = limits.max_headers.min(head.len() / 3 + 1);
    if room < STACK {
        // Left uninitialized: httparse writes only the fields it finds.
        let mut storage = [const { MaybeUninit::uninit() }; STACK];
        parse_complete(head, &mut storage[..room], limits)
    } else {
        let mut storage = Vec::with_capacity(room);
        storage.resize_with(room, MaybeUninit::uninit);
        parse_complete(head, &mut storage, limits)
    }
}

fn parse_complete<'b>(
    head: &'b [u8],
    storage: &mut [MaybeUninit<httparse::Header<'b>>],
    limits: &Limits,
) -> Result<RequestHead, Error> {
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(head, storage) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err(Error::BadRequest("incomplete head")),
        Err(httparse::Error::TooManyHeaders) => return Err(Error::HeadTooLarge),
        Err(httparse::Error::Version) => return parse_later_minor(head, limits),
        Err(httparse::Error::HeaderName) => return Err(Error::BadRequest("invalid header name")),
        Err(httparse::Error::HeaderValue) => return Err(Error::BadRequest("invalid header value")),
        Err(httparse::Error::Token) => return Err(Error::BadRequest("invalid method or target")),
        Err(httparse::Error::NewLine) => return Err(Error::BadRequest("invalid line ending")),
        Err(_) => return Err(Error::BadRequest("malformed request head")),
    };
    let method = Method::from_bytes(req.method.unwrap_or("").as_bytes())
        .map_err(|_| Error::BadRequest("invalid method"))?;
    let target = req.path.unwrap_or("");
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        Some(1) => Version::HTTP_11,
        _ => return Err(Error::UnsupportedVersion),
    };

    // One copy of the head backs the target and every field value (no allocation each).
    let shared = copy_head(&head[..len]);
    let slice = |part: &[u8]| {
        let at = part.as_ptr() as usize - head.as_ptr() as usize;
        shared.slice(at..at + part.len())
    };
    let uri = parse_target(&method, target, slice(target.as_bytes()))?;

    let mut headers = HeaderMap::with_capacity(req.headers.len());
    let mut facts = Facts::default();
    // Field lines lie end to end: each ends where the next begins, the last where the
    // head's closing CRLF does. So measured, a line counts its line ending and the
    // trailing whitespace the parser leaves out of the value, with no second pass over
    // its bytes.
    let offset = |name: &str| name.as_ptr() as usize - head.as_ptr() as usize;
    let fields_end = len - 2;
    for (i, field) in req.headers.iter().enumerate() {
        let at = offset(field.name);
        let end = req
            .headers
            .get(i + 1)
            .map_or(fields_end, |next| offset(next.name));
        let line = end - at;
        if line > limits.max_header_field {
            return Err(Error::HeadTooLarge);
        }
        // Names with `_` are dropped, as nginx and Gunicorn do: CGI-style environments fold
        // `-` and `_` together, so `Content_Length` could pose as `Content-Length`.
        if field.name.contains('_') {
            continue;
        }
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| Error::BadRequest("invalid header name"))?;
        let value = HeaderValue::from_maybe_shared(slice(field.value))
            .map_err(|_| Error::BadRequest("invalid header value"))?;
        if name == header::HOST {
            facts.bad_host |= !field.value.is_empty() && !valid_host(field.value);
        }
        facts.observe(&name, &value)?;
        headers.append(name, value);
    }
    let framing = facts.framing(version)?;
    facts.validate_host(version)?;
    if facts.content_types > 1 {
        return Err(Error::BadRequest("more than one Content-Type field"));
    }
    let expect_continue = facts.expect_continue(version)?;
    let keep_alive = !facts.close && (version == Version::HTTP_11 || facts.keep_alive);
    // With an absolute-form target the host is the target's, and a received Host field is
    // ignored (RFC 9112 §3.2.2): it is made to agree, so that a gateway routing on Host and
    // a proxy routing on the target never see two different hosts.
    if method != Method::CONNECT {
        if let Some(authority) = uri.authority() {
            // Userinfo is accepted (as Gunicorn's corpus has it; RFC 9110 §4.2.4 only
            // advises against it) but never becomes the host.
            let host = authority.as_str().rsplit('@').next().unwrap_or_default();
            // The same rules as for a Host field: the gateway gets one kind of host.
            let value = HeaderValue::from_str(host)
                .ok()
                .filter(|v| valid_host(v.as_bytes()))
                .ok_or(Error::BadRequest("invalid host in the request target"))?;
            headers.insert(header::HOST, value);
        }
    }
    Ok(RequestHead {
        method,
        uri,
        version,
        headers,
        framing,
        keep_alive,
        expect_continue,
        len,
    })
}

/// Heads are copied into a buffer kept per thread; once a request's fields are dropped, the
/// next heads reuse its space, so a steady stream of requests allocates nothing here.
const HEAD_STORE: usize = 4 * 1024;

thread_local! {
    static HEAD_STORE_BUF: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// A shared copy of `head` (larger heads than the store get their own allocation).
fn copy_head(head: &[u8]) -> Bytes {
    if head.len() > HEAD_STORE / 4 {
        return Bytes::copy_from_slice(head);
    }
    HEAD_STORE_BUF.with(|store| {
        let mut store = store.borrow_mut();
        if store.capacity() < head.len() {
            // Takes the whole buffer back if no earlier head is alive, else starts another.
            store.reserve(HEAD_STORE);
        }
        store.extend_from_slice(head);
        store.split().freeze()
    })
}

/// What the semantic checks need from the fields, gathered in the one pass that builds the
/// header map (no lookups afterwards).
#[derive(Default)]
struct Facts {
    hosts: usize,
    /// A `Host` field's value is not a valid host (an empty one is allowed).
    bad_host: bool,
    content_length: Option<u64>,
    content_lengths: usize,
    /// Transfer codings seen, how many were `chunked`, and whether the last one was.
    codings: usize,
    chunked: usize,
    last_chunked: bool,
    /// A Transfer-Encoding field line has an empty list element (or names no coding).
    empty_coding_line: bool,
    close: bool,
    keep_alive: bool,
    expect_100: bool,
    /// An expectation other than `100-continue`, which no server here can meet.
    expect_other: bool,
    content_types: usize,
}

impl Facts {
    fn observe(&mut self, name: &HeaderName, value: &HeaderValue) -> Result<(), Error> {
        let bytes = value.as_bytes();
        if name == header::HOST {
            self.hosts += 1;
        } else if name == header::CONTENT_LENGTH {
            // Plain digits only: the list form (`5, 5`) is refused too, as peers read it apart.
            if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
                return Err(Error::BadRequest("invalid Content-Length"));
            }
            let n = std::str::from_utf8(bytes)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(Error::BadRequest("Content-Length out of range"))?;
            if self.content_length.is_some_and(|prev| prev != n) {
                return Err(Error::BadRequest("conflicting Content-Length"));
            }
            self.content_length = Some(n);
            self.content_lengths += 1;
        } else if name == header::TRANSFER_ENCODING {
            for item in bytes.split(|&b| b == b',').map(trim_ows) {
                if item.is_empty() {
                    // An empty element (`chunked,`, `, chunked`, or no coding at all) is
                    // one a recipient may skip (RFC 9110 §5.6.1), and one that other
                    // parsers refuse or read as no framing: the body's end could be read
                    // two ways.
                    self.codings += 1;
                    self.last_chunked = false;
                    self.empty_coding_line = true;
                    continue;
                }
                self.codings += 1;
                self.last_chunked = item.eq_ignore_ascii_case(b"chunked");
                self.chunked += usize::from(self.last_chunked);
            }
        } else if name == header::CONNECTION {
            for item in bytes.split(|&b| b == b',').map(trim_ows) {
                self.close |= item.eq_ignore_ascii_case(b"close");
                self.keep_alive |= item.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name == header::EXPECT {
            // A list (RFC 9110 §10.1.1): empty elements are ignored (§5.6.1).
            for item in bytes.split(|&b| b == b',').map(trim_ows) {
                match item {
                    b"" => {}
                    _ if item.eq_ignore_ascii_case(b"100-continue") => self.expect_100 = true,
                    _ => self.expect_other = true,
                }
            }
        } else if name == header::CONTENT_TYPE {
            self.content_types += 1;
        }
        Ok(())
    }

    fn framing(&self, version: Version) -> Result<Framing, Error> {
        match (self.codings > 0, self.content_lengths > 0) {
            (true, true) => Err(Error::BadRequest(
                "both Content-Length and Transfer-Encoding",
            )),
            (true, false) if version == Version::HTTP_10 => Err(Error::BadRequest(
                "Transfer-Encoding in an HTTP/1.0 request",
            )),
            // An empty element, or an empty line beside another, would read as `, chunked`
            // or `chunked,` to one parser and as no framing to another: refused, whatever
            // the rest says.
            (true, false) if self.empty_coding_line => {
                Err(Error::BadRequest("empty Transfer-Encoding element"))
            }
            // Only `chunked` is decoded; it must come last and once (RFC 9112 §6.1, §6.3).
            (true, false) if !self.last_chunked => Err(Error::BadRequest(
                "Transfer-Encoding does not end in chunked",
            )),
            (true, false) if self.chunked > 1 => {
                Err(Error::BadRequest("chunked applied more than once"))
            }
            (true, false) if self.codings > 1 => Err(Error::UnsupportedCoding),
            (true, false) => Ok(Framing::Chunked),
            (false, _) => Ok(match self.content_length {
                Some(0) | None => Framing::None,
                Some(n) => Framing::Length(n),
            }),
        }
    }

    fn validate_host(&self, version: Version) -> Result<(), Error> {
        match (self.hosts, self.bad_host) {
            (2.., _) => Err(Error::BadRequest("more than one Host field")),
            (0, _) if version == Version::HTTP_11 => {
                Err(Error::BadRequest("HTTP/1.1 request without Host"))
            }
            (_, true) => Err(Error::BadRequest("invalid Host")),
            _ => Ok(()),
        }
    }

    fn expect_continue(&self, version: Version) -> Result<bool, Error> {
        match (self.expect_other, self.expect_100) {
            (true, _) => Err(Error::ExpectationFailed),
            // An HTTP/1.0 client cannot understand 100 Continue (RFC 9110 §10.1.1).
            (false, true) => Ok(version == Version::HTTP_11),
            (false, false) => Ok(false),
        }
    }
}

/// `uri-host [ ":" port ]` (RFC 9112 §3.2): no userinfo, a port of digits only.
fn valid_host(value: &[u8]) -> bool {
    plain_host(value) || checked_host(Bytes::copy_from_slice(value))
}

/// [`valid_host`] the long way, for any `Host`.
fn checked_host(value: Bytes) -> bool {
    let host = &value[..];
    let (name, port) = match host.iter().rposition(|&b| b == b':') {
        // A colon inside an IPv6 literal is not a port separator.
        Some(i) if !host[i..].contains(&b']') => (&host[..i], &host[i + 1..]),
        _ => (host, &b""[..]),
    };
    // An IP literal is an IPv6 address in brackets, and nothing else (RFC 3986 §3.2.2; the
    // `http` crate does not look inside the brackets).
    let literal_ok = match name.strip_prefix(b"[") {
        Some(rest) => rest.strip_suffix(b"]").is_some_and(|inner| {
            std::str::from_utf8(inner).is_ok_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok())
        }),
        None => !name.contains(&b']'),
    };
    !host.contains(&b'@')
        && !name.is_empty()
        && literal_ok
        && port.iter().all(u8::is_ascii_digit)
        && http::uri::Authority::from_maybe_shared(value.clone()).is_ok()
}

/// The common `Host`, a name of letters, digits, dots and dashes with an optional port of
/// digits: valid with no further look (a quick path for [`valid_host`]).
fn plain_host(host: &[u8]) -> bool {
    // One pass: name bytes up to the first other byte, then a colon and digits.
    let name_len = host
        .iter()
        .position(|&b| !HOST_NAME_BYTE[b as usize])
        .unwrap_or(host.len());
    name_len > 0
        && match &host[name_len..] {
            [] => true,
            [b':', port @ ..] => port.iter().all(u8::is_ascii_digit),
            _ => false,
        }
}

/// The bytes of a [`plain_host`] name: letters, digits, `.` and `-`.
static HOST_NAME_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'.' || c == b'-';
        b += 1;
    }
    table
};

/// `505` for a well-formed request line with a version we do not speak, `400` for any
/// other line (garbage in the version's place, or not three parts: `GET /a b HTTP/1.1`).
fn version_error(head: &[u8]) -> Error {
    let line = request_line(head).map_or(&b""[..], |(_, line)| line);
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Error::BadRequest("invalid request line");
    };
    match version {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if !method.is_empty()
                && !target.is_empty()
                && major.is_ascii_digit()
                && minor.is_ascii_digit() =>
        {
            Error::UnsupportedVersion
        }
        _ => Error::BadRequest("invalid HTTP version"),
    }
}

fn parse_target(method: &Method, target: &str, bytes: Bytes) -> Result<Uri, Error> {
    let valid_form = match target.as_bytes().first() {
        Some(b'/') => true,
        Some(b'*') => target == "*" && method == Method::OPTIONS,
        // absolute-form, or authority-form for CONNECT
        Some(_) => target.contains("://") || method == Method::CONNECT,
        None => false,
    };
    // RFC 3986 targets are ASCII; raw octets above it are refused rather than guessed at.
    if !valid_form || target.contains('#') || !target.is_ascii() {
        return Err(Error::BadRequest("invalid request target"));
    }
    let uri =
        Uri::from_maybe_shared(bytes).map_err(|_| Error::BadRequest("invalid request target"))?;
    // authority-form is host and port, nothing more (RFC 9112 §3.2.3).
    let authority_form = |uri: &Uri| {
        uri.scheme().is_none()
            && uri
                .authority()
                .is_some_and(|a| a.port().is_some() && !a.as_str().contains('@'))
    };
    if method == Method::CONNECT && !authority_form(&uri) {
        return Err(Error::BadRequest("CONNECT needs an authority-form target"));
    }
    if let Some(scheme) = uri.scheme_str() {
        // An origin server serves http and https URIs only.
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err(Error::BadRequest(
                "request target of a scheme other than http(s)",
            ));
        }
    }
    Ok(uri)
}

pub(crate) fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<RequestHead, Error> {
        parse_request_head(raw.as_bytes(), &Limits::default()).map(|h| h.expect("complete head"))
    }

    fn rejects(raw: &str, status: u16) {
        match parse(raw) {
            Ok(head) => panic!("accepted {raw:?}: {head:?}"),
            Err(e) => assert_eq!(e.status().as_u16(), status, "{raw:?}: {e}"),
        }
    }

    #[test]
    fn parses_a_simple_get() {
        let head = parse("GET /a%20b?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n").unwrap();
        assert_eq!(head.method, Method::GET);
        assert_eq!(head.uri.path(), "/a%20b");
        assert_eq!(head.uri.query(), Some("x=1"));
        assert_eq!(head.framing, Framing::None);
        assert!(head.keep_alive);
    }

    #[test]
    fn a_found_head_is_found_again_with_a_body_behind_it() {
        let raw = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
        let mut scanned = 0;
        let limits = Limits::default();
        for split in [10, 30, raw.len()] {
            let _ = find_head_end(&raw[..split], &mut scanned, &limits);
        }
        assert_eq!(
            find_head_end(raw, &mut scanned, &limits).unwrap(),
            Some(raw.len() - 5)
        );
        assert_eq!(
            find_head_end(raw, &mut scanned, &limits).unwrap(),
            Some(raw.len() - 5)
        );
    }

    #[test]
    fn heads_share_a_reused_store_without_disturbing_kept_fields() {
        // Fields kept from earlier requests pin their part of the store; later heads, small
        // and over the store's limit, go elsewhere and every kept value stays as it was.
        let mut kept = Vec::new();
        for i in 0..3 * HEAD_STORE {
            let pad = if i % 500 == 0 {
                "p".repeat(HEAD_STORE)
            } else {
                String::new()
            };
            let raw = format!("GET /{i} HTTP/1.1\r\nHost: h{i}\r\nX-Pad: {pad}\r\n\r\n");
            let head = parse(&raw).unwrap();
            if i % 7 == 0 {
                kept.push((i, head.headers));
            }
        }
        for (i, headers) in kept {
            assert_eq!(headers["host"], format!("h{i}").as_str());
        }
    }

    #[test]
    fn partial_head_needs_more() {
        let r = parse_request_head(b"GET / HTTP/1.1\r\nHost: x\r\n", &Limits::default()).unwrap();
        assert!(r.is_none());
    }

    #[test]
    fn ignores_leading_blank_lines() {
        let head = parse("\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(head.len, 4 + 27);
    }

    #[test]
    fn blank_lines_count_against_the_head_limit() {
        let limits = Limits::default();
        let flood = "\r\n".repeat(limits.max_head / 2 + 1);
        let mut scanned = 0;
        assert!(matches!(
            find_head_end(flood.as_bytes(), &mut scanned, &limits),
            Err(Error::HeadTooLarge)
        ));
        rejects(&format!("{flood}GET / HTTP/1.1\r\nHost: x\r\n\r\n"), 431);
    }

    #[test]
    fn connect_takes_host_and_port_only() {
        parse("CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n").unwrap();
        parse("CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n\r\n").unwrap();
        for target in ["a.example", "u@a.example:443", "http://a.example:443", "/x"] {
            rejects(
                &format!("CONNECT {target} HTTP/1.1\r\nHost: a.example\r\n\r\n"),
                400,
            );
        }
    }

    #[test]
    fn an_absolute_form_target_decides_the_host() {
        let head =
            parse("GET http://a.example:8080/x HTTP/1.1\r\nHost: b.example\r\n\r\n").unwrap();
        assert_eq!(head.headers[header::HOST], "a.example:8080");
        assert_eq!(head.headers.get_all(header::HOST).iter().count(), 1);
        let head = parse("GET http://u:p@a.example/x HTTP/1.1\r\nHost: a.example\r\n\r\n").unwrap();
        assert_eq!(head.headers[header::HOST], "a.example");
        let head = parse("GET HTTPS://a.example/x HTTP/1.1\r\nHost: a.example\r\n\r\n").unwrap();
        assert_eq!(head.headers[header::HOST], "a.example");
        let head = parse("GET /x HTTP/1.1\r\nHost: b.example\r\n\r\n").unwrap();
        assert_eq!(head.headers[header::HOST], "b.example");
    }

    #[test]
    fn rejects_an_absolute_form_target_of_another_scheme() {
        for target in ["ftp://a.example/x", "ws://a.example/x"] {
            rejects(
                &format!("GET {target} HTTP/1.1\r\nHost: a.example\r\n\r\n"),
                400,
            );
        }
    }

    #[test]
    fn rejects_an_absolute_form_target_with_an_invalid_host() {
        for target in [
            "http://:80/p",
            "http://h:abc/p",
            "http://h:-1/p",
            "http://[1.2.3.4]/p",
            "http://[zz]/p",
            "http://[::1]x/p",
        ] {
            rejects(
                &format!("GET {target} HTTP/1.1\r\nHost: good.example\r\n\r\n"),
                400,
            );
            rejects(&format!("GET {target} HTTP/1.0\r\n\r\n"), 400);
        }
    }

    #[test]
    fn rejects_http11_without_host() {
        rejects("GET / HTTP/1.1\r\n\r\n", 400);
    }

    #[test]
    fn rejects_two_host_fields() {
        rejects("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400);
    }

    #[test]
    fn a_field_line_over_its_limit_is_refused_before_it_ends() {
        let limits = Limits::default();
        let mut head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: ".to_vec();
        head.resize(head.len() + limits.max_header_field - 10, b'a');
        let mut scanned = 0;
        assert!(matches!(
            find_head_end(&head, &mut scanned, &limits),
            Ok(None)
        ));
        head.resize(head.len() + 100, b'a');
        assert!(matches!(
            find_head_end(&head, &mut scanned, &limits),
            Err(Error::HeadTooLarge)
        ));
    }

    #[test]
    fn the_quick_host_check_passes_only_hosts_the_full_check_passes() {
        assert!(plain_host(b"www.example.com:8080") && plain_host(b"127.0.0.1"));
        let alphabet = b"a0.-:_[]@ %";
        let mut host = Vec::new();
        for len in 1..=4u32 {
            for mut n in 0..alphabet.len().pow(len) {
                host.clear();
                for _ in 0..len {
                    host.push(alphabet[n % alphabet.len()]);
                    n /= alphabet.len();
                }
                if plain_host(&host) {
                    let full = checked_host(Bytes::copy_from_slice(&host));
                    assert!(full, "{:?}", String::from_utf8_lossy(&host));
                }
            }
        }
    }

    #[test]
    fn rejects_an_invalid_host() {
        for host in [
            "x:port",
            "user@x",
            "a b",
            ":80",
            "x:8o",
            "[::1]x",
            "[::1]x:80",
            "[x]",
            "[]",
            "[zz::1]",
            "[1.2.3.4]",
            "x]",
        ] {
            rejects(&format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n"), 400);
        }
        for host in ["x", "x:80", "x:", "127.0.0.1:8000", "[::1]:8080", "[::1]"] {
            parse(&format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n")).unwrap();
        }
    }

    #[test]
    fn accepts_http10_without_host_and_without_keep_alive() {
        let head = parse("GET / HTTP/1.0\r\n\r\n").unwrap();
        assert!(!head.keep_alive);
        let head = parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
        assert!(head.keep_alive);
    }

    #[test]
    fn honours_connection_close() {
        assert!(
            !parse("GET / HTTP/1.1\r\nHost: x\r\nConnection: Close\r\n\r\n")
                .unwrap()
                .keep_alive
        );
    }

    #[test]
    fn rejects_content_length_with_transfer_encoding() {
        rejects(
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        );
    }

    #[test]
    fn rejects_content_length_that_is_not_digits() {
        for cl in ["-1", "+4", "4 4", "0x10", "", "4.0", "１"] {
            rejects(
                &format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {cl}\r\n\r\n"),
                400,
            );
        }
    }

    #[test]
    fn rejects_content_length_out_of_range() {
        rejects(
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            400,
        );
    }

    #[test]
    fn rejects_repeated_content_length_with_different_values() {
        rejects(
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
            400,
        );
        rejects(
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 5\r\n\r\n",
            400,
        );
        rejects(
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 4\r\n\r\n",
            400,
        );
    }

    #[test]
    fn accepts_repeated_content_length_with_equal_values() {
        let head =
            parse("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\n")
                .unwrap();
        assert_eq!(head.framing, Framing::Length(4));
    }

    #[test]
    fn rejects_transfer_encoding_not_ending_in_chunked() {
        rejects(
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            400,
        );
        rejects(
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n",
            400,
        );
    }

    #[test]
    fn rejects_an_empty_transfer_encoding_element() {
        // As two lines, whichever comes first: 400 (not a 501 for a coding nobody named).
        for fields in [
            "Transfer-Encoding: \r\nTransfer-Encoding: chunked",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: ",
            "Transfer-Encoding:  , \r\nTransfer-Encoding: chunked",
            // Within one line too: RFC 9110 §5.6.1 lets a recipient skip empty elements,
            // but llhttp, h11, aiohttp and Gunicorn refuse them, and a front end that read
            // `chunked,` as no framing would see another end of the body.
            "Transfer-Encoding: , chunked",
            "Transfer-Encoding: chunked,",
            "Transfer-Encoding: chunked,,",
            "Transfer-Encoding: chunked , ",
        ] {
            rejects(
                &format!("POST / HTTP/1.1\r\nHost: x\r\n{fields}\r\n\r\n"),
                400,
            );
        }
    }

    #[test]
    fn rejects_chunked_twice() {
        rejects(
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            400,
        );
    }

    #[test]
    fn answers_501_for_codings_before_chunked() {
        rejects(
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            501,
        );
    }

    #[test]
    fn rejects_transfer_encoding_on_http10() {
        rejects("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400);
    }

    #[test]
    fn drops_fields_with_underscores_in_their_names() {
        let head = parse("GET / HTTP/1.0\r\nContent_Length: 5\r\nX-Ok: 1\r\n\r\n").unwrap();
        assert_eq!(head.framing, Framing::None);
        assert_eq!(head.headers.len(), 1);
    }

    #[test]
    fn rejects_two_content_type_fields() {
        rejects(
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: a/b\r\nContent-Type: c/d\r\n\r\n",
            400,
        );
    }

    #[test]
    fn rejects_obsolete_line_folding() {
        rejects("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", 400);
    }

    #[test]
    fn rejects_whitespace_between_field_name_and_colon() {
        rejects("GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400);
    }

    #[test]
    fn rejects_control_characters_in_fields() {
        rejects("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n", 400);
        rejects("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", 400);
    }

    #[test]
    fn rejects_malformed_request_lines() {
        rejects("GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400);
        rejects("GET /\r\nHost: x\r\n\r\n", 400);
        rejects("G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400);
        rejects("GET foo HTTP/1.1\r\nHost: x\r\n\r\n", 400);
        rejects("GET /a#frag HTTP/1.1\r\nHost: x\r\n\r\n", 400);
    }

    #[test]
    fn reads_later_http1_minor_versions_as_http11() {
        // Blank lines before the request line are ignored here too (RFC 9112 §2.2).
        for raw in [
            "GET / HTTP/1.2\r\nHost: x\r\n\r\n",
            "\r\n\r\nGET / HTTP/1.9\r\nHost: x\r\n\r\n",
        ] {
            let head = parse(raw).unwrap();
            assert_eq!(head.version, Version::HTTP_11, "{raw:?}");
            assert!(head.keep_alive);
        }
    }

    #[test]
    fn answers_505_for_other_versions() {
        rejects("GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505);
        rejects("\r\nGET / HTTP/2.0\r\nHost: x\r\n\r\n", 505);
        rejects("GET / HTTP/1.1x\r\nHost: x\r\n\r\n", 400);
        rejects("\r\nGET / HTTP/1.1x\r\nHost: x\r\n\r\n", 400);
    }

    #[test]
    fn a_malformed_request_line_is_400_whatever_its_version() {
        rejects("GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", 400);
        rejects("GET /  HTTP/1.1\r\nHost: x\r\n\r\n", 400);
        rejects("GET /a b HTTP/2.0\r\nHost: x\r\n\r\n", 400);
    }

    #[test]
    fn answers_414_for_a_long_request_line() {
        let target = "a".repeat(9000);
        rejects(&format!("GET /{target} HTTP/1.1\r\nHost: x\r\n\r\n"), 414);
    }

    #[test]
    fn the_request_line_limit_is_4094_bytes() {
        let target = "a".repeat(4094 - "GET / HTTP/1.1".len());
        let fits = format!("GET /{target} HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(parse(&fits).is_ok());
        rejects(&format!("GET /{target}a HTTP/1.1\r\nHost: x\r\n\r\n"), 414);
    }

    #[test]
    fn rejects_a_bare_lf_anywhere_in_the_head() {
        for head in [
            "GET / HTTP/1.1\nHost: x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\n\n",
            "GET / HTTP/1.1\nHost: x\n\n",
            // The smuggling shape: an LF inside what a front end took for one field value.
            "POST / HTTP/1.1\r\nHost: x\r\nX: a\nContent-Length: 5\r\n\r\n",
        ] {
            rejects(head, 400);
        }
        // Found as soon as it arrives, before the head is complete.
        let mut scanned = 0;
        let partial = b"GET / HTTP/1.1\r\nHost: x\nX-More";
        assert!(find_head_end(partial, &mut scanned, &Limits::default()).is_err());
        // Blank lines before the request line are still ignored, LF or CRLF.
        assert!(parse("\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n").is_ok());
    }

    #[test]
    fn the_field_limit_counts_trailing_whitespace_and_the_real_line_ending() {
        let blanks = " ".repeat(9000);
        rejects(
            &format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: v{blanks}\r\n\r\n"),
            431,
        );
        let value = "v".repeat(8190 - "X-Big: \r\n".len());
        assert!(parse(&format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {value}\r\n\r\n"
        ))
        .is_ok());
        rejects(
            &format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {value}v\r\n\r\n"),
            431,
        );
    }

    #[test]
    fn answers_431_for_too_many_or_too_large_fields() {
        let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
        rejects(&format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n"), 431);
        let large = "v".repeat(8190 - "X-Big: \r\n".len() + 1);
        rejects(
            &format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {large}\r\n\r\n"),
            431,
        );
    }

    #[test]
    fn answers_431_before_an_endless_head_is_buffered() {
        let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
        while raw.len() <= 64 * 1024 {
            raw.extend_from_slice(b"X-Filler: 0123456789\r\n");
        }
        let err = parse_request_head(&raw, &Limits::default()).unwrap_err();
        assert_eq!(err.status(), 431);
    }

    #[test]
    fn expect_100_continue_is_recognised_and_others_refused() {
        let head =
            parse("PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n")
                .unwrap();
        assert!(head.expect_continue);
        rejects("PUT / HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\n\r\n", 417);
        rejects(
            "PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue, teapot\r\n\r\n",
            417,
        );
        // A list: empty elements are ignored, and an empty list expects nothing.
        for expect in [
            "100-continue,",
            ", 100-continue",
            "100-continue\r\nExpect: 100-continue",
        ] {
            let raw = format!(
                "PUT / HTTP/1.1\r\nHost: x\r\nExpect: {expect}\r\nContent-Length: 1\r\n\r\n"
            );
            assert!(parse(&raw).unwrap().expect_continue, "{expect:?}");
        }
        let raw = "PUT / HTTP/1.1\r\nHost: x\r\nExpect: \r\nContent-Length: 1\r\n\r\n";
        assert!(!parse(raw).unwrap().expect_continue);
    }

    #[test]
    fn asterisk_form_only_for_options() {
        assert_eq!(
            parse("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap()
                .uri
                .path(),
            "*"
        );
        rejects("GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400);
    }

    #[test]
    fn absolute_form_keeps_its_path() {
        let head =
            parse("GET http://example.com/p?q HTTP/1.1\r\nHost: example.com\r\n\r\n").unwrap();
        assert_eq!(head.uri.path(), "/p");
        assert_eq!(head.uri.query(), Some("q"));
    }
}
