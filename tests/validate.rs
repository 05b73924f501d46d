//! `sgi::middleware::Validate`: one test per rule, named after the rule, showing that the
//! rule catches a broken gateway (or a broken stack above it) and lets correct ones through.
//!
//! The middleware is called directly on hand-built requests: behind a server, its panic
//! would be caught and answered `500`, which says nothing about which rule broke.

use std::io::{self, Cursor, Read};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;
use std::time::Instant;

use bytes::Bytes;
use sgi::http::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use sgi::http::response::Parts;
use sgi::http::{HeaderName, HeaderValue, Method, StatusCode, Uri};
use sgi::middleware::{Mount, Validate};
use sgi::{gateway_fn, Body, Environ, Gateway, Input, Request, Response, Scheme, TestClient};

const PREFIX: &str = "sgi::middleware::Validate: rule ";

/// Keeps the expected panics of this file off the test output; others print as usual.
fn quiet_expected_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("");
            if !message.starts_with(PREFIX) {
                default(info);
            }
        }));
    });
}

fn environ() -> Environ {
    let mut environ = Environ::default();
    environ.url_scheme = Scheme::Http;
    environ.server_name = "localhost".into();
    environ.started = Instant::now();
    environ
}

/// A request as a server hands it over: `Environ` included.
fn request<'a>(
    method: Method,
    target: &str,
    headers: &[(&str, &str)],
    body: &'a [u8],
) -> Request<'a> {
    let mut req = Request::new(Input::from_slice(body));
    *req.method_mut() = method;
    *req.uri_mut() = Uri::try_from(target).expect("a parsable target");
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
        req.headers_mut()
            .append(name, HeaderValue::from_str(value).unwrap());
    }
    req.extensions_mut().insert(environ());
    req
}

fn get(target: &str) -> Request<'static> {
    request(Method::GET, target, &[], b"")
}

/// What a validated `app` answers to `req`, its body read to the end (as a server sends
/// it), or the message of the panic that stopped it.
fn outcome<G: Gateway>(app: G, req: Request<'_>) -> Result<(Parts, io::Result<Bytes>), String> {
    quiet_expected_panics();
    let validated = Validate::new(app);
    catch_unwind(AssertUnwindSafe(move || {
        let (parts, body) = validated.call(req).into_parts();
        (parts, body.into_bytes())
    }))
    .map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

/// Asserts that `app` breaks `rule` on `req`.
#[track_caller]
fn assert_breaks<G: Gateway>(rule: &str, app: G, req: Request<'_>) {
    match outcome(app, req) {
        Err(message) => assert!(
            message.starts_with(&format!("{PREFIX}\"{rule}\": ")),
            "expected rule {rule:?} to break, got: {message}"
        ),
        Ok((parts, _)) => panic!("rule {rule:?} let {parts:?} through"),
    }
}

/// Asserts that `app` passes on `req`; returns the body it sent.
#[track_caller]
fn assert_passes<G: Gateway>(app: G, req: Request<'_>) -> Bytes {
    match outcome(app, req) {
        Ok((_, body)) => body.expect("the body reads whole"),
        Err(message) => panic!("a correct gateway was stopped: {message}"),
    }
}

/// A gateway answering `status`, `headers` and `body` (made fresh for every request).
fn answer(
    status: u16,
    headers: &'static [(&'static str, &'static str)],
    body: fn() -> Body,
) -> impl Gateway {
    gateway_fn(move |_req| {
        let mut res = Response::new(body());
        *res.status_mut() = StatusCode::from_u16(status).unwrap();
        for (name, value) in headers {
            res.headers_mut()
                .append(*name, HeaderValue::from_static(value));
        }
        res
    })
}

const TEXT: &[(&str, &str)] = &[("content-type", "text/plain")];

fn hello() -> Body {
    Body::from("hello")
}

/// "hel" then "lo": five bytes of unknown length.
fn streamed_hello() -> Body {
    Body::from_iter(["hel", "lo"].map(|s| Ok(Bytes::from(s))))
}

/// A header value `http` refuses to build in debug builds (then `None`): the unchecked
/// constructor validates there; release builds take it as it is.
fn unchecked_value(bytes: &'static [u8]) -> Option<HeaderValue> {
    quiet_expected_panics();
    // SAFETY: the bytes are ASCII, so valid UTF-8: the constructor's only requirement.
    catch_unwind(|| unsafe { HeaderValue::from_maybe_shared_unchecked(bytes) }).ok()
}

#[test]
fn environ_present() {
    let mut req = get("/");
    req.extensions_mut().clear();
    assert_breaks("environ-present", answer(200, TEXT, hello), req);
}

#[test]
fn request_target_form() {
    let app = || answer(200, TEXT, hello);
    for (method, target) in [
        (Method::GET, "/a?b=c"),
        (Method::GET, "http://example.com/a"),
        (Method::OPTIONS, "*"),
        (Method::CONNECT, "example.com:443"),
    ] {
        assert_passes(app(), request(method, target, &[], b""));
    }
    for (method, target) in [
        (Method::GET, "example.com:443"),
        (Method::GET, "*"),
        (Method::CONNECT, "/a"),
        (Method::CONNECT, "http://example.com:443/"),
    ] {
        assert_breaks(
            "request-target-form",
            app(),
            request(method, target, &[], b""),
        );
    }
    // A middleware above the app that cuts a prefix but forgets the slash.
    let cut = |req: Request<'_>| {
        let (mut parts, input) = req.into_parts();
        let rest = parts.uri.path().trim_start_matches("/api/").to_string();
        parts.uri = rest.parse().unwrap();
        Validate::new(answer(200, TEXT, hello)).call(Request::from_parts(parts, input))
    };
    assert_breaks("request-target-form", cut, get("/api/users"));
}

