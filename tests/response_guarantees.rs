//! What a client receives when a gateway breaks the response rules, over real sockets on
//! both backends. Whatever the gateway returns (a body where none may be, a wrong
//! `Content-Length`, framing or connection fields of its own, an invalid field value, an
//! interim status), the server sends a well-framed response (RFC 9110, RFC 9112 §6): it
//! corrects, truncates or closes, and logs why. Each response is read strictly, with a
//! request pipelined behind it: a stray body byte would stand where its status line is read.
//!
//! This file has its own test binary because it installs a process-wide `tracing` subscriber.

mod support;

use std::io::{self, Cursor};
use std::panic::catch_unwind;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::sync::Once;

use bytes::Bytes;
use sgi::http::{header, HeaderValue, StatusCode};
use sgi::{Body, Request, Response, TestClient};
use support::{config, start, Backend, CapturedLog, Reply, Running};

on_every_backend!(
    no_body_follows_a_204_or_304_whatever_the_gateway_returns,
    no_content_follows_a_205,
    no_body_follows_a_head_response,
    head_content_length_is_what_get_would_send,
    whole_body_longer_than_its_content_length_is_sent_with_its_own_length,
    whole_body_shorter_than_its_content_length_is_sent_with_its_own_length,
    streamed_body_longer_than_its_content_length_is_cut_at_that_length,
    streamed_body_shorter_than_its_content_length_aborts_the_connection,
    content_length_fields_that_disagree_or_are_not_numbers,
    gateway_transfer_encoding_never_reaches_the_wire,
    gateway_connection_field_never_keeps_a_closing_connection_open,
    gateway_hop_by_hop_fields_are_not_sent,
    a_head_answered_500_for_a_file_it_cannot_read_still_warns_of_hop_by_hop_fields,
    fields_the_gateway_names_in_its_connection_field_are_not_sent,
    a_gateway_upgrade_field_goes_out_with_the_upgrade_connection_option,
    a_gateway_date_is_sent_once,
    invalid_header_values_never_reach_the_wire,
    interim_and_invalid_statuses_as_the_final_response_are_answered_500,
    a_2xx_answer_to_connect_is_answered_501_as_no_tunnel_can_open,
    a_reader_is_read_no_further_than_its_length,
    a_body_of_known_length_is_not_pulled_past_it,
    the_server_drops_every_body_once_done_with_it,
);

// --- The log -------------------------------------------------------------------------------

/// The process-wide log of the server's warnings and errors, installed on first use.
fn server_log() -> &'static CapturedLog {
    CapturedLog::install("sgi=warn")
}

