//! `jobserver-worker`: a process that joins the jobserver in its environment and holds
//! tokens, run by the cross-process tests from generated Makefiles, `build.ninja` files and
//! `Command`s.
//!
//! ```text
//! jobserver-worker [--driver tokio|smol|blocking|fallback|exclusive|jobserver-crate]
//!                  [--units K] [--hold-ms N]
//!                  [--log PATH] [--report] [--expect-error KIND]
//!                  [--check-parent-fd-flags] [--flip-write-fd-flags]
//!                  [--occupy-jobserver-fds FILE]
//! ```
//!
//! - Default: connects with `Client::from_env()` (a missing jobserver is an error), prints
//!   `connected driver=D mode=M`, then runs `K` concurrent acquires (tasks, or threads for
//!   `blocking` and `jobserver-crate`); each holds its token `N` ms. The first is normally the
//!   process's implicit slot, the others are read from the jobserver.
//! - `--log PATH`: appends `<monotonic ns> <+1|-1> <pid>` right after each grant and right
//!   before each release (see `jobserver_tests::timeline`).
//! - `--report`: prints the outcome of `from_env` and of `from_env_or_new` (mode, error kind
//!   and message, degraded reason), then holds the units with the `from_env_or_new` client.
//! - `--expect-error KIND`: as `--report`, and fails unless `from_env` fails with `KIND` (an
//!   `ErrorKind` name such as `BadFds`) and `from_env_or_new` falls back to `ImplicitOnly`
//!   with that reason.
//! - `--check-parent-fd-flags`: finds the `make` above this process and fails if the status
//!   flags of make's jobserver fds (`/proc/<make>/fdinfo`) or of this process's inherited
//!   fds changed between before connecting and after releasing. `--flip-write-fd-flags`
//!   deliberately toggles `O_NONBLOCK` on the inherited write fd in between (a self-test of
//!   that check; the flags are restored before exit).
//! - `--occupy-jobserver-fds FILE`: before anything else, opens the regular file `FILE` onto
//!   the (closed) descriptor numbers named in `MAKEFLAGS`, and at the end fails if their
//!   status flags, offsets or the file's contents changed.
//!
//! Exits non-zero, with a message on stderr, on any error.

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{Seek, SeekFrom};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use jobserver_io::{Client, Error, Mode};
use jobserver_smol::AsyncIoReactor;
use jobserver_tests::drivers::{Exclusive, Fallback};
use jobserver_tests::timeline::{Delta, LogWriter};
use jobserver_tests::Driver;
use jobserver_tokio::TokioReactor;
use rustix::fs::OFlags;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DriverKind {
    Tokio,
    Smol,
    Blocking,
    Fallback,
    Exclusive,
    JobserverCrate,
}

#[derive(Debug)]
struct Opts {
    driver: DriverKind,
    units: usize,
    hold: Duration,
    log: Option<PathBuf>,
    report: bool,
    expect_error: Option<String>,
    check_parent_fd_flags: bool,
    flip_write_fd_flags: bool,
    occupy: Option<PathBuf>,
}

