//! The client: finding the jobserver, connecting to it, acquiring tokens, and passing it on
//! to children.

use std::ffi::OsString;
use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use jobserver_proto::makeflags::{self, Auth, EnvVar, Jobs, MakeFlags};
use jobserver_proto::{Machine, ReleasePolicy, Stats};

use crate::driver::{Acquire, Conn, Reactor, Shared, Token};
use crate::error::{Error, ErrorKind};
use crate::liveness;
use crate::options::ClientOptions;
use crate::server::Server;
use crate::sys::{self, Access, FdProblem, FifoOpenError, TakeError};
use crate::thread::HelperReactor;

/// How a client reaches its tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// An anonymous pipe (`--jobserver-auth=R,W`).
    Pipe,
    /// A named pipe (`--jobserver-auth=fifo:PATH`).
    Fifo,
    /// No jobserver: only the process's implicit slot, so one job at a time.
    ImplicitOnly,
}

/// What a child must be given to share the pool.
#[derive(Debug, Clone)]
pub(crate) struct ChildEnv {
    /// The value for `MAKEFLAGS` and `CARGO_MAKEFLAGS`.
    pub(crate) makeflags: OsString,
    /// The value for `MFLAGS`: the same options as `makeflags` with a dash in front of the
    /// flag cluster and without the variables, as make sets it.
    pub(crate) mflags: OsString,
    /// Pipe mode: descriptors of ours that the child must inherit, at the numbers in
    /// `makeflags`. Held here so they stay open until every configured command is gone.
    pub(crate) fds: Option<(Arc<OwnedFd>, Arc<OwnedFd>)>,
    /// Set once those descriptors are inheritable in this process itself
    /// ([`Client::inherit_in_every_child`]): configuring then needs no `pre_exec` hook.
    pub(crate) inherit_all: Arc<std::sync::atomic::AtomicBool>,
    /// Something every configured command must keep alive until it is dropped: an own fifo
    /// pool's fifo (its path and an open end, which holds the tokens), so that a command
    /// configured before the server was dropped still finds the pool when it spawns.
    pub(crate) keep: Option<Arc<dyn std::any::Any + Send + Sync>>,
}

impl ChildEnv {
    /// For a pool of our own: only the jobs hint and the jobserver.
    pub(crate) fn pipe(jobs: Jobs, read: Arc<OwnedFd>, write: Arc<OwnedFd>) -> Self {
        Self::pipe_passing(&only_jobs(jobs), read, write)
    }

    /// For a pool of our own: only the jobs hint and the jobserver.
    pub(crate) fn fifo(jobs: Jobs, path: &[u8]) -> Self {
        Self::fifo_passing(&only_jobs(jobs), path)
    }

    /// Passes on `flags`' jobs hint, one-letter flags and variables with the pipe.
    pub(crate) fn pipe_passing(flags: &MakeFlags, read: Arc<OwnedFd>, write: Arc<OwnedFd>) -> Self {
        let (r, w) = (read.as_raw_fd(), write.as_raw_fd());
        ChildEnv::new(flags, |f, n| makeflags::encode_pipe_with_flags(f, n, r, w))
            .with_fds(read, write)
    }

    /// Passes on `flags`' jobs hint, one-letter flags and variables with the fifo.
    pub(crate) fn fifo_passing(flags: &MakeFlags, path: &[u8]) -> Self {
        ChildEnv::new(flags, |f, n| makeflags::encode_fifo_with_flags(f, n, path))
    }

    fn new(flags: &MakeFlags, encode: impl Fn(&MakeFlags, NonZeroUsize) -> Vec<u8>) -> Self {
        let makeflags = with_jobs(flags, &encode);
        let mut options_only = flags.clone();
        options_only.variables.clear();
        let mut mflags = with_jobs(&options_only, &encode);
        if !makeflags::encode_flags(flags).is_empty() {
            mflags.insert(0, b'-');
        }
        ChildEnv {
            makeflags: OsString::from_vec(makeflags),
            mflags: OsString::from_vec(mflags),
            fds: None,
            inherit_all: Arc::default(),
            keep: None,
        }
    }

    fn with_fds(mut self, read: Arc<OwnedFd>, write: Arc<OwnedFd>) -> Self {
        self.fds = Some((read, write));
        self
    }

