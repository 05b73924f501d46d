//! A body made while it is sent: ten lines, one every 100 ms, from a lazy iterator. Its
//! length is unknown, so the server sends it chunked and flushes each line as it comes.
//!
//! ```sh
//! cargo run --release --example streaming -- --port 8000
//! curl -N http://127.0.0.1:8000/
//! ```

mod common;

use std::time::Duration;

use sgi::bytes::Bytes;
use sgi::http::header::CONTENT_TYPE;
use sgi::{Body, Config, Request, Response};

const LINES: u32 = 10;
const INTERVAL: Duration = Duration::from_millis(100);

fn streaming(_req: Request<'_>) -> Response {
    // Nothing runs until the server asks for the next piece: the sleep paces the stream.
    let lines = (1..=LINES).map(|i| {
        if i > 1 {
            std::thread::sleep(INTERVAL);
        }
        Ok(Bytes::from(format!("line {i} of {LINES}\n")))
    });
    sgi::http::Response::builder()
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from_iter(lines))
        .unwrap()
}

fn main() -> std::io::Result<()> {
    let args = common::args();
    args.finish("");
    common::serve(&args, Config::default(), streaming)
}
