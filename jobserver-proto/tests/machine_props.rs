//! Property tests of the token state machine: random sequences of commands and events, with
//! the invariants of `Machine` checked after every step.

use std::collections::VecDeque;

use jobserver_proto::{
    Action, Failure, Machine, Outcome, Permit, ReleasePolicy, WaiterId, MAX_UNITS,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Acquire(usize),
    Cancel(usize),
    Collect(usize),
    TakePartial(usize),
    Release(usize),
    /// Deliver up to this many bytes from the simulated pipe for an outstanding read.
    Deliver(usize),
    /// Another process writes a token into the pipe.
    Inject(u8),
    /// Another process takes a token from the pipe.
    Steal,
    Readable,
    /// The adapter reads a byte itself (a fast path) and hands it over with `adopt`.
    Adopt,
    /// The oldest request gives its partial grant back (hold-and-wait rule).
    Yield,
    Resume,
    Eof,
    ReadError,
    WriteError,
    /// The adapter finds the server gone by other means (fed only with no read under way).
    ServerGone,
    /// The process's implicit slot is handed to this machine (no effect once it has it).
    AddImplicit,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..4).prop_map(Op::Acquire),
        // Absurd sizes: refused at once (above the bound) or queued for ever (the bound).
        1 => prop_oneof![Just(usize::MAX), Just(MAX_UNITS + 1), Just(MAX_UNITS)]
            .prop_map(Op::Acquire),
        2 => any::<usize>().prop_map(Op::Cancel),
        3 => any::<usize>().prop_map(Op::Collect),
        1 => any::<usize>().prop_map(Op::TakePartial),
        3 => any::<usize>().prop_map(Op::Release),
        4 => (0usize..4).prop_map(Op::Deliver),
        2 => any::<u8>().prop_map(Op::Inject),
        1 => Just(Op::Steal),
        2 => Just(Op::Readable),
        2 => Just(Op::Adopt),
        1 => Just(Op::Yield),
        1 => Just(Op::Resume),
        1 => Just(Op::Eof),
        1 => Just(Op::ReadError),
        1 => Just(Op::WriteError),
        1 => Just(Op::ServerGone),
        1 => Just(Op::AddImplicit),
    ]
}

/// Plays the adapter: a pipe, the requests made, and everything the machine did.
struct Harness {
    machine: Machine,
    pipe: VecDeque<u8>,
    /// Requests in the order they were made that have not been granted, failed or withdrawn.
    queue: VecDeque<(WaiterId, usize)>,
    /// Requests woken and not yet collected, with the units they asked for.
    woken: Vec<(WaiterId, usize, Option<Failure>)>,
    permits: Vec<Permit>,
    read_outstanding: Option<usize>,
    /// The harness waits for readiness (the last read would block).
    armed: bool,
    read_log: Vec<u8>,
    /// How many of `read_log`'s bytes were read by the adapter itself and adopted.
    adopted: u64,
    write_log: Vec<u8>,
    /// The last write is failed on the next WriteError op.
    failed_writes: Vec<u8>,
    has_pipe: bool,
}

impl Harness {
    fn new(machine: Machine, tokens: &[u8]) -> Self {
        let has_pipe = machine.has_pipe();
        Harness {
            machine,
            pipe: tokens.iter().copied().collect(),
            queue: VecDeque::new(),
            woken: Vec::new(),
            permits: Vec::new(),
            read_outstanding: None,
            armed: false,
            read_log: Vec::new(),
            adopted: 0,
            write_log: Vec::new(),
            failed_writes: Vec::new(),
            has_pipe,
        }
    }

    fn units_held(&self) -> usize {
        self.permits.iter().map(Permit::units).sum()
    }

