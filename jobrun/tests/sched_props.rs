//! Property tests of the pure scheduling core (`jobrun::sched`).
//!
//! 1. `protocol_invariants_on_random_dags`: random acyclic graphs driven by hand, following the
//!    protocol of the module docs, against a jobserver pool shared with a simulated other
//!    process, with lock answers, capacity changes, a stop, retries and failures; every token
//!    rule is checked after every step. `protocol_invariants_with_a_scarce_pool_and_hand_off_chains`
//!    is the same with more `then` chains, more multi-token tasks and a greedier other process.
//!    Both use fixed proptest seeds (the same cases on every run) and write no regression files.
//! 2. `two_processes_share_a_pool_without_deadlock` and
//!    `partial_hold_breaks_the_cross_process_deadlock`: multi-token tasks in two schedulers
//!    sharing one pool of 8.
//! 3. `makespan_near_lower_bound_on_benchmark_graphs`: critical-path list scheduling on
//!    RUNNER.md-style graphs through `sim::simulate`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::fmt::Write as _;
use std::time::Duration;

use jobrun::sched::sim::simulate;
use jobrun::sched::{
    Action, Config, Graph, NodeSpec, Outcome, RequeueReason, Scheduler, TaskId, TaskState,
};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::RngSeed;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// SplitMix64: the dynamic choices of a run (lock answers, the other process, grant order).
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    fn pct(&mut self, p: u32) -> bool {
        self.below(100) < u64::from(p)
    }
}

fn config(cases: u32, seed: u64) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Fixed seed: the same cases on every CI run; no regression files written.
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------
// 1. Random DAGs, driven by hand.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct TaskGen {
    deps: Vec<Index>,
    tokens: u32,
    locked: bool,
    then: Option<Index>,
    dur_ms: u64,
    outcomes: Vec<Outcome>,
}

#[derive(Debug, Clone)]
struct Scenario {
    tasks: Vec<TaskGen>,
    pool: u32,
    capacity: u32,
    keep_going: u32,
    retry_limit: u32,
    retry_after_ms: u64,
    partial_hold_ms: u64,
    jitter_seed: u64,
    cap_changes: Vec<(u64, u32)>,
    stop_at: Option<u64>,
    other: Vec<(u64, bool, u32)>,
    lock_busy_pct: u32,
    extra_grant_pct: u32,
    seed: u64,
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        20 => Just(Outcome::Success),
        1 => Just(Outcome::Failure),
        3 => Just(Outcome::Retry),
    ]
}

/// `then_p`: how often a task names a `then` successor; `multi`: weight (of 5) of tasks
/// drawing 1..=4 tokens.
fn task_gen(then_p: f64, multi: u32) -> impl Strategy<Value = TaskGen> {
    (
        prop::collection::vec(any::<Index>(), 0..4),
        prop_oneof![5 - multi => Just(1u32), multi => 1u32..=4],
        prop::bool::weighted(0.2),
        prop::option::weighted(then_p, any::<Index>()),
        // Multiples of 100 ms make finishes coincide with each other and with timeouts.
        prop_oneof![1..=2000u64, (1..=20u64).prop_map(|k| k * 100)],
        prop::collection::vec(outcome(), 1..4),
    )
        .prop_map(|(deps, tokens, locked, then, dur_ms, outcomes)| TaskGen {
            deps,
            tokens,
            locked,
            then,
            dur_ms,
            outcomes,
        })
}

/// The general mix: `scenario(0.3, 2, 60)`. A scarce pool with chains of hand-offs and
/// multi-token tasks: `scenario(0.6, 4, 200)`.
fn scenario(then_p: f64, multi: u32, other_events: usize) -> impl Strategy<Value = Scenario> {
    (
        prop::collection::vec(task_gen(then_p, multi), 1..60),
        (
            4u32..=8,
            1u32..=10,
            prop_oneof![Just(0u32), 1u32..=3],
            0u32..=3,
        ),
        (1u64..=300, 1u64..=2000, any::<u64>()),
        prop::collection::vec((0u64..40_000, 1u32..=10), 0..4),
        prop::option::weighted(0.35, 0u64..15_000),
        prop::collection::vec(
            (0u64..OTHER_END_MS, any::<bool>(), 1u32..=4),
            0..other_events,
        ),
        (0u32..=80, 0u32..=60, any::<u64>()),
    )
        .prop_map(
            |(
                tasks,
                (pool, capacity, keep_going, retry_limit),
                (retry_after_ms, partial_hold_ms, jitter_seed),
                cap_changes,
                stop_at,
                other,
                (lock_busy_pct, extra_grant_pct, seed),
            )| Scenario {
                tasks,
                pool,
                capacity,
                keep_going,
                retry_limit,
                retry_after_ms,
                partial_hold_ms,
                jitter_seed,
                cap_changes,
                stop_at,
                other,
                lock_busy_pct,
                extra_grant_pct,
                seed,
            },
        )
}

/// The graph of a scenario: deps only to earlier tasks, `then` only to a later task that no
/// other task names.
fn build_specs(tasks: &[TaskGen]) -> Vec<NodeSpec> {
    let n = tasks.len();
    let name = |i: usize| format!("t{i}");
    let mut specs: Vec<NodeSpec> = (0..n).map(|i| NodeSpec::new(name(i))).collect();
    let mut has_pred = vec![false; n];
    for (i, t) in tasks.iter().enumerate() {
        if i > 0 {
            for d in &t.deps {
                specs[i].deps.push(name(d.index(i)));
            }
        }
        specs[i].tokens = t.tokens;
        specs[i].locked = t.locked;
        if let Some(x) = &t.then {
            if i + 1 < n {
                let j = i + 1 + x.index(n - i - 1);
                if !has_pred[j] {
                    has_pred[j] = true;
                    specs[i].then = Some(name(j));
                }
            }
        }
    }
    specs
}

/// Bit masks of the transitive dependencies (graphs here have fewer than 64 tasks).
fn ancestors(g: &Graph) -> Vec<u64> {
    let mut anc = vec![0u64; g.len()];
    for t in g.topological() {
        let mut m = 0;
        for d in g.deps(t) {
            m |= anc[d.index()] | (1 << d.index());
        }
        anc[t.index()] = m;
    }
    anc
}

