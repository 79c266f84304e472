//! Named scenarios of the pure scheduling core (`jobrun::sched`), driven step by step: each
//! test spells out the inputs and the exact actions they must produce.

use std::collections::BTreeMap;
use std::time::Duration;

use jobrun::sched::sim::{simulate, SimRun};
use jobrun::sched::{
    Action, Config, Graph, NodeSpec, Outcome, RequeueReason, Scheduler, TaskId, TaskState,
};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn spec(name: &str, deps: &[&str], tokens: u32) -> NodeSpec {
    NodeSpec {
        deps: deps.iter().map(|d| d.to_string()).collect(),
        tokens,
        ..NodeSpec::new(name)
    }
}

fn then(mut s: NodeSpec, next: &str) -> NodeSpec {
    s.then = Some(next.into());
    s
}

fn locked(mut s: NodeSpec) -> NodeSpec {
    s.locked = true;
    s
}

/// A scheduler plus the driver's own token accounting, checked after every input.
struct Drive {
    s: Scheduler,
    now: Duration,
    collected: u32,
    running: BTreeMap<TaskId, u32>,
    pool_out: u64,
}

impl Drive {
    fn new(specs: Vec<NodeSpec>, config: Config, cost_ms: &[(&str, u64)]) -> (Self, Vec<Action>) {
        let graph = Graph::new(specs).unwrap();
        let costs: Vec<(TaskId, Duration)> = cost_ms
            .iter()
            .map(|&(n, c)| (graph.find(n).unwrap(), ms(c)))
            .collect();
        let s = Scheduler::new(graph, config, |t| {
            costs.iter().find(|(id, _)| *id == t).map(|&(_, c)| c)
        });
        let mut d = Drive {
            s,
            now: Duration::ZERO,
            collected: 0,
            running: BTreeMap::new(),
            pool_out: 0,
        };
        let a = d.drain();
        (d, a)
    }

    fn id(&self, name: &str) -> TaskId {
        self.s.graph().find(name).unwrap()
    }

    fn state(&self, name: &str) -> TaskState {
        self.s.state(self.id(name))
    }

    fn at(&mut self, t: u64) {
        self.now = ms(t);
    }

    /// Drains the actions, applying the token moves; `TryLock` is left to the test.
    fn drain(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        while let Some(a) = self.s.poll_action() {
            match a {
                Action::Start { task, tokens }
                | Action::HandOff {
                    to: task, tokens, ..
                } => {
                    assert!(
                        self.collected >= tokens,
                        "{a:?} with {} collected",
                        self.collected
                    );
                    self.collected -= tokens;
                    assert!(self.running.insert(task, tokens).is_none());
                }
                Action::Release { tokens } => {
                    assert!(self.collected >= tokens);
                    self.collected -= tokens;
                    self.pool_out -= u64::from(tokens);
                }
                _ => {}
            }
            out.push(a);
        }
        let running: u32 = self.running.values().sum();
        assert_eq!(self.collected, self.s.collected(), "collected");
        assert_eq!(running, self.s.running_units(), "running units");
        assert_eq!(self.pool_out, self.s.ledger().outstanding(), "ledger");
        assert!(
            self.collected + running <= self.s.capacity() || self.collected == 0,
            "collected units above the capacity"
        );
        out
    }

    fn grant(&mut self, units: u32) -> Vec<Action> {
        assert!(
            self.s.demand() >= units,
            "granting {units} with demand {}",
            self.s.demand()
        );
        self.collected += units;
        self.pool_out += u64::from(units);
        self.s.handle_granted(units, self.now);
        self.drain()
    }

    fn lock(&mut self, name: &str, acquired: bool) -> Vec<Action> {
        let t = self.id(name);
        self.s.handle_lock(t, acquired, self.now);
        self.drain()
    }

    fn finish(&mut self, name: &str, outcome: Outcome) -> Vec<Action> {
        let t = self.id(name);
        let units = self.running.remove(&t).expect("finishing a running task");
        self.collected += units;
        self.s.handle_finished(t, outcome, self.now);
        self.drain()
    }

    fn set_capacity(&mut self, capacity: u32) -> Vec<Action> {
        self.s.set_capacity(capacity, self.now);
        self.drain()
    }

