//! The chunked transfer coding, decoded without I/O (RFC 9112 §7.1).
//!
//! The size line goes through `httparse::parse_chunk_size`, after checks for what it lets
//! through and a smuggling-safe server must not: an empty size, a bare LF, control bytes in
//! an extension. Trailer fields are validated with the `http` crate's types and dropped.

use http::{HeaderName, HeaderValue};

use super::head::trim_ows;
use crate::{Error, Limits};

/// Longest chunk-size line we accept, extensions included.
const MAX_SIZE_LINE: usize = 4096;
/// Most chunk-extension bytes in one body (sgi reads no extension; without a bound, a body
/// of one-byte chunks with long extensions costs thousands of bytes read per byte of data).
const MAX_EXTENSIONS: usize = 16 * 1024;

/// What [`ChunkedDecoder::step`] found at the front of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// This many bytes of framing (a size line, a CRLF, a trailer field) were taken; the
    /// caller drops them from its buffer and steps again.
    Framing(usize),
    /// The buffer starts with this many bytes of body data. The caller hands some of them on
    /// and reports how many with [`ChunkedDecoder::consume`].
    Data(usize),
    /// More bytes are needed to go on.
    NeedMore,
    /// The body is over; this many bytes (the last framing) were taken.
    Done(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    Data(u64),
    DataEnd,
    Trailer,
    Done,
}

/// A decoder for a chunked request body.
///
/// ```
/// use sgi::http1::{ChunkedDecoder, Step};
///
/// let mut dec = ChunkedDecoder::new();
/// let limits = sgi::Limits::default();
/// let mut buf: &[u8] = b"3\r\nabc\r\n0\r\n\r\n";
/// let mut body = Vec::new();
/// loop {
///     match dec.step(buf, &limits).unwrap() {
///         Step::Framing(n) => buf = &buf[n..],
///         Step::Data(n) => {
///             body.extend_from_slice(&buf[..n]);
///             dec.consume(n);
///             buf = &buf[n..];
///         }
///         Step::Done(_) => break,
///         Step::NeedMore => unreachable!(),
///     }
/// }
/// assert_eq!(body, b"abc");
/// ```
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    trailers: usize,
    trailer_bytes: usize,
    extension_bytes: usize,
    /// The sizes of the chunks so far, added up.
    declared: u64,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    /// A decoder at the start of a body.
    pub fn new() -> Self {
        ChunkedDecoder {
            state: State::Size,
            trailers: 0,
            trailer_bytes: 0,
            extension_bytes: 0,
            declared: 0,
        }
    }

    /// Whether the whole body, trailers included, has been decoded.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Looks at the front of `buf` and says what is there. Trailer fields count against
    /// `limits.max_headers` and `limits.max_head`.
    pub fn step(&mut self, buf: &[u8], limits: &Limits) -> Result<Step, Error> {
        match self.state {
            State::Done => Ok(Step::Done(0)),
            State::Data(remaining) => {
                if buf.is_empty() {
                    Ok(Step::NeedMore)
                } else {
                    Ok(Step::Data(
                        buf.len()
                            .min(usize::try_from(remaining).unwrap_or(usize::MAX)),
                    ))
                }
            }
            State::DataEnd => match buf {
                [b'\r', b'\n', ..] => {
                    self.state = State::Size;
                    Ok(Step::Framing(2))
                }
                [] | [b'\r'] => Ok(Step::NeedMore),
                _ => Err(Error::BadChunk("chunk data not followed by CRLF")),
            },
            State::Size => {
                let Some(line) = crlf_line(buf, MAX_SIZE_LINE)? else {
                    return Ok(Step::NeedMore);
                };
                let (size, extensions) = chunk_size(&buf[..line])?;
                self.extension_bytes += extensions;
                if self.extension_bytes > MAX_EXTENSIONS {
                    // Framing out of proportion, not a large body: 400, not 413.
                    return Err(Error::BadChunk("chunk extensions over limit"));
                }
                // A chunk that would take the body over its limit is refused now, not after
                // its data has been read (as a `Content-Length` over it is).
                self.declared = self.declared.saturating_add(size);
                if limits.max_body.is_some_and(|max| self.declared > max) {
                    return Err(Error::BodyTooLarge);
                }
                self.state = if size == 0 {
                    State::Trailer
                } else {
                    State::Data(size)
                };
                Ok(Step::Framing(line))
            }
            State::Trailer => {
                // A trailer line is held to the limits of a head's field lines (431).
                let line = match crlf_line(buf, limits.max_header_field) {
                    Err(Error::BadChunk(LINE_TOO_LONG)) => return Err(Error::HeadTooLarge),
                    line => line?,
                };
                let Some(line) = line else {
                    return Ok(Step::NeedMore);
                };
                if line == 2 {
                    self.state = State::Done;
                    return Ok(Step::Done(2));
                }
                self.trailers += 1;
                self.trailer_bytes += line;
                if self.trailers > limits.max_headers || self.trailer_bytes > limits.max_head {
                    return Err(Error::HeadTooLarge);
                }
                trailer_field(&buf[..line - 2])?;
                Ok(Step::Framing(line))
            }
        }
    }

    /// Records that `n` bytes of the data last reported by [`step`](Self::step) were used.
    /// More than the chunk has left counts as the rest of it: the decoder never skips past
    /// a chunk's end into the framing.
    pub fn consume(&mut self, n: usize) {
        if let State::Data(remaining) = self.state {
            let left = remaining.saturating_sub(n as u64);
            self.state = if left == 0 {
                State::DataEnd
            } else {
                State::Data(left)
            };
        }
    }
}