#[derive(Debug)]
enum Ev {
    Finish { task: usize, gen: u64 },
    Cap(u32),
    Stop,
    OtherTake(u32),
    OtherGive(u32),
    OtherGiveAll,
}

#[derive(Debug)]
struct Run {
    units: u32,
    gen: u64,
    outcome: Outcome,
}

/// What the runs exercised, summed over the cases (to show the generator reaches every path).
#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    cases: u64,
    tasks: u64,
    starts: u64,
    hand_offs: u64,
    lock_tries: u64,
    lock_busy: u64,
    lock_tries_with_units_collected: u64,
    retry_requeues: u64,
    backoffs: u64,
    skips: u64,
    stops: u64,
    halts: u64,
    over_capacity_after_shrink: u64,
    extra_grants: u64,
    timeouts: u64,
    not_run: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.cases += o.cases;
        self.tasks += o.tasks;
        self.starts += o.starts;
        self.hand_offs += o.hand_offs;
        self.lock_tries += o.lock_tries;
        self.lock_busy += o.lock_busy;
        self.lock_tries_with_units_collected += o.lock_tries_with_units_collected;
        self.retry_requeues += o.retry_requeues;
        self.backoffs += o.backoffs;
        self.skips += o.skips;
        self.stops += o.stops;
        self.halts += o.halts;
        self.over_capacity_after_shrink += o.over_capacity_after_shrink;
        self.extra_grants += o.extra_grants;
        self.timeouts += o.timeouts;
        self.not_run += o.not_run;
    }
}

/// The simulated end of the other process's activity: it gives everything back then.
const OTHER_END_MS: u64 = 30_000;

struct Driver<'a> {
    sc: &'a Scenario,
    s: Scheduler,
    anc: Vec<u64>,
    now: Duration,
    pool: u32,
    free: u32,
    other: u32,
    other_want: u32,
    collected: u32,
    running: BTreeMap<usize, Run>,
    running_units: u32,
    granted: u64,
    released: u64,
    started_units: u64,
    handed_units: u64,
    peak: u32,
    locks: Vec<bool>,
    attempts: Vec<u32>,
    started_ever: Vec<bool>,
    skipped_seen: Vec<bool>,
    just_finished: Option<(usize, u32, Outcome)>,
    events: BinaryHeap<Reverse<(Duration, u64)>>,
    evs: HashMap<u64, Ev>,
    seq: u64,
    gen: u64,
    partial: Option<(TaskId, Duration)>,
    done: u32,
    halted_seen: bool,
    rng: Rng,
    trace: Vec<String>,
    stats: Stats,
}

impl<'a> Driver<'a> {
    fn new(sc: &'a Scenario) -> Self {
        let specs = build_specs(&sc.tasks);
        let graph = Graph::new(specs).expect("generated graphs are valid");
        let n = graph.len();
        let anc = ancestors(&graph);
        let cfg = Config {
            capacity: sc.capacity,
            keep_going: sc.keep_going,
            retry_limit: sc.retry_limit,
            retry_after: ms(sc.retry_after_ms),
            partial_hold: ms(sc.partial_hold_ms),
            jitter_seed: sc.jitter_seed,
            unknown_cost: ms(500),
        };
        // Half the tasks have a logged duration (not necessarily the real one).
        let durs: Vec<u64> = sc.tasks.iter().map(|t| t.dur_ms).collect();
        let s = Scheduler::new(graph, cfg, |t| {
            (t.index() % 2 == 0).then(|| ms(durs[t.index()] / 2 + 1))
        });
        let mut d = Driver {
            sc,
            s,
            anc,
            now: Duration::ZERO,
            pool: sc.pool,
            free: sc.pool,
            other: 0,
            other_want: 0,
            collected: 0,
            running: BTreeMap::new(),
            running_units: 0,
            granted: 0,
            released: 0,
            started_units: 0,
            handed_units: 0,
            peak: 0,
            locks: vec![false; n],
            attempts: vec![0; n],
            started_ever: vec![false; n],
            skipped_seen: vec![false; n],
            just_finished: None,
            events: BinaryHeap::new(),
            evs: HashMap::new(),
            seq: 0,
            gen: 0,
            partial: None,
            done: 0,
            halted_seen: false,
            rng: Rng(sc.seed),
            trace: Vec::new(),
            stats: Stats::default(),
        };
        for &(at, cap) in &sc.cap_changes {
            d.push_ev(ms(at), Ev::Cap(cap));
        }
        if let Some(at) = sc.stop_at {
            d.push_ev(ms(at), Ev::Stop);
        }
        for &(at, take, k) in &sc.other {
            d.push_ev(
                ms(at),
                if take {
                    Ev::OtherTake(k)
                } else {
                    Ev::OtherGive(k)
                },
            );
        }
        d.push_ev(ms(OTHER_END_MS), Ev::OtherGiveAll);
        d
    }

    fn push_ev(&mut self, at: Duration, ev: Ev) {
        self.seq += 1;
        self.events.push(Reverse((at, self.seq)));
        self.evs.insert(self.seq, ev);
    }

    fn log(&mut self, msg: impl FnOnce() -> String) {
        let line = format!("{:>9.3}s {}", self.now.as_secs_f64(), msg());
        self.trace.push(line);
    }

    #[track_caller]
    fn fail(&self, msg: &str) -> ! {
        let mut out = String::new();
        let from = self.trace.len().saturating_sub(80);
        for l in &self.trace[from..] {
            let _ = writeln!(out, "  {l}");
        }
        panic!(
            "{msg}\n  at {:?}; collected {} running {} cap {} head {:?} demand {} timeout {:?} \
             ledger {:?}\n  last trace lines:\n{out}",
            self.now,
            self.s.collected(),
            self.s.running_units(),
            self.s.capacity(),
            self.s.head(),
            self.s.demand(),
            self.s.poll_timeout(),
            self.s.ledger(),
        );
    }

    fn need(&self, t: TaskId) -> u32 {
        self.s.graph().tokens(t).min(self.s.capacity()).max(1)
    }

    fn ensure(&self, cond: bool, msg: impl FnOnce() -> String) {
        if !cond {
            self.fail(&msg());
        }
    }

