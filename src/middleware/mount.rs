//! `Mount`: serving a gateway under a path prefix (WSGI's `SCRIPT_NAME`).

use std::sync::Arc;

use http::{StatusCode, Uri};

use crate::{Body, Environ, Gateway, Request, Response};

/// Mounts a gateway under a path prefix, as WSGI's `SCRIPT_NAME` does: requests under the
/// prefix reach the inner gateway with the prefix moved from the path to
/// [`Environ::script_name`]; others get `404`.
///
/// ```
/// use sgi::middleware::Mount;
/// use sgi::{Body, Request, RequestExt, Response, TestClient};
///
/// let app = |req: Request<'_>| {
///     Response::new(Body::from(format!("{} {}", req.environ().script_name, req.uri().path())))
/// };
/// let client = TestClient::new(Mount::new("/api", app));
/// assert_eq!(client.get("/api/users?x").send().body(), "/api /users");
/// assert_eq!(client.get("/other").send().status(), 404);
///
/// let client = TestClient::new(Mount::new("api/", app));
/// assert_eq!(client.get("/api/users").send().body(), "/api /users");
/// ```
#[derive(Debug)]
pub struct Mount<G> {
    prefix: Arc<str>,
    inner: G,
}

impl<G: Gateway> Mount<G> {
    /// Mounts `inner` at `prefix` (a path such as `/api`; a trailing `/` is ignored, and a
    /// missing leading one supplied: `api/` is `/api`).
    pub fn new(prefix: &str, inner: G) -> Self {
        Mount {
            prefix: normalize_prefix(prefix),
            inner,
        }
    }
}

/// A mount prefix as a path: a leading `/`, no trailing one (`""` for the root).
pub(crate) fn normalize_prefix(prefix: &str) -> Arc<str> {
    let prefix = prefix.trim_end_matches('/');
    match prefix {
        "" => Arc::from(""),
        p if p.starts_with('/') => Arc::from(p),
        p => Arc::from(format!("/{p}")),
    }
}

/// `uri` with `prefix` taken off the front of its path (at a segment boundary; `/api`
/// takes `/api/x` to `/x` and `/api` to `/`), or `None` if the path is not under it.
pub(crate) fn under_prefix(uri: &Uri, prefix: &str) -> Option<Uri> {
    let rest = match uri.path().strip_prefix(prefix) {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
        _ => return None,
    };
    let rest = if rest.is_empty() { "/" } else { rest };
    let target = match uri.query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_string(),
    };
    target.parse().ok()
}

impl<G: Gateway> Gateway for Mount<G> {
    fn call(&self, mut req: Request<'_>) -> Response {
        let Some(uri) = under_prefix(req.uri(), &self.prefix) else {
            return not_found();
        };
        *req.uri_mut() = uri;
        if let Some(env) = req.extensions_mut().get_mut::<Environ>() {
            env.script_name = Arc::from(format!("{}{}", env.script_name, self.prefix));
        }
        self.inner.call(req)
    }
}

fn not_found() -> Response {
    let mut res = Response::new(Body::from("404 Not Found\n"));
    *res.status_mut() = StatusCode::NOT_FOUND;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}
