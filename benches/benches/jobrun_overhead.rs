//! The `jobrun` binary's own cost, with real processes: many tiny commands, under make's
//! jobserver, and peak memory on a large graph.
//!
//! - 2000 `true` commands at `-j4`, each run with `sh -c`: `jobrun -j4 --stdin` (one command
//!   a line), ninja 1.13.2 (`build.ninja`, 2000 independent edges, `command = true`, outputs
//!   never created, so every run runs them all) and `xargs -P4 -n1 sh -c` (the same lines).
//!   Rounds interleave the three, rotating which goes first; each figure is the median over
//!   the rounds, each ratio the median of the per-round ratios.
//! - The same 2000 under `make -j4` as the parent: a `jobs.mk` whose one recipe is
//!   `+jobrun --stdin < cmds.txt` or `+ninja -f build.ninja`, neither given `-j`, so each
//!   joins make's jobserver and takes its tokens from make's pool of 4. Once with GNU make
//!   4.4.1 (a fifo jobserver) and once with make 4.3 (a pipe jobserver).
//! - Peak RSS (`ru_maxrss` from `wait4`: the runner's, its `sh` jobs being smaller) of
//!   `jobrun -j4 -f graph.toml` on a 10,000-task layered DAG of `true` (3 dependencies a task
//!   on average), second run (the job log present), against ninja on the same graph (no
//!   outputs are created, so ninja runs every edge).
//!
//! The runners' own CPU time (without their jobs') is in the notes: read from
//! `/proc/<pid>/stat` once the runner has exited and before it is reaped.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use jobserver_benches::harness::{self, fmt_ratio, quantile};
use jobserver_benches::{Results, Row, Target};

use external::Finished;

#[allow(dead_code)]
#[path = "../src/external.rs"]
mod external;
// Each jobrun bench uses part of the shared generator.
#[allow(dead_code)]
#[path = "../src/graphs.rs"]
mod graphs;

static RESULTS: Results = Results::new("jobrun_overhead");

const JOBS: &str = "4";

/// A runner to time: a label and how to make its command.
struct Contender<'a> {
    label: &'a str,
    command: Box<dyn Fn() -> Command + 'a>,
    stdin: Option<&'a Path>,
}

