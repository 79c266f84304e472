//! The operating-system layer shared by every driver (tokio, smol, blocking).
//!
//! Public for this workspace's adapters, tests and benches; it is not part of the stable
//! API and may change in any release.
//!
//! Everything here is a thin, synchronous wrapper over one or a few system
//! calls, made through `rustix`. The functions never block on their own except
//! where documented (`write_all` on a descriptor the caller left blocking), and
//! they never change the flags of a description this process merely inherited:
//! see `PROTOCOL.md` §3. The only place that may call `F_SETFL` on an
//! inherited descriptor is the restore path of [`reopen_private`], which puts
//! back flags that it changed by accident if the kernel ever handed out a
//! duplicate instead of a new description.
//!
//! With the `no-procfs` feature (a testing aid) [`reopen_private`] is compiled
//! out as on a platform without `/proc/self/fd`: it always fails with
//! [`io::ErrorKind::Unsupported`].

use std::collections::hash_map::RandomState;
use std::ffi::OsString;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{FileType, Mode, OFlags, Stat};
use rustix::io::{retry_on_intr, Errno, FdFlags};

/// Which end of the jobserver an fd must serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The descriptor is used to take tokens (read bytes).
    Read,
    /// The descriptor is used to give tokens back (write bytes).
    Write,
}

impl Access {
    /// The `open` access mode that serves exactly this end.
    fn open_mode(self) -> OFlags {
        match self {
            Access::Read => OFlags::RDONLY,
            Access::Write => OFlags::WRONLY,
        }
    }

    /// Whether a description opened with `mode` (the `O_ACCMODE` bits) can be
    /// used for this end.
    fn allowed_by(self, mode: OFlags) -> bool {
        match self {
            Access::Read => mode == OFlags::RDONLY || mode == OFlags::RDWR,
            Access::Write => mode == OFlags::WRONLY || mode == OFlags::RDWR,
        }
    }
}

/// Why an inherited fd number cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FdProblem {
    /// Not open in this process (F_GETFD fails with EBADF), or negative.
    Closed,
    /// Open, but not a pipe or fifo (fstat not S_IFIFO).
    NotAPipe,
    /// Open pipe/fifo but opened without the needed access mode (O_ACCMODE via F_GETFL).
    WrongAccessMode,
}

/// The lowest descriptor number this module hands out: 0, 1 and 2 are the standard streams.
///
/// A process that runs with some of them closed (a daemon, or a parent that closed them)
/// would otherwise get a jobserver descriptor there, where the next child spawned with
/// redirected standard streams overwrites it, and where anything printing to "stdout" writes
/// bytes into the jobserver.
pub const MIN_FD: RawFd = 3;

/// Moves `fd` to a number of at least [`MIN_FD`] (`F_DUPFD_CLOEXEC`, then closes the low
/// number); returns it unchanged when it is there already. The new number is close-on-exec
/// and shares the open file description (so its status flags are the same).
pub fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() >= MIN_FD {
        return Ok(fd);
    }
    let high = rustix::io::fcntl_dupfd_cloexec(&fd, MIN_FD)?;
    drop(fd);
    Ok(high)
}

