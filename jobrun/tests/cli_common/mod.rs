//! Shared helpers of the `cli_*` end-to-end tests: they run the real `jobrun` binary (and the
//! real GNU make peers) as a user would, each test in a fresh temporary directory, every
//! process bounded by a time limit.
//!
//! - [`TempDir`]: a fresh directory under `std::env::temp_dir()`, removed on drop; its `tmp/`
//!   subdirectory is the `TMPDIR` of every process a test starts, so a fifo left behind can be
//!   seen.
//! - [`Proc`]: a spawned process with stdout and stderr going to files in the directory (so
//!   a test can poll them while it runs and nothing can block on a full pipe), in a process
//!   group of its own; [`Proc::wait`] polls `try_wait` against a deadline and kills the group
//!   and fails the test on timeout. Dropping it kills whatever is left.
//! - [`Spans`]: the `S <id> <ns>` / `E <id> <ns>` lines that tasks append to a shared log
//!   (`date +%s%N`, written after the task started and before it ends, so every logged
//!   interval lies inside the real one: measured concurrency can only be lower than real).
//! - [`Marker`]: a unique `sleep` duration that names a test's long-lived processes in
//!   `/proc/*/cmdline`; dropping it kills any that are left.
//! - [`make43`] / [`make44`]: the peers, found as `tests/src/peers.rs` does; a missing peer
//!   fails the test.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::process::{Pid, Signal};

/// The binary under test.
pub(crate) const JOBRUN: &str = env!("CARGO_BIN_EXE_jobrun");

/// The time limit of one run: far above what any run here needs; it only turns a hang into a
/// failure.
pub(crate) const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Variables that carry a jobserver or make's options: removed from every process a test
/// starts, so that whatever runs the tests (make, cargo) cannot leak into a run.
pub(crate) const MAKE_VARS: [&str; 7] = [
    "MAKEFLAGS",
    "MFLAGS",
    "CARGO_MAKEFLAGS",
    "GNUMAKEFLAGS",
    "MAKELEVEL",
    "MAKE_TERMOUT",
    "MAKE_TERMERR",
];

static SEQ: AtomicUsize = AtomicUsize::new(0);

