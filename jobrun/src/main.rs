//! `jobrun`: run commands and task graphs in parallel under make's jobserver.
//!
//! See `jobrun --help` and the README.

/// `eprintln!` in one `write(2)`: several jobruns (or makes) share one stderr, and a line
/// written in pieces can interleave with theirs.
macro_rules! eline {
    ($($arg:tt)*) => {{
        let mut line = format!($($arg)*);
        line.push('\n');
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
    }};
}

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::signal::unix::{signal, SignalKind};

use jobrun::{Event, Options, OutputMode, Report, Runner, Status, TaskGraph, TermSeq};

const AFTER_HELP: &str = "\
Forms:
  jobrun [OPTIONS] -- CMD...     each argument is one command, run with sh -c
  jobrun [OPTIONS] -f FILE       a task graph in TOML ([[task]] tables; see the README)
  jobrun [OPTIONS] --stdin       one command per line from standard input

Tokens: inside a make recipe marked with `+` (or with MAKEFLAGS naming a jobserver),
jobrun takes one token per task from make's pool (-j is then ignored); otherwise it
creates a pool of -j N that every task's make, ninja and cargo share.

While it runs:
  Ctrl-\\ (SIGQUIT)  list the running tasks
  SIGUSR1           add one slot;  SIGUSR2  remove one (never kills a running job)
  Ctrl-C, SIGTERM, SIGHUP
                    start nothing more, terminate every task's process group with the
                    --termseq sequence, give every token back, exit 128 + the signal;
                    a second Ctrl-C kills at once

Exit status: 0 all succeeded, 1 some failed, 2 usage or graph error, 128+N interrupted
by signal N. A task exiting with 75 (EX_TEMPFAIL) is re-queued and run again later.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OutputArg {
    /// A task's stdout and stderr together, printed when it ends, under its name.
    Grouped,
    /// Each line as it comes, prefixed with the task's name.
    Line,
}

/// Run commands and task graphs in parallel under make's jobserver.
#[derive(Debug, Parser)]
#[command(name = "jobrun", version, after_help = AFTER_HELP)]
struct Args {
    /// Run the task graph in this TOML file.
    #[arg(short = 'f', long = "file", value_name = "FILE", conflicts_with_all = ["stdin", "commands"])]
    file: Option<PathBuf>,
    /// Read one command per line from standard input.
    #[arg(long, conflicts_with = "commands")]
    stdin: bool,
    /// Size of our own pool when no jobserver is in the environment [default: CPUs].
    #[arg(short = 'j', long = "jobs", value_name = "N")]
    jobs: Option<usize>,
    /// Fail (exit 2) unless a jobserver is found in the environment.
    #[arg(long)]
    require_jobserver: bool,
    /// Keep going until N tasks failed; 0 = never stop. make's `k` flag means 0.
    #[arg(short = 'k', value_name = "N")]
    keep_going: Option<u32>,
    /// Dry run: list the commands in the order they would start; run nothing (also make's `n`).
    #[arg(short = 'n', long = "dry-run")]
    dry_run: bool,
    /// Debug detail: every start, every token hand-off (also make's `d` or `--debug`).
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    /// The job log, read for priorities and the ETA, appended as tasks end.
    #[arg(long, value_name = "PATH", default_value = ".jobrun_log")]
    log: PathBuf,
    /// How task output is shown.
    #[arg(long, value_enum, default_value_t = OutputArg::Grouped)]
    output: OutputArg,
    /// Signals and waits (ms) to stop tasks with, as GNU parallel.
    #[arg(
        long,
        value_name = "SEQ",
        default_value = "TERM,200,TERM,100,TERM,50,KILL,25"
    )]
    termseq: String,
    /// The commands (after `--`).
    #[arg(last = true, value_name = "CMD")]
    commands: Vec<String>,
}

/// Exit codes.
const EXIT_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eline!("jobrun: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    rt.block_on(run(args))
}

