//! The access log (target `sgi::access`), captured through a real `tracing` subscriber. This
//! file has its own test binary because the subscriber is process-wide.

mod support;

use sgi::Request;
use support::{
    agent, config, echo, response, start, target, wait_until, Backend, CapturedLog, Gate,
};

on_every_backend!(
    access_log_has_a_line_per_request,
    access_log_can_be_turned_off,
    access_log_does_not_change_what_clients_receive,
    access_log_has_a_line_for_each_request_the_server_rejects,
    every_request_ends_served_rejected_or_aborted_once_in_the_log_and_the_stats,
    a_rejected_request_with_a_readable_request_line_is_logged_with_it,
    an_answer_cut_short_is_logged_aborted_with_the_bytes_that_went_out,
    answers_held_back_for_a_pipelined_request_that_never_left_are_logged_aborted,
    a_held_answer_taken_whole_is_served_though_the_next_answer_is_cut,
    a_bodiless_answer_that_cannot_be_sent_logs_no_body_bytes,
    a_panic_past_the_gateway_still_tells_the_request_once,
    an_extension_panicking_when_dropped_leaves_a_whole_answer_served,
    a_large_whole_body_cut_midway_logs_what_went_out,
    a_mounted_request_is_logged_with_its_target_as_sent,
);

/// Where the log stands now: lines for a client address are looked for after it, since a
/// client port can be reused by a later test in the same run.
fn log_mark() -> usize {
    access_log().text().len()
}

/// The logged lines after `mark` that mention `needle`.
fn lines_since(mark: usize, needle: &str) -> Vec<String> {
    access_log().text()[mark..]
        .lines()
        .filter(|line| line.contains(needle))
        .map(str::to_string)
        .collect()
}

/// The first line logged after `mark` for the client at `addr`, once there is one.
fn first_line_of(mark: usize, addr: std::net::SocketAddr) -> String {
    let peer = format!("peer={addr} ");
    wait_until(&format!("a line for {addr}"), || {
        !lines_since(mark, &peer).is_empty()
    });
    lines_since(mark, &peer).remove(0)
}

/// The access line of the request to `target`, once there is exactly one.
fn line_for(target: &str) -> String {
    let needle = format!("target={target} ");
    wait_until(&format!("one access line for {target}"), || {
        lines_with(&needle).len() == 1
    });
    lines_with(&needle).remove(0)
}

