//! The in-process [`TestClient`]: the server's own semantics (framing, `HEAD`, `Date`, error
//! answers) without a socket.

mod support;

use sgi::http::StatusCode;
use sgi::{Body, Config, Request, Response, TestClient};
use support::{echo, environ, target};

fn hello(_req: Request<'_>) -> Response {
    Response::new(Body::from("Hello, World!"))
}

fn pieces(_req: Request<'_>) -> Response {
    Response::new(Body::from_iter(["a", "bb", "ccc"].map(|s| Ok(s.into()))))
}

fn text(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

#[test]
fn head_request_has_no_body_but_keeps_content_length() {
    let res = TestClient::new(hello).head("/").send();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-length"], "13");
    assert!(res.body().is_empty());
    // On the wire too: the next response starts right after the head.
    let out = text(
        &TestClient::new(hello)
            .raw(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"),
    );
    let heads: Vec<&str> = out.split("\r\n\r\n").collect();
    assert!(heads[1].starts_with("HTTP/1.1 200 OK\r\n"), "{out:?}");
    assert_eq!(heads[2], "Hello, World!");
}

#[test]
fn iterator_body_is_sent_chunked() {
    let res = TestClient::new(pieces).get("/").send();
    assert_eq!(res.headers()["transfer-encoding"], "chunked");
    assert!(res.headers().get("content-length").is_none());
    assert_eq!(res.body(), "abbccc");
    let out = text(&TestClient::new(pieces).raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert!(
        out.ends_with("\r\n\r\n1\r\na\r\n2\r\nbb\r\n3\r\nccc\r\n0\r\n\r\n"),
        "{out:?}"
    );
}

#[test]
fn iterator_body_to_http10_is_delimited_by_close() {
    let res = TestClient::new(pieces).get("/").http10().send();
    assert!(res.headers().get("transfer-encoding").is_none());
    assert_eq!(res.headers()["connection"], "close");
    assert_eq!(res.body(), "abbccc");
}

#[test]
fn no_body_follows_204_or_304() {
    let client = TestClient::new(|req: Request<'_>| {
        let mut res = Response::new(Body::from("only for 200"));
        *res.status_mut() = match req.uri().path() {
            "/204" => StatusCode::NO_CONTENT,
            "/304" => StatusCode::NOT_MODIFIED,
            _ => StatusCode::OK,
        };
        res
    });
    let res = client.get("/204").send();
    assert_eq!(res.status(), 204);
    assert!(res.headers().get("content-length").is_none());
    let out = text(&client.raw(
        b"GET /204 HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /304 HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /200 HTTP/1.1\r\nHost: x\r\n\r\n",
    ));
    let parts: Vec<&str> = out.split("\r\n\r\n").collect();
    assert!(
        parts[0].starts_with("HTTP/1.1 204 No Content\r\n"),
        "{out:?}"
    );
    assert!(
        parts[1].starts_with("HTTP/1.1 304 Not Modified\r\n"),
        "{out:?}"
    );
    assert!(parts[2].starts_with("HTTP/1.1 200 OK\r\n"), "{out:?}");
    assert_eq!(parts[3], "only for 200");
}

#[test]
fn responses_carry_a_date_header() {
    let res = TestClient::new(hello).get("/").send();
    let date = res.headers()["date"].to_str().unwrap();
    assert!(date.ends_with(" GMT") && date.len() == 29, "{date:?}");
}

#[test]
fn request_headers_and_body_reach_the_gateway() {
    let client = TestClient::new(|mut req: Request<'_>| {
        let tags: Vec<_> = req
            .headers()
            .get_all("x-tag")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        let mut body = String::new();
        std::io::Read::read_to_string(req.body_mut(), &mut body).unwrap();
        Response::new(Body::from(format!("{} {body}", tags.join(","))))
    });
    let res = client
        .put("/")
        .header("X-Tag", "a")
        .header("X-Tag", "b")
        .body("payload")
        .send();
    assert_eq!(res.body(), "a,b payload");
}

#[test]
fn chunked_request_body_is_decoded() {
    let res = TestClient::new(echo)
        .post("/up")
        .header("Transfer-Encoding", "chunked")
        .body("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        .send();
    assert_eq!(res.body(), "POST /up\nhello world");
}

#[test]
fn expect_100_continue_ends_in_the_final_response() {
    let res = TestClient::new(echo)
        .put("/up")
        .header("Expect", "100-continue")
        .body("hello")
        .send();
    assert_eq!(res.status(), 200);
    assert_eq!(res.body(), "PUT /up\nhello");
}

#[test]
fn http10_requests_reach_the_gateway_as_http10() {
    let client = TestClient::new(|req: Request<'_>| {
        Response::new(Body::from(format!("{:?}", req.version())))
    });
    assert_eq!(client.get("/").http10().send().body(), "HTTP/1.0");
    assert_eq!(client.get("/").send().body(), "HTTP/1.1");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let out = text(&TestClient::new(target).raw(
        b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /2 HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ));
    let bodies: Vec<&str> = out
        .split("HTTP/1.1 200 OK\r\n")
        .skip(1)
        .map(|res| res.split("\r\n\r\n").nth(1).unwrap())
        .collect();
    assert_eq!(bodies, ["/1", "/2", "/3"], "{out:?}");
}

#[test]
fn environ_has_the_test_client_defaults() {
    let env: serde_json::Value =
        serde_json::from_slice(TestClient::new(environ).get("/").send().body()).unwrap();
    assert_eq!(env["peer_addr"], serde_json::Value::Null);
    assert_eq!(env["local_addr"], serde_json::Value::Null);
    assert_eq!(env["server_name"], "localhost");
    assert_eq!(env["server_port"], 80);
    assert_eq!(env["script_name"], "");
    assert_eq!(env["url_scheme"], "http");
}

#[test]
fn environ_reports_the_configured_mount() {
    let client = TestClient::with_config(environ, Config::default().mount("/api"));
    let env: serde_json::Value =
        serde_json::from_slice(client.get("/api/x").send().body()).unwrap();
    assert_eq!(env["script_name"], "/api");
}

#[test]
fn answers_400_for_a_request_without_host_and_reads_no_further() {
    let out = text(
        &TestClient::new(target)
            .raw(b"GET /bad HTTP/1.1\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"),
    );
    assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out:?}");
    assert!(out.contains("\r\nconnection: close\r\n"), "{out:?}");
    assert_eq!(out.matches("HTTP/1.1 ").count(), 1, "{out:?}");
}