    /// Makes every command configured from now on hold `keep` until it is dropped.
    pub(crate) fn keeping(mut self, keep: Arc<dyn std::any::Any + Send + Sync>) -> Self {
        self.keep = Some(keep);
        self
    }

    /// Sets the variables on `cmd` and, in pipe mode, lets the child alone inherit the pipe.
    pub(crate) fn apply(&self, cmd: &mut Command) {
        cmd.env("MAKEFLAGS", &self.makeflags);
        cmd.env("CARGO_MAKEFLAGS", &self.makeflags);
        cmd.env("MFLAGS", &self.mflags);
        if let Some(keep) = &self.keep {
            let keep = keep.clone();
            let hook = move || {
                // Does nothing in the child: the closure only ties `keep`'s life to `cmd`.
                let _ = &keep;
                Ok(())
            };
            // SAFETY: the hook runs in the child between fork and exec and makes no call at
            // all (it only borrows a value the closure owns).
            unsafe {
                cmd.pre_exec(hook);
            }
        }
        if let Some((read, write)) = &self.fds {
            if self.inherit_all.load(std::sync::atomic::Ordering::Acquire) {
                // Inheritable already: no hook, so std can spawn with posix_spawn (vfork).
                return;
            }
            let (read, write) = (read.clone(), write.clone());
            let hook = move || {
                // Only async-signal-safe calls here: two fcntl system calls.
                sys::set_cloexec(read.as_raw_fd(), false)?;
                sys::set_cloexec(write.as_raw_fd(), false)?;
                Ok(())
            };
            // SAFETY: the hook runs in the child between fork and exec; it only makes fcntl
            // system calls on descriptors that the closure keeps open, and allocates nothing.
            unsafe {
                cmd.pre_exec(hook);
            }
        }
    }
}

/// Flags with only a jobs hint.
fn only_jobs(jobs: Jobs) -> MakeFlags {
    let mut flags = MakeFlags::default();
    flags.jobs = jobs;
    flags
}

/// Encodes with `flags`' jobs hint; without one, leaves out the `-jN` word (a hint only).
fn with_jobs(flags: &MakeFlags, encode: impl Fn(&MakeFlags, NonZeroUsize) -> Vec<u8>) -> Vec<u8> {
    match flags.jobs {
        Jobs::Limited(n) => encode(flags, n),
        _ => {
            let mut value = encode(flags, NonZeroUsize::MIN);
            // The encoders write `[cluster ]-j1 --jobserver-...`: cut out the `-j1 `.
            let cluster = makeflags::encode_flags(flags);
            let at = if cluster.is_empty() {
                0
            } else {
                cluster.len() + 1
            };
            if value[at..].starts_with(b"-j1 ") {
                value.drain(at..at + 4);
            }
            value
        }
    }
}

/// Facts about a client that never change.
#[derive(Debug)]
pub(crate) struct Info {
    mode: Mode,
    var: Option<EnvVar>,
    flags: MakeFlags,
    child: Option<ChildEnv>,
    degraded: Option<Error>,
    /// Keeps an own pool alive as long as a client of it lives.
    _server: Option<Arc<dyn std::any::Any + Send + Sync>>,
}

/// A jobserver client for one process, generic over the runtime's [`Reactor`].
///
/// Runtime crates export it under a name of their own (`jobserver_tokio::Client`,
/// `jobserver_smol::Client`).
///
/// # One machine per jobserver per process
///
/// Every client of the same pool in a process shares one token machine and connection:
/// clones, and also clients made by calling [`Client::from_env`] again or
/// [`Server::client`](crate::Server::client) again (a pool is recognised by the device and
/// inode of its pipe or fifo). So the process has one implicit slot for the pool, not one per
/// client, and never runs more jobs than its share; requests from all of them wait in one
/// FIFO queue. The release policy, statistics and metrics are those of that shared machine.
///
/// Clients of the same pool on *different* runtimes (a tokio client and a blocking one, say)
/// cannot share a machine, because a machine is tied to its reactor. They get one each, and
/// the implicit slot is still counted once: the first machine of the pool counts it, every
/// other one backs each of its units with a byte read from the pool. When the machine that
/// counts the slot is gone (its last client and token dropped), the slot passes to another
/// machine of the pool that is still alive. Requests on different runtimes queue separately.
///
/// Clients without a jobserver ([`Client::implicit_only`]) have no pool to share: each is a
/// semaphore of one of its own.
pub struct Client<R: Reactor> {
    shared: Arc<Shared<R>>,
    info: Arc<Info>,
}