fn every_request_ends_served_rejected_or_aborted_once_in_the_log_and_the_stats(backend: Backend) {
    access_log();
    let tag = format!("/outcomes-{backend:?}");
    let server = start(backend, config().max_body(Some(10)), echo);
    // Served.
    let mut client = server.connect();
    client.send(format!("GET {tag}/served HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert_eq!(client.response().status, 200);
    // Rejected while the gateway reads the body: a chunk takes it over max_body.
    let mut over = server.connect();
    over.send(format!(
        "POST {tag}/over HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
         5\r\nhello\r\n9\r\n123456789\r\n0\r\n\r\n"
    ));
    assert_eq!(over.response().status, 413);
    // Aborted: the client leaves while the gateway waits for the rest of the body.
    let mut gone = server.connect();
    gone.send(format!(
        "POST {tag}/gone HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc"
    ));
    drop(gone);

    let served = line_for(&format!("{tag}/served"));
    assert!(
        !served.contains("rejected") && !served.contains("aborted"),
        "{served}"
    );
    let over = line_for(&format!("{tag}/over"));
    assert!(
        over.contains("status=413") && over.contains("rejected=true"),
        "{over}"
    );
    assert!(over.contains("method=POST"), "{over}");
    let gone = line_for(&format!("{tag}/gone"));
    assert!(
        gone.contains("aborted=true") && gone.contains("bytes=0"),
        "{gone}"
    );
    let stats = server.handle.stats();
    assert_eq!(
        (
            stats.requests_served,
            stats.rejected_requests,
            stats.aborted_requests
        ),
        (1, 1, 1),
        "{stats:?}"
    );
}

fn a_rejected_request_with_a_readable_request_line_is_logged_with_it(backend: Backend) {
    access_log();
    let tag = format!("/rejected-line-{backend:?}");
    let server = start(backend, config().max_body(Some(10)), echo);
    let mut client = server.connect();
    // Refused from its head alone (413 before any gateway), yet the line is readable.
    client.send(format!(
        "PUT {tag}?x=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n"
    ));
    assert_eq!(client.response().status, 413);
    let line = line_for(&format!("{tag}?x=1"));
    assert!(
        line.contains("method=PUT") && line.contains("rejected=true"),
        "{line}"
    );
    // A request line that does not parse is logged as `-`.
    let mark = log_mark();
    let mut bad = server.connect();
    bad.send("GET /a b c HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(bad.response().status, 400);
    let line = first_line_of(mark, bad.local_addr());
    assert!(line.contains("method=- target=- "), "{line}");
}

fn an_answer_cut_short_is_logged_aborted_with_the_bytes_that_went_out(backend: Backend) {
    access_log();
    let tag = format!("/cut-{backend:?}");
    let server = start(backend, config(), |req: Request<'_>| {
        let path = req.uri().path().to_string();
        if path.ends_with("/whole") {
            // Whole in memory: on the pool, what the client does not take is written by the
            // event loop, after the worker has moved on.
            return sgi::Response::new(sgi::Body::from(vec![b'x'; 32 << 20]));
        }
        // Streamed: 64 KiB, then the body fails.
        let pieces = (0..2).map(|i| match i {
            0 => Ok(vec![b'y'; 64 << 10].into()),
            _ => Err(std::io::Error::other("the stream broke")),
        });
        sgi::Response::new(sgi::Body::from_iter(pieces))
    });
    let mut broken = server.connect();
    broken.send(format!("GET {tag}/stream HTTP/1.1\r\nHost: x\r\n\r\n"));
    let _ = broken.read_to_end();
    let line = line_for(&format!("{tag}/stream"));
    assert!(
        line.contains("aborted=true") && line.contains("bytes=65536 "),
        "{line}"
    );

    // The client takes the head and a little, then resets.
    let mut reader = server.connect();
    reader.send(format!("GET {tag}/whole HTTP/1.1\r\nHost: x\r\n\r\n"));
    reader.wait_for(b"xxxx", support::PATIENCE);
    reader.reset();
    let line = line_for(&format!("{tag}/whole"));
    assert!(
        line.contains("status=200") && line.contains("aborted=true"),
        "{line}"
    );
    let bytes: u64 = line
        .split("bytes=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(bytes < 32 << 20, "{line}");
    assert_eq!(server.handle.stats().aborted_requests, 2);
}

/// The process-wide log of `sgi::access` lines, installed on first use.
fn access_log() -> &'static CapturedLog {
    CapturedLog::install("sgi::access=info")
}

/// The logged lines that mention `needle`.
fn lines_with(needle: &str) -> Vec<String> {
    access_log()
        .text()
        .lines()
        .filter(|line| line.contains(needle))
        .map(str::to_string)
        .collect()
}

fn access_log_has_a_line_per_request(backend: Backend) {
    access_log();
    let tag = format!("per-request-{backend:?}");
    let server = start(backend, config(), echo);
    let res = response(agent().get(&server.url(&format!("/{tag}/get?q=1"))).call());
    assert_eq!(res.status(), 200);
    let mut client = server.connect();
    client.send(format!(
        "HEAD /{tag}/head HTTP/1.1\r\nHost: x\r\n\r\n\
         POST /{tag}/post HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
    ));
    assert_eq!(client.head_response().status, 200);
    assert_eq!(client.response().text(), format!("POST /{tag}/post\nabc"));
    wait_until("three access lines are logged", || {
        lines_with(&format!("/{tag}/")).len() == 3
    });
    for (method, path) in [("GET", "get?q=1"), ("HEAD", "head"), ("POST", "post")] {
        let lines = lines_with(&format!("target=/{tag}/{path} "));
        assert_eq!(lines.len(), 1, "{method} {path}: {lines:?}");
        let line = &lines[0];
        assert!(line.contains("sgi::access"), "{line}");
        assert!(line.contains(&format!("method={method} ")), "{line}");
        assert!(line.contains("status=200"), "{line}");
    }
}

/// Under `Config::mount` the gateway sees the path without the prefix; the log keeps the
/// target the client sent.
fn a_mounted_request_is_logged_with_its_target_as_sent(backend: Backend) {
    access_log();
    let prefix = format!("/mounted-{backend:?}");
    let server = start(backend, config().mount(&prefix), target);
    let res = response(agent().get(&server.url(&format!("{prefix}/x?q=1"))).call());
    assert_eq!(res.into_string().unwrap(), "/x?q=1");
    let line = line_for(&format!("{prefix}/x?q=1"));
    assert!(line.contains("status=200"), "{line}");
}

fn access_log_has_a_line_for_each_request_the_server_rejects(backend: Backend) {
    access_log();
    let server = start(backend, config(), target);
    // No `Host`: rejected before any gateway sees it.
    let mark = log_mark();
    let mut client = server.connect();
    client.send("GET /no-host HTTP/1.1\r\n\r\n");
    assert_eq!(client.response().status, 400);
    // The access line names the client by its plain address, as for requests served.
    let line = first_line_of(mark, client.local_addr());
    assert!(line.contains("status=400"), "{line}");
    assert!(line.contains("rejected=true"), "{line}");
    // A request that is served is logged with the same plain address.
    let mut served = server.connect();
    served.send("GET /served HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(served.response().status, 200);
    let peer = format!("peer={} ", served.local_addr());
    wait_until("the served request is logged", || {
        lines_since(mark, &peer)
            .iter()
            .any(|l| l.contains("status=200"))
    });
}

#[test]
fn access_log_has_a_line_for_each_503_the_dev_server_sheds() {
    access_log();
    let gate = Gate::new();
    let server = start(Backend::Dev, config().max_connections(1), {
        let gate = gate.clone();
        move |req: Request<'_>| {
            gate.pass();
            target(req)
        }
    });
    let mut held = server.connect();
    held.send("GET /held HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    gate.wait_for_waiting(1);
    let mark = log_mark();
    let mut over = server.connect();
    over.send("GET /over HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(over.response().status, 503);
    let peer = format!("peer={} ", over.local_addr());
    wait_until("the 503 is logged", || {
        lines_since(mark, &peer)
            .iter()
            .any(|l| l.contains("status=503"))
    });
    gate.open();
    assert_eq!(held.response().text(), "/held");
}

fn access_log_can_be_turned_off(backend: Backend) {
    access_log();
    let tag = format!("turned-off-{backend:?}");
    let quiet = start(backend, config().access_log(false), target);
    let loud = start(backend, config(), target);
    let agent = agent();
    let res = response(agent.get(&quiet.url(&format!("/{tag}/quiet"))).call());
    assert_eq!(res.into_string().unwrap(), format!("/{tag}/quiet"));
    // A request's line is logged before the next request on its connection is served: once
    // a second is answered, the first one's line would be there.
    let res = response(agent.get(&quiet.url(&format!("/{tag}/quiet-after"))).call());
    assert_eq!(res.status(), 200);
    // The same from a server that logs, so the log is known to be captured.
    let res = response(agent.get(&loud.url(&format!("/{tag}/loud"))).call());
    assert_eq!(res.status(), 200);
    wait_until("the loud request is logged", || {
        !lines_with(&format!("/{tag}/loud")).is_empty()
    });
    assert_eq!(lines_with(&format!("/{tag}/quiet")), Vec::<String>::new());
}

/// What a client receives for a pipelined batch, `Date` lines removed.
fn transcript(backend: Backend, log: bool) -> String {
    let server = start(backend, config().access_log(log), |req: Request<'_>| {
        if req.uri().path() == "/panic" {
            panic!("a gateway panic the test asked for");
        }
        echo(req)
    });
    let mut client = server.connect();
    client.send(
        "GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
         HEAD /a HTTP/1.1\r\nHost: x\r\n\r\n\
         POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
         GET /panic HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    let mut other = server.connect();
    other.send("GET / HTTP/1.1\r\n\r\n");
    let mut raw = client.read_to_end();
    raw.extend(other.read_to_end());
    String::from_utf8_lossy(&raw)
        .split_inclusive("\r\n")
        .filter(|line| !line.to_ascii_lowercase().starts_with("date:"))
        .collect()
}

fn access_log_does_not_change_what_clients_receive(backend: Backend) {
    access_log();
    let logged = transcript(backend, true);
    let unlogged = transcript(backend, false);
    assert_eq!(logged, unlogged);
    // Bodies do not end in a newline: find status lines wherever they start.
    let statuses: Vec<&str> = logged
        .match_indices("HTTP/1.1 ")
        .map(|(at, _)| &logged[at..at + 12])
        .collect();
    assert_eq!(
        statuses,
        [
            "HTTP/1.1 200",
            "HTTP/1.1 200",
            "HTTP/1.1 200",
            "HTTP/1.1 500",
            "HTTP/1.1 400"
        ],
        "{logged}"
    );
}

fn answers_held_back_for_a_pipelined_request_that_never_left_are_logged_aborted(backend: Backend) {
    access_log();
    let gate = Gate::new();
    let tag = format!("/held-{backend:?}");
    let server = start(backend, config(), {
        let gate = gate.clone();
        move |req: Request<'_>| {
            if req.uri().path().ends_with("/slow") {
                gate.pass();
            }
            sgi::Response::new(sgi::Body::from("x".repeat(100)))
        }
    });
    let mut client = server.connect();
    client.send(format!(
        "GET {tag}/a HTTP/1.1\r\nHost: x\r\n\r\nGET {tag}/slow HTTP/1.1\r\nHost: x\r\n\r\n"
    ));
    gate.wait_for_waiting(1);
    client.reset();
    gate.open();
    // Neither answer left: /a was held to go out with /slow's, and that write failed.
    for path in ["a", "slow"] {
        let line = line_for(&format!("{tag}/{path}"));
        assert!(
            line.contains("aborted=true") && line.contains("bytes=0 "),
            "{line}"
        );
    }
}

fn total(stats: &sgi::Stats) -> u64 {
    stats.requests_served + stats.rejected_requests + stats.aborted_requests
}

fn bytes_of(line: &str) -> u64 {
    let after = line.split("bytes=").nth(1).expect("a bytes field");
    after.split(' ').next().unwrap().parse().unwrap()
}

fn a_held_answer_taken_whole_is_served_though_the_next_answer_is_cut(backend: Backend) {
    access_log();
    let tag = format!("/held-whole-{backend:?}");
    let server = start(backend, config(), |req: Request<'_>| {
        let size = if req.uri().path().ends_with("/big") {
            16 << 20
        } else {
            100
        };
        sgi::Response::new(sgi::Body::from(vec![b'y'; size]))
    });
    let mut client = server.connect();
    client.send(format!(
        "GET {tag}/small HTTP/1.1\r\nHost: x\r\n\r\nGET {tag}/big HTTP/1.1\r\nHost: x\r\n\r\n"
    ));
    assert_eq!(client.response().body.len(), 100);
    client.wait_for(b"yyyy", support::PATIENCE);
    client.reset();
    wait_until("both are counted", || total(&server.handle.stats()) == 2);
    let small = line_for(&format!("{tag}/small"));
    assert!(
        !small.contains("aborted") && small.contains("bytes=100 "),
        "{small}"
    );
    let big = line_for(&format!("{tag}/big"));
    assert!(
        big.contains("aborted=true") && bytes_of(&big) < 16 << 20,
        "{big}"
    );
    let stats = server.handle.stats();
    assert_eq!(
        (stats.requests_served, stats.aborted_requests),
        (1, 1),
        "{stats:?}"
    );
}

fn a_bodiless_answer_that_cannot_be_sent_logs_no_body_bytes(backend: Backend) {
    access_log();
    let gate = Gate::new();
    let tag = format!("/bodiless-{backend:?}");
    let server = start(backend, config(), {
        let gate = gate.clone();
        move |req: Request<'_>| {
            if req.method() == sgi::http::Method::HEAD {
                gate.pass();
            }
            sgi::Response::new(sgi::Body::from(vec![b'y'; 20_000]))
        }
    });
    let mut client = server.connect();
    client.send(format!("GET {tag}/get HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert_eq!(client.response().body.len(), 20_000);
    client.send(format!("HEAD {tag}/head HTTP/1.1\r\nHost: x\r\n\r\n"));
    gate.wait_for_waiting(1);
    client.reset();
    gate.open();
    let head = line_for(&format!("{tag}/head"));
    assert!(
        head.contains("aborted=true") && head.contains("bytes=0 "),
        "{head}"
    );
}

fn a_panic_past_the_gateway_still_tells_the_request_once(backend: Backend) {
    access_log();
    struct PanicsOnDrop;
    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            panic!("a response extension's drop panic the test asked for");
        }
    }
    // An extension only needs to be `Clone`; this one panics when the response is dropped.
    let server = start(backend, config(), |_req: Request<'_>| {
        let mut res = sgi::Response::new(sgi::Body::from("ok"));
        res.extensions_mut()
            .insert(std::sync::Arc::new(PanicsOnDrop));
        res
    });
    let mut client = server.connect();
    let target = format!("/ext-{backend:?}");
    client.send(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n"));
    let _ = client.try_response(false);
    line_for(&target);
    wait_until("and counted", || total(&server.handle.stats()) == 1);
}

fn an_extension_panicking_when_dropped_leaves_a_whole_answer_served(backend: Backend) {
    access_log();
    struct PanicsOnDrop;
    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            panic!("an extension's drop panic the test asked for");
        }
    }
    let tag = format!("/ext-drop-{backend:?}");
    let server = start(backend, config(), |req: Request<'_>| {
        let mut res = sgi::Response::new(sgi::Body::from("ok"));
        if req.uri().path().ends_with("/panics") {
            res.extensions_mut()
                .insert(std::sync::Arc::new(PanicsOnDrop));
        }
        res
    });
    // Alone, and behind a held answer in one pipelined batch: both go out whole.
    let mut client = server.connect();
    client.send(format!(
        "GET {tag}/panics HTTP/1.1\r\nHost: x\r\n\r\n\
         GET {tag}/a HTTP/1.1\r\nHost: x\r\n\r\nGET {tag}/panics2/panics HTTP/1.1\r\nHost: x\r\n\r\n"
    ));
    for _ in 0..3 {
        let reply = client.response();
        assert_eq!((reply.status, reply.text().as_str()), (200, "ok"));
    }
    for path in ["panics", "a", "panics2/panics"] {
        let line = line_for(&format!("{tag}/{path}"));
        assert!(
            !line.contains("aborted") && line.contains("status=200"),
            "{line}"
        );
    }
    assert_eq!(server.handle.stats().requests_served, 3);
}

fn a_large_whole_body_cut_midway_logs_what_went_out(backend: Backend) {
    access_log();
    let tag = format!("/cut-whole-{backend:?}");
    let server = start(backend, config(), |_req: Request<'_>| {
        sgi::Response::new(sgi::Body::from(vec![b'y'; 16 << 20]))
    });
    let client = server.connect();
    let mut stream = client.try_clone_stream();
    std::io::Write::write_all(
        &mut stream,
        format!("GET {tag} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut got = 0;
    let mut buf = vec![0u8; 64 << 10];
    while got < 1 << 20 {
        got += std::io::Read::read(&mut stream, &mut buf).unwrap();
    }
    drop(stream);
    client.reset();
    let line = line_for(&tag);
    assert!(line.contains("aborted=true"), "{line}");
    // At least what the client read, less the head.
    assert!(
        bytes_of(&line) + 200 >= got as u64,
        "the client read {got}: {line}"
    );
}