fn parse_args() -> Result<Opts, String> {
    let mut opts = Opts {
        driver: DriverKind::Tokio,
        units: 1,
        hold: Duration::from_millis(100),
        log: None,
        report: false,
        expect_error: None,
        check_parent_fd_flags: false,
        flip_write_fd_flags: false,
        occupy: None,
    };
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        let arg = arg
            .into_string()
            .map_err(|a| format!("argument {a:?} is not UTF-8"))?;
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        let number = |name: &str, v: std::ffi::OsString| -> Result<u64, String> {
            v.to_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("{name} needs a number, got {v:?}"))
        };
        match arg.as_str() {
            "--driver" => {
                opts.driver = match value("--driver")?.to_str() {
                    Some("tokio") => DriverKind::Tokio,
                    Some("smol") => DriverKind::Smol,
                    Some("blocking") => DriverKind::Blocking,
                    Some("fallback") => DriverKind::Fallback,
                    Some("exclusive") => DriverKind::Exclusive,
                    Some("jobserver-crate") => DriverKind::JobserverCrate,
                    other => {
                        return Err(format!(
                            "unknown driver {other:?} (tokio, smol, blocking, fallback, \
                             exclusive, jobserver-crate)"
                        ))
                    }
                }
            }
            "--units" => {
                let units = number("--units", value("--units")?)?;
                opts.units = usize::try_from(units).map_err(|e| e.to_string())?;
            }
            "--hold-ms" => {
                opts.hold = Duration::from_millis(number("--hold-ms", value("--hold-ms")?)?)
            }
            "--log" => opts.log = Some(PathBuf::from(value("--log")?)),
            "--report" => opts.report = true,
            "--expect-error" => {
                let kind = value("--expect-error")?;
                opts.expect_error = Some(kind.to_string_lossy().into_owned());
            }
            "--check-parent-fd-flags" => opts.check_parent_fd_flags = true,
            "--flip-write-fd-flags" => opts.flip_write_fd_flags = true,
            "--occupy-jobserver-fds" => {
                opts.occupy = Some(PathBuf::from(value("--occupy-jobserver-fds")?))
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if opts.flip_write_fd_flags && !opts.check_parent_fd_flags {
        return Err("--flip-write-fd-flags needs --check-parent-fd-flags".into());
    }
    Ok(opts)
}

fn main() -> ExitCode {
    match parse_args().and_then(|opts| run(&opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("jobserver-worker[{}]: error: {msg}", std::process::id());
            ExitCode::FAILURE
        }
    }
}

fn run(opts: &Opts) -> Result<(), String> {
    let fds = auth_fds();
    // Before anything opens a descriptor of its own, so that the numbers are still free.
    let occupied = match &opts.occupy {
        Some(path) => {
            let fds = fds.ok_or("--occupy-jobserver-fds: MAKEFLAGS names no R,W descriptors")?;
            Some(Occupied::place(path, fds)?)
        }
        None => None,
    };
    let flags = if opts.check_parent_fd_flags {
        let fds = fds.ok_or("--check-parent-fd-flags: MAKEFLAGS names no R,W descriptors")?;
        Some(FdFlagsCheck::before(fds, opts.flip_write_fd_flags)?)
    } else {
        None
    };

    let outcome = match opts.driver {
        DriverKind::Tokio => run_async::<TokioReactor>(opts),
        DriverKind::Smol => run_async::<AsyncIoReactor>(opts),
        DriverKind::Blocking => run_blocking(opts),
        DriverKind::Fallback => run_async::<Fallback>(opts),
        DriverKind::Exclusive => run_async::<Exclusive>(opts),
        DriverKind::JobserverCrate => run_jobserver_crate(opts),
    };

    // Every check runs (and a flipped flag is restored) even when the run failed.
    let flags = flags.map(|check| check.after());
    let occupied = occupied.map(|o| o.verify());
    outcome?;
    if let Some(result) = flags {
        println!("{}", result?);
    }
    if let Some(result) = occupied {
        println!("{}", result?);
    }
    Ok(())
}

/// The last `--jobserver-auth=R,W` (or `--jobserver-fds=`) of the first variable that names a
/// jobserver, as this process's client looks them up; `None` for a fifo or no jobserver.
fn auth_fds() -> Option<(RawFd, RawFd)> {
    for var in ["CARGO_MAKEFLAGS", "MAKEFLAGS", "MFLAGS"] {
        let Ok(value) = std::env::var(var) else {
            continue;
        };
        let mut auth = None;
        for word in value.split_ascii_whitespace() {
            if word == "--" {
                break;
            }
            if let Some(v) = word
                .strip_prefix("--jobserver-auth=")
                .or_else(|| word.strip_prefix("--jobserver-fds="))
            {
                auth = Some(v.to_owned());
            }
        }
        if let Some(auth) = auth {
            let (r, w) = auth.split_once(',')?;
            return Some((r.parse().ok()?, w.parse().ok()?));
        }
    }
    None
}

/// An error with its chain of sources, on one line.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(&format!(" (caused by: {s})"));
        source = s.source();
    }
    text.replace('\n', " ")
}