/// Waits until a logged line holds every one of `needles`.
fn assert_logged(needles: &[&str]) {
    let lines = || {
        server_log()
            .text()
            .lines()
            .filter(|line| line.contains(needles[0]))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let found = || {
        lines()
            .iter()
            .any(|l| needles.iter().all(|n| l.contains(n)))
    };
    // Logged by a server thread, maybe just after the client read its answer.
    let deadline = std::time::Instant::now() + support::PATIENCE;
    while !found() {
        assert!(
            std::time::Instant::now() < deadline,
            "no log line holds {needles:?}; near ones: {:#?}",
            lines()
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// A size that differs between backends, so that each backend's test finds its own line in
/// the shared log.
fn sized(backend: Backend, base: usize) -> usize {
    match backend {
        Backend::Dev => base,
        Backend::Pool => base + 1,
    }
}

/// `len` recognisable bytes: `abc…zabc…`.
fn letters(len: usize) -> Bytes {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

// --- The exchange --------------------------------------------------------------------------

/// Starts `answer` on `backend` behind a `/next` route that answers `next`.
fn serve<F>(backend: Backend, answer: F) -> Running
where
    F: Fn(&Request<'_>) -> Response + Send + Sync + 'static,
{
    server_log();
    start(
        backend,
        config().access_log(false),
        move |req: Request<'_>| {
            if req.uri().path() == "/next" {
                return Response::new(Body::from("next"));
            }
            answer(&req)
        },
    )
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")
}

fn head(path: &str) -> String {
    format!("HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n")
}

/// A response built field by field.
fn answer(status: u16, fields: &[(&'static str, &'static str)], body: Body) -> Response {
    let mut res = Response::new(body);
    *res.status_mut() = StatusCode::from_u16(status).unwrap();
    for (name, value) in fields {
        res.headers_mut()
            .append(*name, HeaderValue::from_static(value));
    }
    res
}

fn streamed(pieces: &[&'static str]) -> Body {
    Body::from_iter(
        pieces
            .iter()
            .map(|s| Ok(Bytes::from_static(s.as_bytes())))
            .collect::<Vec<_>>(),
    )
}

/// Sends `request` on a fresh connection with a request for `/next` pipelined behind it;
/// reads the response strictly and checks its framing; then checks that the connection
/// either closes cleanly or answers `/next` (no stray byte in between).
fn exchange(server: &Running, request: &str) -> Reply {
    let mut client = server.connect();
    client.send(format!("{request}{}", get("/next")));
    let is_head = request.starts_with("HEAD ");
    let reply = if is_head {
        client.head_response()
    } else {
        client.response()
    };
    let http10 = request.lines().next().unwrap().ends_with("HTTP/1.0");
    assert_well_framed(&reply, http10, request);
    if reply.closes() {
        client.expect_closed();
    } else {
        let next = client.response();
        assert_eq!(
            (next.status, next.text().as_str()),
            (200, "next"),
            "the response to {request:?} left bytes behind"
        );
    }
    reply
}

/// The framing rules of RFC 9112 §6 and RFC 9110 §8.6, and field values of RFC 9110 §5.5.
fn assert_well_framed(reply: &Reply, http10: bool, request: &str) {
    let lengths = reply.all("content-length");
    let codings = reply.all("transfer-encoding");
    let context = format!("{request:?} got {reply:?}");
    assert!(lengths.len() <= 1, "several Content-Length: {context}");
    assert!(
        lengths
            .iter()
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
        "a Content-Length that is no number: {context}"
    );
    assert!(
        lengths.is_empty() || codings.is_empty(),
        "Content-Length with Transfer-Encoding: {context}"
    );
    assert!(
        codings.is_empty() || codings == ["chunked"],
        "a coding other than the server's chunked: {context}"
    );
    assert!(
        !http10 || codings.is_empty(),
        "Transfer-Encoding to an HTTP/1.0 client: {context}"
    );
    let status = reply.status;
    if (100..200).contains(&status) || status == 204 {
        assert!(
            lengths.is_empty() && codings.is_empty(),
            "framing fields on a {status}: {context}"
        );
    }
    if status == 304 {
        assert!(codings.is_empty(), "Transfer-Encoding on a 304: {context}");
    }
    for (name, value) in &reply.headers {
        assert!(
            !value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f),
            "a control character in {name}: {context}"
        );
    }
    let upgrade = !reply.all("upgrade").is_empty();
    for value in reply.all("connection") {
        let server_owns = match value.strip_suffix(", upgrade") {
            Some(persistence) => upgrade && ["close", "keep-alive"].contains(&persistence),
            None => ["close", "keep-alive"].contains(&value) || (upgrade && value == "upgrade"),
        };
        assert!(
            server_owns,
            "the gateway's Connection passed through: {context}"
        );
    }
    // The sender of `Upgrade` also sends the `upgrade` option (RFC 9110 §7.8).
    assert!(
        !upgrade
            || reply
                .all("connection")
                .iter()
                .any(|v| v.ends_with("upgrade")),
        "Upgrade without the upgrade connection option: {context}"
    );
}

// --- Bodies where none may be --------------------------------------------------------------

fn no_body_follows_a_204_or_304_whatever_the_gateway_returns(backend: Backend) {
    let server = serve(backend, |req| {
        let path = req.uri().path();
        let status = if path.starts_with("/204") { 204 } else { 304 };
        if path.ends_with("/whole") {
            answer(
                status,
                &[("content-length", "12")],
                Body::from("not for you\n"),
            )
        } else {
            answer(
                status,
                &[("transfer-encoding", "chunked")],
                streamed(&["not ", "for ", "you\n"]),
            )
        }
    });
    for path in ["/204/whole", "/204/streamed", "/304/whole", "/304/streamed"] {
        for request in [get(path), head(path)] {
            let reply = exchange(&server, &request);
            assert!(reply.body.is_empty(), "{request:?} got {reply:?}");
        }
    }
}

fn no_content_follows_a_205(backend: Backend) {
    // RFC 9110 §15.3.6: "a server MUST NOT generate content in a 205 response".
    let server = serve(backend, |req| {
        if req.uri().path() == "/whole" {
            answer(
                205,
                &[("content-type", "text/plain")],
                Body::from("reset me\n"),
            )
        } else {
            answer(205, &[], streamed(&["reset ", "me\n"]))
        }
    });
    for path in ["/whole", "/streamed"] {
        let reply = exchange(&server, &get(path));
        assert_eq!(reply.status, 205);
        assert!(
            reply.body.is_empty(),
            "{path}: a 205 came with content {:?}",
            reply.text()
        );
    }
}

fn no_body_follows_a_head_response(backend: Backend) {
    let server = serve(backend, |req| match req.uri().path() {
        "/whole" => answer(200, &[], Body::from("hello")),
        "/streamed" => answer(200, &[], streamed(&["hel", "lo"])),
        "/streamed-with-length" => {
            answer(200, &[("content-length", "5")], streamed(&["hel", "lo"]))
        }
        _ => answer(
            200,
            &[],
            Body::from_reader(Cursor::new(b"hello".to_vec()), None),
        ),
    });
    for path in ["/whole", "/streamed", "/streamed-with-length", "/reader"] {
        let reply = exchange(&server, &head(path));
        assert_eq!(reply.status, 200);
        // RFC 9110 §8.6: a HEAD response's Content-Length, if any, is the GET's.
        let get_reply = exchange(&server, &get(path));
        assert_eq!(get_reply.text(), "hello");
        if let Some(length) = reply.header("content-length") {
            assert_eq!(length, "5", "{path}");
        }
    }
}

fn head_content_length_is_what_get_would_send(backend: Backend) {
    // The same answer for GET and HEAD: a 5-byte body that claims 99. GET gets the 5 bytes
    // with Content-Length: 5 (the server corrects it); RFC 9110 §8.6 then forbids a HEAD
    // response to say anything but 5.
    let server = serve(backend, |_req| {
        answer(200, &[("content-length", "99")], Body::from("hello"))
    });
    let to_get = exchange(&server, &get("/"));
    assert_eq!(
        (to_get.header("content-length"), to_get.text().as_str()),
        (Some("5"), "hello")
    );
    let to_head = exchange(&server, &head("/"));
    assert_eq!(to_head.header("content-length"), Some("5"), "{to_head:?}");
}

// --- Wrong Content-Length ------------------------------------------------------------------

/// A `len`-byte body of `kind` claiming `declared` bytes.
fn claiming(kind: &str, len: usize, declared: usize) -> Response {
    let bytes = letters(len);
    let body = match kind {
        "whole" => Body::from(bytes),
        "streamed" => Body::from_iter(vec![Ok(bytes)]),
        "reader" => Body::from_reader(Cursor::new(bytes), None),
        // Pieces up to the declared length, and more after it.
        _ => {
            let (first, rest) = bytes.split_at(declared.min(len));
            Body::from_iter(vec![
                Ok(Bytes::copy_from_slice(first)),
                Ok(Bytes::copy_from_slice(rest)),
            ])
        }
    };
    let mut res = Response::new(body);
    res.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(declared));
    res
}

/// Serves `claiming(kind, len, declared)` at `/{kind}/{len}/{declared}`.
fn claims_server(backend: Backend) -> Running {
    serve(backend, |req| {
        let path = req.uri().path().to_string();
        let parts: Vec<&str> = path.split('/').collect();
        claiming(
            parts[1],
            parts[2].parse().unwrap(),
            parts[3].parse().unwrap(),
        )
    })
}

fn whole_body_longer_than_its_content_length_is_sent_with_its_own_length(backend: Backend) {
    let server = claims_server(backend);
    let len = sized(backend, 40);
    let reply = exchange(&server, &get(&format!("/whole/{len}/{}", len - 7)));
    assert_eq!(reply.all("content-length"), [len.to_string()]);
    assert_eq!(reply.body, letters(len));
    assert_logged(&[
        "Content-Length differs from its body's length",
        &format!(" body={len}"),
    ]);
}

fn whole_body_shorter_than_its_content_length_is_sent_with_its_own_length(backend: Backend) {
    let server = claims_server(backend);
    let len = sized(backend, 50);
    let reply = exchange(&server, &get(&format!("/whole/{len}/{}", len + 7)));
    assert_eq!(reply.all("content-length"), [len.to_string()]);
    assert_eq!(reply.body, letters(len));
    assert_logged(&[
        "Content-Length differs from its body's length",
        &format!(" body={len}"),
    ]);
}

fn streamed_body_longer_than_its_content_length_is_cut_at_that_length(backend: Backend) {
    let server = claims_server(backend);
    let declared = sized(backend, 60);
    // The promised bytes go out, the rest never does; the connection then closes or goes on
    // cleanly (`exchange` checks both).
    for kind in ["streamed", "reader"] {
        let reply = exchange(
            &server,
            &get(&format!("/{kind}/{}/{declared}", declared + 9)),
        );
        assert_eq!(
            reply.all("content-length"),
            [declared.to_string()],
            "{kind}"
        );
        assert_eq!(reply.body, letters(declared), "{kind}");
    }
    // A reader is read no further than the declared length (see
    // `a_reader_is_read_no_further_than_its_length`), so only the iterator's longer piece
    // is seen, and logged.
    assert_logged(&[
        "body is longer than its Content-Length",
        &format!("declared={declared}"),
    ]);
    // A body that goes on in a later piece: the server stops at the promised length.
    let reply = exchange(
        &server,
        &get(&format!("/pieces/{}/{declared}", declared + 9)),
    );
    assert_eq!(reply.body, letters(declared));
}

fn streamed_body_shorter_than_its_content_length_aborts_the_connection(backend: Backend) {
    let server = serve(backend, |req| {
        let sent = letters(req.uri().path().len());
        match req.uri().query() {
            // A reader said to hold more than it has.
            Some("reader") => Response::new(Body::from_reader(Cursor::new(sent), Some(70))),
            _ => {
                let mut res = Response::new(Body::from_iter(vec![Ok(sent)]));
                res.headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from_static("70"));
                res
            }
        }
    });
    let path = format!("/{}", "s".repeat(sized(backend, 20) - 1));
    let sent = path.len();
    for query in ["iter", "reader"] {
        let mut client = server.connect();
        client.send(format!(
            "{}{}",
            get(&format!("{path}?{query}")),
            get("/next")
        ));
        // The head promises 70 bytes; fewer come, then the end of the connection, so the
        // client cannot take the body for a whole one.
        match client.try_response(false) {
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{query}: {e}"),
            Ok(reply) => panic!("{query}: a short body passed for a whole one: {reply:?}"),
        }
        assert_logged(&[&format!("body ended after {sent} of its declared 70 bytes")]);
    }
}

fn content_length_fields_that_disagree_or_are_not_numbers(backend: Backend) {
    let server = serve(backend, |req| {
        let fields: &[(&'static str, &'static str)] = match req.uri().path() {
            "/agree" => &[("content-length", "5"), ("content-length", "5")],
            "/disagree" => &[("content-length", "5"), ("content-length", "7")],
            "/list" => &[("content-length", "5, 5")],
            "/signed" => &[("content-length", "+5")],
            _ => &[("content-length", "five")],
        };
        let body = if req.uri().query() == Some("whole") {
            Body::from("hello")
        } else {
            streamed(&["hel", "lo"])
        };
        answer(200, fields, body)
    });
    for path in ["/agree", "/disagree", "/list", "/signed", "/word"] {
        for query in ["whole", "streamed"] {
            let request = get(&format!("{path}?{query}"));
            let mut client = server.connect();
            client.send(format!("{request}{}", get("/next")));
            // Either a well-framed "hello", or (holding the gateway to a length it cannot
            // meet) a body cut off by closing; never a body framed by a length it lacks.
            match client.try_response(false) {
                Ok(reply) => {
                    assert_well_framed(&reply, false, &request);
                    assert_eq!(reply.text(), "hello", "{request:?}");
                    if reply.closes() {
                        client.expect_closed();
                    } else {
                        assert_eq!(client.response().text(), "next", "{request:?}");
                    }
                }
                // Fields that agree on one length leave nothing to cut.
                Err(e) if matches!(path, "/agree" | "/list") => {
                    panic!("{request:?} was not answered in full: {e}")
                }
                Err(e) => assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{request:?}"),
            }
        }
    }
}

// --- Framing and connection fields of the gateway's own ------------------------------------

fn gateway_transfer_encoding_never_reaches_the_wire(backend: Backend) {
    let server = serve(backend, |req| {
        let coding = if req.uri().query() == Some("gzip") {
            "gzip, chunked"
        } else {
            "chunked"
        };
        let mut res = match req.uri().path() {
            "/whole" => answer(200, &[], Body::from("hello")),
            "/204" => answer(204, &[], Body::empty()),
            _ => answer(200, &[], streamed(&["hel", "lo"])),
        };
        res.headers_mut()
            .insert(header::TRANSFER_ENCODING, HeaderValue::from_static(coding));
        res
    });
    let reply = exchange(&server, &get("/whole"));
    assert_eq!(
        (
            reply.header("content-length"),
            reply.header("transfer-encoding")
        ),
        (Some("5"), None)
    );
    assert_eq!(reply.text(), "hello");
    for target in ["/streamed", "/streamed?gzip"] {
        let reply = exchange(&server, &get(target));
        assert_eq!(reply.all("transfer-encoding"), ["chunked"], "{target}");
        assert_eq!(
            reply.text(),
            "hello",
            "chunked once, by the server: {target}"
        );
    }
    // RFC 9112 §6.1: no Transfer-Encoding to HTTP/1.0, nor on a 204.
    let reply = exchange(&server, "GET /streamed HTTP/1.0\r\n\r\n");
    assert_eq!(reply.text(), "hello");
    assert!(reply.closes(), "{reply:?}");
    let reply = exchange(&server, &get("/204"));
    assert_eq!(reply.status, 204);
}

fn gateway_connection_field_never_keeps_a_closing_connection_open(backend: Backend) {
    let server = serve(backend, |req| {
        let value = match req.uri().path() {
            "/private" => "x-private, keep-alive",
            _ => "keep-alive",
        };
        let mut res = answer(200, &[("x-private", "hop")], Body::from("hello"));
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static(value));
        res
    });
    // The client asked to close (RFC 9112 §9.6), or is HTTP/1.0 without keep-alive (§9.3).
    for request in [
        "GET /keep HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "GET /keep HTTP/1.0\r\n\r\n",
    ] {
        let reply = exchange(&server, request);
        assert_eq!(reply.text(), "hello");
        assert!(reply.closes(), "{request:?}: {reply:?}");
    }
    let reply = exchange(&server, &get("/private"));
    assert_eq!(reply.text(), "hello");
}

fn gateway_hop_by_hop_fields_are_not_sent(backend: Backend) {
    let fields = [
        ("keep-alive", "timeout=5"),
        ("trailer", "x-checksum"),
        ("te", "trailers"),
        ("proxy-connection", "keep-alive"),
    ];
    let server = serve(backend, move |req| {
        let body = if req.uri().path() == "/streamed" {
            streamed(&["hel", "lo"])
        } else {
            Body::from("hello")
        };
        answer(200, &fields, body)
    });
    for path in ["/whole", "/streamed"] {
        let reply = exchange(&server, &get(path));
        assert_eq!(reply.text(), "hello");
        for (name, _) in fields {
            assert_eq!(reply.header(name), None, "{path}: {name} passed through");
        }
    }
    // The gateway is told why its fields vanished.
    for (name, _) in fields {
        assert_logged(&[
            "gateway set a hop-by-hop field",
            &format!("field={name} value="),
        ]);
    }
}

fn a_head_answered_500_for_a_file_it_cannot_read_still_warns_of_hop_by_hop_fields(
    backend: Backend,
) {
    let path = std::env::temp_dir().join(format!(
        "sgi-unreadable-hop-{}-{backend:?}",
        std::process::id()
    ));
    std::fs::write(&path, b"hello").unwrap();
    let server = serve(backend, {
        let path = path.clone();
        move |_req| {
            // Open for writing only: it has a length, but every read fails.
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            let body = Body::from_file(file).unwrap();
            answer(200, &[("keep-alive", "timeout=7")], body)
        }
    });
    // The 500 goes out before any head is written from the gateway's fields.
    let mut client = server.connect();
    client.send(head("/"));
    assert_eq!(client.head_response().status, 500);
    assert_logged(&["gateway set a hop-by-hop field", "value=\"timeout=7\""]);
    let _ = std::fs::remove_file(&path);
}

fn fields_the_gateway_names_in_its_connection_field_are_not_sent(backend: Backend) {
    // The gateway marks `X-Session` as describing this connection only (RFC 9110 §7.6.1).
    // The server owns the connection and drops the gateway's `Connection` field; sending
    // `X-Session` on its own would make it look end-to-end.
    let server = serve(backend, |_req| {
        answer(
            200,
            &[
                ("connection", "x-session, close"),
                ("x-session", "abc"),
                ("connection", "X-Hop"),
                ("x-hop", "1"),
                ("x-kept", "yes"),
            ],
            Body::from("hello"),
        )
    });
    let reply = exchange(&server, &get("/"));
    assert_eq!(reply.text(), "hello");
    assert_eq!(reply.header("x-session"), None, "{reply:?}");
    assert_eq!(reply.header("x-hop"), None, "{reply:?}");
    assert_eq!(reply.header("x-kept"), Some("yes"), "{reply:?}");
    // `close` is still honoured.
    assert!(reply.closes(), "{reply:?}");
    assert_logged(&["gateway set a hop-by-hop field", "field=x-session"]);
}

fn a_gateway_upgrade_field_goes_out_with_the_upgrade_connection_option(backend: Backend) {
    // A 426 MUST carry `Upgrade` (RFC 9110 §15.5.22), and any response may advertise one
    // (§7.8); its sender MUST also send the `upgrade` connection option.
    let server = serve(backend, |req| {
        let mut fields = vec![("upgrade", "TLS/1.2, HTTP/1.1"), ("connection", "Upgrade")];
        if req.uri().path() == "/close" {
            fields.push(("connection", "close"));
        }
        answer(426, &fields, Body::from("upgrade"))
    });
    let reply = exchange(&server, &get("/"));
    assert_eq!(reply.status, 426, "{reply:?}");
    assert_eq!(reply.all("upgrade"), ["TLS/1.2, HTTP/1.1"], "{reply:?}");
    assert_eq!(reply.all("connection"), ["upgrade"], "{reply:?}");
    assert!(!reply.closes(), "{reply:?}");
    let reply = exchange(&server, &get("/close"));
    assert_eq!(reply.all("upgrade"), ["TLS/1.2, HTTP/1.1"], "{reply:?}");
    assert_eq!(reply.all("connection"), ["close, upgrade"], "{reply:?}");
    assert!(reply.closes(), "{reply:?}");
    // Nothing was dropped, so nothing is logged about it.
    assert!(
        !server_log().text().contains("field=upgrade"),
        "{}",
        server_log().text()
    );
}

fn a_gateway_date_is_sent_once(backend: Backend) {
    // `Date` is a singleton field (RFC 9110 §6.6.1): two would make the response invalid.
    let date = "Sun, 06 Nov 1994 08:49:37 GMT";
    let server = serve(backend, move |_req| {
        answer(
            200,
            &[("date", date), ("date", "Mon, 07 Nov 1994 08:49:37 GMT")],
            Body::from("hello"),
        )
    });
    let reply = exchange(&server, &get("/"));
    assert_eq!(reply.all("date"), [date], "{reply:?}");
    assert_logged(&["gateway set more than one Date field"]);
}

// --- Field values and statuses -------------------------------------------------------------

/// Keeps the panics `http` raises for values it refuses off the test output.
fn quiet_refused_values() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let refused = info
                .payload()
                .downcast_ref::<&str>()
                .is_some_and(|m| m.contains("from_maybe_shared_unchecked"));
            if !refused {
                default(info);
            }
        }));
    });
}

