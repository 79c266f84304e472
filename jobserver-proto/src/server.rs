//! Planning a token pool for a server: what to preload, what the pipe must hold, and the
//! account at shutdown.

use std::fmt;
use std::num::NonZeroUsize;

use crate::machine::DEFAULT_TOKEN_BYTE;

/// The plan for a pool of `jobs` concurrent jobs, and its account as the pool is resized.
///
/// The server's own process has an implicit slot like every client, so the pipe is preloaded
/// with `jobs - 1` bytes. The pipe must be able to hold all of them at once, or the preload
/// (and every later release) could block.
///
/// # Resizing
///
/// [`PoolPlan::resize`] changes `N` at run time without ever taking a token from anyone:
///
/// - **Growing** first cancels any *debt* left by an earlier shrink (bytes still in
///   circulation that were due to be absorbed simply stay), then asks for the remaining new
///   bytes to be written ([`Resize::Write`]); the adapter reports what it managed to write
///   with [`PoolPlan::grown`], and `N` grows by exactly that much.
/// - **Shrinking** lowers `N` at once and records a debt of `old - new` bytes
///   ([`Resize::Absorb`]): the adapter reads up to that many bytes whenever they are free in
///   the pipe (now, after a job ends, at the next resize) and reports each read with
///   [`PoolPlan::absorbed`]. Absorbed bytes leave circulation for good.
///
/// # Invariant
///
/// At every point between calls:
///
/// ```text
/// in_circulation == written - absorbed == (jobs - 1) + pending_absorb
/// ```
///
/// where `written` counts the preload plus every byte reported by [`PoolPlan::grown`], and
/// `absorbed` every byte reported by [`PoolPlan::absorbed`]. `in_circulation` is what the pipe
/// holds once every holder has written its tokens back, so it is what
/// [`PoolPlan::account`] expects to drain at shutdown. The debt is never more than what is
/// in circulation, and a grow always leaves no debt behind when it writes anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolPlan {
    /// The current `N`.
    jobs: NonZeroUsize,
    /// Bytes in circulation beyond `jobs - 1`, to be absorbed when they come back.
    debt: usize,
    /// The preload of the pool as planned by [`PoolPlan::new`].
    preload: usize,
    /// Bytes written into the pipe: the preload plus every grow.
    written: usize,
    /// Bytes taken out of circulation by absorbing.
    absorbed: usize,
}

/// What an adapter must do to carry out a [`PoolPlan::resize`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resize {
    /// Write this many new token bytes into the pipe (through a non-blocking writer), then
    /// report how many were actually written with [`PoolPlan::grown`]. The plan's `N` does not
    /// include them until then. Never `Write(0)`.
    Write(usize),
    /// Nothing to write: absorb up to this many bytes (the whole debt,
    /// [`PoolPlan::pending_absorb`]) when they are free, now or later, reporting each read with
    /// [`PoolPlan::absorbed`]. `Absorb(0)` means there is nothing to do.
    Absorb(usize),
}

impl PoolPlan {
    /// Plans a pool of `jobs` for a pipe that can hold `capacity` bytes.
    ///
    /// # Errors
    ///
    /// [`PlanErrorKind::ZeroJobs`] for `jobs == 0`, and [`PlanErrorKind::ExceedsCapacity`]
    /// when `jobs - 1` bytes do not fit (the adapter should try to grow the pipe first and
    /// pass the capacity it got).
    pub fn new(jobs: usize, capacity: usize) -> Result<Self, PlanError> {
        let jobs = check(jobs, capacity)?;
        let preload = jobs.get() - 1;
        Ok(PoolPlan {
            jobs,
            debt: 0,
            preload,
            written: preload,
            absorbed: 0,
        })
    }

    /// The number of concurrent jobs, the `N` in `-jN`. After a resize this is the new `N`
    /// (for a grow, once [`PoolPlan::grown`] has reported the bytes written).
    pub fn jobs(&self) -> NonZeroUsize {
        self.jobs
    }