/// Borrows a descriptor number that this process inherited and that no Rust
/// object owns, for read-only queries, or `None` for a negative number.
fn borrow_inherited<'a>(fd: RawFd) -> Option<BorrowedFd<'a>> {
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` is not negative, so it is not the `-1` niche of
    // `BorrowedFd`. The number comes from the environment (`MAKEFLAGS`) and
    // names either nothing or a descriptor inherited across exec that no Rust
    // value owns; callers only hand the borrow to `fcntl(F_GETFD/F_GETFL)` and
    // `fstat`, which do not modify the descriptor and merely fail with EBADF
    // when the number is closed. The borrow never leaves the calling function.
    Some(unsafe { BorrowedFd::borrow_raw(fd) })
}

/// Duplicates an inherited descriptor number into a descriptor this process owns, marked
/// close-on-exec (`F_DUPFD_CLOEXEC`, at [`MIN_FD`] or above). The duplicate shares the
/// inherited open file description, whose flags are left as they are. Prefer
/// [`take_inherited`], which also validates the duplicate.
pub fn dup_inherited(fd: RawFd) -> io::Result<OwnedFd> {
    let borrowed =
        borrow_inherited(fd).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    Ok(rustix::io::fcntl_dupfd_cloexec(borrowed, MIN_FD)?)
}

/// Duplicates the inherited descriptor number `fd` first ([`dup_inherited`]) and then
/// validates the duplicate as [`check_inherited`] does, so that what was checked is exactly
/// what the caller gets: if another thread closes `fd` and the number is reused in between,
/// the duplicate still names the description that was validated. Nothing about the
/// inherited description is changed.
///
/// A closed or negative number is [`FdProblem::Closed`]; any other failure to duplicate
/// (`EMFILE`, say) is returned as an I/O error.
pub fn take_inherited(fd: RawFd, access: Access) -> Result<OwnedFd, TakeError> {
    if fd < 0 {
        return Err(TakeError::Problem(FdProblem::Closed));
    }
    let dup = dup_inherited(fd).map_err(|e| {
        if e.raw_os_error() == Some(Errno::BADF.raw_os_error()) {
            TakeError::Problem(FdProblem::Closed)
        } else {
            TakeError::Io(e)
        }
    })?;
    check_fd(dup.as_fd(), access).map_err(TakeError::Problem)?;
    Ok(dup)
}

/// Why [`take_inherited`] failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum TakeError {
    /// The number cannot serve as a jobserver end.
    Problem(FdProblem),
    /// Duplicating an open descriptor failed (too many open files, say).
    Io(io::Error),
}

/// Checks an inherited fd number WITHOUT changing anything about it: F_GETFD
/// (open?), fstat (S_IFIFO?), F_GETFL access mode (Read needs O_RDONLY or
/// O_RDWR; Write needs O_WRONLY or O_RDWR).
///
/// The number is expected to come from `--jobserver-auth=R,W` and to be owned by
/// no Rust value in this process. A descriptor opened with `O_PATH` (Linux) is
/// reported as [`FdProblem::WrongAccessMode`]: it can neither read nor write.
///
/// The number may be closed and reused between this check and any later use of it:
/// [`take_inherited`] checks a duplicate instead.
pub fn check_inherited(fd: RawFd, access: Access) -> Result<(), FdProblem> {
    let borrowed = borrow_inherited(fd).ok_or(FdProblem::Closed)?;
    check_fd(borrowed, access)
}

/// The checks of [`check_inherited`] on an open descriptor.
fn check_fd(borrowed: BorrowedFd<'_>, access: Access) -> Result<(), FdProblem> {
    rustix::io::fcntl_getfd(borrowed).map_err(|_| FdProblem::Closed)?;
    let stat = rustix::fs::fstat(borrowed).map_err(|e| {
        if e == Errno::BADF {
            FdProblem::Closed
        } else {
            FdProblem::NotAPipe
        }
    })?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::Fifo {
        return Err(FdProblem::NotAPipe);
    }
    let flags = rustix::fs::fcntl_getfl(borrowed).map_err(|_| FdProblem::Closed)?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if flags.contains(OFlags::PATH) {
        return Err(FdProblem::WrongAccessMode);
    }
    if access.allowed_by(flags & OFlags::RWMODE) {
        Ok(())
    } else {
        Err(FdProblem::WrongAccessMode)
    }
}

/// Whether this build can reopen a descriptor through `/proc/self/fd` (Linux and Android,
/// unless the `no-procfs` testing feature compiles it out).
pub const HAS_PROC_REOPEN: bool = cfg!(all(
    any(target_os = "linux", target_os = "android"),
    not(feature = "no-procfs")
));

/// Paths that may name the open descriptor `fd` through the file system and open a NEW
/// description of it. Only candidates: [`reopen_private`] verifies what each one yields.
///
/// Only Linux's `/proc/self/fd/N` qualifies. `/dev/fd/N` is left out everywhere: on Linux it
/// is a link into `/proc/self/fd` (no second chance), and on macOS and the BSDs it usually
/// yields a duplicate of the same description, which could only be told apart from a new
/// one by changing the flags of the shared description for a moment.
fn reopen_candidates(fd: RawFd) -> Vec<String> {
    let mut paths = Vec::with_capacity(1);
    if HAS_PROC_REOPEN {
        paths.push(format!("/proc/self/fd/{fd}"));
    }
    paths
}

fn same_file(a: &Stat, b: &Stat) -> bool {
    a.st_dev == b.st_dev && a.st_ino == b.st_ino
}

fn unsupported(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, msg)
}

/// Opens a NEW open file description of the same pipe/fifo through
/// `/proc/self/fd/N` (Linux), with `O_NONBLOCK | O_CLOEXEC` and the access mode
/// for `access` (`O_RDONLY` / `O_WRONLY`).
///
/// The result is verified to be the same pipe (`st_dev` and `st_ino` equal) and
/// a distinct description: its `O_NONBLOCK` bit is made to differ from the
/// original's, and the original's flags must not follow. If they do, the
/// kernel handed out a duplicate: the original's flags are restored (the only
/// `F_SETFL` this module ever performs on `fd`) and an error of kind
/// [`io::ErrorKind::Unsupported`] is returned. `/proc/self/fd` always gives a new
/// description, so this is a safety net, not a path that is expected to run.
///
/// Elsewhere (macOS, the BSDs, or Linux without `/proc` mounted, or with the
/// `no-procfs` feature) this fails with [`io::ErrorKind::Unsupported`] without
/// touching `fd`; the client then reads the shared description as it is, on a
/// helper thread ([`crate::thread::HelperReactor`]). Other failures, such as
/// `ENXIO` when opening the write side of a pipe that has no reader left, are
/// returned as they are.
///
/// The new descriptor is numbered [`MIN_FD`] or above ([`above_stdio`]).
pub fn reopen_private(fd: BorrowedFd<'_>, access: Access) -> io::Result<OwnedFd> {
    let raw = fd.as_raw_fd();
    let original_stat = rustix::fs::fstat(fd)?;
    let original_flags = rustix::fs::fcntl_getfl(fd)?;
    let open_flags = access.open_mode() | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;

    let mut last_error = None;
    for path in reopen_candidates(raw) {
        let new = match rustix::fs::open(path.as_str(), open_flags, Mode::empty()) {
            Ok(new) => new,
            Err(e) if e == Errno::NOENT || e == Errno::NOTDIR => {
                last_error = Some(format!("{path}: {}", io::Error::from(e)));
                continue;
            }
            Err(e) if cfg!(any(target_os = "linux", target_os = "android")) => {
                let e = io::Error::from(e);
                return Err(io::Error::new(
                    e.kind(),
                    format!("reopening fd {raw} through {path}: {e}"),
                ));
            }
            Err(e) => {
                last_error = Some(format!("{path}: {}", io::Error::from(e)));
                continue;
            }
        };

        let new_stat = rustix::fs::fstat(&new)?;
        if !same_file(&original_stat, &new_stat) {
            return Err(io::Error::other(format!(
                "{path} does not refer to the same pipe as fd {raw}"
            )));
        }

        // Prove the description is distinct: make the O_NONBLOCK bits differ.
        // A shared description cannot show two values at once.
        let mut new_flags = rustix::fs::fcntl_getfl(&new)?;
        if new_flags.contains(OFlags::NONBLOCK) == original_flags.contains(OFlags::NONBLOCK) {
            new_flags.toggle(OFlags::NONBLOCK);
            rustix::fs::fcntl_setfl(&new, new_flags & !OFlags::RWMODE)?;
        }
        let new_now = rustix::fs::fcntl_getfl(&new)?;
        let original_now = rustix::fs::fcntl_getfl(fd)?;
        if new_now.contains(OFlags::NONBLOCK) == original_now.contains(OFlags::NONBLOCK) {
            // A duplicate. Put the original back if our toggle reached it.
            if original_now != original_flags {
                rustix::fs::fcntl_setfl(fd, original_flags & !OFlags::RWMODE)?;
            }
            drop(new);
            return Err(unsupported(format!(
                "{path} yields a duplicate of fd {raw}, not a new open file description; \
                 a private non-blocking reader is not possible on this platform"
            )));
        }
        if !new_now.contains(OFlags::NONBLOCK) {
            rustix::fs::fcntl_setfl(&new, (new_now | OFlags::NONBLOCK) & !OFlags::RWMODE)?;
        }
        if !access.allowed_by(new_now & OFlags::RWMODE) {
            return Err(io::Error::other(format!(
                "{path} was opened with the wrong access mode"
            )));
        }
        return above_stdio(new);
    }
    Err(unsupported(format!(
        "cannot open a private description of fd {raw}: {}",
        last_error.unwrap_or_else(|| "no reopen path on this platform".to_owned())
    )))
}

/// What `open_fifo` found at the path.
#[derive(Debug)]
#[non_exhaustive]
pub enum FifoOpenError {
    /// stat/open failed (not found, permission...).
    Io(io::Error),
    /// The path exists but is neither a fifo nor a character device (e.g. a
    /// regular file): we refuse to write tokens into it. Carries a short
    /// description of the file type ("regular file", "directory", "socket", ...).
    NotAFifo(&'static str),
}

impl std::fmt::Display for FifoOpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FifoOpenError::Io(e) => write!(f, "cannot open the jobserver fifo: {e}"),
            FifoOpenError::NotAFifo(kind) => {
                write!(
                    f,
                    "the jobserver path is a {kind}, not a fifo or character device"
                )
            }
        }
    }
}

impl std::error::Error for FifoOpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FifoOpenError::Io(e) => Some(e),
            FifoOpenError::NotAFifo(_) => None,
        }
    }
}

fn describe(file_type: FileType) -> &'static str {
    match file_type {
        FileType::RegularFile => "regular file",
        FileType::Directory => "directory",
        FileType::Symlink => "symbolic link",
        FileType::Fifo => "fifo",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        _ => "file of unknown type",
    }
}

/// Returns the type of `stat` unless it is one a jobserver may live in.
fn refuse_type(stat: &Stat) -> Option<&'static str> {
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::Fifo | FileType::CharacterDevice => None,
        other => Some(describe(other)),
    }
}

/// Opens a jobserver fifo (or character device) with `O_RDWR | O_NONBLOCK |
/// O_CLOEXEC`: read-write so that EOF can never be seen while we live, and it
/// never blocks on open. The descriptor is numbered [`MIN_FD`] or above.
///
/// The path is `stat`ed first and anything but a fifo or character device is
/// refused BEFORE opening, so a regular file is never opened for writing. The
/// opened descriptor is then `fstat`ed: if it is no longer the file that was
/// checked (type or identity changed in between), it is closed and refused.
pub fn open_fifo(path: &Path) -> Result<OwnedFd, FifoOpenError> {
    let before = rustix::fs::stat(path).map_err(|e| FifoOpenError::Io(e.into()))?;
    if let Some(kind) = refuse_type(&before) {
        return Err(FifoOpenError::NotAFifo(kind));
    }
    let fd = rustix::fs::open(
        path,
        OFlags::RDWR | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )
    .map_err(|e| FifoOpenError::Io(e.into()))?;
    let after = rustix::fs::fstat(&fd).map_err(|e| FifoOpenError::Io(e.into()))?;
    if let Some(kind) = refuse_type(&after) {
        return Err(FifoOpenError::NotAFifo(kind));
    }
    if !same_file(&before, &after) {
        return Err(FifoOpenError::Io(io::Error::other(format!(
            "{} was replaced while it was being opened",
            path.display()
        ))));
    }
    above_stdio(fd).map_err(FifoOpenError::Io)
}

/// Anonymous pipe, both ends O_CLOEXEC, blocking (the server keeps these
/// blocking: they are shared with children). Returns `(read end, write end)`,
/// both numbered [`MIN_FD`] or above ([`above_stdio`]).
///
/// On Apple platforms, which lack `pipe2`, close-on-exec is set right after
/// creation; a `fork` in another thread in between could leak the ends.
pub fn create_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    #[cfg(not(any(
        target_vendor = "apple",
        target_os = "aix",
        target_os = "haiku",
        target_os = "nto"
    )))]
    {
        let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        Ok((above_stdio(r)?, above_stdio(w)?))
    }
    #[cfg(any(
        target_vendor = "apple",
        target_os = "aix",
        target_os = "haiku",
        target_os = "nto"
    ))]
    {
        let (r, w) = rustix::pipe::pipe()?;
        rustix::io::fcntl_setfd(&r, FdFlags::CLOEXEC)?;
        rustix::io::fcntl_setfd(&w, FdFlags::CLOEXEC)?;
        Ok((above_stdio(r)?, above_stdio(w)?))
    }
}

