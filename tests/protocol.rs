//! HTTP/1.1 message exchange over real sockets (RFC 9112): persistence, pipelining, the
//! framing of request and response bodies, interim responses, and what the client sees when
//! a gateway fails.

mod support;

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Duration;

use sgi::http::{header, StatusCode};
use sgi::{Body, Config, Request, Response};
use support::{
    agent, config, echo, response, start, target, wait_until, with_timeouts, Backend, Gate,
};

on_every_backend!(
    keeps_an_http11_connection_alive,
    closes_an_http10_connection_by_default,
    keeps_an_http10_connection_alive_when_asked,
    honours_connection_close_from_the_client,
    honours_connection_close_from_the_gateway,
    closes_after_max_requests_per_connection,
    pipelined_requests_are_answered_in_order,
    answers_held_for_pipelined_requests_go_out_before_they_pile_up,
    ignores_empty_lines_before_a_request_line,
    a_blank_line_left_unfinished_is_closed_without_an_answer,
    a_client_that_ends_its_side_after_a_request_is_answered_and_closed,
    request_sent_byte_by_byte_is_reassembled,
    request_body_reaches_the_gateway,
    chunked_request_body_is_decoded,
    large_bodies_cross_intact,
    iterator_body_is_sent_chunked,
    each_chunk_goes_out_whole_before_the_next_piece_is_made,
    iterator_body_to_http10_is_delimited_by_close,
    file_body_is_sent_whole,
    head_response_has_no_body_but_keeps_content_length,
    head_response_keeps_the_gateways_content_length,
    no_body_follows_204_or_304,
    response_framing_is_decided_by_the_server,
    responses_carry_a_date_header,
    expect_100_continue_is_answered_before_the_body,
    expected_body_left_unread_closes_without_100_continue,
    a_read_into_an_empty_buffer_asks_the_client_for_nothing,
    ignores_100_continue_from_an_http10_client,
    interim_100_continue_never_overtakes_an_earlier_pipelined_response,
    unread_body_is_drained_before_the_next_request,
    unread_body_too_large_to_drain_closes_after_the_response,
    a_body_cut_short_still_lets_earlier_pipelined_answers_out,
    gateway_panic_is_answered_500_and_the_server_goes_on,
    failing_iterator_body_aborts_the_connection,
    a_body_failing_before_its_first_byte_is_answered_500,
    a_file_that_cannot_be_read_is_answered_500,
    panicking_body_reader_aborts_the_connection_and_frees_it,
    streamed_body_shorter_than_its_content_length_aborts_the_connection,
    an_answer_never_waits_on_an_upload_it_left_unread,
    earlier_pipelined_answers_go_out_before_a_body_is_awaited,
    a_failed_body_delimited_by_the_close_ends_in_a_reset,
    a_failed_body_delimited_by_the_close_ends_in_a_reset_with_a_request_behind_it,
    a_body_delimited_by_the_close_cut_at_the_write_timeout_ends_in_a_reset,
    a_closing_answer_is_not_destroyed_by_a_request_sent_behind_it,
    a_closing_answer_is_not_destroyed_by_bytes_sent_after_the_request,
    a_closing_answer_is_not_destroyed_by_bytes_sent_after_the_close,
    a_panic_dropping_an_unsent_body_spares_the_response,
    a_panic_dropping_a_body_sent_whole_spares_the_connection,
    a_body_whose_next_piece_and_drop_both_panic_takes_down_nothing,
);

fn an_answer_never_waits_on_an_upload_it_left_unread(backend: Backend) {
    let server = start(backend, config(), target);
    let mut client = server.connect();
    // A third of a large upload, then the client pauses (say, to read an early answer).
    client.send("POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n");
    client.send([b'a'; 20_000]);
    // The answer goes out at once (not after the 30 s body timeout, past the client's
    // read timeout), and the connection closes, as the rest of the body is not wanted.
    let reply = client.response();
    assert_eq!(reply.text(), "/early");
    assert!(reply.closes(), "{reply:?}");
}

fn earlier_pipelined_answers_go_out_before_a_body_is_awaited(backend: Backend) {
    let server = start(backend, config(), echo);
    let mut client = server.connect();
    // The client sends its POST's body only once it has the GET's answer.
    client.send(
        "GET /first HTTP/1.1\r\nHost: x\r\n\r\n\
         POST /second HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n",
    );
    assert_eq!(client.response().text(), "GET /first\n");
    client.send("hello");
    assert_eq!(client.response().text(), "POST /second\nhello");
}

/// A streamed body that fails after its first piece, `partial`.
fn fails_midway(_req: Request<'_>) -> Response {
    Response::new(Body::from_iter(vec![
        Ok("partial".into()),
        Err(io::Error::other("the database went away")),
    ]))
}