    /// Carries out every action, answering lock attempts at once.
    fn drain(&mut self) {
        while let Some(a) = self.s.poll_action() {
            self.log(|| format!("  {a:?}"));
            self.ensure(self.done == 0, || format!("{a:?} after Done"));
            match a {
                Action::TryLock(t) => {
                    let i = t.index();
                    self.ensure(self.s.graph().is_locked(t), || {
                        format!("TryLock of unlocked {t}")
                    });
                    self.ensure(!self.locks[i], || {
                        format!("TryLock of {t} whose lock we hold")
                    });
                    self.ensure(
                        !self.running.contains_key(&t.index()) && self.s.held(t) == 0,
                        || format!("{t} tries its lock while holding tokens"),
                    );
                    self.ensure(self.s.state(t) == TaskState::Ready, || {
                        format!("TryLock of {t} in state {:?}", self.s.state(t))
                    });
                    self.ensure(self.s.demand() == 0, || {
                        "demand while a lock is tried".into()
                    });
                    let ok = !self.rng.pct(self.sc.lock_busy_pct);
                    self.stats.lock_tries += 1;
                    // Units returned by a task that just ended may wait in the collected set
                    // while the (non-blocking, answered at once) attempt is made; they are
                    // used or released before the next input.
                    if self.s.collected() > 0 {
                        self.stats.lock_tries_with_units_collected += 1;
                    }
                    self.log(|| format!("  -> lock {t} {}", if ok { "acquired" } else { "busy" }));
                    if ok {
                        self.locks[i] = true;
                    }
                    self.s.handle_lock(t, ok, self.now);
                }
                Action::Unlock(t) => {
                    self.ensure(self.locks[t.index()], || format!("Unlock of {t}, not held"));
                    self.ensure(!self.running.contains_key(&t.index()), || {
                        format!("Unlock of running {t}")
                    });
                    self.locks[t.index()] = false;
                }
                Action::Start { task, tokens } => self.on_start(task, tokens, None),
                Action::HandOff { from, to, tokens } => self.on_start(to, tokens, Some(from)),
                Action::Release { tokens } => {
                    self.ensure(tokens > 0, || "Release of 0".into());
                    self.ensure(self.collected >= tokens, || {
                        format!("Release {tokens} with {} collected", self.collected)
                    });
                    self.collected -= tokens;
                    self.released += u64::from(tokens);
                    self.free += tokens;
                    self.ensure(self.free + self.other <= self.pool, || {
                        format!("pool over-filled: free {} other {}", self.free, self.other)
                    });
                }
                Action::Requeue { task, reason } => {
                    let i = task.index();
                    self.ensure(
                        !self.running.contains_key(&task.index()) && self.s.held(task) == 0,
                        || format!("re-queued {task} holds tokens"),
                    );
                    self.ensure(!self.locks[i], || {
                        format!("re-queued {task} still holds its lock")
                    });
                    match reason {
                        RequeueReason::LockBusy => {
                            self.stats.lock_busy += 1;
                            self.ensure(self.s.graph().is_locked(task), || {
                                format!("LockBusy for unlocked {task}")
                            });
                        }
                        RequeueReason::Retry => {
                            self.stats.retry_requeues += 1;
                            self.ensure(
                                matches!(self.just_finished, Some((f, _, Outcome::Retry)) if f == task.index()),
                                || format!("Retry re-queue of {task} that did not just ask"),
                            );
                            self.ensure(self.s.retries(task) <= self.sc.retry_limit, || {
                                format!("{task} retried beyond the limit")
                            });
                        }
                        RequeueReason::Backoff => {
                            self.stats.backoffs += 1;
                            self.ensure(self.need(task) > 1, || {
                                format!("back-off of 1-token {task}")
                            });
                        }
                    }
                }
                Action::Skip { task, because } => {
                    let i = task.index();
                    self.ensure(self.s.state(task) == TaskState::Skipped, || {
                        format!("Skip of {task} in state {:?}", self.s.state(task))
                    });
                    self.ensure(self.anc[i] & (1 << because.index()) != 0, || {
                        format!("{task} skipped because of {because}, not a dependency")
                    });
                    self.ensure(self.s.state(because) == TaskState::Failed, || {
                        format!("{task} skipped because of {because}, which did not fail")
                    });
                    self.ensure(!self.started_ever[i] && !self.skipped_seen[i], || {
                        format!("{task} skipped after starting or twice")
                    });
                    self.skipped_seen[i] = true;
                    self.stats.skips += 1;
                }
                Action::Done => {
                    self.ensure(self.s.is_finished(), || {
                        "Done before the run is finished".into()
                    });
                    self.done += 1;
                }
            }
        }
    }

    fn on_start(&mut self, task: TaskId, tokens: u32, from: Option<TaskId>) {
        let i = task.index();
        let g = self.s.graph();
        self.ensure(self.s.state(task) == TaskState::Running, || {
            format!("{task} started, not Running")
        });
        self.ensure(!self.running.contains_key(&task.index()), || {
            format!("{task} started twice")
        });
        for d in g.deps(task) {
            self.ensure(self.s.state(d) == TaskState::Succeeded, || {
                format!(
                    "{task} started before its dependency {d} succeeded ({:?})",
                    self.s.state(d)
                )
            });
        }
        if g.is_locked(task) {
            self.ensure(self.locks[i], || {
                format!("locked {task} started without its lock")
            });
        }
        self.ensure(!self.s.is_stopping(), || {
            format!("{task} started after stop")
        });
        let kg = self.sc.keep_going;
        self.ensure(kg == 0 || self.s.failures() < kg, || {
            format!(
                "{task} started after failure {} of keep_going {kg}",
                self.s.failures()
            )
        });
        self.ensure(tokens == self.need(task), || {
            format!(
                "{task} started with {tokens} units, needs {}",
                self.need(task)
            )
        });
        if let Some(f) = from {
            self.ensure(g.then(f) == Some(task), || {
                format!("hand-off {f} -> {task}, not its then")
            });
            match self.just_finished {
                Some((jf, units, Outcome::Success)) if jf == f.index() => {
                    self.ensure(tokens <= units, || {
                        format!("hand-off {f} -> {task} moves {tokens} units; {f} returned {units}")
                    });
                }
                _ => self.fail(&format!("hand-off from {f}, which did not just succeed")),
            }
            self.handed_units += u64::from(tokens);
            self.stats.hand_offs += 1;
        }
        self.ensure(self.collected >= tokens, || {
            format!(
                "{task} takes {tokens} units of {} collected",
                self.collected
            )
        });
        self.collected -= tokens;
        self.running_units += tokens;
        self.started_units += u64::from(tokens);
        self.stats.starts += 1;
        self.ensure(self.running_units <= self.s.capacity(), || {
            format!(
                "{task} starts: running units {} above the capacity {}",
                self.running_units,
                self.s.capacity()
            )
        });
        let t = &self.sc.tasks[i];
        let k = self.attempts[i] as usize;
        let outcome = t.outcomes[k.min(t.outcomes.len() - 1)];
        let dur = ms(t.dur_ms + 7 * k as u64);
        self.attempts[i] += 1;
        self.started_ever[i] = true;
        self.gen += 1;
        let gen = self.gen;
        self.running.insert(
            task.index(),
            Run {
                units: tokens,
                gen,
                outcome,
            },
        );
        self.push_ev(
            self.now + dur,
            Ev::Finish {
                task: task.index(),
                gen,
            },
        );
    }

