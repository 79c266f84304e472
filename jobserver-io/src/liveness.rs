//! Liveness: noticing, while requests wait, that the jobserver's server is gone.
//!
//! A client never sees end-of-file on a real jobserver: it holds a write end of the pipe
//! itself (and so do make's other children), so the pipe stays open after make is gone and a
//! waiting request would wait forever. Instead, a client found in the environment
//! ([`Client::from_env`](crate::Client::from_env)) watches the server by other means:
//!
//! 1. **The server process.** When connecting, it walks up from its parent through its
//!    ancestors (`/proc/PID/stat`) and takes the farthest one that has the jobserver open
//!    (one of its `/proc/PID/fd/*` is the same pipe or fifo, by device and inode): the
//!    top-level make, or cargo, or whatever created the pool. The walk goes on past an
//!    ancestor that does not hold it only for a fifo, and only when that ancestor's
//!    environment names the fifo (a shell between make 4.4 and this process: make keeps its
//!    fifo descriptors to itself), and gives up after 32 ancestors. The server counts as gone
//!    once that process has exited: `/proc/PID/stat` is missing, is a zombie's, or is
//!    another process's (the start time differs, so a reused pid is not mistaken for it).
//! 2. **The parent, when no server was found.** For a pipe, when no ancestor holds it (no
//!    `/proc`, or another user's processes): the server counts as gone once this process's
//!    parent has changed (`getppid()`), that is once the process that started it has exited
//!    and this one was reparented.
//! 3. **The fifo's path.** For a fifo, in addition: the server counts as gone once the path
//!    no longer names the fifo that was opened (removed, as make 4.4 does when it exits, or
//!    replaced).
//!
//! The first check that finds the server gone fails every waiting request that cannot be
//! met with [`ErrorKind::ServerGone`](crate::ErrorKind::ServerGone), and every later one
//! (the implicit slot still works). Tokens held are still written back when released, so
//! whoever still uses the pipe loses none.
//!
//! # When the checks run, and what they cost
//!
//! The walk of step 1 runs once, in `from_env`: a few reads of `/proc` per ancestor visited
//! (usually two or three: this process's parent, make, make's parent), and a `stat` per
//! descriptor each of them has open. Measured at 0.23-0.46 ms under make 4.3 and 4.4.1
//! (direct recipe and under `sh`, 2-vCPU VM), about half of `from_env`'s time.
//!
//! The checks run only while some request waits, every [`PERIOD`] (500 ms), on the
//! process-wide timer thread ([`crate::timer`]); the application does nothing for them. A
//! request granted at its first poll (the fast path) never arms them. A request that has to
//! wait arms them once (when it first goes pending, if they are not armed already); each
//! check then costs one read of `/proc/PID/stat` (or one `getppid`) plus, for a fifo, one
//! `stat` of its path, and re-arms itself only while requests still wait. So a waiter
//! learns that make is gone within about 500 ms.
//!
//! # Limits
//!
//! A server that is not an ancestor (a daemon serving a fifo or character device, say) can
//! only be noticed by its fifo's path. A process whose parent exits while the real server
//! lives is not affected when the server was found (step 1); without it (step 2) it would
//! be told the server is gone.

use std::ffi::OsStr;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};

use crate::driver::{Reactor, Shared};
use crate::timer;

/// How often the checks run while a request waits.
pub(crate) const PERIOD: Duration = Duration::from_millis(500);

/// How many ancestors the walk looks at, at most.
const MAX_ANCESTORS: usize = 32;

/// A file's identity: device and inode.
type FileId = (u64, u64);

/// A process, told apart from a later one with the same pid by its start time.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Process {
    pid: i32,
    /// Field 22 of `/proc/PID/stat`, in clock ticks since boot.
    start: u64,
    /// Its command name, for messages.
    comm: String,
}

#[derive(Debug)]
enum Watch {
    /// The server process found by the walk.
    Server(Process),
    /// No server found: the parent this process had when it connected.
    Parent(i32),
    /// Nothing to watch but the fifo's path.
    Nothing,
}

/// What a client watches, fixed when it connects.
#[derive(Debug)]
pub(crate) struct Probe {
    watch: Watch,
    /// A fifo's path and the identity of the fifo that was opened.
    fifo: Option<(PathBuf, FileId)>,
}

impl Probe {
    /// A probe for a client of the anonymous pipe whose descriptor (either end) is `fd`.
    pub(crate) fn pipe(fd: BorrowedFd<'_>) -> Probe {
        let server = file_id(fd).and_then(|id| find_server(id, None));
        Probe {
            watch: match server {
                Some(process) => Watch::Server(process),
                None => parent().map_or(Watch::Nothing, Watch::Parent),
            },
            fifo: None,
        }
    }