/// Runs the contenders `rounds` times in `dir`, rotating which goes first; returns what
/// each one's runs measured, in order.
fn rounds(dir: &Path, contenders: &[Contender<'_>], rounds: usize) -> Vec<Vec<Finished>> {
    let mut runs = vec![Vec::new(); contenders.len()];
    for r in 0..rounds {
        for k in 0..contenders.len() {
            let i = (k + r) % contenders.len();
            let c = &contenders[i];
            runs[i].push(external::run(c.label, &mut (c.command)(), dir, c.stdin));
        }
    }
    runs
}

/// A row for ours (`runs[0]`) against `runs[k]`: median wall times and the median
/// per-round ratio; with `cpu_note`, the runners' own CPU times in the note.
fn timing_row(
    metric: String,
    runs: &[Vec<Finished>],
    k: usize,
    (reference, target): (&str, Target),
    cpu_note: bool,
) -> Row {
    let median = |v: &[f64]| quantile(v, 0.5);
    let wall = |i: usize| -> Vec<f64> { runs[i].iter().map(|f| f.wall.as_secs_f64()).collect() };
    let cpu = |i: usize| -> Vec<f64> { runs[i].iter().map(|f| f.cpu.as_secs_f64()).collect() };
    let walls = [wall(0), wall(k)];
    let ratios: Vec<f64> = walls[0].iter().zip(&walls[1]).map(|(a, b)| a / b).collect();
    let ratio = median(&ratios);
    Row {
        metric,
        ours: external::fmt_secs(Duration::from_secs_f64(median(&walls[0]))),
        reference: format!(
            "{} ({reference})",
            external::fmt_secs(Duration::from_secs_f64(median(&walls[1])))
        ),
        ratio: fmt_ratio(ratio),
        target: target.describe("x"),
        met: target.met(ratio),
        note: format!(
            "median of {} interleaved rounds; per-round ratios {}–{}{}",
            ratios.len(),
            fmt_ratio(ratios.iter().copied().fold(f64::INFINITY, f64::min)),
            fmt_ratio(ratios.iter().copied().fold(0.0, f64::max)),
            if cpu_note {
                format!(
                    "; the runner's own CPU time (user + system, without its jobs', median): \
                     ours {:.3} s, reference {:.3} s",
                    median(&cpu(0)),
                    median(&cpu(k))
                )
            } else {
                String::new()
            },
        ),
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn main() {
    let n = harness::scale(2000, 20);
    let reps = harness::scale(7, 1);
    let jobrun = external::jobrun();
    let ninja = external::ninja();
    let make44 = external::make44();
    let make43 = external::make43();

    // ---- many tiny commands ----
    let dir = external::work_dir("jobrun_overhead", "true");
    let cmds = dir.join("cmds.txt");
    std::fs::write(&cmds, "true\n".repeat(n)).expect("writing cmds.txt");
    let flat: Vec<graphs::Task> = (0..n)
        .map(|_| graphs::Task {
            deps: Vec::new(),
            secs: 0.0,
        })
        .collect();
    graphs::write_build_ninja(&dir, &flat, false, |_| "true".to_owned());
    graphs::write_makefile(
        &dir,
        &[
            (
                "jobrun",
                format!("'{}' --stdin < cmds.txt", jobrun.display()),
            ),
            ("ninja", format!("'{}' -f build.ninja", ninja.display())),
        ],
    );

    let runs = rounds(
        &dir,
        &[
            Contender {
                label: "jobrun -j4 --stdin",
                command: Box::new(|| {
                    let mut c = Command::new(&jobrun);
                    c.args(["-j", JOBS, "--stdin"]);
                    c
                }),
                stdin: Some(&cmds),
            },
            Contender {
                label: "ninja -j4",
                command: Box::new(|| {
                    let mut c = Command::new(&ninja);
                    c.args(["-j", JOBS, "-f", "build.ninja"]);
                    c
                }),
                stdin: None,
            },
            Contender {
                label: "xargs -P4 -n1 sh -c",
                command: Box::new(|| {
                    let mut c = Command::new("xargs");
                    c.args(["-P", JOBS, "-n1", "sh", "-c"]);
                    c
                }),
                stdin: Some(&cmds),
            },
        ],
        reps,
    );
    RESULTS.push(timing_row(
        format!("{n} `true` commands, -j4, wall time: jobrun --stdin vs ninja"),
        &runs,
        1,
        ("ninja 1.13.2, one edge each", Target::AtMost(1.0)),
        true,
    ));
    RESULTS.push(timing_row(
        format!("{n} `true` commands, -j4, wall time: jobrun --stdin vs xargs"),
        &runs,
        2,
        ("xargs -P4 -n1 sh -c", Target::AtMost(1.0)),
        true,
    ));

    // ---- the same under make's jobserver ----
    for (make, label) in [
        (&make44, "make 4.4.1 -j4, fifo"),
        (&make43, "make 4.3 -j4, pipe"),
    ] {
        let under = |target: &'static str| -> Box<dyn Fn() -> Command + '_> {
            Box::new(move || {
                let mut c = Command::new(make);
                c.args(["-j", JOBS, "-f", "jobs.mk", target]);
                c
            })
        };
        let runs = rounds(
            &dir,
            &[
                Contender {
                    label: "make -j4 -f jobs.mk jobrun",
                    command: under("jobrun"),
                    stdin: None,
                },
                Contender {
                    label: "make -j4 -f jobs.mk ninja",
                    command: under("ninja"),
                    stdin: None,
                },
            ],
            reps,
        );
        RESULTS.push(timing_row(
            format!("{n} `true` commands under {label} jobserver: jobrun vs ninja"),
            &runs,
            1,
            ("ninja 1.13.2 joining the same make", Target::AtMost(1.1)),
            false,
        ));
    }

    // ---- peak memory on a large graph ----
    let big = harness::scale(10_000, 200);
    let dir = external::work_dir("jobrun_overhead", "rss");
    let tasks = graphs::layered_dag(big, 100, 0x7273_7300);
    graphs::write_graph_toml(&dir, &tasks, |_| "true".to_owned());
    graphs::write_build_ninja(&dir, &tasks, false, |_| "true".to_owned());
    let jobrun_graph = || {
        let mut c = Command::new(&jobrun);
        c.args(["-j", JOBS, "-f", "graph.toml"]);
        c
    };
    let ninja_graph = || {
        let mut c = Command::new(&ninja);
        c.args(["-j", JOBS, "-f", "build.ninja"]);
        c
    };
    let what = format!("jobrun -j4 -f graph.toml ({big} tasks)");
    let first = external::run(&what, &mut jobrun_graph(), &dir, None);
    let second = external::run(&what, &mut jobrun_graph(), &dir, None);
    let ninja_second = external::run("ninja -j4 (rss graph)", &mut ninja_graph(), &dir, None);
    let tiny_dir = external::work_dir("jobrun_overhead", "rss-one");
    let mut one = Command::new(&jobrun);
    one.args(["-j", JOBS, "--", "true"]);
    let one = external::run("jobrun -j4 -- true", &mut one, &tiny_dir, None);
    let edges: usize = tasks.iter().map(|t| t.deps.len()).sum();
    RESULTS.push(Row {
        metric: format!("peak RSS, {big}-task graph of `true`, -j4 (second run, log present)"),
        ours: mib(second.max_rss_kib),
        reference: format!(
            "{} (ninja 1.13.2, same graph)",
            mib(ninja_second.max_rss_kib)
        ),
        ratio: fmt_ratio(second.max_rss_kib as f64 / ninja_second.max_rss_kib as f64),
        target: Target::Report.describe(""),
        met: None,
        note: format!(
            "ru_maxrss from wait4 (the runner's; its sh jobs are smaller), {edges} edges; \
             jobrun's first run (no log): {}; jobrun running a single `true`: {}; wall time: \
             jobrun {}, ninja {}; the runner's own CPU time (without its jobs'): jobrun {}, \
             ninja {}",
            mib(first.max_rss_kib),
            mib(one.max_rss_kib),
            external::fmt_secs(second.wall),
            external::fmt_secs(ninja_second.wall),
            external::fmt_secs(second.cpu),
            external::fmt_secs(ninja_second.cpu),
        ),
    });
}