/// Process-wide sequence number for fifo names.
static FIFO_COUNTER: AtomicU64 = AtomicU64::new(0);

/// How many names `create_fifo` tries before giving up.
const FIFO_NAME_ATTEMPTS: u32 = 64;

/// `mkfifo` mode 0600 in `dir` with a unique name
/// `jobserver-fifo-<pid>-<counter>-<n>`, retrying with a new name on `EEXIST`.
/// Returns the path.
///
/// `<counter>` is a process-wide sequence number and `<n>` mixes per-call
/// entropy (std's randomly keyed hasher, a stack address and the clock). If the
/// umask stripped permission bits, the mode is set back to exactly 0600.
/// On Apple platforms, where `rustix` has no `mkfifoat`, libc's `mkfifo` is used.
pub fn create_fifo(dir: &Path) -> io::Result<PathBuf> {
    let pid = std::process::id();
    let marker = 0u8;
    for attempt in 0..FIFO_NAME_ATTEMPTS {
        let counter = FIFO_COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(counter);
        hasher.write_u32(attempt);
        hasher.write_usize(std::ptr::addr_of!(marker) as usize);
        if let Ok(elapsed) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            hasher.write_u128(elapsed.as_nanos());
        }
        let mut name = OsString::from(format!("jobserver-fifo-{pid}-{counter}-"));
        name.push(format!("{:016x}", hasher.finish()));
        let path = dir.join(name);
        match make_fifo(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
        let stat = rustix::fs::stat(&path)?;
        if stat.st_mode & 0o7777 != 0o600 {
            if let Err(e) = rustix::fs::chmod(&path, Mode::RUSR | Mode::WUSR) {
                let _ = rustix::fs::unlink(&path);
                return Err(e.into());
            }
        }
        return Ok(path);
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "could not find a free fifo name in {} after {FIFO_NAME_ATTEMPTS} attempts",
            dir.display()
        ),
    ))
}

