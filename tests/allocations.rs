//! The server's own allocations per request on a keep-alive connection, counted by a global
//! allocator (this test binary holds this one test, so nothing else allocates meanwhile).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use sgi::{Body, Request, Response, TestClient};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on unchanged to the system allocator; counting has no effect
// on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations made while `requests` pipelined GETs are served on one connection.
fn allocations_for(client: &TestClient, requests: usize) -> usize {
    let input =
        b"GET /path?q=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n".repeat(requests);
    let before = ALLOCATIONS.load(Relaxed);
    let out = client.raw(&input);
    let after = ALLOCATIONS.load(Relaxed);
    let answered = out
        .windows(17)
        .filter(|w| w == b"HTTP/1.1 200 OK\r\n")
        .count();
    assert_eq!(answered, requests);
    after - before
}

#[test]
fn a_request_costs_only_the_allocations_its_http_types_need() {
    // A gateway that allocates nothing itself.
    let client = TestClient::new(|_req: Request<'_>| Response::new(Body::from("Hello, World!")));
    // The difference between two runs leaves out per-connection set-up and output growth.
    let small = allocations_for(&client, 1_000);
    let large = allocations_for(&client, 3_000);
    let per_request = (large - small) as f64 / 2_000.0;
    // What is left: the request's header map (2) and the extensions holding its Environ (3).
    // The head's bytes, the read buffer and the response's bytes are reused.
    assert!(
        per_request <= 5.05,
        "{per_request} allocations per request, expected 5"
    );
}