/// `bytes` as a header value, if `http` lets one be built: its unchecked constructor still
/// validates in debug builds (and panics), and takes the bytes as they are in release builds.
fn unchecked_value(bytes: &'static [u8]) -> Option<HeaderValue> {
    quiet_refused_values();
    // SAFETY: the bytes are ASCII, so valid UTF-8: the constructor's only requirement.
    catch_unwind(|| unsafe { HeaderValue::from_maybe_shared_unchecked(bytes) }).ok()
}

fn invalid_header_values_never_reach_the_wire(backend: Backend) {
    // CR, LF and NUL would split the head or be refused (RFC 9110 §5.5); other controls are
    // no field-vchar, and strict parsers refuse the response.
    let invalid: [&'static [u8]; 6] = [
        b"evil\r\nx-injected: yes",
        b"bare\nlf",
        b"bare\rcr",
        b"nul\x00byte",
        b"start\x01of-heading",
        b"del\x7fete",
    ];
    let built: Vec<HeaderValue> = invalid.into_iter().filter_map(unchecked_value).collect();
    // Only through `http`'s unchecked constructor can a gateway hold such a value at all,
    // and in debug builds (a plain `cargo test`) even that refuses: then the test holds the
    // server to the values `http` does accept at the edges of the grammar.
    assert!(
        built.len() == invalid.len() || (built.is_empty() && cfg!(debug_assertions)),
        "http built {} of the {} invalid values",
        built.len(),
        invalid.len()
    );
    let dropped = built.len();
    let server = serve(backend, move |_req| {
        let mut res = answer(
            200,
            &[
                ("x-tab", "a\tb"),
                ("x-padded", "  padded  "),
                ("x-empty", ""),
            ],
            Body::from("hello"),
        );
        for value in &built {
            res.headers_mut().append("x-invalid", value.clone());
        }
        res
    });
    let reply = exchange(&server, &get("/"));
    assert_eq!(reply.text(), "hello");
    assert_eq!(reply.header("x-injected"), None, "a field was smuggled in");
    assert_eq!(reply.header("x-tab"), Some("a\tb"));
    assert_eq!(reply.header("x-padded"), Some("padded"));
    assert_eq!(reply.header("x-empty"), Some(""));
    // `assert_well_framed` has checked that no control character got through.
    if dropped > 0 {
        assert_eq!(reply.all("x-invalid"), Vec::<&str>::new());
        assert_logged(&[
            "dropped response header fields",
            &format!("dropped={dropped}"),
        ]);
    }
}