    fn timeout(&mut self) -> Vec<Action> {
        self.s.handle_timeout(self.now);
        self.drain()
    }

    fn start(&self, name: &str, tokens: u32) -> Action {
        Action::Start {
            task: self.id(name),
            tokens,
        }
    }

    fn requeue(&self, name: &str, reason: RequeueReason) -> Action {
        Action::Requeue {
            task: self.id(name),
            reason,
        }
    }
}

fn cfg(capacity: u32) -> Config {
    Config {
        capacity,
        keep_going: 0,
        ..Config::default()
    }
}

// ---- hand-off ----

#[test]
fn hand_off_to_then_successor_has_no_release_or_grant_in_between() {
    let (mut d, a) = Drive::new(
        vec![
            then(spec("a", &[], 1), "b"),
            spec("b", &[], 1),
            spec("c", &[], 1),
        ],
        cfg(2),
        &[("a", 100), ("b", 100), ("c", 50)],
    );
    assert!(a.is_empty());
    assert_eq!(d.s.demand(), 1);
    assert_eq!(d.grant(1), vec![d.start("a", 1)]);
    assert_eq!(d.grant(1), vec![d.start("c", 1)]);
    assert_eq!(d.s.demand(), 0);
    d.at(100);
    // The successor starts with a's unit in the same step: no Release, no new grant.
    let a = d.finish("a", Outcome::Success);
    assert_eq!(
        a,
        vec![Action::HandOff {
            from: d.id("a"),
            to: d.id("b"),
            tokens: 1
        }]
    );
    assert_eq!(d.s.demand(), 0);
    let l = d.s.ledger();
    assert_eq!(
        (l.granted, l.released, l.started, l.handed_off),
        (2, 0, 3, 1)
    );
    d.at(150);
    assert_eq!(
        d.finish("c", Outcome::Success),
        vec![Action::Release { tokens: 1 }]
    );
    d.at(200);
    assert_eq!(
        d.finish("b", Outcome::Success),
        vec![Action::Release { tokens: 1 }, Action::Done]
    );
    let l = d.s.ledger();
    assert_eq!(l.granted, l.released);
}

#[test]
fn hand_off_moves_only_the_predecessors_units() {
    // h (3 tokens) collects while a runs; a's successor b needs 2 but a holds 1. b must not
    // take a unit of h's partial set: it is queued, and a's unit goes to the head.
    let (mut d, _) = Drive::new(
        vec![
            then(spec("a", &[], 1), "b"),
            spec("b", &[], 2),
            spec("h", &[], 3),
        ],
        cfg(4),
        &[("a", 5000), ("b", 4000), ("h", 1000)],
    );
    assert_eq!(d.grant(1), vec![d.start("a", 1)]);
    assert_eq!(d.s.head(), Some(d.id("h")));
    assert!(d.grant(2).is_empty());
    assert_eq!(d.s.collected(), 2);
    d.at(300);
    let a = d.finish("a", Outcome::Success);
    assert!(
        !a.iter().any(|x| matches!(x, Action::HandOff { .. })),
        "{a:?}"
    );
    // h now has its 3 units.
    assert_eq!(a, vec![d.start("h", 3)]);
    assert_eq!(d.state("b"), TaskState::Ready);
    assert_eq!(d.s.ledger().handed_off, 0);
}

#[test]
fn hand_off_respects_a_shrunk_capacity() {
    let (mut d, _) = Drive::new(
        vec![
            then(spec("a", &[], 1), "b"),
            spec("b", &[], 1),
            spec("c", &[], 1),
        ],
        cfg(2),
        &[("a", 100), ("b", 100), ("c", 500)],
    );
    d.grant(1);
    d.grant(1);
    assert_eq!(d.running.len(), 2);
    d.at(50);
    assert!(d.set_capacity(1).is_empty());
    d.at(100);
    // a's unit goes back: c still runs and the capacity is 1.
    assert_eq!(
        d.finish("a", Outcome::Success),
        vec![Action::Release { tokens: 1 }]
    );
    assert_eq!(d.state("b"), TaskState::Ready);
    d.at(500);
    assert_eq!(d.finish("c", Outcome::Success), vec![d.start("b", 1)]);
}