fn open_log(opts: &Opts) -> Result<Option<Arc<LogWriter>>, String> {
    opts.log
        .as_ref()
        .map(|path| {
            LogWriter::open(path)
                .map(Arc::new)
                .map_err(|e| format!("opening the log {}: {e}", path.display()))
        })
        .transpose()
}

fn log_event(log: &Option<Arc<LogWriter>>, delta: Delta) -> Result<(), String> {
    match log {
        Some(log) => log
            .event(delta)
            .map_err(|e| format!("writing the log: {e}")),
        None => Ok(()),
    }
}

/// What the report prints about a connected client: its mode and why it is degraded.
fn describe(mode: Mode, degraded: Option<&Error>) -> String {
    match degraded {
        Some(err) => format!(
            "mode={mode:?} degraded={:?} message={}",
            err.kind(),
            chain(err)
        ),
        None => format!("mode={mode:?} degraded=none"),
    }
}

/// Connects with `from_env`, or in report mode tries `from_env` and then `from_env_or_new`,
/// printing both outcomes, and returns the second client.
fn connect<C>(
    opts: &Opts,
    from_env: impl Fn() -> Result<C, Error>,
    from_env_or_new: impl Fn(usize) -> Result<C, Error>,
    view: impl Fn(&C) -> (Mode, Option<&Error>),
) -> Result<C, String> {
    if !opts.report && opts.expect_error.is_none() {
        let client = from_env().map_err(|e| {
            format!(
                "Client::from_env failed (ErrorKind::{:?}): {}",
                e.kind(),
                chain(&e)
            )
        })?;
        println!(
            "connected driver={:?} mode={:?}",
            opts.driver,
            view(&client).0
        );
        return Ok(client);
    }
    let first = from_env();
    match &first {
        Ok(client) => println!("from_env: ok mode={:?}", view(client).0),
        Err(e) => println!("from_env: err kind={:?} message={}", e.kind(), chain(e)),
    }
    if let Some(expected) = &opts.expect_error {
        match &first {
            Ok(client) => {
                return Err(format!(
                    "from_env connected (mode {:?}) but ErrorKind::{expected} was expected",
                    view(client).0
                ))
            }
            Err(e) if format!("{:?}", e.kind()) != *expected => {
                return Err(format!(
                    "from_env failed with ErrorKind::{:?}, not {expected}: {}",
                    e.kind(),
                    chain(e)
                ))
            }
            Err(_) => {}
        }
    }
    drop(first);
    let client = from_env_or_new(2).map_err(|e| {
        format!(
            "from_env_or_new failed (ErrorKind::{:?}): {}",
            e.kind(),
            chain(&e)
        )
    })?;
    let (mode, degraded) = view(&client);
    println!("from_env_or_new: ok {}", describe(mode, degraded));
    if let Some(expected) = &opts.expect_error {
        if mode != Mode::ImplicitOnly {
            return Err(format!(
                "from_env_or_new gave mode {mode:?}, not ImplicitOnly"
            ));
        }
        match degraded {
            Some(e) if format!("{:?}", e.kind()) == *expected => {}
            other => {
                return Err(format!(
                    "from_env_or_new's degraded reason is {:?}, not ErrorKind::{expected}",
                    other.map(|e| e.kind())
                ))
            }
        }
    }
    Ok(client)
}

/// Sleeping in each async runtime.
trait AsyncDriver: Driver {
    fn sleep(duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

impl AsyncDriver for TokioReactor {
    fn sleep(duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(tokio::time::sleep(duration))
    }
}

impl AsyncDriver for Fallback {
    fn sleep(duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        TokioReactor::sleep(duration)
    }
}

impl AsyncDriver for Exclusive {
    fn sleep(duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        AsyncIoReactor::sleep(duration)
    }
}

impl AsyncDriver for AsyncIoReactor {
    fn sleep(duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            smol::Timer::after(duration).await;
        })
    }
}

