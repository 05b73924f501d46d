//! Response heads: the framing decision (pure, unit-tested) and its serialization. The server
//! owns framing: whatever a gateway says about `Content-Length`, `Transfer-Encoding` or
//! `Connection`, the bytes on the wire are framed by what the server actually sends.

use http::header::{self, HeaderMap, HeaderName};
use http::{Method, StatusCode, Version};

use super::date;

/// How a response body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body may follow (1xx, 204, 304, or HEAD without a known length).
    None,
    /// `Content-Length: n` (for HEAD: the length a GET would have had; no body follows).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Delimited by closing the connection (HTTP/1.0 clients, unknown length).
    CloseDelimited,
}

/// What the server will send for one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponsePlan {
    /// The framing header, if any.
    pub framing: BodyFraming,
    /// Whether body bytes follow the head at all.
    pub send_body: bool,
    /// Whether the connection closes after this response.
    pub close: bool,
    /// The gateway declared a `Content-Length` that differs from its body's known length.
    pub length_mismatch: bool,
}

/// Decides framing and persistence for a response.
///
/// `body_len` is the body's length when known in advance; a `Content-Length` the gateway set
/// on a body of unknown length is taken as a promise (the server enforces it as it sends).
///
/// ```
/// use sgi::http::{HeaderMap, Method, StatusCode, Version};
/// use sgi::http1::{plan_response, BodyFraming};
///
/// let plan = plan_response(&Method::HEAD, Version::HTTP_11, true, StatusCode::OK, &HeaderMap::new(), Some(13));
/// assert_eq!(plan.framing, BodyFraming::Length(13));
/// assert!(!plan.send_body);
/// ```
pub fn plan_response(
    method: &Method,
    version: Version,
    keep_alive: bool,
    status: StatusCode,
    headers: &HeaderMap,
    body_len: Option<u64>,
) -> ResponsePlan {
    let (declared, asks_to_close) = scan_fields(headers);
    let is_head = method == Method::HEAD;
    // The bytes actually sent decide the length. A HEAD answer says what GET would send: the
    // body's length when the gateway built the same body, the declared one when it left
    // the body out (an empty body with a Content-Length).
    let length_mismatch = !is_head && matches!((declared, body_len), (Some(d), Some(b)) if d != b);
    let length = match body_len {
        Some(0) if is_head => declared.or(Some(0)),
        Some(n) => Some(n),
        None => declared,
    };
    let bodiless_status = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    // 205 must carry no content, yet (unlike 204) is not bodiless to a client's framing
    // rules: it says so with Content-Length: 0 (RFC 9110 §15.3.6).
    if status == StatusCode::RESET_CONTENT {
        return ResponsePlan {
            framing: BodyFraming::Length(0),
            send_body: false,
            close: !keep_alive || asks_to_close,
            length_mismatch: false,
        };
    }
    let framing = if bodiless_status {
        BodyFraming::None
    } else if let Some(n) = length {
        BodyFraming::Length(n)
    } else if is_head {
        BodyFraming::None
    } else if version == Version::HTTP_11 {
        BodyFraming::Chunked
    } else {
        BodyFraming::CloseDelimited
    };
    let close = !keep_alive || asks_to_close || framing == BodyFraming::CloseDelimited;
    ResponsePlan {
        framing,
        send_body: !is_head && !bodiless_status,
        close,
        length_mismatch,
    }
}

/// The gateway's declared length (its first `Content-Length`, if a plain number) and
/// whether a `Connection` field asks to close, in one pass over the (few) fields: cheaper
/// than a hashed lookup of each.
fn scan_fields(headers: &HeaderMap) -> (Option<u64>, bool) {
    let mut declared = None;
    let mut length_seen = false;
    let mut close = false;
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH && !std::mem::replace(&mut length_seen, true) {
            declared = declared_length(value);
        } else if name == header::CONNECTION {
            close |= value
                .as_bytes()
                .split(|&b| b == b',')
                .any(|t| super::head::trim_ows(t).eq_ignore_ascii_case(b"close"));
        }
    }
    (declared, close)
}