// ---- locks ----

#[test]
fn busy_lock_parks_without_tokens_and_retries_without_spinning() {
    let retry_after = ms(200);
    let (mut d, a) = Drive::new(
        vec![locked(spec("l", &[], 1)), spec("x", &[], 1)],
        Config {
            retry_after,
            ..cfg(2)
        },
        &[("l", 1000), ("x", 100)],
    );
    // The lock is tried before any token is asked for.
    assert_eq!(a, vec![Action::TryLock(d.id("l"))]);
    assert_eq!(d.s.demand(), 0);
    let a = d.lock("l", false);
    assert_eq!(a, vec![d.requeue("l", RequeueReason::LockBusy)]);
    assert_eq!(d.state("l"), TaskState::Parked);
    assert_eq!(d.s.held(d.id("l")), 0);
    assert_eq!(d.s.head(), Some(d.id("x")));
    assert_eq!(d.s.poll_timeout(), Some(retry_after));
    assert_eq!(d.grant(1), vec![d.start("x", 1)]);

    // Another task ends: the lock is tried again at once, holding nothing meanwhile.
    d.at(100);
    let a = d.finish("x", Outcome::Success);
    assert_eq!(a, vec![Action::TryLock(d.id("l"))]);
    assert_eq!(d.s.demand(), 0);
    let a = d.lock("l", false);
    assert_eq!(
        a,
        vec![
            d.requeue("l", RequeueReason::LockBusy),
            Action::Release { tokens: 1 }
        ]
    );
    assert_eq!(d.s.collected(), 0);

    // Nothing finishes: retried after retry_after, doubling up to 8 times, never spinning.
    let mut due = ms(100) + retry_after;
    for factor in [2, 4, 8, 8, 8] {
        let t = d.s.poll_timeout().expect("a timer while parked");
        assert_eq!(t, due);
        assert!(t > d.now, "timer in the future");
        // Early calls are harmless.
        d.now = t - ms(1);
        assert!(d.timeout().is_empty());
        d.now = t;
        assert_eq!(d.timeout(), vec![Action::TryLock(d.id("l"))]);
        assert_eq!(
            d.lock("l", false),
            vec![d.requeue("l", RequeueReason::LockBusy)]
        );
        assert_eq!((d.s.collected(), d.s.demand()), (0, 0));
        due = t + retry_after * factor;
    }
    d.now = d.s.poll_timeout().unwrap();
    assert_eq!(d.timeout(), vec![Action::TryLock(d.id("l"))]);
    assert!(d.lock("l", true).is_empty());
    assert_eq!(d.s.head(), Some(d.id("l")));
    assert_eq!(d.grant(1), vec![d.start("l", 1)]);
    d.at(10_000);
    assert_eq!(
        d.finish("l", Outcome::Success),
        vec![Action::Release { tokens: 1 }, Action::Done]
    );
}

// ---- retry ----

#[test]
fn retry_requeues_up_to_the_limit_then_fails() {
    let (mut d, _) = Drive::new(
        vec![spec("r", &[], 1), spec("dep", &["r"], 1)],
        Config {
            retry_limit: 2,
            retry_after: ms(100),
            ..cfg(2)
        },
        &[],
    );
    assert_eq!(d.grant(1), vec![d.start("r", 1)]);
    for n in 1..=2 {
        d.at(n * 1000);
        let a = d.finish("r", Outcome::Retry);
        assert_eq!(
            a,
            vec![
                d.requeue("r", RequeueReason::Retry),
                Action::Release { tokens: 1 }
            ]
        );
        assert_eq!(d.state("r"), TaskState::Parked);
        assert_eq!(d.s.retries(d.id("r")), n as u32);
        assert_eq!(d.s.poll_timeout(), Some(d.now + ms(100)));
        d.now += ms(100);
        assert!(d.timeout().is_empty());
        assert_eq!(d.s.demand(), 1);
        assert_eq!(d.grant(1), vec![d.start("r", 1)]);
    }
    d.at(5000);
    let a = d.finish("r", Outcome::Retry);
    assert_eq!(
        a,
        vec![
            Action::Skip {
                task: d.id("dep"),
                because: d.id("r")
            },
            Action::Release { tokens: 1 },
            Action::Done
        ]
    );
    assert_eq!(d.state("r"), TaskState::Failed);
    assert_eq!(d.s.failures(), 1);
    assert_eq!(d.s.skipped_because(d.id("dep")), Some(d.id("r")));
}

