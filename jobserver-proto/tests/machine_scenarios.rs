//! Named behaviours of the token state machine, one scenario each.

use jobserver_proto::{
    Action, Failure, Machine, Outcome, Permit, ReleasePolicy, WaiterId, MAX_UNITS,
};

/// Drains all actions.
fn actions(m: &mut Machine) -> Vec<Action> {
    std::iter::from_fn(|| m.poll_action()).collect()
}

fn granted(m: &mut Machine, id: WaiterId) -> Permit {
    match m.take_outcome(id) {
        Outcome::Granted(p) => p,
        other => panic!("expected a grant, got {other:?}"),
    }
}

#[test]
fn implicit_slot_is_granted_first_without_io() {
    let mut m = Machine::new();
    let a = m.acquire(1);
    assert_eq!(actions(&mut m), [Action::Grant(a)]);
    let p = granted(&mut m, a);
    m.release(p);
    assert_eq!(actions(&mut m), [], "the implicit slot is never written");
    assert_eq!(m.stats().bytes_written, 0);
}

#[test]
fn read_asks_only_for_unmet_demand() {
    let mut m = Machine::new();
    let a = m.acquire(1);
    let _ = actions(&mut m);
    let _b = m.acquire(1);
    assert_eq!(actions(&mut m), [Action::Read { max: 1 }]);
    m.handle_would_block();
    let _c = m.acquire(3);
    assert_eq!(
        actions(&mut m),
        [],
        "no second read while waiting for readiness"
    );
    m.handle_readable();
    assert_eq!(actions(&mut m), [Action::Read { max: 4 }]);
    let _ = a;
}

#[test]
fn release_returns_byte_to_pipe_even_with_local_waiters() {
    let mut m = Machine::new();
    let a = m.acquire(1);
    let b = m.acquire(1);
    let _ = actions(&mut m);
    m.handle_read(b"x");
    assert_eq!(actions(&mut m), [Action::Grant(b)]);
    let pa = granted(&mut m, a);
    let pb = granted(&mut m, b);
    let c = m.acquire(1);
    assert_eq!(actions(&mut m), [Action::Read { max: 1 }]);
    m.handle_would_block();
    // b releases: its byte goes to the pipe although c waits.
    m.release(pb);
    assert_eq!(actions(&mut m), [Action::Write(b'x')]);
    // a releases: the implicit slot goes straight to c.
    m.release(pa);
    assert_eq!(actions(&mut m), [Action::Grant(c)]);
}

#[test]
fn hand_off_policy_keeps_the_byte_for_the_next_local_waiter() {
    let mut m = Machine::new().with_policy(ReleasePolicy::HandOff);
    let a = m.acquire(1);
    let b = m.acquire(1);
    let _ = actions(&mut m);
    m.handle_read(b"y");
    let _ = actions(&mut m);
    let _pa = granted(&mut m, a);
    let pb = granted(&mut m, b);
    let c = m.acquire(1);
    let _ = actions(&mut m);
    m.handle_would_block();
    m.release(pb);
    assert_eq!(actions(&mut m), [Action::Grant(c)]);
    assert_eq!(m.stats().bytes_written, 0);
}

#[test]
fn granted_then_cancelled_passes_the_token_on() {
    // ReturnToPipe: the byte goes back to the pipe.
    let mut m = Machine::new();
    let a = m.acquire(1);
    let b = m.acquire(1);
    let _ = actions(&mut m);
    m.handle_read(b"z");
    assert_eq!(actions(&mut m), [Action::Grant(b)]);
    m.cancel(b);
    assert_eq!(actions(&mut m), [Action::Write(b'z')]);
    assert_eq!(m.take_outcome(b), Outcome::Unknown);
    // A cancelled holder of the implicit slot passes it to the next request.
    let c = m.acquire(1);
    let _ = actions(&mut m);
    m.cancel(a);
    let acts = actions(&mut m);
    assert_eq!(acts, [Action::Grant(c)]);
}

