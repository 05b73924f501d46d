//! The byte stream under a connection: a TCP socket, or memory for the test client.
//!
//! A pool connection's socket is non-blocking while the event loop owns it. A worker uses it
//! as it is and switches it to blocking (with a timeout) only when a read or write would
//! block, so the common small request costs no mode-switching system calls.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

pub(crate) trait Transport: Send {
    /// Reads, waiting up to `timeout` for bytes (`TimedOut` after it).
    fn read_wait(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize>;
    /// Reads what is there now (`WouldBlock` if nothing).
    fn read_now(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes what fits now, without waiting.
    fn write_now(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Whether the last read may have left bytes in the socket (it filled its buffer).
    fn maybe_readable(&self) -> bool {
        true
    }
    /// Makes the coming close a reset (RST) rather than an orderly end (FIN): for a body
    /// delimited by the close, the only way to tell the client it was cut short.
    fn reset_on_close(&mut self) {}
    /// Whether [`reset_on_close`](Self::reset_on_close) was called: such a connection must
    /// not linger, as a lingering close begins with an orderly end.
    fn resets_on_close(&self) -> bool {
        false
    }
    /// Writes, waiting up to the write timeout for room (`TimedOut` after it).
    fn write_wait(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
}

/// Writes every byte of `bufs`.
pub(crate) fn write_all_wait<T: Transport + ?Sized>(
    io: &mut T,
    mut bufs: &mut [IoSlice<'_>],
) -> io::Result<()> {
    while !bufs.is_empty() {
        match io.write_wait(bufs) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A TCP connection with its current mode remembered, so switching costs a system call only
/// when the mode actually changes.
#[derive(Debug)]
pub(crate) struct Socket {
    /// Shared so that shutdown can cut a connection a worker still holds.
    pub(crate) tcp: Arc<TcpStream>,
    nonblocking: bool,
    read_timeout: Option<Duration>,
    /// The last read filled its buffer, so more may be waiting without a new readiness edge.
    more: bool,
    /// The close is to be a reset (SO_LINGER 0 is set).
    reset: bool,
}

impl Socket {
    /// Wraps an accepted stream; `write_timeout` is set once, here.
    pub(crate) fn new(
        tcp: TcpStream,
        nonblocking: bool,
        write_timeout: Duration,
    ) -> io::Result<Socket> {
        tcp.set_nonblocking(nonblocking)?;
        tcp.set_nodelay(true)?;
        tcp.set_write_timeout(Some(write_timeout))?;
        Ok(Socket {
            tcp: Arc::new(tcp),
            nonblocking,
            read_timeout: None,
            more: false,
            reset: false,
        })
    }

    fn blocking(&mut self) -> io::Result<()> {
        if self.nonblocking {
            self.tcp.set_nonblocking(false)?;
            self.nonblocking = false;
        }
        Ok(())
    }

    /// Puts the socket back in the event loop's non-blocking mode.
    pub(crate) fn set_nonblocking(&mut self) -> io::Result<()> {
        if !self.nonblocking {
            self.tcp.set_nonblocking(true)?;
            self.nonblocking = true;
        }
        Ok(())
    }
}

fn timed_out(e: io::Error) -> io::Error {
    // SO_RCVTIMEO / SO_SNDTIMEO expiry surfaces as EAGAIN on a blocking socket.
    if e.kind() == io::ErrorKind::WouldBlock {
        io::Error::new(io::ErrorKind::TimedOut, "socket timed out")
    } else {
        e
    }
}

impl Socket {
    fn read_wait_inner(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        if self.nonblocking {
            match (&*self.tcp).read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.blocking()?,
                other => return other,
            }
        }
        let timeout = timeout.max(Duration::from_millis(1));
        if self.read_timeout != Some(timeout) {
            self.tcp.set_read_timeout(Some(timeout))?;
            self.read_timeout = Some(timeout);
        }
        (&*self.tcp).read(buf).map_err(timed_out)
    }
}

impl Transport for Socket {
    fn read_wait(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        let result = self.read_wait_inner(buf, timeout);
        self.more = matches!(result, Ok(n) if n == buf.len());
        result
    }

    fn read_now(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.set_nonblocking()?;
        let result = (&*self.tcp).read(buf);
        self.more = matches!(result, Ok(n) if n == buf.len());
        result
    }

    fn maybe_readable(&self) -> bool {
        self.more
    }

    fn reset_on_close(&mut self) {
        self.reset = socket2::SockRef::from(&*self.tcp)
            .set_linger(Some(Duration::ZERO))
            .is_ok();
    }

    fn resets_on_close(&self) -> bool {
        self.reset
    }

    fn write_now(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.set_nonblocking()?;
        (&*self.tcp).write_vectored(bufs)
    }

    fn write_wait(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if self.nonblocking {
            match (&*self.tcp).write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.blocking()?,
                other => return other,
            }
        }
        (&*self.tcp).write_vectored(bufs).map_err(timed_out)
    }
}

/// Cuts a connection at once, with a reset: its client sees the connection fail rather than
/// end, so it cannot take an answer cut short (a body delimited by the close) for a whole
/// one. A thread blocked reading or writing the socket wakes with an error. Used when the
/// shutdown deadline passes with requests still being served.
pub(crate) fn abort(tcp: &TcpStream) {
    let _ = socket2::SockRef::from(tcp).set_linger(Some(Duration::ZERO));
    if disconnect(tcp).is_err() {
        // Without a disconnect, at least no thread stays blocked on the socket.
        let _ = tcp.shutdown(std::net::Shutdown::Both);
    }
}

/// Dissolves a TCP connection while its descriptor stays open (other threads hold it):
/// connecting to an `AF_UNSPEC` address makes Linux abort it with a reset
/// (`tcp_disconnect`) and wake whoever waits on it.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn disconnect(tcp: &TcpStream) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let unspec = libc::sockaddr {
        sa_family: libc::AF_UNSPEC as libc::sa_family_t,
        sa_data: [0; 14],
    };
    let len = std::mem::size_of::<libc::sockaddr>() as libc::socklen_t;
    // SAFETY: the descriptor is open for the call (borrowed from `tcp`), and `unspec` is an
    // initialised `sockaddr` of `len` bytes that outlives the call, which only reads it.
    match unsafe { libc::connect(tcp.as_raw_fd(), &unspec, len) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

#[cfg(not(target_os = "linux"))]
fn disconnect(_tcp: &TcpStream) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// An in-memory connection: requests come from `input`, responses go to `output`.
#[derive(Debug, Default)]
pub(crate) struct Memory {
    pub(crate) input: io::Cursor<Vec<u8>>,
    /// Offsets into `input` that no read crosses, so tests and fuzzers can deliver the bytes
    /// in the pieces a network might.
    pub(crate) breaks: VecDeque<u64>,
    pub(crate) output: Vec<u8>,
    /// The connection was to end in a reset (a body delimited by the close was cut short).
    pub(crate) reset: bool,
}

impl Memory {
    fn read_input(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let at = self.input.position();
        while self.breaks.front().is_some_and(|&b| b <= at) {
            self.breaks.pop_front();
        }
        let room = self.breaks.front().map_or(buf.len(), |&b| {
            usize::try_from(b - at).map_or(buf.len(), |n| n.min(buf.len()))
        });
        self.input.read(&mut buf[..room])
    }
}

impl Transport for Memory {
    fn read_wait(&mut self, buf: &mut [u8], _timeout: Duration) -> io::Result<usize> {
        self.read_input(buf)
    }

    fn read_now(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_input(buf)
    }

    fn reset_on_close(&mut self) {
        self.reset = true;
    }

    fn resets_on_close(&self) -> bool {
        self.reset
    }

    fn write_wait(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.output.write_vectored(bufs)
    }

    fn write_now(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.output.write_vectored(bufs)
    }
}
