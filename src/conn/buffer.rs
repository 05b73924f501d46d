//! The per-connection read buffer: filled from the socket, consumed from the front.

use std::io;

use crate::transport::Transport;

const INITIAL: usize = 8 * 1024;

#[derive(Debug, Default)]
pub(crate) struct ReadBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuf {
    pub(crate) fn filled(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub(crate) fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Gives the storage back when nothing is buffered, so an idle connection holds none.
    pub(crate) fn release(&mut self) -> Option<Vec<u8>> {
        if self.is_empty() && !self.data.is_empty() {
            self.start = 0;
            self.end = 0;
            Some(std::mem::take(&mut self.data))
        } else {
            None
        }
    }

    /// Lends storage to an empty buffer (a recycled one, from the event loop).
    pub(crate) fn provide(&mut self, storage: Vec<u8>) {
        if self.data.is_empty() {
            self.data = storage;
        }
    }

    /// Makes room for at least one more read, growing up to `max` bytes of buffered data.
    fn reserve(&mut self, max: usize) -> io::Result<()> {
        if self.data.is_empty() {
            self.data.resize(INITIAL, 0);
        }
        if self.end < self.data.len() {
            return Ok(());
        }
        if self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            return Ok(());
        }
        if self.data.len() >= max {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "read buffer full",
            ));
        }
        let grown = (self.data.len() * 2).min(max.max(INITIAL));
        self.data.resize(grown, 0);
        Ok(())
    }

    /// One read into free space, by `read` (a [`Transport`] method). Returns bytes read;
    /// 0 is the peer's end of stream.
    pub(crate) fn read_with<T: Transport + ?Sized>(
        &mut self,
        io: &mut T,
        max: usize,
        read: impl Fn(&mut T, &mut [u8]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        self.reserve(max)?;
        let n = loop {
            match read(io, &mut self.data[self.end..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        self.end += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Memory;

    #[test]
    fn compacts_before_growing_and_stops_at_the_limit() {
        let mut mem = Memory {
            input: io::Cursor::new(vec![7; 40_000]),
            ..Default::default()
        };
        let mut buf = ReadBuf::default();
        let read = |m: &mut Memory, b: &mut [u8]| m.read_now(b);
        buf.read_with(&mut mem, 16 * 1024, read).unwrap();
        assert_eq!(buf.filled().len(), INITIAL);
        buf.consume(100);
        buf.read_with(&mut mem, 16 * 1024, read).unwrap();
        assert_eq!(buf.filled().len(), INITIAL, "compacted and refilled");
        buf.read_with(&mut mem, 16 * 1024, read).unwrap();
        assert_eq!(buf.filled().len(), 16 * 1024);
        assert!(buf.read_with(&mut mem, 16 * 1024, read).is_err());
    }
}