fn load_graph(args: &Args) -> Result<TaskGraph, String> {
    if let Some(path) = &args.file {
        return jobrun::file::load(path).map_err(|e| e.to_string());
    }
    if args.stdin {
        let mut cmds = Vec::new();
        for line in std::io::stdin().lock().lines() {
            let line = line.map_err(|e| format!("reading standard input: {e}"))?;
            if !line.trim().is_empty() {
                cmds.push(line);
            }
        }
        return Ok(TaskGraph::from_commands(cmds));
    }
    if args.commands.is_empty() {
        return Err(
            "nothing to run: give commands after `--`, a graph with -f FILE, or --stdin \
                    (see --help)"
                .into(),
        );
    }
    Ok(TaskGraph::from_commands(args.commands.iter().cloned()))
}

/// What the status line and the printers share.
struct Ui {
    bar: Option<ProgressBar>,
    verbose: bool,
    list_requested: AtomicBool,
    last_plain: Mutex<Option<std::time::Instant>>,
}

impl Ui {
    fn print(&self, f: impl FnOnce()) {
        match &self.bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }
}

fn tokens(n: u32) -> String {
    format!("{n} token{}", if n == 1 { "" } else { "s" })
}

fn fmt_secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!(
            "{}h{:02}m",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        )
    }
}