fn next_seq() -> usize {
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// A fresh directory for one test, removed (with everything in it) on drop.
#[derive(Debug)]
pub(crate) struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `<temp_dir>/jobrun-cli-<label>-<pid>-<n>` and its `tmp/` subdirectory.
    pub(crate) fn new(label: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "jobrun-cli-{label}-{}-{}",
            std::process::id(),
            next_seq()
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(path.join("tmp")).expect("create the test directory");
        TempDir { path }
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside it.
    pub(crate) fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }

    /// The `TMPDIR` of every process the test starts.
    pub(crate) fn tmp(&self) -> PathBuf {
        self.path.join("tmp")
    }

    /// Writes `text` to `name` in the directory; returns the path.
    pub(crate) fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.join(name);
        fs::write(&p, text).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        p
    }

    /// Reads `name`, or "" when it does not exist.
    pub(crate) fn read(&self, name: &str) -> String {
        fs::read_to_string(self.join(name)).unwrap_or_default()
    }

    /// Whether `name` exists.
    pub(crate) fn exists(&self, name: &str) -> bool {
        self.join(name).exists()
    }

    /// The fifos left in the test's `TMPDIR` (jobrun's `jobserver-fifo-*`, make's `GMfifo*`,
    /// anything else).
    pub(crate) fn fifos_in_tmp(&self) -> Vec<String> {
        use std::os::unix::fs::FileTypeExt;
        let mut out = Vec::new();
        for entry in fs::read_dir(self.tmp())
            .expect("read the test TMPDIR")
            .flatten()
        {
            if entry.file_type().is_ok_and(|t| t.is_fifo()) {
                out.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        out
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("JOBRUN_CLI_KEEP").is_some() {
            eprintln!("keeping {}", self.path.display());
            return;
        }
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// A command for `program` that runs in `dir`, with no make variables and `TMPDIR` set to
/// the test's `tmp/`.
pub(crate) fn command(program: impl AsRef<std::ffi::OsStr>, dir: &TempDir) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(dir.path());
    for v in MAKE_VARS {
        cmd.env_remove(v);
    }
    cmd.env("TMPDIR", dir.tmp());
    cmd
}

/// `jobrun` with `args`, as [`command`].
pub(crate) fn jobrun<I, S>(dir: &TempDir, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = command(JOBRUN, dir);
    cmd.args(args);
    cmd
}

/// How a finished process ended, with what it wrote.
#[derive(Debug)]
pub(crate) struct Output {
    /// What ran (for messages).
    pub(crate) label: String,
    /// Its exit status.
    pub(crate) status: ExitStatus,
    /// Its stdout.
    pub(crate) stdout: String,
    /// Its stderr.
    pub(crate) stderr: String,
    /// From spawn to exit seen.
    pub(crate) elapsed: Duration,
}

impl Output {
    /// The exit code (panics when it was killed by a signal).
    pub(crate) fn code(&self) -> i32 {
        match self.status.code() {
            Some(c) => c,
            None => panic!(
                "{} was killed by a signal: {:?}\n{}",
                self.label, self.status, self
            ),
        }
    }

    /// Asserts the exit code.
    pub(crate) fn assert_code(&self, want: i32) {
        assert_eq!(self.code(), want, "exit status of {}\n{self}", self.label);
    }

    /// The stderr lines that contain `needle`.
    pub(crate) fn stderr_lines_with(&self, needle: &str) -> Vec<&str> {
        self.stderr.lines().filter(|l| l.contains(needle)).collect()
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--- {} ({:?} after {:.2?})\n--- stdout:\n{}--- stderr:\n{}---",
            self.label, self.status, self.elapsed, self.stdout, self.stderr
        )
    }
}

/// A running process of a test. Its stdout and stderr go to files in the test directory; it
/// leads a process group of its own. Dropped while running, the group is killed.
#[derive(Debug)]
pub(crate) struct Proc {
    label: String,
    child: Option<Child>,
    pid: i32,
    stdout: PathBuf,
    stderr: PathBuf,
    started: Instant,
}

/// Spawns `cmd` as a [`Proc`], stdin from `/dev/null`, output into `<label>.stdout` and
/// `<label>.stderr` in `dir`.
pub(crate) fn spawn(mut cmd: Command, dir: &TempDir, label: &str) -> Proc {
    let stdout = dir.join(format!("{label}.stdout"));
    let stderr = dir.join(format!("{label}.stderr"));
    let out = File::create(&stdout).expect("create the stdout file");
    let err = File::create(&stderr).expect("create the stderr file");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .process_group(0);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {label} ({cmd:?}): {e}"));
    Proc {
        label: label.to_owned(),
        pid: child.id() as i32,
        child: Some(child),
        stdout,
        stderr,
        started: Instant::now(),
    }
}

/// Runs `cmd` to the end within [`RUN_LIMIT`].
pub(crate) fn run(cmd: Command, dir: &TempDir, label: &str) -> Output {
    spawn(cmd, dir, label).wait(RUN_LIMIT)
}

impl Proc {
    /// Its pid.
    pub(crate) fn pid(&self) -> i32 {
        self.pid
    }

    /// What it wrote to stderr so far.
    pub(crate) fn stderr_so_far(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// What it wrote to stdout so far.
    pub(crate) fn stdout_so_far(&self) -> String {
        fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Sends `sig` to the process itself.
    pub(crate) fn signal(&self, sig: Signal) {
        signal_pid(self.pid, sig);
    }

    /// Whether it has exited (it is then reaped; [`Proc::wait`] still returns its status).
    pub(crate) fn has_exited(&mut self) -> bool {
        let child = self.child.as_mut().expect("not waited for yet");
        matches!(child.try_wait(), Ok(Some(_)))
    }

    /// Waits for it to exit within `limit`; on timeout kills its process group and fails the
    /// test with what it wrote.
    pub(crate) fn wait(mut self, limit: Duration) -> Output {
        let deadline = Instant::now() + limit;
        let mut child = self.child.take().expect("not waited for yet");
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Ok(None) => {
                    kill_group(self.pid);
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "{} did not end within {limit:?}; killed it\n--- stdout:\n{}--- stderr:\n{}",
                        self.label,
                        self.stdout_so_far(),
                        self.stderr_so_far()
                    );
                }
                Err(e) => panic!("waiting for {}: {e}", self.label),
            }
        };
        Output {
            label: self.label.clone(),
            status,
            stdout: self.stdout_so_far(),
            stderr: self.stderr_so_far(),
            elapsed: self.started.elapsed(),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if !matches!(child.try_wait(), Ok(Some(_))) {
                kill_group(self.pid);
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

fn kill_group(pgid: i32) {
    if let Some(pid) = Pid::from_raw(pgid) {
        let _ = rustix::process::kill_process_group(pid, Signal::KILL);
    }
}

/// Sends `sig` to `pid` (a process that is gone is not an error).
pub(crate) fn signal_pid(pid: i32, sig: Signal) {
    if let Some(p) = Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(p, sig);
    }
}

/// Polls `done` every 10 ms until it holds; fails the test with `what` (and `context()`) after
/// `limit`.
pub(crate) fn wait_until(
    limit: Duration,
    what: &str,
    mut done: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() >= deadline {
            panic!(
                "timed out after {limit:?} waiting for {what}\n{}",
                context()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Nanoseconds since the Unix epoch (the clock of `date +%s%N`).
pub(crate) fn epoch_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos()
}

/// Whether `pid` is a live process: `kill(pid, 0)` succeeds and it is not a zombie. (An
/// orphaned grandchild that was killed stays a zombie here until its reaper collects it, and
/// PID 1 of some containers never does; a zombie runs nothing.)
pub(crate) fn is_running(pid: i32) -> bool {
    let Some(p) = Pid::from_raw(pid) else {
        return false;
    };
    match rustix::process::test_kill_process(p) {
        Err(rustix::io::Errno::SRCH) => false,
        Err(_) => true,
        Ok(()) => {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // The state is the first field after the `(comm)` one.
            let state = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next())
                .unwrap_or("?");
            !(state == "Z" || state == "X" || stat.is_empty())
        }
    }
}

/// Processes other than this one whose command line contains `needle`, as `(pid, cmdline)`.
/// Zombies have an empty command line and so never match.
pub(crate) fn procs_with(needle: &str) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(raw) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(needle) {
            out.push((pid, cmdline));
        }
    }
    out
}

/// A unique `sleep` duration (`300.<pid><n>` seconds) that marks a test's long-lived
/// processes: it appears in the command line of every `sh -c` and `sleep` that uses it.
/// Dropping it SIGKILLs whatever still carries it.
#[derive(Debug)]
pub(crate) struct Marker {
    secs: String,
}

impl Marker {
    /// A new marker.
    pub(crate) fn new() -> Marker {
        Marker {
            secs: format!(
                "300.{:07}{:04}",
                std::process::id() % 10_000_000,
                next_seq() % 10_000
            ),
        }
    }

    /// The duration, for `sleep`.
    pub(crate) fn secs(&self) -> &str {
        &self.secs
    }

    /// Live processes carrying it.
    pub(crate) fn live(&self) -> Vec<(i32, String)> {
        procs_with(&self.secs)
    }
}

impl Drop for Marker {
    fn drop(&mut self) {
        for (pid, _) in self.live() {
            signal_pid(pid, Signal::KILL);
        }
    }
}

/// Quotes `s` for `sh` with single quotes.
pub(crate) fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Escapes `$` for a make recipe.
pub(crate) fn make_escape(s: &str) -> String {
    s.replace('$', "$$")
}

/// A shell command that appends `S <id> <ns>` to `log`, sleeps `secs`, then appends
/// `E <id> <ns>`.
pub(crate) fn span_cmd(log: &Path, id: &str, secs: &str) -> String {
    let log = sh_quote(&log.display().to_string());
    format!(
        "echo \"S {id} $(date +%s%N)\" >> {log}; sleep {secs}; echo \"E {id} $(date +%s%N)\" >> {log}"
    )
}

/// A `[[task]]` table; `cmd` goes in a TOML literal string (anything but `'''`).
pub(crate) fn toml_task(name: &str, cmd: &str, extra: &str) -> String {
    assert!(
        !cmd.contains("'''"),
        "cmd {cmd:?} cannot be a TOML literal string"
    );
    let mut s = String::new();
    let _ = writeln!(s, "[[task]]\nname = \"{name}\"\ncmd = '''{cmd}'''");
    if !extra.is_empty() {
        let _ = writeln!(s, "{extra}");
    }
    s.push('\n');
    s
}

/// One task's logged interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Span {
    /// Its id.
    pub(crate) id: String,
    /// Start, ns since the epoch.
    pub(crate) start: u128,
    /// End, ns since the epoch (`None` while it runs or when it was killed).
    pub(crate) end: Option<u128>,
}

/// The spans of a log written by [`span_cmd`] and similar.
#[derive(Debug, Clone)]
pub(crate) struct Spans {
    /// In start order.
    pub(crate) spans: Vec<Span>,
    text: String,
}

impl Spans {
    /// Reads `path` (empty when it does not exist yet), ignoring an unfinished last line.
    pub(crate) fn read(path: &Path) -> Spans {
        let mut text = fs::read_to_string(path).unwrap_or_default();
        // A line still being written (read while the run goes on) is left for the next read.
        let complete = text.rfind('\n').map_or(0, |i| i + 1);
        text.truncate(complete);
        let mut spans: Vec<Span> = Vec::new();
        for line in text.lines() {
            let mut w = line.split_whitespace();
            let (Some(kind), Some(id), Some(ns), None) = (w.next(), w.next(), w.next(), w.next())
            else {
                panic!("bad span line {line:?} in {}:\n{text}", path.display());
            };
            let ns: u128 = ns
                .parse()
                .unwrap_or_else(|_| panic!("bad time in {line:?}:\n{text}"));
            match kind {
                "S" => {
                    assert!(
                        spans.iter().all(|s| s.id != id),
                        "span {id} started twice:\n{text}"
                    );
                    spans.push(Span {
                        id: id.to_owned(),
                        start: ns,
                        end: None,
                    });
                }
                "E" => {
                    let s = spans
                        .iter_mut()
                        .find(|s| s.id == id && s.end.is_none())
                        .unwrap_or_else(|| panic!("span {id} ended but never started:\n{text}"));
                    s.end = Some(ns);
                }
                _ => panic!("bad span line {line:?}:\n{text}"),
            }
        }
        spans.sort_by_key(|s| s.start);
        Spans { spans, text }
    }

    /// How many started.
    pub(crate) fn started(&self) -> usize {
        self.spans.len()
    }

    /// How many ended.
    pub(crate) fn ended(&self) -> usize {
        self.spans.iter().filter(|s| s.end.is_some()).count()
    }

    /// Asserts that every span ended.
    pub(crate) fn assert_all_ended(&self) {
        for s in &self.spans {
            assert!(s.end.is_some(), "span {} never ended:\n{}", s.id, self.text);
        }
    }

    /// The most spans open at once (an end at the same instant as a start comes first).
    pub(crate) fn max_concurrency(&self) -> usize {
        Self::max_of(self.spans.iter())
    }

    /// As [`Spans::max_concurrency`], over the spans whose id starts with `prefix`.
    pub(crate) fn max_concurrency_of(&self, prefix: &str) -> usize {
        Self::max_of(self.spans.iter().filter(|s| s.id.starts_with(prefix)))
    }

    fn max_of<'a>(spans: impl Iterator<Item = &'a Span>) -> usize {
        let mut events: Vec<(u128, i32)> = Vec::new();
        for s in spans {
            events.push((s.start, 1));
            events.push((s.end.unwrap_or(u128::MAX), -1));
        }
        // At equal times, -1 sorts before +1.
        events.sort();
        let (mut cur, mut max) = (0i32, 0i32);
        for (_, d) in events {
            cur += d;
            max = max.max(cur);
        }
        max as usize
    }

    /// The spans open at time `t`, other than `except`.
    pub(crate) fn open_at(&self, t: u128, except: &str) -> Vec<&Span> {
        self.spans
            .iter()
            .filter(|s| s.id != except && s.start <= t && s.end.is_none_or(|e| e > t))
            .collect()
    }

    /// The log's text, for messages.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// The log's text with times relative to the first start, in ms, for messages.
    pub(crate) fn pretty(&self) -> String {
        let t0 = self.spans.first().map_or(0, |s| s.start);
        let ms = |t: u128| (t.saturating_sub(t0)) as f64 / 1e6;
        let mut out = String::new();
        for s in &self.spans {
            let end = s
                .end
                .map_or_else(|| "-".to_owned(), |e| format!("{:.0}", ms(e)));
            let _ = writeln!(out, "  {:<8} {:>7.0} .. {:>7} ms", s.id, ms(s.start), end);
        }
        out
    }
}