#[cfg(not(target_vendor = "apple"))]
fn make_fifo(path: &Path) -> io::Result<()> {
    Ok(rustix::fs::mkfifoat(
        rustix::fs::CWD,
        path,
        Mode::RUSR | Mode::WUSR,
    )?)
}

/// rustix has no `mkfifoat` on Apple platforms: libc's `mkfifo` (libc is already there, as
/// rustix's backend on these platforms).
#[cfg(target_vendor = "apple")]
fn make_fifo(path: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `path` is a NUL-terminated string that outlives the call; mkfifo only reads it.
    if unsafe { libc::mkfifo(path.as_ptr(), 0o600) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A pipe of this process's own with two kinds of description: blocking ones for children,
/// and a private non-blocking one for this process. Made by [`create_split_pipe`].
#[derive(Debug)]
pub struct SplitPipe {
    /// Blocking, close-on-exec, read-only: the read end handed to children.
    pub read: OwnedFd,
    /// Blocking, close-on-exec, write-only: the write end handed to children.
    pub write: OwnedFd,
    /// Non-blocking, close-on-exec, read-write: this process's own description, shared with
    /// nobody (children get `read` and `write`, which are other descriptions).
    pub private: OwnedFd,
}

/// Creates a pipe whose descriptions for children are blocking and whose description for
/// this process is non-blocking, without `/proc`: a fifo is made in `dir` ([`create_fifo`]),
/// opened three times (read-write non-blocking for us, then read-only and write-only
/// blocking, which return at once since our read-write end is both a reader and a writer),
/// checked to be the same fifo each time, and removed again at once. What is left is a pipe
/// without a name, like an anonymous one (`S_IFIFO`), with separate open file descriptions,
/// so that `O_NONBLOCK` on ours never reaches a child (make 4.2 and older, and macOS's make
/// 3.81, fail on a non-blocking read side).
///
/// Every descriptor is numbered [`MIN_FD`] or above. The fifo exists in `dir` only between
/// `mkfifo` and `unlink` (mode 0600); a process killed in between leaves it behind.
///
/// # Errors
///
/// When the fifo cannot be made or opened (an unwritable `dir`, a file system without
/// fifos); nothing is left behind then.
pub fn create_split_pipe(dir: &Path) -> io::Result<SplitPipe> {
    let path = create_fifo(dir)?;
    let result = open_split(&path);
    let removed = rustix::fs::unlink(&path);
    let pipe = result?;
    removed?;
    Ok(pipe)
}

fn open_split(path: &Path) -> io::Result<SplitPipe> {
    let open = |flags: OFlags| -> io::Result<OwnedFd> {
        let fd = rustix::fs::open(
            path,
            flags | OFlags::CLOEXEC | OFlags::NOCTTY,
            Mode::empty(),
        )?;
        above_stdio(fd)
    };
    // Ours first: as a reader and a writer it lets the blocking opens below return at once.
    let private = open(OFlags::RDWR | OFlags::NONBLOCK)?;
    let read = open(OFlags::RDONLY)?;
    let write = open(OFlags::WRONLY)?;
    let want = rustix::fs::fstat(&private)?;
    for fd in [&read, &write] {
        let stat = rustix::fs::fstat(fd)?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::Fifo || !same_file(&want, &stat) {
            return Err(io::Error::other(format!(
                "{} was replaced while it was being opened",
                path.display()
            )));
        }
    }
    Ok(SplitPipe {
        read,
        write,
        private,
    })
}

/// Nanoseconds on the monotonic clock (the clock `std::time::Instant` reads), for timing
/// waits: one clock read, and none of `Instant`'s checked arithmetic on the way to a number.
///
/// Through the C library (its vDSO call on Linux), not rustix's own vDSO lookup, which
/// crashes programs run under valgrind (rustix issue 1559).
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable `timespec`; CLOCK_MONOTONIC is supported on every
    // platform this crate builds for, and a failure leaves `now` at zero.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let secs = u64::try_from(now.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(now.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// One non-blocking read of up to buf.len() bytes; retries EINTR; returns
/// Ok(0) on EOF, Err(WouldBlock) on EAGAIN.
///
/// Whether the call can block depends on the description: it does not block on
/// the descriptors this module opens (`reopen_private`, `open_fifo`).
pub fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    Ok(retry_on_intr(|| rustix::io::read(fd, &mut *buf))?)
}

/// Writes exactly one byte; retries EINTR; Err(WouldBlock) if the pipe is full
/// (fd is non-blocking); never loops forever.
pub fn write_byte(fd: BorrowedFd<'_>, byte: u8) -> io::Result<()> {
    match retry_on_intr(|| rustix::io::write(fd, &[byte]))? {
        0 => Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "write of a jobserver token wrote nothing",
        )),
        _ => Ok(()),
    }
}