    /// How many token bytes to write into the pipe before any child starts: `N - 1` for the
    /// `N` given to [`PoolPlan::new`]. Resizing does not change it.
    pub fn preload(&self) -> usize {
        self.preload
    }

    /// The bytes to preload: [`PoolPlan::preload`] times `+`, the byte GNU make uses.
    pub fn preload_bytes(&self) -> Vec<u8> {
        vec![DEFAULT_TOKEN_BYTE; self.preload()]
    }

    /// Bytes still to be absorbed after a shrink (the debt).
    pub fn pending_absorb(&self) -> usize {
        self.debt
    }

    /// Bytes that belong in the pipe once every holder has written its tokens back:
    /// everything written (preload and grows) minus everything absorbed, which always equals
    /// `jobs - 1 + pending_absorb`.
    pub fn in_circulation(&self) -> usize {
        debug_assert_eq!(
            self.written - self.absorbed,
            self.jobs.get() - 1 + self.debt,
            "PoolPlan invariant"
        );
        self.jobs.get() - 1 + self.debt
    }

    /// Every byte written into the pipe so far: the preload plus every [`PoolPlan::grown`].
    pub fn written(&self) -> usize {
        self.written
    }

    /// Every byte absorbed so far ([`PoolPlan::absorbed`]).
    pub fn absorbed_total(&self) -> usize {
        self.absorbed
    }

    /// Plans a change to a pool of `jobs` for a pipe that can hold `capacity` bytes, and
    /// applies the part that needs no I/O.
    ///
    /// - `jobs` above the current `N`: the debt is cancelled first (up to the difference, `N`
    ///   grows by what was cancelled). If that covers it, the result is
    ///   [`Resize::Absorb`] with the debt left; otherwise [`Resize::Write`] with the bytes
    ///   still missing, and `N` reaches `jobs` only through [`PoolPlan::grown`].
    /// - `jobs` below the current `N`: `N` becomes `jobs` at once and the debt grows by the
    ///   difference; the result is [`Resize::Absorb`] with the whole debt.
    /// - `jobs` equal to `N`: [`Resize::Absorb`] with the current debt.
    ///
    /// # Errors
    ///
    /// As [`PoolPlan::new`]: [`PlanErrorKind::ZeroJobs`] for `jobs == 0` and
    /// [`PlanErrorKind::ExceedsCapacity`] when `jobs - 1` bytes do not fit. The plan is left
    /// unchanged.
    pub fn resize(&mut self, jobs: usize, capacity: usize) -> Result<Resize, PlanError> {
        let jobs = check(jobs, capacity)?;
        let current = self.jobs.get();
        if jobs.get() > current {
            let wanted = jobs.get() - current;
            let cancelled = wanted.min(self.debt);
            self.debt -= cancelled;
            self.jobs = self.jobs.saturating_add(cancelled);
            let missing = wanted - cancelled;
            if missing > 0 {
                return Ok(Resize::Write(missing));
            }
        } else if jobs.get() < current {
            self.debt += current - jobs.get();
            self.jobs = jobs;
        }
        Ok(Resize::Absorb(self.debt))
    }

    /// Records that `written` new token bytes went into the pipe after a
    /// [`Resize::Write`]: `N` grows by as many. Report what was written even when the write
    /// failed part way (a full pipe), so the account stays exact.
    pub fn grown(&mut self, written: usize) {
        self.jobs = self.jobs.saturating_add(written);
        self.written += written;
    }

    /// Records that `absorbed` bytes were read out of the pipe to pay the debt; they leave
    /// circulation.
    ///
    /// # Panics
    ///
    /// When `absorbed` exceeds [`PoolPlan::pending_absorb`]: an adapter must never read more
    /// than the debt, or it would take tokens that belong to the pool.
    pub fn absorbed(&mut self, absorbed: usize) {
        assert!(
            absorbed <= self.debt,
            "absorbed {absorbed} jobserver bytes with a debt of only {}",
            self.debt
        );
        self.debt -= absorbed;
        self.absorbed += absorbed;
    }

