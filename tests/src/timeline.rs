//! Timelines of token use across processes, and the plumbing that produces them.
//!
//! Every process that holds tokens (the `jobserver-worker` binary, or a test process itself)
//! appends one line per event to a shared log with [`LogWriter`]:
//!
//! ```text
//! <monotonic ns> <+1|-1> <pid>
//! ```
//!
//! `+1` is written right after a token is granted and `-1` right before it is released, so
//! every logged interval lies inside the real one: the concurrency a [`Timeline`] measures can
//! only be lower than the real one, never higher. `CLOCK_MONOTONIC` is system-wide on Linux,
//! so lines from different processes compare.
//!
//! The rest of this module runs peers: a [`TempDir`] per test, a generated `Makefile` or
//! `build.ninja` whose jobs run the worker ([`Worker`]), and [`run`] / [`run_make`], which
//! capture stdout and stderr interleaved, kill the whole process group on a time limit, and
//! (for make) fail on `INTERNAL: Exiting with`.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The time limit of one peer run. Far above what any run needs (about a second); it only
/// turns a hang into a failure.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Variables that carry a jobserver or make options. Removed from every peer's environment so
/// that the jobserver of whatever runs the tests (make, cargo) cannot leak into a run.
pub const MAKE_VARS: [&str; 5] = [
    "MAKEFLAGS",
    "MFLAGS",
    "CARGO_MAKEFLAGS",
    "GNUMAKEFLAGS",
    "MAKELEVEL",
];

/// Nanoseconds on `CLOCK_MONOTONIC`.
pub fn now_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let ns = i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec);
    u64::try_from(ns).expect("CLOCK_MONOTONIC is not negative")
}

/// One direction of a log event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delta {
    /// A token was granted (logged right after).
    Acquired,
    /// A token is about to be released (logged right before).
    Released,
}

impl Delta {
    fn as_str(self) -> &'static str {
        match self {
            Delta::Acquired => "+1",
            Delta::Released => "-1",
        }
    }
}

/// Appends events to a log shared by several processes.
#[derive(Debug)]
pub struct LogWriter {
    file: File,
    pid: u32,
}

impl LogWriter {
    /// Opens (creating if needed) `path` with `O_APPEND`.
    ///
    /// # Errors
    ///
    /// When the file cannot be opened.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().append(true).create(true).open(path)?;
        Ok(LogWriter {
            file,
            pid: std::process::id(),
        })
    }

    /// Appends one event stamped now, as a single `write(2)` (`O_APPEND` keeps lines from
    /// different processes whole).
    ///
    /// # Errors
    ///
    /// When the write fails or is short.
    pub fn event(&self, delta: Delta) -> io::Result<()> {
        let line = format!("{} {} {}\n", now_ns(), delta.as_str(), self.pid);
        let written = (&self.file).write(line.as_bytes())?;
        if written != line.len() {
            return Err(io::Error::other(format!(
                "short write to the log: {written} of {} bytes",
                line.len()
            )));
        }
        Ok(())
    }
}

/// One parsed log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// `CLOCK_MONOTONIC` nanoseconds.
    pub ns: u64,
    /// `+1` or `-1`.
    pub delta: i32,
    /// The process that logged it.
    pub pid: u32,
}

/// The events of a log, in time order (at equal times, releases first).
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    events: Vec<Event>,
}