    /// A probe for a client of the fifo at `path`, opened as `fd`.
    pub(crate) fn fifo(fd: BorrowedFd<'_>, path: &Path) -> Probe {
        let id = file_id(fd);
        let mention = fifo_mention(path.as_os_str());
        let server = id.and_then(|id| find_server(id, Some(&mention)));
        Probe {
            watch: server.map_or(Watch::Nothing, Watch::Server),
            fifo: id.map(|id| (path.to_owned(), id)),
        }
    }

    /// Whether the server looks gone, and why.
    fn check(&self) -> Option<String> {
        match &self.watch {
            Watch::Server(process) => {
                if !is_alive(process) {
                    return Some(format!(
                        "the process that owns the jobserver ({}, pid {}) has exited",
                        process.comm, process.pid
                    ));
                }
            }
            Watch::Parent(ppid) => {
                if parent() != Some(*ppid) {
                    return Some(format!(
                        "the process that started this one and handed it the jobserver (pid \
                         {ppid}) has exited"
                    ));
                }
            }
            Watch::Nothing => {}
        }
        if let Some((path, id)) = &self.fifo {
            match std::fs::metadata(path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Some(format!(
                        "the jobserver fifo {} was removed (its make has exited)",
                        path.display()
                    ));
                }
                Ok(meta) if (meta.dev(), meta.ino()) != *id => {
                    return Some(format!(
                        "the jobserver fifo {} was replaced by another file",
                        path.display()
                    ));
                }
                _ => {}
            }
        }
        None
    }
}

