//! Serves the files under a directory (the crate root, or `--root DIR`) with
//! [`Body::from_file`], which the server sends with `sendfile`. A directory answers with its
//! `index.html`, else a plain-text listing. The server answers `HEAD` itself.
//!
//! ```sh
//! cargo run --release --example files -- --port 8000 --root ./target/doc
//! curl -I http://127.0.0.1:8000/Cargo.toml
//! ```

mod common;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use sgi::http::header::{ALLOW, CONTENT_TYPE};
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
            return file(&index).unwrap_or_else(io_error);
        }
        file(&path).unwrap_or_else(io_error)
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

fn file(path: &Path) -> io::Result<Response> {
    let body = Body::from_file(File::open(path)?)?;
    Ok(sgi::http::Response::builder()
        .header(CONTENT_TYPE, content_type(path))
        .body(body)
        .unwrap())
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
    let args = common::args();
    let mut root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut rest = args.rest.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--root" => root = rest.next().expect("--root needs a value").into(),
            other => panic!("unknown argument {other:?} (--root DIR)"),
        }
    }
    let files = Files {
        root: root.canonicalize()?,
    };
    common::serve(&args, Config::default(), move |req: Request<'_>| {
        files.serve(req)
    })
}