#[test]
fn answers_400_for_a_truncated_head() {
    let out = text(&TestClient::new(target).raw(b"GET / HTTP/1.1\r\nHost: x\r\n"));
    assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out:?}");
}

#[test]
fn answers_431_for_a_flood_of_blank_lines() {
    // Blank lines before a request line are skipped, but count against the head limit: an
    // endless stream of them is refused, not read forever.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(TestClient::new(target).raw(&b"\r\n".repeat(50_000)));
    });
    let out = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the flood is answered");
    assert!(out.starts_with(b"HTTP/1.1 431 "), "{:?}", text(&out));
}

#[test]
fn chunk_extensions_cannot_make_a_small_body_expensive() {
    // 2,000 one-byte chunks with 4,000 bytes of extension each: 8 MB to read for 2 KB of
    // data. The extensions are bounded per body, so this is refused early, even by a
    // gateway that never reads its body (the server drains it), and nothing behind it is
    // served.
    let noread = |req: Request<'_>| Response::new(Body::from(req.uri().to_string()));
    let chunk = format!("1;{}\r\nx\r\n", "e".repeat(4000));
    let raw = format!(
        "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{}0\r\n\r\n\
         GET /next HTTP/1.1\r\nHost: x\r\n\r\n",
        chunk.repeat(2000)
    );
    let out = text(&TestClient::new(noread).raw(raw.as_bytes()));
    assert!(!out.contains("/next"), "{:?}", &out[..out.len().min(400)]);
    let echoed = text(&TestClient::new(echo).raw(raw.as_bytes()));
    assert!(
        echoed.starts_with("HTTP/1.1 400 "),
        "{:?}",
        &echoed[..echoed.len().min(400)]
    );
}