    fn grant(&mut self, units: u32) {
        self.free -= units;
        self.granted += u64::from(units);
        self.collected += units;
        self.peak = self.peak.max(self.collected + self.running_units);
        self.log(|| format!("grant {units}"));
        self.s.handle_granted(units, self.now);
        self.drain();
        self.check();
    }

    /// Grants units only while the scheduler asks; sometimes one more right after its demand
    /// fell to zero (a request that was already under way).
    fn grant_loop(&mut self) {
        loop {
            let d = self.s.demand();
            if self.free == 0 || (d == 0 && self.other_want == 0) {
                break;
            }
            if self.other_want > 0 && (d == 0 || self.rng.pct(50)) {
                self.free -= 1;
                self.other += 1;
                self.other_want -= 1;
                self.log(|| "other takes 1".into());
                continue;
            }
            let units = 1 + self.rng.below(u64::from(d.min(self.free))) as u32;
            self.grant(units);
            if self.s.demand() == 0 && self.free > 0 && self.rng.pct(self.sc.extra_grant_pct) {
                self.stats.extra_grants += 1;
                self.grant(1);
            }
        }
    }

    /// The invariants that hold once the actions are drained.
    fn check(&mut self) {
        let s = &self.s;
        let l = s.ledger();
        self.ensure(self.collected == s.collected(), || {
            format!("driver counts {} collected", self.collected)
        });
        self.ensure(self.running_units == s.running_units(), || {
            format!("driver counts {} running units", self.running_units)
        });
        self.ensure(
            l.granted == self.granted && l.released == self.released,
            || {
                format!(
                    "ledger differs: driver granted {} released {}",
                    self.granted, self.released
                )
            },
        );
        self.ensure(
            l.started == self.started_units && l.handed_off == self.handed_units,
            || {
                format!(
                    "ledger started/handed_off differ: {} {}",
                    self.started_units, self.handed_units
                )
            },
        );
        self.ensure(l.peak == self.peak, || {
            format!("ledger peak differs: {}", self.peak)
        });
        self.ensure(
            u64::from(self.collected + self.running_units) == l.granted - l.released,
            || "collected + running != granted - released".into(),
        );
        self.ensure(
            u64::from(self.free + self.other) + l.outstanding() == u64::from(self.pool),
            || {
                format!(
                    "pool does not add up: free {} other {}",
                    self.free, self.other
                )
            },
        );
        let cap = s.capacity();
        if self.collected + self.running_units > cap {
            self.ensure(self.collected == 0, || {
                "collected units above the capacity".into()
            });
            self.stats.over_capacity_after_shrink += 1;
        }
        let demand = s.demand();
        if let Some(h) = s.head() {
            self.ensure(self.collected + demand <= self.need(h), || {
                "demand above the need".into()
            });
        }
        self.ensure(
            self.collected + self.running_units + demand <= cap.max(self.running_units),
            || "demand above the capacity".into(),
        );
        if let Some(h) = s.head() {
            self.ensure(s.state(h) == TaskState::Ready, || {
                format!("head {h} is {:?}", s.state(h))
            });
            self.ensure(self.collected <= self.need(h), || {
                "more collected than the head needs".into()
            });
        } else {
            self.ensure(self.collected == 0 && s.demand() == 0, || {
                "units collected for no head".into()
            });
        }
        if s.is_stopping() || s.is_halted() {
            self.ensure(self.collected == 0 && s.demand() == 0, || {
                "units kept after stop/halt".into()
            });
        }
        if s.is_halted() {
            self.halted_seen = true;
        }
        let mut counts = [0usize; 8];
        for t in s.graph().ids() {
            let i = t.index();
            let st = s.state(t);
            counts[st as usize] += 1;
            self.ensure(
                (st == TaskState::Running) == self.running.contains_key(&t.index()),
                || {
                    format!(
                        "{t} is {st:?}; driver running: {}",
                        self.running.contains_key(&t.index())
                    )
                },
            );
            if st != TaskState::Running {
                self.ensure(s.held(t) == 0, || {
                    format!("{t} is {st:?} and holds {}", s.held(t))
                });
            }
            if self.locks[i] && st != TaskState::Running {
                // A lock taken for a task that does not run yet: only the head's.
                self.ensure(s.head() == Some(t), || {
                    format!("{t} holds its lock but is not the head")
                });
            }
        }
        let c = s.counts();
        let expect = [
            c.waiting,
            c.ready,
            c.parked,
            c.running,
            c.succeeded,
            c.failed,
            c.skipped,
            c.not_run,
        ];
        self.ensure(counts == expect, || {
            format!("counts {c:?} differ from states {counts:?}")
        });
        // No stall: something runs, or the scheduler asks for tokens or a timer.
        if !s.is_finished() && self.running.is_empty() {
            self.ensure(s.demand() > 0 || s.poll_timeout().is_some(), || {
                "stall: nothing runs, no demand, no timeout".into()
            });
        }
        self.check_partial();
    }

