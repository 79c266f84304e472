//! The server: a token pool of our own, handed to the children we spawn.

use std::ffi::OsStr;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use jobserver_proto::makeflags::{Jobs, MakeFlags};
use jobserver_proto::{Machine, PoolPlan, Report};

use crate::client::{ChildEnv, Client, Mode};
use crate::driver::{Conn, Reactor};
use crate::error::{Error, ErrorKind};
use crate::sys::{self, Access, FifoOpenError};

enum Pool {
    Pipe {
        read: Arc<OwnedFd>,
        write: Arc<OwnedFd>,
    },
    Fifo {
        path: PathBuf,
        fd: OwnedFd,
    },
}

struct Inner {
    plan: PoolPlan,
    pool: Pool,
    child: ChildEnv,
}

impl Inner {
    fn read_fd(&self) -> BorrowedFd<'_> {
        match &self.pool {
            Pool::Pipe { read, .. } => read.as_fd(),
            Pool::Fifo { fd, .. } => fd.as_fd(),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Pool::Fifo { path, .. } = &self.pool {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A jobserver pool of `N` jobs that this process owns, generic over the runtime's [`Reactor`]
/// (which only its clients need).
///
/// The process itself counts as one job (its implicit slot), so the pipe is preloaded with
/// `N - 1` tokens. Children configured with [`Server::configure`] share the pool; so do the
/// clients from [`Server::client`].
///
/// A fifo pool's fifo is removed when the last of the server and its clients is dropped. A
/// process killed by `SIGKILL` (or any exit that skips destructors) leaves it behind in the
/// temporary directory.
pub struct Server<R: Reactor> {
    inner: Arc<Inner>,
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
    /// Creates a pool of `jobs` on an anonymous pipe (the mode every make version and the
    /// `jobserver` crate understand).
    ///
    /// The pipe is close-on-exec: only children passed to [`Server::configure`] inherit it.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Capacity`] for `jobs == 0` or a pool larger than the pipe can hold even
    /// after trying to grow it; [`ErrorKind::Io`] when the pipe cannot be created.
    pub fn new(jobs: usize) -> Result<Self, Error> {
        let (read, write) =
            sys::create_pipe().map_err(|e| Error::io("creating the jobserver pipe", e))?;
        let preload_writer = sys::reopen_private(write.as_fd(), Access::Write)
            .map_err(|e| Error::io("opening the new jobserver pipe for preloading", e))?;
        let plan = plan_and_preload(jobs, write.as_fd(), preload_writer.as_fd())?;
        let (read, write) = (Arc::new(read), Arc::new(write));
        let child = ChildEnv::pipe(Jobs::Limited(plan.jobs()), read.clone(), write.clone());
        Ok(Self::from_inner(Inner {
            plan,
            pool: Pool::Pipe { read, write },
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
        let child = ChildEnv::fifo(
            Jobs::Limited(plan.jobs()),
            path.as_os_str().as_encoded_bytes(),
        );
        Ok(Self::from_inner(Inner {
            plan,
            pool: Pool::Fifo { path, fd },
            child,
        }))
    }

    fn from_inner(inner: Inner) -> Self {
        Server {
            inner: Arc::new(inner),
            _reactor: PhantomData,
        }
    }

    /// A client for this process that shares the pool (its first token is this process's
    /// implicit slot). It keeps the pool alive.
    ///
    /// # Errors
    ///
    /// Opening a private description fails, or the runtime is missing
    /// ([`ErrorKind::NoRuntime`]).
    pub fn client(&self) -> Result<Client<R>, Error> {
        let mut flags = MakeFlags::default();
        flags.jobs = Jobs::Limited(self.inner.plan.jobs());
        let (conn, mode) = match &self.inner.pool {
            Pool::Pipe { read, write } => {
                let reader = sys::reopen_private(read.as_fd(), Access::Read)
                    .map_err(|e| Error::io("reopening the jobserver pipe", e))?;
                let writer = sys::reopen_private(write.as_fd(), Access::Write)
                    .map_err(|e| Error::io("reopening the jobserver pipe", e))?;
                (
                    Conn {
                        reader: R::register(reader)?,
                        writer: Some(writer),
                    },
                    Mode::Pipe,
                )
            }
            Pool::Fifo { path, .. } => {
                let fd = sys::open_fifo(path).map_err(|e| match e {
                    FifoOpenError::Io(e) => Error::io("opening the jobserver fifo", e),
                    other => Error::new(ErrorKind::Io, other.to_string()),
                })?;
                (
                    Conn {
                        reader: R::register(fd)?,
                        writer: None,
                    },
                    Mode::Fifo,
                )
            }
        };
        let child = Some(self.inner.child.clone());
        let client = Client::build(Machine::new(), Some(conn), mode, None, flags, child, None);
        Ok(client.keep_alive(self.inner.clone()))
    }

    /// Lets `cmd`'s child share the pool: sets `MAKEFLAGS` and `CARGO_MAKEFLAGS` to
    /// [`Server::makeflags`], and in pipe mode makes the pipe inheritable in that child only.
    /// The pipe stays open for as long as `cmd` exists, even if the server is dropped first.
    ///
    /// For a tokio command use `cmd.as_std_mut()`; for async-process, configure a
    /// `std::process::Command` and convert it with `From`.
    pub fn configure<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        self.inner.child.apply(cmd);
        cmd
    }

    /// The value children get in `MAKEFLAGS`: `-jN --jobserver-fds=R,W --jobserver-auth=R,W`
    /// for a pipe, `-jN --jobserver-auth=fifo:PATH` for a fifo.
    pub fn makeflags(&self) -> &OsStr {
        &self.inner.child.makeflags
    }

    /// The number of jobs, `N`.
    pub fn jobs(&self) -> usize {
        self.inner.plan.jobs().get()
    }

    /// The fifo's path, for a fifo pool.
    pub fn fifo_path(&self) -> Option<&Path> {
        match &self.inner.pool {
            Pool::Fifo { path, .. } => Some(path),
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

    /// Ends the pool: takes every token out of the pipe and compares the count with what was
    /// preloaded. Drop clients and wait for children first; tokens they still hold are
    /// reported as lost.
    ///
    /// # Errors
    ///
    /// When the pipe cannot be read.
    pub fn shutdown(self) -> Result<Report, Error> {
        let drain_fd;
        let fd = match &self.inner.pool {
            Pool::Pipe { read, .. } => {
                drain_fd = sys::reopen_private(read.as_fd(), Access::Read)
                    .map_err(|e| Error::io("reopening the jobserver pipe", e))?;
                drain_fd.as_fd()
            }
            Pool::Fifo { fd, .. } => fd.as_fd(),
        };
        let mut returned = 0;
        let mut buf = [0u8; 4096];
        loop {
            match sys::read(fd, &mut buf) {
                Ok(0) => break,
                Ok(n) => returned += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(Error::io("draining the jobserver pipe", e)),
            }
        }
        Ok(self.inner.plan.account(returned))
    }
}