#[test]
fn a_panic_outside_the_gateway_closes_the_connection_without_unwinding() {
    // A body whose Drop panics, on a 1xx the server replaces with 500: the panic comes
    // while the server drops it. The connection closes; the caller's thread (here, the
    // test's; in a server, a worker) goes on.
    struct PanicsOnDrop;
    impl Iterator for PanicsOnDrop {
        type Item = std::io::Result<sgi::http::header::HeaderValue>;
        fn next(&mut self) -> Option<Self::Item> {
            None
        }
    }
    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            panic!("a body drop panic the test asked for");
        }
    }
    let client = TestClient::new(|_req: Request<'_>| {
        let body = Body::from_iter(PanicsOnDrop.map(|r| r.map(|v| v.as_bytes().to_vec().into())));
        let mut res = Response::new(body);
        *res.status_mut() = StatusCode::CONTINUE;
        res
    })
    .propagate_panics(false);
    let out = client.raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(!text(&out).contains("HTTP/1.1 100"), "{:?}", text(&out));
}

#[test]
fn answers_413_for_a_body_over_max_body() {
    let client = TestClient::with_config(echo, Config::default().max_body(Some(4)));
    assert_eq!(client.post("/").body("too long").send().status(), 413);
    let chunked = client
        .post("/")
        .header("Transfer-Encoding", "chunked")
        .body("3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n")
        .send();
    assert_eq!(chunked.status(), 413);
    assert_eq!(chunked.headers()["connection"], "close");
}

#[test]
fn answers_500_when_the_gateway_panics() {
    let res = TestClient::new(|_req: Request<'_>| -> Response {
        panic!("a gateway panic the test asked for")
    })
    .propagate_panics(false)
    .get("/")
    .send();
    assert_eq!(res.status(), 500);
    assert_eq!(res.headers()["connection"], "close");
}

/// By default a panic in the gateway's code fails the test that drove it, wherever it
/// comes: the call, a piece of the body, the body's `Drop` (a `Validate` rule broken in a
/// handler must not pass as a `500`).
#[test]
fn a_gateway_panic_is_raised_again_in_the_test() {
    use sgi::middleware::Validate;
    fn raised(client: &TestClient, target: &str) -> String {
        let payload = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            client.get(target).send();
        }))
        .expect_err("the panic reaches the test");
        match payload.downcast::<String>() {
            Ok(message) => *message,
            Err(payload) => payload.downcast::<&str>().unwrap().to_string(),
        }
    }
    let client = TestClient::new(|req: Request<'_>| -> Response {
        match req.uri().path() {
            "/call" => panic!("in the call"),
            "/piece" => Response::new(Body::from_iter(std::iter::from_fn(|| -> Option<_> {
                panic!("in a piece")
            }))),
            _ => Response::new(Body::from("fine")),
        }
    });
    assert_eq!(raised(&client, "/call"), "in the call");
    assert_eq!(raised(&client, "/piece"), "in a piece");
    // The client serves on afterwards.
    assert_eq!(client.get("/").send().text(), "fine");
    // A Validate rule (no Content-Type on a body) fails the test, naming the rule.
    let validated = TestClient::new(Validate::new(|_req: Request<'_>| {
        let mut res = Response::new(Body::from("oops"));
        *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        res
    }));
    let message = raised(&validated, "/");
    assert!(message.contains("content-type"), "{message}");
}

#[test]
fn a_cut_body_is_reported_incomplete_whatever_its_framing() {
    let client = TestClient::new(|_req: Request<'_>| {
        let pieces = vec![Ok("partial".into()), Err(std::io::Error::other("gone"))];
        Response::new(Body::from_iter(pieces))
    });
    let chunked = client.get("/").send();
    assert_eq!(
        (chunked.text().as_str(), chunked.is_complete()),
        ("partial", false)
    );
    // HTTP/1.0: the body ends with the connection, which a reset tells apart from a close.
    let closed = client.get("/").http10().send();
    assert_eq!(
        (closed.text().as_str(), closed.is_complete()),
        ("partial", false)
    );
    let whole =
        TestClient::new(|_req: Request<'_>| Response::new(Body::from_iter([Ok("all".into())])));
    assert!(whole.get("/").http10().send().is_complete());
}

