//! What the fuzz targets share: cutting an input into the pieces a network might deliver,
//! the gateway a fuzzed connection talks to, and a strict reader for the server's output.

use std::io::Read;
use std::sync::{Arc, Mutex, OnceLock};

use sgi::http::{Method, StatusCode};
use sgi::http1::RequestHead;
use sgi::{Body, Config, Limits, Request, Response, TestClient};

/// Limits small enough that inputs of a few KiB reach every limit check.
pub fn small_limits() -> Limits {
    Limits {
        max_request_line: 256,
        max_headers: 8,
        max_header_field: 256,
        max_head: 1024,
        max_body: Some(1024),
        ..Limits::default()
    }
}

/// Cuts an input into pieces: its first byte chooses the sizes (low 3 bits: the largest
/// piece; all 8: the seed of the sizes), the rest is the payload. A seed byte of `7` (or an
/// empty input) leaves the payload whole.
pub fn pieces(data: &[u8]) -> Vec<&[u8]> {
    let Some((&seed, mut payload)) = data.split_first() else {
        return Vec::new();
    };
    let max = [1, 2, 3, 8, 32, 128, 1024, usize::MAX][usize::from(seed & 7)];
    let mut state = u32::from(seed) | 0x9e37_7900;
    let mut out = Vec::new();
    while !payload.is_empty() {
        // xorshift32: sizes vary within a piece class without spending input bytes on them.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let size = if max == usize::MAX {
            payload.len()
        } else {
            1 + state as usize % max
        };
        let (piece, rest) = payload.split_at(size.min(payload.len()));
        out.push(piece);
        payload = rest;
    }
    out
}

/// Whether two parses of the same head agree on everything they report.
pub fn same_head(a: &RequestHead, b: &RequestHead) -> bool {
    a.method == b.method
        && a.uri == b.uri
        && a.version == b.version
        && a.headers == b.headers
        && a.framing == b.framing
        && a.keep_alive == b.keep_alive
        && a.expect_continue == b.expect_continue
        && a.len == b.len
}

/// The client a fuzzed connection runs against, and the log its gateway keeps: for each
/// request it was called for, whether it was a `HEAD` (whose response carries no body).
pub fn client() -> &'static (TestClient, Arc<Mutex<Vec<bool>>>) {
    static CLIENT: OnceLock<(TestClient, Arc<Mutex<Vec<bool>>>)> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let calls = Arc::clone(&log);
        let gateway = move |req: Request<'_>| {
            calls.lock().unwrap().push(req.method() == Method::HEAD);
            respond(req)
        };
        let config = Config::default().access_log(false).limits(small_limits());
        (TestClient::with_config(gateway, config), log)
    })
}

/// A gateway whose behaviour the request picks by the first letter of its path, so the
/// fuzzer reaches every way of reading a body and every response framing.
fn respond(mut req: Request<'_>) -> Response {
    let path = req.uri().path().to_string();
    let mut body = Vec::new();
    let response_body = match path.as_bytes().get(1) {
        // The body left unread: the server drains it or closes.
        Some(b'n') => Body::from("not read"),
        // One byte read, the rest left.
        Some(b'p') => {
            let mut one = [0; 1];
            let n = req.body_mut().read(&mut one).unwrap_or(0);
            Body::from(one[..n].to_vec())
        }
        Some(b'z') => {
            let _ = req.body_mut().read_to_end(&mut body);
            let mut res = Response::new(Body::empty());
            *res.status_mut() = StatusCode::NO_CONTENT;
            return res;
        }
        // Streamed (chunked on 1.1, close-delimited on 1.0), or a reader of known length.
        Some(b's') => {
            let _ = req.body_mut().read_to_end(&mut body);
            let half = body.split_off(body.len() / 2);
            Body::from_iter([Ok(body.into()), Ok(Default::default()), Ok(half.into())])
        }
        Some(b'r') => {
            let _ = req.body_mut().read_to_end(&mut body);
            let len = body.len() as u64;
            Body::from_reader(std::io::Cursor::new(body), Some(len))
        }
        _ => {
            let _ = req.body_mut().read_to_end(&mut body);
            Body::from(body)
        }
    };
    let mut res = Response::new(response_body);
    if let Some(value) = req.headers().get("x-echo") {
        res.headers_mut().insert("x-echo", value.clone());
    }
    if req.headers().contains_key("x-close") {
        res.headers_mut()
            .insert("connection", sgi::http::HeaderValue::from_static("close"));
    }
    res
}