#[test]
fn requeued_task_goes_behind_fresh_ones() {
    // r is the heaviest but asked to be retried: the fresh x runs before it.
    let (mut d, _) = Drive::new(
        vec![spec("r", &[], 1), spec("y", &[], 1), spec("x", &["y"], 1)],
        cfg(1),
        &[("r", 9000), ("y", 100), ("x", 100)],
    );
    assert_eq!(d.grant(1), vec![d.start("r", 1)]);
    d.at(100);
    // y is now the head; r comes back (parked, then unparked at y's end).
    assert_eq!(
        d.finish("r", Outcome::Retry),
        vec![d.requeue("r", RequeueReason::Retry), d.start("y", 1)]
    );
    d.at(200);
    assert_eq!(d.finish("y", Outcome::Success), vec![d.start("x", 1)]);
    d.at(300);
    assert_eq!(d.finish("x", Outcome::Success), vec![d.start("r", 1)]);
}

// ---- capacity ----

#[test]
fn capacity_shrink_never_aborts_and_gives_back_collected_units() {
    let (mut d, _) = Drive::new(
        vec![
            spec("t0", &[], 1),
            spec("t1", &[], 1),
            spec("t2", &[], 1),
            spec("t3", &[], 1),
            spec("h", &[], 2),
        ],
        cfg(5),
        &[
            ("t0", 900),
            ("t1", 900),
            ("t2", 900),
            ("t3", 900),
            ("h", 100),
        ],
    );
    for _ in 0..4 {
        d.grant(1);
    }
    assert_eq!(d.s.head(), Some(d.id("h")));
    assert!(d.grant(1).is_empty());
    assert_eq!(d.s.collected(), 1);
    d.at(10);
    assert_eq!(d.set_capacity(2), vec![Action::Release { tokens: 1 }]);
    // Nothing is aborted: all four still run, above the new capacity; nothing is collected.
    assert_eq!(d.s.counts().running, 4);
    assert_eq!((d.s.collected(), d.s.demand()), (0, 0));
    d.at(100);
    assert_eq!(
        d.finish("t0", Outcome::Success),
        vec![Action::Release { tokens: 1 }]
    );
    assert_eq!(
        d.finish("t1", Outcome::Success),
        vec![Action::Release { tokens: 1 }]
    );
    // Now one task runs: h (2 tokens, fits the new capacity) keeps t2's unit and waits.
    assert!(d.finish("t2", Outcome::Success).is_empty());
    assert_eq!((d.s.collected(), d.s.demand()), (1, 0));
    assert_eq!(d.finish("t3", Outcome::Success), vec![d.start("h", 2)]);
    d.at(200);
    assert_eq!(
        d.finish("h", Outcome::Success),
        vec![Action::Release { tokens: 2 }, Action::Done]
    );
}

#[test]
fn task_needing_more_than_the_capacity_is_cut_to_it() {
    let (mut d, _) = Drive::new(vec![spec("big", &[], 6)], cfg(3), &[]);
    assert_eq!(d.s.demand(), 3);
    assert_eq!(d.grant(3), vec![d.start("big", 3)]);
}

// ---- stop ----