    /// Compares the tokens found in the pipe at shutdown with those in circulation
    /// ([`PoolPlan::in_circulation`]: the preload, plus every grow, minus every absorbed
    /// byte). Bytes still owed after a shrink are expected too: draining the pipe at shutdown
    /// absorbs them.
    pub fn account(&self, returned: usize) -> Report {
        Report {
            expected: self.in_circulation(),
            returned,
        }
    }
}

/// `jobs` as a pool size for a pipe of `capacity` bytes.
fn check(jobs: usize, capacity: usize) -> Result<NonZeroUsize, PlanError> {
    let Some(jobs) = NonZeroUsize::new(jobs) else {
        return Err(PlanError {
            kind: PlanErrorKind::ZeroJobs,
            jobs: 0,
            capacity,
        });
    };
    if jobs.get() - 1 > capacity {
        return Err(PlanError {
            kind: PlanErrorKind::ExceedsCapacity,
            jobs: jobs.get(),
            capacity,
        });
    }
    Ok(jobs)
}

/// What kind of plan was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlanErrorKind {
    /// A pool needs at least one job.
    ZeroJobs,
    /// The pipe cannot hold `jobs - 1` bytes.
    ExceedsCapacity,
}

/// A refused [`PoolPlan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError {
    kind: PlanErrorKind,
    jobs: usize,
    capacity: usize,
}

impl PlanError {
    /// What was wrong.
    pub fn kind(&self) -> PlanErrorKind {
        self.kind
    }
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            PlanErrorKind::ZeroJobs => f.write_str("a jobserver pool needs at least 1 job; ask for -j1 or more"),
            PlanErrorKind::ExceedsCapacity => write!(
                f,
                "a pool of {} jobs needs {} token bytes in the pipe, but the pipe holds at most {}; \
                 ask for fewer jobs or raise /proc/sys/fs/pipe-max-size",
                self.jobs,
                self.jobs - 1,
                self.capacity
            ),
        }
    }
}

impl std::error::Error for PlanError {}

/// The account of a pool at shutdown: tokens expected back against tokens found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Tokens that should be in the pipe: the preload, plus tokens added by growing, minus
    /// tokens absorbed after shrinking ([`PoolPlan::in_circulation`]).
    pub expected: usize,
    /// Tokens found in the pipe.
    pub returned: usize,
}

impl Report {
    /// Tokens missing: taken by someone and never written back.
    pub fn lost(&self) -> usize {
        self.expected.saturating_sub(self.returned)
    }

    /// Tokens found beyond those expected: written by someone who never read them.
    pub fn extra(&self) -> usize {
        self.returned.saturating_sub(self.expected)
    }