/// The length of the CRLF-terminated line at the front of `buf`, CRLF included.
const LINE_TOO_LONG: &str = "line too long";

fn crlf_line(buf: &[u8], max: usize) -> Result<Option<usize>, Error> {
    match buf.iter().take(max).position(|&b| b == b'\n') {
        Some(0) => Err(Error::BadChunk("bare LF")),
        Some(nl) if buf[nl - 1] == b'\r' => Ok(Some(nl + 1)),
        Some(_) => Err(Error::BadChunk("bare LF")),
        None if buf.len() >= max => Err(Error::BadChunk(LINE_TOO_LONG)),
        None => Ok(None),
    }
}

/// The size a chunk's size line (CRLF included) gives, and how many bytes of extensions
/// follow its digits.
fn chunk_size(line: &[u8]) -> Result<(u64, usize), Error> {
    if !line.first().is_some_and(u8::is_ascii_hexdigit) {
        return Err(Error::BadChunk("invalid chunk size"));
    }
    let text = &line[..line.len() - 2];
    if text.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(Error::BadChunk("control character in chunk size line"));
    }
    let digits = text.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let extensions = &text[digits..];
    if !valid_extensions(extensions) {
        return Err(Error::BadChunk("invalid chunk extension"));
    }
    // Leading zeros are digits of the grammar (`1*HEXDIG`) that httparse counts against its
    // 16-digit bound; a size is read the same without them.
    let zeros = text[..digits].iter().take_while(|&&b| b == b'0').count();
    let line = &line[zeros.min(digits - 1)..];
    match httparse::parse_chunk_size(line) {
        Ok(httparse::Status::Complete((n, size))) if n == line.len() => {
            Ok((size, extensions.len()))
        }
        _ => Err(Error::BadChunk("invalid chunk size")),
    }
}

/// Whether `ext`, what follows a chunk's size up to its CRLF, is a list of chunk extensions
/// (RFC 9112 §7.1.1): `*( BWS ";" BWS name [ BWS "=" BWS value ] )`, each name a token,
/// each value a token or a quoted string. httparse skips whatever follows a `;`; parsers
/// that take more or less than the grammar are where a body's end could be read two ways.
fn valid_extensions(mut ext: &[u8]) -> bool {
    fn bws(s: &[u8]) -> &[u8] {
        let n = s.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
        &s[n..]
    }
    fn token(s: &[u8]) -> usize {
        s.iter().take_while(|&&b| is_tchar(b)).count()
    }
    while !ext.is_empty() {
        let Some(rest) = bws(ext).strip_prefix(b";") else {
            return false;
        };
        let rest = bws(rest);
        let name = token(rest);
        if name == 0 {
            return false;
        }
        ext = &rest[name..];
        if let Some(value) = bws(ext).strip_prefix(b"=") {
            let value = bws(value);
            let len = match value.first() {
                Some(b'"') => quoted_string(value),
                _ => token(value),
            };
            if len == 0 {
                return false;
            }
            ext = &value[len..];
        }
    }
    true
}

