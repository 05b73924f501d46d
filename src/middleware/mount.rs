//! `Mount`: serving a gateway under a path prefix (WSGI's `SCRIPT_NAME`).

use std::sync::Arc;

use http::{StatusCode, Uri};

use crate::{Body, Environ, Gateway, Request, Response};

/// Mounts a gateway under a path prefix, as WSGI's `SCRIPT_NAME` does: requests under the
/// prefix reach the inner gateway with the prefix moved from the path to
/// [`Environ::script_name`]; others get `404`, or go to a [`fallback`](Mount::fallback).
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
pub struct Mount<G, F = NotFound> {
    prefix: Arc<str>,
    inner: G,
    fallback: F,
}

impl<G: Gateway> Mount<G> {
    /// Mounts `inner` at `prefix` (a path such as `/api`; a trailing `/` is ignored, and a
    /// missing leading one supplied: `api/` is `/api`).
    pub fn new(prefix: &str, inner: G) -> Self {
        Mount {
            prefix: normalize_prefix(prefix),
            inner,
            fallback: NotFound,
        }
    }
}

impl<G: Gateway, F: Gateway> Mount<G, F> {
    /// Sends the requests outside the prefix to `fallback`, unchanged, instead of answering
    /// `404`: several applications behind one server, as Werkzeug's
    /// `DispatcherMiddleware` does. Mounts chain, the first matching prefix winning.
    ///
    /// ```
    /// use sgi::middleware::Mount;
    /// use sgi::{Body, Request, RequestExt, Response, TestClient};
    ///
    /// let named = |name: &'static str| {
    ///     move |req: Request<'_>| {
    ///         let env = req.environ();
    ///         Response::new(Body::from(format!("{name} {}{}", env.script_name, req.uri())))
    ///     }
    /// };
    /// let site = Mount::new("/api", named("api"))
    ///     .fallback(Mount::new("/static", named("files")).fallback(named("site")));
    /// let client = TestClient::new(site);
    /// assert_eq!(client.get("/api/users").send().text(), "api /api/users");
    /// assert_eq!(client.get("/static/a.css").send().text(), "files /static/a.css");
    /// assert_eq!(client.get("/about?x=1").send().text(), "site /about?x=1");
    /// ```
    pub fn fallback<F2: Gateway>(self, fallback: F2) -> Mount<G, F2> {
        Mount {
            prefix: self.prefix,
            inner: self.inner,
            fallback,
        }
    }
}

/// Answers every request `404 Not Found` (plain text): what a [`Mount`] does with requests
/// outside its prefix unless it is given a fallback.
///
/// ```
/// let res = sgi::TestClient::new(sgi::middleware::NotFound).get("/x").send();
/// assert_eq!(res.status(), 404);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct NotFound;

impl Gateway for NotFound {
    fn call(&self, _req: Request<'_>) -> Response {
        not_found()
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

impl<G: Gateway, F: Gateway> Gateway for Mount<G, F> {
    fn call(&self, mut req: Request<'_>) -> Response {
        let Some(uri) = under_prefix(req.uri(), &self.prefix) else {
            return self.fallback.call(req);
        };
        let original = std::mem::replace(req.uri_mut(), uri);
        if let Some(env) = req.extensions_mut().get_mut::<Environ>() {
            env.script_name = Arc::from(format!("{}{}", env.script_name, self.prefix));
            // The outermost mount keeps the target as sent.
            env.original_uri.get_or_insert(original);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, RequestExt, TestClient};

    fn report(req: Request<'_>) -> Response {
        let env = req.environ();
        let seen = format!("{} {} {}", env.script_name, req.uri(), req.original_uri());
        Response::new(Body::from(seen))
    }

    #[test]
    fn nested_mounts_keep_the_target_as_sent() {
        let nested = TestClient::new(Mount::new("/a", Mount::new("/b", report)));
        assert_eq!(nested.get("/a/b/x?q").send().text(), "/a/b /x?q /a/b/x?q");
        assert_eq!(nested.get("/a/b").send().text(), "/a/b / /a/b");
        // Under the server's own mount too: the outermost rewrite keeps the original.
        let config = Config::default().mount("/api");
        let both = TestClient::with_config(Mount::new("/v1", report), config);
        assert_eq!(both.get("/api/v1/").send().text(), "/api/v1 / /api/v1/");
    }
}
