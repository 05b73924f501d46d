//! `parse_request_head` on arbitrary bytes: it never panics; a head it finds lies within the
//! input and parses the same from exactly its own bytes; and `find_head_end` resumed across
//! any prefixes answers what it answers for each prefix from scratch.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sgi::http1::{find_head_end, parse_request_head};
use sgi::{Error, Limits};
use sgi_fuzz::{same_head, small_limits};

fuzz_target!(|data: &[u8]| {
    for limits in [Limits::default(), small_limits()] {
        check_parse(data, &limits);
        check_resumed_scan(data, &limits);
    }
});

fn check_parse(data: &[u8], limits: &Limits) {
    let Ok(Some(head)) = parse_request_head(data, limits) else {
        return;
    };
    assert!(
        head.len <= data.len(),
        "head.len {} > {}",
        head.len,
        data.len()
    );
    let again = parse_request_head(&data[..head.len], limits)
        .expect("a head's own bytes parse")
        .expect("a head's own bytes are complete");
    assert!(same_head(&head, &again), "{head:?} != {again:?}");
}

/// Feeds growing prefixes ending around each line break, as a socket might deliver them.
fn check_resumed_scan(data: &[u8], limits: &Limits) {
    let outcome = |r: Result<Option<usize>, Error>| r.map_err(|e| e.status());
    let mut scanned = 0;
    let cuts = data
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == b'\n' || b == b'\r')
        .flat_map(|(i, _)| [i, i + 1])
        .chain([data.len()]);
    let mut last = 0;
    for cut in cuts {
        if cut < last || cut > data.len() {
            continue;
        }
        last = cut;
        let resumed = outcome(find_head_end(&data[..cut], &mut scanned, limits));
        let fresh = outcome(find_head_end(&data[..cut], &mut 0, limits));
        assert_eq!(resumed, fresh, "at {cut}");
        if resumed != Ok(None) {
            break;
        }
    }
}