    /// A partial set that our own running tasks cannot complete is held at most
    /// `partial_hold`.
    fn check_partial(&mut self) {
        let cond = self.s.head().filter(|&h| {
            let need = self.need(h);
            let c = self.collected;
            c > 0 && c < need && self.running_units + c < need
        });
        match (cond, self.partial) {
            (Some(h), Some((ph, since))) if ph == h => {
                let held = self.now - since;
                self.ensure(held <= ms(self.sc.partial_hold_ms), || {
                    format!("partial set for {h} held {held:?} since {since:?}")
                });
            }
            (Some(h), _) => self.partial = Some((h, self.now)),
            (None, _) => self.partial = None,
        }
    }

    fn run(mut self) -> Stats {
        self.drain();
        self.check();
        self.grant_loop();
        let mut steps = 0u64;
        loop {
            steps += 1;
            self.ensure(steps < 2_000_000, || "too many steps".into());
            self.ensure(self.now < Duration::from_secs(4 * 3600), || {
                "simulated time runs away".into()
            });
            if self.s.is_finished() {
                break;
            }
            let next_ev = self.events.peek().map(|Reverse((t, _))| *t);
            let timeout = self.s.poll_timeout();
            let take_timeout = match (timeout, next_ev) {
                (Some(a), Some(b)) => a <= b,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => self.fail("stall: not finished, no event, no timeout"),
            };
            if take_timeout {
                let at = timeout.unwrap();
                self.now = self.now.max(at);
                self.log(|| "timeout".into());
                self.stats.timeouts += 1;
                self.s.handle_timeout(self.now);
                self.drain();
                self.check();
                if let Some(t) = self.s.poll_timeout() {
                    self.ensure(t > self.now, || {
                        format!("timeout {t:?} not in the future: spinning")
                    });
                }
            } else {
                let Reverse((at, seq)) = self.events.pop().unwrap();
                self.now = self.now.max(at);
                let ev = self.evs.remove(&seq).unwrap();
                if !self.event(ev) {
                    continue;
                }
            }
            self.grant_loop();
        }
        self.finish();
        self.stats.cases = 1;
        self.stats.tasks = self.s.graph().len() as u64;
        self.stats.halts = u64::from(self.s.is_halted());
        self.stats.not_run = self.s.counts().not_run as u64;
        self.stats
    }

    /// Carries out an event; false if it was stale and nothing happened.
    fn event(&mut self, ev: Ev) -> bool {
        match ev {
            Ev::Finish { task, gen } => {
                let Some(r) = self.running.get(&task) else {
                    return false;
                };
                if r.gen != gen {
                    return false;
                }
                let r = self.running.remove(&task).unwrap();
                let t = TaskId::from_index(task);
                // The task's units go back into the collected set first; its lock is freed.
                self.running_units -= r.units;
                self.collected += r.units;
                self.locks[t.index()] = false;
                self.just_finished = Some((task, r.units, r.outcome));
                self.log(|| format!("finish {t} {:?} ({} units)", r.outcome, r.units));
                self.s.handle_finished(t, r.outcome, self.now);
                self.drain();
                self.just_finished = None;
                self.check();
                let st = self.s.state(t);
                let ok = match r.outcome {
                    Outcome::Success => st == TaskState::Succeeded || st == TaskState::Running,
                    Outcome::Failure | Outcome::Interrupted => st == TaskState::Failed,
                    Outcome::Retry => matches!(
                        st,
                        TaskState::Failed
                            | TaskState::Parked
                            | TaskState::Ready
                            | TaskState::Running
                    ),
                };
                self.ensure(ok, || format!("{t} finished {:?}, now {st:?}", r.outcome));
            }
            Ev::Cap(c) => {
                self.log(|| format!("set_capacity {c}"));
                self.s.set_capacity(c, self.now);
                self.drain();
                self.check();
            }
            Ev::Stop => {
                self.log(|| "stop".into());
                self.stats.stops += 1;
                self.s.stop(self.now);
                self.drain();
                self.check();
                self.ensure(self.collected == 0, || {
                    "collected units kept after stop".into()
                });
                // Terminate about half of the running tasks; they end soon, interrupted.
                let ids: Vec<usize> = self.running.keys().copied().collect();
                for task in ids {
                    if self.rng.pct(50) {
                        self.gen += 1;
                        let gen = self.gen;
                        let r = self.running.get_mut(&task).unwrap();
                        r.gen = gen;
                        r.outcome = Outcome::Interrupted;
                        let at = self.now + ms(self.rng.below(50));
                        self.push_ev(at, Ev::Finish { task, gen });
                    }
                }
            }
            Ev::OtherTake(k) => {
                // It asks for k more; free units go to it or to us as they come, in a race.
                self.other_want += k;
                self.log(|| format!("other asks for {k}"));
            }
            Ev::OtherGive(k) => {
                let k = k.min(self.other);
                self.other -= k;
                self.free += k;
                self.log(|| format!("other gives {k}"));
                return k > 0;
            }
            Ev::OtherGiveAll => {
                self.free += self.other;
                self.other = 0;
                self.other_want = 0;
                self.log(|| "other gives all".into());
            }
        }
        true
    }

    /// The end of the run: every token back, every task final, keep-going honoured.
    fn finish(&mut self) {
        let left = self.s.poll_action();
        self.ensure(left.is_none(), || format!("{left:?} after the end"));
        let s = &self.s;
        let l = s.ledger();
        self.ensure(self.done == 1, || {
            format!("Done emitted {} times", self.done)
        });
        self.ensure(self.running.is_empty() && self.collected == 0, || {
            "units left at the end".into()
        });
        self.ensure(l.granted == l.released, || {
            "ledger not balanced at the end".into()
        });
        self.ensure(self.free + self.other == self.pool, || {
            "pool not whole at the end".into()
        });
        self.ensure(self.locks.iter().all(|&l| !l), || {
            "a lock is still held".into()
        });
        let stopped = s.is_stopping();
        let halted = s.is_halted();
        let mut failed = 0;
        for t in s.graph().topological() {
            let i = t.index();
            let st = s.state(t);
            self.ensure(st.is_final(), || format!("{t} ends in {st:?}"));
            if st == TaskState::Failed {
                failed += 1;
            }
            if st == TaskState::Skipped {
                let b = s.skipped_because(t).expect("skipped has a cause");
                self.ensure(self.skipped_seen[i], || {
                    format!("{t} skipped without a Skip action")
                });
                self.ensure(self.anc[i] & (1 << b.index()) != 0, || {
                    format!("{t} skipped for {b}")
                });
                self.ensure(s.state(b) == TaskState::Failed, || {
                    format!("{t} skipped for {b}")
                });
            }
            if !stopped && !halted {
                let deps_ok = s
                    .graph()
                    .deps(t)
                    .all(|d| s.state(d) == TaskState::Succeeded);
                let want_run = deps_ok;
                let ran = matches!(st, TaskState::Succeeded | TaskState::Failed);
                self.ensure(ran == want_run && (ran || st == TaskState::Skipped), || {
                    format!("{t} ends {st:?} without stop or halt (deps succeeded: {deps_ok})")
                });
            }
        }
        self.ensure(u32::try_from(failed).unwrap() == s.failures(), || {
            format!("{failed} tasks failed, scheduler counts {}", s.failures())
        });
        let kg = self.sc.keep_going;
        if kg == 0 {
            self.ensure(!halted && !self.halted_seen, || {
                "halted with keep_going 0".into()
            });
        } else {
            self.ensure(halted == (s.failures() >= kg), || {
                format!("halted {halted} with {} failures of {kg}", s.failures())
            });
        }
    }
}