fn interim_and_invalid_statuses_as_the_final_response_are_answered_500(backend: Backend) {
    let server = serve(backend, |req| {
        let status = req.uri().path()[1..].parse().unwrap();
        answer(
            status,
            &[("content-type", "text/plain")],
            Body::from("interim"),
        )
    });
    for status in [100, 101, 102, 103] {
        let reply = exchange(&server, &get(&format!("/{status}")));
        assert_eq!(reply.status, 500, "a {status} stood as the final response");
        assert_logged(&[
            "gateway returned an interim status as its response",
            &format!("status={status}"),
        ]);
    }
    // Codes past 599 are not HTTP's (RFC 9110 §15), though the `http` crate takes them.
    for status in [600, 999] {
        let reply = exchange(&server, &get(&format!("/{status}")));
        assert_eq!(reply.status, 500, "a {status} went out");
        assert_logged(&[
            "gateway returned a status outside 100-599 as its response",
            &format!("status={status}"),
        ]);
    }
}

fn a_2xx_answer_to_connect_is_answered_501_as_no_tunnel_can_open(backend: Backend) {
    let server = serve(backend, |_req| answer(200, &[], Body::from("tunnel?")));
    let mut client = server.connect();
    // A 2xx to CONNECT turns the connection into a tunnel (RFC 9110 §9.3.6, RFC 9112 §6.3):
    // a proxy would pass the next bytes through as tunnel data, so the server must not go
    // on reading them as a request of its own.
    client.send(
        "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n\
         GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    let reply = client.response();
    assert_eq!(reply.status, 501, "{reply:?}");
    assert!(reply.closes(), "{reply:?}");
    client.expect_closed();
    assert_logged(&["CONNECT"]);
    // Any client can do this to a gateway that accepts every method: the error is logged
    // at most once a second (with a count), not once per request.
    for _ in 0..20 {
        let mut client = server.connect();
        client.send("CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n");
        assert_eq!(client.response().status, 501);
    }
    let logged = server_log()
        .text()
        .lines()
        .filter(|line| line.contains("cannot open a tunnel"))
        .count();
    // Both backends' tests may run at once, each logging again after a second at most.
    assert!(logged <= 6, "{logged} lines for 42 CONNECTs");
}

// --- Bodies of known length ----------------------------------------------------------------

/// A reader over a stream shared with someone else (an upstream connection, a pipe, a file
/// whose offset is shared): `body` first, then bytes that are not the response's; counts
/// the bytes taken from it.
struct Shared {
    stream: Cursor<Vec<u8>>,
    taken: Arc<AtomicU64>,
}

impl io::Read for Shared {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.stream.read(buf)?;
        self.taken.fetch_add(n as u64, SeqCst);
        Ok(n)
    }
}

