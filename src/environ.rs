use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// The URL scheme a request arrived under (WSGI's `wsgi.url_scheme`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS (set by a TLS-terminating front end or middleware).
    Https,
}

impl Scheme {
    /// `"http"` or `"https"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// The connection facts of a request, found in its extensions: what WSGI's environ carries
/// besides the request itself.
///
/// ```
/// use sgi::{Body, Request, RequestExt, Response, TestClient};
///
/// let app = |req: Request<'_>| {
///     let env = req.environ();
///     Response::new(Body::from(format!("{} {}", env.url_scheme.as_str(), env.script_name)))
/// };
/// assert_eq!(TestClient::new(app).get("/").send().body(), "http ");
/// ```
///
/// More facts may be added (it is `#[non_exhaustive]`): outside this crate, make one from
/// [`Environ::default`] or a request's own, and set the fields that differ.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Environ {
    /// The client's address (`None` in the test client).
    pub peer_addr: Option<SocketAddr>,
    /// The local address the connection was accepted on (`None` in the test client).
    pub local_addr: Option<SocketAddr>,
    /// `http` or `https`.
    pub url_scheme: Scheme,
    /// WSGI's `SERVER_NAME`: the configured server name, or the local IP.
    pub server_name: Arc<str>,
    /// WSGI's `SERVER_PORT`.
    pub server_port: u16,
    /// The mount prefix (WSGI's `SCRIPT_NAME`), empty when mounted at the root.
    pub script_name: Arc<str>,
    /// The request target as the client sent it, when a mount prefix was taken off the
    /// request's URI (`None` when nothing was: the URI is the target as sent). With it a
    /// gateway tells `/api` from `/api/` under the prefix `/api` (both reach it as `/`, as
    /// a URI's path cannot be empty); [`RequestExt::original_uri`] reads either.
    pub original_uri: Option<http::Uri>,
    /// When the request's head was complete.
    pub started: Instant,
    /// How many requests this connection served before this one.
    pub request_index: u64,
}

/// The facts the [`TestClient`](crate::TestClient) reports, to build requests for unit tests
/// of a handler: no addresses, `http`, server `localhost` port 80, no mount prefix, started
/// now, the connection's first request.
///
/// ```
/// use sgi::{Environ, Input, RequestExt};
///
/// let mut req = sgi::http::Request::new(Input::from_slice(b""));
/// let mut environ = Environ::default();
/// environ.script_name = "/api".into();
/// req.extensions_mut().insert(environ);
/// assert_eq!(&*req.environ().script_name, "/api");
/// ```
impl Default for Environ {
    fn default() -> Environ {
        Environ {
            peer_addr: None,
            local_addr: None,
            url_scheme: Scheme::Http,
            server_name: Arc::from("localhost"),
            server_port: 80,
            script_name: Arc::from(""),
            original_uri: None,
            started: Instant::now(),
            request_index: 0,
        }
    }
}

/// Convenience access to the [`Environ`] of a request.
pub trait RequestExt {
    /// The connection facts of this request.
    ///
    /// # Panics
    /// If the request did not come from an `sgi` server or test client (its extensions hold
    /// no [`Environ`]).
    fn environ(&self) -> &Environ;

    /// The request target as the client sent it: the URI from before any mount prefix was
    /// taken off ([`Environ::original_uri`]), else the request's own.
    ///
    /// ```
    /// use sgi::middleware::Mount;
    /// use sgi::{Body, Request, RequestExt, Response, TestClient};
    ///
    /// let app = |req: Request<'_>| {
    ///     Response::new(Body::from(format!("{} {}", req.uri(), req.original_uri())))
    /// };
    /// let client = TestClient::new(Mount::new("/api", app));
    /// assert_eq!(client.get("/api").send().body(), "/ /api");
    /// assert_eq!(client.get("/api/?q").send().body(), "/?q /api/?q");
    /// assert_eq!(TestClient::new(app).get("/x").send().body(), "/x /x");
    /// ```
    ///
    /// # Panics
    /// As [`environ`](Self::environ).
    fn original_uri(&self) -> &http::Uri;
}

impl<B> RequestExt for http::Request<B> {
    fn environ(&self) -> &Environ {
        self.extensions()
            .get::<Environ>()
            .expect("request has no sgi::Environ extension")
    }

    fn original_uri(&self) -> &http::Uri {
        self.environ().original_uri.as_ref().unwrap_or(self.uri())
    }
}
