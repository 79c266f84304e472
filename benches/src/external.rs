//! Running the external programs of the `jobrun_*` process benches: the `jobrun` binary,
//! ninja, GNU make and xargs. Included by those benches with `#[path]`.
//!
//! - [`jobrun`] builds the binary with `cargo build --release -p jobrun` (a no-op when it is
//!   up to date) and checks that `jobrun -j2 -- true true` works, so a missing or broken CLI
//!   fails the bench with cargo's or jobrun's own stderr; `JOBRUN=/path/to/jobrun` skips the
//!   build and uses that binary.
//! - [`run`] starts a command in its own process group with a clean environment (no
//!   jobserver leaks in from whatever runs the benches), reaps it with `wait4` for its wall
//!   time and peak RSS, and panics with its stderr when it fails.

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A run that takes longer than this is killed and fails the bench (it only turns a hang
/// into a failure; the longest run is a few seconds).
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// Variables that carry a jobserver or make options: removed from every run's environment.
const MAKE_VARS: [&str; 5] = [
    "MAKEFLAGS",
    "MFLAGS",
    "CARGO_MAKEFLAGS",
    "GNUMAKEFLAGS",
    "MAKELEVEL",
];

// The peers are found by the conformance suite's own lookup (a missing one fails the bench).
#[allow(unused_imports)] // each test file uses some of them
pub(crate) use jobserver_tests::peers::{make43, make44, ninja, workspace_root};

/// An empty scratch directory `target/bench-work/<bench>/<name>` (emptied if it exists).
pub(crate) fn work_dir(bench: &str, name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let target = if target.is_absolute() {
        target
    } else {
        workspace_root().join(target)
    };
    let dir = target.join("bench-work").join(bench).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// The `jobrun` binary: `$JOBRUN`, or built by `cargo build --release -p jobrun`. Either
/// way it must run `jobrun -j2 -- true true` successfully.
///
/// # Panics
///
/// When the build fails or the binary does not work, with the command's output: a bench
/// that needs jobrun fails rather than skipping.
pub(crate) fn jobrun() -> PathBuf {
    let path = match std::env::var_os("JOBRUN") {
        Some(p) => PathBuf::from(p),
        None => build_jobrun(),
    };
    let dir = work_dir("preflight", &std::process::id().to_string());
    let mut cmd = Command::new(&path);
    cmd.args(["-j2", "--", "true", "true"]);
    run(
        &format!("{} -j2 -- true true", path.display()),
        &mut cmd,
        &dir,
        None,
    );
    let _ = std::fs::remove_dir_all(&dir);
    path
}

fn build_jobrun() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "-p",
        "jobrun",
        "--message-format=json",
    ])
    .current_dir(workspace_root())
    .stdin(Stdio::null());
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        cmd.arg("--locked");
    }
    eprintln!("jobrun bench: cargo build --release -p jobrun");
    let out = cmd
        .output()
        .expect("running cargo build --release -p jobrun");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "`cargo build --release -p jobrun` failed ({}); the jobrun benches need the jobrun \
         binary.\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // The artifact message of the `jobrun` binary names its path: no guessing at the target
    // directory.
    stdout
        .lines()
        .filter(|l| l.contains("\"reason\":\"compiler-artifact\"") && l.contains("\"bin\""))
        .find_map(|l| {
            let start = l.find("\"executable\":\"")? + "\"executable\":\"".len();
            let end = start + l[start..].find('"')?;
            Some(PathBuf::from(&l[start..end]))
        })
        .unwrap_or_else(|| {
            panic!(
                "`cargo build --release -p jobrun` built no binary (is the `cli` feature on?)\n\
                 stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// What a finished run measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Finished {
    /// From just before the spawn to just after the reap.
    pub(crate) wall: Duration,
    /// Peak resident set, in KiB: `ru_maxrss` from `wait4`, the largest of the process and
    /// the descendants it waited for (for a runner, its `sh -c` jobs, about 1-2 MiB each, so
    /// in practice the runner's own).
    pub(crate) max_rss_kib: u64,
    /// CPU time the process itself used, user and system, without its children's: from
    /// `/proc/<pid>/stat` while it is a zombie, before it is reaped.
    pub(crate) cpu: Duration,
}

/// Runs `cmd` in `dir` and waits for it: stdin from `stdin` (or `/dev/null`), stdout and
/// stderr to files in `dir`, in a process group of its own, with the make variables removed
/// from its environment (so a jobserver reaches a command only through a make it runs).
///
/// # Panics
///
/// When it cannot start, fails, or runs past [`RUN_TIMEOUT`]; the message has `what`, the
/// exit status, its stderr and the end of its stdout.
pub(crate) fn run(what: &str, cmd: &mut Command, dir: &Path, stdin: Option<&Path>) -> Finished {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let out_path = dir.join(format!("stdout-{n}.txt"));
    let err_path = dir.join(format!("stderr-{n}.txt"));
    let create =
        |p: &Path| File::create(p).unwrap_or_else(|e| panic!("creating {}: {e}", p.display()));
    let input = match stdin {
        Some(p) => {
            Stdio::from(File::open(p).unwrap_or_else(|e| panic!("opening {}: {e}", p.display())))
        }
        None => Stdio::null(),
    };
    for var in MAKE_VARS {
        cmd.env_remove(var);
    }
    cmd.current_dir(dir)
        .stdin(input)
        .stdout(create(&out_path))
        .stderr(create(&err_path))
        .process_group(0);
    let start = Instant::now();
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start {:?}: {e}", cmd.get_program()));
    let pid = child.id() as libc::pid_t;
    let (done, watch) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if watch.recv_timeout(RUN_TIMEOUT) == Err(mpsc::RecvTimeoutError::Timeout) {
            // SAFETY: kill has no memory-safety preconditions; the group is the child's own
            // (process_group(0)), not yet reaped, so the id is still ours.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
    });
    wait_exited(pid);
    let wall = start.elapsed();
    let cpu = own_cpu(pid);
    let (status, usage) = wait4(pid);
    let _ = done.send(());
    let _ = watchdog.join();
    drop(child);
    let status = ExitStatus::from_raw(status);
    if !status.success() {
        let err = std::fs::read_to_string(&err_path).unwrap_or_default();
        let out = std::fs::read_to_string(&out_path).unwrap_or_default();
        let tail: Vec<&str> = out.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "{what} failed ({status}{}) in {}\nstderr:\n{err}\nlast lines of stdout:\n{}",
            if wall >= RUN_TIMEOUT {
                ", killed on the time limit"
            } else {
                ""
            },
            dir.display(),
            tail.join("\n")
        );
    }
    Finished {
        wall,
        max_rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
        cpu,
    }
}

