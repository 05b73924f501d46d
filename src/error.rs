use std::io;

use http::StatusCode;

/// Everything that can go wrong between the socket and the gateway.
///
/// Each carries the status the server answers with, if the client is still there to hear
/// it, before closing the connection ([`Error::status`]: `408` for a timeout); an I/O
/// error of the socket closes it without an answer.
///
/// ```
/// use sgi::Error;
/// assert_eq!(Error::HeadTooLarge.status().as_u16(), 431);
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request line or its target is malformed, or a header field is invalid.
    #[error("malformed request: {0}")]
    BadRequest(&'static str),
    /// The request line is longer than [`Limits::max_request_line`](crate::Limits).
    #[error("request line too long")]
    UriTooLong,
    /// Too many header fields, a field too large, or the whole head over its limit.
    #[error("request head too large")]
    HeadTooLarge,
    /// The declared or received body is larger than [`Limits::max_body`](crate::Limits).
    #[error("request body too large")]
    BodyTooLarge,
    /// A transfer coding other than `chunked` was applied to the body.
    #[error("unsupported transfer coding")]
    UnsupportedCoding,
    /// A protocol version other than HTTP/1.0 and HTTP/1.1.
    #[error("unsupported HTTP version")]
    UnsupportedVersion,
    /// An `Expect` value other than `100-continue`.
    #[error("unsupported expectation")]
    ExpectationFailed,
    /// The chunked body framing is malformed.
    #[error("malformed chunked body: {0}")]
    BadChunk(&'static str),
    /// The peer closed the connection before the message was complete.
    #[error("connection closed mid-message")]
    Incomplete,
    /// A read or write did not progress within its timeout.
    #[error("timed out")]
    Timeout,
    /// Any other I/O error on the connection.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl Error {
    /// The status the server answers with for this error before it closes the connection.
    ///
    /// ```
    /// assert_eq!(sgi::Error::UriTooLong.status().as_u16(), 414);
    /// ```
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) | Error::BadChunk(_) | Error::Incomplete => {
                StatusCode::BAD_REQUEST
            }
            Error::UriTooLong => StatusCode::URI_TOO_LONG,
            Error::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Error::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Error::UnsupportedCoding => StatusCode::NOT_IMPLEMENTED,
            Error::UnsupportedVersion => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            Error::ExpectationFailed => StatusCode::EXPECTATION_FAILED,
            Error::Timeout => StatusCode::REQUEST_TIMEOUT,
            Error::Io(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// The error as seen by a gateway reading its [`Input`](crate::Input).
    pub(crate) fn into_io(self) -> io::Error {
        match self {
            Error::Io(e) => e,
            Error::Timeout => io::Error::new(io::ErrorKind::TimedOut, Error::Timeout),
            Error::Incomplete => io::Error::new(io::ErrorKind::UnexpectedEof, Error::Incomplete),
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}
