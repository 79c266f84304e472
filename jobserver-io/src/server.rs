//! The server: a token pool of our own, handed to the children we spawn.

use std::ffi::OsStr;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use jobserver_proto::makeflags::{Jobs, MakeFlags};
use jobserver_proto::{Machine, PoolPlan, Report, Resize, DEFAULT_TOKEN_BYTE};

use crate::client::{private_conn, shared_conn, try_dup, ChildEnv, Client, Mode};
use crate::driver::{Reactor, Shared};
use crate::error::{Error, ErrorKind};
use crate::options::ClientOptions;
use crate::signals::RemoveOnSignal;
use crate::sys::{self, Access, FifoOpenError};
use crate::thread::HelperReactor;

enum Pool {
    Pipe {
        /// The ends handed to children: blocking descriptions (make 4.2 and older, and
        /// macOS's make 3.81, need a blocking read side), shared with them once a child is
        /// spawned, so their flags are never changed after creation.
        read: Arc<OwnedFd>,
        write: Arc<OwnedFd>,
        /// This process's own way into the same pipe.
        own: Own,
    },
    Fifo(Arc<FifoFile>),
}

/// How the server and its clients reach a pipe pool, by what creating it could give.
enum Own {
    /// A private non-blocking description, shared with no other process: read-write (a
    /// split pipe, [`sys::create_split_pipe`]), or a reader and a writer (reopened through
    /// `/proc/self/fd`).
    Private {
        reader: OwnedFd,
        writer: Option<OwnedFd>,
    },
    /// Nothing private (no fifo could be made and no `/proc/self/fd`): the children's
    /// blocking descriptions, read through a helper thread (a read there may block) and
    /// written only where `poll` shows room.
    Shared(HelperReactor),
}

/// How [`Server::new`] makes its pipe; tried in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PipeSetup {
    /// A fifo opened three times and removed at once ([`sys::create_split_pipe`]).
    Split,
    /// An anonymous pipe, reopened privately through `/proc/self/fd` (Linux).
    Reopen,
    /// An anonymous blocking pipe and nothing else.
    Shared,
}

/// An own pool's fifo: its path and our own read-write, non-blocking description, which
/// keeps the tokens in it (a fifo's bytes are gone once nobody has it open). Shared by the
/// server, its clients and every command configured for it; the last one removes the fifo.
struct FifoFile {
    path: PathBuf,
    fd: OwnedFd,
    /// Removes the fifo if a fatal signal ends the process first (see `signals`).
    on_signal: Option<RemoveOnSignal>,
}

impl Drop for FifoFile {
    fn drop(&mut self) {
        drop(self.on_signal.take());
        let _ = std::fs::remove_file(&self.path);
    }
}

struct Inner {
    /// The pool's size and account. Every change to it and the I/O that goes with it happen
    /// under this lock, so the account matches the bytes moved exactly.
    plan: Mutex<PoolPlan>,
    pool: Pool,
    child: ChildEnv,
}

impl Inner {
    fn read_fd(&self) -> BorrowedFd<'_> {
        match &self.pool {
            Pool::Pipe { read, .. } => read.as_fd(),
            Pool::Fifo(fifo) => fifo.fd.as_fd(),
        }
    }

    /// Reads, without blocking, tokens that are free now (absorb, drain). `WouldBlock` when
    /// there are none.
    fn read_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.pool {
            Pool::Pipe {
                own: Own::Private { reader, .. },
                ..
            } => sys::read(reader.as_fd(), buf),
            Pool::Pipe {
                own: Own::Shared(helper),
                ..
            } => helper.read_now(buf),
            Pool::Fifo(fifo) => sys::read(fifo.fd.as_fd(), buf),
        }
    }

    /// Writes up to `count` new token bytes without blocking; returns how many went in and
    /// the error that stopped it early (`WouldBlock` on a full pipe), if any.
    fn write_now(&self, count: usize) -> (usize, Option<io::Error>) {
        match &self.pool {
            Pool::Pipe {
                own: Own::Private { reader, writer },
                ..
            } => write_tokens(writer.as_ref().unwrap_or(reader).as_fd(), count, false),
            Pool::Pipe {
                own: Own::Shared(_),
                write,
                ..
            } => write_tokens(write.as_fd(), count, true),
            Pool::Fifo(fifo) => write_tokens(fifo.fd.as_fd(), count, false),
        }
    }

    fn plan(&self) -> MutexGuard<'_, PoolPlan> {
        // The plan is only changed together with the I/O it describes, and nothing in
        // between panics; a poisoned lock still holds a consistent plan.
        self.plan.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Reads and discards up to `plan.pending_absorb()` bytes with `read` (which never blocks),