fn read_all(mut req: Request<'_>) -> Response {
    let mut body = Vec::new();
    let result = req.body_mut().read_to_end(&mut body);
    // Reading again after the end is allowed.
    let again = req.body_mut().read(&mut [0; 8]);
    let text = format!("{result:?} {again:?} {}", String::from_utf8_lossy(&body));
    sgi::http::Response::builder()
        .header(CONTENT_TYPE, "text/plain")
        .body(Body::from(text))
        .unwrap()
}

#[test]
fn input_matches_content_length() {
    let body = assert_passes(
        read_all,
        request(Method::POST, "/", &[("content-length", "5")], b"hello"),
    );
    assert_eq!(body, "Ok(5) Ok(0) hello");
    // With Transfer-Encoding, Content-Length says nothing (RFC 9112 §6.3).
    let headers = [("transfer-encoding", "chunked"), ("content-length", "2")];
    assert_passes(read_all, request(Method::POST, "/", &headers, b"hello"));
    // A gateway that does not read is not checked.
    let unread = request(Method::POST, "/", &[("content-length", "2")], b"hello");
    assert_passes(answer(200, TEXT, hello), unread);

    let longer = request(Method::POST, "/", &[("content-length", "2")], b"hello");
    assert_breaks("input-matches-content-length", read_all, longer);
    let shorter = request(Method::POST, "/", &[("content-length", "9")], b"hello");
    assert_breaks("input-matches-content-length", read_all, shorter);
}

#[test]
fn status_final() {
    for status in [100, 101, 103] {
        assert_breaks("status-final", answer(status, TEXT, hello), get("/"));
    }
}

