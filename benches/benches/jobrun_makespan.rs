//! Makespan of real `sleep` graphs at `-j4`: the `jobrun` binary against ninja 1.13.2, each
//! as a ratio to the graph's lower bound.
//!
//! Five deterministic graphs (seeds fixed) of 100-200 tasks with skewed durations: many
//! short chains (most tasks near 10-20 ms, a few up to ~0.2 s) and a few long leaves (~1 s
//! and more) declared after the chains, so that starting tasks in declaration order, or by
//! chain length, starts the long leaves last. Durations are scaled so that the lower bound is
//! 2.5 s. The lower bound is `max(critical path, total work / 4)` of the nominal durations:
//! no schedule can beat it, and the few milliseconds of process start-up per task (a shell,
//! `sleep`, `touch`) count against both runners alike.
//!
//! Both run the same command per task, `sleep X && touch t<i>.stamp` with `sh -c`: jobrun
//! from `graph.toml` (no duration hints), ninja from `build.ninja` (one edge per task, output
//! the stamp, inputs the dependencies' stamps). Each learns durations from its previous run:
//! per graph, each runs once to write its log (`.jobrun_log`, `.ninja_log`), then the
//! measured runs follow with the log in place, jobrun and ninja alternating which goes first.
//! Stamps are deleted before every run (so ninja rebuilds everything); the logs are kept.
//! Makespan is the wall time from spawning the runner to reaping it.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use jobrun::sched::{sim, Config, Graph, NodeSpec, Outcome, Scheduler};
use jobserver_benches::harness::{self, fmt_ratio};
use jobserver_benches::{Results, Row};

#[allow(dead_code)]
#[path = "../src/external.rs"]
mod external;
// Each jobrun bench uses part of the shared generator.
#[allow(dead_code)]
#[path = "../src/graphs.rs"]
mod graphs;

static RESULTS: Results = Results::new("jobrun_makespan");

const JOBS: usize = 4;

/// Makespan over lower bound, at most (jobrun, on every graph).
const TARGET_BOUND: f64 = 1.04;
/// jobrun over ninja, at most (on every graph).
const TARGET_NINJA: f64 = 1.0;

fn remove_stamps(dir: &Path) {
    for entry in std::fs::read_dir(dir)
        .expect("reading the work dir")
        .flatten()
    {
        if entry.file_name().to_string_lossy().ends_with(".stamp") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The makespan of critical-path list scheduling on `jobs` slots with the nominal durations
/// and no start-up cost, simulated by jobrun's own core: what the policy can reach at best.
fn simulated(tasks: &[graphs::Task], jobs: usize) -> f64 {
    let specs = tasks.iter().enumerate().map(|(i, t)| NodeSpec {
        deps: t.deps.iter().map(|&d| graphs::name(d)).collect(),
        hint: Some(Duration::from_secs_f64(t.secs)),
        ..NodeSpec::new(graphs::name(i))
    });
    let graph = Graph::new(specs).expect("a valid graph");
    let config = Config {
        capacity: jobs as u32,
        ..Config::default()
    };
    let mut sched = Scheduler::new(graph, config, |_| None);
    let run = sim::simulate(
        &mut sched,
        jobs as u32,
        |t, _| {
            (
                Duration::from_secs_f64(tasks[t.index()].secs),
                Outcome::Success,
            )
        },
        |_, _| true,
    )
    .expect("the simulated run finishes");
    run.makespan.as_secs_f64()
}

/// The task durations of the latest run in a runner's log, in seconds, or `None` if a task is
/// missing: `.jobrun_log` (name, start ms, duration µs, status; tab-separated) or
/// `.ninja_log` (start ms, end ms, mtime, output, hash).
fn logged_durations(dir: &Path, tasks: &[graphs::Task], ninja: bool) -> Option<Vec<graphs::Task>> {
    let file = if ninja { ".ninja_log" } else { ".jobrun_log" };
    let text = std::fs::read_to_string(dir.join(file)).ok()?;
    let mut latest: HashMap<&str, f64> = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields[..] {
            [name, _, micros, "ok"] if !ninja => {
                if let Ok(us) = micros.parse::<u64>() {
                    latest.insert(name, us as f64 / 1e6);
                }
            }
            [start, end, _, out, _] if ninja => {
                if let (Ok(a), Ok(b), Some(name)) = (
                    start.parse::<u64>(),
                    end.parse::<u64>(),
                    out.strip_suffix(".stamp"),
                ) {
                    latest.insert(name, b.saturating_sub(a) as f64 / 1e3);
                }
            }
            _ => {}
        }
    }
    tasks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            Some(graphs::Task {
                deps: t.deps.clone(),
                secs: *latest.get(graphs::name(i).as_str())?,
            })
        })
        .collect()
}

