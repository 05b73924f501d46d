//! Request heads: find where a head ends, then parse and validate it with `httparse` and the
//! `http` crate's types. Everything that could let a request be read two ways (smuggling) is
//! rejected here, before a gateway sees the request.

use bytes::Bytes;
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
/// client cannot make the server buffer an endless head).
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
    // Leading blank lines before a request line are ignored (RFC 9112 §2.2).
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let body = &buf[start..];
    let from = scanned.saturating_sub(start).saturating_sub(3);
    let mut end = None;
    let mut i = from;
    while let Some(off) = body[i..].iter().position(|&b| b == b'\n') {
        let nl = i + off;
        match body.get(nl + 1) {
            Some(b'\n') => {
                end = Some(nl + 2);
                break;
            }
            Some(b'\r') if body.get(nl + 2) == Some(&b'\n') => {
                end = Some(nl + 3);
                break;
            }
            Some(_) => i = nl + 1,
            None => break,
        }
    }
    if end.is_none() {
        // Resume after what was searched; a found head is found again from the same place.
        *scanned = buf.len();
    }
    let line_end = body.iter().position(|&b| b == b'\n');
    let line_len = line_end.unwrap_or(body.len());
    if line_len > limits.max_request_line + 1 {
        return Err(Error::UriTooLong);
    }
    match end {
        Some(end) if end <= limits.max_head => Ok(Some(start + end)),
        Some(_) => Err(Error::HeadTooLarge),
        None if body.len() > limits.max_head => Err(Error::HeadTooLarge),
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
    let head = &buf[..len];
    const STACK: usize = 128;
    if limits.max_headers < STACK {
        let mut storage = [httparse::EMPTY_HEADER; STACK];
        parse_complete(head, &mut storage[..limits.max_headers], limits).map(Some)
    } else {
        let mut storage = vec![httparse::EMPTY_HEADER; limits.max_headers];
        parse_complete(head, &mut storage, limits).map(Some)
    }
}

fn parse_complete<'b>(
    head: &'b [u8],
    storage: &mut [httparse::Header<'b>],
    limits: &Limits,
) -> Result<RequestHead, Error> {
    let mut req = httparse::Request::new(storage);
    let len = match req.parse(head) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err(Error::BadRequest("incomplete head")),
        Err(httparse::Error::TooManyHeaders) => return Err(Error::HeadTooLarge),
        Err(httparse::Error::Version) => return Err(version_error(head)),
        Err(httparse::Error::HeaderName) => return Err(Error::BadRequest("invalid header name")),
        Err(httparse::Error::HeaderValue) => return Err(Error::BadRequest("invalid header value")),
        Err(httparse::Error::Token) => return Err(Error::BadRequest("invalid method or target")),
        Err(httparse::Error::NewLine) => return Err(Error::BadRequest("invalid line ending")),
        Err(_) => return Err(Error::BadRequest("malformed request head")),
    };
    let method = Method::from_bytes(req.method.unwrap_or("").as_bytes())
        .map_err(|_| Error::BadRequest("invalid method"))?;
    let target = req.path.unwrap_or("");
    let uri = parse_target(&method, target)?;
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        Some(1) => Version::HTTP_11,
        _ => return Err(Error::UnsupportedVersion),
    };

    let mut headers = HeaderMap::with_capacity(req.headers.len());
    for field in req.headers.iter() {
        // The whole field line as sent, CRLF included (name and value point into `head`).
        let line =
            field.value.as_ptr() as usize + field.value.len() + 2 - field.name.as_ptr() as usize;
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
        let value = HeaderValue::from_bytes(field.value)
            .map_err(|_| Error::BadRequest("invalid header value"))?;
        headers.append(name, value);
    }

    validate_host(&headers, version)?;
    if headers
        .get_all(header::CONTENT_TYPE)
        .iter()
        .nth(1)
        .is_some()
    {
        return Err(Error::BadRequest("more than one Content-Type field"));
    }
    let framing = framing(&headers, version)?;
    let keep_alive = keep_alive(&headers, version);
    let expect_continue = expectation(&headers, version)?;
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

/// `505` for a well-formed version we do not speak, `400` for garbage in its place.
fn version_error(head: &[u8]) -> Error {
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let line = head[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&head[..line_end]);
    let version = line.rsplit(|&b| b == b' ').next().unwrap_or(b"");
    match version {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            Error::UnsupportedVersion
        }
        _ => Error::BadRequest("invalid HTTP version"),
    }
}

fn parse_target(method: &Method, target: &str) -> Result<Uri, Error> {
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
    let uri = Uri::from_maybe_shared(Bytes::copy_from_slice(target.as_bytes()))
        .map_err(|_| Error::BadRequest("invalid request target"))?;
    if method == Method::CONNECT && (uri.authority().is_none() || uri.scheme().is_some()) {
        return Err(Error::BadRequest("CONNECT needs an authority-form target"));
    }
    Ok(uri)
}

