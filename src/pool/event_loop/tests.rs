use super::*;
use crate::server::bind;
use crate::Config;
use std::io::Read;

/// A loop on a fresh listener, with nobody serving its queue.
fn lonely_loop() -> (Loop, std::net::SocketAddr) {
    let listener = bind("127.0.0.1:0", 16).unwrap();
    let addr = listener.local_addr().unwrap();
    let shared = Shared::new(Config::default(), addr);
    let (poll, waker) = listening_poll(&listener, &shared, LISTENER, WAKE).unwrap();
    let jobs = Arc::new(JobQueue::new(8, waker, false));
    let (_, done) = crossbeam_channel::unbounded();
    let linger = Linger::start(Duration::from_secs(1), 16).unwrap();
    (
        Loop::new(poll, listener, &shared, &jobs, done, linger, 64),
        addr,
    )
}

/// Turns the loop until it holds `n` open connections (generous deadline).
fn accept(lp: &mut Loop, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while lp.open < n {
        assert!(Instant::now() < deadline, "the loop never accepted");
        lp.turn(false);
        std::thread::yield_now();
    }
}

fn token_of_the_only_connection(lp: &Loop) -> usize {
    let live: Vec<usize> = (lp.slots.iter().enumerate())
        .filter(|(_, slot)| matches!(slot, Slot::Live { .. }))
        .map(|(token, _)| token)
        .collect();
    assert_eq!(live.len(), 1);
    live[0]
}

/// Half of a small body, sent: the request's client, once the loop waits for the rest.
fn half_a_body(lp: &mut Loop, addr: std::net::SocketAddr, cork: bool) -> TcpStream {
    use std::io::Write;
    let mut client = TcpStream::connect(addr).unwrap();
    socket2::SockRef::from(&client).set_cork(cork).unwrap();
    client
        .write_all(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabcde")
        .unwrap();
    if cork {
        // Held back until the client's end, which goes with it.
        return client;
    }
    accept(lp, 1);
    let token = token_of_the_only_connection(lp);
    let awaiting = |lp: &Loop| matches!(&lp.slots[token], Slot::Live { conn: Some(c), .. } if c.awaiting_body());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !awaiting(lp) {
        assert!(Instant::now() < deadline, "the loop never read the head");
        lp.turn(false);
    }
    client
}

#[test]
fn a_client_reset_while_its_small_body_is_awaited_is_counted_aborted() {
    let (mut lp, addr) = lonely_loop();
    let client = half_a_body(&mut lp, addr, false);
    let deadline = Instant::now() + Duration::from_secs(10);
    socket2::SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(client);
    while lp.open > 0 {
        assert!(Instant::now() < deadline, "the loop never saw the reset");
        lp.turn(false);
    }
    let stats = &lp.shared.stats;
    assert_eq!(stats.aborted_requests.load(Relaxed), 1);
    assert_eq!(
        stats.served.load(Relaxed) + stats.rejected_requests.load(Relaxed),
        0
    );
}

/// A lonely loop with a cap of one connection, and that connection, mid-head (so not
/// idle: no newcomer takes its place).
fn at_a_cap_of_one() -> (Loop, std::net::SocketAddr, TcpStream) {
    use std::io::Write;
    let (mut lp, addr) = lonely_loop();
    lp.max_connections = 1;
    let mut first = TcpStream::connect(addr).unwrap();
    first.write_all(b"GET / HT").unwrap();
    accept(&mut lp, 1);
    (lp, addr, first)
}

/// The cap warning is throttled to once a second; what it held back when the cap
/// stopped being hit is still told, at a tick a second later.
#[test]
fn the_connection_cap_held_back_in_a_burst_is_told_when_it_ends() {
    const WARNING: &str = "connection limit reached";
    let ((), log) = crate::server::captured_log(|| {
        let (mut lp, addr, first) = at_a_cap_of_one();
        // At the cap: told once, then held for the rest of the second.
        let _newcomer = TcpStream::connect(addr).unwrap();
        for _ in 0..3 {
            lp.accepting = true;
            lp.turn(false);
        }
        assert!(lp.at_cap.held_for().is_some(), "nothing was held back");
        // The cap is no longer hit once `first` is gone and the newcomer is in.
        drop(first);
        let deadline = Instant::now() + Duration::from_secs(10);
        while lp.at_cap.held_for().is_some() {
            assert!(
                Instant::now() < deadline,
                "the held warnings were never told"
            );
            lp.turn(true);
        }
    });
    let lines = log.lines().filter(|line| line.contains(WARNING)).count();
    assert_eq!(lines, 2, "{log}");
    assert!(
        crate::server::tests::times_told(&log, WARNING) >= 3,
        "{log}"
    );
}

/// At the cap with nobody waiting to come in, the loop does not go on warning (it
/// counted its turns at the cap, ten a second from the timer alone).
#[test]
fn the_connection_cap_is_not_told_again_while_nobody_waits() {
    const WARNING: &str = "connection limit reached";
    let ((), log) = crate::server::captured_log(|| {
        let (mut lp, _, _only) = at_a_cap_of_one();
        let quiet = Instant::now();
        while quiet.elapsed() < Duration::from_millis(1500) {
            lp.turn(true);
        }
        assert!(
            lp.at_cap.held_for().is_none(),
            "turns at the cap were counted"
        );
    });
    let lines = log.lines().filter(|line| line.contains(WARNING)).count();
    assert!(lines <= 1, "{log}");
}

/// A client that ends its side before the rest of a small body the loop waits for
/// (whether the end comes later or with the head) gets no gateway call: counted
/// aborted, as after a reset, and nothing is queued.
#[test]
fn a_client_ending_its_side_mid_body_is_counted_aborted_and_not_queued() {
    let (mut lp, addr) = lonely_loop();
    for corked in [false, true] {
        let client = half_a_body(&mut lp, addr, corked);
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let aborted = lp.shared.stats.aborted_requests.load(Relaxed);
        let deadline = Instant::now() + Duration::from_secs(10);
        while lp.shared.stats.aborted_requests.load(Relaxed) == aborted {
            assert!(Instant::now() < deadline, "the request was never counted");
            lp.turn(false);
        }
        assert_eq!(lp.open, 0, "corked: {corked}");
        assert!(
            lp.jobs.is_empty() && lp.ready.is_empty(),
            "corked: {corked}"
        );
    }
    let stats = &lp.shared.stats;
    assert_eq!(stats.aborted_requests.load(Relaxed), 2);
    assert_eq!(
        stats.served.load(Relaxed) + stats.rejected_requests.load(Relaxed),
        0
    );
}

#[test]
fn a_panic_on_one_connection_closes_it_and_the_loop_goes_on() {
    let (mut lp, addr) = lonely_loop();
    // A panic with the connection in its slot, and one after it was taken out (it is
    // dropped in the unwind, and only its slot and socket remain).
    for take_it_out in [false, true] {
        let mut client = TcpStream::connect(addr).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        accept(&mut lp, 1);
        let token = token_of_the_only_connection(&lp);
        lp.isolated(token, |lp| {
            let _conn = take_it_out.then(|| lp.take(token));
            panic!("a bug in head parsing");
        });
        assert_eq!(lp.open, 0, "the connection stayed open");
        assert_eq!(lp.shared.stats.open.load(Relaxed), 0);
        assert!(matches!(lp.slots[token], Slot::Vacant { .. }));
        // The client sees its connection end, and the next one is accepted.
        let mut rest = Vec::new();
        assert_eq!(client.read_to_end(&mut rest).unwrap_or(0), 0);
    }
}