/// stopping when none are free; records them in `plan` as they are read. Returns how many.
fn absorb_into(
    plan: &mut PoolPlan,
    mut read: impl FnMut(&mut [u8]) -> io::Result<usize>,
) -> io::Result<usize> {
    let mut total = 0;
    let mut buf = [0u8; 4096];
    while plan.pending_absorb() > 0 {
        let want = plan.pending_absorb().min(buf.len());
        match read(&mut buf[..want]) {
            // End-of-file cannot happen while we hold a write end; nothing to absorb then.
            Ok(0) => break,
            Ok(n) => {
                plan.absorbed(n);
                total += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}

/// The most bytes written at once to a blocking pipe after `poll` showed room: POSIX's
/// `PIPE_BUF` minimum, which a pipe with room takes whole.
const GUARDED_CHUNK: usize = 512;

/// Writes up to `count` token bytes into `fd`; returns how many went in and the error that
/// stopped it early (`WouldBlock` on a full pipe), if any.
///
/// `fd` is non-blocking, or (`guarded`) blocking: then each chunk is written only after
/// `poll` reports room for it, and a pipe without room is `WouldBlock` instead of a hang.
fn write_tokens(fd: BorrowedFd<'_>, count: usize, guarded: bool) -> (usize, Option<io::Error>) {
    let chunk = [DEFAULT_TOKEN_BYTE; 4096];
    let max = if guarded { GUARDED_CHUNK } else { chunk.len() };
    let mut written = 0;
    while written < count {
        if guarded {
            let mut fds = [rustix::event::PollFd::new(
                &fd,
                rustix::event::PollFlags::OUT,
            )];
            let zero = rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            match rustix::event::poll(&mut fds, Some(&zero)) {
                Ok(_) if fds[0].revents().contains(rustix::event::PollFlags::OUT) => {}
                Ok(_) => return (written, Some(io::ErrorKind::WouldBlock.into())),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return (written, Some(e.into())),
            }
        }
        let len = (count - written).min(max);
        match rustix::io::write(fd, &chunk[..len]) {
            Ok(0) => {
                return (
                    written,
                    Some(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "the jobserver pipe accepted no more bytes",
                    )),
                )
            }
            Ok(n) => written += n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return (written, Some(e.into())),
        }
    }
    (written, None)
}

/// A jobserver pool of `N` jobs that this process owns, generic over the runtime's [`Reactor`]
/// (which only its clients need).
///
/// The process itself counts as one job (its implicit slot), so the pipe is preloaded with
/// `N - 1` tokens. Children configured with [`Server::configure`] share the pool; so do the
/// clients from [`Server::client`].
///
/// A fifo pool's fifo is removed when the last of the server, its clients and the commands
/// configured for it is dropped, and, as GNU make 4.4 does, when `SIGHUP`, `SIGINT`,
/// `SIGQUIT` or `SIGTERM` ends the process first. For that, the first fifo pool installs a
/// handler for those signals (not for one that is ignored then) that removes the process's
/// fifos and then chains to the handler it replaced, or, if it replaced the default action,
/// re-raises the signal with the default so that the process still dies of it. An
/// application's own handler (`tokio::signal`, `signal-hook`, installed before or after)
/// still decides what the signal does; the fifo is gone by then, while its open descriptors
/// keep working. A process killed by `SIGKILL` (or any other exit that skips destructors)
/// leaves the fifo behind in the temporary directory.
///
/// Every descriptor a server creates is numbered 3 or above, even in a process that runs
/// with its standard streams closed (see [`sys::MIN_FD`]).
pub struct Server<R: Reactor> {
    inner: Arc<Inner>,
    /// The shared states of the clients made by [`Server::client`] (and so of their clones
    /// and tokens), for [`Server::shutdown`] to see what they hold.
    clients: Mutex<Vec<Weak<Shared<R>>>>,
    _reactor: PhantomData<fn() -> R>,
}

impl<R: Reactor> std::fmt::Debug for Server<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("jobs", &self.jobs())
            .field("makeflags", &self.makeflags())
            .finish()
    }
}