    /// True when every token came back and none was added.
    pub fn is_balanced(&self) -> bool {
        self.expected == self.returned
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_balanced() {
            write!(f, "all {} jobserver tokens came back", self.expected)
        } else if self.lost() > 0 {
            write!(
                f,
                "{} of {} jobserver tokens were not returned (a child kept them or exited without writing them back)",
                self.lost(),
                self.expected
            )
        } else {
            write!(
                f,
                "{} jobserver tokens more than the {} handed out came back (a child wrote tokens it never read)",
                self.extra(),
                self.expected
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preload_is_jobs_minus_one() {
        let plan = PoolPlan::new(4, 65536).unwrap();
        assert_eq!(plan.preload(), 3);
        assert_eq!(plan.preload_bytes(), b"+++");
        assert_eq!(PoolPlan::new(1, 0).unwrap().preload(), 0);
    }

    #[test]
    fn refuses_what_the_pipe_cannot_hold() {
        assert_eq!(PoolPlan::new(65537, 65536).unwrap().preload(), 65536);
        let err = PoolPlan::new(65538, 65536).unwrap_err();
        assert_eq!(err.kind(), PlanErrorKind::ExceedsCapacity);
        assert!(err.to_string().contains("65537 token bytes"), "{err}");
        assert_eq!(
            PoolPlan::new(0, 10).unwrap_err().kind(),
            PlanErrorKind::ZeroJobs
        );
    }

    #[test]
    fn accounting() {
        let plan = PoolPlan::new(8, 100).unwrap();
        assert!(plan.account(7).is_balanced());
        assert_eq!(plan.account(5).lost(), 2);
        assert_eq!(plan.account(9).extra(), 2);
        assert!(plan.account(5).to_string().contains("2 of 7"));
    }

    #[test]
    fn resize_keeps_preload_and_accounts_grown_bytes() {
        let mut plan = PoolPlan::new(4, 100).unwrap();
        assert_eq!(plan.resize(10, 100), Ok(Resize::Write(6)));
        // Not grown until the bytes are reported.
        assert_eq!(plan.jobs().get(), 4);
        plan.grown(6);
        assert_eq!(plan.jobs().get(), 10);
        assert_eq!(plan.preload(), 3);
        assert_eq!((plan.written(), plan.in_circulation()), (9, 9));
        assert!(plan.account(9).is_balanced());
        assert_eq!(plan.account(3).lost(), 6);
    }

    #[test]
    fn partial_grow_counts_only_what_was_written() {
        let mut plan = PoolPlan::new(2, 100).unwrap();
        assert_eq!(plan.resize(6, 100), Ok(Resize::Write(4)));
        plan.grown(1);
        assert_eq!(plan.jobs().get(), 3);
        assert_eq!(plan.in_circulation(), 2);
        assert_eq!(plan.pending_absorb(), 0);
    }

    #[test]
    fn shrink_records_a_debt_and_absorbing_pays_it() {
        let mut plan = PoolPlan::new(4, 100).unwrap();
        assert_eq!(plan.resize(1, 100), Ok(Resize::Absorb(3)));
        assert_eq!(plan.jobs().get(), 1);
        assert_eq!(plan.pending_absorb(), 3);
        // Nothing absorbed yet: all 3 bytes are still expected back.
        assert_eq!(
            plan.account(3),
            Report {
                expected: 3,
                returned: 3
            }
        );
        plan.absorbed(2);
        assert_eq!((plan.pending_absorb(), plan.in_circulation()), (1, 1));
        plan.absorbed(1);
        assert_eq!((plan.pending_absorb(), plan.in_circulation()), (0, 0));
        assert_eq!(plan.absorbed_total(), 3);
        assert!(plan.account(0).is_balanced());
        assert_eq!(plan.account(1).extra(), 1);
    }

    #[test]
    fn grow_cancels_the_debt_before_writing() {
        let mut plan = PoolPlan::new(8, 100).unwrap();
        assert_eq!(plan.resize(3, 100), Ok(Resize::Absorb(5)));
        plan.absorbed(1);
        // Debt 4: growing by 2 is covered by it.
        assert_eq!(plan.resize(5, 100), Ok(Resize::Absorb(2)));
        assert_eq!((plan.jobs().get(), plan.pending_absorb()), (5, 2));
        assert_eq!(plan.written(), 7);
        // Growing by 4 more: 2 from the debt, 2 written.
        assert_eq!(plan.resize(9, 100), Ok(Resize::Write(2)));
        assert_eq!((plan.jobs().get(), plan.pending_absorb()), (7, 0));
        plan.grown(2);
        assert_eq!(plan.jobs().get(), 9);
        assert_eq!((plan.written(), plan.absorbed_total()), (9, 1));
        assert_eq!(plan.in_circulation(), 8);
    }

    #[test]
    fn same_size_reports_the_debt_left() {
        let mut plan = PoolPlan::new(3, 100).unwrap();
        assert_eq!(plan.resize(3, 100), Ok(Resize::Absorb(0)));
        assert_eq!(plan.resize(2, 100), Ok(Resize::Absorb(1)));
        assert_eq!(plan.resize(2, 100), Ok(Resize::Absorb(1)));
    }

    #[test]
    fn resize_refuses_zero_and_oversize_and_changes_nothing() {
        let mut plan = PoolPlan::new(4, 10).unwrap();
        plan.resize(2, 10).unwrap();
        let before = plan;
        let err = plan.resize(0, 10).unwrap_err();
        assert_eq!(err.kind(), PlanErrorKind::ZeroJobs);
        assert!(err.to_string().contains("at least 1"), "{err}");
        let err = plan.resize(12, 10).unwrap_err();
        assert_eq!(err.kind(), PlanErrorKind::ExceedsCapacity);
        assert!(err.to_string().contains("11 token bytes"), "{err}");
        assert_eq!(plan, before);
        assert_eq!(plan.resize(11, 10), Ok(Resize::Write(7)));
    }

    #[test]
    #[should_panic(expected = "debt of only 1")]
    fn absorbing_more_than_the_debt_panics() {
        let mut plan = PoolPlan::new(4, 10).unwrap();
        plan.resize(3, 10).unwrap();
        plan.absorbed(2);
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            /// Resize to this size; of the bytes to write, the pipe takes at most `room`.
            Resize { jobs: usize, room: usize },
            /// A holder takes this many free bytes out of the pipe.
            Take(usize),
            /// A holder writes this many back.
            Give(usize),
            /// The adapter absorbs at most this many.
            Absorb(usize),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (0usize..40, 0usize..40).prop_map(|(jobs, room)| Op::Resize { jobs, room }),
                (0usize..10).prop_map(Op::Take),
                (0usize..10).prop_map(Op::Give),
                (0usize..10).prop_map(Op::Absorb),
            ]
        }

        const CAPACITY: usize = 30;

        proptest! {
            /// Against a model pipe with holders: the invariant holds after every step, a
            /// completed resize lands on the size asked for, and when everything is given
            /// back and absorbed the pipe holds exactly `N - 1` bytes and balances.
            #[test]
            fn resizing_keeps_the_account_exact(
                start in 1usize..20,
                ops in proptest::collection::vec(op(), 0..60),
            ) {
                let mut plan = PoolPlan::new(start, CAPACITY).unwrap();
                let mut pipe = plan.preload();
                let mut held = 0usize;
                for op in ops {
                    match op {
                        Op::Resize { jobs, room } => {
                            let before = plan;
                            match plan.resize(jobs, CAPACITY) {
                                Err(err) => {
                                    prop_assert!(jobs == 0 || jobs - 1 > CAPACITY, "{err}");
                                    prop_assert_eq!(plan, before);
                                }
                                Ok(Resize::Write(n)) => {
                                    prop_assert!(n > 0);
                                    prop_assert!(jobs > before.jobs().get());
                                    prop_assert_eq!(plan.pending_absorb(), 0);
                                    prop_assert_eq!(n, jobs - before.jobs().get() - before.pending_absorb());
                                    let w = n.min(room);
                                    pipe += w;
                                    plan.grown(w);
                                    prop_assert_eq!(plan.jobs().get(), jobs - (n - w));
                                }
                                Ok(Resize::Absorb(debt)) => {
                                    prop_assert_eq!(plan.jobs().get(), jobs);
                                    prop_assert_eq!(debt, plan.pending_absorb());
                                    let r = debt.min(pipe).min(room);
                                    pipe -= r;
                                    plan.absorbed(r);
                                }
                            }
                        }
                        Op::Take(k) => {
                            let k = k.min(pipe);
                            pipe -= k;
                            held += k;
                        }
                        Op::Give(k) => {
                            let k = k.min(held);
                            held -= k;
                            pipe += k;
                        }
                        Op::Absorb(k) => {
                            let k = k.min(pipe).min(plan.pending_absorb());
                            pipe -= k;
                            plan.absorbed(k);
                        }
                    }
                    prop_assert_eq!(pipe + held, plan.in_circulation());
                    prop_assert_eq!(plan.written() - plan.absorbed_total(), plan.in_circulation());
                    prop_assert!(plan.in_circulation() <= CAPACITY + plan.pending_absorb());
                    prop_assert!(plan.account(pipe + held).is_balanced());
                }
                // Everyone gives back; the debt is paid from the pipe.
                pipe += held;
                let debt = plan.pending_absorb();
                pipe -= debt;
                plan.absorbed(debt);
                prop_assert_eq!(pipe, plan.jobs().get() - 1);
                prop_assert_eq!(plan.account(pipe), Report { expected: plan.jobs().get() - 1, returned: pipe });
            }
        }
    }
}
