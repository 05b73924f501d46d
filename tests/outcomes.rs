//! Every request read is counted exactly once in `Stats`: served, rejected or aborted,
//! however it ends (held back behind a pipelined request, queued or half-uploaded when a
//! shutdown deadline passes). The access log tells the same (`tests/access_log.rs`).

mod support;

use std::io::Read;
use std::time::Duration;

use sgi::{Body, Request, Response, Stats, Timeouts};
use support::{config, start, wait_until, Backend, Gate};

on_every_backend!(
    a_request_whose_body_is_arriving_at_the_shutdown_deadline_is_counted_once,
    a_held_pipelined_answer_that_never_left_is_counted_aborted,
    a_request_pipelined_behind_an_answer_cut_at_the_deadline_is_counted,
    a_request_read_behind_an_answer_lost_at_its_flush_is_counted,
);

fn total(stats: &Stats) -> u64 {
    stats.requests_served + stats.rejected_requests + stats.aborted_requests
}

fn short_shutdown() -> sgi::Config {
    config().timeouts(Timeouts {
        shutdown: Duration::from_millis(500),
        linger: Duration::from_millis(200),
        ..Timeouts::default()
    })
}

fn a_request_whose_body_is_arriving_at_the_shutdown_deadline_is_counted_once(backend: Backend) {
    let mut server = start(backend, short_shutdown(), support::echo);
    let handle = server.handle.clone();
    let mut client = server.connect();
    client.send("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabcde");
    if backend == Backend::Dev {
        // The connection's thread is in the gateway, reading the body. (The pool's loop
        // reads what arrived in the shutdown's first turn.)
        wait_until("the gateway reads the body", || {
            handle.stats().active_connections == 1
        });
    }
    handle.shutdown();
    server.join().expect("serve returns Ok");
    wait_until("the request is counted", || total(&handle.stats()) == 1);
    let stats = handle.stats();
    assert_eq!(stats.aborted_requests, 1, "{stats:?}");
    drop(client);
}

fn a_held_pipelined_answer_that_never_left_is_counted_aborted(backend: Backend) {
    let gate = Gate::new();
    let server = start(backend, config(), {
        let gate = gate.clone();
        move |req: Request<'_>| {
            if req.uri().path() == "/slow" {
                gate.pass();
            }
            Response::new(Body::from("x".repeat(100)))
        }
    });
    let mut client = server.connect();
    client.send("GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
    gate.wait_for_waiting(1);
    // The answer to /a waits to go out with /slow's: none of it has arrived.
    let mut probe = client.try_clone_stream();
    probe
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    assert!(
        probe.read(&mut [0u8; 64]).is_err(),
        "the answer to /a was sent alone"
    );
    drop(probe);
    client.reset();
    gate.open();
    wait_until("both requests are counted", || {
        total(&server.handle.stats()) == 2
    });
    let stats = server.handle.stats();
    assert_eq!(
        (stats.requests_served, stats.aborted_requests),
        (0, 2),
        "{stats:?}"
    );
}

/// Pool: one worker held past the shutdown deadline, a second request read whole and
/// queued behind it; at the deadline the queued one is dropped, and counted.
#[test]
fn a_request_queued_at_the_shutdown_deadline_is_counted_once() {
    let gate = Gate::new();
    let mut server = start(Backend::Pool, short_shutdown().workers(1), {
        let gate = gate.clone();
        move |req: Request<'_>| {
            if req.uri().path() == "/block" {
                gate.pass();
            }
            Response::new(Body::from("ok"))
        }
    });
    let handle = server.handle.clone();
    let mut blocked = server.connect();
    blocked.send("GET /block HTTP/1.1\r\nHost: x\r\n\r\n");
    gate.wait_for_waiting(1);
    let mut queued = server.connect();
    queued.send("GET /queued HTTP/1.1\r\nHost: x\r\n\r\n");
    wait_until("queued", || handle.stats().queued_requests == 1);
    handle.shutdown();
    // `serve` returns at the deadline, the gateway still blocked.
    server.join().expect("serve returns Ok");
    gate.open();
    wait_until("both requests are counted", || total(&handle.stats()) == 2);
    let stats = handle.stats();
    assert_eq!(stats.aborted_requests, 2, "{stats:?}");
    drop((blocked, queued));
}

/// Pool: at the shutdown deadline, an answer the event loop is still writing is cut, and
/// its requests are counted before `serve` returns, not when an unrelated stuck gateway
/// lets the loop go (never, if it never does).
#[test]
fn answers_written_behind_and_cut_at_the_deadline_are_counted_before_serve_returns() {
    let gate = Gate::new();
    let mut server = start(Backend::Pool, short_shutdown(), {
        let gate = gate.clone();
        move |req: Request<'_>| {
            match req.uri().path() {
                "/stuck" => gate.pass(),
                "/big" => return Response::new(Body::from(vec![b'y'; 16 << 20])),
                _ => {}
            }
            Response::new(Body::from("ok"))
        }
    });
    let handle = server.handle.clone();
    let mut stuck = server.connect();
    stuck.send("GET /stuck HTTP/1.1\r\nHost: x\r\n\r\n");
    gate.wait_for_waiting(1);
    let mut behind = server.connect();
    behind.send("GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /big HTTP/1.1\r\nHost: x\r\n\r\n");
    behind.wait_for(b"yyyy", support::PATIENCE);
    wait_until("the loop writes the rest of /big", || {
        let stats = handle.stats();
        stats.busy_workers == 1 && stats.queued_requests == 0
    });
    handle.shutdown();
    server.join().expect("serve returns Ok");
    // Counted by now, with the gateway at the gate still stuck: no waiting for it here.
    assert_eq!(total(&handle.stats()), 2, "{:?}", handle.stats());
    gate.open();
    drop((stuck, behind));
}

fn a_request_pipelined_behind_an_answer_cut_at_the_deadline_is_counted(backend: Backend) {
    let mut server = start(backend, short_shutdown(), |req: Request<'_>| {
        match req.uri().path() {
            "/big" => Response::new(Body::from(vec![b'y'; 32 << 20])),
            _ => Response::new(Body::from("ok")),
        }
    });
    let handle = server.handle.clone();
    let mut client = server.connect();
    // The client reads nothing past the first bytes: /big is cut at the deadline, and /b,
    // read whole behind it, is never served.
    client.send("GET /big HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n");
    client.wait_for(b"HTTP/1.1 200 OK\r\n", support::PATIENCE);
    handle.shutdown();
    server.join().expect("serve returns Ok");
    wait_until("both requests are counted", || total(&handle.stats()) == 2);
    assert_eq!(handle.stats().aborted_requests, 2, "{:?}", handle.stats());
    drop(client);
}

/// A request pipelined behind an answer held back, whose small body is still arriving when
/// the client leaves, is counted (aborted) along with that answer.
fn a_request_read_behind_an_answer_lost_at_its_flush_is_counted(backend: Backend) {
    let gate = Gate::new();
    let server = start(backend, config(), {
        let gate = gate.clone();
        move |req: Request<'_>| {
            if req.uri().path() == "/a" {
                gate.pass();
            }
            support::echo(req)
        }
    });
    let mut client = server.connect();
    client.send(
        "GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
         POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhe",
    );
    gate.wait_for_waiting(1);
    // The client gives up with a reset while /a's gateway runs: /a's answer cannot go out.
    client.reset();
    gate.open();
    wait_until("both requests are counted", || {
        total(&server.handle.stats()) >= 2
    });
    let stats = server.handle.stats();
    assert_eq!(stats.aborted_requests, 2, "{stats:?}");
}