#[test]
fn stop_marks_the_rest_not_run_and_releases_everything() {
    let (mut d, a) = Drive::new(
        vec![
            spec("a", &[], 1),
            spec("b", &["a"], 1),
            spec("h", &[], 3),
            locked(spec("l", &[], 1)),
            spec("e", &[], 1),
        ],
        cfg(4),
        &[("a", 9000), ("h", 5000), ("l", 100), ("e", 50)],
    );
    assert!(a.is_empty());
    assert_eq!(d.grant(1), vec![d.start("a", 1)]);
    assert_eq!(d.s.head(), Some(d.id("h")));
    assert!(d.grant(1).is_empty());
    d.at(10);
    d.s.stop(d.now);
    assert_eq!(d.drain(), vec![Action::Release { tokens: 1 }]);
    for n in ["b", "h", "l", "e"] {
        assert_eq!(d.state(n), TaskState::NotRun, "{n}");
    }
    assert_eq!(d.state("a"), TaskState::Running);
    assert_eq!(
        (d.s.collected(), d.s.demand(), d.s.poll_timeout()),
        (0, 0, None)
    );
    assert!(!d.s.is_finished());
    d.at(20);
    assert_eq!(
        d.finish("a", Outcome::Interrupted),
        vec![Action::Release { tokens: 1 }, Action::Done]
    );
    assert_eq!(d.state("a"), TaskState::Failed);
    let l = d.s.ledger();
    assert_eq!(l.granted, l.released);
    assert!(d.s.is_finished());
    assert_eq!(d.s.counts().not_run, 4);
}

#[test]
fn stop_unlocks_a_locked_head() {
    let (mut d, a) = Drive::new(vec![locked(spec("l", &[], 2))], cfg(2), &[]);
    assert_eq!(a, vec![Action::TryLock(d.id("l"))]);
    assert!(d.lock("l", true).is_empty());
    assert!(d.grant(1).is_empty());
    d.s.stop(d.now);
    assert_eq!(
        d.drain(),
        vec![
            Action::Unlock(d.id("l")),
            Action::Release { tokens: 1 },
            Action::Done
        ]
    );
}

// ---- multi-token tasks ----

#[test]
fn partial_set_is_given_back_after_partial_hold() {
    let (mut d, _) = Drive::new(
        vec![spec("h", &[], 4), spec("s", &[], 1)],
        Config {
            partial_hold: ms(1000),
            jitter_seed: 7,
            ..cfg(4)
        },
        &[("h", 5000), ("s", 100)],
    );
    assert_eq!(d.s.head(), Some(d.id("h")));
    // The pool has only 2 free (another process holds the rest).
    assert!(d.grant(2).is_empty());
    assert_eq!(d.s.poll_timeout(), Some(ms(1000)));
    d.at(1000);
    let a = d.timeout();
    assert_eq!(
        a,
        vec![
            Action::Release { tokens: 2 },
            d.requeue("h", RequeueReason::Backoff)
        ]
    );
    assert_eq!(d.state("h"), TaskState::Parked);
    // The one-token task runs meanwhile; h comes back later, jittered, at least one hold on.
    assert_eq!(d.s.head(), Some(d.id("s")));
    let back = d.s.poll_timeout().unwrap();
    assert!(
        back >= ms(1000) + ms(2000) && back < ms(1000) + ms(4000),
        "{back:?}"
    );
    assert_eq!(d.grant(1), vec![d.start("s", 1)]);
    d.at(1100);
    assert_eq!(
        d.finish("s", Outcome::Success),
        vec![Action::Release { tokens: 1 }]
    );
    d.now = back;
    assert!(d.timeout().is_empty());
    assert_eq!(d.s.head(), Some(d.id("h")));
    assert_eq!(d.grant(4), vec![d.start("h", 4)]);
}

#[test]
fn partial_hold_is_not_extended_by_hand_offs() {
    // h (3 tokens) holds a partial set that a's chain cannot complete (1 + 1 < 3). Hand-offs
    // along the chain a -> b -> c must not restart h's hold timer.
    let (mut d, _) = Drive::new(
        vec![
            then(spec("a", &[], 1), "b"),
            then(spec("b", &[], 1), "c"),
            spec("c", &[], 1),
            spec("h", &[], 3),
        ],
        Config {
            partial_hold: ms(1000),
            ..cfg(4)
        },
        &[("a", 600), ("b", 600), ("c", 600), ("h", 100)],
    );
    assert_eq!(d.grant(1), vec![d.start("a", 1)]);
    assert_eq!(d.s.head(), Some(d.id("h")));
    assert!(d.grant(1).is_empty());
    assert_eq!(d.s.poll_timeout(), Some(ms(1000)));
    d.at(600);
    assert!(matches!(
        d.finish("a", Outcome::Success)[..],
        [Action::HandOff { .. }]
    ));
    assert_eq!(
        d.s.poll_timeout(),
        Some(ms(1000)),
        "hand-off restarted the hold timer"
    );
    d.at(1000);
    let a = d.timeout();
    assert_eq!(
        a,
        vec![
            Action::Release { tokens: 1 },
            d.requeue("h", RequeueReason::Backoff)
        ]
    );
}

