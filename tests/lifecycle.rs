//! A server's life over real sockets: the addresses and facts it reports, the timeouts that
//! close stalled connections, concurrency, statistics and graceful shutdown.

mod support;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sgi::{Body, Config, Handle, Limits, Request, RequestExt, Response};
use support::{
    agent, config, echo, environ, response, start, target, wait_until, with_timeouts, Backend, Gate,
};

on_every_backend!(
    port_zero_binds_a_free_port_and_reports_it,
    serves_on_a_listener_it_is_given,
    refuses_a_socket_that_is_not_listening,
    an_address_in_use_is_named_in_the_error,
    environ_reports_the_peer_and_local_addresses,
    environ_reports_the_mount_as_script_name,
    environ_reports_server_name_and_port,
    serves_connections_concurrently,
    stats_count_served_and_rejected_requests,
    closes_an_idle_connection_after_the_idle_timeout,
    answers_408_when_a_head_stalls_past_the_head_timeout,
    trickling_a_head_does_not_extend_the_head_timeout,
    answers_408_when_a_body_stalls_past_the_body_timeout,
    answers_408_when_a_body_trickles_below_the_minimum_rate,
    answers_408_when_a_small_body_trickles_below_the_minimum_rate,
    a_body_above_the_minimum_rate_is_served_however_it_comes,
    drops_a_client_that_stops_reading_after_the_write_timeout,
    a_slow_but_steady_reader_gets_the_whole_answer,
    shutdown_lets_an_in_flight_request_finish_with_connection_close,
    shutdown_closes_idle_connections,
    shutdown_closes_a_connection_mid_head_without_calling_it_rejected,
    shutdown_closes_requests_that_outlast_its_deadline,
    shutdown_cuts_a_body_delimited_by_the_close_with_a_reset,
    shutdown_during_an_answer_with_a_request_pipelined_behind_loses_none_of_it,
    shutdown_during_an_answer_finishes_an_upload_pipelined_behind_it,
    extreme_timeouts_are_taken_as_never_or_at_once_without_failing,
    extreme_limits_are_taken_as_no_limit_without_failing,
);

const SHORT: Duration = Duration::from_millis(300);