/// One measured figure per runner and graph.
struct Figures {
    first: Duration,
    measured: Vec<Duration>,
}

impl Figures {
    fn mean(&self) -> f64 {
        self.measured.iter().map(Duration::as_secs_f64).sum::<f64>() / self.measured.len() as f64
    }
}

fn main() {
    let graphs_count = harness::scale(5, 1);
    let reps = harness::scale(2, 1);
    let bound_target = harness::scale(2.5, 0.3);
    let jobrun = external::jobrun();
    let ninja = external::ninja();
    let jobs = JOBS.to_string();

    let jobrun_cmd = || {
        let mut c = Command::new(&jobrun);
        c.args(["-j", &jobs, "-f", "graph.toml"]);
        c
    };
    let ninja_cmd = || {
        let mut c = Command::new(&ninja);
        c.args(["-j", &jobs, "-f", "build.ninja"]);
        c
    };

    let (mut sum_j, mut sum_n, mut sum_ratio) = (0.0, 0.0, 0.0);
    let (mut worst_j, mut worst_ratio) = (0.0f64, 0.0f64);
    let mut all_met = true;
    let (mut eff_j, mut eff_n) = (Vec::new(), Vec::new());
    for g in 0..graphs_count {
        let seed = 0x6d6b_7370_0000 + g as u64;
        let n = harness::scale(100 + graphs::Rng::new(seed).below(101), 20);
        let tasks = graphs::sleep_graph(seed, n, JOBS, bound_target);
        let dir = external::work_dir("jobrun_makespan", &format!("graph{g}"));
        graphs::write_graph_toml(&dir, &tasks, |i| graphs::sleep_cmd(i, tasks[i].secs));
        graphs::write_build_ninja(&dir, &tasks, true, |i| graphs::sleep_cmd(i, tasks[i].secs));
        let bound = graphs::lower_bound(&tasks, JOBS);
        let (path, work) = (graphs::critical_path(&tasks), graphs::total_work(&tasks));
        let shortest = tasks.iter().map(|t| t.secs).fold(f64::INFINITY, f64::min);
        let longest = tasks.iter().map(|t| t.secs).fold(0.0, f64::max);
        eprintln!(
            "graph {g}: {n} tasks of {shortest:.3}-{longest:.3} s, critical path {path:.3} s, \
             work {work:.3} s, bound {bound:.3} s"
        );

        let run_jobrun = || {
            remove_stamps(&dir);
            external::run("jobrun -j4 -f graph.toml", &mut jobrun_cmd(), &dir, None).wall
        };
        let run_ninja = || {
            remove_stamps(&dir);
            external::run("ninja -j4 -f build.ninja", &mut ninja_cmd(), &dir, None).wall
        };
        let mut j = Figures {
            first: run_jobrun(),
            measured: Vec::new(),
        };
        let logged = dir.join(".jobrun_log").exists();
        let mut nj = Figures {
            first: run_ninja(),
            measured: Vec::new(),
        };
        let mut ratios = Vec::new();
        for r in 0..reps {
            let (a, b) = if (g + r) % 2 == 0 {
                let a = run_jobrun();
                (a, run_ninja())
            } else {
                let b = run_ninja();
                (run_jobrun(), b)
            };
            eprintln!(
                "graph {g} run {r}: jobrun {:.3} s ({:.3}x), ninja {:.3} s ({:.3}x)",
                a.as_secs_f64(),
                a.as_secs_f64() / bound,
                b.as_secs_f64(),
                b.as_secs_f64() / bound
            );
            j.measured.push(a);
            nj.measured.push(b);
            ratios.push(a.as_secs_f64() / b.as_secs_f64());
        }
        let (jb, nb) = (j.mean() / bound, nj.mean() / bound);
        let best = simulated(&tasks, JOBS) / bound;
        // The bound again with the durations each runner measured in its last run (start-up
        // cost included), against that run's makespan: how well it scheduled what it ran.
        let effective = |ninja: bool, last: Duration| {
            let m = logged_durations(&dir, &tasks, ninja)?;
            let b = graphs::lower_bound(&m, JOBS);
            Some((
                last.as_secs_f64() / b,
                b,
                (graphs::total_work(&m) - work) / n as f64,
            ))
        };
        let last = |f: &Figures| *f.measured.last().expect("a measured run");
        let (je, ne) = (effective(false, last(&j)), effective(true, last(&nj)));
        let measured = match (je, ne) {
            (Some((jr, jbound, jcost)), Some((nr, nbound, ncost))) => {
                eff_j.push(jr);
                eff_n.push(nr);
                format!(
                    "with the task durations each runner logged in its last run (start-up cost \
                     {:.1} ms a task under jobrun, {:.1} ms under ninja), bounds {jbound:.3} s \
                     and {nbound:.3} s: jobrun {} of its bound, ninja {}",
                    jcost * 1e3,
                    ncost * 1e3,
                    fmt_ratio(jr),
                    fmt_ratio(nr),
                )
            }
            _ => "no usable .jobrun_log or .ninja_log".to_owned(),
        };
        let ratio = ratios.iter().sum::<f64>() / ratios.len() as f64;
        let met = jb <= TARGET_BOUND && ratio <= TARGET_NINJA;
        all_met &= met;
        (sum_j, sum_n, sum_ratio) = (sum_j + jb, sum_n + nb, sum_ratio + ratio);
        (worst_j, worst_ratio) = (worst_j.max(jb), worst_ratio.max(ratio));
        RESULTS.push(Row {
            metric: format!(
                "makespan / lower bound, graph {} ({n} sleep tasks, bound {bound:.2} s), -j4",
                g + 1
            ),
            ours: format!("{} ({:.3} s)", fmt_ratio(jb), j.mean()),
            reference: format!("{} ({:.3} s) (ninja 1.13.2)", fmt_ratio(nb), nj.mean()),
            ratio: fmt_ratio(ratio),
            target: format!("≤ {TARGET_BOUND}x bound, ≤ {TARGET_NINJA}x ninja"),
            met: Some(met),
            note: format!(
                "tasks of {shortest:.3}-{longest:.3} s, critical path {path:.3} s, work \
                 {work:.3} s; second run(s) with the log present (mean of {reps}); first run \
                 without a log: jobrun {} ({}), ninja {}; .jobrun_log written by the first \
                 run: {}; critical-path list schedule simulated with the nominal durations: \
                 {} of the bound; {measured}",
                fmt_ratio(j.first.as_secs_f64() / bound),
                external::fmt_secs(j.first),
                fmt_ratio(nj.first.as_secs_f64() / bound),
                if logged { "yes" } else { "NO" },
                fmt_ratio(best),
            ),
        });
    }
    let k = graphs_count as f64;
    RESULTS.push(Row {
        metric: format!("makespan / lower bound, mean of {graphs_count} graphs, -j4"),
        ours: fmt_ratio(sum_j / k),
        reference: format!("{} (ninja 1.13.2)", fmt_ratio(sum_n / k)),
        ratio: fmt_ratio(sum_ratio / k),
        target: format!("≤ {TARGET_BOUND}x bound, ≤ {TARGET_NINJA}x ninja, every graph"),
        met: Some(all_met),
        note: format!(
            "worst graph: jobrun {} of its bound, jobrun/ninja {}",
            fmt_ratio(worst_j),
            fmt_ratio(worst_ratio)
        ),
    });
    if eff_j.len() == graphs_count {
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        RESULTS.push(Row {
            metric: format!(
                "makespan / lower bound from the logged task durations, mean of {graphs_count} \
                 graphs, -j4"
            ),
            ours: fmt_ratio(mean(&eff_j)),
            reference: format!("{} (ninja 1.13.2)", fmt_ratio(mean(&eff_n))),
            ratio: fmt_ratio(mean(&eff_j) / mean(&eff_n)),
            target: "report".to_owned(),
            met: None,
            note: "the bound recomputed from the durations each runner logged in its last \
                   measured run (so each task's start-up cost counts as work), against that \
                   run's makespan: the scheduling alone, without the cost of starting processes"
                .to_owned(),
        });
    }
}