fn wait4(pid: libc::pid_t) -> (i32, libc::rusage) {
    let mut status = 0;
    // SAFETY: `rusage` is a plain C struct of integers, for which all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers are to live locals of the right types; `pid` is our child,
        // reaped only here.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            return (status, usage);
        }
        let e = std::io::Error::last_os_error();
        assert!(
            e.kind() == std::io::ErrorKind::Interrupted,
            "wait4({pid}): {e}"
        );
    }
}

/// Waits until `pid` has exited, leaving it a zombie (`WNOWAIT`), so that its own figures
/// can still be read from `/proc`.
fn wait_exited(pid: libc::pid_t) {
    loop {
        // SAFETY: `siginfo_t` is a plain C struct, for which all-zero is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a live local of the right type; `pid` is our child, not reaped.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r == 0 {
            return;
        }
        let e = std::io::Error::last_os_error();
        assert!(
            e.kind() == std::io::ErrorKind::Interrupted,
            "waitid({pid}): {e}"
        );
    }
}

/// User + system time of `pid` itself, from fields 14 and 15 of `/proc/<pid>/stat` (clock
/// ticks); zero if it cannot be read.
fn own_cpu(pid: libc::pid_t) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // The fields after the command name in parentheses start at field 3.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<u64>().ok());
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    match (ticks(14), ticks(15)) {
        (Some(u), Some(s)) => Duration::from_secs_f64((u + s) as f64 / hz),
        _ => Duration::ZERO,
    }
}

/// Times in seconds, formatted `1.234 s`.
pub(crate) fn fmt_secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}