#[test]
fn a_response_with_many_header_fields_is_read_whole() {
    // Both servers send 150 fields; a test client must not call that malformed.
    let res = TestClient::new(|_req: Request<'_>| {
        let mut res = Response::new(Body::from("ok"));
        for i in 0..150 {
            let name = sgi::http::HeaderName::try_from(format!("x-field-{i}")).unwrap();
            res.headers_mut().insert(name, "v".parse().unwrap());
        }
        res
    })
    .get("/")
    .send();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-field-149"], "v");
    assert_eq!(res.text(), "ok");
}

#[test]
#[should_panic(expected = "no response")]
fn a_request_the_server_cannot_answer_says_so_instead_of_blaming_the_server() {
    // The body is shorter than its Content-Length and the test client's input ends after
    // it, as if the client had closed: no server answers that.
    TestClient::new(echo)
        .post("/")
        .header("content-length", "10")
        .body("abc")
        .send();
}

#[test]
#[should_panic(expected = "field value")]
fn a_header_value_cannot_smuggle_a_second_field() {
    let _ = TestClient::new(echo)
        .get("/")
        .header("x-a", "1\r\nx-injected: 2");
}

#[test]
#[should_panic(expected = "percent-encode")]
fn a_target_with_a_space_is_refused_as_no_real_client_would_send_it() {
    let _ = TestClient::new(echo).get("/users/a b");
}

/// A `/proc` file reports a size of 0 but reads text: it is sent to its end, not as an
/// empty body.
#[cfg(target_os = "linux")]
#[test]
fn a_file_that_is_not_a_regular_file_is_sent_as_it_reads() {
    let client = TestClient::new(|req: Request<'_>| {
        let file = std::fs::File::open("/proc/self/status").unwrap();
        let body = match req.uri().path() {
            "/range" => Body::from_file_range(file, 0, 5).unwrap(),
            _ => Body::from_file(file).unwrap(),
        };
        Response::new(body)
    });
    let res = client.get("/").send();
    assert_eq!(res.status(), 200);
    let text = res.text();
    assert!(
        text.starts_with("Name:") && text.contains("\nPid:"),
        "{text:?}"
    );
    assert_eq!(client.get("/range").send().text(), "Name:");

    // An empty regular file still goes out with its length.
    let path = std::env::temp_dir().join(format!("sgi-empty-{}", std::process::id()));
    std::fs::File::create(&path).unwrap();
    let file = path.clone();
    let client = TestClient::new(move |_req: Request<'_>| {
        Response::new(Body::from_file(std::fs::File::open(&file).unwrap()).unwrap())
    });
    let res = client.get("/").send();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(res.headers()["content-length"], "0");
    assert_eq!(res.text(), "");
}

#[test]
fn every_method_shortcut_sends_its_method_and_a_peer_reaches_the_environ() {
    use sgi::RequestExt;
    let client = TestClient::new(|req: Request<'_>| {
        let peer = req.environ().peer_addr.map(|p| p.to_string());
        Response::new(Body::from(format!(
            "{} {} {peer:?}",
            req.method(),
            req.uri()
        )))
    });
    assert_eq!(client.patch("/p").send().text(), "PATCH /p None");
    assert_eq!(client.options("*").send().text(), "OPTIONS * None");
    let peer = "[2001:db8::1]:443".parse().unwrap();
    assert_eq!(
        client.delete("/d").peer(peer).send().text(),
        "DELETE /d Some(\"[2001:db8::1]:443\")"
    );
}

/// A client that does not propagate, used inside another's gateway, keeps its gateway's
/// panics to itself: the outer test sees the inner `500`, not the inner panic.
#[test]
fn an_inner_client_that_does_not_propagate_keeps_its_panics_to_itself() {
    fn broken(_req: Request<'_>) -> Response {
        panic!("the inner handler's bug")
    }
    let outer = TestClient::new(|_req: Request<'_>| -> Response {
        let res = TestClient::new(broken)
            .propagate_panics(false)
            .get("/")
            .send();
        Response::new(Body::from(format!("inner said {}", res.status().as_u16())))
    });
    assert_eq!(outer.get("/").send().text(), "inner said 500");
}
