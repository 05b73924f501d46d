//! Bodiless and error statuses, for outside conformance checks (`scripts/httpolice_check.py`).
//!
//! - `/resource`: `200` with an `ETag`, `Last-Modified` and `Cache-Control`; a request whose
//!   `If-None-Match` lists its `ETag` (or `*`) gets `304 Not Modified` with the same fields.
//! - `/no-content`: `204 No Content`.
//! - `/no-content-with-body`: `204` from a gateway that wrongly sets a body and a
//!   `Content-Length`; the server must send neither.
//! - `/reset-content`: `205 Reset Content` (with a body the server must not send).
//! - anything else: `404 Not Found`.
//!
//! ```sh
//! cargo run --release --example statuses -- --port 8000
//! curl -i -H 'If-None-Match: "v1"' http://127.0.0.1:8000/resource
//! ```

mod common;

use sgi::http::header::{
    CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, ETAG, IF_NONE_MATCH, LAST_MODIFIED,
};
use sgi::http::{HeaderMap, StatusCode};
use sgi::{Body, Config, Request, Response};

const ETAG_VALUE: &str = "\"v1\"";
const LAST_MODIFIED_VALUE: &str = "Mon, 01 Jan 2024 00:00:00 GMT";

fn statuses(req: Request<'_>) -> Response {
    match req.uri().path() {
        "/resource" if matches_etag(req.headers()) => {
            validators(sgi::http::Response::builder().status(StatusCode::NOT_MODIFIED))
                .body(Body::empty())
                .unwrap()
        }
        "/resource" => validators(sgi::http::Response::builder())
            .header(CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Body::from("version 1\n"))
            .unwrap(),
        "/no-content" => sgi::http::Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(Body::empty())
            .unwrap(),
        "/reset-content" => sgi::http::Response::builder()
            .status(StatusCode::RESET_CONTENT)
            .body(Body::from("not allowed either\n"))
            .unwrap(),
        "/no-content-with-body" => sgi::http::Response::builder()
            .status(StatusCode::NO_CONTENT)
            .header(CONTENT_LENGTH, "12")
            .body(Body::from("not allowed\n"))
            .unwrap(),
        _ => sgi::http::Response::builder()
            .status(StatusCode::NOT_FOUND)
            .header(CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Body::from("404 Not Found\n"))
            .unwrap(),
    }
}

fn validators(builder: sgi::http::response::Builder) -> sgi::http::response::Builder {
    builder
        .header(ETAG, ETAG_VALUE)
        .header(LAST_MODIFIED, LAST_MODIFIED_VALUE)
        .header(CACHE_CONTROL, "max-age=60")
}

/// Whether `If-None-Match` names the resource's one entity tag (weak comparison) or is `*`.
fn matches_etag(headers: &HeaderMap) -> bool {
    headers.get_all(IF_NONE_MATCH).iter().any(|value| {
        value.to_str().is_ok_and(|list| {
            list.split(',')
                .map(str::trim)
                .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == ETAG_VALUE)
        })
    })
}

fn main() -> std::io::Result<()> {
    let args = common::args();
    args.finish("");
    common::serve(&args, Config::default(), statuses)
}