/// Writes all of `bytes` (used to preload a pool): loops on short writes and
/// EINTR; if the fd is non-blocking and the pipe is full, returns
/// Err(WouldBlock) with how many were written in the message (no hang).
///
/// On a blocking descriptor a full pipe blocks until a reader makes room, as
/// `write` does; use [`ensure_pipe_capacity`] first, or a non-blocking end.
pub fn write_all(fd: BorrowedFd<'_>, bytes: &[u8]) -> io::Result<()> {
    let mut written = 0;
    while written < bytes.len() {
        match retry_on_intr(|| rustix::io::write(fd, &bytes[written..])) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!(
                        "pipe accepted no more bytes after {written} of {}",
                        bytes.len()
                    ),
                ))
            }
            Ok(n) => written += n,
            Err(e) if e == Errno::AGAIN => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("pipe is full: wrote {written} of {} bytes", bytes.len()),
                ))
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Bytes waiting in the pipe (ioctl FIONREAD).
pub fn bytes_available(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let n = rustix::io::ioctl_fionread(fd)?;
    usize::try_from(n).map_err(io::Error::other)
}

/// Sets or clears FD_CLOEXEC on `fd` via fcntl F_GETFD/F_SETFD.
///
/// Async-signal-safe (it is meant for a `pre_exec` closure, between fork and
/// exec): two system calls, no allocation, no locks; errors are plain OS error
/// codes. `fd` must be a descriptor the caller owns and keeps open for the
/// duration of the call, typically the number of an [`OwnedFd`] held by the
/// spawning parent; only the descriptor-table flag of that number is touched,
/// never the shared open file description.
pub fn set_cloexec(fd: RawFd, cloexec: bool) -> io::Result<()> {
    if fd < 0 {
        return Err(io::Error::from(Errno::BADF));
    }
    // SAFETY: `fd` is not negative (so not the `-1` niche), and the caller
    // guarantees it names a descriptor it owns and keeps open during this
    // call. The borrow is used for `fcntl(F_GETFD/F_SETFD)` only, which change
    // this process's per-descriptor close-on-exec flag and nothing else, and
    // does not outlive the function.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let flags = rustix::io::fcntl_getfd(borrowed)?;
    let wanted = if cloexec {
        flags | FdFlags::CLOEXEC
    } else {
        flags - FdFlags::CLOEXEC
    };
    if wanted != flags {
        rustix::io::fcntl_setfd(borrowed, wanted)?;
    }
    Ok(())
}

/// Capacity assumed for pipes where the kernel cannot be asked.
///
/// 64 KiB is the usual default of Linux, macOS and the BSDs; POSIX itself only
/// promises `PIPE_BUF` (512 bytes) of atomic writes.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const ASSUMED_PIPE_CAPACITY: usize = 4096 * 16;

/// Capacity of the pipe in bytes: `F_GETPIPE_SZ` on Linux.
///
/// Elsewhere the kernel offers no query, and the typical 64 KiB
/// (`4096 * 16`) is returned without looking at `fd`.
pub fn pipe_capacity(fd: BorrowedFd<'_>) -> io::Result<usize> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        Ok(rustix::pipe::fcntl_getpipe_size(fd)?)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = fd;
        Ok(ASSUMED_PIPE_CAPACITY)
    }
}

/// Makes sure the pipe can hold at least `needed` bytes: if the current
/// capacity is smaller, tries `F_SETPIPE_SZ` (Linux) and returns the resulting
/// capacity.
///
/// The result may still be smaller than `needed` when the kernel refuses (for
/// an unprivileged user, above `/proc/sys/fs/pipe-max-size` or over the
/// per-user pipe page limit; or on systems without `F_SETPIPE_SZ`): that is not
/// an error, the caller compares. Only unexpected failures are returned as
/// errors.
pub fn ensure_pipe_capacity(fd: BorrowedFd<'_>, needed: usize) -> io::Result<usize> {
    let current = pipe_capacity(fd)?;
    if current >= needed {
        return Ok(current);
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // The kernel takes at most 2^31 bytes; asking for more is EINVAL.
        const KERNEL_MAX: usize = 1 << 31;
        match rustix::pipe::fcntl_setpipe_size(fd, needed.min(KERNEL_MAX)) {
            Ok(_) => Ok(rustix::pipe::fcntl_getpipe_size(fd)?),
            Err(e) if e == Errno::PERM || e == Errno::NOMEM || e == Errno::BUSY => Ok(current),
            Err(e) => Err(e.into()),
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        Ok(current)
    }
}

/// Sets `O_NONBLOCK` on a descriptor that this process created and owns
/// exclusively (a fifo it opened, or a private description from
/// [`reopen_private`]).
///
/// Never call this on an inherited descriptor: `O_NONBLOCK` lives in the open
/// file description, which is shared with make and every sibling process, and
/// older tools break when it changes under them (`PROTOCOL.md` §3).
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(fd)?;
    if !flags.contains(OFlags::NONBLOCK) {
        rustix::fs::fcntl_setfl(fd, (flags | OFlags::NONBLOCK) & !OFlags::RWMODE)?;
    }
    Ok(())
}

/// Clears `O_NONBLOCK` on a descriptor that this process created and that nobody else
/// shares yet (a new pipe, between a non-blocking preload and the first child).
///
/// Never call this on an inherited descriptor, or on one a child may already have: the flag
/// lives in the open file description (`PROTOCOL.md` §3).
pub fn set_blocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(fd)?;
    if flags.contains(OFlags::NONBLOCK) {
        rustix::fs::fcntl_setfl(fd, (flags - OFlags::NONBLOCK) & !OFlags::RWMODE)?;
    }
    Ok(())
}

/// Whether `O_NONBLOCK` is set on the description now (`F_GETFL`, which changes nothing).
///
/// On a description shared with other processes the answer can change at any time (make
/// 4.3 and later set it on the read side of their pipe), so it only tells how a read made
/// right now would behave.
pub fn is_nonblocking(fd: BorrowedFd<'_>) -> io::Result<bool> {
    Ok(rustix::fs::fcntl_getfl(fd)?.contains(OFlags::NONBLOCK))
}