/// The test configuration with some timeouts changed.
fn extreme_timeouts_are_taken_as_never_or_at_once_without_failing(backend: Backend) {
    // Duration::MAX is a natural way to say "never"; zero a careless one to say "at once".
    let server = start(
        backend,
        with_timeouts(|t| {
            for never in [
                &mut t.head,
                &mut t.idle,
                &mut t.body,
                &mut t.body_grace,
                &mut t.request,
                &mut t.shutdown,
                &mut t.linger,
            ] {
                *never = Duration::MAX;
            }
            t.write = Duration::ZERO;
        }),
        target,
    );
    let mut client = server.connect();
    client.send("GET /one HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(client.response().text(), "/one");
    // An error answer goes through the lingering close.
    let mut bad = server.connect();
    bad.send("GET /bad HTTP/1.1\r\n\r\n");
    assert_eq!(bad.response().status, 400);
    // The pool's event loop checks its timers every 100 ms: it must still be there.
    std::thread::sleep(Duration::from_millis(250));
    client.send("GET /two HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(client.response().text(), "/two");
    drop((client, bad));
    server.stop().expect("serve returns Ok");
}

fn extreme_limits_are_taken_as_no_limit_without_failing(backend: Backend) {
    // The largest value is a natural way to say "no limit": no sum may overflow with it,
    // and no storage may be sized by it.
    let mut config = config();
    config.limits = Limits {
        max_request_line: usize::MAX,
        max_headers: usize::MAX,
        max_header_field: usize::MAX,
        max_head: usize::MAX,
        max_body: None,
        max_buffered_body: usize::MAX,
        // The one limit whose "none" is zero.
        min_body_rate: 0,
    };
    let server = start(backend, config, echo);
    let mut client = server.connect();
    for _ in 0..2 {
        client.send("GET /one HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(client.response().text(), "GET /one\n");
        // Past the pool's usual buffered-body size: read by the event loop all the same.
        let body = "b".repeat(70_000);
        client.send(format!(
            "POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
        assert_eq!(client.response().text(), format!("POST /two\n{body}"));
    }
    drop(client);
    server.stop().expect("serve returns Ok");
}

/// A gateway that waits at `gate`, then answers its target.
fn gated(gate: &Arc<Gate>) -> impl Fn(Request<'_>) -> Response + Send + Sync + 'static {
    let gate = gate.clone();
    move |req| {
        gate.pass();
        target(req)
    }
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).expect("a JSON body")
}

fn port_zero_binds_a_free_port_and_reports_it(backend: Backend) {
    let server = start(backend, config(), environ);
    assert!(server.addr.ip().is_loopback(), "{}", server.addr);
    assert_ne!(server.addr.port(), 0);
    assert_eq!(server.handle.local_addr(), server.addr);
    let res = response(agent().get(&server.url("/")).call());
    assert_eq!(res.status(), 200);
    let env = json(res.into_string().unwrap().as_bytes());
    assert_eq!(env["server_port"], server.addr.port());
}

fn serves_on_a_listener_it_is_given(backend: Backend) {
    // As a process manager would hand it over: bound and listening, options its own.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = support::start_on(backend, listener, config(), environ);
    assert_eq!(server.addr, addr);
    assert_eq!(server.handle.local_addr(), addr);
    let mut client = server.connect();
    for _ in 0..2 {
        client.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let env = json(&client.response().body);
        assert_eq!(env["local_addr"], addr.to_string());
        assert_eq!(env["server_port"], addr.port());
    }
    server.stop().unwrap();
}

fn an_address_in_use_is_named_in_the_error(backend: Backend) {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = match backend {
        Backend::Dev => sgi::DevServer::bind(addr).err(),
        Backend::Pool => sgi::PoolServer::bind(addr).err(),
    };
    let err = err.expect("the port is taken");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

fn refuses_a_socket_that_is_not_listening(backend: Backend) {
    use socket2::{Domain, Socket, Type};
    // Bound but never told to listen: every accept would fail, so it is refused up front.
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    let err = match backend {
        Backend::Dev => sgi::DevServer::from_listener(socket.into(), config()).err(),
        Backend::Pool => sgi::PoolServer::from_listener(socket.into(), config()).err(),
    };
    let err = err.expect("a socket that does not listen is refused");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
}

fn environ_reports_the_peer_and_local_addresses(backend: Backend) {
    let server = start(backend, config(), environ);
    let mut client = server.connect();
    client.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let env = json(&client.response().body);
    assert_eq!(env["peer_addr"], client.local_addr().to_string());
    assert_eq!(env["local_addr"], server.addr.to_string());
    assert_eq!(env["url_scheme"], "http");
}

fn environ_reports_the_mount_as_script_name(backend: Backend) {
    let server = start(backend, config().mount("/api/"), |req: Request<'_>| {
        let script_name = req.environ().script_name.to_string();
        let original = req.original_uri();
        Response::new(Body::from(format!(
            "{script_name} {} {original}",
            req.uri()
        )))
    });
    // Prefix and path together are the path as sent (WSGI's SCRIPT_NAME and PATH_INFO), and
    // the target as sent is kept (`/api` and `/api/` both reach the gateway as `/`).
    for (sent, seen) in [
        ("/api/users?x=1", "/api /users?x=1 /api/users?x=1"),
        ("/api", "/api / /api"),
        ("/api/", "/api / /api/"),
        // Not under the prefix (a proxy in front stripped it): passed on as it is.
        ("/users", "/api /users /users"),
        ("/apiary", "/api /apiary /apiary"),
    ] {
        let res = response(agent().get(&server.url(sent)).call());
        assert_eq!(res.into_string().unwrap(), seen, "{sent}");
    }
}

fn environ_reports_server_name_and_port(backend: Backend) {
    let server = start(backend, config(), environ);
    let res = response(agent().get(&server.url("/")).call());
    let env = json(res.into_string().unwrap().as_bytes());
    assert_eq!(env["server_name"], "127.0.0.1", "the local IP by default");
    assert_eq!(env["server_port"], server.addr.port());

    let named = Config {
        server_name: Some("example.test".into()),
        ..config()
    };
    let server = start(backend, named, environ);
    let res = response(agent().get(&server.url("/")).call());
    assert_eq!(
        json(res.into_string().unwrap().as_bytes())["server_name"],
        "example.test"
    );
}

fn serves_connections_concurrently(backend: Backend) {
    let gate = Gate::new();
    let server = start(backend, config(), gated(&gate));
    let mut clients: Vec<_> = (0..3).map(|_| server.connect()).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        client.send(format!("GET /{i} HTTP/1.1\r\nHost: x\r\n\r\n"));
    }
    // All three are in their gateways at once, and the stats say so.
    gate.wait_for_waiting(3);
    let stats = server.handle.stats();
    assert_eq!(
        (stats.active_connections, stats.busy_workers),
        (3, 3),
        "{stats:?}"
    );
    gate.open();
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(client.response().text(), format!("/{i}"));
    }
}

fn stats_count_served_and_rejected_requests(backend: Backend) {
    let server = start(backend, config(), echo);
    let agent = agent();
    for _ in 0..2 {
        assert_eq!(response(agent.get(&server.url("/")).call()).status(), 200);
    }
    let mut client = server.connect();
    client.send("GET / HTTP/1.1\r\n\r\n");
    assert_eq!(client.response().status, 400);
    // Every answer the server gives itself counts: broken chunked framing found while the
    // body is read (after the head was accepted), and a head the client cut off.
    let mut chunked = server.connect();
    chunked.send("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
    assert_eq!(chunked.response().status, 400);
    let mut cut = server.connect();
    cut.send("GET / HTTP/1.1\r\nHo");
    cut.try_clone_stream()
        .shutdown(std::net::Shutdown::Write)
        .unwrap();
    assert_eq!(cut.response().status, 400);
    wait_until("the counters catch up", || {
        let stats = server.handle.stats();
        stats.rejected_requests == 3
    });
    drop((agent, client, chunked, cut));
    wait_until("every connection is closed", || {
        server.handle.stats().open_connections == 0
    });
}

fn closes_an_idle_connection_after_the_idle_timeout(backend: Backend) {
    let server = start(backend, config().idle_timeout(SHORT), target);
    let mut client = server.connect();
    client.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(!client.response().closes());
    let idle_since = Instant::now();
    client.expect_closed();
    assert!(
        idle_since.elapsed() >= SHORT / 2,
        "closed after {:?}, before the idle timeout",
        idle_since.elapsed()
    );
}

fn answers_408_when_a_head_stalls_past_the_head_timeout(backend: Backend) {
    let server = start(backend, with_timeouts(|t| t.head = SHORT), target);
    let mut client = server.connect();
    client.send("GET / HTTP/1.1\r\nHost: x\r\n");
    let reply = client.response();
    assert_eq!(reply.status, 408);
    assert!(reply.closes(), "{reply:?}");
    client.expect_closed();
}

fn trickling_a_head_does_not_extend_the_head_timeout(backend: Backend) {
    let server = start(backend, with_timeouts(|t| t.head = SHORT), target);
    let mut client = server.connect();
    client.send("GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ");
    // Each read makes progress, the head never ends.
    let started = Instant::now();
    let trickler = Trickler::start(&client, Duration::from_secs(5));
    let reply = client.response();
    trickler.stop();
    assert_eq!(reply.status, 408);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "408 came only after {:?}",
        started.elapsed()
    );
}

fn answers_408_when_a_body_stalls_past_the_body_timeout(backend: Backend) {
    let server = start(backend, with_timeouts(|t| t.body = SHORT), support::echo);
    let mut client = server.connect();
    client.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc");
    let reply = client.response();
    assert_eq!(reply.status, 408);
    assert!(reply.closes(), "{reply:?}");
    client.expect_closed();
}

/// At least 1,000 bytes a second after the first half second (a body above 16 KiB is read
/// by the pool's gateway on a worker; smaller ones the event loop takes in first).
fn with_min_body_rate() -> Config {
    let mut config = with_timeouts(|t| t.body_grace = Duration::from_millis(500));
    config.limits.min_body_rate = 1000;
    config
}

fn answers_408_when_a_body_trickles_below_the_minimum_rate(backend: Backend) {
    assert_408_for_a_body_trickled(backend, 100_000);
}

/// Sends a body of `len` bytes a byte every 50 ms, each well within the body timeout
/// (30 s): only the minimum rate can end it, with a 408.
fn assert_408_for_a_body_trickled(backend: Backend, len: usize) {
    let server = start(backend, with_min_body_rate(), support::echo);
    let mut client = server.connect();
    client.send(format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\na"
    ));
    let trickler = Trickler::start(&client, Duration::from_secs(8));
    let reply = client.response();
    trickler.stop();
    assert_eq!(reply.status, 408, "{reply:?}");
    assert!(reply.closes(), "{reply:?}");
}

fn answers_408_when_a_small_body_trickles_below_the_minimum_rate(backend: Backend) {
    // Small enough for the pool's event loop to take in before a worker serves it: that
    // costs no worker, but a connection all the same, so the same rate holds.
    assert_408_for_a_body_trickled(backend, 10_000);
}

/// Sends a byte every 50 ms (20 a second) on `client`'s socket from a thread, for at most
/// `limit`, until stopped or the server closes.
struct Trickler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Trickler {
    fn start(client: &support::RawClient, limit: Duration) -> Trickler {
        let stop = Arc::new(AtomicBool::new(false));
        let mut trickle = client.try_clone_stream();
        let started = Instant::now();
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                while !stop.load(Relaxed) && started.elapsed() < limit {
                    if trickle.write_all(b"a").is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        });
        Trickler { stop, thread }
    }

    fn stop(self) {
        self.stop.store(true, Relaxed);
        self.thread.join().unwrap();
    }
}

fn a_body_above_the_minimum_rate_is_served_however_it_comes(backend: Backend) {
    // 30,000 bytes in six pieces 200 ms apart: 25,000 bytes a second, with pauses.
    let server = start(backend, with_min_body_rate(), support::echo);
    let mut client = server.connect();
    client.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 30000\r\n\r\n");
    let piece = "b".repeat(5000);
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(200));
        client.send(&piece);
    }
    let reply = client.response();
    assert_eq!(reply.text(), format!("POST /\n{}", piece.repeat(6)));
}