/// The lines of make's stderr that say its exit-time token check failed, or that it had
/// trouble with its jobserver.
pub(crate) fn make_token_complaints(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| {
            l.contains("INTERNAL")
                || l.contains("jobserver tokens")
                || l.contains("jobserver unavailable")
                || l.contains("invalid --jobserver-auth")
        })
        .collect()
}

/// Asserts make's exit-time token check was clean.
pub(crate) fn assert_make_tokens_clean(out: &Output) {
    let bad = make_token_complaints(&out.stderr);
    assert!(
        bad.is_empty(),
        "make's exit-time token check (or its jobserver) complained: {bad:?}\n{out}"
    );
}

/// Writes a `Makefile` with these rules (target, recipe lines); recipes are written as given
/// (escape `$` yourself) after a tab.
pub(crate) fn write_makefile(dir: &TempDir, rules: &[(&str, &[String])]) -> PathBuf {
    let mut text = String::new();
    let targets: Vec<&str> = rules.iter().map(|(t, _)| *t).collect();
    let _ = writeln!(text, ".PHONY: {}", targets.join(" "));
    for (target, recipe) in rules {
        let _ = writeln!(text, "{target}:");
        for line in *recipe {
            let _ = writeln!(text, "\t{line}");
        }
    }
    dir.write("Makefile", &text)
}

// The peers (make 4.3, make 4.4.1, ninja) are found by the conformance suite's own lookup,
// which fails the test when one is missing.
#[allow(unused_imports)] // each test file uses some of them
pub(crate) use jobserver_tests::peers::{make43, make44, ninja, workspace_root};
