//! Criterion configuration, paired measurement and the results files.

use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use criterion::Criterion;

/// True when `BENCH_SMOKE` is set (to anything but `0`): every bench then runs a few tiny
/// samples, only to prove it still works. Its figures mean nothing.
pub fn smoke() -> bool {
    std::env::var_os("BENCH_SMOKE").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Picks `full` normally and `smoke_value` in smoke mode.
pub fn scale<T>(full: T, smoke_value: T) -> T {
    if smoke() {
        smoke_value
    } else {
        full
    }
}

/// Samples per benchmark: criterion's minimum (10) in smoke mode.
pub fn sample_size() -> usize {
    scale(30, 10)
}

/// The criterion configuration every bench starts from.
///
/// Short warm-up and measurement times: each sample runs ours *and* the reference, and the
/// figure that matters is their ratio, which settles long before criterion's own confidence
/// intervals do. Smoke mode shrinks everything to a few milliseconds.
pub fn config() -> Criterion {
    let criterion = Criterion::default()
        .sample_size(sample_size())
        .without_plots();
    if smoke() {
        criterion
            .warm_up_time(Duration::from_millis(10))
            .measurement_time(Duration::from_millis(40))
            .nresamples(1000)
    } else {
        criterion
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3))
            .nresamples(20_000)
    }
}

/// One criterion sample of a pair: `iters` iterations of ours and of the reference.
#[derive(Debug, Clone, Copy)]
pub struct PairSample {
    /// Iterations of each side.
    pub iters: u64,
    /// Time ours took for them.
    pub ours: Duration,
    /// Time the reference took for them.
    pub reference: Duration,
}

/// Runs ours and a reference back to back in every criterion sample (alternating which goes
/// first) and keeps both times, so the ratio of each sample compares runs made moments apart.
///
/// Use it inside [`criterion::Bencher::iter_custom`]: criterion sees ours, and
/// [`Paired::summary`] gives the median of the per-sample ratios over the last samples (those
/// of criterion's measurement phase; the earlier ones are its warm-up).
#[derive(Debug, Default)]
pub struct Paired {
    samples: Vec<PairSample>,
}

/// What a [`Paired`] measured.
#[derive(Debug, Clone, Copy)]
pub struct PairSummary {
    /// Median time of one iteration of ours, in nanoseconds.
    pub ours_ns: f64,
    /// Median time of one iteration of the reference, in nanoseconds.
    pub reference_ns: f64,
    /// Median of the per-sample ratios ours / reference.
    pub ratio: f64,
    /// First quartile of the per-sample ratios.
    pub ratio_q1: f64,
    /// Third quartile of the per-sample ratios.
    pub ratio_q3: f64,
    /// Samples the figures come from.
    pub samples: usize,
}

impl Paired {
    /// An empty recorder.
    pub fn new() -> Self {
        Paired::default()
    }

    /// Runs both sides for `iters` iterations, records the pair and returns ours (for
    /// criterion).
    pub fn run(
        &mut self,
        iters: u64,
        ours: impl FnOnce(u64) -> Duration,
        reference: impl FnOnce(u64) -> Duration,
    ) -> Duration {
        let (ours, reference) = if self.ours_first() {
            let o = ours(iters);
            (o, reference(iters))
        } else {
            let r = reference(iters);
            (ours(iters), r)
        };
        self.samples.push(PairSample {
            iters,
            ours,
            reference,
        });
        ours
    }

    /// Records a sample measured by the caller (for benches that interleave ours and the
    /// reference more finely than per sample).
    pub fn push(&mut self, sample: PairSample) {
        self.samples.push(sample);
    }

    /// True when the next sample should run ours first (samples alternate).
    pub fn ours_first(&self) -> bool {
        self.samples.len().is_multiple_of(2)
    }

    /// The recorded samples, oldest first.
    pub fn samples(&self) -> &[PairSample] {
        &self.samples
    }

    /// Figures from the last `keep` samples (all of them if fewer were taken), or `None`
    /// when nothing ran (for example, a filter skipped the benchmark).
    pub fn summary(&self, keep: usize) -> Option<PairSummary> {
        let start = self.samples.len().saturating_sub(keep.max(1));
        let kept = &self.samples[start..];
        if kept.is_empty() {
            return None;
        }
        let per_iter = |d: Duration, iters: u64| d.as_nanos() as f64 / iters.max(1) as f64;
        let ours: Vec<f64> = kept.iter().map(|s| per_iter(s.ours, s.iters)).collect();
        let reference: Vec<f64> = kept
            .iter()
            .map(|s| per_iter(s.reference, s.iters))
            .collect();
        let ratios: Vec<f64> = kept
            .iter()
            .map(|s| s.ours.as_nanos() as f64 / (s.reference.as_nanos() as f64).max(1.0))
            .collect();
        Some(PairSummary {
            ours_ns: quantile(&ours, 0.5),
            reference_ns: quantile(&reference, 0.5),
            ratio: quantile(&ratios, 0.5),
            ratio_q1: quantile(&ratios, 0.25),
            ratio_q3: quantile(&ratios, 0.75),
            samples: kept.len(),
        })
    }
}

/// The `q` quantile (0..=1) of `values`, by linear interpolation; NaN when empty.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// A target for a figure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// The figure must be at most this.
    AtMost(f64),
    /// The figure must be at least this.
    AtLeast(f64),
    /// The figure must be exactly this (within rounding to two decimals).
    Exactly(f64),
    /// No target: the figure is reported for information.
    Report,
}