fn capacity_error(err: jobserver_proto::PlanError) -> Error {
    let kind = match err.kind() {
        jobserver_proto::PlanErrorKind::ExceedsCapacity => ErrorKind::Capacity,
        _ => ErrorKind::Capacity,
    };
    Error::new(kind, err.to_string()).with_source(err)
}

/// Plans the pool for `fd` (growing the pipe if needed) and preloads it through `writer`,
/// which must be non-blocking so that a pipe too small fails instead of hanging.
fn plan_and_preload(
    jobs: usize,
    fd: BorrowedFd<'_>,
    writer: BorrowedFd<'_>,
) -> Result<PoolPlan, Error> {
    let needed = jobs.saturating_sub(1);
    let capacity = sys::ensure_pipe_capacity(fd, needed)
        .map_err(|e| Error::io("sizing the jobserver pipe", e))?;
    let plan = PoolPlan::new(jobs, capacity).map_err(capacity_error)?;
    sys::write_all(writer, &plan.preload_bytes()).map_err(|e| {
        if e.kind() == io::ErrorKind::WouldBlock {
            Error::new(
                ErrorKind::Capacity,
                format!(
                    "the jobserver pipe filled up before {} tokens were written: {e}",
                    plan.preload()
                ),
            )
        } else {
            Error::io("preloading the jobserver pipe", e)
        }
    })?;
    Ok(plan)
}

impl<R: Reactor> Server<R> {
    /// Creates a pool of `jobs` on a pipe (the mode every make version and the `jobserver`
    /// crate understand): children get `--jobserver-auth=R,W`.
    ///
    /// The pipe is close-on-exec: only children passed to [`Server::configure`] inherit it.
    /// Their descriptions are blocking (make 4.2 and older, and macOS's make 3.81, fail on a
    /// non-blocking read side); this process's own description is another one, private and
    /// non-blocking, so no reopen through `/proc` is needed:
    ///
    /// 1. a fifo is made in the temporary directory, opened once for this process and once
    ///    for each end the children get, and removed again at once
    ///    ([`sys::create_split_pipe`]): a pipe without a name, as an anonymous one;
    /// 2. where no fifo can be made there (an unwritable `TMPDIR`, say), an anonymous pipe,
    ///    reopened privately through `/proc/self/fd` (Linux);
    /// 3. where neither works, an anonymous blocking pipe that this process reads through a
    ///    helper thread ([`HelperKind::Shared`](crate::thread::HelperKind::Shared)) and
    ///    writes only where `poll` shows room, never changing its flags once a child may
    ///    share it.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Capacity`] for `jobs == 0` or a pool larger than the pipe can hold even
    /// after trying to grow it; [`ErrorKind::Io`] when the pipe cannot be created.
    pub fn new(jobs: usize) -> Result<Self, Error> {
        match Self::new_pipe(jobs, PipeSetup::Split) {
            Err(e) if e.kind() == ErrorKind::Io => {
                let next = if sys::HAS_PROC_REOPEN {
                    PipeSetup::Reopen
                } else {
                    PipeSetup::Shared
                };
                match Self::new_pipe(jobs, next) {
                    Err(e) if e.kind() == ErrorKind::Io && next == PipeSetup::Reopen => {
                        Self::new_pipe(jobs, PipeSetup::Shared)
                    }
                    other => other,
                }
            }
            other => other,
        }
    }

