//! `Hello, World!` as text/plain: the README's run command.
//!
//! ```sh
//! cargo run --release --example hello -- --bind 127.0.0.1:8000 --server pool --workers 8
//! ```
//!
//! `--sleep-ms N` makes every answer wait N ms first (the thread-explosion probe's handler).

mod common;

use std::time::Duration;

use sgi::http::header::CONTENT_TYPE;
use sgi::{gateway_fn, Body, Config};

fn main() -> std::io::Result<()> {
    const USAGE: &str = "[--sleep-ms N]";
    let mut args = common::args();
    let sleep = args
        .take_value("--sleep-ms", USAGE)
        .map(Duration::from_millis);
    args.finish(USAGE);
    let hello = gateway_fn(move |_req| {
        if let Some(pause) = sleep {
            std::thread::sleep(pause);
        }
        sgi::http::Response::builder()
            .header(CONTENT_TYPE, "text/plain")
            .body(Body::from("Hello, World!"))
            .unwrap()
    });
    common::serve(&args, Config::default().access_log(false), hello)
}
