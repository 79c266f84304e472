//! The pure scheduling core: which task starts next, with which tokens, and where every
//! token goes. No I/O, no processes, no clock, no async runtime.
//!
//! A [`Scheduler`] takes a validated [`Graph`] and answers inputs with [`Action`]s, the way
//! `jobserver-proto`'s token machine does. Its methods come in four kinds, called in this
//! order:
//!
//! 1. **commands**: [`Scheduler::set_capacity`], [`Scheduler::stop`];
//! 2. **events**, each in answer to an action or a demand:
//!    [`Scheduler::handle_granted`] (tokens arrived), [`Scheduler::handle_started`] (a task's
//!    process is running: its exact start time), [`Scheduler::handle_lock`] (a lock
//!    attempt's result; [`Scheduler::handle_lock_failed`] when the lock cannot be taken at
//!    all), [`Scheduler::handle_finished`] (a task ended),
//!    [`Scheduler::handle_timeout`] (the time from [`Scheduler::poll_timeout`] came);
//! 3. **output**: after every command or event, drain [`Scheduler::poll_action`] until it is
//!    `None`, carrying out each action before the next input; then read
//!    [`Scheduler::demand`] (how many more tokens it wants now) and
//!    [`Scheduler::poll_timeout`] (when to call back if nothing else happens);
//! 4. **getters**: [`Scheduler::state`], [`Scheduler::ledger`], [`Scheduler::counts`], ...
//!
//! Time is a [`Duration`] since the run started, passed in with every event.
//!
//! # The token rules
//!
//! The driver keeps a *collected set* of tokens that belong to no running task. Every unit
//! the scheduler is granted goes into it; [`Action::Start`] and [`Action::HandOff`] take
//! units out of it for a task; [`Action::Release`] gives units back to the jobserver; a task
//! that finishes puts its units back into it *before* the driver calls
//! [`Scheduler::handle_finished`]. These invariants hold after every step (the property
//! tests check them):
//!
//! - `collected + units held by running tasks == granted - released`: no unit is lost or
//!   duplicated;
//! - `collected + running units <= capacity`, once the actions are drained (a shrink waits
//!   for running tasks; it never kills one);
//! - units are collected only for the *head*: the highest-priority ready task, whose lock
//!   (if any) is already held. A task that waits for a lock holds no token;
//! - a partial set for a task of `k > 1` tokens, that our own running tasks cannot complete,
//!   is held for at most [`Config::partial_hold`]; then it is given back and the task backs
//!   off ([`RequeueReason::Backoff`]) for a growing, jittered time while other tasks run. Two
//!   processes that both want most of the pool therefore cannot deadlock, and the task cannot
//!   starve behind our own one-token tasks, which hand their tokens to it as they finish;
//! - a task never asks for more than the capacity: a `k` above it is cut to the capacity
//!   (drivers refuse `k` above the pool size before the run). When the capacity is unknown
//!   (`u32::MAX`: a jobserver that gives no size), a task that backed off three times is cut
//!   to the most units the run has held at once, so that it cannot back off forever;
//! - durations that overflow (a `partial_hold` of `Duration::MAX`) mean "never".
//!
//! # Order
//!
//! Ready tasks go by critical-path weight (own cost plus the heaviest dependent's weight),
//! ties by declaration order; a task re-queued after a busy lock or a "retry later" exit goes
//! behind every task that is ready for the first time. A successor named by `then` starts the
//! moment its predecessor succeeds, with the predecessor's tokens, if its other dependencies
//! are done and it has no lock; otherwise it is queued like any other task.

mod graph;
pub mod sim;

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Duration;

pub use graph::{Graph, GraphError, GraphErrorKind, NodeSpec, TaskId};

