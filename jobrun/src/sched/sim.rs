//! Whole runs in simulated time: a [`Scheduler`] driven against a pool of tokens and task
//! durations given as data. Used for the dry run's start order, and by the tests.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use super::{Action, Outcome, Scheduler, TaskId};

/// One start in a simulated run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimStart {
    /// The task.
    pub task: TaskId,
    /// When it started.
    pub at: Duration,
    /// Units it held.
    pub tokens: u32,
    /// Whether its tokens came from its predecessor ([`Action::HandOff`]).
    pub handed_off: bool,
}

/// What a simulated run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimRun {
    /// Every start, in order.
    pub starts: Vec<SimStart>,
    /// When the last task ended.
    pub makespan: Duration,
    /// The most units the pool had lent out at once.
    pub peak_units: u32,
    /// Units back in the pool at the end (should equal the pool size).
    pub pool_at_end: u32,
}

/// The simulation could not finish: nothing runs, nothing is due, and tasks remain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stalled {
    /// The time it stalled at.
    pub at: Duration,
}

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the simulated run stalled at {:?}", self.at)
    }
}

impl std::error::Error for Stalled {}

/// Runs `sched` to the end against a pool of `pool` units that nobody else uses.
///
/// `run(task, attempt)` gives a start's duration and outcome (`attempt` counts from 0 over
/// the task's starts); `lock_free(task, now)` answers lock attempts.
///
/// # Errors
///
/// [`Stalled`] when the scheduler waits for something that can never come (a bug in it).
pub fn simulate(
    sched: &mut Scheduler,
    pool: u32,
    mut run: impl FnMut(TaskId, u32) -> (Duration, Outcome),
    mut lock_free: impl FnMut(TaskId, Duration) -> bool,
) -> Result<SimRun, Stalled> {
    let mut free = pool;
    let mut now = Duration::ZERO;
    let mut seq = 0u64;
    let mut due: BinaryHeap<Reverse<(Duration, u64, u32, bool)>> = BinaryHeap::new();
    let mut attempts = vec![0u32; sched.graph().len()];
    let mut outcomes: Vec<Outcome> = vec![Outcome::Success; sched.graph().len()];
    let mut out = SimRun::default();
    // Timeouts in a row with nothing started or finished: a scheduler that only ever backs
    // off is stalled too.
    let mut idle_timeouts = 0u32;
    loop {
        loop {
            while let Some(action) = sched.poll_action() {
                match action {
                    Action::Start { task, tokens }
                    | Action::HandOff {
                        to: task, tokens, ..
                    } => {
                        idle_timeouts = 0;
                        let (d, o) = run(task, attempts[task.index()]);
                        attempts[task.index()] += 1;
                        outcomes[task.index()] = o;
                        seq += 1;
                        due.push(Reverse((now + d, seq, task.0, false)));
                        out.starts.push(SimStart {
                            task,
                            at: now,
                            tokens,
                            handed_off: matches!(action, Action::HandOff { .. }),
                        });
                    }
                    Action::Release { tokens } => free += tokens,
                    Action::TryLock(task) => {
                        let ok = lock_free(task, now);
                        sched.handle_lock(task, ok, now);
                    }
                    Action::Unlock(_) | Action::Requeue { .. } | Action::Skip { .. } => {}
                    Action::Done => {}
                }
            }
            out.peak_units = out.peak_units.max(pool - free);
            if sched.demand() > 0 && free > 0 {
                free -= 1;
                sched.handle_granted(1, now);
                continue;
            }
            break;
        }
        if sched.is_finished() {
            out.makespan = now;
            out.pool_at_end = free;
            return Ok(out);
        }
        let next_due = due.peek().map(|Reverse((t, ..))| *t);
        let next = match (next_due, sched.poll_timeout()) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(b)) => b.max(now),
            (None, None) => return Err(Stalled { at: now }),
        };
        now = next.max(now);
        if let Some(Reverse((t, _, task, _))) = due.peek().copied() {
            if t <= now {
                due.pop();
                idle_timeouts = 0;
                let task = TaskId(task);
                sched.handle_finished(task, outcomes[task.index()], now);
                continue;
            }
        }
        idle_timeouts += 1;
        if idle_timeouts > 100_000 {
            return Err(Stalled { at: now });
        }
        sched.handle_timeout(now);
    }
}