    /// Drains the machine's actions and checks each against the model.
    fn drain(&mut self) {
        while let Some(action) = self.machine.poll_action() {
            let stats = self.machine.stats();
            match action {
                Action::Read { max } => {
                    assert!(self.has_pipe, "a machine without a pipe asked for a read");
                    assert!(self.read_outstanding.is_none(), "two reads outstanding");
                    assert!(max >= 1);
                    assert!(
                        max <= stats.unmet,
                        "read of {max} exceeds unmet demand {}",
                        stats.unmet
                    );
                    self.read_outstanding = Some(max);
                }
                Action::Write(byte) => {
                    self.write_log.push(byte);
                    self.pipe.push_back(byte);
                }
                Action::Grant(id) => {
                    let (head, units) = self.queue.pop_front().expect("grant with nobody waiting");
                    assert_eq!(id, head, "grant out of FIFO order");
                    self.woken.push((id, units, None));
                }
                Action::Fail(id, failure) => {
                    // A failed request is either the head, or failed at once when made.
                    let pos = self
                        .queue
                        .iter()
                        .position(|&(w, _)| w == id)
                        .expect("fail of unknown request");
                    assert!(
                        pos == 0
                            || !self.has_pipe
                            || failure == Failure::NoPipe
                            || matches!(failure, Failure::TooMany(_)),
                        "fail out of FIFO order"
                    );
                    let (_, units) = self.queue.remove(pos).unwrap();
                    assert_eq!(
                        matches!(failure, Failure::TooMany(_)),
                        units > MAX_UNITS,
                        "refused for its size exactly when above the bound"
                    );
                    if let Failure::TooMany(asked) = failure {
                        assert_eq!(asked, units);
                    }
                    self.woken.push((id, units, Some(failure)));
                }
            }
        }
        self.check();
    }

    fn check(&self) {
        let stats = self.machine.stats();
        // Bytes read = bytes written + bytes held.
        assert_eq!(stats.bytes_read + self.adopted, self.read_log.len() as u64);
        assert_eq!(stats.bytes_adopted, self.adopted);
        assert_eq!(stats.bytes_written, self.write_log.len() as u64);
        assert_eq!(
            stats.bytes_read + stats.bytes_adopted,
            stats.bytes_written
                + stats.bytes_abandoned
                + (stats.bytes_held + stats.bytes_unwritten) as u64,
            "bytes read = written + held + kept after a failed write"
        );
        // Exactly one byte backs each unit in use beyond the implicit slot (each unit in use,
        // for a machine without it).
        let implicit = usize::from(self.machine.has_implicit_slot());
        assert_eq!(
            stats.bytes_held,
            (stats.running + stats.reserved).saturating_sub(implicit)
        );
        // Units: permits held by the harness plus granted-but-uncollected.
        let uncollected: usize = self
            .woken
            .iter()
            .filter(|w| w.2.is_none())
            .map(|w| w.1)
            .sum();
        assert_eq!(stats.running, self.units_held() + uncollected);
        assert_eq!(stats.waiting, self.queue.len());
        let wanted: usize = self.queue.iter().map(|&(_, u)| u).sum();
        assert_eq!(stats.unmet + stats.reserved, wanted);
        // Every byte written was read, unchanged: the written multiset is within the read one.
        let mut read = self.read_log.clone();
        read.sort_unstable();
        let mut written = self.write_log.clone();
        written.sort_unstable();
        let mut r = read.iter().peekable();
        for w in &written {
            while r.peek().is_some_and(|&&b| b < *w) {
                r.next();
            }
            assert_eq!(r.next(), Some(w), "byte {w} written more often than read");
        }
        // No lost wake-up: while demand is unmet on an open pipe, either a read is outstanding
        // or the adapter waits for readiness (and will call handle_readable).
        if stats.unmet > 0
            && self.has_pipe
            && !self.machine.is_closed()
            && !self.machine.is_paused()
        {
            assert!(
                self.read_outstanding.is_some() || self.armed,
                "demand {} but nobody reads",
                stats.unmet
            );
        }
        // A failed pipe leaves nobody waiting.
        if self.machine.is_closed() {
            assert_eq!(stats.waiting, 0, "requests wait on a failed pipe");
        }
    }