#[test]
fn acquire_many_is_all_or_nothing_and_cancel_returns_partial_grants() {
    let mut m = Machine::new();
    let a = m.acquire(3);
    assert_eq!(actions(&mut m), [Action::Read { max: 2 }]);
    m.handle_read(b"p");
    assert_eq!(
        actions(&mut m),
        [Action::Read { max: 1 }],
        "not granted until all arrive"
    );
    assert_eq!(m.stats().reserved, 2);
    let b = m.acquire(1);
    let _ = actions(&mut m);
    m.cancel(a);
    // a's byte goes back; the implicit slot a held goes to b.
    assert_eq!(actions(&mut m), [Action::Write(b'p'), Action::Grant(b)]);
}

#[test]
fn eof_fails_waiters_and_later_requests_but_not_the_implicit_slot() {
    let mut m = Machine::new();
    let a = m.acquire(1);
    let b = m.acquire(1);
    let c = m.acquire(2);
    let _ = actions(&mut m);
    m.handle_eof();
    assert_eq!(
        actions(&mut m),
        [Action::Fail(b, Failure::Eof), Action::Fail(c, Failure::Eof)]
    );
    assert_eq!(m.take_outcome(b), Outcome::Failed(Failure::Eof));
    let pa = granted(&mut m, a);
    // With the implicit slot taken, a new request fails at once instead of hanging.
    let d = m.acquire(1);
    assert_eq!(actions(&mut m), [Action::Fail(d, Failure::Eof)]);
    // Once it is free, it is still granted.
    m.release(pa);
    let e = m.acquire(1);
    assert_eq!(actions(&mut m), [Action::Grant(e)]);
}

#[test]
fn server_gone_fails_what_cannot_be_met_and_keeps_writing_back() {
    let mut m = Machine::new();
    let a = m.acquire(1);
    let b = m.acquire(2);
    let c = m.acquire(1);
    let first = actions(&mut m);
    assert!(
        matches!(first[..], [Action::Grant(g), Action::Read { .. }] if g == a),
        "{first:?}"
    );
    // One of b's two bytes arrives; the pipe then runs dry and stays open.
    m.handle_read_drained(b"x");
    assert_eq!(actions(&mut m), []);
    assert_eq!(m.stats().reserved, 1);
    m.handle_server_gone();
    // b can no longer be met and fails; the byte promised to it meets c instead.
    assert_eq!(
        actions(&mut m),
        [Action::Fail(b, Failure::ServerGone), Action::Grant(c)]
    );
    assert_eq!(m.failure(), Some(Failure::ServerGone));
    let pc = granted(&mut m, c);
    // Later requests fail at once; a second report changes nothing.
    let d = m.acquire(1);
    m.handle_server_gone();
    assert_eq!(actions(&mut m), [Action::Fail(d, Failure::ServerGone)]);
    // Releases still write back: the pipe is open for whoever remains.
    m.release(pc);
    assert_eq!(actions(&mut m), [Action::Write(b'x')]);
    assert_eq!(m.stats().bytes_held, 0);
    // The implicit slot still works once it is free.
    let pa = granted(&mut m, a);
    m.release(pa);
    let e = m.acquire(1);
    assert_eq!(actions(&mut m), [Action::Grant(e)]);
}

#[test]
fn read_error_fails_waiters_with_its_kind() {
    let mut m = Machine::new();
    let _a = m.acquire(1);
    let b = m.acquire(1);
    let _ = actions(&mut m);
    m.handle_read_error(std::io::ErrorKind::PermissionDenied);
    let f = Failure::ReadError(std::io::ErrorKind::PermissionDenied);
    assert_eq!(actions(&mut m), [Action::Fail(b, f)]);
    assert_eq!(m.failure(), Some(f));
}

#[test]
fn surplus_bytes_from_a_read_are_written_back() {
    let mut m = Machine::new();
    let _a = m.acquire(1);
    let b = m.acquire(1);
    let _ = actions(&mut m);
    m.cancel(b);
    assert_eq!(actions(&mut m), []);
    // The read was already under way when b left: the byte goes straight back.
    m.handle_read(b"q");
    assert_eq!(actions(&mut m), [Action::Write(b'q')]);
}