/// A gateway answering with `hello` from a shared stream, declared 5 bytes long; and the
/// count of bytes it took from that stream.
fn shared_stream_gateway() -> (
    impl Fn(Request<'_>) -> Response + Send + Sync + 'static,
    Arc<AtomicU64>,
) {
    let taken = Arc::new(AtomicU64::new(0));
    let counter = taken.clone();
    let gateway = move |req: Request<'_>| {
        if req.uri().path() == "/next" {
            // `exchange`'s request behind.
            return Response::new(Body::from("next"));
        }
        let stream = Cursor::new(b"hello, and bytes that are not the body".to_vec());
        let taken = counter.clone();
        Response::new(Body::from_reader(Shared { stream, taken }, Some(5)))
    };
    (gateway, taken)
}

fn a_reader_is_read_no_further_than_its_length(backend: Backend) {
    let (gateway, taken) = shared_stream_gateway();
    let server = start(backend, config(), gateway);
    let reply = exchange(&server, &get("/"));
    assert_eq!(reply.body, b"hello");
    assert_eq!(taken.load(SeqCst), 5, "read past the body's 5 bytes");
}

#[test]
fn the_test_client_reads_a_reader_no_further_than_its_length() {
    let (gateway, taken) = shared_stream_gateway();
    assert_eq!(TestClient::new(gateway).get("/").send().body(), "hello");
    assert_eq!(taken.load(SeqCst), 5, "read past the body's 5 bytes");
    let (gateway, taken) = shared_stream_gateway();
    let req = sgi::http::Request::new(sgi::Input::from_slice(b""));
    let body = gateway(req).into_body().into_bytes().unwrap();
    assert_eq!((&body[..], taken.load(SeqCst)), (&b"hello"[..], 5));
}