    fn pick<T>(v: &[T], i: usize) -> Option<usize> {
        (!v.is_empty()).then(|| i % v.len())
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Acquire(units) => {
                let id = self.machine.acquire(units);
                self.queue.push_back((id, units));
            }
            Op::Cancel(i) => {
                // Withdraw either a queued request or a woken, uncollected one.
                let total = self.queue.len() + self.woken.len();
                if total > 0 {
                    let i = i % total;
                    if i < self.queue.len() {
                        let (id, _) = self.queue.remove(i).unwrap();
                        self.machine.cancel(id);
                    } else {
                        let (id, _, _) = self.woken.remove(i - self.queue.len());
                        self.machine.cancel(id);
                    }
                }
            }
            Op::Collect(i) => {
                if let Some(i) = Self::pick(&self.woken, i) {
                    let (id, units, failure) = self.woken.remove(i);
                    match (self.machine.take_outcome(id), failure) {
                        (Outcome::Granted(permit), None) => {
                            assert_eq!(permit.units(), units);
                            self.permits.push(permit);
                        }
                        (Outcome::Failed(got), Some(expected)) => assert_eq!(got, expected),
                        (other, failure) => panic!("woken with {failure:?} but outcome {other:?}"),
                    }
                    assert_eq!(self.machine.take_outcome(id), Outcome::Unknown, "id reused");
                } else if let Some(&(id, _)) = self.queue.front() {
                    assert_eq!(self.machine.take_outcome(id), Outcome::Pending);
                }
            }
            Op::TakePartial(i) => {
                if let Some(i) = Self::pick(self.queue.make_contiguous(), i) {
                    let (id, units) = self.queue.remove(i).unwrap();
                    match self.machine.take_partial(id) {
                        Outcome::Granted(permit) => {
                            assert!(permit.units() <= units);
                            self.permits.push(permit);
                        }
                        other => panic!("take_partial of a queued request gave {other:?}"),
                    }
                }
            }
            Op::Release(i) => {
                if let Some(i) = Self::pick(&self.permits, i) {
                    let permit = self.permits.swap_remove(i);
                    self.machine.release(permit);
                }
            }
            Op::Deliver(n) => {
                if let Some(max) = self.read_outstanding.take() {
                    let n = n.min(max).min(self.pipe.len());
                    if n == 0 {
                        self.armed = true;
                        self.machine.handle_would_block();
                    } else {
                        let bytes: Vec<u8> = self.pipe.drain(..n).collect();
                        self.read_log.extend_from_slice(&bytes);
                        // A short read that emptied the pipe may be reported as drained, with
                        // the adapter then waiting for readiness.
                        if n < max && self.pipe.is_empty() && self.read_log.len().is_multiple_of(2)
                        {
                            self.armed = true;
                            self.machine.handle_read_drained(&bytes);
                        } else {
                            self.machine.handle_read(&bytes);
                        }
                    }
                }
            }
            Op::Adopt => {
                // Only a machine with a pipe has bytes to adopt; a fast path reads while no
                // read of the machine's is outstanding or while one is (it is a plain read).
                if self.has_pipe {
                    if let Some(byte) = self.pipe.pop_front() {
                        self.read_log.push(byte);
                        self.adopted += 1;
                        let permit = self.machine.adopt(byte);
                        assert_eq!(permit.units(), 1);
                        self.permits.push(permit);
                    }
                }
            }
            Op::Yield => {
                let partial = self.machine.partial_bytes();
                let written = self.write_log.len();
                let given = self.machine.yield_partial();
                assert_eq!(given, partial, "gives back exactly the partial bytes");
                self.drain();
                assert_eq!(self.write_log.len(), written + given);
                assert_eq!(self.machine.partial_bytes(), 0);
            }
            // Reading again: the check after the drain sees that unmet demand has a read
            // outstanding or a readiness wait armed.
            Op::Resume => self.machine.resume(),
            Op::Inject(byte) => self.pipe.push_back(byte),
            Op::Steal => {
                self.pipe.pop_front();
            }
            Op::Readable => {
                if self.read_outstanding.is_none() {
                    self.armed = false;
                    self.machine.handle_readable();
                }
            }
            Op::Eof => {
                if self.read_outstanding.take().is_some() {
                    self.machine.handle_eof();
                }
            }
            Op::ServerGone => {
                if self.read_outstanding.is_none() {
                    self.machine.handle_server_gone();
                }
            }
            Op::ReadError => {
                if self.read_outstanding.take().is_some() {
                    self.machine
                        .handle_read_error(std::io::ErrorKind::PermissionDenied);
                }
            }
            Op::AddImplicit => self.machine.add_implicit_slot(),
            Op::WriteError => {
                // The most recent write did not reach the pipe after all.
                if let Some(&byte) = self.write_log.last() {
                    if self.pipe.back() == Some(&byte) && self.failed_writes.len() < 3 {
                        self.pipe.pop_back();
                        self.write_log.pop();
                        self.failed_writes.push(byte);
                        self.machine.handle_write_error(byte);
                    }
                }
            }
        }
        self.drain();
    }

    /// Releases and withdraws everything; then every byte read must have been written back.
    fn finish(mut self) {
        if self.read_outstanding.take().is_some() {
            self.armed = true;
            self.machine.handle_would_block();
            self.drain();
        }
        // Withdraw everything; cancelling may pass the implicit slot on and wake another
        // request, which is then withdrawn too.
        loop {
            if let Some((id, _)) = self.queue.pop_back() {
                self.machine.cancel(id);
            } else if let Some((id, _, _)) = self.woken.pop() {
                self.machine.cancel(id);
            } else {
                break;
            }
            self.drain();
        }
        while let Some(permit) = self.permits.pop() {
            self.machine.release(permit);
            self.drain();
        }
        // Bytes whose last write failed get one more try.
        self.machine.retry_writes();
        self.drain();
        let stats = self.machine.stats();
        assert_eq!(stats.bytes_held + stats.bytes_unwritten, 0);
        assert_eq!(
            stats.running + stats.reserved + stats.waiting + stats.unmet,
            0
        );
        let mut read = self.read_log.clone();
        read.sort_unstable();
        let mut written = self.write_log.clone();
        written.sort_unstable();
        assert_eq!(
            read, written,
            "every byte read is written back exactly once, unchanged"
        );
        assert_eq!(stats.write_failures, self.failed_writes.len() as u64);
    }
}