fn drops_a_client_that_stops_reading_after_the_write_timeout(backend: Backend) {
    // 256 MiB, made lazily: far more than socket buffers hold.
    let server = start(
        backend,
        with_timeouts(|t| t.write = SHORT),
        |_req: Request<'_>| {
            let piece = vec![b'x'; 1 << 20];
            Response::new(sgi::Body::from_iter(
                (0..256).map(move |_| Ok(piece.clone().into())),
            ))
        },
    );
    let mut client = server.connect();
    client.send("GET /flood HTTP/1.1\r\nHost: x\r\n\r\n");
    // The client reads nothing; the server gives up on it instead of blocking for good,
    // and counts the request as aborted, not served.
    wait_until("the server drops the connection", || {
        let stats = server.handle.stats();
        stats.aborted_requests == 1 && stats.open_connections == 0
    });
    assert_eq!(server.handle.stats().requests_served, 0);
    drop(client);
}

fn a_slow_but_steady_reader_gets_the_whole_answer(backend: Backend) {
    // The client takes 32 KiB every 50 ms (640 KiB/s) through a small receive buffer. The
    // server's socket says it has room only once a good part of its own buffer (which
    // Linux grows to megabytes) has drained, which can take longer than the 250 ms write
    // timeout; but the client takes bytes all along, so its answer must not be cut.
    const LEN: usize = 4 << 20;
    const PIECE: usize = 32 << 10;
    let server = start(
        backend,
        with_timeouts(|t| t.write = Duration::from_millis(250)),
        move |_req: Request<'_>| Response::new(Body::from(vec![b'x'; LEN])),
    );
    let client = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    client.set_recv_buffer_size(64 << 10).unwrap();
    client.connect(&server.addr.into()).unwrap();
    let mut client = std::net::TcpStream::from(client);
    client.set_read_timeout(Some(support::PATIENCE)).unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut received = Vec::new();
    let mut buf = vec![0; PIECE];
    let started = Instant::now();
    let mut body_at = None;
    while body_at.map_or(true, |at| received.len() - at < LEN) {
        assert!(started.elapsed() < Duration::from_secs(60), "over a minute");
        if body_at.is_none() {
            body_at = received
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|h| h + 4);
        }
        std::thread::sleep(Duration::from_millis(50));
        match std::io::Read::read(&mut client, &mut buf) {
            Ok(0) => panic!("the server closed after {} bytes", received.len()),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) => panic!("{e} after {} bytes", received.len()),
        }
    }
    assert!(received.starts_with(b"HTTP/1.1 200 OK\r\n"));
}

