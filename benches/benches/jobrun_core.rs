//! jobrun's pure scheduling core on a 100,000-task graph, no processes: the time to schedule
//! the whole graph and the heap it takes per task.
//!
//! The graph is a layered random DAG (1,000 tasks a layer, 2-4 dependencies each, 3 on
//! average, on the three layers before; seed fixed), durations 1-200 ms given as hints so
//! that the critical-path weights are by duration. One iteration is `Scheduler::new` (the
//! weights, the ready queue) and `sim::simulate` at capacity 8 to the end (every task started
//! and finished, in simulated time); the graph is validated (`Graph::new`) once, outside the
//! timing, and cloned before each iteration. Building the graph is timed on its own.
//!
//! The reference, timed in the same samples and alternating with ours, is a bare list
//! scheduler written here: the same priority (critical-path weight, then index) and the same
//! event loop, on prebuilt flat adjacency arrays, with nothing else (no token ledger, no
//! locks, no states). It says what the full state machine costs over the minimum.
//!
//! Heap is counted by a counting global allocator: live bytes held once the graph and the
//! scheduler are built (the target's figure), and the peak while scheduling to the end
//! (including the simulation's own record of every start).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use jobrun::sched::{sim, Config, Graph, NodeSpec, Outcome, Scheduler, TaskId};
use jobserver_benches::harness::{self, fmt_ns, fmt_ratio, Paired};
use jobserver_benches::{Results, Row, Target};

// Each jobrun bench uses part of the shared generator.
#[allow(dead_code)]
#[path = "../src/graphs.rs"]
mod graphs;

static RESULTS: Results = Results::new("jobrun_core");

const CAPACITY: u32 = 8;
const WIDTH: usize = 1000;
const SEED: u64 = 0x6a6f_6272_756e;

