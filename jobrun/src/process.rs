//! Child processes: each task in its own process group, its output captured through one
//! pipe, its exit observed without reaping until the rest of its group is killed.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use rustix::process::{Pid, Signal};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc::UnboundedSender;

use crate::sched::TaskId;

/// A message from a task's watcher to the run loop.
#[derive(Debug)]
pub(crate) enum Msg {
    /// One line of output (line mode), newline included when there was one.
    Line(TaskId, Vec<u8>),
    /// The task ended; its process group is gone and it is reaped.
    Done(TaskId, Ended, Vec<u8>),
}

/// How a task's work ended.
#[derive(Debug)]
pub(crate) enum Ended {
    Exited(ExitStatus),
    SpawnFailed(io::Error),
    ClosureOk,
    ClosureErr(String),
    Panicked(String),
    Aborted,
}

/// How output is captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Capture {
    /// Collected and handed over at the end.
    Whole,
    /// Handed over line by line.
    Lines,
    /// Not captured: the child writes to our stdout and stderr.
    None,
}

/// Spawns `cmd` in a process group of its own, stdin from `/dev/null`, stdout and stderr
/// into one pipe (unless not capturing). Returns the child and the pipe's read end.
pub(crate) fn spawn(cmd: &mut Command, capture: Capture) -> io::Result<(Child, Option<OwnedFd>)> {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0).stdin(Stdio::null());
    let read = if capture == Capture::None {
        None
    } else {
        let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let write2 = write.try_clone()?;
        cmd.stdout(Stdio::from(write)).stderr(Stdio::from(write2));
        Some(read)
    };
    let child = cmd.spawn();
    // Drop our copies of the write end (they live in `cmd`'s Stdio) so EOF comes when the
    // task's processes close theirs.
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    Ok((child?, read))
}

/// The words of a shell command line that means the same run directly, without a shell
/// (GNU make's fast path): no quoting, expansion, redirection, control operator, comment or
/// assignment, and a first word that is not a shell builtin or keyword. `None` otherwise.
pub(crate) fn plain_words(cmd: &str) -> Option<Vec<&str>> {
    const SPECIAL: &[char] = &[
        '#', ';', '"', '\'', '*', '?', '[', ']', '&', '|', '<', '>', '(', ')', '{', '}', '$', '`',
        '\\', '^', '~', '!', '=', '%', '\n', '\r',
    ];
    // Builtins and keywords whose meaning a program of the same name would not have
    // (`true`, `echo` and `test` are programs too, and behave the same run directly).
    const SHELL_WORDS: &[&str] = &[
        ".", ":", "alias", "bg", "break", "case", "cd", "command", "continue", "do", "done",
        "elif", "else", "esac", "eval", "exec", "exit", "export", "fc", "fg", "fi", "for",
        "function", "getopts", "hash", "if", "jobs", "local", "read", "readonly", "return",
        "select", "set", "shift", "source", "then", "times", "trap", "type", "typeset", "ulimit",
        "umask", "unalias", "unset", "until", "wait", "while",
    ];
    if cmd.contains(SPECIAL) {
        return None;
    }
    let words: Vec<&str> = cmd.split_ascii_whitespace().collect();
    match words.first() {
        Some(first) if !SHELL_WORDS.contains(first) => Some(words),
        _ => None,
    }
}

/// Sends `sig` to every process in the group led by `pgid`. A group that is gone is not an
/// error.
pub(crate) fn signal_group(pgid: i32, sig: Signal) {
    if let Some(pid) = Pid::from_raw(pgid) {
        let _ = rustix::process::kill_process_group(pid, sig);
    }
}