fn shutdown_lets_an_in_flight_request_finish_with_connection_close(backend: Backend) {
    let gate = Gate::new();
    let server = start(backend, config(), gated(&gate));
    let mut client = server.connect();
    client.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
    gate.wait_for_waiting(1);
    server.handle.shutdown();
    assert!(server.handle.is_shutting_down());
    assert!(
        !server.has_stopped(),
        "serve returned with a request in flight"
    );
    gate.open();
    let reply = client.response();
    assert_eq!((reply.status, reply.text().as_str()), (200, "/slow"));
    assert!(reply.closes(), "{reply:?}");
    client.expect_closed();
    server.stop().expect("serve returns Ok");
}

fn shutdown_closes_idle_connections(backend: Backend) {
    let server = start(
        backend,
        config().idle_timeout(Duration::from_secs(60)),
        target,
    );
    let mut served = server.connect();
    served.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(!served.response().closes());
    let mut silent = server.connect();
    server.handle.shutdown();
    served.expect_closed();
    silent.expect_closed();
    server.stop().expect("serve returns Ok");
}

fn shutdown_closes_a_connection_mid_head_without_calling_it_rejected(backend: Backend) {
    let server = start(backend, config(), target);
    let mut partial = server.connect();
    partial.send("GET /half HTTP/1.1\r\nHo");
    wait_until("the partial head is read", || {
        server.handle.stats().open_connections == 1
    });
    let handle = server.handle.clone();
    server.stop().expect("serve returns Ok");
    partial.expect_closed();
    // `serve` has returned: every connection's thread or slot has been let go.
    wait_until("the connection is gone", || {
        handle.stats().open_connections == 0
    });
    let stats = handle.stats();
    // The server ended it, not the client: no 400 was sent, none is counted.
    assert_eq!(stats.rejected_requests, 0, "{stats:?}");
}

