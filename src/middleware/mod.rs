//! Middleware: gateways that wrap gateways.
//!
//! A middleware is any [`Gateway`](crate::Gateway) holding another; nothing more is needed.
//! This module keeps the ones a server should ship with:
//!
//! - [`Mount`] serves a gateway under a path prefix (WSGI's `SCRIPT_NAME`), sending the
//!   rest to a fallback (another `Mount`, an app) or [`NotFound`];
//! - [`Validate`] checks, in tests, that a gateway and the stack around it keep the contract
//!   (Python's `wsgiref.validate`).
//!
//! # The rules `Validate` checks
//!
//! A broken rule panics with a message naming it:
//! `sgi::middleware::Validate: rule "content-type-required": a 200 response has no Content-Type`.
//!
//! | Rule | Side | What it asks |
//! |---|---|---|
//! | `environ-present` | request | The request carries an [`Environ`](crate::Environ) in its extensions. |
//! | `request-target-form` | request | The target is origin-form (a path starting with `/`), absolute-form (`http://host/path`), `*` for `OPTIONS`, or an authority for `CONNECT` (RFC 9112 §3.2). |
//! | `input-matches-content-length` | request | With a `Content-Length` (and no `Transfer-Encoding`), the [`Input`](crate::Input) never yields more bytes than it declares, nor ends before them (an error is the server's way to say a body broke off). |
//! | `status-final` | response | The status is not 1xx: interim responses are the server's business. |
//! | `header-value-valid` | response | Every field value is a valid field value (RFC 9110 §5.5): no control characters but HTAB, no leading or trailing whitespace. |
//! | `no-hop-by-hop-headers` | response | No `Connection` (but `close`, and `upgrade` with an `Upgrade` field), `Keep-Alive`, `Transfer-Encoding`, `TE`, `Trailer` or `Proxy-Connection`: the server owns the connection and the framing (PEP 3333). `Upgrade` is allowed: a `426` must carry it. |
//! | `content-type-required` | response | A response with content (other than 1xx, 204 and 304, and not known to be empty) has a `Content-Type` (RFC 9110 §8.3). |
//! | `content-type-absent` | response | A 204 or 304 response, which has no content, has no `Content-Type`. |
//! | `no-body-for-status` | response | A 204, 205 or 304 response has no body (RFC 9110 §15.3.5, §15.3.6, §15.4.5), and a 204 no `Content-Length` (§8.6). |
//! | `content-length-matches` | response | A `Content-Length` is one decimal number, equal to the body's length: checked up front when the length is known, and as the body is sent when it is streamed. A streamed body is also held to the length given to [`Body::from_reader`](crate::Body::from_reader) (a reader that ends short of it; the server reads no further than the length, so a reader that goes on is not seen). An iterator is pulled once more after its declared length, to see whether it goes on (the server itself stops pulling there). An empty body for `HEAD` may declare the length a `GET` would get. |
//!
//! Some things are left alone on purpose: a body returned for `HEAD` (the server drops it),
//! a 304 whose `Content-Length` describes the representation it stands for (RFC 9110 §8.6
//! allows it; the server leaves it out anyway), and a response
//! known to be empty without a `Content-Type` (a redirect, say: there is no content to type).
//! A streamed body for 204, 205 or 304 is never pulled by the server, so it is not checked.

mod mount;
mod validate;

pub(crate) use mount::{normalize_prefix, under_prefix};
pub use mount::{Mount, NotFound};
pub use validate::Validate;