#[test]
fn header_value_valid() {
    let fine = &[
        ("content-type", "text/plain; charset=\"utf-8\""),
        ("x-tab", "a\tb"),
        ("x-empty", ""),
    ];
    assert_passes(answer(200, fine, hello), get("/"));
    let obs_text = gateway_fn(|_req| {
        sgi::http::Response::builder()
            .header(CONTENT_TYPE, "text/plain")
            .header("x-obs-text", HeaderValue::from_bytes(b"caf\xe9").unwrap())
            .body(hello())
            .unwrap()
    });
    assert_passes(obs_text, get("/"));

    for value in [" leading", "trailing ", "\ttab"] {
        let app = gateway_fn(move |_req| {
            sgi::http::Response::builder()
                .header(CONTENT_TYPE, "text/plain")
                .header("x-bad", value)
                .body(hello())
                .unwrap()
        });
        assert_breaks("header-value-valid", app, get("/"));
    }
    // Control characters: `http` refuses to build them in debug builds.
    let controls: [&'static [u8]; 4] = [b"a\r\nx-injected: 1", b"a\nb", b"a\x00b", b"a\x7fb"];
    for bytes in controls {
        let Some(value) = unchecked_value(bytes) else {
            continue;
        };
        let app = gateway_fn(move |_req| {
            sgi::http::Response::builder()
                .header(CONTENT_TYPE, "text/plain")
                .header("x-bad", value.clone())
                .body(hello())
                .unwrap()
        });
        assert_breaks("header-value-valid", app, get("/"));
    }
}

#[test]
fn an_upgrade_field_with_its_connection_option_is_allowed() {
    // A 426 must carry `Upgrade` (RFC 9110 §15.5.22); the server sends the option with it.
    let app = gateway_fn(|_req| {
        sgi::http::Response::builder()
            .status(426)
            .header(CONTENT_TYPE, "text/plain")
            .header("upgrade", "TLS/1.2")
            .header("connection", "upgrade")
            .body(hello())
            .unwrap()
    });
    if let Err(message) = outcome(app, get("/")) {
        panic!("{message}");
    }
}

#[test]
fn no_hop_by_hop_headers() {
    for name in [
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "proxy-connection",
    ] {
        let app = gateway_fn(move |_req| {
            sgi::http::Response::builder()
                .header(CONTENT_TYPE, "text/plain")
                .header(name, "keep-alive")
                .body(hello())
                .unwrap()
        });
        match outcome(app, get("/")) {
            Err(message) => assert!(
                message.starts_with(&format!("{PREFIX}\"no-hop-by-hop-headers\": "))
                    && message.contains(name),
                "{name}: {message}"
            ),
            Ok(_) => panic!("{name} passed"),
        }
    }
}

#[test]
fn connection_close_is_how_an_app_asks_for_a_close() {
    let app = gateway_fn(|_req| {
        sgi::http::Response::builder()
            .header(CONTENT_TYPE, "text/plain")
            .header(sgi::http::header::CONNECTION, "close")
            .body(hello())
            .unwrap()
    });
    let client = TestClient::new(Validate::new(app));
    let res = client.get("/").send();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["connection"], "close");
}

#[test]
fn mounts_own_404_passes_validation() {
    let hello_app = gateway_fn(|_req| {
        sgi::http::Response::builder()
            .header(CONTENT_TYPE, "text/plain")
            .body(hello())
            .unwrap()
    });
    let app = Validate::new(Mount::new("/api", hello_app));
    assert_eq!(TestClient::new(app).get("/elsewhere").send().status(), 404);
}

#[test]
fn content_type_required() {
    assert_breaks("content-type-required", answer(200, &[], hello), get("/"));
    assert_breaks(
        "content-type-required",
        answer(200, &[], streamed_hello),
        get("/"),
    );
    assert_breaks("content-type-required", answer(404, &[], hello), get("/"));
    // HEAD: the content a GET would get is declared, if not sent.
    let head_app = answer(200, &[("content-length", "5")], Body::empty);
    assert_breaks(
        "content-type-required",
        head_app,
        request(Method::HEAD, "/", &[], b""),
    );
    // No content, nothing to type.
    assert_passes(answer(200, &[], Body::empty), get("/"));
    assert_passes(
        answer(302, &[("location", "/there")], Body::empty),
        get("/"),
    );
}

#[test]
fn content_type_absent() {
    for status in [204, 304] {
        assert_breaks(
            "content-type-absent",
            answer(status, TEXT, Body::empty),
            get("/"),
        );
        assert_passes(answer(status, &[], Body::empty), get("/"));
    }
}