fn shutdown_closes_requests_that_outlast_its_deadline(backend: Backend) {
    let gate = Gate::new();
    let mut server = start(backend, with_timeouts(|t| t.shutdown = SHORT), gated(&gate));
    let mut client = server.connect();
    client.send("GET /stuck HTTP/1.1\r\nHost: x\r\n\r\n");
    gate.wait_for_waiting(1);
    server.handle.shutdown();
    server.join().expect("serve returns Ok");
    client.expect_closed();
    // The gateway returns after `serve` has: its thread leaves cleanly (on the pool it
    // once handed the connection back to the loop, which had written it off already).
    gate.open();
    let handle = server.handle.clone();
    wait_until("the stuck gateway's thread has left", || {
        handle.stats().workers == 0
    });
    assert_eq!(handle.stats().open_connections, 0, "{:?}", handle.stats());
}

fn shutdown_cuts_a_body_delimited_by_the_close_with_a_reset(backend: Backend) {
    let gate = Gate::new();
    let mut server = start(backend, with_timeouts(|t| t.shutdown = SHORT), {
        let gate = gate.clone();
        move |_req: Request<'_>| {
            let gate = gate.clone();
            // The second piece waits at the gate, past the shutdown's deadline.
            Response::new(Body::from_iter(["partial", "rest"].into_iter().map(
                move |piece| {
                    if piece == "rest" {
                        gate.pass();
                    }
                    Ok(piece.into())
                },
            )))
        }
    });
    let mut client = server.connect();
    // HTTP/1.0: the body ends where the connection does.
    client.send("GET / HTTP/1.0\r\n\r\n");
    client.wait_for(b"partial", Duration::from_secs(10));
    gate.wait_for_waiting(1);
    server.handle.shutdown();
    server.join().expect("serve returns Ok");
    // An orderly close here would make "partial" look like the whole body.
    client.expect_reset();
    gate.open();
}

/// A server whose `/stream` answers `one` and `two` and begins the server's shutdown while
/// making `two`; anything else goes to `other`.
fn shuts_down_while_streaming(
    backend: Backend,
    other: fn(Request<'_>) -> Response,
) -> support::Running {
    let handle: Arc<OnceLock<Handle>> = Arc::default();
    let server = start(backend, config(), {
        let handle = handle.clone();
        move |req: Request<'_>| {
            if req.uri().path() != "/stream" {
                return other(req);
            }
            let handle = handle.clone();
            // The shutdown begins while this answer is being sent.
            Response::new(Body::from_iter(["one", "two"].into_iter().map(
                move |piece| {
                    if piece == "two" {
                        handle.get().expect("the handle is set").shutdown();
                    }
                    Ok(piece.into())
                },
            )))
        }
    });
    handle.set(server.handle.clone()).unwrap();
    server
}

fn shutdown_during_an_answer_with_a_request_pipelined_behind_loses_none_of_it(backend: Backend) {
    let server = shuts_down_while_streaming(backend, target);
    let mut client = server.connect();
    client.send(
        "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n\
         GET /next HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(client.response().text(), "onetwo");
    // The request already read is served too, as the last on its connection.
    let reply = client.response();
    assert_eq!(reply.text(), "/next");
    assert!(reply.closes(), "{reply:?}");
    client.expect_closed();
}

fn shutdown_during_an_answer_finishes_an_upload_pipelined_behind_it(backend: Backend) {
    let server = shuts_down_while_streaming(backend, echo);
    let mut client = server.connect();
    // The upload's head and half its body come with the first request.
    client.send(
        "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n\
         POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabcde",
    );
    assert_eq!(client.response().text(), "onetwo");
    // Its head is in: it is in flight, and is served once the rest of its body is in.
    client.send("fghij");
    let reply = client.response();
    assert_eq!(reply.text(), "POST /up\nabcdefghij");
    assert!(reply.closes(), "{reply:?}");
    client.expect_closed();
    wait_until("both requests are counted served", || {
        server.handle.stats().requests_served == 2
    });
}