/// `tchar` (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The length of the quoted string (RFC 9110 §5.6.4) at the front of `s`, quotes included;
/// 0 if there is none.
fn quoted_string(s: &[u8]) -> usize {
    let text = |b: u8| b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80;
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'"' => return i + 1,
            b'\\' if s.get(i + 1).is_some_and(|&b| text(b)) => i += 2,
            b'\\' => return 0,
            b if text(b) => i += 1,
            _ => return 0,
        }
    }
    0
}

/// Fields that frame, route or authenticate a message must not arrive after its body
/// (RFC 9110 §6.5.1): a trailer is no place to change how the request was read.
const FORBIDDEN_TRAILERS: &[&str] = &[
    "transfer-encoding",
    "content-length",
    "host",
    "trailer",
    "te",
    "expect",
    "connection",
    "keep-alive",
    "upgrade",
    "content-type",
    "content-encoding",
    "content-range",
    "range",
    "authorization",
    "proxy-authorization",
    "cookie",
    "cache-control",
    "max-forwards",
];

fn trailer_field(line: &[u8]) -> Result<(), Error> {
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(Error::BadChunk("invalid trailer field"))?;
    let name = HeaderName::from_bytes(&line[..colon])
        .map_err(|_| Error::BadChunk("invalid trailer field name"))?;
    if FORBIDDEN_TRAILERS.contains(&name.as_str()) {
        return Err(Error::BadChunk("forbidden trailer field"));
    }
    HeaderValue::from_bytes(trim_ows(&line[colon + 1..]))
        .map_err(|_| Error::BadChunk("invalid trailer field value"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes all of `input` fed in pieces of `split` bytes.
    pub(crate) fn decode(input: &[u8], split: usize) -> Result<Vec<u8>, Error> {
        decode_with(input, split, &Limits::default())
    }

    fn decode_with(input: &[u8], split: usize, limits: &Limits) -> Result<Vec<u8>, Error> {
        let mut dec = ChunkedDecoder::new();
        let mut buf = Vec::new();
        let mut fed = 0;
        let mut out = Vec::new();
        loop {
            match dec.step(&buf, limits)? {
                Step::Framing(n) => drop(buf.drain(..n)),
                Step::Data(n) => {
                    out.extend_from_slice(&buf[..n]);
                    dec.consume(n);
                    buf.drain(..n);
                }
                Step::Done(n) => {
                    buf.drain(..n);
                    return Ok(out);
                }
                Step::NeedMore => {
                    if fed == input.len() {
                        return Err(Error::Incomplete);
                    }
                    let end = (fed + split).min(input.len());
                    buf.extend_from_slice(&input[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn chunk_extensions_are_bounded_per_body() {
        let ext = "e".repeat(4000);
        let body = |chunks: usize| {
            let mut body = format!("1;{ext}\r\nx\r\n").repeat(chunks);
            body.push_str("0\r\n\r\n");
            body
        };
        assert_eq!(decode(body(4).as_bytes(), 1 << 20).unwrap(), b"xxxx");
        assert!(matches!(
            decode(body(5).as_bytes(), 1 << 20),
            Err(Error::BadChunk("chunk extensions over limit"))
        ));
    }

    #[test]
    fn consuming_past_a_chunk_ends_at_the_chunk() {
        let input = b"3\r\nabc\r\n0\r\n\r\n";
        let limits = Limits::default();
        let mut dec = ChunkedDecoder::new();
        assert_eq!(dec.step(input, &limits).unwrap(), Step::Framing(3));
        assert_eq!(dec.step(&input[3..], &limits).unwrap(), Step::Data(3));
        dec.consume(5);
        // The CRLF after the data, then the last chunk: in step with the framing.
        assert_eq!(dec.step(&input[6..], &limits).unwrap(), Step::Framing(2));
        assert_eq!(dec.step(&input[8..], &limits).unwrap(), Step::Framing(3));
        assert_eq!(dec.step(&input[11..], &limits).unwrap(), Step::Done(2));
    }

    #[test]
    fn decodes_chunks_at_every_split() {
        let input = b"5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\nX-T: v\r\n\r\n";
        for split in 1..input.len() {
            assert_eq!(
                decode(input, split).unwrap(),
                b"hello 0123456789",
                "split {split}"
            );
        }
    }

    #[test]
    fn takes_extensions_as_their_grammar_has_them() {
        // RFC 9112 §7.1.1: *( BWS ";" BWS name [ BWS "=" BWS value ] ).
        for good in [
            "5;a",
            "5;a=b",
            "5 ;a",
            "5\t;a",
            "5; a",
            "5;a = b",
            "5;a=b;c",
            "5;a=\"x y\"",
            "5;a=\"q\\\"q\"",
            "5;a;b=c ;d",
        ] {
            let input = format!("{good}\r\nhello\r\n0\r\n\r\n");
            assert_eq!(decode(input.as_bytes(), 64).unwrap(), b"hello", "{good:?}");
        }
        for bad in [
            "5 ",
            "5\t",
            "5;",
            "5; ",
            "5;a ",
            "5;a=",
            "5;a=\"b",
            "5;a=b c",
            "5;=b",
            "5 5",
            "5;a=\"b\"c",
            "5;(a)",
            "5,a",
        ] {
            let input = format!("{bad}\r\nhello\r\n0\r\n\r\n");
            assert!(
                matches!(decode(input.as_bytes(), 64), Err(Error::BadChunk(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_chunk_over_the_body_limit_is_refused_before_its_data() {
        let limits = Limits {
            max_body: Some(10),
            ..Limits::default()
        };
        assert_eq!(
            decode_with(b"a\r\n0123456789\r\n0\r\n\r\n", 64, &limits)
                .unwrap()
                .len(),
            10
        );
        // The size line alone is enough: no data has come yet.
        assert!(matches!(
            decode_with(b"5\r\n01234\r\n6\r\n", 64, &limits),
            Err(Error::BodyTooLarge)
        ));
        assert!(matches!(
            decode_with(b"100000005\r\n", 64, &limits),
            Err(Error::BodyTooLarge)
        ));
    }

    #[test]
    fn rejects_an_empty_chunk_size() {
        assert!(decode(b"\r\nabc\r\n0\r\n\r\n", 64).is_err());
    }

    #[test]
    fn rejects_a_bare_lf_in_framing() {
        assert!(decode(b"3\nabc\r\n0\r\n\r\n", 64).is_err());
        assert!(decode(b"3\r\nabc\n0\r\n\r\n", 64).is_err());
        assert!(decode(b"3;a\nb\r\nabc\r\n0\r\n\r\n", 64).is_err());
    }

    #[test]
    fn rejects_a_bad_chunk_size() {
        for bad in [
            "g\r\n",
            "-1\r\n",
            "0x3\r\n",
            "ffffffffffffffffff\r\n",
            " 3\r\n",
        ] {
            assert!(
                decode(format!("{bad}abc\r\n0\r\n\r\n").as_bytes(), 64).is_err(),
                "{bad:?}"
            );
        }
    }

    /// `1*HEXDIG`: leading zeros do not count against the 16 digits a size may need.
    #[test]
    fn takes_a_size_with_leading_zeros_past_sixteen_digits() {
        let zeros = "0".repeat(40);
        let input = format!("{zeros}5\r\nhello\r\n{zeros}\r\n\r\n");
        assert_eq!(decode(input.as_bytes(), 64).unwrap(), b"hello");
        let input = format!("{zeros}5;a=b\r\nhello\r\n0\r\n\r\n");
        assert_eq!(decode(input.as_bytes(), 64).unwrap(), b"hello");
        // Seventeen significant digits are still past any size.
        let input = format!("{zeros}10000000000000000\r\nhello\r\n0\r\n\r\n");
        assert!(matches!(
            decode(input.as_bytes(), 64),
            Err(Error::BadChunk("invalid chunk size"))
        ));
    }

    #[test]
    fn rejects_data_longer_than_its_size() {
        assert!(decode(b"3\r\nabcd\r\n0\r\n\r\n", 64).is_err());
    }

    #[test]
    fn rejects_invalid_trailers() {
        assert!(decode(b"0\r\nbad trailer\r\n\r\n", 64).is_err());
        assert!(decode(b"0\r\nX-A: a\0b\r\n\r\n", 64).is_err());
        assert!(decode(b"0\r\nContent-Length: 9\r\n\r\n", 64).is_err());
    }

    #[test]
    fn needs_the_final_crlf() {
        assert!(matches!(
            decode(b"3\r\nabc\r\n0\r\n", 64),
            Err(Error::Incomplete)
        ));
    }
}