/// Runs `cases` random scenarios; returns the summed coverage.
fn run_dag_cases(cases: u32, seed: u64, strategy: impl Strategy<Value = Scenario>) -> Stats {
    use proptest::test_runner::TestRunner;
    use std::cell::RefCell;
    let total = RefCell::new(Stats::default());
    let mut runner = TestRunner::new(config(cases, seed));
    let result = runner.run(&strategy, |sc| {
        let st = Driver::new(&sc).run();
        total.borrow_mut().add(&st);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let t = *total.borrow();
    println!("summed over the {} cases: {t:?}", t.cases);
    t
}

#[test]
fn protocol_invariants_on_random_dags() {
    let t = run_dag_cases(1500, 0x5eed_0001, scenario(0.3, 2, 60));
    // Every path was exercised, many times.
    for (name, v) in [
        ("hand-offs", t.hand_offs),
        ("lock busy", t.lock_busy),
        ("retry re-queues", t.retry_requeues),
        ("back-offs", t.backoffs),
        ("skips", t.skips),
        ("stops", t.stops),
        ("halts", t.halts),
        ("over capacity after a shrink", t.over_capacity_after_shrink),
        ("extra grants", t.extra_grants),
        ("timeouts", t.timeouts),
    ] {
        assert!(v >= 20, "only {v} {name} over {} cases", t.cases);
    }
}

#[test]
fn protocol_invariants_with_a_scarce_pool_and_hand_off_chains() {
    let t = run_dag_cases(1500, 0x5eed_0003, scenario(0.6, 4, 200));
    assert!(t.hand_offs >= 1000 && t.backoffs >= 200, "{t:?}");
}

// ---------------------------------------------------------------------------------------
// 2. Two processes, one pool of 8, tasks needing 6 tokens.
// ---------------------------------------------------------------------------------------

struct Proc {
    s: Scheduler,
    collected: u32,
    running: BTreeMap<usize, (u32, Duration)>,
    running_units: u32,
    dur: Vec<Duration>,
}

#[derive(Debug, PartialEq, Eq)]
enum Multi {
    /// Both finished; the time the last task ended.
    Finished(Duration),
    /// Nothing can happen before the bound: the collected units of each process.
    Deadlock { at: Duration, collected: Vec<u32> },
}

/// How the shared pool hands a free unit to one of the processes that ask.
#[derive(Debug, Clone)]
enum GrantOrder {
    /// Strictly alternating, one unit at a time.
    RoundRobin,
    /// A random asker, from this seed.
    Random(Rng),
}

/// Drives several schedulers sharing one pool of `pool` units, in simulated time, until all
/// finish or nothing can happen before `bound`.
fn run_processes(procs: &mut [Proc], pool: u32, mut order: GrantOrder, bound: Duration) -> Multi {
    let mut free = pool;
    let mut now = Duration::ZERO;
    let mut rr = 0usize;
    let mut last_end = Duration::ZERO;
    let drain = |p: &mut Proc, free: &mut u32, now: Duration| {
        while let Some(a) = p.s.poll_action() {
            match a {
                Action::Start { task, tokens }
                | Action::HandOff {
                    to: task, tokens, ..
                } => {
                    assert!(p.collected >= tokens);
                    p.collected -= tokens;
                    p.running_units += tokens;
                    assert!(p.running_units <= p.s.capacity());
                    p.running
                        .insert(task.index(), (tokens, now + p.dur[task.index()]));
                }
                Action::Release { tokens } => {
                    assert!(p.collected >= tokens);
                    p.collected -= tokens;
                    *free += tokens;
                }
                Action::TryLock(_) | Action::Unlock(_) => unreachable!("no locks here"),
                Action::Requeue { .. } | Action::Skip { .. } | Action::Done => {}
            }
        }
        let l = p.s.ledger();
        assert_eq!(u64::from(p.collected + p.running_units), l.outstanding());
        assert_eq!(p.collected, p.s.collected());
        assert!(p.collected + p.running_units <= p.s.capacity());
    };
    for p in procs.iter_mut() {
        drain(p, &mut free, now);
    }
    loop {
        // Hand out free units while somebody asks.
        loop {
            let askers: Vec<usize> = (0..procs.len())
                .filter(|&i| procs[i].s.demand() > 0)
                .collect();
            if askers.is_empty() || free == 0 {
                break;
            }
            let i = match &mut order {
                GrantOrder::RoundRobin => {
                    let pick = askers
                        .iter()
                        .copied()
                        .find(|&i| i >= rr)
                        .unwrap_or(askers[0]);
                    rr = pick + 1;
                    pick
                }
                GrantOrder::Random(rng) => askers[rng.below(askers.len() as u64) as usize],
            };
            free -= 1;
            let p = &mut procs[i];
            p.collected += 1;
            p.s.handle_granted(1, now);
            drain(p, &mut free, now);
        }
        let held: u32 = procs.iter().map(|p| p.collected + p.running_units).sum();
        assert_eq!(free + held, pool, "the pool adds up");
        if procs.iter().all(|p| p.s.is_finished()) {
            return Multi::Finished(last_end);
        }
        // The next thing to happen: a task end or a scheduler's timer.
        let mut next: Option<(Duration, usize, Option<usize>)> = None;
        for (i, p) in procs.iter().enumerate() {
            for (&t, &(_, end)) in &p.running {
                if next.is_none_or(|(n, ..)| end < n) {
                    next = Some((end, i, Some(t)));
                }
            }
            if let Some(to) = p.s.poll_timeout() {
                if next.is_none_or(|(n, ..)| to < n) {
                    next = Some((to, i, None));
                }
            }
        }
        match next {
            Some((at, i, what)) if at <= bound => {
                now = now.max(at);
                let p = &mut procs[i];
                match what {
                    Some(t) => {
                        let (units, _) = p.running.remove(&t).unwrap();
                        p.running_units -= units;
                        p.collected += units;
                        last_end = now;
                        p.s.handle_finished(TaskId::from_index(t), Outcome::Success, now);
                    }
                    None => p.s.handle_timeout(now),
                }
                drain(p, &mut free, now);
            }
            _ => {
                return Multi::Deadlock {
                    at: now,
                    collected: procs.iter().map(|p| p.collected).collect(),
                }
            }
        }
    }
}

/// A process with `big` tasks of 6 tokens and `small` tasks of 1 token, independent.
fn process(big: &[u64], small: &[u64], partial_hold: Duration, jitter_seed: u64) -> Proc {
    let mut specs = Vec::new();
    let mut dur = Vec::new();
    for (i, &d) in big.iter().enumerate() {
        specs.push(NodeSpec {
            tokens: 6,
            ..NodeSpec::new(format!("big{i}"))
        });
        dur.push(ms(d));
    }
    for (i, &d) in small.iter().enumerate() {
        specs.push(NodeSpec::new(format!("small{i}")));
        dur.push(ms(d));
    }
    let graph = Graph::new(specs).unwrap();
    let cfg = Config {
        capacity: 8,
        keep_going: 0,
        partial_hold,
        jitter_seed,
        ..Config::default()
    };
    let d2 = dur.clone();
    let s = Scheduler::new(graph, cfg, move |t| Some(d2[t.index()]));
    Proc {
        s,
        collected: 0,
        running: BTreeMap::new(),
        running_units: 0,
        dur,
    }
}

#[test]
fn partial_hold_breaks_the_cross_process_deadlock() {
    let bound = Duration::from_secs(1000);
    // Without the rule (a hold longer than the bound): each process collects 4 of the 8
    // units for its 6-token task, one unit at a time, before anything ends. Deadlock.
    let never = Duration::from_secs(1_000_000);
    let mut procs = vec![
        process(&[2000], &[300, 300], never, 1),
        process(&[2000], &[300, 300], never, 2),
    ];
    let r = run_processes(&mut procs, 8, GrantOrder::RoundRobin, bound);
    assert_eq!(
        r,
        Multi::Deadlock {
            at: Duration::ZERO,
            collected: vec![4, 4]
        }
    );
    for p in &procs {
        assert_eq!(p.s.demand(), 2, "each still asks for 2 more");
        assert!(p.running.is_empty());
    }
    // With the rule (1 s): both give their partial sets back and everything runs.
    let hold = Duration::from_secs(1);
    let mut procs = vec![
        process(&[2000], &[300, 300], hold, 1),
        process(&[2000], &[300, 300], hold, 2),
    ];
    let Multi::Finished(end) = run_processes(&mut procs, 8, GrantOrder::RoundRobin, bound) else {
        panic!("deadlock with partial_hold")
    };
    assert!(end < Duration::from_secs(30), "finished only at {end:?}");
    for p in &procs {
        assert!(p.s.is_finished());
        assert_eq!(p.s.counts().succeeded, 3);
        let l = p.s.ledger();
        assert_eq!(l.granted, l.released);
    }
}

#[test]
fn two_processes_share_a_pool_without_deadlock() {
    use proptest::test_runner::TestRunner;
    use std::cell::Cell;
    let bound = Duration::from_secs(1000);
    let worst = Cell::new(Duration::ZERO);
    let strategy = (
        prop::collection::vec(prop::collection::vec(100u64..=5000, 1..=3), 2),
        prop::collection::vec(prop::collection::vec(10u64..=3000, 0..=8), 2),
        100u64..=2000,
        (any::<u64>(), any::<u64>()),
        any::<u64>(),
    );
    let mut runner = TestRunner::new(config(400, 0x5eed_0002));
    let result = runner.run(&strategy, |(big, small, hold_ms, seeds, grant_seed)| {
        prop_assume!(seeds.0 != seeds.1);
        let hold = ms(hold_ms);
        let mut procs = vec![
            process(&big[0], &small[0], hold, seeds.0),
            process(&big[1], &small[1], hold, seeds.1),
        ];
        let r = run_processes(&mut procs, 8, GrantOrder::Random(Rng(grant_seed)), bound);
        let Multi::Finished(end) = r else {
            panic!("no progress before {bound:?}: {r:?}");
        };
        prop_assert!(end <= bound);
        worst.set(worst.get().max(end));
        for p in &procs {
            prop_assert!(p.s.is_finished());
            prop_assert_eq!(p.s.counts().succeeded, p.s.graph().len());
            let l = p.s.ledger();
            prop_assert_eq!(l.granted, l.released);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    println!(
        "two processes: the latest end over the cases was {:?}",
        worst.get()
    );
}

// ---------------------------------------------------------------------------------------
// 3. Makespan against the lower bound.
// ---------------------------------------------------------------------------------------

/// A RUNNER.md-style graph: a few long leaves, many short chains with skewed durations,
/// some cross edges, a few chains behind a long task. Durations in milliseconds.
fn bench_graph(seed: u64) -> (Vec<NodeSpec>, Vec<u64>) {
    let mut r = Rng(seed);
    let n = 100 + r.below(101) as usize;
    let leaves = 2 + r.below(4) as usize;
    let mut specs: Vec<NodeSpec> = Vec::new();
    let mut dur: Vec<u64> = Vec::new();
    // The seed sets how long the long leaves are, from "work bound" (the many short tasks
    // dominate) to "path bound" (a long leaf and the chain behind it dominate).
    let scale = 10_000 + r.below(80_000);
    for i in 0..leaves {
        specs.push(NodeSpec::new(format!("long{i}")));
        dur.push(scale / 2 + r.below(scale / 2));
    }
    let mut chain = 0;
    while specs.len() < n {
        let len = (2 + r.below(7) as usize).min(n - specs.len());
        let mut prev: Option<String> = None;
        for k in 0..len {
            let name = format!("c{chain}_{k}");
            let mut s = NodeSpec::new(name.clone());
            if let Some(p) = prev.take() {
                s.deps.push(p);
            } else if r.pct(25) {
                // Behind a long task.
                s.deps
                    .push(specs[r.below(leaves as u64) as usize].name.clone());
            }
            if specs.len() > leaves && r.pct(20) {
                // A cross edge to an earlier chain task.
                let j = leaves + r.below((specs.len() - leaves) as u64) as usize;
                let dep = specs[j].name.clone();
                if !s.deps.contains(&dep) {
                    s.deps.push(dep);
                }
            }
            // Skewed: mostly short, a few seconds at most (100 ms * 1.5^k, k in 0..10).
            let d = (100.0 * 1.5f64.powi(r.below(10) as i32)) as u64;
            specs.push(s);
            dur.push(d);
            prev = Some(name);
        }
        chain += 1;
    }
    (specs, dur)
}

/// Critical-path weights computed independently of the crate (index order is topological
/// here: deps always name earlier tasks).
fn reference_weights(specs: &[NodeSpec], cost: &[u64]) -> Vec<u64> {
    let index: HashMap<&str, usize> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let mut w = cost.to_vec();
    for i in (0..specs.len()).rev() {
        for d in &specs[i].deps {
            let j = index[d.as_str()];
            w[j] = w[j].max(cost[j] + w[i]);
        }
    }
    w
}

/// Plain list scheduling by weight (ties by index) on `slots` slots, finishes handled one at
/// a time in (time, start order): the schedule the core should produce.
fn reference_list_schedule(
    specs: &[NodeSpec],
    dur: &[u64],
    prio: &[u64],
    slots: u32,
) -> (u64, Vec<usize>) {
    let index: HashMap<&str, usize> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let n = specs.len();
    let mut unmet: Vec<usize> = specs.iter().map(|s| s.deps.len()).collect();
    let mut rdeps = vec![Vec::new(); n];
    for (i, s) in specs.iter().enumerate() {
        for d in &s.deps {
            rdeps[index[d.as_str()]].push(i);
        }
    }
    let mut ready: BinaryHeap<(u64, Reverse<usize>)> = (0..n)
        .filter(|&i| unmet[i] == 0)
        .map(|i| (prio[i], Reverse(i)))
        .collect();
    let mut running: BinaryHeap<Reverse<(u64, u64, usize)>> = BinaryHeap::new();
    let (mut free, mut now, mut seq) = (slots, 0u64, 0u64);
    let mut order = Vec::new();
    loop {
        while free > 0 {
            let Some((_, Reverse(i))) = ready.pop() else {
                break;
            };
            free -= 1;
            seq += 1;
            order.push(i);
            running.push(Reverse((now + dur[i], seq, i)));
        }
        let Some(Reverse((t, _, i))) = running.pop() else {
            break;
        };
        now = t;
        free += 1;
        for &r in &rdeps[i] {
            unmet[r] -= 1;
            if unmet[r] == 0 {
                ready.push((prio[r], Reverse(r)));
            }
        }
    }
    (now, order)
}

#[test]
fn makespan_near_lower_bound_on_benchmark_graphs() {
    const JOBS: u32 = 4;
    let mut ratios = Vec::new();
    let mut misses = Vec::new();
    let mut not_list = Vec::new();
    for seed in 1..=20u64 {
        let (specs, dur) = bench_graph(seed);
        let cost_us: Vec<u64> = dur.iter().map(|d| d * 1000).collect();
        let want_w = reference_weights(&specs, &cost_us);
        let graph = Graph::new(specs.clone()).unwrap();
        let mut s = Scheduler::new(
            graph,
            Config {
                capacity: JOBS,
                keep_going: 0,
                ..Config::default()
            },
            |t| Some(ms(dur[t.index()])),
        );
        for t in s.graph().ids() {
            assert_eq!(s.weight(t), want_w[t.index()], "weight of {t}, seed {seed}");
        }
        let run = simulate(
            &mut s,
            JOBS,
            |t, _| (ms(dur[t.index()]), Outcome::Success),
            |_, _| true,
        )
        .expect("no stall");
        assert_eq!(run.pool_at_end, JOBS);
        assert!(run.peak_units <= JOBS);
        // The core is exactly critical-path list scheduling.
        let (ref_end, ref_order) = reference_list_schedule(&specs, &dur, &want_w, JOBS);
        let order: Vec<usize> = run.starts.iter().map(|s| s.task.index()).collect();
        if order != ref_order || run.makespan != ms(ref_end) {
            let first = order.iter().zip(&ref_order).position(|(a, b)| a != b);
            not_list.push((seed, first, run.makespan, ms(ref_end)));
        }
        let cp = *want_w.iter().max().unwrap();
        let work: u64 = cost_us.iter().sum();
        let lb = cp.max(work.div_ceil(u64::from(JOBS)));
        let ratio = run.makespan.as_micros() as f64 / lb as f64;
        ratios.push(ratio);
        println!(
            "  seed {seed:>2}: {} tasks, path {:.1} s, work/{JOBS} {:.1} s, makespan {:.1} s, ratio {ratio:.4}",
            specs.len(),
            cp as f64 / 1e6,
            work as f64 / 4e6,
            run.makespan.as_secs_f64()
        );
        if ratio > 1.05 {
            misses.push((seed, specs.len(), ratio));
        }
    }
    let min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let max = ratios.iter().copied().fold(0.0, f64::max);
    let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
    println!(
        "makespan / lower bound over {} seeds: min {min:.4} mean {mean:.4} max {max:.4}",
        ratios.len()
    );
    assert!(
        not_list.is_empty(),
        "not critical-path list scheduling (seed, first differing start, makespan, reference): \
         {not_list:?}"
    );
    assert!(
        misses.is_empty(),
        "makespan above 1.05 x lower bound: {misses:?}"
    );
}
