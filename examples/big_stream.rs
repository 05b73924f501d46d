//! A 1 GiB body from an iterator, for the streaming benchmark (BENCHMARKS.md): 16,384 pieces
//! of 64 KiB, each a `Bytes` handle on one static buffer, so producing a piece copies
//! nothing and the measurement is the server's send path alone.
//!
//! ```sh
//! cargo build --release --example big_stream
//! ./target/release/examples/big_stream --port 18310 --server pool --workers 8
//! ./target/release/examples/big_stream --port 18311 --server dev --length
//! wrk -t1 -c1 -d10s http://127.0.0.1:18310/
//! ```
//!
//! The body's length is unknown to the server, so it is sent chunked (one chunk per piece).
//! `--length` declares `Content-Length: 1073741824` in the response instead, which the
//! server takes as a promise: no chunk framing. `--pieces N` changes the number of pieces.

mod common;

use sgi::bytes::Bytes;
use sgi::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use sgi::{gateway_fn, Body, Config};

const PIECE: usize = 64 * 1024;
static BUFFER: [u8; PIECE] = [b'x'; PIECE];

fn main() -> std::io::Result<()> {
    const USAGE: &str = "[--length] [--pieces N]";
    let mut args = common::args();
    let length = args.take_flag("--length");
    let pieces: u64 = args.take_value("--pieces", USAGE).unwrap_or(16 * 1024);
    args.finish(USAGE);
    let total = pieces * PIECE as u64;
    let big = gateway_fn(move |_req| {
        let piece = Bytes::from_static(&BUFFER);
        let body = Body::from_iter((0..pieces).map(move |_| Ok(piece.clone())));
        let mut res =
            sgi::http::Response::builder().header(CONTENT_TYPE, "application/octet-stream");
        if length {
            res = res.header(CONTENT_LENGTH, total);
        }
        res.body(body).unwrap()
    });
    common::serve(&args, Config::default().access_log(false), big)
}