impl Timeline {
    /// Parses a log.
    ///
    /// # Errors
    ///
    /// A line that is not `<ns> <+1|-1> <pid>`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut events = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let bad = || {
                format!(
                    "log line {}: {line:?} is not `<ns> <+1|-1> <pid>`",
                    number + 1
                )
            };
            let mut words = line.split(' ');
            let (Some(ns), Some(delta), Some(pid), None) =
                (words.next(), words.next(), words.next(), words.next())
            else {
                return Err(bad());
            };
            let delta = match delta {
                "+1" => 1,
                "-1" => -1,
                _ => return Err(bad()),
            };
            events.push(Event {
                ns: ns.parse().map_err(|_| bad())?,
                delta,
                pid: pid.parse().map_err(|_| bad())?,
            });
        }
        // -1 sorts before +1 at equal times: a release and a grant logged in the same
        // nanosecond do not count as overlapping.
        events.sort_by_key(|e| (e.ns, e.delta));
        Ok(Timeline { events })
    }

    /// Reads and parses the log at `path`; a log that was never created is empty.
    ///
    /// # Panics
    ///
    /// When the file cannot be read or a line is malformed.
    pub fn read(path: &Path) -> Self {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => panic!("reading the log {}: {e}", path.display()),
        };
        Self::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The events, in time order.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// How many events (grants plus releases).
    pub fn total_events(&self) -> usize {
        self.events.len()
    }

    /// How many grants (`+1` events).
    pub fn acquisitions(&self) -> usize {
        self.events.iter().filter(|e| e.delta > 0).count()
    }

    /// The processes that logged.
    pub fn pids(&self) -> BTreeSet<u32> {
        self.events.iter().map(|e| e.pid).collect()
    }

    /// The most units held at once, across all processes.
    pub fn max_concurrency(&self) -> usize {
        Self::max_of(self.events.iter())
    }

    /// The most units held at once by process `pid`.
    pub fn max_concurrency_of(&self, pid: u32) -> usize {
        Self::max_of(self.events.iter().filter(|e| e.pid == pid))
    }

    fn max_of<'a>(events: impl Iterator<Item = &'a Event>) -> usize {
        let (mut now, mut max) = (0i64, 0i64);
        for event in events {
            now += i64::from(event.delta);
            max = max.max(now);
        }
        usize::try_from(max).unwrap_or(0)
    }

    /// Checks that every process released as many units as it was granted.
    ///
    /// # Panics
    ///
    /// When a process did not, with the counts.
    pub fn assert_balanced(&self) {
        let mut per_pid: BTreeMap<u32, (usize, usize)> = BTreeMap::new();
        for event in &self.events {
            let entry = per_pid.entry(event.pid).or_default();
            if event.delta > 0 {
                entry.0 += 1;
            } else {
                entry.1 += 1;
            }
        }
        for (pid, (granted, released)) in per_pid {
            assert_eq!(
                granted, released,
                "process {pid} logged {granted} grants but {released} releases"
            );
        }
    }
}

/// A directory of its own for one test, removed on drop (kept, and its path printed, when the
/// test is failing, for the post-mortem).
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `$TMPDIR/jobserver-tests-<label>-<pid>-<n>`.
    ///
    /// # Panics
    ///
    /// When the directory cannot be created.
    pub fn new(label: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "jobserver-tests-{label}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        TempDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("keeping {} for inspection", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// The command line of one `jobserver-worker` run, built argument by argument.
#[derive(Debug, Clone)]
pub struct Worker {
    argv: Vec<OsString>,
}

impl Worker {
    /// A worker run of the binary at `exe` (in an integration test:
    /// `env!("CARGO_BIN_EXE_jobserver-worker")`).
    pub fn new(exe: impl AsRef<OsStr>) -> Self {
        Worker {
            argv: vec![exe.as_ref().to_owned()],
        }
    }

    /// `--driver NAME` (`tokio`, `smol`, `blocking`, `fallback`, `exclusive` or
    /// `jobserver-crate`).
    pub fn driver(self, name: &str) -> Self {
        self.arg("--driver").arg(name)
    }

    /// `--units K`: how many tokens to hold at once.
    pub fn units(self, k: usize) -> Self {
        self.arg("--units").arg(k.to_string())
    }

    /// `--hold-ms N`: how long to hold each.
    pub fn hold_ms(self, ms: u64) -> Self {
        self.arg("--hold-ms").arg(ms.to_string())
    }

    /// `--log PATH`: where to append events.
    pub fn log(self, path: &Path) -> Self {
        self.arg("--log").arg(path)
    }

    /// Any other argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.argv.push(arg.as_ref().to_owned());
        self
    }

    /// The program and its arguments.
    pub fn argv(&self) -> &[OsString] {
        &self.argv
    }

    /// A `Command` for it, with no make variables inherited from the test's environment.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..]);
        clean_env(&mut cmd);
        cmd
    }

    /// The command line quoted for `/bin/sh`.
    pub fn shell_line(&self) -> String {
        let mut line = String::new();
        for (i, arg) in self.argv.iter().enumerate() {
            if i > 0 {
                line.push(' ');
            }
            line.push_str(&shell_quote(arg));
        }
        line
    }
}

