//! Answers every request with a JSON description of what the server parsed: the contract
//! that outside conformance checks (`run_corpus.py`) depend on.
//!
//! `200`, `Content-Type: application/json`, one object: `method`, `path` (as sent; the path
//! component for absolute-form; `*` for asterisk-form), `query` (raw, `""` when absent),
//! `version`, `headers` (`[name, value]` pairs, names lowercase), `body` (lossy UTF-8).
//! `?sleep_ms=N` (N up to 60000) delays the answer; the path `/panic` panics.

mod common;

use std::io::Read;
use std::time::Duration;

use sgi::http::header::CONTENT_TYPE;
use sgi::http::Version;
use sgi::{Body, Config, Request, Response};

fn echo(mut req: Request<'_>) -> Response {
    let mut body = Vec::new();
    if let Err(e) = req.body_mut().read_to_end(&mut body) {
        // The server answers for a broken body (413, 400, 408); this response is replaced.
        return Response::new(Body::from(format!("body error: {e}\n")));
    }
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or("");
    if path == "/panic" {
        panic!("the /panic diagnostic path");
    }
    if let Some(ms) = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("sleep_ms="))
        .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::sleep(Duration::from_millis(ms.min(60_000)));
    }
    let version = if req.version() == Version::HTTP_10 {
        "HTTP/1.0"
    } else {
        "HTTP/1.1"
    };
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let json = serde_json::json!({
        "method": req.method().as_str(),
        "path": path,
        "query": query,
        "version": version,
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    sgi::http::Response::builder()
        .header(CONTENT_TYPE, "application/json")
        .body(Body::from(json.to_string()))
        .unwrap()
}

fn main() -> std::io::Result<()> {
    let args = common::args();
    args.finish("");
    common::serve(&args, Config::default(), echo)
}