#[test]
fn own_one_token_tasks_feed_a_multi_token_head() {
    // Four 1-token tasks run; h (4 tokens) is the head: every unit they free is kept for it
    // (no hold timer: our own running tasks can complete it), and it starts when the last ends.
    let (mut d, _) = Drive::new(
        vec![
            spec("s0", &[], 1),
            spec("s1", &[], 1),
            spec("s2", &[], 1),
            spec("s3", &[], 1),
            spec("h", &["s0"], 4),
            spec("z", &[], 1),
        ],
        cfg(4),
        &[
            ("s0", 100),
            ("s1", 200),
            ("s2", 300),
            ("s3", 400),
            ("h", 1000),
            ("z", 10),
        ],
    );
    // By weight: s0 (1.1 s, h depends on it), s3, s2, s1; z waits (no room).
    for n in ["s0", "s3", "s2", "s1"] {
        assert_eq!(d.grant(1), vec![d.start(n, 1)]);
    }
    assert_eq!(d.s.head(), None);
    for (i, n) in ["s0", "s1", "s2"].into_iter().enumerate() {
        d.at(100 * (i as u64 + 1));
        assert!(d.finish(n, Outcome::Success).is_empty(), "{n}");
        assert_eq!(d.s.head(), Some(d.id("h")));
        assert_eq!(d.s.collected(), i as u32 + 1);
        assert_eq!(d.s.poll_timeout(), None);
        assert_eq!(d.s.demand(), 0);
    }
    d.at(400);
    assert_eq!(d.finish("s3", Outcome::Success), vec![d.start("h", 4)]);
}

// ---- order ----

#[test]
fn head_is_chosen_when_a_unit_frees() {
    // Capacity 1: while a runs, c (weight 5 s) is not ready yet and b (2 s) is. When a ends,
    // its unit must go to c, the best task ready at that moment, not to b.
    let (mut d, _) = Drive::new(
        vec![spec("a", &[], 1), spec("b", &[], 1), spec("c", &["a"], 1)],
        cfg(1),
        &[("a", 1000), ("b", 2000), ("c", 5000)],
    );
    assert_eq!(d.grant(1), vec![d.start("a", 1)]);
    d.at(1000);
    assert_eq!(d.finish("a", Outcome::Success), vec![d.start("c", 1)]);
}

