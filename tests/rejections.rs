//! Requests that break the rules, over real sockets. Each is answered with its status and
//! `Connection: close`, and the connection then closes. A valid request sent right behind
//! the bad one is never answered: bytes after a request the server could not frame must not
//! be read as a request (that is how requests are smuggled past a proxy).

mod support;

use sgi::Config;
use support::{config, echo, start, Backend, Running};

on_every_backend!(
    rejects_an_http11_request_without_host,
    rejects_more_than_one_host,
    rejects_an_invalid_host,
    rejects_content_length_with_transfer_encoding,
    rejects_an_invalid_content_length,
    rejects_transfer_encoding_not_ending_in_chunked,
    rejects_transfer_encoding_in_http10,
    rejects_an_invalid_chunk_size,
    rejects_chunk_data_without_its_crlf,
    rejects_obsolete_line_folding,
    rejects_whitespace_between_field_name_and_colon,
    rejects_whitespace_before_the_first_field,
    rejects_nul_or_bare_cr_in_a_field,
    rejects_a_malformed_request_line,
    answers_414_for_a_request_line_over_the_limit,
    answers_431_for_too_many_header_fields,
    answers_431_for_a_header_field_over_the_limit,
    answers_431_for_a_header_field_over_the_limit_before_it_ends,
    answers_431_for_a_head_over_the_limit,
    answers_431_for_trailer_fields_over_the_limits,
    answers_413_for_a_declared_body_over_max_body,
    answers_413_for_a_chunked_body_over_max_body,
    answers_417_for_an_unknown_expectation,
    answers_501_for_a_transfer_coding_other_than_chunked,
    answers_505_for_an_unsupported_http_version,
    rejection_behind_a_pipelined_request_is_answered_after_it,
    rejections_of_head_requests_carry_no_content,
    accepts_a_request_exactly_at_its_limits,
);

/// A valid request that must never be answered when it follows a rejected one.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

/// Sends `bad` with [`SMUGGLED`] right behind it, on a fresh connection, and checks that
/// only the rejection comes back.
fn assert_rejected(server: &Running, bad: &str, status: u16) {
    let mut client = server.connect();
    client.send(format!("{bad}{SMUGGLED}"));
    let reply = client.response();
    assert_eq!(reply.status, status, "{bad:?} got {reply:?}");
    assert!(reply.closes(), "{bad:?}: no Connection: close in {reply:?}");
    client.expect_closed();
}

fn rejects(backend: Backend, bad: &str, status: u16) {
    assert_rejected(&start(backend, config(), echo), bad, status);
}

fn rejects_each(backend: Backend, config: Config, bad: &[&str], status: u16) {
    let server = start(backend, config, echo);
    for bad in bad {
        assert_rejected(&server, bad, status);
    }
}

fn rejects_an_http11_request_without_host(backend: Backend) {
    rejects(backend, "GET / HTTP/1.1\r\n\r\n", 400);
}

