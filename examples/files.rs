//! Serves the files under a directory (the crate root, or `--root DIR`) with
//! [`Body::from_file`], which the server sends in 256 KiB pieces straight from the file. A
//! `Range: bytes=...` request for one range gets `206 Partial Content` with
//! [`Body::from_file_range`] (`416` if the range lies past the end; several ranges, or one
//! that does not parse, get the whole file, as RFC 9110 §14.2 allows). A directory answers
//! with its `index.html`, else a plain-text listing. The server answers `HEAD` itself.
//!
//! ```sh
//! cargo run --release --example files -- --port 8000 --root ./target/doc
//! curl -I http://127.0.0.1:8000/Cargo.toml
//! curl -r 0-99 http://127.0.0.1:8000/Cargo.toml
//! ```

mod common;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use sgi::http::header::{ACCEPT_RANGES, ALLOW, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use sgi::http::{Method, StatusCode};
use sgi::{Body, Config, Request, Response};

struct Files {
    /// Canonical, so that a symlink leading out of it can be caught.
    root: PathBuf,
}

impl Files {
    fn serve(&self, req: Request<'_>) -> Response {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut res = status(StatusCode::METHOD_NOT_ALLOWED);
            res.headers_mut()
                .insert(ALLOW, "GET, HEAD".parse().unwrap());
            return res;
        }
        let range = req.headers().get(RANGE).and_then(|r| r.to_str().ok());
        let Some(relative) = relative_path(req.uri().path()) else {
            return status(StatusCode::BAD_REQUEST);
        };
        // Canonicalizing resolves symlinks; whatever it leads to must still be under the root.
        let path = match self.root.join(relative).canonicalize() {
            Ok(path) if path.starts_with(&self.root) => path,
            Ok(_) => return status(StatusCode::FORBIDDEN),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return status(StatusCode::FORBIDDEN)
            }
            Err(_) => return status(StatusCode::NOT_FOUND),
        };
        if path.is_dir() {
            let index = path.join("index.html");
            if !index.is_file() {
                return listing(&path).unwrap_or_else(io_error);
            }
            return file(&index, range).unwrap_or_else(io_error);
        }
        file(&path, range).unwrap_or_else(io_error)
    }
}

/// The request path, percent-decoded, as a path relative to the root; `None` for anything
/// that could step outside it (`..`, or a NUL) or a malformed escape. Empty and `.` segments
/// are dropped, so `//etc/passwd` cannot become absolute.
fn relative_path(target: &str) -> Option<PathBuf> {
    let decoded = percent_decode(target)?;
    let decoded = String::from_utf8(decoded).ok()?;
    let mut path = PathBuf::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => return None,
            s if s.contains('\0') => return None,
            s => path.push(s),
        }
    }
    Some(path)
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

fn file(path: &Path, range: Option<&str>) -> io::Result<Response> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    let res = sgi::http::Response::builder().header(ACCEPT_RANGES, "bytes");
    let res = match range.map(|r| Wanted::parse(r, size)) {
        None | Some(Wanted::Whole) => res
            .header(CONTENT_TYPE, content_type(path))
            .body(Body::from_file(file)?),
        Some(Wanted::Range(first, last)) => res
            .status(StatusCode::PARTIAL_CONTENT)
            .header(CONTENT_TYPE, content_type(path))
            .header(CONTENT_RANGE, format!("bytes {first}-{last}/{size}"))
            .body(Body::from_file_range(file, first, last - first + 1)?),
        Some(Wanted::Unsatisfiable) => res
            .status(StatusCode::RANGE_NOT_SATISFIABLE)
            .header(CONTENT_TYPE, "text/plain; charset=utf-8")
            .header(CONTENT_RANGE, format!("bytes */{size}"))
            .body(Body::from("416 Range Not Satisfiable\n")),
    };
    Ok(res.unwrap())
}

/// What a `Range` header asks of a file of `size` bytes (RFC 9110 §14.1.2).
#[derive(Debug, PartialEq)]
enum Wanted {
    /// The whole file: no usable single byte range (the header may be ignored).
    Whole,
    /// Bytes `first..=last`.
    Range(u64, u64),
    /// A range that starts past the end (or a zero suffix): `416`.
    Unsatisfiable,
}

impl Wanted {
    fn parse(header: &str, size: u64) -> Wanted {
        let Some(spec) = header.trim().strip_prefix("bytes=") else {
            return Wanted::Whole;
        };
        if spec.contains(',') {
            return Wanted::Whole; // several ranges: the whole file is a valid answer
        }
        let Some((first, last)) = spec.trim().split_once('-') else {
            return Wanted::Whole;
        };
        let number = |s: &str| -> Option<u64> {
            let s = s.trim();
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
        };
        match (number(first), last.trim().is_empty()) {
            // `-n`: the last n bytes.
            (None, false) if first.trim().is_empty() => match number(last) {
                Some(0) => Wanted::Unsatisfiable,
                Some(n) if size > 0 => Wanted::Range(size.saturating_sub(n), size - 1),
                Some(_) => Wanted::Unsatisfiable,
                None => Wanted::Whole,
            },
            // `a-`: from a to the end.
            (Some(a), true) if a < size => Wanted::Range(a, size - 1),
            (Some(_), true) => Wanted::Unsatisfiable,
            // `a-b`
            (Some(a), false) => match number(last) {
                Some(b) if b < a => Wanted::Whole, // invalid: ignored
                Some(_) if a >= size => Wanted::Unsatisfiable,
                Some(b) => Wanted::Range(a, b.min(size - 1)),
                None => Wanted::Whole,
            },
            _ => Wanted::Whole,
        }
    }
}

fn listing(dir: &Path) -> io::Result<Response> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let slash = if entry.file_type()?.is_dir() { "/" } else { "" };
        names.push(format!("{}{slash}\n", entry.file_name().to_string_lossy()));
    }
    names.sort();
    Ok(sgi::http::Response::builder()
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from(names.concat()))
        .unwrap())
}

fn content_type(path: &Path) -> &'static str {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    match ext.to_ascii_lowercase().as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "txt" | "md" | "rs" | "toml" | "lock" | "py" | "sh" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "pdf" => "application/pdf",
        _ => "application/octet-stream",
    }
}

fn io_error(e: io::Error) -> Response {
    match e.kind() {
        io::ErrorKind::NotFound => status(StatusCode::NOT_FOUND),
        io::ErrorKind::PermissionDenied => status(StatusCode::FORBIDDEN),
        _ => status(StatusCode::INTERNAL_SERVER_ERROR),
    }
}

fn status(code: StatusCode) -> Response {
    let text = format!("{}\n", code);
    sgi::http::Response::builder()
        .status(code)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from(text))
        .unwrap()
}

fn main() -> std::io::Result<()> {
    const USAGE: &str = "[--root DIR]";
    let mut args = common::args();
    let root = args
        .take_value::<PathBuf>("--root", USAGE)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    args.finish(USAGE);
    let files = Files {
        root: root.canonicalize()?,
    };
    common::serve(&args, Config::default(), move |req: Request<'_>| {
        files.serve(req)
    })
}