fn run_async<D: AsyncDriver>(opts: &Opts) -> Result<(), String> {
    D::block_on(async {
        let client = connect(
            opts,
            Client::<D>::from_env,
            Client::<D>::from_env_or_new,
            |c: &Client<D>| (c.mode(), c.degraded()),
        )?;
        let log = open_log(opts)?;
        let tasks: Vec<_> = (0..opts.units)
            .map(|_| {
                let (client, log, hold) = (client.clone(), log.clone(), opts.hold);
                D::spawn(async move {
                    let token = client
                        .acquire()
                        .await
                        .map_err(|e| format!("acquiring a token: {}", chain(&e)))?;
                    log_event(&log, Delta::Acquired)?;
                    D::sleep(hold).await;
                    log_event(&log, Delta::Released)?;
                    token
                        .release()
                        .map_err(|e| format!("releasing a token: {}", chain(&e)))
                })
            })
            .collect();
        let mut outcome = Ok(());
        for task in tasks {
            let result = task.await;
            if outcome.is_ok() {
                outcome = result;
            }
        }
        outcome
    })
}

fn run_blocking(opts: &Opts) -> Result<(), String> {
    let client = connect(
        opts,
        jobserver_io::blocking::Client::from_env,
        jobserver_io::blocking::Client::from_env_or_new,
        |c: &jobserver_io::blocking::Client| (c.mode(), c.as_inner().degraded()),
    )?;
    let log = open_log(opts)?;
    let unit = || -> Result<(), String> {
        let token = client
            .acquire()
            .map_err(|e| format!("acquiring a token: {}", chain(&e)))?;
        log_event(&log, Delta::Acquired)?;
        std::thread::sleep(opts.hold);
        log_event(&log, Delta::Released)?;
        token
            .release()
            .map_err(|e| format!("releasing a token: {}", chain(&e)))
    };
    join_threads(opts.units, |_| unit())
}

/// Runs `work(i)` for `i in 0..n` on `n` threads at once; returns the first error.
fn join_threads(n: usize, work: impl Fn(usize) -> Result<(), String> + Sync) -> Result<(), String> {
    std::thread::scope(|s| {
        let work = &work;
        let handles: Vec<_> = (0..n).map(|i| s.spawn(move || work(i))).collect();
        let mut outcome = Ok(());
        for handle in handles {
            let result = handle
                .join()
                .unwrap_or_else(|_| Err("a unit's thread panicked".into()));
            if outcome.is_ok() {
                outcome = result;
            }
        }
        outcome
    })
}

/// The `jobserver` crate as the client: unit 0 runs on the implicit slot (the crate does not
/// model it), the others block in `acquire()`.
fn run_jobserver_crate(opts: &Opts) -> Result<(), String> {
    if opts.report || opts.expect_error.is_some() {
        return Err("--report and --expect-error need one of our drivers".into());
    }
    // SAFETY: the descriptors named in the environment were inherited and are owned by nothing
    // else in this process (no client of ours exists in this mode), and nothing has opened a
    // descriptor yet that could have taken a closed number: the log is opened afterwards.
    // `check_pipe` refuses anything that is not a pipe.
    let from_env = unsafe { jobserver::Client::from_env_ext(true) };
    let client = from_env
        .client
        .map_err(|e| format!("jobserver::Client::from_env_ext failed: {e}"))?;
    println!("connected driver=JobserverCrate");
    let log = open_log(opts)?;
    join_threads(opts.units, |i| {
        let acquired = if i == 0 {
            None
        } else {
            Some(
                client
                    .acquire()
                    .map_err(|e| format!("jobserver crate acquire: {e}"))?,
            )
        };
        log_event(&log, Delta::Acquired)?;
        std::thread::sleep(opts.hold);
        log_event(&log, Delta::Released)?;
        drop(acquired);
        Ok(())
    })
}