fn rejects_more_than_one_host(backend: Backend) {
    rejects(backend, "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400);
}

fn rejects_an_invalid_host(backend: Backend) {
    // Host = uri-host [ ":" port ], port = *DIGIT, no userinfo (RFC 9110 §7.2, 9112 §3.2).
    let bad = [
        "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x:port\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: user@x\r\n\r\n",
    ];
    rejects_each(backend, config(), &bad, 400);
}

fn rejects_content_length_with_transfer_encoding(backend: Backend) {
    rejects(
        backend,
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n\
         0\r\n\r\n",
        400,
    );
}

fn rejects_an_invalid_content_length(backend: Backend) {
    let bad = [
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x5\r\n\r\nhello",
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 5\r\n\r\nhello",
    ];
    rejects_each(backend, config(), &bad, 400);
}

fn rejects_transfer_encoding_not_ending_in_chunked(backend: Backend) {
    let bad = [
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        // An empty element: no framing to some parsers.
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked,\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ];
    rejects_each(backend, config(), &bad, 400);
}

fn rejects_transfer_encoding_in_http10(backend: Backend) {
    rejects(
        backend,
        "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    );
}

fn rejects_an_invalid_chunk_size(backend: Backend) {
    let head = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    let bad = [
        format!("{head}zz\r\nhello\r\n0\r\n\r\n"),
        format!("{head}\r\nhello\r\n0\r\n\r\n"),
        format!("{head}0x5\r\nhello\r\n0\r\n\r\n"),
        format!("{head}-5\r\nhello\r\n0\r\n\r\n"),
        format!("{head}10000000000000005\r\nhello\r\n0\r\n\r\n"),
        format!("{head}5\nhello\r\n0\r\n\r\n"),
        format!("{head}5;a\0b\r\nhello\r\n0\r\n\r\n"),
    ];
    rejects_each(
        backend,
        config(),
        &bad.iter().map(String::as_str).collect::<Vec<_>>(),
        400,
    );
}

fn rejects_chunk_data_without_its_crlf(backend: Backend) {
    // Two other bytes where the CRLF belongs: a parser that skipped any two would find a
    // whole body, and then the request smuggled behind it.
    rejects(
        backend,
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXX0\r\n\r\n",
        400,
    );
}

fn rejects_obsolete_line_folding(backend: Backend) {
    rejects(
        backend,
        "GET / HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n",
        400,
    );
}

fn rejects_whitespace_between_field_name_and_colon(backend: Backend) {
    let bad = [
        "GET / HTTP/1.1\r\nHost : x\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n",
    ];
    rejects_each(backend, config(), &bad, 400);
}

fn rejects_whitespace_before_the_first_field(backend: Backend) {
    // RFC 9112 §2.2 allows ignoring the line instead; here, ignoring it leaves no Host.
    rejects(backend, "GET / HTTP/1.1\r\n Host: x\r\n\r\n", 400);
}

fn rejects_nul_or_bare_cr_in_a_field(backend: Backend) {
    let bad = [
        "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rContent-Length: 5\r\n\r\nhello",
    ];
    rejects_each(backend, config(), &bad, 400);
}

fn rejects_a_malformed_request_line(backend: Backend) {
    let bad = [
        "GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /\r\nHost: x\r\n\r\n",
        "G(T / HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET foo HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n",
        "GET / HTTP/1.1x\r\nHost: x\r\n\r\n",
        "GET /a\0b HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /a\rb HTTP/1.1\r\nHost: x\r\n\r\n",
    ];
    rejects_each(backend, config(), &bad, 400);
}

fn answers_414_for_a_request_line_over_the_limit(backend: Backend) {
    // One byte over the default 4094.
    let target = "a".repeat(4095 - "GET / HTTP/1.1".len());
    rejects(
        backend,
        &format!("GET /{target} HTTP/1.1\r\nHost: x\r\n\r\n"),
        414,
    );
}

fn answers_431_for_too_many_header_fields(backend: Backend) {
    // Host and 100 more: one over the default 100.
    let fields: String = (0..100).map(|i| format!("X-{i}: v\r\n")).collect();
    rejects(
        backend,
        &format!("GET / HTTP/1.1\r\nHost: x\r\n{fields}\r\n"),
        431,
    );
}

fn answers_431_for_a_header_field_over_the_limit(backend: Backend) {
    // One byte over the default 8190, CRLF included.
    let value = "v".repeat(8191 - "X-Big: \r\n".len());
    rejects(
        backend,
        &format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {value}\r\n\r\n"),
        431,
    );
}

fn answers_431_for_a_header_field_over_the_limit_before_it_ends(backend: Backend) {
    // No line end comes: the answer must not wait for the head timeout (408).
    let server = start(backend, config(), echo);
    let mut client = server.connect();
    let value = "v".repeat(9000);
    client.send(format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {value}"));
    let reply = client.response();
    assert_eq!(reply.status, 431, "{reply:?}");
    assert!(reply.closes(), "{reply:?}");
    client.expect_closed();
}

fn answers_431_for_a_head_over_the_limit(backend: Backend) {
    // Ten fields under the field limit add up to more than the default 64 KiB head.
    let value = "v".repeat(8000);
    let fields: String = (0..10).map(|i| format!("X-{i}: {value}\r\n")).collect();
    rejects(
        backend,
        &format!("GET / HTTP/1.1\r\nHost: x\r\n{fields}\r\n"),
        431,
    );
}

fn answers_431_for_trailer_fields_over_the_limits(backend: Backend) {
    let chunked =
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n";
    let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
    // One field line of 8,191 bytes with its CRLF, one over max_header_field.
    let long = format!("X-Big: {}\r\n", "v".repeat(8191 - "X-Big: \r\n".len()));
    rejects_each(
        backend,
        config(),
        &[
            &format!("{chunked}{many}\r\n"),
            &format!("{chunked}{long}\r\n"),
        ],
        431,
    );
}

fn answers_413_for_a_declared_body_over_max_body(backend: Backend) {
    let body = format!("{SMUGGLED}{}", "x".repeat(100 - SMUGGLED.len()));
    rejects_each(
        backend,
        config().max_body(Some(16)),
        &[&format!(
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{body}"
        )],
        413,
    );
}

fn answers_413_for_a_chunked_body_over_max_body(backend: Backend) {
    rejects_each(
        backend,
        config().max_body(Some(16)),
        &[
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
           a\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n",
        ],
        413,
    );
}

fn answers_417_for_an_unknown_expectation(backend: Backend) {
    rejects(
        backend,
        "POST / HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\nContent-Length: 5\r\n\r\nhello",
        417,
    );
}

fn answers_501_for_a_transfer_coding_other_than_chunked(backend: Backend) {
    rejects(
        backend,
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
    );
}

fn answers_505_for_an_unsupported_http_version(backend: Backend) {
    rejects(backend, "GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505);
}

fn rejection_behind_a_pipelined_request_is_answered_after_it(backend: Backend) {
    let server = start(backend, config(), echo);
    let mut client = server.connect();
    client.send(format!(
        "GET /good HTTP/1.1\r\nHost: x\r\n\r\nGET /bad HTTP/1.1\r\n\r\n{SMUGGLED}"
    ));
    let good = client.response();
    assert_eq!((good.status, good.text().as_str()), (200, "GET /good\n"));
    let bad = client.response();
    assert_eq!(bad.status, 400);
    assert!(bad.closes(), "{bad:?}");
    client.expect_closed();
}

fn rejections_of_head_requests_carry_no_content(backend: Backend) {
    let server = start(backend, config().max_body(Some(16)), echo);
    for bad in [
        "HEAD / HTTP/1.1\r\n\r\n",
        "HEAD / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n",
    ] {
        let mut client = server.connect();
        client.send(bad);
        let reply = client.head_response();
        assert!(matches!(reply.status, 400 | 413), "{bad:?}: {reply:?}");
        // RFC 9110 §9.3.2: no content follows, not even for the server's own errors.
        client.expect_closed();
    }
}

fn accepts_a_request_exactly_at_its_limits(backend: Backend) {
    let server = start(backend, config().max_body(Some(16)), echo);
    // A request line of 4094 bytes; 100 fields (Host, 97 of these, X-Big, Content-Length);
    // a field line of 8190 bytes with its CRLF; a body of max_body bytes.
    let target = format!("/{}", "a".repeat(4094 - "POST / HTTP/1.1".len()));
    let fields: String = (0..97).map(|i| format!("X-{i}: v\r\n")).collect();
    let big = "v".repeat(8190 - "X-Big: \r\n".len());
    let body = "0123456789abcdef";
    let mut client = server.connect();
    client.send(format!(
        "POST {target} HTTP/1.1\r\nHost: x\r\n{fields}X-Big: {big}\r\n\
         Content-Length: 16\r\n\r\n{body}"
    ));
    let reply = client.response();
    assert_eq!(reply.status, 200, "{}", reply.text());
    // 100 trailer fields, one of them a line of 8190 bytes with its CRLF.
    let trailers: String = (0..99).map(|i| format!("X-{i}: v\r\n")).collect();
    client.send(format!(
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
         10\r\n{body}\r\n0\r\n{trailers}X-Big: {big}\r\n\r\n"
    ));
    let reply = client.response();
    assert_eq!(
        (reply.status, reply.text()),
        (200, format!("POST /\n{body}"))
    );
}