#[test]
fn implicit_only_is_a_one_permit_semaphore() {
    let mut m = Machine::implicit_only();
    let a = m.acquire(1);
    let b = m.acquire(1);
    let c = m.acquire(2);
    assert_eq!(
        actions(&mut m),
        [Action::Grant(a), Action::Fail(c, Failure::NoPipe)]
    );
    let pa = granted(&mut m, a);
    m.release(pa);
    assert_eq!(actions(&mut m), [Action::Grant(b)]);
}

#[test]
fn take_partial_gives_what_is_free_now() {
    let mut m = Machine::new();
    let a = m.acquire(4);
    let _ = actions(&mut m);
    m.handle_read(b"rs");
    let _ = actions(&mut m);
    let p = match m.take_partial(a) {
        Outcome::Granted(p) => p,
        other => panic!("{other:?}"),
    };
    assert_eq!(p.units(), 3, "implicit slot plus two bytes");
    assert_eq!(m.stats().bytes_held, 2);
    m.release(p);
    let mut written: Vec<Action> = actions(&mut m);
    written.sort_by_key(|a| format!("{a:?}"));
    assert_eq!(written, [Action::Write(b'r'), Action::Write(b's')]);
}

#[test]
fn stale_ids_are_ignored() {
    let mut m = Machine::new();
    let a = m.acquire(1);
    let _ = actions(&mut m);
    let p = granted(&mut m, a);
    m.cancel(a);
    assert_eq!(m.take_outcome(a), Outcome::Unknown);
    let b = m.acquire(1);
    assert_ne!(a, b, "a reused slot gets a new generation");
    assert_eq!(a.index(), b.index());
    m.release(p);
}

#[test]
fn handle_readable_forces_a_read_while_armed() {
    // A non-blocking try must not be stuck behind a readiness wait that is still armed.
    let mut m = Machine::new();
    let a = m.acquire(1);
    let _b = m.acquire(1);
    let _ = actions(&mut m);
    m.handle_would_block();
    let c = m.acquire(1);
    assert_eq!(actions(&mut m), [], "armed: no read of its own");
    m.handle_readable();
    assert_eq!(actions(&mut m), [Action::Read { max: 2 }]);
    m.handle_read(b"t");
    m.cancel(c);
    let _ = (a, actions(&mut m));
}

#[test]
fn a_failed_write_is_kept_and_tried_again() {
    let mut m = Machine::new();
    let a = m.acquire(1);
    let b = m.acquire(1);
    let _ = actions(&mut m);
    m.handle_read(b"w");
    let _ = actions(&mut m);
    let _pa = granted(&mut m, a);
    let pb = granted(&mut m, b);
    m.release(pb);
    assert_eq!(actions(&mut m), [Action::Write(b'w')]);
    // The pipe was full: the byte is kept, not lost, and not retried in the same drain.
    m.handle_write_error(b'w');
    assert_eq!(actions(&mut m), []);
    assert_eq!(m.stats().bytes_unwritten, 1);
    assert_eq!(m.stats().write_failures, 1);
    // The next input tries again.
    m.retry_writes();
    assert_eq!(actions(&mut m), [Action::Write(b'w')]);
    assert_eq!(m.stats().bytes_unwritten, 0);
    assert_eq!(m.stats().bytes_written, 1);
}

#[test]
fn a_byte_whose_write_failed_goes_to_the_next_waiter() {
    let mut m = Machine::new();
    let a = m.acquire(1);
    let b = m.acquire(1);
    let _ = actions(&mut m);
    m.handle_read(b"v");
    let _ = actions(&mut m);
    let _pa = granted(&mut m, a);
    let pb = granted(&mut m, b);
    m.release(pb);
    let _ = actions(&mut m);
    m.handle_write_error(b'v');
    // A new request takes the kept byte without reading.
    let c = m.acquire(1);
    assert_eq!(actions(&mut m), [Action::Grant(c)]);
    assert_eq!(m.stats().bytes_read, 1);
}