#[test]
fn no_body_for_status() {
    for status in [204, 205, 304] {
        assert_breaks("no-body-for-status", answer(status, &[], hello), get("/"));
        assert_passes(answer(status, &[], Body::empty), get("/"));
    }
    assert_breaks(
        "no-body-for-status",
        answer(204, &[("content-length", "0")], Body::empty),
        get("/"),
    );
    // A 304's Content-Length is the length of the representation it stands for.
    assert_passes(
        answer(304, &[("content-length", "1234")], Body::empty),
        get("/"),
    );
    assert_passes(
        answer(205, &[("content-length", "0")], Body::empty),
        get("/"),
    );
}

/// "hello" from a reader said to hold `len` bytes.
fn hello_reader(len: Option<u64>) -> Body {
    Body::from_reader(Cursor::new(b"hello".to_vec()), len)
}

fn with_length(length: &'static str, body: fn() -> Body) -> impl Gateway {
    gateway_fn(move |_req| {
        sgi::http::Response::builder()
            .header(CONTENT_TYPE, "text/plain")
            .header(CONTENT_LENGTH, length)
            .body(body())
            .unwrap()
    })
}

#[test]
fn content_length_matches() {
    let rule = "content-length-matches";
    // Whole bodies: checked up front.
    assert_passes(with_length("5", hello), get("/"));
    assert_breaks(rule, with_length("4", hello), get("/"));
    assert_breaks(rule, with_length("6", hello), get("/"));
    for bad in ["+5", "5, 5", "five", "-1", ""] {
        assert_breaks(rule, with_length(bad, hello), get("/"));
    }
    let two = answer(
        200,
        &[
            ("content-type", "text/plain"),
            ("content-length", "5"),
            ("content-length", "6"),
        ],
        hello,
    );
    assert_breaks(rule, two, get("/"));
    // Streamed bodies: checked as they are sent, to the end.
    assert_eq!(
        assert_passes(with_length("5", streamed_hello), get("/")),
        "hello"
    );
    assert_breaks(rule, with_length("4", streamed_hello), get("/"));
    assert_breaks(rule, with_length("3", streamed_hello), get("/"));
    assert_breaks(rule, with_length("6", streamed_hello), get("/"));
    // Readers: held to the length they were given, or to the declared one, when they end
    // short of it. One that goes on past it is read no further (what follows may be
    // someone else's, `Body::from_reader`): that is no breach.
    assert_passes(with_length("5", || hello_reader(None)), get("/"));
    assert_passes(answer(200, TEXT, || hello_reader(Some(5))), get("/"));
    assert_eq!(
        assert_passes(with_length("4", || hello_reader(None)), get("/")),
        "hell"
    );
    assert_eq!(
        assert_passes(answer(200, TEXT, || hello_reader(Some(4))), get("/")),
        "hell"
    );
    assert_breaks(rule, with_length("6", || hello_reader(None)), get("/"));
    assert_breaks(rule, with_length("6", || hello_reader(Some(5))), get("/"));
    assert_breaks(rule, answer(200, TEXT, || hello_reader(Some(6))), get("/"));
    // A body that fails is aborted by the server; its error passes through, not a panic.
    let failing = || {
        Body::from_iter(vec![
            Ok(Bytes::from("hello")),
            Err(io::Error::other("the database went away")),
        ])
    };
    match outcome(with_length("5", failing), get("/")) {
        Ok((_, body)) => assert_eq!(body.unwrap_err().to_string(), "the database went away"),
        Err(message) => panic!("{message}"),
    }
}

#[test]
fn head_body_is_not_flagged() {
    let head = || request(Method::HEAD, "/", &[], b"");
    // The GET's body, which the server drops, or none with the GET's length.
    assert_passes(answer(200, TEXT, hello), head());
    assert_passes(with_length("5", hello), head());
    assert_passes(with_length("5", Body::empty), head());
    assert_passes(with_length("5", streamed_hello), head());
    // A body whose length contradicts its own Content-Length is still wrong.
    assert_breaks("content-length-matches", with_length("4", hello), head());
}

