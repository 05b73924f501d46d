//! Panics the connection core catches, handed to a test that wants them.
//!
//! A server answers a panicking gateway with `500` (or cuts the response) and goes on. A
//! test run through the [`TestClient`](crate::TestClient) wants the opposite: the panic
//! (a broken `Validate` rule, a failed assertion in a handler) should fail the test. While
//! a [`Capture`] is alive on a thread, the first panic the core catches there is kept, for
//! the test client to raise again once the exchange is over.

use std::any::Any;
use std::cell::RefCell;

type Payload = Box<dyn Any + Send>;

thread_local! {
    /// `Some` while a capture is alive on this thread, holding the first panic caught.
    static CAUGHT: RefCell<Option<Option<Payload>>> = const { RefCell::new(None) };
}

/// What a panic said, for the log: its message when it has one.
pub(crate) fn message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Called where the core catches a panic of the gateway's code (or of its own).
pub(crate) fn caught(payload: Payload) {
    let unkept = CAUGHT.with(|caught| match &mut *caught.borrow_mut() {
        Some(slot @ None) => {
            *slot = Some(payload);
            None
        }
        _ => Some(payload),
    });
    // Dropped outside the borrow: a payload's own `Drop` may run code, and may panic in
    // turn (`panic_any` of a value that panics when dropped). Such a second payload is
    // leaked rather than dropped: nothing it does may unwind the thread that serves.
    if let Err(again) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(unkept)))
    {
        std::mem::forget(again);
    }
}

/// Keeps the panics caught on this thread while it lives.
pub(crate) struct Capture {
    /// The capture this one is nested in (a test client used inside a gateway).
    outer: Option<Option<Payload>>,
}

impl Capture {
    pub(crate) fn start() -> Capture {
        Capture {
            outer: CAUGHT.with(|caught| caught.borrow_mut().replace(None)),
        }
    }

    /// Ends the capture; the first panic caught, if any.
    pub(crate) fn finish(mut self) -> Option<Payload> {
        let outer = self.outer.take();
        let kept = CAUGHT.with(|caught| std::mem::replace(&mut *caught.borrow_mut(), outer));
        std::mem::forget(self);
        kept.flatten()
    }
}

impl Drop for Capture {
    /// Unwinding past a capture restores the one around it.
    fn drop(&mut self) {
        let outer = self.outer.take();
        let _ = CAUGHT.with(|caught| std::mem::replace(&mut *caught.borrow_mut(), outer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_that_panics_when_dropped_does_not_unwind_the_catcher() {
        struct Bomb;
        impl Drop for Bomb {
            fn drop(&mut self) {
                panic!("the payload panics when dropped, on purpose");
            }
        }
        // No capture on this thread: the payload is dropped at once.
        let unwound = std::panic::catch_unwind(|| caught(Box::new(Bomb))).is_err();
        assert!(
            !unwound,
            "a payload's panic unwound the thread that caught it"
        );
    }
}