    /// [`Server::new`] with one way of making the pipe, for tests of each.
    pub(crate) fn new_pipe(jobs: usize, setup: PipeSetup) -> Result<Self, Error> {
        let (read, write, own) = match setup {
            PipeSetup::Split => {
                let pipe = sys::create_split_pipe(&std::env::temp_dir()).map_err(|e| {
                    Error::io("creating the jobserver pipe (a fifo, removed at once)", e)
                })?;
                let own = Own::Private {
                    reader: pipe.private,
                    writer: None,
                };
                (pipe.read, pipe.write, own)
            }
            PipeSetup::Reopen => {
                let (read, write) =
                    sys::create_pipe().map_err(|e| Error::io("creating the jobserver pipe", e))?;
                let writer = sys::reopen_private(write.as_fd(), Access::Write)
                    .map_err(|e| Error::io("opening the new jobserver pipe for preloading", e))?;
                let reader = sys::reopen_private(read.as_fd(), Access::Read)
                    .map_err(|e| Error::io("opening the new jobserver pipe for reading", e))?;
                let own = Own::Private {
                    reader,
                    writer: Some(writer),
                };
                (read, write, own)
            }
            PipeSetup::Shared => {
                let (read, write) =
                    sys::create_pipe().map_err(|e| Error::io("creating the jobserver pipe", e))?;
                let helper = HelperReactor::shared(try_dup(&read)?, try_dup(&write)?)?;
                (read, write, Own::Shared(helper))
            }
        };
        let plan = match &own {
            Own::Private { reader, writer } => {
                let writer = writer.as_ref().unwrap_or(reader);
                plan_and_preload(jobs, write.as_fd(), writer.as_fd())?
            }
            Own::Shared(_) => {
                // Nobody shares the new pipe yet: non-blocking just for the preload, so that
                // a pipe too small fails instead of hanging, then blocking again for children.
                sys::set_nonblocking(write.as_fd())
                    .map_err(|e| Error::io("preparing the jobserver pipe", e))?;
                let plan = plan_and_preload(jobs, write.as_fd(), write.as_fd());
                sys::set_blocking(write.as_fd())
                    .map_err(|e| Error::io("preparing the jobserver pipe", e))?;
                plan?
            }
        };
        let (read, write) = (Arc::new(read), Arc::new(write));
        let child = ChildEnv::pipe(Jobs::Limited(plan.jobs()), read.clone(), write.clone());
        Ok(Self::from_inner(Inner {
            plan: Mutex::new(plan),
            pool: Pool::Pipe { read, write, own },
            child,
        }))
    }

    /// Creates a pool of `jobs` on a named pipe (`mkfifo`, mode 0600, a unique name in the
    /// temporary directory), the mode of GNU make 4.4 and later. make 4.3 and older cannot use
    /// it; use [`Server::new`] for them.
    ///
    /// # Errors
    ///
    /// As [`Server::new`], plus errors creating the fifo.
    pub fn new_fifo(jobs: usize) -> Result<Self, Error> {
        let path = sys::create_fifo(&std::env::temp_dir())
            .map_err(|e| Error::io("creating the jobserver fifo", e))?;
        let on_signal = RemoveOnSignal::register(&path);
        let cleanup = |err: Error| {
            let _ = std::fs::remove_file(&path);
            err
        };
        let fd = sys::open_fifo(&path)
            .map_err(|e| match e {
                FifoOpenError::Io(e) => Error::io("opening the new jobserver fifo", e),
                other => Error::new(ErrorKind::Io, other.to_string()),
            })
            .map_err(cleanup)?;
        let plan = plan_and_preload(jobs, fd.as_fd(), fd.as_fd()).map_err(cleanup)?;
        let fifo = Arc::new(FifoFile {
            path,
            fd,
            on_signal,
        });
        let child = ChildEnv::fifo(
            Jobs::Limited(plan.jobs()),
            fifo.path.as_os_str().as_encoded_bytes(),
        )
        .keeping(fifo.clone());
        Ok(Self::from_inner(Inner {
            plan: Mutex::new(plan),
            pool: Pool::Fifo(fifo),
            child,
        }))
    }

