use std::fmt;
use std::sync::Arc;

use crate::{Body, Input};

/// The request a gateway receives: WSGI's *environ*.
///
/// Method, target (kept raw, as sent), version and headers (repeated fields kept) are the
/// [`http::Request`]'s own; the body is the streaming [`Input`]; the connection facts (peer
/// and local address, scheme, server name and port, mount prefix, start time) are an
/// [`Environ`](crate::Environ) in its extensions.
pub type Request<'a> = http::Request<Input<'a>>;

/// The response a gateway returns: status, headers and a [`Body`].
pub type Response = http::Response<Body>;

/// Runs `wait`, a gateway's wait on something outside the server (the next event of a
/// long-lived stream, a message from a queue), without it counting as the gateway's run
/// time: the [`PoolServer`](crate::PoolServer) does not report a gateway stuck
/// ([`Timeouts::request`](crate::Timeouts)) while it waits here, however long. Elsewhere
/// (the dev server, a test client, a thread of the gateway's own) it just runs `wait`.
///
/// Each piece of a streamed body is timed as the gateway's code; a server-sent events
/// stream that waits for its next event would be reported stuck without this. (The stream
/// opens with a comment line: the head goes out with the first piece, and a client should
/// not have to wait for the first event to see it.)
///
/// ```
/// use std::sync::mpsc;
/// use sgi::{Body, Request, Response, TestClient};
///
/// let app = |_req: Request<'_>| {
///     let (events, next) = mpsc::channel::<String>();
///     std::thread::spawn(move || {
///         for n in 1..=2 {
///             events.send(format!("data: {n}\n\n")).unwrap();
///         }
///     });
///     let events = std::iter::from_fn(move || sgi::waiting(|| next.recv().ok()));
///     let stream = std::iter::once(": open\n\n".to_string()).chain(events);
///     let mut res = Response::new(Body::from_iter(stream.map(|event| Ok(event.into()))));
///     res.headers_mut()
///         .insert("content-type", "text/event-stream".parse().unwrap());
///     res
/// };
/// let res = TestClient::new(app).get("/events").send();
/// assert_eq!(res.body(), ": open\n\ndata: 1\n\ndata: 2\n\n");
/// ```
pub fn waiting<R>(wait: impl FnOnce() -> R) -> R {
    crate::pool::untimed_here(wait)
}

/// The one interface between an application and the server that runs it.
///
/// A framework implements `Gateway` for its application; any backend can then serve it.
/// Closures implement it, and so do `Arc<G>` and `Box<dyn Gateway>`; middleware is a
/// `Gateway` that wraps another.
///
/// ```
/// use sgi::{Body, Gateway, Request, Response, TestClient};
///
/// struct Hello;
///
/// impl Gateway for Hello {
///     fn call(&self, req: Request<'_>) -> Response {
///         Response::new(Body::from(format!("Hello from {}", req.uri().path())))
///     }
/// }
///
/// let res = TestClient::new(Hello).get("/here").send();
/// assert_eq!(res.body(), "Hello from /here");
/// ```
///
/// A gateway runs on a server thread and may block (read its input, query a database). If
/// it panics, the client gets `500 Internal Server Error` and the server goes on.
pub trait Gateway: Send + Sync + 'static {
    /// Answers one request.
    fn call(&self, req: Request<'_>) -> Response;
}

impl<F> Gateway for F
where
    F: Fn(Request<'_>) -> Response + Send + Sync + 'static,
{
    fn call(&self, req: Request<'_>) -> Response {
        self(req)
    }
}

impl<G: Gateway + ?Sized> Gateway for Arc<G> {
    fn call(&self, req: Request<'_>) -> Response {
        (**self).call(req)
    }
}

impl Gateway for Box<dyn Gateway> {
    fn call(&self, req: Request<'_>) -> Response {
        (**self).call(req)
    }
}

/// A closure made into a [`Gateway`] by [`gateway_fn`].
pub struct GatewayFn<F>(F);

impl<F> fmt::Debug for GatewayFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GatewayFn")
    }
}

impl<F> Gateway for GatewayFn<F>
where
    F: Fn(Request<'_>) -> Response + Send + Sync + 'static,
{
    fn call(&self, req: Request<'_>) -> Response {
        (self.0)(req)
    }
}

/// Makes a closure a [`Gateway`] where type inference needs the help (an unannotated
/// closure argument is otherwise not inferred to accept requests of every lifetime).
///
/// ```
/// use sgi::{gateway_fn, Body, Response, TestClient};
///
/// let app = gateway_fn(|req| Response::new(Body::from(req.method().to_string())));
/// assert_eq!(TestClient::new(app).post("/").send().body(), "POST");
/// ```
pub fn gateway_fn<F>(f: F) -> GatewayFn<F>
where
    F: Fn(Request<'_>) -> Response + Send + Sync + 'static,
{
    GatewayFn(f)
}