/// A reader that fails if read: its owner said it holds nothing more.
struct MustNotRead;

impl io::Read for MustNotRead {
    fn read(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
        Err(io::Error::other("read past the declared end"))
    }
}

fn a_body_of_known_length_is_not_pulled_past_it(backend: Backend) {
    // Once its declared length is sent (at once when it is 0), a streamed body is not
    // asked for more: a next piece could block or fail, and could not be sent anyway.
    let server = serve(backend, |req| {
        let (declared, first) = match req.uri().path() {
            "/next" => return Response::new(Body::from("next")),
            "/empty" => (0, None),
            _ => (5, Some(Ok(Bytes::from_static(b"hello")))),
        };
        let failing = std::iter::once(Err(io::Error::other("pulled past the declared end")));
        let pieces = first.into_iter().chain(failing);
        let mut res = Response::new(Body::from_iter(pieces));
        res.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(declared));
        if req.uri().query() == Some("reader") {
            let reader = io::Read::chain(&b"hello"[..declared as usize], MustNotRead);
            *res.body_mut() = Body::from_reader(reader, Some(declared));
        }
        res
    });
    for target in ["/empty", "/empty?reader", "/five", "/five?reader"] {
        let reply = exchange(&server, &get(target));
        assert_eq!(reply.status, 200, "{target}");
        let want: &[u8] = if target.starts_with("/empty") {
            b""
        } else {
            b"hello"
        };
        assert_eq!(reply.body, want, "{target}");
        assert_eq!(
            reply.all("content-length"),
            [want.len().to_string()],
            "{target}"
        );
    }
}

