//! # sgi — a server gateway interface for Rust
//!
//! `sgi` is to Rust web frameworks what WSGI (PEP 3333) is to Python's: one small trait,
//! [`Gateway`], between an application and the server that runs it. A framework implements
//! `Gateway` once (a request in; status, headers and a body out) and is then served by
//! interchangeable backends:
//!
//! - [`DevServer`]: a thread per connection, like Werkzeug's `run_simple`, that sheds load
//!   with `503 Service Unavailable` at its cap instead of falling over;
//! - [`PoolServer`]: a fixed pool of worker threads fed by one `epoll` event loop that parks
//!   idle and half-read connections, like Gunicorn's `gthread` worker done right.
//!
//! Both share one HTTP/1.1 connection core, one [`Config`] and one [`Handle`].
//! Swapping one backend for the other is one line.
//!
//! ```no_run
//! use sgi::{Body, Config, DevServer, Request, Response};
//!
//! fn hello(_req: Request<'_>) -> Response {
//!     Response::new(Body::from("Hello, World!"))
//! }
//!
//! # fn main() -> std::io::Result<()> {
//! let server = DevServer::bind_with("127.0.0.1:8000", Config::default())?;
//! println!("listening on http://{}", server.local_addr());
//! server.serve(hello)
//! # }
//! ```
//!
//! The in-process [`TestClient`] drives any gateway through the same connection core without
//! sockets:
//!
//! ```
//! use sgi::{Body, Request, Response, TestClient};
//!
//! let client = TestClient::new(|_req: Request<'_>| Response::new(Body::from("hi")));
//! let res = client.get("/").send();
//! assert_eq!(res.status(), 200);
//! assert_eq!(res.body(), "hi");
//! ```
#![deny(missing_docs, missing_debug_implementations)]
// `unsafe` appears in two places: the scheduler system calls in `pool/sched.rs`, and the
// abortive disconnect (`connect` to `AF_UNSPEC`) in `transport.rs`.
#![deny(unsafe_code)]

/// The `bytes` crate, whose [`Bytes`](bytes::Bytes) streamed bodies are made of.
pub use bytes;
/// The `http` crate, whose request, response, header and status types sgi uses as they are.
pub use http;

// The README's examples are compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod body;
mod config;
mod conn;
mod environ;
mod error;
mod gateway;
mod input;
mod linger;
mod server;
mod transport;

pub mod dev;
// Public for the benches and fuzz targets outside the crate; not part of the stable API.
#[doc(hidden)]
pub mod http1;
pub mod middleware;
pub mod pool;
pub mod test_client;

pub use body::Body;
pub use config::{Config, Limits, Timeouts};
pub use dev::DevServer;
pub use environ::{Environ, RequestExt, Scheme};
pub use error::Error;
pub use gateway::{gateway_fn, waiting, Gateway, GatewayFn, Request, Response};
pub use input::Input;
pub use pool::PoolServer;
pub use server::{Handle, Stats};
pub use test_client::TestClient;
