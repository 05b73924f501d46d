//! A whole connection fed arbitrary bytes in arbitrary pieces: it never panics or hangs, and
//! what the server writes is always a sequence of well-formed HTTP/1.1 responses, one per
//! request the gateway was called for, plus at most the server's own final rejection.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sgi_fuzz::{check_responses, client, pieces};

fuzz_target!(|data: &[u8]| {
    let (client, log) = client();
    log.lock().unwrap().clear();
    let out = client.raw_chunks(&pieces(data));
    let heads = std::mem::take(&mut *log.lock().unwrap());
    if let Err(why) = check_responses(&out, &heads) {
        panic!(
            "{why}\ninput: {:?}\noutput: {:?}",
            String::from_utf8_lossy(data),
            String::from_utf8_lossy(&out)
        );
    }
});