/// Borrows a descriptor number inherited from make.
fn inherited(fd: RawFd) -> Result<BorrowedFd<'static>, String> {
    if fd < 0 {
        return Err(format!("descriptor {fd} is negative"));
    }
    // SAFETY: `fd` is not negative. It names a descriptor inherited from make, which no Rust
    // value in this process owns or closes; the borrow is only handed to fcntl
    // (F_GETFD/F_GETFL/F_SETFL), which fails with EBADF if the number is closed.
    Ok(unsafe { BorrowedFd::borrow_raw(fd) })
}

fn status_flags(fd: RawFd) -> Result<OFlags, String> {
    rustix::fs::fcntl_getfl(inherited(fd)?)
        .map_err(|e| format!("fcntl(F_GETFL) on inherited descriptor {fd}: {e}"))
}

/// The `make` process above this one: walks up from the parent until `/proc/<pid>/comm` is
/// `make` (or `make-<version>`).
fn find_make() -> Result<u32, String> {
    let mut pid = rustix::process::getppid()
        .ok_or("this process has no parent")?
        .as_raw_nonzero()
        .get()
        .unsigned_abs();
    for _ in 0..32 {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map_err(|e| format!("reading /proc/{pid}/comm: {e}"))?;
        let comm = comm.trim_end();
        if comm == "make" || comm.starts_with("make-") {
            return Ok(pid);
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_err(|e| format!("reading /proc/{pid}/stat: {e}"))?;
        // `pid (comm) state ppid ...`; comm may contain spaces and parentheses.
        let after = &stat[stat.rfind(')').ok_or("malformed stat")? + 1..];
        let ppid: u32 = after
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no ppid in /proc/{pid}/stat"))?;
        if ppid <= 1 {
            break;
        }
        pid = ppid;
    }
    Err("no `make` process above this one".into())
}

/// The `flags:` of `/proc/<pid>/fdinfo/<fd>`, without `O_CLOEXEC`: fdinfo mixes in the
/// descriptor's close-on-exec bit, which make itself toggles around spawning recursive
/// children; only the open file description's status flags matter here.
fn fdinfo_flags(pid: u32, fd: RawFd) -> Result<u32, String> {
    let path = format!("/proc/{pid}/fdinfo/{fd}");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .ok_or_else(|| format!("no flags: line in {path}"))?;
    let flags = u32::from_str_radix(value.trim(), 8)
        .map_err(|e| format!("{path}: flags {value:?}: {e}"))?;
    Ok(flags & !OFlags::CLOEXEC.bits())
}

#[derive(Debug, PartialEq, Eq)]
struct FdFlags {
    make_read: u32,
    make_write: u32,
    own_read: OFlags,
    own_write: OFlags,
}

impl FdFlags {
    fn take(make: u32, (r, w): (RawFd, RawFd)) -> Result<Self, String> {
        Ok(FdFlags {
            make_read: fdinfo_flags(make, r)?,
            make_write: fdinfo_flags(make, w)?,
            own_read: status_flags(r)?,
            own_write: status_flags(w)?,
        })
    }
}

/// `--check-parent-fd-flags`: the flags of make's jobserver descriptors, and of ours, before
/// connecting.
struct FdFlagsCheck {
    make: u32,
    fds: (RawFd, RawFd),
    before: FdFlags,
    /// `--flip-write-fd-flags`: the original flags of our inherited write descriptor.
    flipped: Option<OFlags>,
}

impl FdFlagsCheck {
    fn before(fds: (RawFd, RawFd), flip: bool) -> Result<Self, String> {
        let make = find_make()?;
        let before = FdFlags::take(make, fds)?;
        let flipped = if flip {
            let original = status_flags(fds.1)?;
            let toggled = (original ^ OFlags::NONBLOCK) & !OFlags::RWMODE;
            rustix::fs::fcntl_setfl(inherited(fds.1)?, toggled)
                .map_err(|e| format!("flipping O_NONBLOCK on descriptor {}: {e}", fds.1))?;
            Some(original)
        } else {
            None
        };
        Ok(FdFlagsCheck {
            make,
            fds,
            before,
            flipped,
        })
    }

    fn after(self) -> Result<String, String> {
        let after = FdFlags::take(self.make, self.fds);
        if let Some(original) = self.flipped {
            let fd = self.fds.1;
            rustix::fs::fcntl_setfl(inherited(fd)?, original & !OFlags::RWMODE)
                .map_err(|e| format!("restoring the flags of descriptor {fd}: {e}"))?;
        }
        let after = after?;
        let (r, w) = self.fds;
        if after != self.before {
            return Err(format!(
                "jobserver descriptor flags changed: make (pid {}) fd {r}: {:o} -> {:o}, fd {w}: \
                 {:o} -> {:o}; this process fd {r}: {:?} -> {:?}, fd {w}: {:?} -> {:?}",
                self.make,
                self.before.make_read,
                after.make_read,
                self.before.make_write,
                after.make_write,
                self.before.own_read,
                after.own_read,
                self.before.own_write,
                after.own_write,
            ));
        }
        Ok(format!(
            "fd-flags-unchanged make_pid={} read_fd={r} read_flags={:o} write_fd={w} write_flags={:o} \
             own_read_nonblock={}",
            self.make,
            after.make_read,
            after.make_write,
            after.own_read.contains(OFlags::NONBLOCK)
        ))
    }
}

/// `--occupy-jobserver-fds`: a regular file opened onto each descriptor number that
/// `MAKEFLAGS` names, with what it looked like before the client ran.
struct Occupied {
    path: PathBuf,
    contents: Vec<u8>,
    /// The file on each number, its status flags and its offset.
    files: Vec<(File, OFlags, u64)>,
}

impl Occupied {
    fn place(path: &std::path::Path, (r, w): (RawFd, RawFd)) -> Result<Self, String> {
        let mut targets = vec![r, w];
        targets.sort_unstable();
        targets.dedup();
        for &fd in &targets {
            if fd < 0 {
                return Err(format!(
                    "MAKEFLAGS names descriptor {fd}: nothing to occupy"
                ));
            }
            if rustix::io::fcntl_getfd(inherited(fd)?).is_ok() {
                return Err(format!(
                    "descriptor {fd} named in MAKEFLAGS is open: the test expects it closed"
                ));
            }
        }
        let contents =
            std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let open = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(|e| format!("opening {}: {e}", path.display()))
        };
        // The kernel hands out the lowest free number: open until each target is reached.
        let mut spare = Vec::new();
        let mut files = Vec::new();
        for &target in &targets {
            loop {
                let mut file = open()?;
                let fd = file.as_raw_fd();
                if fd == target {
                    // A distinctive offset, so that a read or write through it would show.
                    let offset = file.seek(SeekFrom::Start(3)).map_err(|e| e.to_string())?;
                    let flags = rustix::fs::fcntl_getfl(&file).map_err(|e| e.to_string())?;
                    files.push((file, flags, offset));
                    break;
                }
                if fd > target {
                    return Err(format!(
                        "opening {} gave descriptor {fd}, past the target {target}",
                        path.display()
                    ));
                }
                spare.push(file);
            }
        }
        drop(spare);
        Ok(Occupied {
            path: path.to_owned(),
            contents,
            files,
        })
    }

    fn verify(mut self) -> Result<String, String> {
        let mut numbers = Vec::new();
        for (file, flags, offset) in &mut self.files {
            let fd = file.as_raw_fd();
            let now_flags = rustix::fs::fcntl_getfl(&*file).map_err(|e| e.to_string())?;
            let now_offset = file.stream_position().map_err(|e| e.to_string())?;
            if now_flags != *flags || now_offset != *offset {
                return Err(format!(
                    "the file on descriptor {fd} was touched: flags {flags:?} -> {now_flags:?}, \
                     offset {offset} -> {now_offset}"
                ));
            }
            numbers.push(fd.to_string());
        }
        let now = std::fs::read(&self.path).map_err(|e| e.to_string())?;
        if now != self.contents {
            return Err(format!(
                "{} was written to: {:?} -> {:?}",
                self.path.display(),
                String::from_utf8_lossy(&self.contents),
                String::from_utf8_lossy(&now)
            ));
        }
        Ok(format!("occupied-fds-untouched fds={}", numbers.join(",")))
    }
}