/// Quotes one word for `/bin/sh` (single quotes).
pub fn shell_quote(word: &OsStr) -> String {
    let word = String::from_utf8_lossy(word.as_bytes());
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// Whether make should treat a recipe as recursive (`+`): only then does make 4.3 keep the
/// jobserver fds open and make 4.4 not append `--jobserver-auth=-2,-2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plus {
    /// Recipe lines start with `+`.
    Yes,
    /// Recipe lines have no `+`.
    No,
}

/// Writes `dir/Makefile`: a default goal `all` with `recipes` phony targets, each running
/// `worker` once (silently: `@`). Returns its path.
///
/// # Panics
///
/// When the file cannot be written.
pub fn write_makefile(dir: &Path, recipes: usize, plus: Plus, worker: &Worker) -> PathBuf {
    let targets: Vec<String> = (0..recipes).map(|i| format!("job{i}")).collect();
    let prefix = match plus {
        Plus::Yes => "+@",
        Plus::No => "@",
    };
    // `$` is make's expansion character.
    let line = worker.shell_line().replace('$', "$$");
    let mut text = String::new();
    writeln!(text, ".PHONY: all {}", targets.join(" ")).unwrap();
    writeln!(text, "all: {}", targets.join(" ")).unwrap();
    for target in &targets {
        writeln!(text, "{target}:\n\t{prefix}{line}").unwrap();
    }
    let path = dir.join("Makefile");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

/// Writes `dir/build.ninja`: `edges` edges, each running `worker` once, all under the default
/// target. Returns its path.
///
/// # Panics
///
/// When the file cannot be written.
pub fn write_build_ninja(dir: &Path, edges: usize, worker: &Worker) -> PathBuf {
    let targets: Vec<String> = (0..edges).map(|i| format!("job{i}")).collect();
    // `$` is ninja's escape character.
    let line = worker.shell_line().replace('$', "$$");
    let mut text = String::new();
    writeln!(
        text,
        "rule worker\n  command = {line}\n  description = worker $out"
    )
    .unwrap();
    for target in &targets {
        writeln!(text, "build {target}: worker").unwrap();
    }
    writeln!(text, "build all: phony {}", targets.join(" ")).unwrap();
    writeln!(text, "default all").unwrap();
    let path = dir.join("build.ninja");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

/// Removes [`MAKE_VARS`] from `cmd`'s environment.
pub fn clean_env(cmd: &mut Command) -> &mut Command {
    for var in MAKE_VARS {
        cmd.env_remove(var);
    }
    cmd
}

/// What a finished run left behind.
#[derive(Debug)]
pub struct Run {
    /// How it exited.
    pub status: ExitStatus,
    /// Its stdout and stderr, interleaved as written.
    pub output: String,
}

impl Run {
    /// # Panics
    ///
    /// When the run failed, with its output.
    pub fn assert_success(&self, what: &str) {
        assert!(
            self.status.success(),
            "{what} failed ({}); output:\n{}",
            self.status,
            self.output
        );
    }

    /// # Panics
    ///
    /// When the output has a line with make's `INTERNAL: Exiting with N jobserver tokens
    /// available; should be M!` (tokens lost or added; make's status stays 0 for it).
    pub fn assert_no_internal(&self) {
        if let Some(line) = self
            .output
            .lines()
            .find(|l| l.contains("INTERNAL: Exiting with"))
        {
            panic!(
                "make reported unbalanced tokens: {line}\nfull output:\n{}",
                self.output
            );
        }
    }

    /// Lines where a peer warns about the jobserver (make: `warning: jobserver unavailable`,
    /// `-jN forced in submake: resetting jobserver mode`, ...).
    pub fn jobserver_warnings(&self) -> Vec<&str> {
        self.output
            .lines()
            .filter(|l| l.contains("warning") && l.to_ascii_lowercase().contains("jobserver"))
            .collect()
    }

    /// Lines of the output that start with `prefix`.
    pub fn lines_starting_with(&self, prefix: &str) -> Vec<&str> {
        self.output
            .lines()
            .filter(|l| l.starts_with(prefix))
            .collect()
    }
}

/// Runs `cmd` in `dir` to completion: stdin from `/dev/null`, stdout and stderr into one file
/// (so their lines stay in order), in a process group of its own that is killed if the run
/// takes longer than [`RUN_TIMEOUT`].
///
/// `cmd` keeps whatever environment it was given: call [`clean_env`] (or configure a
/// jobserver) first.
///
/// # Panics
///
/// When the command cannot be started, or on the time limit.
pub fn run(cmd: &mut Command, dir: &Path) -> Run {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let out_path = dir.join(format!(
        "output-{}.txt",
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let out =
        File::create(&out_path).unwrap_or_else(|e| panic!("creating {}: {e}", out_path.display()));
    let err = out.try_clone().expect("duplicating the output file");
    cmd.current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {:?}: {e}", cmd.get_program()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for a child") {
            break status;
        }
        if started.elapsed() > RUN_TIMEOUT {
            let pid = rustix::process::Pid::from_child(&child);
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            let _ = child.wait();
            panic!(
                "{:?} did not finish within {RUN_TIMEOUT:?} (killed); output:\n{}",
                cmd.get_program(),
                std::fs::read_to_string(&out_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let output =
        String::from_utf8_lossy(&std::fs::read(&out_path).unwrap_or_default()).into_owned();
    Run { status, output }
}

/// Runs `make` (the binary at `make`) in `dir` on its `Makefile`, with `-jN` when `jobs` is
/// given, then `extra` arguments, in an environment without [`MAKE_VARS`] (so this make is the
/// top-level jobserver). Checks that make did not report unbalanced tokens.
///
/// # Panics
///
/// As [`run`], and on an `INTERNAL: Exiting with` line.
pub fn run_make(make: &Path, dir: &Path, jobs: Option<usize>, extra: &[&str]) -> Run {
    let mut cmd = Command::new(make);
    clean_env(&mut cmd);
    cmd.arg("-f").arg("Makefile");
    if let Some(n) = jobs {
        cmd.arg(format!("-j{n}"));
    }
    cmd.args(extra);
    let run = run(&mut cmd, dir);
    run.assert_no_internal();
    run
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_units_of_several_processes_add_up() {
        let log = "10 +1 1\n20 +1 2\n25 +1 1\n30 -1 2\n40 -1 1\n50 -1 1\n";
        let timeline = Timeline::parse(log).unwrap();
        assert_eq!(timeline.max_concurrency(), 3);
        assert_eq!(timeline.max_concurrency_of(1), 2);
        assert_eq!(timeline.max_concurrency_of(2), 1);
        assert_eq!(timeline.total_events(), 6);
        assert_eq!(timeline.acquisitions(), 3);
        assert_eq!(timeline.pids(), BTreeSet::from([1, 2]));
        timeline.assert_balanced();
    }

    #[test]
    fn lines_out_of_order_are_sorted_by_time() {
        let timeline = Timeline::parse("30 -1 1\n10 +1 1\n20 +1 2\n40 -1 2\n").unwrap();
        assert_eq!(timeline.max_concurrency(), 2);
        assert_eq!(timeline.events()[0].ns, 10);
    }

    #[test]
    fn a_release_and_a_grant_at_the_same_time_do_not_overlap() {
        let timeline = Timeline::parse("10 +1 1\n20 +1 2\n20 -1 1\n30 -1 2\n").unwrap();
        assert_eq!(timeline.max_concurrency(), 1);
    }

    #[test]
    fn malformed_lines_are_rejected() {
        for bad in ["10 +2 1", "10 +1", "x +1 1", "10 +1 1 extra", "10 -1 -3"] {
            assert!(Timeline::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    #[should_panic(expected = "1 grants but 0 releases")]
    fn a_unit_never_released_is_unbalanced() {
        Timeline::parse("10 +1 7\n").unwrap().assert_balanced();
    }

    #[test]
    fn the_writer_appends_parsable_lines() {
        let dir = TempDir::new("timeline-writer");
        let path = dir.join("log");
        let writer = LogWriter::open(&path).unwrap();
        writer.event(Delta::Acquired).unwrap();
        writer.event(Delta::Released).unwrap();
        let timeline = Timeline::read(&path);
        assert_eq!(timeline.total_events(), 2);
        assert_eq!(timeline.pids(), BTreeSet::from([std::process::id()]));
        timeline.assert_balanced();
    }

    #[test]
    fn shell_quoting_survives_quotes() {
        assert_eq!(shell_quote(OsStr::new("a'b c")), r"'a'\''b c'");
    }
}
