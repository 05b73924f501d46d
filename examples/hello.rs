//! `Hello, World!` as text/plain: the README's run command.
//!
//! ```sh
//! cargo run --release --example hello -- --bind 127.0.0.1:8000 --server pool --workers 8
//! ```

mod common;

use sgi::http::header::CONTENT_TYPE;
use sgi::{Body, Config, Request, Response};

fn hello(_req: Request<'_>) -> Response {
    sgi::http::Response::builder()
        .header(CONTENT_TYPE, "text/plain")
        .body(Body::from("Hello, World!"))
        .unwrap()
}

fn main() -> std::io::Result<()> {
    let args = common::args();
    common::serve(&args, Config::default().access_log(false), hello)
}