/// `acquire(usize::MAX)` then `acquire(2)`: the absurd request fails at once, unqueued (it
/// neither reads nor holds anything), and the next request is served with exact counts. It
/// used to overflow `unmet` (a panic in debug with the request half-linked, a wrap in release).
#[test]
fn absurd_request_fails_at_once_and_later_requests_work() {
    let mut m = Machine::new();
    let implicit = m.acquire(1);
    let _ = actions(&mut m);
    let implicit = granted(&mut m, implicit);

    for units in [usize::MAX, MAX_UNITS + 1] {
        let huge = m.acquire(units);
        assert_eq!(
            actions(&mut m),
            [Action::Fail(huge, Failure::TooMany(units))],
            "no read for a request that can never be met"
        );
        let stats = m.stats();
        assert_eq!(
            (stats.waiting, stats.unmet, stats.reserved, stats.running),
            (0, 0, 0, 1),
            "{stats:?}"
        );
        assert_eq!(
            m.take_outcome(huge),
            Outcome::Failed(Failure::TooMany(units))
        );
        assert_eq!(m.take_outcome(huge), Outcome::Unknown, "settled");
    }

    let two = m.acquire(2);
    assert_eq!(actions(&mut m), [Action::Read { max: 2 }]);
    m.handle_read(b"ab");
    assert_eq!(actions(&mut m), [Action::Grant(two)]);
    let two = granted(&mut m, two);
    assert_eq!(two.units(), 2);
    assert_eq!(m.stats().bytes_held, 2);
    m.release(two);
    let mut written: Vec<Action> = actions(&mut m);
    written.sort_by_key(|a| format!("{a:?}"));
    assert_eq!(written, [Action::Write(b'a'), Action::Write(b'b')]);
    m.release(implicit);
    assert_eq!(actions(&mut m), []);
    let stats = m.stats();
    assert_eq!(
        (stats.bytes_read, stats.bytes_written, stats.bytes_held),
        (2, 2, 0)
    );
}

/// The bound itself is accepted (it waits like any request) and can be withdrawn; one more
/// than the bound is refused, also on a machine without a pipe (before `NoPipe` applies).
#[test]
fn max_units_is_the_inclusive_bound() {
    let mut m = Machine::new();
    let big = m.acquire(MAX_UNITS);
    assert_eq!(actions(&mut m), [Action::Read { max: MAX_UNITS - 1 }]);
    m.handle_would_block();
    assert_eq!(
        m.stats().unmet,
        MAX_UNITS - 1,
        "the implicit slot is promised"
    );
    m.cancel(big);
    let _ = actions(&mut m);
    let stats = m.stats();
    assert_eq!((stats.waiting, stats.unmet, stats.reserved), (0, 0, 0));

    let mut m = Machine::implicit_only();
    let huge = m.acquire(MAX_UNITS + 1);
    assert_eq!(
        actions(&mut m),
        [Action::Fail(huge, Failure::TooMany(MAX_UNITS + 1))]
    );
    let one = m.acquire(1);
    assert_eq!(actions(&mut m), [Action::Grant(one)]);
}

/// A byte whose write keeps failing can be given up by an adapter that goes away: it is
/// counted as abandoned, never silently dropped.
#[test]
fn abandoned_bytes_are_counted() {
    let mut m = Machine::new();
    let a = m.acquire(1);
    let b = m.acquire(1);
    let _ = actions(&mut m);
    m.handle_read(b"k");
    let _ = actions(&mut m);
    let pa = granted(&mut m, a);
    let pb = granted(&mut m, b);
    m.release(pb);
    assert_eq!(actions(&mut m), [Action::Write(b'k')]);
    m.handle_write_error(b'k');
    m.release(pa);
    assert_eq!(
        actions(&mut m),
        [Action::Write(b'k')],
        "retried at the next input"
    );
    m.handle_write_error(b'k');
    assert_eq!(m.stats().bytes_unwritten, 1);
    assert_eq!(m.abandon_unwritten(), 1);
    let stats = m.stats();
    assert_eq!((stats.bytes_unwritten, stats.bytes_abandoned), (0, 1));
    assert_eq!(
        stats.bytes_read,
        stats.bytes_written + stats.bytes_abandoned
    );
    m.retry_writes();
    assert_eq!(actions(&mut m), [], "nothing left to write");
    assert_eq!(m.abandon_unwritten(), 0);
}

