//! A server in a process that does not ignore `SIGPIPE` (an application that restored the
//! default, or a Rust server started from a host that does not set it aside) must survive
//! a client that leaves while its answer is being written: the write fails with `EPIPE`,
//! it does not kill the process. This test binary sets the signal back to its default,
//! so a write that raised it would end the whole binary.
#![cfg(target_os = "linux")]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

use sgi::{Body, Request, Response};
use support::{agent, config, response, start, Backend, Gate};

const PIECES: usize = 64;
const PIECE: usize = 64 * 1024;

fn restore_default_sigpipe() {
    // SAFETY: `signal` with `SIG_DFL` sets a disposition and touches no memory of ours; the
    // tests of this binary all want the default.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn a_client_leaving_mid_answer_does_not_kill_the_process(backend: Backend) {
    restore_default_sigpipe();
    let gate = Gate::new();
    let pulled = Arc::new(AtomicUsize::new(0));
    let app = {
        let (gate, pulled) = (gate.clone(), pulled.clone());
        move |req: Request<'_>| {
            if req.uri().path() == "/fresh" {
                return Response::new(Body::from("still here"));
            }
            gate.pass();
            let pulled = pulled.clone();
            let pieces = (0..PIECES).map(move |_| {
                pulled.fetch_add(1, SeqCst);
                Ok(vec![b'x'; PIECE].into())
            });
            Response::new(Body::from_iter(pieces))
        }
    };
    let server = start(backend, config(), app);
    let mut client = server.connect();
    client.send("GET /big HTTP/1.1\r\nHost: x\r\n\r\n");
    gate.wait_for_waiting(1);
    // The client ends its side and goes: the first piece it is sent draws a reset, and the
    // next write meets a connection that can take no more (EPIPE).
    drop(client);
    gate.open();
    support::wait_until("the server stops writing to the departed client", || {
        server.handle.stats().open_connections == 0
    });
    assert!(
        pulled.load(SeqCst) < PIECES,
        "every piece was pulled: the writes never failed, so the test proves nothing"
    );
    let fresh = response(agent().get(&server.url("/fresh")).call());
    assert_eq!(fresh.into_string().unwrap(), "still here");
}

on_every_backend!(a_client_leaving_mid_answer_does_not_kill_the_process);