fn declared_length(value: &http::HeaderValue) -> Option<u64> {
    let text = value.to_str().ok()?.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Hop-by-hop fields (RFC 9110 §7.6.1): they describe one connection, which the server owns.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::TE
        || name == header::TRAILER
        || name == header::UPGRADE
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// A `Connection` field from a gateway that the server honours rather than drops: `close`
/// (close the connection after this answer) and `upgrade` (the option that goes with an
/// `Upgrade` field, which the server adds itself). The server writes its own `Connection`.
pub(crate) fn only_close_or_upgrade(name: &HeaderName, value: &http::HeaderValue) -> bool {
    name == header::CONNECTION
        && value
            .as_bytes()
            .split(|&b| b == b',')
            .map(super::head::trim_ows)
            .all(|t| t.eq_ignore_ascii_case(b"close") || t.eq_ignore_ascii_case(b"upgrade"))
}

/// A hop-by-hop field a gateway may still send: `Upgrade`, which a `426` must carry and any
/// response may use to advertise protocols (RFC 9110 §7.8, §15.5.22). The server sends the
/// `upgrade` connection option with it.
fn gateway_may_send(name: &HeaderName) -> bool {
    name == header::UPGRADE
}

/// Hop-by-hop fields the server owns, so that a gateway's are dropped: all but `Upgrade`.
pub(crate) fn owned_hop_by_hop(name: &HeaderName) -> bool {
    is_hop_by_hop(name) && !gateway_may_send(name)
}

/// Whether the server drops a gateway's field `name` as describing the connection: a
/// hop-by-hop field it owns, or one the gateway's `Connection` field names (`connection`:
/// whether `headers` has a `Connection` field, found once per response).
pub(crate) fn drops_for_the_connection(
    headers: &HeaderMap,
    connection: bool,
    name: &HeaderName,
) -> bool {
    owned_hop_by_hop(name)
        || (connection && !gateway_may_send(name) && named_in_connection(headers, name))
}

/// Whether a `Connection` field in `headers` names `name` as a connection option: the
/// gateway marks that field as describing the connection only, so it goes with the
/// `Connection` field, which the server owns (RFC 9110 §7.6.1).
fn named_in_connection(headers: &HeaderMap, name: &HeaderName) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| super::head::trim_ows(t).eq_ignore_ascii_case(name.as_str().as_bytes()))
    })
}

/// Serializes a response head into `out` following `plan`. Returns how many of the
/// gateway's header fields were dropped as invalid (a control character in the value).
///
/// ```
/// use sgi::http::{HeaderMap, Method, StatusCode, Version};
/// use sgi::http1::{plan_response, write_response_head};
///
/// let headers = HeaderMap::new();
/// let plan = plan_response(&Method::GET, Version::HTTP_11, true, StatusCode::OK, &headers, Some(2));
/// let mut out = Vec::new();
/// write_response_head(&mut out, StatusCode::OK, &headers, &plan, Version::HTTP_11);
/// let text = String::from_utf8(out).unwrap();
/// assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
/// assert!(text.contains("content-length: 2\r\n"));
/// ```
pub fn write_response_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    plan: &ResponsePlan,
    request_version: Version,
) -> usize {
    write_head(out, status, headers, plan, request_version).dropped
}

/// What [`write_head`] left out of a gateway's fields.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct LeftOut {
    /// Fields with a control character in their value.
    pub(crate) dropped: usize,
    /// A hop-by-hop field was dropped (one the server does not honour), or there was more
    /// than one `Date`: worth a warning, which the caller words.
    pub(crate) owned: bool,
}

