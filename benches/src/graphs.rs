//! Deterministic task graphs for the `jobrun_*` benches, and the files that describe them to
//! each runner: `graph.toml` (jobrun), `build.ninja` (ninja), a `Makefile` around either.
//!
//! Included by each of those benches with `#[path]` (each uses part of it). Everything comes
//! from a seed through a tiny xorshift generator, so a graph is the same on every machine
//! and in every run.

use std::fmt::Write as _;
use std::path::Path;

/// xorshift64* (Vigna), seeded through SplitMix64 so that small seeds give unrelated streams.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (`n > 0`; the modulo bias is irrelevant here).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() >> 11) % n as u64) as usize
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One task: its dependencies (indices into the graph, acyclic by construction) and how
/// long it runs, in seconds.
#[derive(Debug, Clone)]
pub(crate) struct Task {
    pub(crate) deps: Vec<usize>,
    pub(crate) secs: f64,
}

/// The name of task `i` in every file written here (and its stamp file is `t<i>.stamp`).
pub(crate) fn name(i: usize) -> String {
    format!("t{i}")
}

/// A layered random DAG of `n` tasks: layers of `width` tasks (the first has no
/// dependencies); every later task depends on 2 to 4 distinct tasks (3 on average) drawn from
/// the three layers before its own. Durations 1-20 ms, one task in ten 50-200 ms. Task
/// indices are a topological order.
pub(crate) fn layered_dag(n: usize, width: usize, seed: u64) -> Vec<Task> {
    let mut rng = Rng::new(seed);
    let width = width.max(1);
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let layer = i / width;
        let mut deps = Vec::new();
        if layer > 0 {
            let from = layer.saturating_sub(3) * width;
            let to = layer * width;
            let k = (2 + rng.below(3)).min(to - from);
            while deps.len() < k {
                let d = from + rng.below(to - from);
                if !deps.contains(&d) {
                    deps.push(d);
                }
            }
        }
        let ms = if rng.below(10) == 0 {
            50 + rng.below(151)
        } else {
            1 + rng.below(20)
        };
        tasks.push(Task {
            deps,
            secs: ms as f64 / 1000.0,
        });
    }
    tasks
}

/// A graph of `sleep` jobs with skewed durations, `n` tasks (at least 8):
///
/// - many short chains (1 to 8 tasks of 10-100 ms, most near 10 ms), some joined to earlier
///   chains, declared first;
/// - a few long leaves (tasks with no dependencies, one per 40 tasks, at least 2), each
///   0.45-0.8 of the short work per job, declared *after* the chains, so that a runner that
///   starts tasks in declaration order or by chain length starts them last; each has 0-2 short
///   dependents.
///
/// Durations are then scaled so that the lower bound at `jobs` jobs is about `bound_secs`,
/// and rounded to milliseconds (what is written to the files is what [`lower_bound`] sees).
pub(crate) fn sleep_graph(seed: u64, n: usize, jobs: usize, bound_secs: f64) -> Vec<Task> {
    let mut rng = Rng::new(seed);
    let n = n.max(8);
    let longs = (n / 40).max(2);
    let tails: Vec<usize> = (0..longs).map(|_| rng.below(3)).collect();
    let shorts = n - longs - tails.iter().sum::<usize>();
    let short = |rng: &mut Rng| 0.01 + 0.09 * rng.unit().powi(3);
    let mut tasks: Vec<Task> = Vec::with_capacity(n);
    while tasks.len() < shorts {
        let len = (1 + rng.below(8)).min(shorts - tasks.len());
        let before = tasks.len();
        for k in 0..len {
            let mut deps = Vec::new();
            if k > 0 {
                deps.push(tasks.len() - 1);
            }
            if before > 0 && rng.below(100) < if k == 0 { 40 } else { 15 } {
                let d = rng.below(before);
                if !deps.contains(&d) {
                    deps.push(d);
                }
            }
            tasks.push(Task {
                deps,
                secs: short(&mut rng),
            });
        }
    }
    let short_work: f64 = tasks.iter().map(|t| t.secs).sum();
    let first_long = tasks.len();
    for _ in 0..longs {
        let secs = short_work / jobs as f64 * (0.45 + 0.35 * rng.unit());
        tasks.push(Task {
            deps: Vec::new(),
            secs,
        });
    }
    for (l, &count) in tails.iter().enumerate() {
        let mut prev = first_long + l;
        for _ in 0..count {
            let mut deps = vec![prev];
            if rng.below(2) == 0 {
                deps.push(rng.below(shorts));
            }
            prev = tasks.len();
            tasks.push(Task {
                deps,
                secs: short(&mut rng),
            });
        }
    }
    let scale = bound_secs / lower_bound(&tasks, jobs);
    for t in &mut tasks {
        t.secs = ((t.secs * scale * 1000.0).round() / 1000.0).max(0.001);
    }
    tasks
}