/// How a run is bounded and paced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The most token units held at once (by running tasks and the collected set together).
    /// At least 1.
    pub capacity: u32,
    /// Stop starting tasks after this many failures; 0 means never stop.
    pub keep_going: u32,
    /// How often a task that asks to be retried later ([`Outcome::Retry`]) is re-queued
    /// before it counts as failed.
    pub retry_limit: u32,
    /// First wait before re-queued tasks (busy lock, retry later) are tried again when no
    /// task finishes meanwhile; it doubles on each fruitless round, up to 8 times.
    pub retry_after: Duration,
    /// The longest a partial set of tokens is held for a multi-token task that our own
    /// running tasks cannot complete.
    pub partial_hold: Duration,
    /// Seeds the jitter of the multi-token back-off, so that two processes do not retry in
    /// lockstep (a driver passes something like its process id).
    pub jitter_seed: u64,
    /// The cost of a task with neither a logged duration nor a hint.
    pub unknown_cost: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            capacity: u32::MAX,
            keep_going: 1,
            retry_limit: 10,
            retry_after: Duration::from_millis(200),
            partial_hold: Duration::from_secs(1),
            jitter_seed: 0,
            unknown_cost: Duration::from_secs(1),
        }
    }
}

/// How a task ended, as the driver reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It succeeded: its dependents may run.
    Success,
    /// It failed: its dependents are skipped.
    Failure,
    /// It asked to be run again later (exit status 75, `EX_TEMPFAIL`): it is re-queued
    /// without tokens, up to [`Config::retry_limit`] times.
    Retry,
    /// It was stopped by [`Scheduler::stop`]'s termination; counts as failed.
    Interrupted,
}

/// Where a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// Some dependency has not succeeded yet.
    Waiting,
    /// Ready, in the queue (or at its head, collecting tokens).
    Ready,
    /// Re-queued after a busy lock, a "retry later" exit or a multi-token back-off; tried
    /// again later, holding no token.
    Parked,
    /// Running, holding tokens.
    Running,
    /// Finished successfully.
    Succeeded,
    /// Finished unsuccessfully (including interrupted).
    Failed,
    /// Not run because a dependency failed.
    Skipped,
    /// Not run because the run was stopped or reached its failure limit.
    NotRun,
}

impl TaskState {
    /// Whether the task will not change state again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded | TaskState::Failed | TaskState::Skipped | TaskState::NotRun
        )
    }
}

/// Why a task went back into the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequeueReason {
    /// Its lock is held by someone else.
    LockBusy,
    /// It exited with the "retry later" status.
    Retry,
    /// It was collecting tokens for too long; they were given back.
    Backoff,
}

/// What the driver must do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Action {
    /// Try the task's lock without blocking, then call [`Scheduler::handle_lock`].
    TryLock(TaskId),
    /// Release the task's lock: it was taken but the task will not start now.
    Unlock(TaskId),
    /// Start the task with `tokens` units from the collected set.
    Start {
        /// The task.
        task: TaskId,
        /// Units it holds until it ends.
        tokens: u32,
    },
    /// Start `to` with `tokens` units that `from` just returned to the collected set: the
    /// predecessor's tokens move to its successor with no jobserver I/O.
    HandOff {
        /// The task that finished.
        from: TaskId,
        /// Its `then` successor, which starts now.
        to: TaskId,
        /// Units moved.
        tokens: u32,
    },
    /// Give `tokens` units from the collected set back to the jobserver.
    Release {
        /// Units to give back.
        tokens: u32,
    },
    /// The task went back into the queue, holding nothing (for reporting).
    Requeue {
        /// The task.
        task: TaskId,
        /// Why.
        reason: RequeueReason,
    },
    /// The task will not run because `because` failed (for reporting).
    Skip {
        /// The task.
        task: TaskId,
        /// The failed task it depends on, directly or not.
        because: TaskId,
    },
    /// Nothing runs and nothing will: the run is over. Emitted once.
    Done,
}

/// Token units counted over the run: where every unit went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ledger {
    /// Units granted by the jobserver.
    pub granted: u64,
    /// Units given back to it.
    pub released: u64,
    /// Units given to tasks at their start (hand-offs included).
    pub started: u64,
    /// Of those, units moved from a task straight to its `then` successor.
    pub handed_off: u64,
    /// The most units held at once.
    pub peak: u32,
}

impl Ledger {
    /// Units held now: `granted - released`.
    pub fn outstanding(&self) -> u64 {
        self.granted - self.released
    }
}

