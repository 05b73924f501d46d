//! `ChunkedDecoder` over arbitrary bytes fed in arbitrary pieces: it never panics, every step
//! makes progress (so no loop runs forever), the body it yields is no longer than its input,
//! and the outcome does not depend on how the input was cut.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sgi::http1::{ChunkedDecoder, Step};
use sgi::Limits;
use sgi_fuzz::{pieces, small_limits};

#[derive(Debug, PartialEq)]
enum Outcome {
    Done { body: Vec<u8>, left: usize },
    Failed(String),
    Incomplete(Vec<u8>),
}

fuzz_target!(|data: &[u8]| {
    let pieces = pieces(data);
    let total: usize = pieces.iter().map(|p| p.len()).sum();
    let limits = small_limits();
    let split = decode(&pieces, &limits, data.first().copied().unwrap_or(0));
    let whole = decode(&[&data[data.len().min(1)..]], &limits, 0);
    assert_eq!(split, whole, "split differently: {pieces:?}");
    if let Outcome::Done { body, .. } | Outcome::Incomplete(body) = &split {
        assert!(
            body.len() <= total,
            "{} body bytes from {total}",
            body.len()
        );
    }
});

/// Decodes `pieces` in order, consuming data in parts picked by `seed` (0: all at once).
fn decode(pieces: &[&[u8]], limits: &Limits, seed: u8) -> Outcome {
    let mut dec = ChunkedDecoder::new();
    let mut buf = Vec::new();
    let mut body = Vec::new();
    let mut next = pieces.iter();
    let total: usize = pieces.iter().map(|p| p.len()).sum();
    // Each round takes a byte or a piece, so more rounds than this is a loop that never ends.
    let mut budget = 2 * total + pieces.len() + 2;
    loop {
        budget = budget
            .checked_sub(1)
            .expect("the decoder stopped making progress");
        match dec.step(&buf, limits) {
            Ok(Step::Framing(n)) => {
                assert!(n > 0 && n <= buf.len(), "Framing({n}) of {}", buf.len());
                buf.drain(..n);
            }
            Ok(Step::Data(n)) => {
                assert!(n > 0 && n <= buf.len(), "Data({n}) of {}", buf.len());
                let take = if seed >> 3 == 0 {
                    n
                } else {
                    1 + (seed as usize >> 3) % n
                };
                body.extend_from_slice(&buf[..take]);
                dec.consume(take);
                buf.drain(..take);
            }
            Ok(Step::Done(n)) => {
                assert!(n <= buf.len(), "Done({n}) of {}", buf.len());
                assert!(dec.is_done());
                assert_eq!(dec.step(&buf[n..], limits).ok(), Some(Step::Done(0)));
                let left = buf.len() - n + next.map(|p| p.len()).sum::<usize>();
                return Outcome::Done { body, left };
            }
            Ok(Step::NeedMore) => match next.next() {
                Some(piece) => buf.extend_from_slice(piece),
                None => return Outcome::Incomplete(body),
            },
            Err(e) => return Outcome::Failed(e.to_string()),
        }
    }
}
