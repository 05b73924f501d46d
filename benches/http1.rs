//! Micro-benchmarks of the HTTP/1.1 core: head parsing, chunked decoding, response
//! serialization, and whole requests through an in-memory connection.
//!
//! `cargo bench --bench http1`; instruction counts (stable on a noisy machine) come from
//! `valgrind --tool=callgrind` on the bench binary, see BENCHMARKS.md.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use sgi::http::{HeaderMap, HeaderValue, Method, StatusCode, Version};
use sgi::http1::{parse_request_head, plan_response, write_response_head, ChunkedDecoder, Step};
use sgi::{Body, Limits, Request, Response, TestClient};

const SMALL: &[u8] =
    b"GET / HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n";

fn large_head() -> Vec<u8> {
    let mut head = b"GET /search/results?q=server+gateway+interface&page=2&lang=en HTTP/1.1\r\n\
Host: www.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Referer: https://www.example.com/search?q=server+gateway\r\n\
Connection: keep-alive\r\n\
Upgrade-Insecure-Requests: 1\r\n\
Sec-Fetch-Dest: document\r\n\
Sec-Fetch-Mode: navigate\r\n\
Sec-Fetch-Site: same-origin\r\n\
Sec-Fetch-User: ?1\r\n\
Priority: u=0, i\r\n"
        .to_vec();
    head.extend_from_slice(b"Cookie: ");
    for i in 0..12 {
        head.extend_from_slice(
            format!("session_part_{i}=0123456789abcdef0123456789abcdef; ").as_bytes(),
        );
    }
    head.extend_from_slice(b"theme=dark\r\n\r\n");
    head
}

fn heads(c: &mut Criterion) {
    let limits = Limits::default();
    let large = large_head();
    let mut group = c.benchmark_group("head");
    group.throughput(Throughput::Elements(1));
    group.bench_function("small", |b| {
        b.iter(|| {
            parse_request_head(black_box(SMALL), &limits)
                .unwrap()
                .unwrap()
        })
    });
    group.bench_function("large", |b| {
        b.iter(|| {
            parse_request_head(black_box(&large), &limits)
                .unwrap()
                .unwrap()
        })
    });
    group.finish();
}

fn chunked(c: &mut Criterion) {
    let limits = Limits::default();
    let mut body = Vec::new();
    for _ in 0..64 {
        body.extend_from_slice(b"400\r\n");
        body.extend_from_slice(&[b'x'; 1024]);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let mut group = c.benchmark_group("chunked");
    group.throughput(Throughput::Bytes(64 * 1024));
    group.bench_function("64x1KiB", |b| {
        b.iter(|| {
            let mut dec = ChunkedDecoder::new();
            let mut buf = black_box(&body[..]);
            let mut total = 0;
            loop {
                match dec.step(buf, &limits).unwrap() {
                    Step::Framing(n) => buf = &buf[n..],
                    Step::Data(n) => {
                        total += n;
                        dec.consume(n);
                        buf = &buf[n..];
                    }
                    Step::Done(_) | Step::NeedMore => break total,
                }
            }
        })
    });
    group.finish();
}

fn responses(c: &mut Criterion) {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("text/plain"));
    let mut out = Vec::with_capacity(256);
    c.bench_function("response/head", |b| {
        b.iter(|| {
            out.clear();
            let plan = plan_response(
                &Method::GET,
                Version::HTTP_11,
                true,
                StatusCode::OK,
                &headers,
                Some(13),
            );
            write_response_head(
                &mut out,
                StatusCode::OK,
                black_box(&headers),
                &plan,
                Version::HTTP_11,
            );
            out.len()
        })
    });
}

fn connection(c: &mut Criterion) {
    let hello = |_req: Request<'_>| {
        sgi::http::Response::builder()
            .header("content-type", "text/plain")
            .body(Body::from("Hello, World!"))
            .unwrap()
    };
    let client = TestClient::new(hello);
    let pipelined: Vec<u8> = SMALL.repeat(16);
    let mut group = c.benchmark_group("connection");
    group.throughput(Throughput::Elements(1));
    group.bench_function("hello", |b| b.iter(|| client.raw(black_box(SMALL))));
    group.throughput(Throughput::Elements(16));
    group.bench_function("hello_pipelined_16", |b| {
        b.iter(|| client.raw(black_box(&pipelined)))
    });
    group.finish();
    let _: Option<Response> = None;
}

criterion_group!(benches, heads, chunked, responses, connection);
criterion_main!(benches);