/// Current file status flags (`F_GETFL`) as raw bits (`O_NONBLOCK`, the access
/// mode, ...), for tests that check an inherited description is unchanged.
pub fn status_flags(fd: BorrowedFd<'_>) -> io::Result<i32> {
    let flags = rustix::fs::fcntl_getfl(fd)?;
    Ok(flags.bits() as i32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    use std::sync::mpsc;
    use std::time::Duration;

    /// A unique path in the temporary directory, removed on drop.
    struct TempPath(PathBuf);

    impl TempPath {
        fn new(tag: &str) -> Self {
            static N: AtomicU64 = AtomicU64::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            TempPath(std::env::temp_dir().join(format!(
                "jobserver-io-sys-test-{}-{tag}-{n}",
                std::process::id()
            )))
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// `reopen_private`, or `None` where the build cannot give a private
    /// description (allowed only without [`HAS_PROC_REOPEN`]).
    fn reopen(fd: BorrowedFd<'_>, access: Access) -> Option<OwnedFd> {
        match reopen_private(fd, access) {
            Ok(new) => Some(new),
            Err(e) if e.kind() == io::ErrorKind::Unsupported && !HAS_PROC_REOPEN => {
                eprintln!("skipped: {e}");
                None
            }
            Err(e) => panic!("reopen_private failed: {e}"),
        }
    }

    fn nonblocking(fd: BorrowedFd<'_>) -> bool {
        status_flags(fd).unwrap() & OFlags::NONBLOCK.bits() as i32 != 0
    }

    /// A descriptor number that is certainly closed and unlikely to be reused
    /// by other tests running in parallel (they take the lowest free numbers).
    fn closed_fd_number() -> RawFd {
        let (r, _w) = create_pipe().unwrap();
        let high = rustix::io::fcntl_dupfd_cloexec(&r, 900).unwrap();
        high.as_raw_fd()
    }

    #[test]
    fn reopen_private_gives_a_distinct_description() {
        let (r, w) = create_pipe().unwrap();
        let r_before = status_flags(r.as_fd()).unwrap();
        let w_before = status_flags(w.as_fd()).unwrap();

        let Some(private_r) = reopen(r.as_fd(), Access::Read) else {
            return;
        };
        let private_w = reopen(w.as_fd(), Access::Write).unwrap();
        assert!(nonblocking(private_r.as_fd()));
        assert!(nonblocking(private_w.as_fd()));
        set_nonblocking(private_r.as_fd()).unwrap();
        assert_eq!(status_flags(r.as_fd()).unwrap(), r_before);
        assert_eq!(status_flags(w.as_fd()).unwrap(), w_before);
        assert!(!nonblocking(r.as_fd()));

        let fd_flags = rustix::io::fcntl_getfd(&private_r).unwrap();
        assert!(fd_flags.contains(FdFlags::CLOEXEC));
        let mode = rustix::fs::fcntl_getfl(&private_r).unwrap() & OFlags::RWMODE;
        assert_eq!(mode, OFlags::RDONLY);
        let mode = rustix::fs::fcntl_getfl(&private_w).unwrap() & OFlags::RWMODE;
        assert_eq!(mode, OFlags::WRONLY);

        // Bytes written through the original come out of the private reader.
        write_byte(w.as_fd(), b'x').unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(read(private_r.as_fd(), &mut buf).unwrap(), 1);
        assert_eq!(buf[0], b'x');
        // And bytes written through the private writer reach the original.
        write_byte(private_w.as_fd(), b'y').unwrap();
        assert_eq!(read(r.as_fd(), &mut buf).unwrap(), 1);
        assert_eq!(buf[0], b'y');
        assert_eq!(
            read(private_r.as_fd(), &mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }

    #[test]
    fn reopen_private_of_a_nonblocking_original() {
        // Exercises the path where the bits must be toggled to prove distinctness.
        let (r, _w) = create_pipe().unwrap();
        set_nonblocking(r.as_fd()).unwrap();
        let before = status_flags(r.as_fd()).unwrap();
        let Some(private) = reopen(r.as_fd(), Access::Read) else {
            return;
        };
        assert!(nonblocking(private.as_fd()));
        assert_eq!(status_flags(r.as_fd()).unwrap(), before);
    }

    #[test]
    fn reopen_private_of_a_fifo() {
        let dir = std::env::temp_dir();
        let path = TempPath(create_fifo(&dir).unwrap());
        let fifo = open_fifo(&path.0).unwrap();
        let Some(private) = reopen(fifo.as_fd(), Access::Read) else {
            return;
        };
        write_byte(fifo.as_fd(), b'+').unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(read(private.as_fd(), &mut buf).unwrap(), 1);
        assert_eq!(buf[0], b'+');
    }

    #[test]
    fn check_inherited_accepts_the_right_ends() {
        let (r, w) = create_pipe().unwrap();
        let before = status_flags(r.as_fd()).unwrap();
        assert_eq!(check_inherited(r.as_raw_fd(), Access::Read), Ok(()));
        assert_eq!(check_inherited(w.as_raw_fd(), Access::Write), Ok(()));
        assert_eq!(status_flags(r.as_fd()).unwrap(), before);
        assert!(rustix::io::fcntl_getfd(&r)
            .unwrap()
            .contains(FdFlags::CLOEXEC));
    }

    #[test]
    fn check_inherited_closed_and_negative() {
        assert_eq!(
            check_inherited(closed_fd_number(), Access::Read),
            Err(FdProblem::Closed)
        );
        assert_eq!(check_inherited(-1, Access::Read), Err(FdProblem::Closed));
        assert_eq!(check_inherited(-2, Access::Write), Err(FdProblem::Closed));
    }

    #[test]
    fn check_inherited_regular_file_is_not_a_pipe() {
        let path = TempPath::new("regular");
        let file = std::fs::File::create(&path.0).unwrap();
        assert_eq!(
            check_inherited(file.as_raw_fd(), Access::Read),
            Err(FdProblem::NotAPipe)
        );
        assert_eq!(
            check_inherited(file.as_raw_fd(), Access::Write),
            Err(FdProblem::NotAPipe)
        );
    }

    #[test]
    fn check_inherited_wrong_access_mode() {
        let (r, w) = create_pipe().unwrap();
        assert_eq!(
            check_inherited(r.as_raw_fd(), Access::Write),
            Err(FdProblem::WrongAccessMode)
        );
        assert_eq!(
            check_inherited(w.as_raw_fd(), Access::Read),
            Err(FdProblem::WrongAccessMode)
        );
    }

    #[test]
    fn check_inherited_read_write_fifo_serves_both_ends() {
        let path = TempPath(create_fifo(&std::env::temp_dir()).unwrap());
        let fifo = open_fifo(&path.0).unwrap();
        assert_eq!(check_inherited(fifo.as_raw_fd(), Access::Read), Ok(()));
        assert_eq!(check_inherited(fifo.as_raw_fd(), Access::Write), Ok(()));
    }

    #[test]
    fn open_fifo_refuses_a_regular_file_and_leaves_it_alone() {
        let path = TempPath::new("notfifo");
        std::fs::File::create(&path.0).unwrap();
        let modified = std::fs::metadata(&path.0).unwrap().modified().unwrap();
        match open_fifo(&path.0) {
            Err(FifoOpenError::NotAFifo(kind)) => assert_eq!(kind, "regular file"),
            other => panic!("expected NotAFifo, got {other:?}"),
        }
        let meta = std::fs::metadata(&path.0).unwrap();
        assert_eq!(meta.len(), 0);
        assert_eq!(meta.modified().unwrap(), modified);
    }

    #[test]
    fn open_fifo_refuses_a_directory_and_reports_missing() {
        match open_fifo(&std::env::temp_dir()) {
            Err(FifoOpenError::NotAFifo(kind)) => assert_eq!(kind, "directory"),
            other => panic!("expected NotAFifo, got {other:?}"),
        }
        let missing = TempPath::new("missing");
        match open_fifo(&missing.0) {
            Err(FifoOpenError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::NotFound),
            other => panic!("expected Io(NotFound), got {other:?}"),
        }
    }

    #[test]
    fn open_fifo_accepts_a_character_device() {
        let fd = open_fifo(Path::new("/dev/null")).unwrap();
        assert!(nonblocking(fd.as_fd()));
    }

    #[test]
    fn open_fifo_without_other_openers_does_not_block() {
        let path = TempPath(create_fifo(&std::env::temp_dir()).unwrap());
        let opened_path = path.0.clone();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let result = open_fifo(&opened_path).map(|fd| {
                let flags = rustix::fs::fcntl_getfl(&fd).unwrap();
                let cloexec = rustix::io::fcntl_getfd(&fd).unwrap();
                (flags, cloexec, fd)
            });
            let _ = tx.send(result);
        });
        let (flags, cloexec, fd) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("open_fifo blocked")
            .unwrap();
        assert_eq!(flags & OFlags::RWMODE, OFlags::RDWR);
        assert!(flags.contains(OFlags::NONBLOCK));
        assert!(cloexec.contains(FdFlags::CLOEXEC));
        // Empty fifo opened read-write: no EOF, just nothing yet.
        let mut buf = [0u8; 1];
        assert_eq!(
            read(fd.as_fd(), &mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        write_byte(fd.as_fd(), b'+').unwrap();
        assert_eq!(bytes_available(fd.as_fd()).unwrap(), 1);
        assert_eq!(read(fd.as_fd(), &mut buf).unwrap(), 1);
    }

    #[test]
    fn read_empty_would_block_and_eof_is_zero() {
        let (r, w) = create_pipe().unwrap();
        set_nonblocking(r.as_fd()).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(
            read(r.as_fd(), &mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        drop(w);
        assert_eq!(read(r.as_fd(), &mut buf).unwrap(), 0);
    }

    #[test]
    fn write_byte_and_bytes_available_count() {
        let (r, w) = create_pipe().unwrap();
        assert_eq!(bytes_available(r.as_fd()).unwrap(), 0);
        for b in [b'a', b'b', b'c'] {
            write_byte(w.as_fd(), b).unwrap();
        }
        assert_eq!(bytes_available(r.as_fd()).unwrap(), 3);
        let mut buf = [0u8; 1];
        assert_eq!(read(r.as_fd(), &mut buf).unwrap(), 1);
        assert_eq!(buf[0], b'a');
        assert_eq!(bytes_available(r.as_fd()).unwrap(), 2);
        write_all(w.as_fd(), b"++++").unwrap();
        assert_eq!(bytes_available(r.as_fd()).unwrap(), 6);
        let mut buf = [0u8; 16];
        assert_eq!(read(r.as_fd(), &mut buf).unwrap(), 6);
        assert_eq!(&buf[..6], b"bc++++");
    }

    #[test]
    #[cfg_attr(
        not(any(target_os = "linux", target_os = "android")),
        ignore = "pipe capacity is only known on Linux"
    )]
    fn write_all_past_capacity_would_block_instead_of_hanging() {
        let (r, w) = create_pipe().unwrap();
        set_nonblocking(w.as_fd()).unwrap();
        let capacity = pipe_capacity(w.as_fd()).unwrap();
        let bytes = vec![b'+'; capacity + 1];
        let err = write_all(w.as_fd(), &bytes).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert!(
            err.to_string().contains(&format!("wrote {capacity} of")),
            "{err}"
        );
        assert_eq!(bytes_available(r.as_fd()).unwrap(), capacity);
        assert_eq!(
            write_byte(w.as_fd(), b'+').unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }

    #[test]
    #[cfg_attr(
        not(any(target_os = "linux", target_os = "android")),
        ignore = "pipe capacity is only known on Linux"
    )]
    fn ensure_pipe_capacity_grows_or_reports() {
        const MIB: usize = 1 << 20;
        let (r, w) = create_pipe().unwrap();
        let initial = pipe_capacity(w.as_fd()).unwrap();
        assert!(initial >= 4096);
        // Asking for no more than there is changes nothing.
        assert_eq!(ensure_pipe_capacity(w.as_fd(), 1).unwrap(), initial);
        let got = ensure_pipe_capacity(w.as_fd(), MIB).unwrap();
        assert!(got >= initial);
        assert_eq!(got, pipe_capacity(w.as_fd()).unwrap());
        if cfg!(target_os = "linux") && got < MIB {
            eprintln!("kernel refused a 1 MiB pipe; capacity stays {got}");
        }
        // The pipe really holds that many bytes.
        set_nonblocking(w.as_fd()).unwrap();
        write_all(w.as_fd(), &vec![b'+'; got]).unwrap();
        assert_eq!(bytes_available(r.as_fd()).unwrap(), got);
        assert_eq!(
            write_byte(w.as_fd(), b'+').unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );

        // A request far above /proc/sys/fs/pipe-max-size is refused for an
        // unprivileged user without an error; either way the answer is the truth.
        let (_r2, w2) = create_pipe().unwrap();
        let got = ensure_pipe_capacity(w2.as_fd(), 256 * MIB).unwrap();
        assert!(got >= initial);
        assert_eq!(got, pipe_capacity(w2.as_fd()).unwrap());
    }

    #[test]
    fn set_cloexec_toggles_only_the_fd_flag() {
        let (r, _w) = create_pipe().unwrap();
        let status = status_flags(r.as_fd()).unwrap();
        set_cloexec(r.as_raw_fd(), false).unwrap();
        assert!(!rustix::io::fcntl_getfd(&r)
            .unwrap()
            .contains(FdFlags::CLOEXEC));
        set_cloexec(r.as_raw_fd(), true).unwrap();
        assert!(rustix::io::fcntl_getfd(&r)
            .unwrap()
            .contains(FdFlags::CLOEXEC));
        assert_eq!(status_flags(r.as_fd()).unwrap(), status);
        assert!(set_cloexec(closed_fd_number(), true).is_err());
    }

    #[test]
    fn create_pipe_is_cloexec_and_blocking() {
        let (r, w) = create_pipe().unwrap();
        for fd in [r.as_fd(), w.as_fd()] {
            assert!(rustix::io::fcntl_getfd(fd)
                .unwrap()
                .contains(FdFlags::CLOEXEC));
            assert!(!nonblocking(fd));
        }
    }

    #[test]
    fn split_pipe_has_blocking_ends_for_children_and_a_private_nonblocking_one() {
        let pipe = create_split_pipe(&std::env::temp_dir()).unwrap();
        // The fifo's name is gone: no link is left to it.
        assert_eq!(rustix::fs::fstat(&pipe.private).unwrap().st_nlink, 0);
        for fd in [pipe.read.as_fd(), pipe.write.as_fd(), pipe.private.as_fd()] {
            assert!(fd.as_raw_fd() >= MIN_FD);
            assert!(rustix::io::fcntl_getfd(fd)
                .unwrap()
                .contains(FdFlags::CLOEXEC));
            let stat = rustix::fs::fstat(fd).unwrap();
            assert_eq!(FileType::from_raw_mode(stat.st_mode), FileType::Fifo);
        }
        assert!(!nonblocking(pipe.read.as_fd()));
        assert!(!nonblocking(pipe.write.as_fd()));
        assert!(nonblocking(pipe.private.as_fd()));
        let mode = |fd: BorrowedFd<'_>| rustix::fs::fcntl_getfl(fd).unwrap() & OFlags::RWMODE;
        assert_eq!(mode(pipe.read.as_fd()), OFlags::RDONLY);
        assert_eq!(mode(pipe.write.as_fd()), OFlags::WRONLY);
        assert_eq!(mode(pipe.private.as_fd()), OFlags::RDWR);
        assert_eq!(check_inherited(pipe.read.as_raw_fd(), Access::Read), Ok(()));
        assert_eq!(
            check_inherited(pipe.write.as_raw_fd(), Access::Write),
            Ok(())
        );

        // One pipe: bytes written through any description come out of any other.
        write_byte(pipe.private.as_fd(), b'a').unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(read(pipe.read.as_fd(), &mut buf).unwrap(), 1);
        assert_eq!(buf[0], b'a');
        write_byte(pipe.write.as_fd(), b'b').unwrap();
        assert_eq!(bytes_available(pipe.private.as_fd()).unwrap(), 1);
        assert_eq!(read(pipe.private.as_fd(), &mut buf).unwrap(), 1);
        assert_eq!(buf[0], b'b');
        assert_eq!(
            read(pipe.private.as_fd(), &mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        // Our description's flags never reach the children's.
        set_nonblocking(pipe.private.as_fd()).unwrap();
        assert!(!nonblocking(pipe.read.as_fd()));

        // A child of ours reopens the inherited end as it would an anonymous pipe's.
        if let Some(private) = reopen(pipe.read.as_fd(), Access::Read) {
            write_byte(pipe.write.as_fd(), b'c').unwrap();
            assert_eq!(read(private.as_fd(), &mut buf).unwrap(), 1);
            assert_eq!(buf[0], b'c');
        }
    }

    #[test]
    fn split_pipe_in_a_missing_directory_fails_cleanly() {
        let missing = TempPath::new("no-such-dir");
        let err = create_split_pipe(&missing.0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    }

    #[test]
    fn create_fifo_makes_unique_private_fifos() {
        let dir = std::env::temp_dir();
        let a = TempPath(create_fifo(&dir).unwrap());
        let b = TempPath(create_fifo(&dir).unwrap());
        assert_ne!(a.0, b.0);
        let prefix = format!("jobserver-fifo-{}-", std::process::id());
        for path in [&a.0, &b.0] {
            assert_eq!(path.parent(), Some(dir.as_path()));
            let name = path.file_name().unwrap().to_str().unwrap();
            assert!(name.starts_with(&prefix), "{name}");
            let meta = std::fs::symlink_metadata(path).unwrap();
            assert!(meta.file_type().is_fifo());
            assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
        }
        drop(a);
        drop(b);
    }
}