fn a_file_that_cannot_be_read_is_answered_500(backend: Backend) {
    let path =
        std::env::temp_dir().join(format!("sgi-unreadable-{}-{backend:?}", std::process::id()));
    std::fs::write(&path, [b'x'; 100]).unwrap();
    let server = start(backend, config(), {
        let path = path.clone();
        move |_req: Request<'_>| {
            // Open for writing only: it has a length, but every read fails.
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            Response::new(Body::from_file(file).unwrap())
        }
    });
    let mut client = server.connect();
    client.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    // The head waits for the file's first piece, so nothing has gone out yet.
    let reply = client.response();
    assert_eq!(reply.status, 500, "{reply:?}");
    assert!(reply.closes(), "{reply:?}");
    // `HEAD` sends no body, but its answer is the one `GET` would get (RFC 9110 §9.3.2).
    let mut client = server.connect();
    client.send("HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
    let reply = client.head_response();
    assert_eq!(reply.status, 500, "{reply:?}");
    let _ = std::fs::remove_file(&path);
}

fn a_failed_body_delimited_by_the_close_ends_in_a_reset(backend: Backend) {
    assert_cut_body_ends_in_reset(backend, b"GET / HTTP/1.0\r\n\r\n");
}

fn a_failed_body_delimited_by_the_close_ends_in_a_reset_with_a_request_behind_it(backend: Backend) {
    // Bytes the server will not read make it close with a lingering (orderly) close, which
    // must not be used here.
    assert_cut_body_ends_in_reset(backend, b"GET / HTTP/1.0\r\n\r\nGET /next HTTP/1.0\r\n\r\n");
}

fn a_body_delimited_by_the_close_cut_at_the_write_timeout_ends_in_a_reset(backend: Backend) {
    let write = Duration::from_millis(300);
    let server = start(
        backend,
        with_timeouts(|t| t.write = write),
        |_req: Request<'_>| {
            // 64 MiB in 64 KiB pieces: more than the socket buffers on both sides hold.
            let piece = bytes::Bytes::from(vec![b'x'; 64 << 10]);
            Response::new(Body::from_iter((0..1024).map(move |_| Ok(piece.clone()))))
        },
    );
    let mut client = server.connect();
    // HTTP/1.0 has no chunked coding: the body ends where the connection does.
    client.send("GET / HTTP/1.0\r\n\r\n");
    // The client reads nothing until the server has given up on it: the pool's event loop
    // (the stream parked there) or its worker, the dev server's thread.
    wait_until("the server drops the client that takes no bytes", || {
        let stats = server.handle.stats();
        stats.aborted_requests == 1 && stats.open_connections == 0
    });
    // What the buffers hold arrives, and then a reset: an orderly close would make the
    // part look like the whole body.
    client.expect_reset();
}

/// Sends `requests` to a gateway whose body fails midway and checks that the connection
/// ends in a reset.
fn assert_cut_body_ends_in_reset(backend: Backend, requests: &[u8]) {
    let server = start(backend, config(), fails_midway);
    let mut client = server.connect();
    client.send(requests);
    // HTTP/1.0 has no chunked coding: the body ends where the connection does. An orderly
    // close would make "partial" look like the whole body.
    client.expect_reset();
}