fn small_graph() -> (Vec<NodeSpec>, Vec<(&'static str, u64)>) {
    // a -> b -> d, a -> c, e alone, f -> g. Costs (s): a 1, b 5, c 2, d 3, e 4, f 2, g 7.
    // Weights: d 3, b 8, c 2, a 9, e 4, g 7, f 9.
    let specs = vec![
        spec("a", &[], 1),
        spec("b", &["a"], 1),
        spec("c", &["a"], 1),
        spec("d", &["b"], 1),
        spec("e", &[], 1),
        spec("f", &[], 1),
        spec("g", &["f"], 1),
    ];
    let costs = vec![
        ("a", 1000),
        ("b", 5000),
        ("c", 2000),
        ("d", 3000),
        ("e", 4000),
        ("f", 2000),
        ("g", 7000),
    ];
    (specs, costs)
}

fn sim_small(capacity: u32) -> (Scheduler, SimRun) {
    let (specs, costs) = small_graph();
    let graph = Graph::new(specs).unwrap();
    let cost = |t: TaskId| ms(costs[t.index()].1);
    let mut s = Scheduler::new(graph, cfg(capacity), |t| Some(cost(t)));
    let run = simulate(
        &mut s,
        capacity,
        |t, _| (cost(t), Outcome::Success),
        |_, _| true,
    )
    .unwrap();
    (s, run)
}

#[test]
fn critical_path_order_on_a_small_graph() {
    let (s, run) = sim_small(1);
    let w: Vec<u64> = s.graph().ids().map(|t| s.weight(t) / 1000).collect();
    assert_eq!(w, vec![9000, 8000, 2000, 3000, 4000, 9000, 7000]);
    // a and f tie at 9 s: declaration order. Then f (9) over b (8); g (7) over e (4) ...
    let names: Vec<&str> = run
        .starts
        .iter()
        .map(|st| s.graph().name(st.task))
        .collect();
    assert_eq!(names, ["a", "f", "b", "g", "e", "d", "c"]);
    assert_eq!(run.makespan, ms(24_000));
    // Two slots: a, f at 0; b at 1; g at 2; e (4) before d (3) at 6; d at 9; c at 10.
    // The makespan is work / 2 = 12 s (the critical path is 9 s): optimal.
    let (s, run) = sim_small(2);
    let names: Vec<&str> = run
        .starts
        .iter()
        .map(|st| s.graph().name(st.task))
        .collect();
    assert_eq!(names, ["a", "f", "b", "g", "e", "d", "c"]);
    let at: Vec<u64> = run
        .starts
        .iter()
        .map(|st| st.at.as_millis() as u64)
        .collect();
    assert_eq!(at, [0, 0, 1000, 2000, 6000, 9000, 10_000]);
    assert_eq!(run.makespan, ms(12_000));
    assert_eq!(run.pool_at_end, 2);
}

#[test]
fn dry_run_order_via_simulate_is_deterministic() {
    let specs = || {
        let mut v = Vec::new();
        for i in 0..40u32 {
            let mut s = spec(&format!("t{i}"), &[], if i % 5 == 2 { 3 } else { 1 });
            if i >= 3 {
                s.deps.push(format!("t{}", (i * 7 + 3) % i));
            }
            if i % 9 == 0 && i + 1 < 40 {
                s.then = Some(format!("t{}", i + 1));
            }
            s.locked = i % 11 == 5;
            s.hint = Some(ms(u64::from(100 + (i * 37) % 900)));
            v.push(s);
        }
        v
    };
    let once = || {
        let graph = Graph::new(specs()).unwrap();
        let mut s = Scheduler::new(
            graph,
            Config {
                jitter_seed: 42,
                ..cfg(4)
            },
            |_| None,
        );
        let mut tries = 0u32;
        let run = simulate(
            &mut s,
            4,
            |t, n| {
                (
                    ms(50 + 13 * t.index() as u64),
                    if n == 0 && t.index() % 13 == 4 {
                        Outcome::Retry
                    } else {
                        Outcome::Success
                    },
                )
            },
            |_, _| {
                tries += 1;
                !tries.is_multiple_of(3)
            },
        )
        .unwrap();
        let states: Vec<TaskState> = s.graph().ids().map(|t| s.state(t)).collect();
        (run, states, s.ledger())
    };
    let first = once();
    for _ in 0..5 {
        assert_eq!(once(), first);
    }
    let (run, states, ledger) = first;
    assert_eq!(run.starts.len(), 40 + 3, "every task once, three retried");
    assert!(states.iter().all(|&st| st == TaskState::Succeeded));
    assert_eq!(run.pool_at_end, 4);
    assert!(run.starts.iter().any(|s| s.handed_off));
    assert_eq!(ledger.granted, ledger.released);
}

#[test]
fn retry_limit_above_255_is_honoured() {
    // A task that always asks to be retried fails after exactly retry_limit re-queues, also
    // for limits that do not fit a byte.
    for limit in [3u32, 255, 256, 300] {
        let graph = Graph::new([spec("r", &[], 1)]).unwrap();
        let mut s = Scheduler::new(
            graph,
            Config {
                retry_limit: limit,
                retry_after: ms(1),
                ..cfg(1)
            },
            |_| None,
        );
        let run = simulate(&mut s, 1, |_, _| (ms(1), Outcome::Retry), |_, _| true);
        let run = run.unwrap();
        assert_eq!(run.starts.len() as u32, limit + 1, "limit {limit}");
        assert_eq!(s.retries(s.graph().find("r").unwrap()), limit);
        assert_eq!(s.state(s.graph().find("r").unwrap()), TaskState::Failed);
    }
}

/// A head chosen while the pool was empty, that holds nothing yet, yields to a heavier task
/// that became ready since: the next unit goes to the best task at that moment.
#[test]
fn a_head_holding_nothing_yields_to_a_heavier_task_that_became_ready() {
    use jobrun::sched::{Action, Config, Graph, NodeSpec, Outcome, Scheduler, TaskId};
    let spec = |name: &str, deps: &[&str], secs: u64| NodeSpec {
        deps: deps.iter().map(|d| d.to_string()).collect(),
        hint: Some(Duration::from_secs(secs)),
        ..NodeSpec::new(name)
    };
    let graph = Graph::new([spec("a", &[], 1), spec("b", &[], 2), spec("c", &["a"], 5)]).unwrap();
    let config = Config {
        capacity: 2,
        ..Config::default()
    };
    let mut s = Scheduler::new(graph, config, |_| None);
    let drain = |s: &mut Scheduler| std::iter::from_fn(|| s.poll_action()).collect::<Vec<_>>();
    assert!(drain(&mut s).is_empty());
    s.handle_granted(1, Duration::ZERO);
    let (a, b, c) = (
        TaskId::from_index(0),
        TaskId::from_index(1),
        TaskId::from_index(2),
    );
    assert_eq!(drain(&mut s), vec![Action::Start { task: a, tokens: 1 }]);
    // The pool is empty (another process holds the rest): b waits at the head with nothing.
    assert_eq!(s.head(), Some(b));
    s.handle_finished(a, Outcome::Success, Duration::from_secs(1));
    assert_eq!(drain(&mut s), vec![Action::Start { task: c, tokens: 1 }]);
    assert_eq!(s.head(), Some(b));
}

/// With no known capacity, a task asking for more units than the pool has is cut to the
/// most units the run held at once after three back-offs, instead of backing off forever.
#[test]
fn unknown_capacity_cuts_an_oversized_task_after_three_back_offs() {
    use jobrun::sched::{sim, Config, Graph, NodeSpec, Outcome, Scheduler};
    let mut big = NodeSpec::new("big");
    big.tokens = 3;
    let graph = Graph::new([NodeSpec::new("small"), big]).unwrap();
    let mut s = Scheduler::new(graph, Config::default(), |_| None);
    let run = sim::simulate(
        &mut s,
        2,
        |_, _| (Duration::from_secs(1), Outcome::Success),
        |_, _| true,
    )
    .expect("finishes");
    let big_start = run
        .starts
        .iter()
        .find(|st| st.task.index() == 1)
        .expect("big ran");
    assert_eq!(big_start.tokens, 2);
    assert_eq!(run.pool_at_end, 2);
}

/// Durations that overflow mean "never", not a panic.
#[test]
fn huge_durations_do_not_overflow() {
    use jobrun::sched::{sim, Config, Graph, NodeSpec, Outcome, Scheduler};
    let mut big = NodeSpec::new("big");
    big.tokens = 2;
    let graph = Graph::new([big, NodeSpec::new("one")]).unwrap();
    let config = Config {
        capacity: 2,
        partial_hold: Duration::MAX,
        retry_after: Duration::MAX,
        ..Config::default()
    };
    let mut s = Scheduler::new(graph, config, |_| None);
    let run = sim::simulate(
        &mut s,
        2,
        |_, _| (Duration::from_secs(1), Outcome::Success),
        |_, _| true,
    )
    .expect("finishes");
    assert_eq!(run.starts.len(), 2);
}

/// The driver's start time replaces the time the start was asked for.
#[test]
fn handle_started_records_the_real_start() {
    use jobrun::sched::{Config, Graph, NodeSpec, Outcome, Scheduler, TaskId};
    let mut s = Scheduler::new(
        Graph::new([NodeSpec::new("a")]).unwrap(),
        Config::default(),
        |_| None,
    );
    s.handle_granted(1, Duration::from_millis(5));
    while s.poll_action().is_some() {}
    let a = TaskId::from_index(0);
    s.handle_started(a, Duration::from_millis(7));
    s.handle_finished(a, Outcome::Success, Duration::from_millis(20));
    assert_eq!(
        s.times(a),
        (
            Some(Duration::from_millis(7)),
            Some(Duration::from_millis(20))
        )
    );
}