fn validate_host(headers: &HeaderMap, version: Version) -> Result<(), Error> {
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => Err(Error::BadRequest("more than one Host field")),
        (None, _) if version == Version::HTTP_11 => {
            Err(Error::BadRequest("HTTP/1.1 request without Host"))
        }
        (Some(host), None) if !host.is_empty() => valid_host(host.as_bytes())
            .then_some(())
            .ok_or(Error::BadRequest("invalid Host")),
        _ => Ok(()),
    }
}

/// `uri-host [ ":" port ]` (RFC 9112 §3.2): no userinfo, a port of digits only.
fn valid_host(host: &[u8]) -> bool {
    let (name, port) = match host.iter().rposition(|&b| b == b':') {
        // A colon inside an IPv6 literal is not a port separator.
        Some(i) if !host[i..].contains(&b']') => (&host[..i], &host[i + 1..]),
        _ => (host, &b""[..]),
    };
    !host.contains(&b'@')
        && !name.is_empty()
        && port.iter().all(u8::is_ascii_digit)
        && http::uri::Authority::try_from(host).is_ok()
}

fn framing(headers: &HeaderMap, version: Version) -> Result<Framing, Error> {
    let has_te = headers.contains_key(header::TRANSFER_ENCODING);
    let has_cl = headers.contains_key(header::CONTENT_LENGTH);
    if has_te && has_cl {
        return Err(Error::BadRequest(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    if has_te {
        if version == Version::HTTP_10 {
            return Err(Error::BadRequest(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        return transfer_coding(headers);
    }
    if !has_cl {
        return Ok(Framing::None);
    }
    // Plain digits only: the list form (`5, 5`) is refused too, as some peers read it apart.
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        let digits = value.as_bytes();
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(Error::BadRequest("invalid Content-Length"));
        }
        let n = std::str::from_utf8(digits)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or(Error::BadRequest("Content-Length out of range"))?;
        match length {
            Some(prev) if prev != n => return Err(Error::BadRequest("conflicting Content-Length")),
            _ => length = Some(n),
        }
    }
    Ok(match length {
        Some(0) | None => Framing::None,
        Some(n) => Framing::Length(n),
    })
}

/// Only `chunked` is decoded; it must come last and once (RFC 9112 §6.1, §6.3).
fn transfer_coding(headers: &HeaderMap) -> Result<Framing, Error> {
    let mut codings = Vec::new();
    for value in headers.get_all(header::TRANSFER_ENCODING) {
        for item in value.as_bytes().split(|&b| b == b',') {
            let item = trim_ows(item);
            if !item.is_empty() {
                codings.push(item);
            }
        }
    }
    let chunked = |c: &[u8]| c.eq_ignore_ascii_case(b"chunked");
    match codings.last() {
        Some(last) if chunked(last) => {}
        _ => {
            return Err(Error::BadRequest(
                "Transfer-Encoding does not end in chunked",
            ))
        }
    }
    if codings.iter().filter(|c| chunked(c)).count() > 1 {
        return Err(Error::BadRequest("chunked applied more than once"));
    }
    if codings.len() > 1 {
        return Err(Error::UnsupportedCoding);
    }
    Ok(Framing::Chunked)
}

fn keep_alive(headers: &HeaderMap, version: Version) -> bool {
    let (mut close, mut keep) = (false, false);
    for value in headers.get_all(header::CONNECTION) {
        for item in value.as_bytes().split(|&b| b == b',') {
            let item = trim_ows(item);
            close |= item.eq_ignore_ascii_case(b"close");
            keep |= item.eq_ignore_ascii_case(b"keep-alive");
        }
    }
    !close && (version == Version::HTTP_11 || keep)
}

fn expectation(headers: &HeaderMap, version: Version) -> Result<bool, Error> {
    let mut values = headers.get_all(header::EXPECT).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(false),
        (Some(v), None) if trim_ows(v.as_bytes()).eq_ignore_ascii_case(b"100-continue") => {
            // An HTTP/1.0 client cannot understand 100 Continue (RFC 9110 §10.1.1).
            Ok(version == Version::HTTP_11)
        }
        _ => Err(Error::ExpectationFailed),
    }
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
    fn rejects_http11_without_host() {
        rejects("GET / HTTP/1.1\r\n\r\n", 400);
    }

    #[test]
    fn rejects_two_host_fields() {
        rejects("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400);
    }

    #[test]
    fn rejects_an_invalid_host() {
        for host in ["x:port", "user@x", "a b", ":80", "x:8o"] {
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
    fn answers_505_for_other_versions() {
        rejects("GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505);
        rejects("GET / HTTP/1.1x\r\nHost: x\r\n\r\n", 400);
    }

    #[test]
    fn answers_414_for_a_long_request_line() {
        let target = "a".repeat(9000);
        rejects(&format!("GET /{target} HTTP/1.1\r\nHost: x\r\n\r\n"), 414);
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
