//! The streaming benchmark's yardstick: a minimal HTTP/1.1 server on `std::net` alone (no sgi
//! types), answering every request on a keep-alive connection with a fixed head and a 1 GiB
//! body, so that `wrk` shows what this machine moves without a gateway in the way.
//!
//! ```sh
//! cargo build --release --example raw_stream
//! ./target/release/examples/raw_stream --port 18300 --mode sendfile --file /tmp/sgi-stream/big.bin
//! ./target/release/examples/raw_stream --port 18301 --mode write
//! ./target/release/examples/raw_stream --port 18302 --mode copy
//! ./target/release/examples/raw_stream --port 18303 --mode write-chunked
//! ./target/release/examples/raw_stream --port 18304 --mode write-chunked-aligned
//! wrk -t1 -c1 -d10s http://127.0.0.1:18300/
//! ```
//!
//! `--mode sendfile` opens the file per request and sends it with `sendfile(2)` (declared
//! here from the C library std already links; Linux only); the file is created (1 GiB of
//! `x`) if it is missing or has another size. `--mode copy` sends the file with
//! `std::io::copy` from the `File` to the `TcpStream` instead (as `Body::from_file` does):
//! with the toolchains measured this is an 8 KiB `read`/`sendto` loop, not `sendfile`, see
//! BENCHMARKS.md. `--mode write` writes one 64 KiB buffer 16,384 times. `--mode write-chunked`
//! sends the same 16,384 pieces as chunks (`Transfer-Encoding: chunked`), each chunk's size
//! line, piece and CRLF in one `writev`: the same bytes on the wire as sgi's chunked iterator
//! body, so that the cost of the framing itself (paid mostly by the receiver) is not counted
//! against the server. `--mode write-chunked-aligned` pads each size line with leading zeros
//! (legal, RFC 9112 §7.1, but longer than some clients accept) so that a chunk's framing is
//! 32 bytes: every piece then sits at the same alignment in the byte stream, as in the plain
//! write loop. It measures what the framing's shifting alignment costs the receiver; it is not
//! a way to send chunks to real clients. One thread per connection; the request is read up to its blank line and otherwise ignored (wrk sends no
//! request bodies). Not a server for anything but this measurement.

use std::ffi::c_int;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const PIECE: usize = 64 * 1024;
const PIECES: usize = 16 * 1024;
const LEN: u64 = (PIECE * PIECES) as u64; // 1 GiB
const CHUNKED_HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ntransfer-encoding: chunked\r\n\r\n";
const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: 1073741824\r\n\r\n";

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Sendfile,
    Copy,
    Write,
    WriteChunked,
    WriteChunkedAligned,
}

extern "C" {
    // glibc/musl on 64-bit Linux: off_t is i64.
    fn sendfile(out_fd: c_int, in_fd: c_int, offset: *mut i64, count: usize) -> isize;
}

fn main() -> io::Result<()> {
    let mut bind = "127.0.0.1:8000".to_string();
    let mut mode = Mode::Sendfile;
    let mut path = PathBuf::from("/tmp/sgi-stream/big.bin");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--bind" => bind = value(),
            "--port" => bind = format!("127.0.0.1:{}", value()),
            "--mode" => {
                mode = match value().as_str() {
                    "sendfile" => Mode::Sendfile,
                    "copy" => Mode::Copy,
                    "write" => Mode::Write,
                    "write-chunked" => Mode::WriteChunked,
                    "write-chunked-aligned" => Mode::WriteChunkedAligned,
                    other => panic!(
                        "unknown --mode {other:?} (sendfile, copy, write, write-chunked or \
                         write-chunked-aligned)"
                    ),
                }
            }
            "--file" => path = value().into(),
            other => panic!("unknown argument {other:?} (--bind/--port, --mode, --file)"),
        }
    }
    if matches!(mode, Mode::Sendfile | Mode::Copy) {
        ensure_file(&path)?;
    }
    let path = Arc::new(path);
    let listener = TcpListener::bind(&bind)?;
    println!("listening on http://{}", listener.local_addr()?);
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let path = Arc::clone(&path);
        std::thread::spawn(move || {
            let _ = serve(stream, mode, &path);
        });
    }
    Ok(())
}

fn ensure_file(path: &Path) -> io::Result<()> {
    if std::fs::metadata(path)
        .map(|m| m.len() == LEN)
        .unwrap_or(false)
    {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = File::create(path)?;
    let piece = vec![b'x'; PIECE];
    for _ in 0..PIECES {
        file.write_all(&piece)?;
    }
    file.sync_all()
}

fn serve(mut stream: TcpStream, mode: Mode, path: &Path) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let piece = vec![b'x'; PIECE];
    let mut buf = vec![0u8; 16 * 1024];
    let mut filled = 0;
    loop {
        // Read up to the end of one request head; keep whatever follows (pipelining).
        let end = loop {
            if let Some(i) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if filled == buf.len() {
                return Ok(()); // head too large: just drop the connection
            }
            let n = stream.read(&mut buf[filled..])?;
            if n == 0 {
                return Ok(());
            }
            filled += n;
        };
        buf.copy_within(end..filled, 0);
        filled -= end;

        stream.write_all(
            if matches!(mode, Mode::WriteChunked | Mode::WriteChunkedAligned) {
                CHUNKED_HEAD
            } else {
                HEAD
            },
        )?;
        match mode {
            Mode::Sendfile => {
                let file = File::open(path)?;
                let mut offset: i64 = 0;
                while (offset as u64) < LEN {
                    let left = (LEN - offset as u64) as usize;
                    // SAFETY: both descriptors are open for the call; `offset` is a valid i64.
                    let n = unsafe {
                        sendfile(stream.as_raw_fd(), file.as_raw_fd(), &mut offset, left)
                    };
                    if n < 0 {
                        let e = io::Error::last_os_error();
                        if e.kind() == io::ErrorKind::Interrupted {
                            continue;
                        }
                        return Err(e);
                    }
                    if n == 0 {
                        return Err(io::Error::other("file is shorter than 1 GiB"));
                    }
                }
            }
            Mode::Copy => {
                let mut file = File::open(path)?;
                if io::copy(&mut file, &mut stream)? != LEN {
                    return Err(io::Error::other("file is not 1 GiB"));
                }
            }
            Mode::Write => {
                for _ in 0..PIECES {
                    stream.write_all(&piece)?;
                }
            }
            Mode::WriteChunked => {
                for _ in 0..PIECES {
                    write_all_vectored(&mut stream, &[b"10000\r\n", &piece, b"\r\n"])?;
                }
                stream.write_all(b"0\r\n\r\n")?;
            }
            Mode::WriteChunkedAligned => {
                // 23 zeros, then `10000` and CRLF, then CRLF after the piece: 32 bytes.
                const LINE: &[u8] = b"0000000000000000000000010000\r\n";
                const _: () = assert!(LINE.len() + 2 == 32);
                for _ in 0..PIECES {
                    write_all_vectored(&mut stream, &[LINE, &piece, b"\r\n"])?;
                }
                stream.write_all(b"0\r\n\r\n")?;
            }
        }
    }
}

/// Writes every byte of `parts` with `writev`, as a server sends one chunk (size line, data,
/// CRLF) without first copying it into one buffer.
fn write_all_vectored(stream: &mut TcpStream, parts: &[&[u8]]) -> io::Result<()> {
    let mut slices: Vec<io::IoSlice> = parts.iter().map(|p| io::IoSlice::new(p)).collect();
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        match stream.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => io::IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