/// Waits for `child` to exit, collecting its output; then kills whatever it left in its
/// process group (while the unreaped leader still reserves the group id), reaps it, reads
/// the rest of the output and reports.
pub(crate) async fn watch(
    task: TaskId,
    mut child: Child,
    output: Option<OwnedFd>,
    capture: Capture,
    tx: UnboundedSender<Msg>,
) {
    let pgid = child.id() as i32;
    let mut out = Vec::new();
    let mut pipe = match output.map(tokio::net::unix::pipe::Receiver::from_owned_fd) {
        Some(Ok(p)) => Some(p),
        Some(Err(_)) | None => None,
    };
    let mut pending_line = Vec::new();
    let mut buf = vec![0u8; 8192];
    let exited = wait_exit(Pid::from_child(&child));
    tokio::pin!(exited);
    let mut exit_seen = false;
    // Read output while the leader runs.
    while !exit_seen {
        tokio::select! {
            biased;
            r = read_some(&mut pipe, &mut buf) => match r {
                Some(n) => take_output(task, &buf[..n], capture, &mut out, &mut pending_line, &tx),
                None => pipe = None,
            },
            _ = &mut exited => exit_seen = true,
        }
    }
    // Anything left in the group is a straggler (a background grandchild): kill it before
    // reaping, so the group id cannot have been reused.
    signal_group(pgid, Signal::KILL);
    let status = child.wait();
    // The killed stragglers close their copies of the pipe; read to EOF, bounded in case a
    // process that left the group keeps it open.
    if pipe.is_some() {
        let drain = async {
            while let Some(n) = read_some(&mut pipe, &mut buf).await {
                take_output(task, &buf[..n], capture, &mut out, &mut pending_line, &tx);
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
    }
    if !pending_line.is_empty() {
        let _ = tx.send(Msg::Line(task, std::mem::take(&mut pending_line)));
    }
    let ended = match status {
        Ok(s) => Ended::Exited(s),
        Err(e) => Ended::SpawnFailed(e),
    };
    let _ = tx.send(Msg::Done(task, ended, out));
}

fn take_output(
    task: TaskId,
    data: &[u8],
    capture: Capture,
    out: &mut Vec<u8>,
    pending: &mut Vec<u8>,
    tx: &UnboundedSender<Msg>,
) {
    match capture {
        Capture::Whole => out.extend_from_slice(data),
        Capture::Lines => {
            let mut rest = data;
            while let Some(i) = rest.iter().position(|&b| b == b'\n') {
                pending.extend_from_slice(&rest[..=i]);
                let _ = tx.send(Msg::Line(task, std::mem::take(pending)));
                rest = &rest[i + 1..];
            }
            pending.extend_from_slice(rest);
        }
        Capture::None => {}
    }
}

/// Reads some output; `None` at EOF, on an error, or with no pipe (then it never resolves
/// to `Some`, and pends forever once there is no pipe).
async fn read_some(
    pipe: &mut Option<tokio::net::unix::pipe::Receiver>,
    buf: &mut [u8],
) -> Option<usize> {
    match pipe {
        Some(p) => match p.read(buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => Some(n),
        },
        None => std::future::pending().await,
    }
}

/// Resolves when the child has exited, without reaping it.
#[cfg(target_os = "linux")]
async fn wait_exit(pid: Pid) {
    use rustix::process::{pidfd_open, PidfdFlags};
    use tokio::io::unix::AsyncFd;
    use tokio::io::Interest;
    let register = |fd: OwnedFd| {
        // SAFETY: the `OwnedFd` is an open pidfd that only the `AsyncFd` owns; it stays open
        // and names the same process until the `AsyncFd` is dropped.
        unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
    };
    match pidfd_open(pid, PidfdFlags::empty()).map(register) {
        Ok(Ok(fd)) => {
            // A pidfd turns readable when the process exits (it stays a zombie until reaped).
            let _ = fd.readable().await;
        }
        _ => wait_exit_blocking(pid).await,
    }
}

#[cfg(not(target_os = "linux"))]
async fn wait_exit(pid: Pid) {
    wait_exit_blocking(pid).await
}

/// Fallback: `waitid(WEXITED | WNOWAIT)` on the blocking pool.
async fn wait_exit_blocking(pid: Pid) {
    use rustix::process::{waitid, WaitId, WaitIdOptions};
    let _ = tokio::task::spawn_blocking(move || {
        while let Err(rustix::io::Errno::INTR) = waitid(
            WaitId::Pid(pid),
            WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
        ) {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::plain_words;

    #[test]
    fn only_commands_without_shell_syntax_skip_the_shell() {
        assert_eq!(plain_words("true"), Some(vec!["true"]));
        assert_eq!(plain_words("  cc -c  a.c "), Some(vec!["cc", "-c", "a.c"]));
        for shell in [
            "echo $HOME",
            "a && b",
            "sleep 1; echo",
            "x > out",
            "echo 'a b'",
            "FOO=1 make",
            "cd dir",
            "exit 3",
            "ls *.c",
            "echo a\\ b",
            "",
            "   ",
            "wait",
            "echo ~",
        ] {
            assert_eq!(plain_words(shell), None, "{shell:?}");
        }
    }
}

/// An exclusive, non-blocking `flock` on a lock file, held while the value lives.
#[derive(Debug)]
pub(crate) struct LockFile {
    _fd: OwnedFd,
}

/// Tries to lock `path` (creating it and its directory). `Ok(None)` when another holder has
/// it.
pub(crate) fn try_lock(path: &std::path::Path) -> io::Result<Option<LockFile>> {
    use rustix::fs::{flock, open, FlockOperation, Mode, OFlags};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let fd = open(
        path,
        OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )?;
    match flock(fd.as_fd(), FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(LockFile { _fd: fd })),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