fn the_server_drops_every_body_once_done_with_it(backend: Backend) {
    // WSGI's `close()`: code that must run when a response is over lives in a `Drop` of its
    // body's iterator, and runs whether the body was pulled to its end, sent whole at its
    // declared length (never asked for more), not sent at all (`HEAD`) or cut short.
    struct Done(Arc<AtomicU64>);
    impl Drop for Done {
        fn drop(&mut self) {
            self.0.fetch_add(1, SeqCst);
        }
    }
    let done = Arc::new(AtomicU64::new(0));
    let server = serve(backend, {
        let done = done.clone();
        move |req| {
            let guard = Done(done.clone());
            let mut pieces = vec![Ok(Bytes::from_static(b"hello"))];
            if req.uri().path() == "/failing" {
                pieces.push(Err(io::Error::other(
                    "the body fails after its first piece",
                )));
            }
            let mut pieces = pieces.into_iter();
            let pieces = std::iter::from_fn(move || {
                let _held = &guard;
                pieces.next()
            });
            let mut res = Response::new(Body::from_iter(pieces));
            if req.uri().path() == "/known" {
                res.headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(5));
            }
            res
        }
    });
    for (i, request) in [
        get("/chunked"),
        get("/known"),
        head("/known"),
        get("/failing"),
    ]
    .iter()
    .enumerate()
    {
        let mut client = server.connect();
        client.send(request);
        if request.starts_with("HEAD") {
            assert_eq!(client.head_response().status, 200);
        } else if request.contains("/failing") {
            // Cut after its head and first piece: the client sees no orderly end.
            let wire = client.read_to_end();
            assert!(wire.starts_with(b"HTTP/1.1 200 "), "{wire:?}");
        } else {
            assert_eq!(client.response().text(), "hello", "{request:?}");
        }
        let dropped = i as u64 + 1;
        support::wait_until("the body is dropped", || done.load(SeqCst) == dropped);
    }
}

#[test]
fn a_directory_is_refused_as_a_file_body() {
    // Its metadata has a size, but reading it fails: taken as a file, `GET` would get a 500
    // where `HEAD` was promised a 200. The gateway hears of it before it answers.
    let dir = || std::fs::File::open(std::env::temp_dir()).unwrap();
    for refused in [
        Body::from_file(dir()).unwrap_err(),
        Body::from_file_range(dir(), 0, 10).unwrap_err(),
    ] {
        assert_eq!(refused.kind(), io::ErrorKind::InvalidInput, "{refused}");
    }
}