/// How many tasks are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Waiting for dependencies.
    pub waiting: usize,
    /// Ready or collecting tokens.
    pub ready: usize,
    /// Parked (lock busy, retry later, back-off).
    pub parked: usize,
    /// Running.
    pub running: usize,
    /// Succeeded.
    pub succeeded: usize,
    /// Failed.
    pub failed: usize,
    /// Skipped after a failed dependency.
    pub skipped: usize,
    /// Not run (stopped, or the failure limit was reached).
    pub not_run: usize,
}

impl Counts {
    /// Tasks that reached a final state.
    pub fn finished(&self) -> usize {
        self.succeeded + self.failed + self.skipped + self.not_run
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ready {
    requeued: bool,
    weight: u64,
    id: u32,
}

impl Ord for Ready {
    fn cmp(&self, other: &Self) -> Ordering {
        // Fresh before re-queued, heavier first, then declaration order.
        other
            .requeued
            .cmp(&self.requeued)
            .then(self.weight.cmp(&other.weight))
            .then(other.id.cmp(&self.id))
    }
}

impl PartialOrd for Ready {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Microseconds in a duration, saturating.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The scheduling state machine of one run. See the [module docs](self) for how to drive it.
#[derive(Debug)]
pub struct Scheduler {
    graph: Graph,
    config: Config,
    cost: Vec<u64>,
    weight: Vec<u64>,
    state: Vec<TaskState>,
    unmet: Vec<u32>,
    held: Vec<u32>,
    retries: Vec<u32>,
    attempts: Vec<u8>,
    cause: Vec<u32>,
    started_at: Vec<u64>,
    finished_at: Vec<u64>,
    ready: BinaryHeap<Ready>,
    parked: Vec<u32>,
    park_deadline: Option<Duration>,
    park_round: u32,
    deferred: Vec<(u32, Duration)>,
    head: Option<u32>,
    /// The head's queue entry (to put it back when a better task becomes ready before it
    /// got any unit), and that of the task whose lock is being tried.
    head_key: Option<Ready>,
    lock_key: Option<Ready>,
    /// Units collected for the head as of the end of the last step (the rest of the
    /// collected set, if any, has come back since and belongs to nobody yet).
    head_partial: u32,
    lock_pending: Option<u32>,
    collected: u32,
    running_units: u32,
    running_tasks: u32,
    partial_since: Option<Duration>,
    failures: u32,
    stopping: bool,
    halted: bool,
    done: bool,
    now: Duration,
    ledger: Ledger,
    counts: Counts,
    actions: VecDeque<Action>,
}

impl Scheduler {
    /// A scheduler for `graph`. `logged(t)` is the task's duration in the previous run's job
    /// log, if any; the cost of a task is that, else its hint, else
    /// [`Config::unknown_cost`]. The ready tasks are queued at time zero; drain
    /// [`Scheduler::poll_action`] and read [`Scheduler::demand`] first.
    pub fn new(
        graph: Graph,
        config: Config,
        mut logged: impl FnMut(TaskId) -> Option<Duration>,
    ) -> Self {
        let n = graph.len();
        let cost: Vec<u64> = graph
            .ids()
            .map(|t| micros(logged(t).or(graph.hint(t)).unwrap_or(config.unknown_cost)))
            .collect();
        let weight = graph.weights(|t| cost[t.index()]);
        let unmet: Vec<u32> = graph.ids().map(|t| graph.deps(t).len() as u32).collect();
        let mut s = Scheduler {
            config: Config {
                capacity: config.capacity.max(1),
                ..config
            },
            cost,
            weight,
            state: vec![TaskState::Waiting; n],
            held: vec![0; n],
            retries: vec![0; n],
            attempts: vec![0; n],
            cause: vec![u32::MAX; n],
            started_at: vec![0; n],
            finished_at: vec![0; n],
            ready: BinaryHeap::new(),
            parked: Vec::new(),
            park_deadline: None,
            park_round: 0,
            deferred: Vec::new(),
            head: None,
            head_key: None,
            lock_key: None,
            head_partial: 0,
            lock_pending: None,
            collected: 0,
            running_units: 0,
            running_tasks: 0,
            partial_since: None,
            failures: 0,
            stopping: false,
            halted: false,
            done: false,
            now: Duration::ZERO,
            ledger: Ledger::default(),
            counts: Counts {
                waiting: n,
                ..Counts::default()
            },
            actions: VecDeque::new(),
            unmet,
            graph,
        };
        for i in 0..n as u32 {
            if s.unmet[i as usize] == 0 {
                s.make_ready(i, false);
            }
        }
        s.step();
        s
    }

    // ---- commands ----

    /// Sets the most token units held at once (at least 1). Growing lets more tasks start;
    /// shrinking gives back collected units at once and waits for running tasks to end (it
    /// never asks to kill one).
    pub fn set_capacity(&mut self, capacity: u32, now: Duration) {
        self.advance(now);
        self.config.capacity = capacity.max(1);
        self.step();
    }

    /// Starts nothing more: every task not started yet becomes [`TaskState::NotRun`],
    /// collected tokens are given back. Running tasks keep their tokens until the driver
    /// reports them finished (it should terminate them and report
    /// [`Outcome::Interrupted`]).
    pub fn stop(&mut self, now: Duration) {
        self.advance(now);
        if !self.stopping {
            self.stopping = true;
            self.abandon_queue();
        }
        self.step();
    }

    // ---- events ----

    /// `units` tokens arrived from the jobserver; they join the collected set.
    pub fn handle_granted(&mut self, units: u32, now: Duration) {
        self.advance(now);
        self.collected += units;
        self.ledger.granted += u64::from(units);
        self.note_peak();
        self.step();
    }

    /// The result of the lock attempt asked for by [`Action::TryLock`].
    ///
    /// # Panics
    ///
    /// If no attempt for `task` is outstanding.
    pub fn handle_lock(&mut self, task: TaskId, acquired: bool, now: Duration) {
        self.advance(now);
        assert_eq!(
            self.lock_pending,
            Some(task.0),
            "handle_lock for a task whose lock was not asked for"
        );
        self.lock_pending = None;
        let t = task.0;
        if self.stopping || self.halted {
            if acquired {
                self.actions.push_back(Action::Unlock(task));
            }
            self.set_state(t, TaskState::NotRun);
        } else if acquired {
            self.head = Some(t);
            self.head_key = self.lock_key;
        } else {
            self.park(t, RequeueReason::LockBusy);
        }
        self.step();
    }

    /// The driver started the task at `now` (its process spawned). Optional: without it a
    /// task's start time is when its [`Action::Start`] or [`Action::HandOff`] was emitted.
    /// Ignored for a task that is not running.
    pub fn handle_started(&mut self, task: TaskId, now: Duration) {
        self.advance(now);
        if self.state[task.index()] == TaskState::Running {
            self.started_at[task.index()] = micros(now);
        }
    }

    /// The lock attempt asked for by [`Action::TryLock`] failed for good (not "busy": the
    /// lock file cannot be created or locked at all). The task fails without starting and
    /// without tokens; its dependents are skipped.
    ///
    /// # Panics
    ///
    /// If no attempt for `task` is outstanding.
    pub fn handle_lock_failed(&mut self, task: TaskId, now: Duration) {
        self.advance(now);
        assert_eq!(
            self.lock_pending,
            Some(task.0),
            "handle_lock_failed for a task whose lock was not asked for"
        );
        self.lock_pending = None;
        let t = task.0;
        if self.stopping || self.halted {
            self.set_state(t, TaskState::NotRun);
        } else {
            self.fail(t);
        }
        self.step();
    }

    /// The task ended. The driver has already put the task's units back into the collected
    /// set (they may go straight to another task).
    ///
    /// # Panics
    ///
    /// If the task is not running.
    pub fn handle_finished(&mut self, task: TaskId, outcome: Outcome, now: Duration) {
        self.advance(now);
        let t = task.0;
        assert_eq!(
            self.state[t as usize],
            TaskState::Running,
            "handle_finished for a task that is not running"
        );
        let held = std::mem::take(&mut self.held[t as usize]);
        self.running_units -= held;
        self.running_tasks -= 1;
        self.collected += held;
        self.finished_at[t as usize] = micros(now);
        // A task ended: whatever waits for a lock or a retry may go again.
        self.park_round = 0;
        self.unpark_all();
        let outcome = if outcome == Outcome::Retry {
            let may = !self.stopping && !self.halted;
            if may && self.retries[t as usize] < self.config.retry_limit {
                self.retries[t as usize] = self.retries[t as usize].saturating_add(1);
                Outcome::Retry
            } else {
                Outcome::Failure
            }
        } else {
            outcome
        };
        match outcome {
            Outcome::Success => {
                self.set_state(t, TaskState::Succeeded);
                let then = self.graph.then(task).map(|u| u.0);
                let mut hand_to = None;
                let (from, to) = self.graph.dependents_span(task);
                for k in from..to {
                    let r = self.graph.dependent_at(k);
                    self.unmet[r as usize] -= 1;
                    if self.unmet[r as usize] == 0 && self.state[r as usize] == TaskState::Waiting {
                        if Some(r) == then && !self.graph.is_locked(TaskId(r)) {
                            hand_to = Some(r);
                        } else {
                            self.make_ready(r, false);
                        }
                    }
                }
                if let Some(u) = hand_to {
                    let need = self.need(u);
                    // Only the predecessor's own units move (not the head's partial set),
                    // and only within the capacity (after a shrink the units go back).
                    if !self.stopping
                        && !self.halted
                        && need <= held
                        && self.running_units + need <= self.config.capacity
                    {
                        self.set_state(u, TaskState::Ready);
                        self.start(u, need, Some(t));
                    } else {
                        self.make_ready(u, false);
                    }
                }
            }
            Outcome::Failure | Outcome::Interrupted => self.fail(t),
            Outcome::Retry => self.park(t, RequeueReason::Retry),
        }
        self.step();
    }

    /// The time asked for by [`Scheduler::poll_timeout`] has come (calling it early or late
    /// is harmless).
    pub fn handle_timeout(&mut self, now: Duration) {
        self.advance(now);
        if let (Some(since), Some(t)) = (self.partial_since, self.head) {
            if since
                .checked_add(self.config.partial_hold)
                .is_some_and(|d| now >= d)
            {
                self.back_off(t);
            }
        }
        let mut i = 0;
        while i < self.deferred.len() {
            if self.deferred[i].1 <= now {
                let (t, _) = self.deferred.swap_remove(i);
                self.make_ready(t, false);
            } else {
                i += 1;
            }
        }
        if self.park_deadline.is_some_and(|d| d <= now) {
            self.park_round = (self.park_round + 1).min(3);
            self.unpark_all();
        }
        self.step();
    }

    // ---- output ----

    /// The next action to carry out, if any.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// How many more token units the scheduler wants now: for the head task, within the
    /// capacity. The driver keeps asking the jobserver while this is above zero, and may drop
    /// a pending request when it falls to zero.
    #[must_use]
    pub fn demand(&self) -> u32 {
        if self.stopping || self.halted || self.lock_pending.is_some() {
            return 0;
        }
        match self.head {
            Some(t) => self.need(t).saturating_sub(self.collected).min(
                self.config
                    .capacity
                    .saturating_sub(self.running_units + self.collected),
            ),
            None => 0,
        }
    }

    /// When to call [`Scheduler::handle_timeout`] if no other event comes first.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Duration> {
        let partial = self
            .partial_since
            .and_then(|s| s.checked_add(self.config.partial_hold));
        let deferred = self.deferred.iter().map(|&(_, d)| d).min();
        [partial, deferred, self.park_deadline]
            .into_iter()
            .flatten()
            .min()
    }

    // ---- getters ----

    /// The graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The task's state.
    pub fn state(&self, task: TaskId) -> TaskState {
        self.state[task.index()]
    }

    /// The task's critical-path weight, in microseconds.
    pub fn weight(&self, task: TaskId) -> u64 {
        self.weight[task.index()]
    }

    /// The task's cost (logged duration, hint, or the unknown cost).
    pub fn cost(&self, task: TaskId) -> Duration {
        Duration::from_micros(self.cost[task.index()])
    }

    /// Units the task holds (while it runs).
    pub fn held(&self, task: TaskId) -> u32 {
        self.held[task.index()]
    }

    /// When the task started and when it finished (relative to the run's start), if it did.
    pub fn times(&self, task: TaskId) -> (Option<Duration>, Option<Duration>) {
        let i = task.index();
        match self.state[i] {
            TaskState::Running => (Some(Duration::from_micros(self.started_at[i])), None),
            TaskState::Succeeded | TaskState::Failed => (
                Some(Duration::from_micros(self.started_at[i])),
                Some(Duration::from_micros(self.finished_at[i])),
            ),
            _ => (None, None),
        }
    }

    /// The failed task that caused this one to be skipped.
    pub fn skipped_because(&self, task: TaskId) -> Option<TaskId> {
        let c = self.cause[task.index()];
        (c != u32::MAX).then_some(TaskId(c))
    }

    /// Times the task was re-queued with [`Outcome::Retry`].
    pub fn retries(&self, task: TaskId) -> u32 {
        self.retries[task.index()]
    }

    /// Units in the collected set (held, assigned to no running task).
    pub fn collected(&self) -> u32 {
        self.collected
    }

    /// Units held by running tasks.
    pub fn running_units(&self) -> u32 {
        self.running_units
    }

    /// The capacity in force.
    pub fn capacity(&self) -> u32 {
        self.config.capacity
    }

    /// The task collecting tokens now, if any.
    pub fn head(&self) -> Option<TaskId> {
        self.head.map(TaskId)
    }

    /// Where every unit went.
    pub fn ledger(&self) -> Ledger {
        self.ledger
    }

    /// How many tasks are in each state.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Whether [`Scheduler::stop`] was called.
    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    /// Whether the failure limit was reached (nothing more starts).
    pub fn is_halted(&self) -> bool {
        self.halted
    }

    /// Whether the run is over: nothing runs, nothing waits.
    pub fn is_finished(&self) -> bool {
        self.running_tasks == 0
            && self.head.is_none()
            && self.lock_pending.is_none()
            && self.ready.is_empty()
            && self.parked.is_empty()
            && self.deferred.is_empty()
    }

    /// Estimated time left at `now`, from the costs: the longer of the remaining critical
    /// path and the remaining work spread over the capacity.
    pub fn estimate_remaining(&self, now: Duration) -> Duration {
        let now = micros(now);
        let mut path = 0u64;
        let mut work = 0u64;
        for i in 0..self.graph.len() {
            let (c, w) = (self.cost[i], self.weight[i]);
            match self.state[i] {
                TaskState::Running => {
                    let done = now.saturating_sub(self.started_at[i]).min(c);
                    work += c - done;
                    path = path.max(w - done);
                }
                TaskState::Waiting | TaskState::Ready | TaskState::Parked => {
                    work += c;
                    path = path.max(w);
                }
                _ => {}
            }
        }
        let slots = u64::from(self.config.capacity.min(self.graph.len().max(1) as u32));
        Duration::from_micros(path.max(work / slots.max(1)))
    }

    /// Heap bytes held by the scheduler and its graph, for memory figures.
    pub fn heap_bytes(&self) -> usize {
        let n = self.graph.len();
        self.graph.heap_bytes()
            + n * (8 + 8 + 1 + 4 + 4 + 4 + 1 + 4 + 8 + 8)
            + self.ready.capacity() * std::mem::size_of::<Ready>()
            + self.parked.capacity() * 4
            + self.deferred.capacity() * std::mem::size_of::<(u32, Duration)>()
    }

    // ---- internals ----

    fn advance(&mut self, now: Duration) {
        if now > self.now {
            self.now = now;
        }
    }

    fn need(&self, t: u32) -> u32 {
        let k = self.graph.tokens(TaskId(t)).min(self.config.capacity);
        // With no known capacity (a jobserver without a `-jN` hint), a task that backed off
        // three times may be asking for more than the pool has: cut it to the most units
        // this run has held at once, so that it runs instead of backing off forever.
        let k = if self.config.capacity == u32::MAX && self.attempts[t as usize] >= 3 {
            k.min(self.ledger.peak.max(1))
        } else {
            k
        };
        k.max(1)
    }

    fn note_peak(&mut self) {
        self.ledger.peak = self.ledger.peak.max(self.collected + self.running_units);
    }

    fn set_state(&mut self, t: u32, new: TaskState) {
        let old = std::mem::replace(&mut self.state[t as usize], new);
        *self.count_of(old) -= 1;
        *self.count_of(new) += 1;
    }

    fn count_of(&mut self, s: TaskState) -> &mut usize {
        let c = &mut self.counts;
        match s {
            TaskState::Waiting => &mut c.waiting,
            TaskState::Ready => &mut c.ready,
            TaskState::Parked => &mut c.parked,
            TaskState::Running => &mut c.running,
            TaskState::Succeeded => &mut c.succeeded,
            TaskState::Failed => &mut c.failed,
            TaskState::Skipped => &mut c.skipped,
            TaskState::NotRun => &mut c.not_run,
        }
    }

    fn make_ready(&mut self, t: u32, requeued: bool) {
        self.set_state(t, TaskState::Ready);
        self.ready.push(Ready {
            requeued,
            weight: self.weight[t as usize],
            id: t,
        });
    }

    fn park(&mut self, t: u32, reason: RequeueReason) {
        self.set_state(t, TaskState::Parked);
        self.parked.push(t);
        if self.park_deadline.is_none() {
            let wait = self.config.retry_after.saturating_mul(1 << self.park_round);
            self.park_deadline = Some(self.now.saturating_add(wait));
        }
        self.actions.push_back(Action::Requeue {
            task: TaskId(t),
            reason,
        });
    }

    fn unpark_all(&mut self) {
        self.park_deadline = None;
        for t in std::mem::take(&mut self.parked) {
            self.make_ready(t, true);
        }
    }

    /// Gives back the head's partial set and defers it for a jittered, growing time.
    fn back_off(&mut self, t: u32) {
        self.partial_since = None;
        self.head = None;
        if self.graph.is_locked(TaskId(t)) {
            self.actions.push_back(Action::Unlock(TaskId(t)));
        }
        self.release(self.collected);
        let a = &mut self.attempts[t as usize];
        *a = a.saturating_add(1);
        let factor = 1u32 << (*a).min(3);
        let jitter = splitmix(self.config.jitter_seed ^ (u64::from(t) << 8) ^ u64::from(*a)) % 1000;
        let wait = self.config.partial_hold.saturating_mul(factor);
        let wait = wait.saturating_add(wait.mul_f64(jitter as f64 / 1000.0));
        self.deferred.push((t, self.now.saturating_add(wait)));
        self.set_state(t, TaskState::Parked);
        self.actions.push_back(Action::Requeue {
            task: TaskId(t),
            reason: RequeueReason::Backoff,
        });
    }

    fn release(&mut self, units: u32) {
        if units > 0 {
            self.collected -= units;
            self.ledger.released += u64::from(units);
            self.actions.push_back(Action::Release { tokens: units });
        }
    }

    fn start(&mut self, t: u32, need: u32, from: Option<u32>) {
        debug_assert!(self.collected >= need);
        self.collected -= need;
        self.running_units += need;
        self.running_tasks += 1;
        self.held[t as usize] = need;
        self.started_at[t as usize] = micros(self.now);
        self.set_state(t, TaskState::Running);
        if self.head == Some(t) {
            self.head = None;
            // Only the head's own start ends its hold; a hand-off to another task does not
            // restart the hold timer of the head's partial set.
            self.partial_since = None;
        }
        self.ledger.started += u64::from(need);
        let action = match from {
            Some(f) => {
                self.ledger.handed_off += u64::from(need);
                Action::HandOff {
                    from: TaskId(f),
                    to: TaskId(t),
                    tokens: need,
                }
            }
            None => Action::Start {
                task: TaskId(t),
                tokens: need,
            },
        };
        self.actions.push_back(action);
    }

    /// Marks everything not started as not run (stop, or the failure limit).
    fn abandon_queue(&mut self) {
        if let Some(t) = self.head.take() {
            if self.graph.is_locked(TaskId(t)) {
                self.actions.push_back(Action::Unlock(TaskId(t)));
            }
            self.set_state(t, TaskState::NotRun);
        }
        self.partial_since = None;
        while let Some(r) = self.ready.pop() {
            self.set_state(r.id, TaskState::NotRun);
        }
        for t in std::mem::take(&mut self.parked) {
            self.set_state(t, TaskState::NotRun);
        }
        self.park_deadline = None;
        for (t, _) in std::mem::take(&mut self.deferred) {
            self.set_state(t, TaskState::NotRun);
        }
        for i in 0..self.state.len() {
            if self.state[i] == TaskState::Waiting {
                self.set_state(i as u32, TaskState::NotRun);
            }
        }
    }

    /// Marks `t` failed, skips its dependents and halts at the failure limit.
    fn fail(&mut self, t: u32) {
        self.set_state(t, TaskState::Failed);
        self.failures += 1;
        self.skip_dependents(t);
        if self.config.keep_going > 0 && self.failures >= self.config.keep_going && !self.halted {
            self.halted = true;
            self.abandon_queue();
        }
    }

    fn skip_dependents(&mut self, failed: u32) {
        let mut stack = vec![failed];
        while let Some(t) = stack.pop() {
            let (from, to) = self.graph.dependents_span(TaskId(t));
            for k in from..to {
                let r = self.graph.dependent_at(k);
                if self.state[r as usize] == TaskState::Waiting {
                    self.set_state(r, TaskState::Skipped);
                    self.cause[r as usize] = failed;
                    self.actions.push_back(Action::Skip {
                        task: TaskId(r),
                        because: TaskId(failed),
                    });
                    stack.push(r);
                }
            }
        }
    }

    /// Starts what can start, gives back what nobody will use, and keeps the timers.
    fn step(&mut self) {
        loop {
            if self.stopping || self.halted || self.lock_pending.is_some() {
                break;
            }
            // A head that holds nothing yet (and no lock) yields to a better task that became
            // ready since it was chosen: the next unit goes to the best task at that moment.
            if let (Some(t), Some(key)) = (self.head, self.head_key) {
                let better = self.ready.peek().is_some_and(|r| *r > key);
                if better && self.head_partial == 0 && !self.graph.is_locked(TaskId(t)) {
                    self.ready.push(key);
                    self.head = None;
                    self.head_key = None;
                }
            }
            let t = match self.head {
                Some(t) => t,
                // No room for a unit that is not collected yet: choose the head only when
                // one frees, so that it goes to the best task ready at that moment.
                None if self.running_units >= self.config.capacity => break,
                None => match self.ready.pop() {
                    None => break,
                    Some(r) => {
                        if self.graph.is_locked(TaskId(r.id)) {
                            self.lock_pending = Some(r.id);
                            self.lock_key = Some(r);
                            self.actions.push_back(Action::TryLock(TaskId(r.id)));
                            break;
                        }
                        self.head = Some(r.id);
                        self.head_key = Some(r);
                        r.id
                    }
                },
            };
            let need = self.need(t);
            if self.collected >= need && self.running_units + need <= self.config.capacity {
                self.start(t, need, None);
            } else {
                break;
            }
        }
        if self.lock_pending.is_none() {
            let keep = match self.head {
                Some(t) if !self.stopping && !self.halted => self.collected.min(self.need(t)),
                _ => 0,
            };
            let keep = keep.min(self.config.capacity.saturating_sub(self.running_units));
            self.release(self.collected - keep.min(self.collected));
        }
        match self.head {
            Some(t)
                if self.collected > 0
                    && self.collected < self.need(t)
                    && self.running_units + self.collected < self.need(t) =>
            {
                self.partial_since.get_or_insert(self.now);
            }
            _ => self.partial_since = None,
        }
        self.head_partial = if self.head.is_some() {
            self.collected
        } else {
            0
        };
        if !self.done && self.is_finished() {
            self.done = true;
            self.actions.push_back(Action::Done);
        }
    }
}

/// A small, fixed mixing function for jitter (SplitMix64's finaliser).
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
