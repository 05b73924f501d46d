//! What an operator reads in the server's log (warnings and errors, through a real
//! `tracing` subscriber): a panic names itself and its request, and a flood cannot make the
//! server write a line per connection. This file has its own test binary because the
//! subscriber is process-wide.

mod support;

use std::time::{Duration, Instant};

use sgi::{Request, Response};
use support::{config, start, target, wait_until, Backend, CapturedLog};

on_every_backend!(
    a_gateway_panic_is_logged_with_its_message_and_request,
    a_cap_over_the_descriptor_limit_is_warned_at_start,
);

fn server_log() -> &'static CapturedLog {
    CapturedLog::install("sgi=warn")
}

fn lines_with(needle: &str) -> Vec<String> {
    server_log()
        .text()
        .lines()
        .filter(|line| line.contains(needle))
        .map(str::to_string)
        .collect()
}

fn a_gateway_panic_is_logged_with_its_message_and_request(backend: Backend) {
    server_log();
    let message = format!("the handler broke on {backend:?}");
    let server = start(backend, config(), {
        let message = message.clone();
        move |_req: Request<'_>| -> Response { panic!("{message}") }
    });
    let mut client = server.connect();
    client.send(format!(
        "GET /broken-{backend:?} HTTP/1.1\r\nHost: x\r\n\r\n"
    ));
    assert_eq!(client.response().status, 500);
    wait_until("the panic is logged", || !lines_with(&message).is_empty());
    let line = &lines_with(&message)[0];
    assert!(line.contains("gateway panicked"), "{line}");
    // Inside the request's span, with the client's plain address.
    assert!(
        line.contains(&format!("target=/broken-{backend:?}")),
        "{line}"
    );
    assert!(
        line.contains(&format!("peer={} ", client.local_addr())),
        "{line}"
    );
}

/// Under a flood of short connections the pool reaches its cap again each time one
/// closes; that is logged at most once a second, with a count, not once per connection.
#[test]
fn hitting_the_pool_connection_cap_is_logged_at_most_once_a_second() {
    server_log();
    let server = start(
        Backend::Pool,
        config().workers(2).max_connections(2),
        target,
    );
    let started = Instant::now();
    let mut rounds = 0;
    while rounds < 40 && started.elapsed() < Duration::from_secs(5) {
        // Two held, a third waits in the backlog: the cap is hit; closing one lets it in.
        let held: Vec<_> = (0..2).map(|_| server.connect()).collect();
        wait_until("the cap is reached", || {
            server.handle.stats().open_connections == 2
        });
        let mut third = server.connect();
        third.send("GET /third HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        drop(held);
        assert_eq!(third.response().status, 200);
        rounds += 1;
    }
    let seconds = started.elapsed().as_secs() + 1;
    let lines = lines_with("connection limit reached");
    assert!(
        !lines.is_empty(),
        "the cap was never logged in {rounds} rounds"
    );
    assert!(
        lines.len() as u64 <= seconds,
        "{} lines in {seconds} s for {rounds} rounds: {lines:#?}",
        lines.len()
    );
}

/// A cap the descriptor limit cannot hold is said at start, not found out at EMFILE.
fn a_cap_over_the_descriptor_limit_is_warned_at_start(backend: Backend) {
    server_log();
    // A cap of each backend's own, so that each test finds its own line.
    let cap = (1 << 40) + backend as usize;
    let server = start(backend, config().max_connections(cap), target);
    wait_until("the warning is logged", || {
        lines_with("max_connections is more than the descriptor limit allows")
            .iter()
            .any(|line| line.contains(&format!("max_connections={cap} ")))
    });
    drop(server);
}

/// An iterator or reader body whose client falls behind parks while a slot is free (as many
/// as there are workers, by default); past that it holds its worker until the client has
/// taken it all, so slow readers can hold every worker while new requests wait: the
/// operator is told.
#[test]
fn a_pool_whose_every_worker_is_held_by_a_streamed_body_says_so() {
    server_log();
    const WARNING: &str = "every worker has been sending a streamed response";
    let piece = sgi::bytes::Bytes::from(vec![b'x'; 64 * 1024]);
    let server = start(
        Backend::Pool,
        config().workers(2),
        move |_req: Request<'_>| {
            // 256 MiB, far more than the sockets between server and client can buffer.
            let pieces = std::iter::repeat(piece.clone()).take(4096).map(Ok);
            Response::new(sgi::Body::from_iter(pieces))
        },
    );
    // They read nothing: two streams park, then each worker waits for its client.
    let mut readers: Vec<_> = (0..4).map(|_| server.connect()).collect();
    for (i, reader) in readers.iter_mut().enumerate() {
        reader.send(format!("GET /download/{i} HTTP/1.1\r\nHost: x\r\n\r\n"));
    }
    wait_until("the pool tells that every worker is held", || {
        !lines_with(WARNING).is_empty()
    });
    let line = &lines_with(WARNING)[0];
    assert!(line.contains("workers=2"), "{line}");
    for reader in readers {
        reader.reset();
    }
}

/// Shedding is logged at most once a second with a count; the count of a burst's last
/// connections is told a second later even when no more come.
#[test]
fn every_shed_connection_is_counted_in_the_log() {
    server_log();
    let server = start(Backend::Dev, config().max_connections(1), target);
    let mut held = server.connect();
    held.send("GET /held HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(held.response().status, 200);
    for _ in 0..3 {
        let mut shed = server.connect();
        assert_eq!(shed.response().status, 503);
    }
    let counted = || -> u64 {
        lines_with("shedding load")
            .iter()
            .filter_map(|line| {
                line.split("shed=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    };
    wait_until("all three shed connections are counted", || counted() == 3);
    drop(held);
}