fn a_closing_answer_is_not_destroyed_by_a_request_sent_behind_it(backend: Backend) {
    const LEN: usize = 8 << 20;
    let server = start(backend, config(), |req: Request<'_>| {
        let mut res = Response::new(Body::from(vec![b'x'; LEN]));
        if req.uri().path() == "/last" {
            // The gateway ends the connection; the client had no way to know beforehand.
            res.headers_mut()
                .insert(header::CONNECTION, "close".parse().unwrap());
        }
        res
    });
    let client = server.connect();
    let mut stream = client.try_clone_stream();
    stream
        .write_all(b"GET /last HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = vec![0; 64 * 1024];
    let mut filled = 0;
    let head_end = loop {
        let n = stream.read(&mut got[filled..]).unwrap();
        assert_ne!(n, 0, "closed before the head");
        filled += n;
        if let Some(i) = got[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    // A request pipelined while the answer is still coming: the server will not read it.
    // Closing with it unread would make the kernel reset the connection and throw away
    // the part of the answer still on its way (RFC 9112 §9.6); the server lingers instead.
    stream
        .write_all(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    got.truncate(filled);
    stream
        .read_to_end(&mut got)
        .expect("the answer ends in an orderly close, not a reset");
    assert_eq!(got.len() - head_end, LEN, "the whole body arrived");
    let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
    assert!(head.contains("connection: close"), "{head}");
}

fn a_closing_answer_is_not_destroyed_by_bytes_sent_after_the_request(backend: Backend) {
    // An HTTP/1.0 client asks for the close, then sends the CRLF such clients add after a
    // POST body (RFC 9112 §2.2) while the gateway runs: the server never reads it, and a
    // close with it unread would be a reset that throws away the end of the answer.
    const LEN: usize = 8 << 20;
    let gate = Gate::new();
    let at_gate = gate.clone();
    let server = start(backend, config(), move |mut req: Request<'_>| {
        let mut body = Vec::new();
        req.body_mut().read_to_end(&mut body).unwrap();
        at_gate.pass();
        Response::new(Body::from(vec![b'x'; LEN]))
    });
    let client = server.connect();
    let mut stream = client.try_clone_stream();
    stream
        .write_all(b"POST /form HTTP/1.0\r\nContent-Length: 3\r\n\r\na=b")
        .unwrap();
    // The request has been read whole: the CRLF comes in a segment of its own.
    gate.wait_for_waiting(1);
    stream.write_all(b"\r\n").unwrap();
    gate.open();
    assert_whole_answer_ends_in_order(&mut stream, Vec::new(), LEN);
}

/// Reads the rest of an answer (`got` holds its start) to the connection's end, which must
/// be an orderly one, and checks that its body is `len` bytes whole.
fn assert_whole_answer_ends_in_order(
    stream: &mut std::net::TcpStream,
    mut got: Vec<u8>,
    len: usize,
) {
    stream
        .read_to_end(&mut got)
        .expect("the answer ends in an orderly close, not a reset");
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(got.len() - head_end, len, "the whole body arrived");
}

fn a_closing_answer_is_not_destroyed_by_bytes_sent_after_the_close(backend: Backend) {
    // The same CRLF, arriving once the server has written the whole answer to its socket
    // and closed: the client's small receive window keeps most of the answer queued in the
    // server's kernel, and bytes reaching a closed socket make Linux reset it, throwing
    // that away. An HTTP/1.0 request with a body closes with a lingering close for this.
    const LEN: usize = 256 << 10;
    let server = start(backend, config(), move |mut req: Request<'_>| {
        let mut body = Vec::new();
        req.body_mut().read_to_end(&mut body).unwrap();
        Response::new(Body::from(vec![b'x'; LEN]))
    });
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    let mut stream: std::net::TcpStream = socket.into();
    stream.set_read_timeout(Some(support::PATIENCE)).unwrap();
    stream
        .write_all(b"POST /form HTTP/1.0\r\nContent-Length: 3\r\n\r\na=b")
        .unwrap();
    let mut got = vec![0u8; 1024];
    let n = stream.read(&mut got).unwrap();
    got.truncate(n);
    support::wait_until("the server is done with the connection", || {
        server.handle.stats().open_connections == 0
    });
    stream.write_all(b"\r\n").unwrap();
    assert_whole_answer_ends_in_order(&mut stream, got, LEN);
}

fn a_panic_dropping_an_unsent_body_spares_the_response(backend: Backend) {
    struct PanicsOnDrop;
    impl Iterator for PanicsOnDrop {
        type Item = io::Result<bytes::Bytes>;
        fn next(&mut self) -> Option<Self::Item> {
            Some(Ok("never sent".into()))
        }
    }
    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            panic!("a body drop panic the test asked for");
        }
    }
    let server = start(backend, config(), |req: Request<'_>| {
        match req.uri().path() {
            "/panics" => Response::new(Body::from_iter(PanicsOnDrop)),
            _ => Response::new(Body::from("fine")),
        }
    });
    let mut client = server.connect();
    // HEAD sends no body, so the body is only dropped; the answer and the connection stay.
    client.send("HEAD /panics HTTP/1.1\r\nHost: x\r\n\r\nGET /fine HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(client.head_response().status, 200);
    assert_eq!(client.response().text(), "fine");
}

fn a_body_whose_next_piece_and_drop_both_panic_takes_down_nothing(backend: Backend) {
    // A panic while the body is dropped during the unwinding of another would abort the
    // process; the server catches the first before the body is dropped.
    struct Panics(u8);
    impl Iterator for Panics {
        type Item = io::Result<bytes::Bytes>;
        fn next(&mut self) -> Option<Self::Item> {
            match self.0 {
                0 => panic!("a piece panic the test asked for"),
                n => {
                    self.0 = n - 1;
                    Some(Ok("partial".into()))
                }
            }
        }
    }
    impl Drop for Panics {
        fn drop(&mut self) {
            panic!("a body drop panic the test asked for");
        }
    }
    let server = start(backend, config(), |req: Request<'_>| {
        match req.uri().path() {
            "/at-once" => Response::new(Body::from_iter(Panics(0))),
            "/midway" => Response::new(Body::from_iter(Panics(1))),
            _ => Response::new(Body::from("fine")),
        }
    });
    // Before any byte of the body: a clean 500.
    let mut client = server.connect();
    client.send("GET /at-once HTTP/1.1\r\nHost: x\r\n\r\n");
    let reply = client.response();
    assert_eq!(reply.status, 500, "{reply:?}");
    assert!(reply.closes(), "{reply:?}");
    // After the head and a piece: the connection is cut, the chunked body unfinished.
    let mut client = server.connect();
    client.send("GET /midway HTTP/1.1\r\nHost: x\r\n\r\n");
    let cut = client.read_to_end();
    assert!(cut.starts_with(b"HTTP/1.1 200 OK\r\n"), "{cut:?}");
    assert!(
        !cut.ends_with(b"\r\n0\r\n\r\n"),
        "a whole body from a panicking stream"
    );
    // The server goes on.
    let mut client = server.connect();
    client.send("GET /fine HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(client.response().text(), "fine");
}