/// A second machine on the same pool, whose process's implicit slot another machine counts:
/// its first request reads a byte, and every unit it grants is backed by one.
#[test]
fn without_implicit_slot_every_unit_is_a_byte() {
    let mut m = Machine::new().without_implicit_slot();
    assert!(!m.has_implicit_slot());
    let a = m.acquire(1);
    assert_eq!(
        actions(&mut m),
        [Action::Read { max: 1 }],
        "no implicit slot to grant without a read"
    );
    m.handle_read(b"x");
    assert_eq!(actions(&mut m), [Action::Grant(a)]);
    let pa = granted(&mut m, a);
    assert_eq!(m.stats().bytes_held, 1);
    m.release(pa);
    assert_eq!(
        actions(&mut m),
        [Action::Write(b'x')],
        "the only unit's byte goes back"
    );
    assert_eq!(m.stats().bytes_held, 0);
}

/// With the pipe gone, such a machine fails a request it could otherwise have met from the
/// implicit slot: the slot is not its to give.
#[test]
fn without_implicit_slot_eof_fails_the_first_request() {
    let mut m = Machine::new().without_implicit_slot();
    let a = m.acquire(1);
    let _ = actions(&mut m);
    m.handle_eof();
    assert_eq!(actions(&mut m), [Action::Fail(a, Failure::Eof)]);
}

/// The machine that counted the slot is gone: the slot passes to this one. A byte held for
/// its first unit becomes surplus and goes to the oldest request that lacks one.
#[test]
fn add_implicit_slot_frees_a_byte_for_a_waiter() {
    let mut m = Machine::new().without_implicit_slot();
    let a = m.acquire(1);
    assert_eq!(actions(&mut m), [Action::Read { max: 1 }]);
    let b = m.acquire(1);
    assert_eq!(actions(&mut m), [], "one read at a time");
    m.handle_read(b"x");
    assert_eq!(actions(&mut m), [Action::Grant(a), Action::Read { max: 1 }]);
    m.handle_would_block();
    let pa = granted(&mut m, a);
    m.add_implicit_slot();
    assert!(m.has_implicit_slot());
    assert_eq!(
        actions(&mut m),
        [Action::Grant(b)],
        "a's byte now backs b's unit; a runs on the implicit slot"
    );
    let pb = granted(&mut m, b);
    assert_eq!(m.stats().bytes_held, 1);
    m.release(pa);
    m.release(pb);
    assert_eq!(actions(&mut m), [Action::Write(b'x')]);
    m.add_implicit_slot();
    assert_eq!(actions(&mut m), [], "a second hand-over changes nothing");
}

/// Given the slot while nothing is in use and nobody waits, a machine holds nothing.
#[test]
fn add_implicit_slot_when_idle_then_grants_without_io() {
    let mut m = Machine::new().without_implicit_slot();
    m.add_implicit_slot();
    assert_eq!(actions(&mut m), []);
    let a = m.acquire(1);
    assert_eq!(actions(&mut m), [Action::Grant(a)]);
    let pa = granted(&mut m, a);
    m.release(pa);
    assert_eq!(actions(&mut m), []);
}

/// Without a pipe and without the slot, requests wait for the slot instead of failing.
#[test]
fn implicit_only_without_the_slot_waits_for_it() {
    let mut m = Machine::implicit_only().without_implicit_slot();
    let a = m.acquire(1);
    assert_eq!(actions(&mut m), [], "no I/O, no grant");
    assert_eq!(m.take_outcome(a), Outcome::Pending);
    m.add_implicit_slot();
    assert_eq!(actions(&mut m), [Action::Grant(a)]);
    let pa = granted(&mut m, a);
    m.release(pa);
    assert_eq!(actions(&mut m), []);
}