/// Reads `out` as the server's whole output on a connection whose gateway was called for
/// requests `heads` (true for `HEAD`), and says what is wrong with it, if anything.
///
/// Every response must be a well-formed HTTP/1.1 response with exactly one framing, and its
/// body must be all there. The `n`th final response answers the `n`th gateway call; at most
/// one more (the server's own rejection) may follow, and nothing follows `connection: close`.
/// Every call but the last must have been answered (only a body cut short goes unanswered).
pub fn check_responses(out: &[u8], heads: &[bool]) -> Result<(), String> {
    let mut rest = out;
    let mut finals = 0;
    while !rest.is_empty() {
        let mut storage = [httparse::EMPTY_HEADER; 64];
        let mut res = httparse::Response::new(&mut storage);
        let len = match res.parse(rest) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Err("truncated response head".into()),
            Err(e) => return Err(format!("malformed response head: {e}")),
        };
        if res.version != Some(1) {
            return Err("response is not HTTP/1.1".into());
        }
        let status = res
            .code
            .and_then(|c| StatusCode::from_u16(c).ok())
            .ok_or("invalid status code")?;
        if res.reason != Some(status.canonical_reason().unwrap_or("")) {
            return Err(format!("unexpected reason phrase for {status}"));
        }
        let count = |name: &str| {
            res.headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case(name))
                .count()
        };
        let value = |name: &str| {
            res.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value)
        };
        rest = &rest[len..];
        if status.is_informational() {
            if status != StatusCode::CONTINUE || !res.headers.is_empty() {
                return Err(format!("unexpected interim response {status}"));
            }
            continue;
        }
        let is_head = match heads.get(finals) {
            Some(&is_head) => is_head,
            // The server's own answer to a request it rejected carries no content if that
            // request began `HEAD ` (RFC 9110 §9.3.2); it is the last thing written.
            None if finals == heads.len() => rest.is_empty(),
            None => return Err("more responses than requests".into()),
        };
        finals += 1;
        if count("date") != 1 {
            return Err("not exactly one date field".into());
        }
        let (cls, tes, conns) = (
            count("content-length"),
            count("transfer-encoding"),
            count("connection"),
        );
        if cls > 1 || tes > 1 || cls + tes > 1 || conns > 1 {
            return Err("repeated or conflicting framing fields".into());
        }
        let close = match value("connection") {
            None | Some(b"keep-alive") => false,
            Some(b"close") => true,
            Some(other) => return Err(format!("unexpected connection: {other:?}")),
        };
        if finals > heads.len() && !close {
            return Err("the server's own answer does not close".into());
        }
        let bodiless = status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
        if bodiless && cls + tes > 0 {
            return Err(format!("{status} with framing fields"));
        }
        if let Some(te) = value("transfer-encoding") {
            if te != b"chunked" {
                return Err(format!("unexpected transfer-encoding: {te:?}"));
            }
        }
        let length = match value("content-length") {
            Some(v) => Some(
                std::str::from_utf8(v)
                    .ok()
                    .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|s| s.parse::<usize>().ok())
                    .ok_or("invalid content-length")?,
            ),
            None => None,
        };
        if is_head || bodiless {
            // No body follows, whatever the framing fields say.
        } else if tes == 1 {
            rest = skip_chunked(rest)?;
        } else if let Some(n) = length {
            rest = rest
                .get(n..)
                .ok_or("body shorter than its content-length")?;
        } else if close {
            rest = &[];
        } else {
            return Err("body with no framing on a persistent connection".into());
        }
        if close && !rest.is_empty() {
            return Err("bytes after a response that closes the connection".into());
        }
    }
    if finals + 1 < heads.len() {
        return Err(format!(
            "{} gateway calls but only {finals} responses",
            heads.len()
        ));
    }
    Ok(())
}

/// Skips a chunked body as the server writes it: lowercase hex sizes without extensions,
/// no empty chunk before the last, no trailers.
fn skip_chunked(mut rest: &[u8]) -> Result<&[u8], String> {
    loop {
        let line = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size line")?;
        let digits = &rest[..line];
        if digits.is_empty()
            || digits.len() > 16
            || !digits.iter().all(|b| b"0123456789abcdef".contains(b))
            || (digits.len() > 1 && digits[0] == b'0')
        {
            return Err(format!("malformed chunk size line {digits:?}"));
        }
        let size = usize::from_str_radix(std::str::from_utf8(digits).unwrap(), 16)
            .map_err(|_| "chunk size out of range")?;
        rest = &rest[line + 2..];
        if size == 0 {
            return rest
                .strip_prefix(b"\r\n")
                .ok_or_else(|| "missing CRLF after the last chunk".into());
        }
        rest = rest
            .get(size..)
            .and_then(|r| r.strip_prefix(b"\r\n"))
            .ok_or("truncated chunk")?;
    }
}