    fn from_inner(inner: Inner) -> Self {
        Server {
            inner: Arc::new(inner),
            clients: Mutex::new(Vec::new()),
            _reactor: PhantomData,
        }
    }

    /// A client for this process that shares the pool (its first token is this process's
    /// implicit slot), with the reactor's [default options](Reactor::default_options). It
    /// keeps the pool alive.
    ///
    /// Calling it again gives another client of the same token machine, not a second
    /// implicit slot (see [`Client`]'s "One machine per jobserver per process").
    ///
    /// # Errors
    ///
    /// Opening a description fails, or the runtime is missing ([`ErrorKind::NoRuntime`]).
    pub fn client(&self) -> Result<Client<R>, Error> {
        self.client_with(&R::default_options())
    }

    /// [`Server::client`] with [`ClientOptions`]: exclusive wake-ups (on this process's own
    /// private description), or
    /// [`shared_description`](ClientOptions::shared_description) for a pipe pool (the
    /// blocking description children get, through a helper thread).
    ///
    /// # Errors
    ///
    /// As [`Server::client`], and [`ErrorKind::Unsupported`] for exclusive wake-ups off Linux
    /// or on a pool without a private description.
    pub fn client_with(&self, options: &ClientOptions) -> Result<Client<R>, Error> {
        let mut flags = MakeFlags::default();
        flags.jobs = Jobs::Limited(self.inner.plan().jobs());
        let (conn, mode) = match &self.inner.pool {
            Pool::Pipe { read, write, own } => {
                let conn = match own {
                    Own::Private { reader, writer } if !options.is_shared_description() => {
                        let writer = writer.as_ref().map(try_dup).transpose()?;
                        private_conn::<R>(try_dup(reader)?, writer, options)?
                    }
                    _ => shared_conn::<R>(read.as_fd(), write.as_fd(), options)?,
                };
                (conn, Mode::Pipe)
            }
            Pool::Fifo(fifo) => {
                let fd = sys::open_fifo(&fifo.path).map_err(|e| match e {
                    FifoOpenError::Io(e) => Error::io("opening the jobserver fifo", e),
                    other => Error::new(ErrorKind::Io, other.to_string()),
                })?;
                (private_conn::<R>(fd, None, options)?, Mode::Fifo)
            }
        };
        let child = Some(self.inner.child.clone());
        let client = Client::build(Machine::new(), Some(conn), mode, None, flags, child, None);
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        let shared = client.shared_weak();
        // Clients of one pool share their state: list it once.
        clients.retain(|c| c.strong_count() > 0 && !c.ptr_eq(&shared));
        clients.push(shared);
        drop(clients);
        Ok(client.keep_alive(self.inner.clone()))
    }