impl<R: Reactor> Clone for Client<R> {
    fn clone(&self) -> Self {
        Client {
            shared: self.shared.clone(),
            info: self.info.clone(),
        }
    }
}

impl<R: Reactor> std::fmt::Debug for Client<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("mode", &self.info.mode)
            .field("var", &self.info.var)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn env_lookup(name: &str) -> Option<Vec<u8>> {
    std::env::var_os(name).map(OsString::into_vec)
}

fn fd_problem_error(
    var: EnvVar,
    read: RawFd,
    write: RawFd,
    fd: RawFd,
    problem: FdProblem,
) -> Error {
    let what = match problem {
        FdProblem::Closed => "is not open in this process",
        FdProblem::NotAPipe => {
            "is open but is not a pipe (the number was reused for something else)"
        }
        FdProblem::WrongAccessMode => "is a pipe opened in the wrong direction",
    };
    let err = Error::new(
        ErrorKind::BadFds,
        format!(
            "{var} names jobserver file descriptors {read},{write}, but descriptor {fd} {what}. \
             make closes them for commands it does not treat as recursive: mark the make rule \
             recursive by prefixing the recipe line with `+` (or use $(MAKE) in it)"
        ),
    );
    match problem {
        // The OS error behind "not open", for callers that walk the source chain.
        FdProblem::Closed => err.with_source(io::Error::from_raw_os_error(
            rustix::io::Errno::BADF.raw_os_error(),
        )),
        _ => err,
    }
}

/// The connection of a client to a pipe through `read` and `write`, descriptions shared with
/// other processes (make's, or the ones a pool of ours gives its children; `fd_read` and
/// `fd_write` are the numbers for messages): a private reopen of each where possible, the
/// shared descriptions on a helper thread where not (or when `options` asks for it).
pub(crate) fn pipe_conn<R: Reactor>(
    read: BorrowedFd<'_>,
    write: BorrowedFd<'_>,
    options: &ClientOptions,
    fd_read: RawFd,
    fd_write: RawFd,
) -> Result<Conn<R>, Error> {
    let reopened = if options.is_shared_description() {
        None
    } else {
        match sys::reopen_private(read, Access::Read) {
            Ok(private_read) => {
                let private_write = sys::reopen_private(write, Access::Write).map_err(|e| {
                    Error::io(
                        format!("reopening jobserver descriptor {fd_write} privately"),
                        e,
                    )
                })?;
                Some((private_read, private_write))
            }
            Err(e) if e.kind() == io::ErrorKind::Unsupported => None,
            Err(e) => {
                return Err(Error::io(
                    format!("reopening jobserver descriptor {fd_read} privately"),
                    e,
                ))
            }
        }
    };
    match reopened {
        Some((private_read, private_write)) => {
            private_conn::<R>(private_read, Some(private_write), options)
        }
        None => shared_conn::<R>(read, write, options),
    }
}

/// The connection through a private non-blocking description `read` (read-write when
/// `write` is `None`): the runtime's reactor, or a helper with exclusive wake-ups.
pub(crate) fn private_conn<R: Reactor>(
    read: OwnedFd,
    write: Option<OwnedFd>,
    options: &ClientOptions,
) -> Result<Conn<R>, Error> {
    if !options.is_exclusive() {
        return Ok(Conn {
            reader: R::register(read)?,
            writer: write,
        });
    }
    let relay = write.as_ref().map(try_dup).transpose()?;
    Ok(Conn {
        reader: R::from_helper(HelperReactor::exclusive(read, relay)?)?,
        writer: write,
    })
}

/// The connection through the shared descriptions `read` and `write`, used as they are on
/// a helper thread.
pub(crate) fn shared_conn<R: Reactor>(
    read: BorrowedFd<'_>,
    write: BorrowedFd<'_>,
    options: &ClientOptions,
) -> Result<Conn<R>, Error> {
    if options.is_exclusive() {
        return Err(Error::new(
            ErrorKind::Unsupported,
            "exclusive wake-ups need a private description of the jobserver pipe, and this \
             platform cannot reopen an inherited pipe privately (no /proc/self/fd)",
        ));
    }
    let helper = HelperReactor::shared(try_dup(&read)?, try_dup(&write)?)?;
    Ok(Conn {
        reader: R::from_helper(helper)?,
        writer: Some(try_dup(&write)?),
    })
}

