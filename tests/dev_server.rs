//! What only the development server does: shed connections over its cap with `503`.

mod support;

use sgi::Request;
use support::{agent, config, response, start, target, wait_until, Backend, Gate};

#[test]
fn sheds_connections_over_the_cap_with_503_and_recovers() {
    let gate = Gate::new();
    let server = start(Backend::Dev, config().max_connections(2), {
        let gate = gate.clone();
        move |req: Request<'_>| {
            if req.uri().path() == "/wait" {
                gate.pass();
            }
            target(req)
        }
    });
    let mut held: Vec<_> = (0..2).map(|_| server.connect()).collect();
    for client in &mut held {
        client.send("GET /wait HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    }
    gate.wait_for_waiting(2);

    let mut over = server.connect();
    over.send("GET /over HTTP/1.1\r\nHost: x\r\n\r\n");
    let reply = over.response();
    assert_eq!(reply.status, 503);
    let retry_after = reply.header("retry-after").expect("a Retry-After");
    assert!(retry_after.parse::<u32>().is_ok(), "{retry_after:?}");
    assert!(reply.closes(), "{reply:?}");
    over.expect_closed();
    assert_eq!(server.handle.stats().rejected_connections, 1);

    gate.open();
    for client in &mut held {
        assert_eq!(client.response().text(), "/wait");
        client.expect_closed();
    }
    wait_until("the held connections are gone", || {
        server.handle.stats().open_connections == 0
    });
    let res = response(agent().get(&server.url("/after")).call());
    assert_eq!(res.status(), 200);
    assert_eq!(res.into_string().unwrap(), "/after");
}