fn file_id(fd: BorrowedFd<'_>) -> Option<FileId> {
    let file = std::fs::File::from(fd.try_clone_to_owned().ok()?);
    let meta = file.metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

fn parent() -> Option<i32> {
    rustix::process::getppid().map(|pid| rustix::process::Pid::as_raw(Some(pid)))
}

/// `fifo:PATH` as make writes it in `MAKEFLAGS` (blanks and backslashes escaped).
fn fifo_mention(path: &OsStr) -> Vec<u8> {
    let mut out = b"fifo:".to_vec();
    for &b in path.as_bytes() {
        if matches!(b, b' ' | b'\t' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

/// What `/proc/PID/stat` says: state, parent, start time.
struct Stat {
    state: u8,
    ppid: i32,
    start: u64,
    comm: String,
}

fn stat(pid: i32) -> std::io::Result<Stat> {
    let text = std::fs::read(format!("/proc/{pid}/stat"))?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "unexpected /proc stat");
    // `pid (comm) state ppid ...`: comm may hold spaces and parentheses, so cut at the last `)`.
    let open = text.iter().position(|&b| b == b'(').ok_or_else(bad)?;
    let close = text.iter().rposition(|&b| b == b')').ok_or_else(bad)?;
    let comm = String::from_utf8_lossy(text.get(open + 1..close).ok_or_else(bad)?).into_owned();
    let rest = std::str::from_utf8(&text[close + 1..]).map_err(|_| bad())?;
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // Field 3 (state) is fields[0]; field 4 (ppid) fields[1]; field 22 (starttime) fields[19].
    Ok(Stat {
        state: fields
            .first()
            .and_then(|s| s.bytes().next())
            .ok_or_else(bad)?,
        ppid: fields.get(1).and_then(|s| s.parse().ok()).ok_or_else(bad)?,
        start: fields
            .get(19)
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?,
        comm,
    })
}

/// Whether `process` still runs. Only a definite answer counts as exited: a stat that
/// cannot be read for another reason than the process being gone says "alive".
fn is_alive(process: &Process) -> bool {
    match stat(process.pid) {
        Ok(s) => s.start == process.start && !matches!(s.state, b'Z' | b'X' | b'x'),
        Err(e) => e.kind() != std::io::ErrorKind::NotFound,
    }
}

/// Whether `pid` has `id` open.
fn holds(pid: i32, id: FileId) -> bool {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    dir.flatten().any(|entry| {
        std::fs::metadata(entry.path()).is_ok_and(|meta| (meta.dev(), meta.ino()) == id)
    })
}

/// Whether `pid`'s environment holds `text`.
fn environment_mentions(pid: i32, text: &[u8]) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.windows(text.len()).any(|w| w == text))
}

/// The farthest ancestor that has `id` open (see the module docs for the walk).
fn find_server(id: FileId, fifo_mention: Option<&[u8]>) -> Option<Process> {
    let mut found = None;
    let mut pid = parent()?;
    for _ in 0..MAX_ANCESTORS {
        if pid <= 1 {
            break;
        }
        let Ok(s) = stat(pid) else {
            break;
        };
        if holds(pid, id) {
            found = Some(Process {
                pid,
                start: s.start,
                comm: s.comm,
            });
        } else if !fifo_mention.is_some_and(|text| environment_mentions(pid, text)) {
            break;
        }
        pid = s.ppid;
    }
    found
}

/// The liveness state of one client (and its clones): what to watch, whether a check is
/// armed, and what was found.
#[derive(Debug, Default)]
pub(crate) struct Liveness {
    probe: OnceLock<Probe>,
    /// A check is scheduled on the timer.
    armed: AtomicBool,
    /// Why the server was found gone, once it was.
    gone: OnceLock<String>,
}

impl Liveness {
    /// Sets what to watch (once; a second probe is ignored).
    pub(crate) fn set_probe(&self, probe: Probe) {
        let _ = self.probe.set(probe);
    }

    /// The message of the [`ServerGone`](crate::ErrorKind::ServerGone) error of a request
    /// failed by a check.
    pub(crate) fn message(&self) -> String {
        let reason = self.gone.get().map_or(
            "the server that owns the jobserver has exited",
            String::as_str,
        );
        format!(
            "{reason}, so no more tokens will come, although the jobserver is still open: stop \
             starting jobs, give back the tokens held, and exit"
        )
    }
}

/// Arms the checks of `shared`'s client if it has a probe and they are not armed yet. Called
/// when a request first goes pending.
pub(crate) fn watch<R: Reactor>(shared: Option<&Arc<Shared<R>>>) {
    let Some(shared) = shared else {
        return;
    };
    let liveness = &shared.liveness;
    if liveness.probe.get().is_none() || liveness.gone.get().is_some() {
        return;
    }
    // A look before the swap: while a check is armed (nearly always, with requests
    // waiting), the many requests that go pending share the flag's cache line unwritten.
    if !liveness.armed.load(Ordering::Relaxed) && !liveness.armed.swap(true, Ordering::SeqCst) {
        schedule(shared);
    }
}

fn schedule<R: Reactor>(shared: &Arc<Shared<R>>) {
    let tick = Waker::from(Arc::new(Tick {
        shared: Arc::downgrade(shared),
    }));
    match timer::wake_at(Instant::now() + PERIOD, tick) {
        Ok(handle) => handle.detach(),
        // No timer thread: no checks, as without a probe; the next waiter tries again.
        Err(_) => shared.liveness.armed.store(false, Ordering::SeqCst),
    }
}

/// The timer's waker: runs one check.
struct Tick<R: Reactor> {
    shared: Weak<Shared<R>>,
}

impl<R: Reactor> Wake for Tick<R> {
    fn wake(self: Arc<Self>) {
        if let Some(shared) = self.shared.upgrade() {
            check(&shared);
        }
    }
}

fn check<R: Reactor>(shared: &Arc<Shared<R>>) {
    let liveness = &shared.liveness;
    // Disarmed first: a request that goes pending from now on arms a new check itself.
    liveness.armed.store(false, Ordering::SeqCst);
    if shared.lock().machine.stats().waiting == 0 {
        return;
    }
    let Some(probe) = liveness.probe.get() else {
        return;
    };
    if let Some(reason) = probe.check() {
        let _ = liveness.gone.set(reason);
        shared.server_gone();
        return;
    }
    if !liveness.armed.swap(true, Ordering::SeqCst) {
        schedule(shared);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_reads_this_process() {
        let me = stat(i32::try_from(std::process::id()).unwrap()).unwrap();
        assert!(b"RSD".contains(&me.state), "alive: {}", me.state as char);
        assert_eq!(Some(me.ppid), parent());
        assert!(me.start > 0);
    }

    #[test]
    fn a_process_that_is_gone_or_reused_is_not_alive() {
        let me = stat(i32::try_from(std::process::id()).unwrap()).unwrap();
        let mut this = Process {
            pid: i32::try_from(std::process::id()).unwrap(),
            start: me.start,
            comm: me.comm,
        };
        assert!(is_alive(&this));
        this.start += 1;
        assert!(!is_alive(&this), "another process with the same pid");

        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let start = stat(pid).map(|s| s.start).unwrap_or(0);
        let process = Process {
            pid,
            start,
            comm: "true".into(),
        };
        // Exited but not reaped: a zombie is not alive.
        let deadline = Instant::now() + Duration::from_secs(10);
        while stat(pid).is_ok_and(|s| s.state != b'Z') {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(!is_alive(&process), "a zombie");
        child.wait().unwrap();
        assert!(!is_alive(&process), "reaped");
    }

    #[test]
    fn fifo_mentions_are_escaped_as_make_writes_them() {
        assert_eq!(
            fifo_mention(OsStr::new("/tmp/a b\\c")),
            b"fifo:/tmp/a\\ b\\\\c"
        );
    }

    #[test]
    fn no_ancestor_holds_a_pipe_of_this_process() {
        let (read, _write) = rustix::pipe::pipe().unwrap();
        let id = file_id(std::os::fd::AsFd::as_fd(&read)).unwrap();
        assert_eq!(find_server(id, None), None);
        let probe = Probe::pipe(std::os::fd::AsFd::as_fd(&read));
        assert!(matches!(probe.watch, Watch::Parent(p) if Some(p) == parent()));
        assert_eq!(probe.check(), None, "the parent is still there");
    }
}