fn policy() -> impl Strategy<Value = ReleasePolicy> {
    prop_oneof![
        Just(ReleasePolicy::ReturnToPipe),
        Just(ReleasePolicy::HandOff)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn invariants_hold_for_any_sequence(
        policy in policy(),
        tokens in proptest::collection::vec(any::<u8>(), 0..6),
        ops in proptest::collection::vec(op(), 0..60),
    ) {
        let mut h = Harness::new(Machine::new().with_policy(policy), &tokens);
        for op in ops {
            h.apply(op);
        }
        h.finish();
    }

    /// A second machine of the same pool in the process (its implicit slot counted
    /// elsewhere), which may be handed the slot part-way (`Op::AddImplicit`).
    #[test]
    fn invariants_hold_without_the_implicit_slot(
        policy in policy(),
        tokens in proptest::collection::vec(any::<u8>(), 0..6),
        ops in proptest::collection::vec(op(), 0..60),
    ) {
        let machine = Machine::new().with_policy(policy).without_implicit_slot();
        let mut h = Harness::new(machine, &tokens);
        for op in ops {
            h.apply(op);
        }
        h.finish();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn implicit_only_machine_never_does_io(
        ops in proptest::collection::vec(op(), 0..60),
    ) {
        let mut h = Harness::new(Machine::implicit_only(), &[]);
        for op in ops {
            h.apply(op);
        }
        prop_assert_eq!(h.machine.stats().bytes_read, 0);
        h.finish();
    }
}
