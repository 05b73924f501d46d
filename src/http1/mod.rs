//! The HTTP/1.1 wire code, kept apart from socket I/O: request heads in, chunked bodies in,
//! response heads out. Every function here works on byte slices, so tests, benchmarks and
//! fuzz targets drive it without sockets.
//!
//! ```
//! use sgi::http1::{parse_request_head, Framing};
//! use sgi::Limits;
//!
//! let raw = b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc";
//! let head = parse_request_head(raw, &Limits::default()).unwrap().expect("complete");
//! assert_eq!(head.framing, Framing::Length(3));
//! assert_eq!(&raw[head.len..], b"abc");
//! ```

mod chunked;
pub(crate) mod date;
mod head;
mod response;

pub use chunked::{ChunkedDecoder, Step};
pub use head::{find_head_end, parse_request_head, Framing, RequestHead};
pub(crate) use head::{parse_head_exact, scan_head, HeadScan};
pub(crate) use response::{
    append_hex, drops_for_the_connection, only_close_or_upgrade, owned_hop_by_hop, write_head,
};
pub use response::{plan_response, write_response_head, BodyFraming, ResponsePlan};