/// [`write_response_head`], telling what it left out.
pub(crate) fn write_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    plan: &ResponsePlan,
    request_version: Version,
) -> LeftOut {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut left_out = LeftOut::default();
    // A scan of the (few) names costs less than a hashed lookup.
    let connection = headers.keys().any(|name| name == header::CONNECTION);
    let mut dated = false;
    let mut dates = 0;
    let mut upgrade = false;
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH {
            continue;
        }
        if drops_for_the_connection(headers, connection, name) {
            left_out.owned |= !only_close_or_upgrade(name, value);
            continue;
        }
        // `Date` is a singleton (RFC 9110 §6.6.1): the first valid one of a gateway's goes
        // out, else the server's.
        let date = name == header::DATE;
        dates += usize::from(date);
        if date && dated {
            continue;
        }
        // `HeaderValue` can be built unchecked; never let one split or poison the head
        // (RFC 9110 §5.5: no control characters but HTAB).
        if value
            .as_bytes()
            .iter()
            .any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
        {
            left_out.dropped += 1;
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
        dated |= date;
        upgrade |= name == header::UPGRADE;
    }
    if !dated {
        out.extend_from_slice(b"date: ");
        date::append_now(out);
        out.extend_from_slice(b"\r\n");
    }
    match plan.framing {
        BodyFraming::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            append_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        BodyFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        BodyFraming::None | BodyFraming::CloseDelimited => {}
    }
    let persistence: &[u8] = match (plan.close, request_version) {
        (true, _) => b"close",
        (false, Version::HTTP_10) => b"keep-alive",
        (false, _) => b"",
    };
    match (persistence, upgrade) {
        (b"", false) => {}
        (b"", true) => out.extend_from_slice(b"connection: upgrade\r\n"),
        (option, upgrade) => {
            out.extend_from_slice(b"connection: ");
            out.extend_from_slice(option);
            if upgrade {
                out.extend_from_slice(b", upgrade");
            }
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    left_out.owned |= dates > 1;
    left_out
}

pub(crate) fn append_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

pub(crate) fn append_hex(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[(n & 15) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn plan(
        method: Method,
        version: Version,
        status: u16,
        headers: &HeaderMap,
        len: Option<u64>,
    ) -> ResponsePlan {
        plan_response(
            &method,
            version,
            true,
            StatusCode::from_u16(status).unwrap(),
            headers,
            len,
        )
    }

    #[test]
    fn known_length_gets_content_length() {
        let p = plan(
            Method::GET,
            Version::HTTP_11,
            200,
            &HeaderMap::new(),
            Some(5),
        );
        assert_eq!(
            (p.framing, p.send_body, p.close),
            (BodyFraming::Length(5), true, false)
        );
    }

    #[test]
    fn unknown_length_is_chunked_on_http11_and_close_delimited_on_http10() {
        let p = plan(Method::GET, Version::HTTP_11, 200, &HeaderMap::new(), None);
        assert_eq!(p.framing, BodyFraming::Chunked);
        let p = plan(Method::GET, Version::HTTP_10, 200, &HeaderMap::new(), None);
        assert_eq!((p.framing, p.close), (BodyFraming::CloseDelimited, true));
    }

    #[test]
    fn no_body_for_head_204_304_and_1xx() {
        for (m, s) in [
            (Method::HEAD, 200),
            (Method::GET, 204),
            (Method::GET, 304),
            (Method::GET, 103),
        ] {
            assert!(!plan(m, Version::HTTP_11, s, &HeaderMap::new(), Some(3)).send_body);
        }
        assert_eq!(
            plan(
                Method::GET,
                Version::HTTP_11,
                204,
                &HeaderMap::new(),
                Some(3)
            )
            .framing,
            BodyFraming::None
        );
    }

    #[test]
    fn head_keeps_the_get_content_length() {
        let p = plan(
            Method::HEAD,
            Version::HTTP_11,
            200,
            &HeaderMap::new(),
            Some(13),
        );
        assert_eq!(p.framing, BodyFraming::Length(13));
    }

    #[test]
    fn head_sends_the_declared_length_of_an_empty_body() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("13"));
        let p = plan(Method::HEAD, Version::HTTP_11, 200, &h, Some(0));
        assert_eq!(
            (p.framing, p.length_mismatch),
            (BodyFraming::Length(13), false)
        );
    }

    #[test]
    fn head_sends_the_length_of_the_body_get_would_send() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("99"));
        let p = plan(Method::HEAD, Version::HTTP_11, 200, &h, Some(5));
        assert_eq!(p.framing, BodyFraming::Length(5));
    }

    #[test]
    fn reset_content_says_it_has_none() {
        let p = plan(
            Method::GET,
            Version::HTTP_11,
            205,
            &HeaderMap::new(),
            Some(9),
        );
        assert_eq!((p.framing, p.send_body), (BodyFraming::Length(0), false));
    }

    #[test]
    fn gateway_content_length_is_a_promise_for_streams() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("7"));
        assert_eq!(
            plan(Method::GET, Version::HTTP_11, 200, &h, None).framing,
            BodyFraming::Length(7)
        );
        let p = plan(Method::GET, Version::HTTP_11, 200, &h, Some(3));
        assert_eq!(
            (p.framing, p.length_mismatch),
            (BodyFraming::Length(3), true)
        );
    }

    #[test]
    fn an_upgrade_field_goes_out_with_the_upgrade_option_beside_the_servers_own() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("TLS/1.2"));
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        let head = |version| {
            let p = plan(Method::GET, version, 426, &h, Some(0));
            let mut out = Vec::new();
            write_response_head(&mut out, StatusCode::UPGRADE_REQUIRED, &h, &p, version);
            String::from_utf8(out).unwrap()
        };
        let http11 = head(Version::HTTP_11);
        assert!(http11.contains("upgrade: TLS/1.2\r\n"), "{http11}");
        assert!(http11.contains("connection: upgrade\r\n"), "{http11}");
        let http10 = head(Version::HTTP_10);
        assert!(
            http10.contains("connection: keep-alive, upgrade\r\n"),
            "{http10}"
        );
        assert_eq!(http10.matches("connection:").count(), 1, "{http10}");
    }

    #[test]
    fn gateway_connection_close_is_honoured() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        assert!(plan(Method::GET, Version::HTTP_11, 200, &h, Some(0)).close);
    }

    #[test]
    fn server_owned_fields_are_not_passed_through() {
        let mut h = HeaderMap::new();
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("gzip"));
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("99"));
        h.insert("x-ok", HeaderValue::from_static("yes"));
        let p = plan(Method::GET, Version::HTTP_11, 200, &h, Some(2));
        let mut out = Vec::new();
        write_response_head(&mut out, StatusCode::OK, &h, &p, Version::HTTP_11);
        let text = String::from_utf8(out).unwrap();
        assert!(
            !text.contains("gzip") && !text.contains("upgrade") && !text.contains("99"),
            "{text}"
        );
        assert!(
            text.contains("x-ok: yes\r\ncontent-length") || text.contains("x-ok: yes\r\n"),
            "{text}"
        );
        assert!(text.contains("content-length: 2\r\n"), "{text}");
    }

    #[test]
    fn http10_keep_alive_is_confirmed() {
        let p = plan(
            Method::GET,
            Version::HTTP_10,
            200,
            &HeaderMap::new(),
            Some(0),
        );
        let mut out = Vec::new();
        write_response_head(
            &mut out,
            StatusCode::OK,
            &HeaderMap::new(),
            &p,
            Version::HTTP_10,
        );
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("connection: keep-alive\r\n"));
    }

    #[test]
    fn numbers_format_in_decimal_and_hex() {
        let mut out = Vec::new();
        append_decimal(&mut out, 0);
        append_decimal(&mut out, 1234567890);
        append_hex(&mut out, 255);
        assert_eq!(out, b"01234567890ff");
    }
}