    /// Lets `cmd`'s child share the pool: sets `MAKEFLAGS` and `CARGO_MAKEFLAGS` to
    /// [`Server::makeflags`] (and `MFLAGS` to the same, as make does: without a flag cluster
    /// the two are equal), and in pipe mode makes the pipe inheritable in that child only.
    /// The pool stays usable for as long as `cmd` exists, even if the server is dropped
    /// first: `cmd` keeps the pipe open, or in fifo mode the fifo (its path and an open end,
    /// which holds the tokens); the fifo is removed when the last of the server, its clients
    /// and such commands is dropped.
    ///
    /// Both modes add a `pre_exec` hook to `cmd` (in fifo mode one that does nothing but
    /// hold the fifo), so `std` spawns it with `fork` rather than `posix_spawn`.
    ///
    /// For a tokio command use `cmd.as_std_mut()`; for async-process, configure a
    /// `std::process::Command` and convert it with `From`.
    pub fn configure<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        self.inner.child.apply(cmd);
        cmd
    }

    /// The value children get in `MAKEFLAGS`: `-jN --jobserver-fds=R,W --jobserver-auth=R,W`
    /// for a pipe, `-jN --jobserver-auth=fifo:PATH` for a fifo.
    ///
    /// `N` is the size the pool was created with; [`Server::resize`] does not change it (it
    /// is only a hint: children take their share from the pool's tokens).
    pub fn makeflags(&self) -> &OsStr {
        &self.inner.child.makeflags
    }

    /// The number of jobs, `N`: the size given to the constructor, or to the last
    /// [`Server::resize`] (less what a grow could not write).
    pub fn jobs(&self) -> usize {
        self.inner.plan().jobs().get()
    }

    /// Bytes still to be taken out of the pipe after a shrink: tokens that their holders
    /// have not written back yet (or that [`Server::absorb`] has not run for since).
    pub fn pending_absorb(&self) -> usize {
        self.inner.plan().pending_absorb()
    }

    /// Changes the pool to `jobs` at run time. Nobody is blocked or loses a token.
    ///
    /// - **Grow**: tokens still owed from an earlier shrink are kept instead of absorbed;
    ///   the rest are written into the pipe as new tokens, at once.
    /// - **Shrink**: [`Server::jobs`] is the new size at once, and the difference becomes a
    ///   debt ([`Server::pending_absorb`]): as many tokens as are free in the pipe now are
    ///   taken out of it for good, and the rest are taken as their holders give them back,
    ///   by [`Server::absorb`] (run it whenever convenient, for example after each job
    ///   ends), by the next `resize` and by [`Server::shutdown`]. Until then more jobs than
    ///   the new size may run.
    ///
    /// Every call also absorbs what it can of the debt left.
    ///
    /// The `-jN` in [`Server::makeflags`] keeps the size the pool was created with.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Capacity`] for `jobs == 0`, for a size larger than the pipe can hold
    /// even after trying to grow it (the pool is then unchanged), and when the pipe fills up
    /// while new tokens are written (more bytes than expected are in it): the pool then grows
    /// by the tokens that were written, as [`Server::jobs`] tells. [`ErrorKind::Io`] when the
    /// pipe cannot be sized, written or read.
    pub fn resize(&self, jobs: usize) -> Result<(), Error> {
        let mut plan = self.inner.plan();
        let capacity = sys::ensure_pipe_capacity(self.inner.read_fd(), jobs.saturating_sub(1))
            .map_err(|e| Error::io("sizing the jobserver pipe", e))?;
        let step = plan.resize(jobs, capacity).map_err(capacity_error)?;
        match step {
            Resize::Write(count) => {
                let (written, err) = self.inner.write_now(count);
                plan.grown(written);
                match err {
                    None => Ok(()),
                    Some(e) if e.kind() == io::ErrorKind::WouldBlock => Err(Error::new(
                        ErrorKind::Capacity,
                        format!(
                            "the jobserver pipe filled up after {written} of {count} new \
                             tokens (someone wrote tokens it never read?); the pool now has \
                             {} jobs",
                            plan.jobs()
                        ),
                    )
                    .with_source(e)),
                    Some(e) => Err(Error::io(
                        format_args!(
                            "writing new jobserver tokens ({written} of {count} written, \
                             the pool now has {} jobs)",
                            plan.jobs()
                        ),
                        e,
                    )),
                }
            }
            Resize::Absorb(_) => {
                absorb_into(&mut plan, |buf| self.inner.read_now(buf))
                    .map_err(|e| Error::io("absorbing jobserver tokens after a shrink", e))?;
                Ok(())
            }
        }
    }

    /// Takes out of the pipe, without blocking, as many of the tokens still owed after a
    /// shrink ([`Server::pending_absorb`]) as are free now, and returns how many it took.
    /// They leave the pool for good. Returns `Ok(0)` when nothing is owed or nothing is free.
    ///
    /// # Errors
    ///
    /// When the pipe cannot be read.
    pub fn absorb(&self) -> io::Result<usize> {
        let mut plan = self.inner.plan();
        absorb_into(&mut plan, |buf| self.inner.read_now(buf))
    }

    /// The fifo's path, for a fifo pool.
    pub fn fifo_path(&self) -> Option<&Path> {
        match &self.inner.pool {
            Pool::Fifo(fifo) => Some(&fifo.path),
            Pool::Pipe { .. } => None,
        }
    }

    /// Tokens in the pipe now (FIONREAD).
    ///
    /// # Errors
    ///
    /// When the ioctl fails.
    pub fn available(&self) -> io::Result<usize> {
        sys::bytes_available(self.inner.read_fd())
    }

    /// Audits the pool at the end of its work: takes every token out of the pipe, counts
    /// them against what should be there (the preload, plus the tokens added by growing,
    /// minus those absorbed after shrinking; tokens still owed after a shrink are expected,
    /// and absorbed now) and reports lost or extra tokens.
    ///
    /// It never takes tokens away from their users:
    ///
    /// - While a client of this pool in this process (from [`Server::client`], its clones,
    ///   and their tokens) holds a token read from the pool, keeps one it failed to write
    ///   back, or waits for tokens, it refuses with [`ErrorKind::InUse`] and reads nothing:
    ///   release them and call it again. A client that holds nothing (or only its implicit
    ///   slot, which is no byte in the pipe) does not stop it.
    /// - The tokens counted are written back afterwards (less a shrink's debt and any extra
    ///   bytes), so that clients, configured commands and children that still use the pool
    ///   keep finding them, and so that calling it again gives the same answer. The pool
    ///   itself ends when the server and everything that holds it are dropped.
    ///
    /// Child processes are invisible to it: wait for them first, or the tokens they hold
    /// are reported as lost. So is a [`Token`](crate::Token) leaked with `mem::forget`: it
    /// counts as held, and the pool stays in use.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InUse`] as above, also when a client moved tokens while the pipe was
    /// being counted (what was taken out is then put back); [`ErrorKind::Io`] when the pipe
    /// cannot be read or the tokens cannot be written back.
    pub fn shutdown(&self) -> Result<Report, Error> {
        let mut plan = self.inner.plan();
        let before = self.client_usage()?;
        let mut returned = 0;
        let mut buf = [0u8; 4096];
        let drained = loop {
            match self.inner.read_now(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => returned += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        let after = self.client_usage();
        let raced = match &after {
            // Every client alive now moved no byte since `before` (one that is gone since
            // held nothing then, so its drop wrote nothing).
            Ok(now) => now.iter().any(|(client, moved)| {
                let then = before.iter().find(|(c, _)| Weak::ptr_eq(c, client));
                then.map_or(0, |(_, m)| *m) != *moved
            }),
            Err(_) => true,
        };
        if drained.is_err() || raced {
            // Put back what was taken out: the pool is as it was.
            self.put_back(returned)?;
            drained.map_err(|e| Error::io("draining the jobserver pipe", e))?;
            after?;
            return Err(Error::new(
                ErrorKind::InUse,
                "a client of this jobserver pool read or wrote tokens while the pool was \
                 being counted; the tokens were put back. Let the clients finish and call \
                 shutdown again",
            ));
        }
        let report = plan.account(returned);
        // Pay the debt of a shrink with what came back, and keep no extra bytes.
        let debt = plan.pending_absorb().min(returned);
        plan.absorbed(debt);
        self.put_back((returned - debt).min(plan.in_circulation()))?;
        Ok(report)
    }

    /// Writes `count` tokens back into the pool after counting them.
    fn put_back(&self, count: usize) -> Result<(), Error> {
        match self.inner.write_now(count) {
            (_, None) => Ok(()),
            (written, Some(e)) => Err(Error::io(
                format_args!(
                    "writing the counted tokens back into the jobserver pipe ({written} of \
                     {count} written)"
                ),
                e,
            )),
        }
    }

    /// The clients of this pool that are alive, each with the bytes it moved so far (for
    /// spotting a client that reads or writes while the pool is counted), or
    /// [`ErrorKind::InUse`] when one of them holds or waits for tokens.
    #[allow(clippy::type_complexity)]
    fn client_usage(&self) -> Result<Vec<(Weak<Shared<R>>, u64)>, Error> {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        clients.retain(|c| c.strong_count() > 0);
        let (mut held, mut unwritten, mut waiting) = (0, 0, 0);
        let mut usage = Vec::with_capacity(clients.len());
        for weak in clients.iter() {
            let Some(shared) = weak.upgrade() else {
                continue;
            };
            let stats = shared.stats();
            held += stats.bytes_held;
            unwritten += stats.bytes_unwritten;
            waiting += stats.waiting;
            let moved = stats.bytes_read.wrapping_add(stats.bytes_written);
            usage.push((weak.clone(), moved));
        }
        drop(clients);
        if held + unwritten + waiting == 0 {
            return Ok(usage);
        }
        Err(Error::new(
            ErrorKind::InUse,
            format!(
                "the jobserver pool is still in use by clients in this process: they hold \
                 {held} token(s) read from it, keep {unwritten} they could not write back, \
                 and {waiting} request(s) wait for tokens. Release the tokens (drop them) and \
                 call shutdown again; nothing was taken out of the pool"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocking::ThreadReactor;

    /// Every way of making the pipe gives the same pool: blocking descriptions for children,
    /// the right preload, clients that take and give back tokens, a resize, a clean audit.
    #[test]
    fn every_pipe_setup_makes_a_working_pool() {
        let mut setups = vec![PipeSetup::Split, PipeSetup::Shared];
        if sys::HAS_PROC_REOPEN {
            setups.push(PipeSetup::Reopen);
        }
        for setup in setups {
            let server = Server::<ThreadReactor>::new_pipe(4, setup).expect("a pool");
            let (read, write) = match &server.inner.pool {
                Pool::Pipe { read, write, .. } => (read.clone(), write.clone()),
                Pool::Fifo(_) => unreachable!(),
            };
            for fd in [read.as_fd(), write.as_fd()] {
                assert!(
                    !sys::is_nonblocking(fd).unwrap(),
                    "{setup:?}: blocking for children"
                );
            }
            assert_eq!(server.available().unwrap(), 3, "{setup:?}");
            let client = crate::blocking::Client::from(server.client().expect("a client"));
            let all = client.acquire_many(4).expect("4 tokens");
            assert_eq!(server.available().unwrap(), 0, "{setup:?}");
            assert!(client.try_acquire().unwrap().is_none(), "{setup:?}");
            drop(all);
            assert_eq!(server.available().unwrap(), 3, "{setup:?}");

            server.resize(6).expect("grow");
            assert_eq!(server.available().unwrap(), 5, "{setup:?}");
            server.resize(2).expect("shrink");
            assert_eq!(server.available().unwrap(), 1, "{setup:?}");
            assert_eq!(server.pending_absorb(), 0, "{setup:?}");
            let report = server.shutdown().expect("shutdown");
            assert!(report.is_balanced(), "{setup:?}: {report:?}");
            assert_eq!(server.available().unwrap(), 1, "{setup:?}: put back");
            for fd in [read.as_fd(), write.as_fd()] {
                assert!(
                    !sys::is_nonblocking(fd).unwrap(),
                    "{setup:?}: still blocking"
                );
            }
        }
    }

    /// Without a private description, the clients of a pool read the children's blocking
    /// description through a helper thread, and a shrink's debt is absorbed as tokens come
    /// back.
    #[test]
    fn a_pool_without_a_private_description_reads_through_a_helper() {
        let server = Server::<ThreadReactor>::new_pipe(3, PipeSetup::Shared).expect("a pool");
        let client = crate::blocking::Client::from(server.client().expect("a client"));
        let held = client.acquire_many(3).expect("3 tokens");
        server.resize(1).expect("shrink");
        assert_eq!(server.pending_absorb(), 2);
        drop(held);
        assert_eq!(
            server.absorb().expect("absorb"),
            2,
            "the 2 tokens that came back"
        );
        assert_eq!(server.pending_absorb(), 0);
        assert_eq!(server.available().unwrap(), 0);
        drop(client.acquire().expect("the implicit slot still works"));
        assert!(server.shutdown().expect("shutdown").is_balanced());
    }
}