/// Counts live heap bytes and their peak.
struct CountingAlloc;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn grew(by: isize) {
    let now = LIVE.fetch_add(by, Relaxed) + by;
    PEAK.fetch_max(now, Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged and only
// updates counters besides, so `System`'s guarantees hold.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size() as isize);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which we pass on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grew(layout.size() as isize);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Relaxed);
        // SAFETY: `ptr` was allocated by `System` (through us) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        grew(new_size as isize - layout.size() as isize);
        // SAFETY: `ptr` was allocated by `System` (through us) with `layout`; the caller
        // upholds the rest of `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Live bytes now, and resets the peak to it.
fn mark() -> isize {
    let now = LIVE.load(Relaxed);
    PEAK.store(now, Relaxed);
    now
}

fn specs(tasks: &[graphs::Task]) -> Vec<NodeSpec> {
    tasks
        .iter()
        .enumerate()
        .map(|(i, t)| NodeSpec {
            deps: t.deps.iter().map(|&d| graphs::name(d)).collect(),
            hint: Some(Duration::from_secs_f64(t.secs)),
            ..NodeSpec::new(graphs::name(i))
        })
        .collect()
}

fn micros(tasks: &[graphs::Task]) -> Vec<u64> {
    tasks
        .iter()
        .map(|t| (t.secs * 1e6).round() as u64)
        .collect()
}

/// Ours: builds the scheduler on `graph` and simulates the run to the end. Returns the
/// makespan.
fn schedule(graph: Graph, durations: &[u64]) -> Duration {
    let config = Config {
        capacity: CAPACITY,
        ..Config::default()
    };
    let mut sched = Scheduler::new(graph, config, |_| None);
    let run = sim::simulate(
        &mut sched,
        CAPACITY,
        |t: TaskId, _| {
            (
                Duration::from_micros(durations[t.index()]),
                Outcome::Success,
            )
        },
        |_, _| true,
    )
    .expect("the simulated run finishes");
    assert_eq!(run.starts.len(), durations.len(), "every task started once");
    assert_eq!(run.pool_at_end, CAPACITY, "every token back in the pool");
    run.makespan
}

/// Flat adjacency: the items of `i` are `items[start[i]..start[i + 1]]`.
struct Csr {
    start: Vec<u32>,
    items: Vec<u32>,
}

impl Csr {
    fn of(&self, i: usize) -> &[u32] {
        &self.items[self.start[i] as usize..self.start[i + 1] as usize]
    }

    fn heap_bytes(&self) -> usize {
        (self.start.capacity() + self.items.capacity()) * 4
    }
}

/// The reference's input: dependency counts and dependents, built once.
struct Bare {
    deps: Vec<u32>,
    dependents: Csr,
}

impl Bare {
    fn new(tasks: &[graphs::Task]) -> Bare {
        let n = tasks.len();
        let mut count = vec![0u32; n + 1];
        for t in tasks {
            for &d in &t.deps {
                count[d + 1] += 1;
            }
        }
        for i in 0..n {
            count[i + 1] += count[i];
        }
        let mut fill = count.clone();
        let mut items = vec![0u32; count[n] as usize];
        for (i, t) in tasks.iter().enumerate() {
            for &d in &t.deps {
                items[fill[d] as usize] = i as u32;
                fill[d] += 1;
            }
        }
        Bare {
            deps: tasks.iter().map(|t| t.deps.len() as u32).collect(),
            dependents: Csr {
                start: count,
                items,
            },
        }
    }

    /// List scheduling at capacity 8: weights by one reverse pass (indices are a
    /// topological order), ready tasks by weight then index, events by time then start
    /// order. Returns the makespan.
    fn schedule(&self, durations: &[u64]) -> Duration {
        let n = self.deps.len();
        let mut weight = vec![0u64; n];
        for i in (0..n).rev() {
            let below = self
                .dependents
                .of(i)
                .iter()
                .map(|&r| weight[r as usize])
                .max();
            weight[i] = durations[i] + below.unwrap_or(0);
        }
        let mut unmet = self.deps.clone();
        let mut ready: BinaryHeap<(u64, Reverse<u32>)> = (0..n as u32)
            .filter(|&i| unmet[i as usize] == 0)
            .map(|i| (weight[i as usize], Reverse(i)))
            .collect();
        let mut running: BinaryHeap<Reverse<(u64, u64, u32)>> = BinaryHeap::new();
        let mut starts: Vec<(u32, u64)> = Vec::new();
        let (mut now, mut free, mut seq) = (0u64, CAPACITY, 0u64);
        loop {
            while free > 0 {
                let Some((_, Reverse(t))) = ready.pop() else {
                    break;
                };
                free -= 1;
                seq += 1;
                running.push(Reverse((now + durations[t as usize], seq, t)));
                starts.push((t, now));
            }
            let Some(Reverse((at, _, t))) = running.pop() else {
                break;
            };
            now = at;
            free += 1;
            for &r in self.dependents.of(t as usize) {
                unmet[r as usize] -= 1;
                if unmet[r as usize] == 0 {
                    ready.push((weight[r as usize], Reverse(r)));
                }
            }
        }
        assert_eq!(starts.len(), n, "every task started once");
        Duration::from_micros(now)
    }
}

/// Heap per task: what the graph and the scheduler hold once built, and the peak while
/// scheduling to the end, both above what was live before; and the same for the reference.
struct Footprint {
    retained: f64,
    peak: f64,
    reported: usize,
    ref_retained: f64,
    ref_peak: f64,
}

fn footprint(tasks: &[graphs::Task], durations: &[u64]) -> Footprint {
    let n = tasks.len() as f64;
    let before = mark();
    let graph = Graph::new(specs(tasks)).expect("a valid graph");
    mark();
    let mut sched = Scheduler::new(
        graph,
        Config {
            capacity: CAPACITY,
            ..Config::default()
        },
        |_| None,
    );
    let retained = LIVE.load(Relaxed) - before;
    let reported = sched.heap_bytes();
    let run = sim::simulate(
        &mut sched,
        CAPACITY,
        |t, _| {
            (
                Duration::from_micros(durations[t.index()]),
                Outcome::Success,
            )
        },
        |_, _| true,
    )
    .expect("the simulated run finishes");
    let peak = PEAK.load(Relaxed) - before;
    drop(black_box(run));
    drop(sched);

    let before = mark();
    let bare = Bare::new(tasks);
    let ref_retained = LIVE.load(Relaxed) - before;
    mark();
    black_box(bare.schedule(durations));
    let ref_peak = PEAK.load(Relaxed) - before;
    debug_assert!(ref_retained as usize >= bare.dependents.heap_bytes());
    Footprint {
        retained: retained as f64 / n,
        peak: peak as f64 / n,
        reported,
        ref_retained: ref_retained as f64 / n,
        ref_peak: ref_peak as f64 / n,
    }
}

fn core(c: &mut Criterion) {
    let n = harness::scale(100_000, 5_000);
    let tasks = graphs::layered_dag(n, WIDTH, SEED);
    let durations = micros(&tasks);
    let edges: usize = tasks.iter().map(|t| t.deps.len()).sum();

    let start = Instant::now();
    let graph = Graph::new(specs(&tasks)).expect("a valid graph");
    let graph_time = start.elapsed();
    let bare = Bare::new(&tasks);
    let (mut makespan, mut ref_makespan) = (Duration::ZERO, Duration::ZERO);

    let mut paired = Paired::new();
    let mut group = c.benchmark_group("jobrun_core");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(harness::scale(
        Duration::from_secs(1),
        Duration::from_millis(10),
    ));
    group.measurement_time(harness::scale(
        Duration::from_secs(5),
        Duration::from_millis(40),
    ));
    group.bench_function(format!("simulate_{n}_tasks_capacity_{CAPACITY}"), |b| {
        b.iter_custom(|iters| {
            paired.run(
                iters,
                |iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let g = graph.clone();
                        let start = Instant::now();
                        makespan = black_box(schedule(g, &durations));
                        total += start.elapsed();
                    }
                    total
                },
                |iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        ref_makespan = black_box(bare.schedule(&durations));
                    }
                    start.elapsed()
                },
            )
        })
    });
    group.finish();
    let Some(s) = paired.summary(10) else { return };

    let target = Target::AtMost(1.0);
    RESULTS.push(Row {
        metric: format!(
            "jobrun core: schedule a {n}-task graph completely (sim::simulate, capacity {CAPACITY})"
        ),
        ours: fmt_ns(s.ours_ns),
        reference: format!("{} (bare list scheduler)", fmt_ns(s.reference_ns)),
        ratio: fmt_ratio(s.ratio),
        target: target.describe(" s"),
        met: target.met(s.ours_ns / 1e9),
        note: format!(
            "layered random DAG, {edges} edges; Scheduler::new + simulate per iteration; \
             ratio IQR {}–{}, {} paired samples; simulated makespan {:.3} s (bare: {:.3} s, {})",
            fmt_ratio(s.ratio_q1),
            fmt_ratio(s.ratio_q3),
            s.samples,
            makespan.as_secs_f64(),
            ref_makespan.as_secs_f64(),
            if makespan == ref_makespan {
                "the same"
            } else {
                "different"
            },
        ),
    });
    RESULTS.push(Row {
        metric: format!("jobrun core: validate and build the {n}-task graph (Graph::new)"),
        ours: fmt_ns(graph_time.as_nanos() as f64),
        reference: "—".to_owned(),
        ratio: "—".to_owned(),
        target: Target::Report.describe(""),
        met: None,
        note: "one run, from NodeSpecs with String names and dependencies".to_owned(),
    });

    drop(graph);
    let f = footprint(&tasks, &durations);
    let target = Target::AtMost(500.0);
    RESULTS.push(Row {
        metric: format!("jobrun core: heap per task, graph + scheduler ({n} tasks)"),
        ours: format!("{:.0} B", f.retained),
        reference: format!("{:.0} B (bare list scheduler's input)", f.ref_retained),
        ratio: fmt_ratio(f.retained / f.ref_retained),
        target: target.describe(" B"),
        met: target.met(f.retained),
        note: format!(
            "live heap after Graph::new + Scheduler::new, counted by the allocator \
             (Scheduler::heap_bytes says {:.0} B/task); names `t0`..`t{}`",
            f.reported as f64 / n as f64,
            n - 1
        ),
    });
    RESULTS.push(Row {
        metric: format!("jobrun core: peak heap per task, scheduling to the end ({n} tasks)"),
        ours: format!("{:.0} B", f.peak),
        reference: format!("{:.0} B (bare list scheduler)", f.ref_peak),
        ratio: fmt_ratio(f.peak / f.ref_peak),
        target: Target::Report.describe(""),
        met: None,
        note: "peak live heap during Scheduler::new + simulate (which also records every \
               start), above what was live before the graph was built"
            .to_owned(),
    });
}

criterion_group! {
    name = benches;
    config = harness::config();
    targets = core
}
criterion_main!(benches);