/// A duplicate (same description) at [`sys::MIN_FD`] or above, close-on-exec.
pub(crate) fn try_dup(fd: &impl AsFd) -> Result<OwnedFd, Error> {
    rustix::io::fcntl_dupfd_cloexec(fd, sys::MIN_FD)
        .map_err(|e| Error::io("duplicating a jobserver descriptor", e.into()))
}

impl<R: Reactor> Client<R> {
    /// Connects to the jobserver named in the environment.
    ///
    /// Looks at `CARGO_MAKEFLAGS`, then `MAKEFLAGS`, then `MFLAGS`; the first that names a
    /// jobserver decides (see [`Client::var`]).
    ///
    /// - For a pipe (`R,W`), both descriptors are first duplicated (at 3 or above), then the
    ///   duplicates are checked (open, a pipe, the right direction), so what was checked is
    ///   what is used even if a number is closed and reused meanwhile; they are then reopened
    ///   through `/proc/self/fd` as private descriptions, and only those are made
    ///   non-blocking. The inherited descriptions, shared with make and its other
    ///   children, are never changed. Where no private reopen exists, the client reads the
    ///   shared description as it is, on a helper thread
    ///   ([`HelperKind::Shared`](crate::thread::HelperKind::Shared)).
    /// - For a fifo, the path is opened read-write and non-blocking (so end-of-file cannot
    ///   happen while this process lives). A fifo or a character device is accepted; anything
    ///   else (a regular file, say) is refused and never written to.
    ///
    /// # Liveness
    ///
    /// make cannot tell a client that it is gone: the pipe never reaches end-of-file,
    /// because this client (and make's other children) hold a write end of it. So a client
    /// from the environment watches the server itself, while requests wait:
    ///
    /// - when connecting, it finds the server process: the farthest ancestor that has the
    ///   jobserver open (the top-level make, cargo, …), looking through `/proc` (about
    ///   0.3 ms, once); failing that, for a pipe, it remembers its parent;
    /// - every 500 ms while a request waits (on a process-wide timer thread, with nothing
    ///   for the application to do), it checks that this process is still running (a zombie
    ///   counts as exited), or that the parent is unchanged, and for a fifo that its path
    ///   still names the fifo it opened (make 4.4 removes it when it exits).
    ///
    /// When a check fails, every waiting request that cannot be met, and every later one,
    /// fails with [`ErrorKind::ServerGone`]: stop starting jobs and exit. The implicit slot
    /// still works, and tokens held are still written back, so whoever still shares the pipe
    /// loses none. A request granted at its first poll never arms the checks (they cost
    /// nothing then); a waiting one costs a read of `/proc/PID/stat` (or a `getppid`) and,
    /// for a fifo, a `stat` per 500 ms. A server that is not an ancestor (a daemon serving
    /// a fifo, say) is noticed only through its fifo's path.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NoJobserver`] when no variable names one, [`ErrorKind::Disabled`] when make
    /// passed negative descriptors (the make rule lacks `+`), [`ErrorKind::BadFds`] when the
    /// descriptors are closed or wrong (usually the same cause),
    /// [`ErrorKind::InvalidMakeflags`], [`ErrorKind::NotAFifo`], [`ErrorKind::Unsupported`]
    /// (a Windows semaphore; or a pipe without a private reopen, for a reactor that cannot
    /// wait on a helper thread), and for tokio [`ErrorKind::NoRuntime`].
    ///
    /// # Platform-specific behavior
    ///
    /// The private reopen of an inherited pipe needs Linux's `/proc/self/fd`. Elsewhere the
    /// shared description is read as it is through a helper thread (its flags are never
    /// changed); fifo jobservers are opened privately everywhere.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_env_with(env_lookup)
    }

    /// [`Client::from_env`] with a custom variable lookup (for tests and embedding), and the
    /// reactor's [default options](Reactor::default_options).
    ///
    /// # Errors
    ///
    /// As [`Client::from_env`].
    pub fn from_env_with(lookup: impl FnMut(&str) -> Option<Vec<u8>>) -> Result<Self, Error> {
        Self::from_env_with_options(&R::default_options(), lookup)
    }

    /// [`Client::from_env_with`] with [`ClientOptions`]: exclusive wake-ups, or the shared
    /// description of an inherited pipe. For the process environment pass
    /// [`env_var`](crate::env_var) as `lookup`.
    ///
    /// # Errors
    ///
    /// As [`Client::from_env`], and [`ErrorKind::Unsupported`] for exclusive wake-ups off
    /// Linux or without a private description.
    pub fn from_env_with_options(
        options: &ClientOptions,
        lookup: impl FnMut(&str) -> Option<Vec<u8>>,
    ) -> Result<Self, Error> {
        let found = makeflags::from_env(lookup).map_err(|err| {
            Error::new(
                ErrorKind::InvalidMakeflags,
                format!("{err}; fix or unset that variable"),
            )
            .with_source(err)
        })?;
        let var = found.var;
        let flags = found.flags;
        match flags.auth.clone() {
            Auth::None => Err(Error::new(
                ErrorKind::NoJobserver,
                "no jobserver in CARGO_MAKEFLAGS, MAKEFLAGS or MFLAGS: run under `make -jN` (with `+` on \
                 the rule) or use from_env_or_new to create a pool of your own",
            )),
            Auth::Disabled { read, write } => Err(Error::new(
                ErrorKind::Disabled,
                format!(
                    "make gave this command no jobserver (--jobserver-auth={read},{write}): it does not \
                     treat it as a recursive make. Mark the make rule recursive by prefixing the recipe \
                     line with `+` (or use $(MAKE) in it); until then, run one job at a time"
                ),
            )),
            Auth::Pipe { read, write } => {
                let var = var.unwrap_or(EnvVar::Makeflags);
                Self::connect_pipe(var, read, write, flags, options)
            }
            Auth::Fifo(path) => {
                Self::connect_fifo(var, PathBuf::from(OsString::from_vec(path)), flags, options)
            }
            Auth::Semaphore(name) => Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "the jobserver `{}` is a Windows semaphore, which this platform cannot open",
                    String::from_utf8_lossy(&name)
                ),
            )),
            _ => Err(Error::new(ErrorKind::Unsupported, "unsupported jobserver kind")),
        }
    }

    fn connect_pipe(
        var: EnvVar,
        read: RawFd,
        write: RawFd,
        flags: MakeFlags,
        options: &ClientOptions,
    ) -> Result<Self, Error> {
        // Duplicate first, then validate the duplicates: what was checked is what is used,
        // even if the numbers are closed and reused meanwhile (by another thread, say).
        let inherited = |fd: RawFd, access: Access| {
            sys::take_inherited(fd, access).map_err(|e| match e {
                TakeError::Problem(p) => fd_problem_error(var, read, write, fd, p),
                TakeError::Io(e) => Error::io(format!("duplicating jobserver descriptor {fd}"), e),
            })
        };
        let child_read = inherited(read, Access::Read)?;
        let child_write = inherited(write, Access::Write)?;
        let probe = liveness::Probe::pipe(child_read.as_fd());
        let conn = pipe_conn::<R>(
            child_read.as_fd(),
            child_write.as_fd(),
            options,
            read,
            write,
        )?;
        let child = ChildEnv::pipe_passing(&flags, Arc::new(child_read), Arc::new(child_write));
        Ok(Self::build(
            Machine::new(),
            Some(conn),
            Mode::Pipe,
            Some(var),
            flags,
            Some(child),
            None,
        )
        .watching(probe))
    }

    fn connect_fifo(
        var: Option<EnvVar>,
        path: PathBuf,
        flags: MakeFlags,
        options: &ClientOptions,
    ) -> Result<Self, Error> {
        let fd = sys::open_fifo(&path).map_err(|err| match err {
            FifoOpenError::NotAFifo(what) => Error::new(
                ErrorKind::NotAFifo,
                format!(
                    "the jobserver path {} is a {what}, not a fifo: refusing to write tokens into it. \
                     Check the --jobserver-auth=fifo: value in MAKEFLAGS",
                    path.display()
                ),
            ),
            FifoOpenError::Io(e) => Error::io(
                format!("opening the jobserver fifo {} (did its make exit?)", path.display()),
                e,
            ),
        })?;
        let probe = liveness::Probe::fifo(fd.as_fd(), &path);
        let conn = private_conn::<R>(fd, None, options)?;
        let child = ChildEnv::fifo_passing(&flags, path.as_os_str().as_encoded_bytes());
        Ok(Self::build(
            Machine::new(),
            Some(conn),
            Mode::Fifo,
            var,
            flags,
            Some(child),
            None,
        )
        .watching(probe))
    }

    /// Connects to the jobserver named in the environment, or, when there is none, creates a
    /// pool of `jobs` (an anonymous pipe) that this process and the children it configures
    /// share. The pool lives as long as any client of it.
    ///
    /// When make disabled the jobserver for this command (negative descriptors, or closed
    /// descriptors because the make rule lacks `+`), this follows make's own rule and returns a
    /// client with only the implicit slot (one job at a time); [`Client::degraded`] says why.
    ///
    /// # Errors
    ///
    /// Any other error of [`Client::from_env`], and errors creating the pool.
    pub fn from_env_or_new(jobs: usize) -> Result<Self, Error> {
        Self::from_env_or_new_with(jobs, env_lookup)
    }

    /// [`Client::from_env_or_new`] with a custom variable lookup.
    ///
    /// # Errors
    ///
    /// As [`Client::from_env_or_new`].
    pub fn from_env_or_new_with(
        jobs: usize,
        lookup: impl FnMut(&str) -> Option<Vec<u8>>,
    ) -> Result<Self, Error> {
        Self::from_env_or_new_with_options(jobs, &R::default_options(), lookup)
    }

    /// [`Client::from_env_or_new_with`] with [`ClientOptions`], which apply to the own pool's
    /// client too.
    ///
    /// # Errors
    ///
    /// As [`Client::from_env_or_new`] and [`Client::from_env_with_options`].
    pub fn from_env_or_new_with_options(
        jobs: usize,
        options: &ClientOptions,
        lookup: impl FnMut(&str) -> Option<Vec<u8>>,
    ) -> Result<Self, Error> {
        match Self::from_env_with_options(options, lookup) {
            Ok(client) => Ok(client),
            Err(err) if err.kind() == ErrorKind::NoJobserver => {
                Server::<R>::new(jobs)?.client_with(options)
            }
            Err(err) if matches!(err.kind(), ErrorKind::Disabled | ErrorKind::BadFds) => {
                Ok(Self::implicit_only(Some(err)))
            }
            Err(err) => Err(err),
        }
    }

    /// A client with no jobserver: only the implicit slot, so one job at a time.
    pub fn implicit_only(reason: Option<Error>) -> Self {
        Self::build(
            Machine::implicit_only(),
            None,
            Mode::ImplicitOnly,
            None,
            MakeFlags::default(),
            None,
            reason,
        )
    }

    pub(crate) fn build(
        machine: Machine,
        conn: Option<Conn<R>>,
        mode: Mode,
        var: Option<EnvVar>,
        flags: MakeFlags,
        child: Option<ChildEnv>,
        degraded: Option<Error>,
    ) -> Self {
        Client {
            shared: crate::registry::shared_for(machine, conn),
            info: Arc::new(Info {
                mode,
                var,
                flags,
                child,
                degraded,
                _server: None,
            }),
        }
    }

    /// Makes waiting requests check, periodically, that the server is still there (see
    /// `crate::liveness`).
    fn watching(self, probe: liveness::Probe) -> Self {
        self.shared.liveness.set_probe(probe);
        self
    }

    /// The client's shared state, for a server that watches the clients of its pool.
    pub(crate) fn shared_weak(&self) -> std::sync::Weak<Shared<R>> {
        Arc::downgrade(&self.shared)
    }

    pub(crate) fn keep_alive(mut self, server: Arc<dyn std::any::Any + Send + Sync>) -> Self {
        if let Some(info) = Arc::get_mut(&mut self.info) {
            info._server = Some(server);
        }
        self
    }

    /// Sets how released tokens are passed on, for every client of this pool in the process
    /// on this runtime (they share one machine); see [`ReleasePolicy`]. The default,
    /// [`ReleasePolicy::ReturnToPipe`], writes every released explicit token back to the
    /// jobserver at once, so processes waiting on it get their turn.
    pub fn set_release_policy(&self, policy: ReleasePolicy) {
        self.shared.set_policy(policy);
    }

    /// Waits for one token.
    ///
    /// The first token of the process is its implicit slot and needs no read. Requests are
    /// served in the order they were first polled (a future joins the queue when it is
    /// first polled, not when `acquire` is called); each token read wakes exactly one
    /// request.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future withdraws the request and passes on any token already
    /// granted to it, so no token is lost; the request's place in the queue is lost. See
    /// [`Acquire`] for what happens to a future that is kept but no longer polled.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::ServerGone`] when the jobserver reaches end-of-file or its server is
    /// found gone while the request waits (see [`Client::from_env`], *Liveness*),
    /// [`ErrorKind::Io`] when reading it fails.
    pub fn acquire(&self) -> Acquire<R> {
        self.shared.acquire(1)
    }

    /// Waits for `n` tokens at once, all or nothing, returned as one [`Token`].
    ///
    /// Tokens that arrive while the request waits for the rest are held for it; requests made
    /// later wait behind it.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future gives back every token held for it (to the next
    /// request or to the jobserver).
    ///
    /// `acquire_many(0)` completes at once (in its turn) with a token of zero units.
    ///
    /// # Errors
    ///
    /// As [`Client::acquire`]. Requests that could never be met fail at once with
    /// [`ErrorKind::Capacity`], without queueing or reading anything: `n` above
    /// [`MAX_UNITS`](crate::MAX_UNITS) (no jobserver can hold that many), and `n > 1` on a
    /// client without a jobserver ([`Mode::ImplicitOnly`]: it only has its implicit slot).
    pub fn acquire_many(&self, n: usize) -> Acquire<R> {
        self.shared.acquire(n)
    }

    /// Takes one token if one is free now, without waiting: the implicit slot, or a byte that
    /// a single non-blocking read finds. Requests already waiting come first.
    ///
    /// # Errors
    ///
    /// As [`Client::acquire`].
    pub fn try_acquire(&self) -> Result<Option<Token<R>>, Error> {
        self.shared.try_acquire(1, false)
    }

    /// Takes `n` tokens at once if they are all free now, without waiting: all or nothing,
    /// as [`Client::acquire_many`]. `Ok(None)` when fewer are free (bytes read for the
    /// attempt go back). Requests already waiting come first.
    ///
    /// # Errors
    ///
    /// As [`Client::acquire_many`].
    pub fn try_acquire_many(&self, n: usize) -> Result<Option<Token<R>>, Error> {
        self.shared.try_acquire(n, false)
    }

    /// Takes as many tokens as are free now, up to `n`, without waiting (for a tool deciding
    /// how many threads to run). `Ok(None)` when none is free. Any `n` is accepted: above
    /// [`MAX_UNITS`](crate::MAX_UNITS) it means the same as that bound.
    ///
    /// # Errors
    ///
    /// As [`Client::acquire`].
    pub fn try_acquire_up_to(&self, n: usize) -> Result<Option<Token<R>>, Error> {
        self.shared.try_acquire(n, true)
    }

    /// Lets `cmd`'s child share this jobserver: sets `MAKEFLAGS`, `CARGO_MAKEFLAGS` and
    /// `MFLAGS`, and in pipe mode makes the pipe inheritable in that child only: other
    /// children do not get *our* descriptors. (The descriptors make handed this process, at
    /// the numbers in its `MAKEFLAGS`, are make's; they stay inheritable as make left them,
    /// and children that are not configured may inherit them without being told.) The
    /// descriptors stay open for as long as `cmd` exists, even if the client is dropped.
    ///
    /// What the child gets, as make would give it:
    /// - `MAKEFLAGS` and `CARGO_MAKEFLAGS` ([`Client::makeflags`]): for a client from the
    ///   environment, the one-letter flags make passed (`d`, `i`, `k`, `n`, `s`), the jobs
    ///   hint, the jobserver (at our own descriptors, or the fifo's path), and make's
    ///   command-line variables (`-- FOO=bar`), for example
    ///   `k -j4 --jobserver-fds=5,6 --jobserver-auth=5,6 -- FOO=bar`. Other options of the
    ///   inherited value (`--no-print-directory`, `-w`, `-O`, `-I DIR`, `--debug` levels
    ///   beyond `d`) are not passed on. For a pool of our own, only the jobs hint and the
    ///   jobserver.
    /// - `MFLAGS`: the same options without the variables, the flag cluster with its dash
    ///   (`-k -j4 --jobserver-fds=5,6 --jobserver-auth=5,6`), as make sets it. An inherited
    ///   `MFLAGS` would otherwise name make's descriptors, not ours.
    ///
    /// For a tokio command use `cmd.as_std_mut()`; for async-process, configure a
    /// `std::process::Command` and convert it with `From`.
    ///
    /// A client without a jobserver leaves `cmd` unchanged.
    pub fn configure<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        if let Some(child) = &self.info.child {
            child.apply(cmd);
        }
        cmd
    }

    /// Makes the jobserver pipe inheritable by *every* child this process spawns from now
    /// on, for a process all of whose children should share the pool (a task runner).
    ///
    /// After this, [`Client::configure`] only sets the variables: it adds no `pre_exec`
    /// hook, so `std` can spawn with `posix_spawn` (a vfork) instead of `fork`, which is
    /// several times cheaper for a busy process. Children that are *not* configured also
    /// inherit the descriptors (without being told about them). The descriptors stay open
    /// while a clone of this client lives, so spawn configured commands before dropping the
    /// last one. Nothing to do for a fifo jobserver or without one.
    ///
    /// # Errors
    ///
    /// When clearing close-on-exec fails.
    pub fn inherit_in_every_child(&self) -> io::Result<()> {
        if let Some(child) = &self.info.child {
            if let Some((read, write)) = &child.fds {
                sys::set_cloexec(read.as_raw_fd(), false)?;
                sys::set_cloexec(write.as_raw_fd(), false)?;
                child
                    .inherit_all
                    .store(true, std::sync::atomic::Ordering::Release);
            }
        }
        Ok(())
    }

    /// The value this client gives children in `MAKEFLAGS` and `CARGO_MAKEFLAGS`, if it has a
    /// jobserver; see [`Client::configure`].
    pub fn makeflags(&self) -> Option<&std::ffi::OsStr> {
        self.info.child.as_ref().map(|c| c.makeflags.as_os_str())
    }

    /// How this client reaches its tokens.
    pub fn mode(&self) -> Mode {
        self.info.mode
    }

    /// The variable the jobserver was found in (`None` for an own pool or no jobserver).
    pub fn var(&self) -> Option<EnvVar> {
        self.info.var
    }

    /// The flags parsed from that variable: dry run, keep going, the jobs hint, …
    pub fn flags(&self) -> &MakeFlags {
        &self.info.flags
    }

    /// Why [`Client::from_env_or_new`] fell back to the implicit slot, if it did. Worth
    /// showing the user: it usually means a make rule lacks `+`.
    pub fn degraded(&self) -> Option<&Error> {
        self.info.degraded.as_ref()
    }

    /// Wait times and peaks of this client and its clones; see [`Metrics`](crate::Metrics).
    ///
    /// ```
    /// # fn main() -> Result<(), jobserver_io::Error> {
    /// let client = jobserver_io::blocking::Client::from_env_or_new(2)?;
    /// drop(client.acquire()?);
    /// let m = client.metrics();
    /// assert_eq!((m.granted, m.peak_units), (1, 1));
    /// # Ok(())
    /// # }
    /// ```
    pub fn metrics(&self) -> crate::Metrics {
        self.shared.metrics()
    }

    /// Counters and gauges of the token machine.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Token bytes sitting in the jobserver pipe now, by `FIONREAD`: free tokens of the whole
    /// pool that no process holds, *not* how many this client could take (the implicit slot
    /// is not counted, and another process may take any of them first). `None` without a
    /// jobserver. [`Server::available`](crate::Server::available) is the same measure on the
    /// server side.
    ///
    /// # Errors
    ///
    /// When the ioctl fails.
    pub fn available(&self) -> io::Result<Option<usize>> {
        self.shared
            .reader_fd()
            .map(sys::bytes_available)
            .transpose()
    }

    /// Takes the most recent failure to write a token back (from a `Token` dropped without
    /// [`Token::release`]). Each failure is counted in [`Stats::write_failures`]; the byte is
    /// kept ([`Stats::bytes_unwritten`]) and written at the next operation.
    ///
    /// The error is an [`ErrorKind::Io`] (as [`Token::release`] returns), whose
    /// [`source`](std::error::Error::source) is the [`io::Error`] of the write.
    pub fn take_release_error(&self) -> Option<Error> {
        self.shared
            .take_write_error()
            .map(|err| Error::io("writing a token back to the jobserver failed", err))
    }
}