#[test]
fn correct_app_passes_untouched() {
    let cases: Vec<(Request<'static>, Box<dyn Gateway>)> = vec![
        (get("/"), Box::new(answer(200, TEXT, hello))),
        (get("/"), Box::new(with_length("5", streamed_hello))),
        (get("/"), Box::new(answer(200, TEXT, streamed_hello))),
        (get("/"), Box::new(answer(204, &[], Body::empty))),
        (
            get("/"),
            Box::new(answer(304, &[("etag", "\"x\"")], Body::empty)),
        ),
        (
            get("/"),
            Box::new(answer(301, &[("location", "/b")], Body::empty)),
        ),
    ];
    for (req, app) in cases {
        let (plain, plain_body) = app.call(get("/")).into_parts();
        let (parts, body) = outcome(app, req).expect("passes");
        assert_eq!(
            (parts.status, &parts.headers, body.unwrap()),
            (
                plain.status,
                &plain.headers,
                plain_body.into_bytes().unwrap()
            )
        );
    }
    let redirect = answer(302, &[("location", "/there")], Body::empty);
    let res = TestClient::new(Validate::new(redirect)).get("/").send();
    assert_eq!(res.status(), 302);
    assert_eq!(res.headers()[LOCATION], "/there");
}

#[test]
fn the_server_and_test_client_keep_the_request_rules() {
    // Outermost, `Validate` checks what the connection core hands over: Environ, target,
    // and an Input that stops at the declared length.
    let client = TestClient::new(Validate::new(read_all));
    let res = client.post("/up").body("hello").send();
    assert_eq!(
        (res.status(), res.text().as_str()),
        (StatusCode::OK, "Ok(5) Ok(0) hello")
    );
    let res = client
        .post("/up")
        .header("transfer-encoding", "chunked")
        .body("5\r\nhello\r\n0\r\n\r\n")
        .send();
    assert_eq!(res.text(), "Ok(5) Ok(0) hello");
    assert_eq!(client.request(Method::OPTIONS, "*").send().status(), 200);
    assert_eq!(client.get("http://localhost/abs").send().status(), 200);
    let mounted = TestClient::new(Mount::new("/api", Validate::new(read_all)));
    assert_eq!(mounted.get("/api").send().status(), 200);
}

#[test]
fn a_violation_behind_a_server_is_answered_500() {
    quiet_expected_panics();
    let client = TestClient::new(Validate::new(answer(200, &[], hello))).propagate_panics(false);
    let res = client.get("/").send();
    assert_eq!(res.status(), 500);
}

#[test]
fn content_length_matches_is_checked_past_where_the_server_stops() {
    quiet_expected_panics();
    // The server sends a streamed body up to its Content-Length and pulls no further, so
    // a body that goes on would pass for a whole one; Validate looks one piece further.
    let app = || with_length("3", streamed_hello);
    let request = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";
    let plain = TestClient::new(app()).raw(request);
    assert!(
        plain.ends_with(b"content-length: 3\r\n\r\nhel"),
        "{plain:?}"
    );
    // Validate fails the body at its first piece, before any of it was sent, so the
    // server can still answer 500 instead.
    let validated = TestClient::new(Validate::new(app()))
        .propagate_panics(false)
        .raw(request);
    let text = String::from_utf8_lossy(&validated);
    assert!(text.starts_with("HTTP/1.1 500 "), "{text}");
    assert!(!text.contains("hel"), "{text}");
}

#[test]
fn a_reader_over_a_shared_stream_is_read_no_further_than_its_length() {
    // What follows the body in the stream is someone else's (`Body::from_reader`).
    struct Counted(
        Cursor<Vec<u8>>,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
    );
    impl io::Read for Counted {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.read(buf)?;
            self.1.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
            Ok(n)
        }
    }
    let taken = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = taken.clone();
    let app = move |_req: Request<'_>| {
        let stream = Cursor::new(b"hello, and bytes that are not the body".to_vec());
        let mut res = Response::new(Body::from_reader(Counted(stream, counter.clone()), Some(5)));
        res.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        res
    };
    let client = sgi::TestClient::new(Validate::new(app));
    assert_eq!(client.get("/").send().body(), "hello");
    assert_eq!(taken.load(std::sync::atomic::Ordering::SeqCst), 5);
}