fn a_panic_dropping_a_body_sent_whole_spares_the_connection(backend: Backend) {
    struct PanicsOnDrop(Option<&'static str>);
    impl Iterator for PanicsOnDrop {
        type Item = io::Result<bytes::Bytes>;
        fn next(&mut self) -> Option<Self::Item> {
            self.0.take().map(|s| Ok(s.into()))
        }
    }
    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            panic!("a body drop panic the test asked for");
        }
    }
    let server = start(backend, config(), |req: Request<'_>| {
        match req.uri().path() {
            "/panics" => Response::new(Body::from_iter(PanicsOnDrop(Some("whole")))),
            _ => Response::new(Body::from("fine")),
        }
    });
    let mut client = server.connect();
    // The body went out whole before its drop panicked: the answer stands, and so does the
    // connection, with the request pipelined behind it.
    client.send("GET /panics HTTP/1.1\r\nHost: x\r\n\r\nGET /fine HTTP/1.1\r\nHost: x\r\n\r\n");
    let reply = client.response();
    assert_eq!(reply.text(), "whole");
    assert!(!reply.closes(), "{reply:?}");
    assert_eq!(client.response().text(), "fine");
}

fn hello(_req: Request<'_>) -> Response {
    Response::new(Body::from("Hello, World!"))
}

fn keeps_an_http11_connection_alive(backend: Backend) {
    let server = start(backend, config(), support::environ);
    let agent = agent();
    let first: serde_json::Value = serde_json::from_str(
        &response(agent.get(&server.url("/")).call())
            .into_string()
            .unwrap(),
    )
    .unwrap();
    let second: serde_json::Value = serde_json::from_str(
        &response(agent.get(&server.url("/")).call())
            .into_string()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["request_index"], 0);
    assert_eq!(
        second["request_index"], 1,
        "second request on a new connection"
    );
    assert_eq!(first["peer_addr"], second["peer_addr"]);
}

fn closes_an_http10_connection_by_default(backend: Backend) {
    let server = start(backend, config(), hello);
    let mut client = server.connect();
    client.send("GET / HTTP/1.0\r\n\r\n");
    let reply = client.response();
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (200, "Hello, World!")
    );
    assert!(reply.closes(), "{:?}", reply.headers);
    client.expect_closed();
}