/// The longest chain of durations (the critical path), in seconds.
pub(crate) fn critical_path(tasks: &[Task]) -> f64 {
    // Longest finish time per task; dependencies may be declared later, so memoise by DFS.
    fn finish(i: usize, tasks: &[Task], memo: &mut [f64]) -> f64 {
        if memo[i] >= 0.0 {
            return memo[i];
        }
        let start = tasks[i]
            .deps
            .iter()
            .map(|&d| finish(d, tasks, memo))
            .fold(0.0, f64::max);
        memo[i] = start + tasks[i].secs;
        memo[i]
    }
    let mut memo = vec![-1.0; tasks.len()];
    (0..tasks.len())
        .map(|i| finish(i, tasks, &mut memo))
        .fold(0.0, f64::max)
}

/// Total work, in seconds.
pub(crate) fn total_work(tasks: &[Task]) -> f64 {
    tasks.iter().map(|t| t.secs).sum()
}

/// No schedule on `jobs` slots can finish before `max(critical path, work / jobs)`.
pub(crate) fn lower_bound(tasks: &[Task], jobs: usize) -> f64 {
    critical_path(tasks).max(total_work(tasks) / jobs as f64)
}

/// The shell command of a `sleep` task: the same string for jobrun and ninja.
pub(crate) fn sleep_cmd(i: usize, secs: f64) -> String {
    format!("sleep {secs:.3} && touch {}.stamp", name(i))
}

/// Writes `graph.toml` for jobrun: one `[[task]]` per task, `cmd(i)` as its command, no
/// duration hints (jobrun learns durations from its log, as ninja does from `.ninja_log`).
pub(crate) fn write_graph_toml(dir: &Path, tasks: &[Task], cmd: impl Fn(usize) -> String) {
    let mut text = String::with_capacity(tasks.len() * 64);
    for (i, t) in tasks.iter().enumerate() {
        let _ = writeln!(text, "[[task]]\nname = \"{}\"", name(i));
        let _ = writeln!(
            text,
            "cmd = \"{}\"",
            cmd(i).replace('\\', "\\\\").replace('"', "\\\"")
        );
        if !t.deps.is_empty() {
            let deps: Vec<String> = t.deps.iter().map(|&d| format!("\"{}\"", name(d))).collect();
            let _ = writeln!(text, "deps = [{}]", deps.join(", "));
        }
        text.push('\n');
    }
    write(&dir.join("graph.toml"), &text);
}

/// Writes `build.ninja`: one edge per task, output `t<i>.stamp` (or the phony-like `t<i>`
/// when the command creates nothing), inputs the outputs of its dependencies, command
/// `cmd(i)`; default target all outputs.
pub(crate) fn write_build_ninja(
    dir: &Path,
    tasks: &[Task],
    stamps: bool,
    cmd: impl Fn(usize) -> String,
) {
    let out = |i: usize| {
        if stamps {
            format!("{}.stamp", name(i))
        } else {
            name(i)
        }
    };
    let mut text = String::with_capacity(tasks.len() * 64);
    text.push_str("rule run\n  command = $cmd\n  description = $out\n\n");
    for (i, t) in tasks.iter().enumerate() {
        let deps: Vec<String> = t.deps.iter().map(|&d| out(d)).collect();
        let _ = writeln!(text, "build {}: run {}", out(i), deps.join(" "));
        // `$` is ninja's escape character.
        let _ = writeln!(text, "  cmd = {}", cmd(i).replace('$', "$$"));
    }
    let all: Vec<String> = (0..tasks.len()).map(out).collect();
    let _ = writeln!(text, "\nbuild all: phony {}\ndefault all", all.join(" "));
    write(&dir.join("build.ninja"), &text);
}

/// Writes `jobs.mk`: one phony target per recipe line given, each run with `+` so that the
/// command shares make's jobserver (`make -f jobs.mk <target>`).
pub(crate) fn write_makefile(dir: &Path, targets: &[(&str, String)]) {
    let mut text = String::new();
    let names: Vec<&str> = targets.iter().map(|(t, _)| *t).collect();
    let _ = writeln!(text, ".PHONY: {}", names.join(" "));
    for (target, recipe) in targets {
        let _ = writeln!(text, "{target}:\n\t+{}", recipe.replace('$', "$$"));
    }
    write(&dir.join("jobs.mk"), &text);
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}