impl Target {
    /// Whether `value` meets the target (`None` for [`Target::Report`]).
    pub fn met(self, value: f64) -> Option<bool> {
        match self {
            Target::AtMost(t) => Some(value <= t),
            Target::AtLeast(t) => Some(value >= t),
            Target::Exactly(t) => Some((value - t).abs() < 0.005),
            Target::Report => None,
        }
    }

    /// The target as table text, with `unit` after the number (`x`, ` B`, ...).
    pub fn describe(self, unit: &str) -> String {
        match self {
            Target::AtMost(t) => format!("≤ {}{unit}", trim(t)),
            Target::AtLeast(t) => format!("≥ {}{unit}", trim(t)),
            Target::Exactly(t) => format!("= {}{unit}", trim(t)),
            Target::Report => "report".to_owned(),
        }
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_owned()
}

/// One line of the results table.
#[derive(Debug, Clone, Default)]
pub struct Row {
    /// What is measured, e.g. `acquire+release, tokio, pipe`.
    pub metric: String,
    /// Our figure, formatted with its unit.
    pub ours: String,
    /// The reference's figure, formatted with its unit, and what the reference is.
    pub reference: String,
    /// The ratio, formatted (`1.07x`), or `—`.
    pub ratio: String,
    /// The target, formatted.
    pub target: String,
    /// Whether the target is met (`None`: no target).
    pub met: Option<bool>,
    /// Anything the reader needs to judge the figure (spread, method).
    pub note: String,
}

impl Row {
    /// A row for a count per token (wake-ups, failed reads): ours against a reference count,
    /// with the target on our figure.
    pub fn count(
        metric: String,
        (ours, reference): (f64, f64),
        reference_label: &str,
        target: Target,
        note: String,
    ) -> Row {
        Row {
            metric,
            ours: format!("{ours:.2}"),
            reference: format!("{reference:.2} ({reference_label})"),
            ratio: fmt_ratio(ours / reference),
            target: target.describe(""),
            met: target.met(ours),
            note,
        }
    }

    /// A row for a paired timing: ours and the reference per iteration, their ratio, and a
    /// target on that ratio.
    pub fn timing(metric: &str, reference: &str, s: &PairSummary, target: Target) -> Row {
        Row {
            metric: metric.to_owned(),
            ours: fmt_ns(s.ours_ns),
            reference: format!("{} ({reference})", fmt_ns(s.reference_ns)),
            ratio: fmt_ratio(s.ratio),
            target: target.describe("x"),
            met: target.met(s.ratio),
            note: format!(
                "ratio IQR {}–{}, {} paired samples",
                fmt_ratio(s.ratio_q1),
                fmt_ratio(s.ratio_q3),
                s.samples
            ),
        }
    }
}

/// `1234.5` ns as `1.23 µs`, and so on.
pub fn fmt_ns(ns: f64) -> String {
    if !ns.is_finite() {
        "n/a".to_owned()
    } else if ns < 1_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{:.2} ms", ns / 1e6)
    }
}

/// A ratio as `1.073x` (three decimals, so that a figure just past its target does not
/// print as the target itself).
pub fn fmt_ratio(r: f64) -> String {
    if r.is_finite() {
        format!("{r:.3}x")
    } else {
        "n/a".to_owned()
    }
}

/// The directory results are written to: `$BENCH_RESULTS_DIR`, or `target/bench-results/`
/// of the workspace.
pub fn results_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BENCH_RESULTS_DIR") {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("bench-results")
}

/// The results of one bench binary: `target/bench-results/<bench>.tsv`, one row per line
/// (`metric`, `ours`, `reference`, `ratio`, `target`, `met`, `note`, tab-separated), which
/// `scripts/bench.sh` turns into a table. The file is started afresh by the first row a
/// process writes and each row is appended as soon as it is known, so a bench that fails
/// half-way still leaves the rows it finished.
#[derive(Debug)]
pub struct Results {
    bench: &'static str,
    started: Mutex<bool>,
}

impl Results {
    /// Results of the bench binary `bench`.
    pub const fn new(bench: &'static str) -> Self {
        Results {
            bench,
            started: Mutex::new(false),
        }
    }

    /// Appends a row (and prints it to stderr).
    pub fn push(&self, row: Row) {
        let clean = |s: &str| s.replace(['\t', '\n'], " ");
        let met = match row.met {
            Some(true) => "yes",
            Some(false) => "no",
            None => "—",
        };
        let mut line = String::new();
        let _ = writeln!(
            line,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
            clean(&row.metric),
            clean(&row.ours),
            clean(&row.reference),
            clean(&row.ratio),
            clean(&row.target),
            met,
            clean(&row.note),
        );
        eprint!("bench-result {}: {line}", self.bench);
        let dir = results_dir();
        let path = dir.join(format!("{}.tsv", self.bench));
        let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
        let result = fs::create_dir_all(&dir).and_then(|()| {
            let mut file = OpenOptions::new()
                .create(true)
                .write(true)
                .append(*started)
                .truncate(!*started)
                .open(&path)?;
            file.write_all(line.as_bytes())
        });
        match result {
            Ok(()) => *started = true,
            Err(e) => eprintln!("cannot write {}: {e}", path.display()),
        }
    }
}