fn keeps_an_http10_connection_alive_when_asked(backend: Backend) {
    let server = start(backend, config(), target);
    let mut client = server.connect();
    client.send("GET /one HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let first = client.response();
    assert_eq!(first.header("connection"), Some("keep-alive"));
    assert_eq!(first.text(), "/one");
    client.send("GET /two HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(client.response().text(), "/two");
}

fn honours_connection_close_from_the_client(backend: Backend) {
    let server = start(backend, config(), hello);
    let mut client = server.connect();
    // A request behind the closing one is not processed (RFC 9112 §9.6).
    client.send(
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n\
         GET /after-close HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    let reply = client.response();
    assert_eq!(reply.status, 200);
    assert!(reply.closes(), "{:?}", reply.headers);
    client.expect_closed();
}

fn honours_connection_close_from_the_gateway(backend: Backend) {
    let server = start(backend, config(), |_req: Request<'_>| {
        sgi::http::Response::builder()
            .header(header::CONNECTION, "close")
            .body(Body::from("bye"))
            .unwrap()
    });
    let mut client = server.connect();
    client.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let reply = client.response();
    assert_eq!(reply.text(), "bye");
    assert!(reply.closes(), "{:?}", reply.headers);
    client.expect_closed();
}

fn closes_after_max_requests_per_connection(backend: Backend) {
    let config = Config {
        max_requests_per_connection: Some(2),
        ..config()
    };
    let server = start(backend, config, target);
    let mut client = server.connect();
    client.send("GET /1 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(!client.response().closes());
    client.send("GET /2 HTTP/1.1\r\nHost: x\r\n\r\n");
    let last = client.response();
    assert_eq!(last.text(), "/2");
    assert!(last.closes(), "{:?}", last.headers);
    client.expect_closed();
}

fn pipelined_requests_are_answered_in_order(backend: Backend) {
    let server = start(backend, config(), echo);
    let mut client = server.connect();
    client.send(
        "GET /1 HTTP/1.1\r\nHost: x\r\n\r\n\
         POST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody\
         GET /3 HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(client.response().text(), "GET /1\n");
    assert_eq!(client.response().text(), "POST /2\nbody");
    assert_eq!(client.response().text(), "GET /3\n");
}

fn answers_held_for_pipelined_requests_go_out_before_they_pile_up(backend: Backend) {
    let gate = Gate::new();
    let server = start(backend, config(), {
        let gate = gate.clone();
        move |req: Request<'_>| {
            if req.uri().path() == "/gate" {
                gate.pass();
                return Response::new(Body::from("gate"));
            }
            // 16,000 bytes, small enough to be copied into the output buffer.
            let mut body = vec![b'.'; 16_000 - 8];
            body.extend_from_slice(format!("end{:>5}", req.uri().path()).as_bytes());
            Response::new(Body::from(body))
        }
    });
    let mut client = server.connect();
    let mut requests: String = (1..=8)
        .map(|n| format!("GET /{n} HTTP/1.1\r\nHost: x\r\n\r\n"))
        .collect();
    requests.push_str("GET /gate HTTP/1.1\r\nHost: x\r\n\r\n");
    client.send(requests);
    // The first answers are out while the last gateway still runs: about 64 KiB of them at
    // most wait to go out together.
    client.wait_for(b"end   /4", Duration::from_secs(5));
    gate.open();
    for n in 1..=8 {
        assert!(client.response().text().ends_with(&format!("end   /{n}")));
    }
    assert_eq!(client.response().text(), "gate");
}

fn ignores_empty_lines_before_a_request_line(backend: Backend) {
    let server = start(backend, config(), target);
    let mut client = server.connect();
    client.send("\r\n\r\nGET /after-blank-lines HTTP/1.1\r\nHost: x\r\n\r\n");
    let reply = client.response();
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (200, "/after-blank-lines")
    );
}

fn a_blank_line_left_unfinished_is_closed_without_an_answer(backend: Backend) {
    let head = std::time::Duration::from_millis(300);
    let server = start(backend, with_timeouts(|t| t.head = head), target);
    // A stray CRLF after a request is no request yet: when the client then ends its side,
    // or goes quiet past the head timeout, the connection closes with nothing sent.
    for end_side in [true, false] {
        let mut client = server.connect();
        client.send("GET /a HTTP/1.1\r\nHost: x\r\n\r\n\r\n");
        assert_eq!(client.response().text(), "/a");
        if end_side {
            client
                .try_clone_stream()
                .shutdown(std::net::Shutdown::Write)
                .unwrap();
        }
        client.expect_closed();
    }
}

fn a_client_that_ends_its_side_after_a_request_is_answered_and_closed(backend: Backend) {
    let server = start(backend, config(), target);
    let mut client = server.connect();
    client.send("GET /last HTTP/1.1\r\nHost: x\r\n\r\n");
    client
        .try_clone_stream()
        .shutdown(std::net::Shutdown::Write)
        .unwrap();
    assert_eq!(client.response().text(), "/last");
    // Closed now, not at the idle timeout (15 s, past the client's read timeout).
    client.expect_closed();
}

fn request_sent_byte_by_byte_is_reassembled(backend: Backend) {
    let server = start(backend, config(), echo);
    let mut client = server.connect();
    let request = "POST /slow HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
                   3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nX-T: 1\r\n\r\n\
                   GET /next HTTP/1.1\r\nHost: x\r\n\r\n";
    for byte in request.as_bytes() {
        client.send([*byte]);
        // Paced so that the server's reads end at every position; the outcome does not
        // depend on where they end.
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    assert_eq!(client.response().text(), "POST /slow\nabcde");
    assert_eq!(client.response().text(), "GET /next\n");
}

fn request_body_reaches_the_gateway(backend: Backend) {
    let server = start(backend, config(), echo);
    let res = response(agent().post(&server.url("/form")).send_string("a=1&b=2"));
    assert_eq!(res.status(), 200);
    assert_eq!(res.into_string().unwrap(), "POST /form\na=1&b=2");
}

fn chunked_request_body_is_decoded(backend: Backend) {
    let server = start(backend, config(), echo);
    let mut client = server.connect();
    // An extension, a trailer field, then a request right behind the body.
    client.send(
        "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
         5\r\nhello\r\n6;note=x\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n\
         GET /next HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(client.response().text(), "POST /up\nhello world");
    assert_eq!(client.response().text(), "GET /next\n");
}

fn large_bodies_cross_intact(backend: Backend) {
    let server = start(backend, config(), |mut req: Request<'_>| {
        let mut body = Vec::new();
        req.body_mut().read_to_end(&mut body).unwrap();
        Response::new(Body::from(body))
    });
    let sent: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    let res = response(agent().post(&server.url("/")).send_bytes(&sent));
    assert_eq!(res.header("content-length"), Some("3145728"));
    let mut received = Vec::new();
    res.into_reader().read_to_end(&mut received).unwrap();
    assert!(
        received == sent,
        "body differs ({} bytes back)",
        received.len()
    );
}

fn pieces(_req: Request<'_>) -> Response {
    Response::new(Body::from_iter(["a", "bb", "ccc"].map(|s| Ok(s.into()))))
}

fn iterator_body_is_sent_chunked(backend: Backend) {
    let server = start(backend, config(), pieces);
    let mut client = server.connect();
    client.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let reply = client.response();
    assert_eq!(reply.header("transfer-encoding"), Some("chunked"));
    assert_eq!(reply.header("content-length"), None);
    assert_eq!(reply.text(), "abbccc");
    client.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(client.response().text(), "abbccc", "framing ended cleanly");
}

fn each_chunk_goes_out_whole_before_the_next_piece_is_made(backend: Backend) {
    let gate = Gate::new();
    let server = start(backend, config(), {
        let gate = gate.clone();
        move |_req: Request<'_>| {
            let gate = gate.clone();
            Response::new(Body::from_iter(["first", "second"].into_iter().map(
                move |piece| {
                    if piece == "second" {
                        gate.pass();
                    }
                    Ok(piece.into())
                },
            )))
        }
    });
    let mut client = server.connect();
    client.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    // A client's chunked decoder hands a chunk on once its CRLF is in, so the CRLF must
    // not wait for the next piece (as for a stream of events, produced when they happen).
    client.wait_for(b"5\r\nfirst\r\n", Duration::from_secs(5));
    gate.open();
    assert_eq!(client.response().text(), "firstsecond");
}

fn iterator_body_to_http10_is_delimited_by_close(backend: Backend) {
    let server = start(backend, config(), pieces);
    let mut client = server.connect();
    client.send("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let reply = client.response();
    assert_eq!(
        reply.header("transfer-encoding"),
        None,
        "HTTP/1.0 has no chunked"
    );
    assert_eq!(reply.header("content-length"), None);
    assert!(reply.closes(), "{:?}", reply.headers);
    assert_eq!(reply.text(), "abbccc");
}

fn file_body_is_sent_whole(backend: Backend) {
    let path = std::env::temp_dir().join(format!(
        "sgi-file-body-{}-{backend:?}.bin",
        std::process::id()
    ));
    let content: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(&content))
        .unwrap();
    let file = Arc::new(path);
    let server = start(backend, config(), {
        let file = file.clone();
        move |req: Request<'_>| {
            let open = std::fs::File::open(&*file).unwrap();
            match req.uri().path() {
                "/range" => Response::new(Body::from_file_range(open, 100_000, 150_000).unwrap()),
                _ => Response::new(Body::from_file(open).unwrap()),
            }
        }
    });
    let agent = agent();
    let res = response(agent.get(&server.url("/range")).call());
    assert_eq!(res.header("content-length"), Some("150000"));
    let mut received = Vec::new();
    res.into_reader().read_to_end(&mut received).unwrap();
    assert!(received == content[100_000..250_000], "range differs");
    for _ in 0..2 {
        let res = response(agent.get(&server.url("/")).call());
        assert_eq!(res.header("content-length"), Some("300000"));
        let mut received = Vec::new();
        res.into_reader().read_to_end(&mut received).unwrap();
        assert!(
            received == content,
            "file body differs ({} bytes)",
            received.len()
        );
    }
    let _ = std::fs::remove_file(&*file);
}

fn head_response_has_no_body_but_keeps_content_length(backend: Backend) {
    let server = start(backend, config(), hello);
    let mut client = server.connect();
    client.send("HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
    let reply = client.head_response();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-length"), Some("13"));
    // Had the body been sent, it would stand where the next status line is read.
    client.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(client.response().text(), "Hello, World!");
}

fn head_response_keeps_the_gateways_content_length(backend: Backend) {
    // A gateway may answer HEAD with the GET's Content-Length and no body (as WSGI apps do).
    let server = start(backend, config(), |req: Request<'_>| {
        if req.method() == sgi::http::Method::HEAD {
            sgi::http::Response::builder()
                .header(header::CONTENT_LENGTH, "13")
                .body(Body::empty())
                .unwrap()
        } else {
            hello(req)
        }
    });
    let mut client = server.connect();
    client.send("HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
    let reply = client.head_response();
    // RFC 9110 §8.6: a Content-Length on a HEAD response is the length a GET would have got.
    assert_eq!(reply.header("content-length"), Some("13"), "{reply:?}");
    client.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(client.response().text(), "Hello, World!");
}

fn no_body_follows_204_or_304(backend: Backend) {
    let server = start(backend, config(), |req: Request<'_>| {
        let status = match req.uri().path() {
            "/204" => StatusCode::NO_CONTENT,
            "/304" => StatusCode::NOT_MODIFIED,
            _ => StatusCode::OK,
        };
        let mut res = Response::new(Body::from("only for 200"));
        *res.status_mut() = status;
        res
    });
    let mut client = server.connect();
    client.send("GET /204 HTTP/1.1\r\nHost: x\r\n\r\n");
    let reply = client.response();
    assert_eq!(reply.status, 204);
    assert_eq!(
        reply.header("content-length"),
        None,
        "204 has no Content-Length"
    );
    assert_eq!(reply.header("transfer-encoding"), None);
    client.send("GET /304 HTTP/1.1\r\nHost: x\r\n\r\n");
    let reply = client.response();
    assert_eq!(reply.status, 304);
    assert_eq!(reply.header("transfer-encoding"), None);
    client.send("GET /200 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(client.response().text(), "only for 200");
}

fn response_framing_is_decided_by_the_server(backend: Backend) {
    let server = start(backend, config(), |_req: Request<'_>| {
        sgi::http::Response::builder()
            .header(header::CONTENT_LENGTH, "99")
            .header(header::TRANSFER_ENCODING, "gzip")
            .header("x-kept", "yes")
            .body(Body::from("ok"))
            .unwrap()
    });
    let mut client = server.connect();
    client.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let reply = client.response();
    assert_eq!(reply.all("content-length"), ["2"]);
    assert_eq!(reply.header("transfer-encoding"), None);
    assert_eq!(reply.header("x-kept"), Some("yes"));
    assert_eq!(reply.text(), "ok");
    client.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(client.response().text(), "ok");
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` (RFC 9110 §5.6.7).
fn is_imf_fixdate(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    b.len() == 29
        && ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"].contains(&&s[..3])
        && &s[3..5] == ", "
        && digits(5..7)
        && [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ]
        .contains(&&s[8..11])
        && digits(12..16)
        && digits(17..19)
        && digits(20..22)
        && digits(23..25)
        && (b[7], b[11], b[16], b[19], b[22]) == (b' ', b' ', b' ', b':', b':')
        && &s[25..] == " GMT"
}

fn responses_carry_a_date_header(backend: Backend) {
    let server = start(backend, config(), hello);
    let res = response(agent().get(&server.url("/")).call());
    let date = res.header("date").expect("a Date on a 200");
    assert!(is_imf_fixdate(date), "{date:?}");
    // The server's own answers carry one too.
    let mut client = server.connect();
    client.send("GET / HTTP/1.1\r\n\r\n");
    let reply = client.response();
    assert_eq!(reply.status, 400);
    assert!(
        reply.header("date").is_some_and(is_imf_fixdate),
        "{:?}",
        reply.headers
    );
}

fn expect_100_continue_is_answered_before_the_body(backend: Backend) {
    let server = start(backend, config(), echo);
    let mut client = server.connect();
    client.send(
        "PUT /upload HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    );
    let interim = client.response();
    assert_eq!(interim.status, 100);
    client.send("hello");
    let reply = client.response();
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (200, "PUT /upload\nhello")
    );
    assert!(!reply.closes());
}

fn expected_body_left_unread_closes_without_100_continue(backend: Backend) {
    let server = start(backend, config(), target);
    let mut client = server.connect();
    client.send(
        "PUT /ignored HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    );
    // The client never sends the body; the final answer must not wait for it.
    let reply = client.response();
    assert_eq!((reply.status, reply.text().as_str()), (200, "/ignored"));
    assert!(
        reply.closes(),
        "the unsent body cannot be skipped: {:?}",
        reply.headers
    );
    client.expect_closed();
}

fn a_read_into_an_empty_buffer_asks_the_client_for_nothing(backend: Backend) {
    // `read(&mut [])` returns 0 at once (as `Read` has it): no `100 Continue`, no wait for
    // a body the client holds back until it hears one.
    let server = start(backend, config(), |mut req: Request<'_>| {
        let n = io::Read::read(req.body_mut(), &mut []).expect("an empty read");
        Response::new(Body::from(format!("read {n}")))
    });
    let mut client = server.connect();
    client.send("PUT /x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    let reply = client.response();
    assert_eq!((reply.status, reply.text().as_str()), (200, "read 0"));
}

fn ignores_100_continue_from_an_http10_client(backend: Backend) {
    let body = Duration::from_millis(500);
    let server = start(backend, with_timeouts(|t| t.body = body), echo);
    // An HTTP/1.0 client cannot understand 100 (RFC 9110 §10.1.1): it sends the body at once.
    let mut client = server.connect();
    client.send("PUT /old HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello");
    let reply = client.response();
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (200, "PUT /old\nhello")
    );
    // One that holds its body back hears nothing until the body timeout's 408: a `100`
    // would come first, as soon as the server waits for the body.
    let mut client = server.connect();
    client.send("PUT /old HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    assert_eq!(client.response().status, 408);
}

fn interim_100_continue_never_overtakes_an_earlier_pipelined_response(backend: Backend) {
    let (entered, gateway_entered) = std::sync::mpsc::channel();
    let server = start(backend, config(), move |req: Request<'_>| {
        if req.uri().path() == "/b" {
            let _ = entered.send(());
        }
        echo(req)
    });
    let mut client = server.connect();
    client.send(
        "GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
         PUT /b HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    );
    // The body goes out only once /b's gateway runs, so the server has none of it yet.
    gateway_entered
        .recv_timeout(support::PATIENCE)
        .expect("the gateway for /b runs");
    client.send("hello");
    // Responses go in request order (RFC 9112 §9.3.2); a 1xx before /a's final response
    // would be taken as /a's.
    let first = client.response();
    assert_eq!(
        (first.status, first.text().as_str()),
        (200, "GET /a\n"),
        "the first response is /a's"
    );
    let mut second = client.response();
    if second.status == 100 {
        second = client.response();
    }
    assert_eq!(
        (second.status, second.text().as_str()),
        (200, "PUT /b\nhello")
    );
}

fn unread_body_is_drained_before_the_next_request(backend: Backend) {
    let server = start(backend, config(), target);
    let mut client = server.connect();
    // Bodies that look like requests: read as requests, they would be answered.
    let inside = "GET /inside HTTP/1.1\r\nHost: x\r\n\r\n";
    client.send(format!(
        "POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{inside}\
         POST /second HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
         {:x}\r\n{inside}\r\n0\r\n\r\n\
         GET /third HTTP/1.1\r\nHost: x\r\n\r\n",
        inside.len(),
        inside.len(),
    ));
    for expected in ["/first", "/second", "/third"] {
        let reply = client.response();
        assert_eq!(reply.text(), expected);
        assert!(!reply.closes());
    }
}

fn unread_body_too_large_to_drain_closes_after_the_response(backend: Backend) {
    const LEN: usize = 4 << 20;
    let server = start(backend, config(), target);
    let mut client = server.connect();
    client.send(format!(
        "POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: {LEN}\r\n\r\n"
    ));
    let mut upload = client.try_clone_stream();
    let uploader = std::thread::spawn(move || {
        let piece = vec![b'x'; 64 * 1024];
        (0..LEN / piece.len()).try_for_each(|_| upload.write_all(&piece))
    });
    let reply = client.response();
    assert_eq!((reply.status, reply.text().as_str()), (200, "/big"));
    assert!(reply.closes(), "{:?}", reply.headers);
    // The server reads and drops the rest of the upload (a lingering close) instead of
    // resetting the connection under the client's feet, which could destroy the response.
    uploader
        .join()
        .unwrap()
        .expect("the upload is drained, not reset");
    client.expect_closed();
}

fn a_body_cut_short_still_lets_earlier_pipelined_answers_out(backend: Backend) {
    let server = start(backend, config(), echo);
    let mut client = server.connect();
    // A GET, then a POST whose body ends early: the client sends half and stops sending.
    client.send(
        "GET /first HTTP/1.1\r\nHost: x\r\n\r\n\
         POST /second HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc",
    );
    client
        .try_clone_stream()
        .shutdown(std::net::Shutdown::Write)
        .unwrap();
    // The POST gets no answer (its request never ended), but the GET's answer, held back to
    // go out with the next one, is still sent.
    assert_eq!(client.response().text(), "GET /first\n");
    client.expect_closed();
}

fn gateway_panic_is_answered_500_and_the_server_goes_on(backend: Backend) {
    let server = start(backend, config(), |req: Request<'_>| {
        if req.uri().path() == "/panic" {
            panic!("a gateway panic the test asked for");
        }
        Response::new(Body::from("still here"))
    });
    let agent = agent();
    let res = response(agent.get(&server.url("/panic")).call());
    assert_eq!(res.status(), 500);
    assert_eq!(res.header("connection"), Some("close"));
    let res = response(agent.get(&server.url("/")).call());
    assert_eq!(res.status(), 200);
    assert_eq!(res.into_string().unwrap(), "still here");
}

fn failing_iterator_body_aborts_the_connection(backend: Backend) {
    let server = start(backend, config(), fails_midway);
    let mut client = server.connect();
    client.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let raw = client.read_to_end();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text:?}");
    assert!(text.contains("transfer-encoding: chunked\r\n"), "{text:?}");
    assert!(text.ends_with("\r\n\r\n7\r\npartial\r\n"), "{text:?}");
    assert!(
        !text.contains("\r\n0\r\n\r\n"),
        "the body must not look complete: {text:?}"
    );
}

fn a_body_failing_before_its_first_byte_is_answered_500(backend: Backend) {
    let server = start(backend, config(), |req: Request<'_>| {
        let fails = || Err(io::Error::other("the template failed"));
        let body = match req.uri().path() {
            "/iterator" => Body::from_iter([fails()]),
            _ => Body::from_iter(std::iter::once_with(|| -> io::Result<bytes::Bytes> {
                panic!("a body panic the test asked for")
            })),
        };
        Response::new(body)
    });
    for path in ["/iterator", "/panic"] {
        let mut client = server.connect();
        client.send(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
        // Nothing of the answer had left, so it is replaced whole.
        let reply = client.response();
        assert_eq!(reply.status, 500, "{path}: {reply:?}");
        assert!(reply.closes(), "{path}: {reply:?}");
        client.expect_closed();
    }
}

fn panicking_body_reader_aborts_the_connection_and_frees_it(backend: Backend) {
    struct Panics(bool);
    impl Read for Panics {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if std::mem::replace(&mut self.0, true) {
                panic!("a body reader panic the test asked for");
            }
            buf[..7].copy_from_slice(b"partial");
            Ok(7)
        }
    }
    let server = start(backend, config(), |req: Request<'_>| {
        match req.uri().path() {
            "/panics" => Response::new(Body::from_reader(Panics(false), None)),
            _ => Response::new(Body::from("fine")),
        }
    });
    let mut client = server.connect();
    client.send("GET /panics HTTP/1.1\r\nHost: x\r\n\r\n");
    let text = String::from_utf8_lossy(&client.read_to_end()).into_owned();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text:?}");
    assert!(
        text.ends_with("\r\n7\r\npartial\r\n"),
        "the body must not look complete: {text:?}"
    );
    drop(client);
    // The server goes on, and the connection is gone from its books.
    let mut other = server.connect();
    other.send("GET /fine HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(other.response().text(), "fine");
    drop(other);
    support::wait_until("every connection is closed", || {
        server.handle.stats().open_connections == 0
    });
}

fn streamed_body_shorter_than_its_content_length_aborts_the_connection(backend: Backend) {
    let server = start(backend, config(), |_req: Request<'_>| {
        sgi::http::Response::builder()
            .header(header::CONTENT_LENGTH, "10")
            .body(Body::from_iter(vec![Ok("only4".into())]))
            .unwrap()
    });
    let mut client = server.connect();
    client.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    match client.try_response(false) {
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}"),
        Ok(reply) => panic!("a short body passed for a whole one: {reply:?}"),
    }
}