async fn run(args: Args) -> ExitCode {
    let termseq = match TermSeq::parse(&args.termseq) {
        Ok(t) => t,
        Err(e) => {
            eline!("jobrun: --termseq {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let graph = match load_graph(&args) {
        Ok(g) => g,
        Err(e) => {
            eline!("jobrun: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let interactive = std::io::stderr().is_terminal();
    let mut options = Options::default();
    options.jobs = args.jobs.unwrap_or(options.jobs).max(1);
    options.require_jobserver = args.require_jobserver;
    if let Some(k) = args.keep_going {
        options.keep_going = k;
    }
    options.dry_run = args.dry_run;
    options.log = Some(args.log.clone());
    options.termseq = termseq;
    options.output = match args.output {
        OutputArg::Grouped => OutputMode::Grouped,
        OutputArg::Line => OutputMode::Line,
    };
    options.progress_every = if interactive {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(5)
    };
    let mut runner = match Runner::from_env(options) {
        Ok(r) => r,
        Err(e) => {
            eline!("jobrun: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Some(why) = runner.degraded() {
        eline!("jobrun: warning: running one task at a time: {why}");
    }
    // make's debug flag (`make -d`, `--debug[=LEVELS]`) implies `-v`.
    let verbose = args.verbose || runner.make_flags().is_some_and(|f| f.debug);
    if verbose {
        let how = if runner.owns_pool() {
            format!("created a pool of {}", runner.pool_size().unwrap_or(1))
        } else {
            match runner.pool_size() {
                Some(n) => format!("joined the jobserver in the environment (-j{n})"),
                None => "joined the jobserver in the environment".to_owned(),
            }
        };
        eline!("jobrun: {how}; {} tasks", graph.len());
    }
    let names: Vec<String> = graph.tasks().iter().map(|t| t.name().to_owned()).collect();
    let commands: Vec<String> = graph.tasks().iter().map(|t| t.work().display()).collect();

    let bar = (interactive && !args.dry_run).then(|| {
        let bar = ProgressBar::with_draw_target(
            Some(graph.len() as u64),
            ProgressDrawTarget::stderr_with_hz(10),
        );
        bar.set_style(
            ProgressStyle::with_template("[{pos}/{len}] {wide_msg}").expect("a valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(250));
        bar
    });
    let ui = Arc::new(Ui {
        bar,
        verbose,
        list_requested: AtomicBool::new(false),
        last_plain: Mutex::new(None),
    });
    let ui2 = ui.clone();
    let names2 = names.clone();
    let commands2 = commands.clone();
    let eta = Arc::new(Mutex::new(None::<Duration>));
    let eta2 = eta.clone();
    let grouped = args.output == OutputArg::Grouped;
    runner.on_event(move |event, snap| {
        let ui = &ui2;
        match event {
            Event::Started {
                task,
                name,
                tokens,
                from,
            } if ui.verbose => {
                let via = match from {
                    Some(f) => format!(", tokens handed from `{}`", names2[f.index()]),
                    None => String::new(),
                };
                ui.print(|| {
                    eline!(
                        "jobrun: start `{name}` ({tokens} token{}{via}): {}",
                        if *tokens == 1 { "" } else { "s" },
                        commands2[task.index()]
                    )
                });
            }
            Event::Output { name, data, .. } => {
                let mut out = std::io::stdout().lock();
                ui.print(|| {
                    let _ = write_output(&mut out, grouped, name, data);
                    let _ = out.flush();
                });
            }
            Event::Finished {
                name,
                failure,
                duration,
                ..
            } => {
                if let Some(f) = failure {
                    ui.print(|| {
                        eline!("jobrun: FAILED `{name}` after {}: {f}", fmt_secs(*duration))
                    });
                } else if ui.verbose {
                    ui.print(|| eline!("jobrun: done `{name}` in {}", fmt_secs(*duration)));
                }
            }
            Event::Requeued { name, reason, .. } if ui.verbose => {
                let why = match reason {
                    jobrun::sched::RequeueReason::LockBusy => "its lock is busy",
                    jobrun::sched::RequeueReason::Retry => "it asked to be retried later",
                    jobrun::sched::RequeueReason::Backoff => "backing off from a partial token set",
                };
                ui.print(|| eline!("jobrun: re-queued `{name}`: {why}"));
            }
            Event::Skipped { name, because, .. } => {
                ui.print(|| eline!("jobrun: skipped `{name}`: `{because}` failed"));
            }
            Event::Capacity {
                capacity,
                pool_jobs,
            } => {
                let what = match pool_jobs {
                    Some(n) => format!("pool is now {n} jobs"),
                    None => format!("at most {capacity} tokens at once"),
                };
                ui.print(|| eline!("jobrun: {what}"));
            }
            Event::Stopping => {
                ui.print(|| {
                    eline!(
                        "jobrun: stopping: terminating {} running task(s)",
                        snap.counts.running
                    )
                });
            }
            Event::Warning(w) => ui.print(|| eline!("jobrun: warning: {w}")),
            Event::Progress {
                eta: e,
                pool_free,
                running,
            } => {
                *eta2.lock().expect("not poisoned") = Some(*e);
                let listing = ui.list_requested.swap(false, Ordering::SeqCst);
                let free = pool_free.map_or_else(|| "?".to_owned(), |n| n.to_string());
                if listing {
                    ui.print(|| {
                        eline!(
                            "jobrun: {} running, {} held, {} free in the pool:",
                            running.len(),
                            tokens(snap.held),
                            free
                        );
                        for (name, d) in running.iter() {
                            eline!("  {:>8}  {name}", fmt_secs(*d));
                        }
                    });
                } else if ui.bar.is_none() {
                    let mut last = ui.last_plain.lock().expect("not poisoned");
                    if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(4)) {
                        *last = Some(std::time::Instant::now());
                        let heavy: Vec<String> = running
                            .iter()
                            .take(3)
                            .map(|(n, d)| format!("{n} ({})", fmt_secs(*d)))
                            .collect();
                        eline!(
                            "jobrun: {} of {} left, {} running, {} failed, eta {}{}{}",
                            snap.total - snap.counts.finished(),
                            snap.total,
                            snap.counts.running,
                            snap.counts.failed,
                            fmt_secs(*e),
                            if heavy.is_empty() { "" } else { "; longest: " },
                            heavy.join(", ")
                        );
                    }
                }
            }
            _ => {}
        }
        if let Some(bar) = &ui.bar {
            let c = snap.counts;
            bar.set_position(c.finished() as u64);
            let eta = eta2
                .lock()
                .expect("not poisoned")
                .map(|e| format!(", eta {}", fmt_secs(e)))
                .unwrap_or_default();
            let cap = if snap.capacity == u32::MAX {
                String::new()
            } else {
                format!("/{}", snap.capacity)
            };
            bar.set_message(format!(
                "{} running, {} failed, {} held{cap}, {} elapsed{eta}",
                c.running,
                c.failed,
                tokens(snap.held),
                fmt_secs(snap.elapsed),
            ));
        }
    });

    // Signals.
    let controller = runner.controller();
    let interrupted = Arc::new(AtomicI32::new(0));
    let mut sigs = Vec::new();
    for (kind, num) in [
        (SignalKind::interrupt(), 2),
        (SignalKind::terminate(), 15),
        (SignalKind::hangup(), 1),
        (SignalKind::user_defined1(), 10),
        (SignalKind::user_defined2(), 12),
        (SignalKind::quit(), 3),
    ] {
        match signal(kind) {
            Ok(s) => sigs.push((s, num)),
            Err(e) => {
                eline!("jobrun: cannot handle signal {num}: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        }
    }
    for (mut s, num) in sigs {
        let controller = controller.clone();
        let interrupted = interrupted.clone();
        let ui = ui.clone();
        tokio::spawn(async move {
            while s.recv().await.is_some() {
                match num {
                    10 => controller.add_slots(1),
                    12 => controller.add_slots(-1),
                    3 => {
                        ui.list_requested.store(true, Ordering::SeqCst);
                        controller.progress();
                    }
                    _ => {
                        let first = interrupted
                            .compare_exchange(0, num, Ordering::SeqCst, Ordering::SeqCst)
                            .is_ok();
                        if first {
                            controller.stop();
                        } else {
                            controller.kill();
                        }
                    }
                }
            }
        });
    }

    let result = runner.run(graph).await;
    if let Some(bar) = &ui.bar {
        bar.finish_and_clear();
    }
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eline!("jobrun: {e}");
            return ExitCode::from(match e.kind() {
                jobrun::RunErrorKind::Graph | jobrun::RunErrorKind::NoJobserver => EXIT_USAGE,
                _ => EXIT_FAILED,
            });
        }
    };
    if args.dry_run || !report.plan.is_empty() {
        for &(t, _) in &report.plan {
            println!("{}", commands[t]);
        }
        return ExitCode::SUCCESS;
    }
    summary(&report);
    let sig = interrupted.load(Ordering::SeqCst);
    if sig != 0 {
        return ExitCode::from(128 + sig as u8);
    }
    if report.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    }
}

/// Grouped: a header with the task's name, then its output as it was. Line: each line
/// prefixed with the name.
fn write_output(
    out: &mut impl Write,
    grouped: bool,
    name: &str,
    data: &[u8],
) -> std::io::Result<()> {
    if grouped {
        writeln!(out, "--- {name}")?;
        out.write_all(data)?;
        if !data.ends_with(b"\n") {
            out.write_all(b"\n")?;
        }
        return Ok(());
    }
    for line in data.split_inclusive(|&b| b == b'\n') {
        write!(out, "[{name}] ")?;
        out.write_all(line)?;
        if !line.ends_with(b"\n") {
            out.write_all(b"\n")?;
        }
    }
    Ok(())
}

fn summary(report: &Report) {
    let c = report.counts;
    let a = &report.audit;
    let mut line = format!("jobrun: {} ok", c.succeeded);
    if c.failed > 0 {
        line += &format!(", {} failed", c.failed);
    }
    if c.skipped > 0 {
        line += &format!(", {} skipped", c.skipped);
    }
    if c.not_run > 0 {
        line += &format!(", {} not run", c.not_run);
    }
    line += &format!(" in {}", fmt_secs(report.wall));
    eline!("{line}");
    for t in &report.tasks {
        match &t.status {
            Status::Failed(f) => eline!("  failed:  {} ({f})", t.name),
            Status::Skipped { because } => eline!("  skipped: {} (`{because}` failed)", t.name),
            _ => {}
        }
    }
    if !report.critical_path.is_empty() {
        let path = if report.critical_path.len() > 6 {
            let n = report.critical_path.len();
            format!(
                "{} -> {} -> ... ({} more) -> {}",
                report.critical_path[0],
                report.critical_path[1],
                n - 3,
                report.critical_path[n - 1]
            )
        } else {
            report.critical_path.join(" -> ")
        };
        eline!(
            "  critical path ({}): {path}",
            fmt_secs(report.critical_path_cost)
        );
    }
    let pool = match (a.pool_lost, a.pool_extra) {
        _ if a.pool_unchecked => ", pool: could not be counted".to_owned(),
        (Some(0), Some(0)) => ", pool whole".to_owned(),
        (Some(l), Some(x)) => format!(", pool: {l} lost, {x} extra"),
        _ => String::new(),
    };
    eline!(
        "  tokens: {} granted, {} released, {} handed to successors, peak {}; {} bytes read, {} written back{pool}: {}",
        a.ledger.granted,
        a.ledger.released,
        a.ledger.handed_off,
        a.ledger.peak,
        a.bytes_read,
        a.bytes_written,
        if a.is_clean() { "audit clean" } else { "AUDIT FAILED" }
    );
}
