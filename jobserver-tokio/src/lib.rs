//! A GNU make jobserver client and server for tokio.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), jobserver_tokio::Error> {
//! // Join make's jobserver, or create a pool of 4 when there is none.
//! let client = jobserver_tokio::Client::from_env_or_new(4)?;
//! let mut tasks = Vec::new();
//! for i in 0..8 {
//!     let client = client.clone();
//!     tasks.push(tokio::spawn(async move {
//!         let _token = client.acquire().await?;
//!         // At most 4 of these run at once, counting what make's other jobs use.
//!         println!("job {i} runs");
//!         Ok::<_, jobserver_tokio::Error>(())
//!     }));
//! }
//! for task in tasks {
//!     task.await.expect("task panicked")?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Tokens come in FIFO order; each token read wakes exactly one task, and one party per
//! process (the client itself, not a task) waits for the pipe to become readable. A dropped
//! [`Acquire`] future never loses a token. The token accounting lives in `jobserver-proto`;
//! this crate only supplies a [`Reactor`](jobserver_io::Reactor) on tokio's `AsyncFd`.
//!
//! A client outlives the runtime it was made in: once that runtime is dropped, it registers
//! again with the runtime it is used from (see [`TokioReactor`]), so a client kept in a
//! `static` and shared by several `#[tokio::test]`s works.
//!
//! Spawning children that share the pool: [`Client::configure`] (or [`Server::configure`])
//! takes a `std::process::Command`; for `tokio::process::Command` pass `cmd.as_std_mut()`.
//!
//! # Platform-specific behavior
//!
//! Unix. On Linux an inherited pipe is reopened through `/proc/self/fd` so that `O_NONBLOCK`
//! is set only on a private description, which tokio's reactor watches. Elsewhere (macOS, the
//! BSDs) the shared description is read as it is through a helper thread, and never changed;
//! fifo jobservers and pools of our own have a private description everywhere. Exclusive
//! wake-ups ([`ClientOptions::exclusive_wakeups`], Linux) also wait on a helper thread. See
//! [`jobserver_io`].
#![cfg(unix)]
#![doc(test(attr(deny(warnings))))]

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;
use std::task::{Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use jobserver_io::blocking::ThreadReactor;
use jobserver_io::thread::HelperReactor;
use jobserver_io::Filled;
use jobserver_io::Reactor as _;

jobserver_io::adapter_api!(TokioReactor, "tokio");

/// Reads the jobserver through tokio's reactor (`AsyncFd`).
///
/// # A client outlives its runtime
///
/// The descriptor is registered with the runtime the client is made in. When that runtime is
/// dropped (tokio then fails every registration with it: "A Tokio 1.x context was found, but
/// it is being shutdown"), the next read registers the descriptor again with the runtime it
/// is called from. So a client made in one runtime keeps working in the next one, as a client
/// in a `static` shared by several `#[tokio::test]`s must. While no runtime is available to
/// register with (the client used from a plain thread, or inside a runtime that is shutting
/// down), the client waits for the jobserver with a helper thread, as the blocking client
/// does, and moves back to tokio at the first read made inside a runtime. No token is lost on
/// the way, and a request does not fail because a runtime went away.
///
/// A runtime that lives on but is no longer driven (a current-thread runtime outside
/// `block_on`) is not gone: a client registered with it waits for readiness through it.
///
/// The check costs nothing on the hot path: it is made only when tokio reports the
/// registration dead. [`Reactor::fd`](jobserver_io::Reactor::fd) is the same descriptor
/// throughout, whatever the registration; each registration is a duplicate of it (the same
/// open file description, so nothing about its flags changes).
///
/// # A helper thread instead
///
/// Where tokio's reactor must not be used (the shared description of an inherited pipe
/// without a private reopen, or exclusive wake-ups, [`ClientOptions::exclusive_wakeups`]) the
/// reactor waits on a [`HelperReactor`] for its whole life instead.
#[derive(Debug)]
pub struct TokioReactor {
    mode: Waits,
}

#[derive(Debug)]
enum Waits {
    /// tokio's reactor, registered again when its runtime goes.
    Runtime(Registered),
    /// A helper thread for the reactor's whole life.
    Helper(HelperReactor),
}

#[derive(Debug)]
struct Registered {
    /// The private, non-blocking description of the jobserver's read side: what `fd()`
    /// gives, the same for the reactor's whole life.
    fd: OwnedFd,
    /// How readiness is waited for now. Only `poll_read` takes the lock, and the driver calls
    /// it from one place at a time, so it is never contended.
    watch: Mutex<Watch>,
}

impl TokioReactor {
    /// The helper thread this reactor waits on for its whole life, if it does not use
    /// tokio's own reactor.
    pub fn helper(&self) -> Option<&HelperReactor> {
        match &self.mode {
            Waits::Helper(helper) => Some(helper),
            Waits::Runtime(_) => None,
        }
    }
}

/// Who waits for readiness on the jobserver's behalf.
#[derive(Debug)]
enum Watch {
    /// A runtime's reactor, through a duplicate of the descriptor.
    Tokio(AsyncFd<OwnedFd>),
    /// A helper thread: the runtime registered with is gone and none was available.
    Thread {
        reactor: ThreadReactor,
        /// Whether a read inside a runtime should move back to it. Cleared after a runtime
        /// without I/O was met (each try would make tokio panic, caught but reported by the
        /// panic hook): the helper thread then stays.
        retry: bool,
    },
}

/// A duplicate of `fd`: the same open file description, close-on-exec, numbered 3 or above
/// (std's `F_DUPFD_CLOEXEC` starts at 3, as `jobserver_io::sys::MIN_FD`).
fn duplicate(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    fd.try_clone_to_owned()
}

/// Why [`register_with_current`] could not register.
enum Unregistered {
    /// No runtime is current.
    NoRuntime,
    /// The current runtime was built without I/O (tokio panics on it: caught).
    NoIo,
    /// Duplicating the descriptor or registering it failed (a runtime shutting down, say).
    Failed(Error),
}

impl From<Unregistered> for Error {
    fn from(why: Unregistered) -> Error {
        match why {
            Unregistered::NoRuntime => Error::new(
                ErrorKind::NoRuntime,
                "a jobserver_tokio client must be created inside a tokio runtime (with I/O enabled)",
            ),
            Unregistered::NoIo => Error::new(
                ErrorKind::NoRuntime,
                "the tokio runtime has no I/O driver: build it with `enable_io()` (or `enable_all()`)",
            ),
            Unregistered::Failed(e) => e,
        }
    }
}

/// The current runtime's reactor, watching a new duplicate of `fd`.
fn register_with_current(fd: BorrowedFd<'_>) -> Result<AsyncFd<OwnedFd>, Unregistered> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(Unregistered::NoRuntime);
    }
    let dup = duplicate(fd).map_err(|e| {
        Unregistered::Failed(Error::io(
            "duplicating the jobserver descriptor for tokio's reactor",
            e,
        ))
    })?;
    let register = std::panic::AssertUnwindSafe(move || {
        // SAFETY: `OwnedFd` owns an open descriptor that it never replaces; it stays open
        // and names the same description until the `AsyncFd` (its only owner) is dropped.
        unsafe { AsyncFd::register_with_interest(dup, Interest::READABLE) }
    });
    // tokio panics instead of failing when the runtime was built without I/O.
    match std::panic::catch_unwind(register) {
        Ok(Ok(fd)) => Ok(fd),
        Ok(Err(e)) => Err(Unregistered::Failed(Error::io(
            "registering the jobserver with tokio's reactor",
            io::Error::from(e),
        ))),
        Err(_) => Err(Unregistered::NoIo),
    }
}

/// What a read through a registration came to: done, or the registration's runtime is gone.
enum Read {
    Done(Poll<io::Result<Filled>>),
    RuntimeGone,
}

/// Polls `registered` for read readiness outside tokio's cooperative budget.
///
/// Once a task's budget is spent, `AsyncFd::poll_read_ready` returns `Pending` and wakes the
/// waker at once (inside this call, outside tokio's workers), which
/// [`Reactor::poll_read`](jobserver_io::Reactor::poll_read)
/// must not do: the driver would read again at once, for ever. The budget is for a task's
/// own work; this read is the driver's, made once for every task of the process, and it
/// never loops (a readiness that finds nothing clears itself and registers).
fn poll_read_ready<'a>(
    registered: &'a AsyncFd<OwnedFd>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<tokio::io::unix::AsyncFdReadyGuard<'a, OwnedFd>>> {
    let mut ready =
        tokio::task::coop::unconstrained(std::future::poll_fn(|cx| registered.poll_read_ready(cx)));
    std::pin::Pin::new(&mut ready).poll(cx)
}

/// One read through tokio's readiness for `registered`, reading from `fd` (the same
/// description).
fn poll_read_tokio(
    registered: &AsyncFd<OwnedFd>,
    fd: BorrowedFd<'_>,
    cx: &mut Context<'_>,
    buf: &mut [u8],
) -> Read {
    loop {
        let mut guard = match poll_read_ready(registered, cx) {
            Poll::Ready(Ok(guard)) => guard,
            // tokio's only error here: its I/O driver has shut down.
            Poll::Ready(Err(_)) => return Read::RuntimeGone,
            Poll::Pending => {
                // Registered. tokio has seen no readiness since the pipe was last found
                // empty; try once anyway (first use, or bytes not reported yet).
                return Read::Done(match jobserver_io::sys::read(fd, buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
                    Ok(n) => Poll::Ready(Ok(Filled {
                        len: n,
                        armed: n > 0 && n < buf.len(),
                    })),
                    Err(e) => Poll::Ready(Err(e)),
                });
            }
        };
        match guard.try_io(|_| jobserver_io::sys::read(fd, buf)) {
            Ok(Ok(n)) if n > 0 && n < buf.len() => {
                // A short read: the pipe ran empty. Clear the readiness seen before the
                // read (tokio keeps any newer event) and register for the next one.
                guard.clear_ready();
                drop(guard);
                let armed = poll_read_ready(registered, cx).is_pending();
                return Read::Done(Poll::Ready(Ok(Filled { len: n, armed })));
            }
            Ok(done) => return Read::Done(Poll::Ready(done.map(Filled::unarmed))),
            // try_io cleared the stale readiness; poll again to register.
            Err(_would_block) => continue,
        }
    }
}

impl Registered {
    fn lock(&self) -> std::sync::MutexGuard<'_, Watch> {
        // Only ever replaced whole, so a poisoned lock still holds a usable value.
        self.watch.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl jobserver_io::Reactor for TokioReactor {
    fn register(fd: OwnedFd) -> Result<Self, Error> {
        let registered = register_with_current(fd.as_fd()).map_err(Error::from)?;
        Ok(TokioReactor {
            mode: Waits::Runtime(Registered {
                fd,
                watch: Mutex::new(Watch::Tokio(registered)),
            }),
        })
    }

    fn fd(&self) -> BorrowedFd<'_> {
        match &self.mode {
            Waits::Runtime(r) => r.fd.as_fd(),
            Waits::Helper(helper) => helper.fd(),
        }
    }

    fn direct_io(&self) -> bool {
        match &self.mode {
            Waits::Runtime(_) => true,
            Waits::Helper(helper) => helper.direct_io(),
        }
    }

    fn from_helper(helper: HelperReactor) -> Result<Self, Error> {
        Ok(TokioReactor {
            mode: Waits::Helper(helper),
        })
    }

    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<Filled>> {
        match &self.mode {
            Waits::Runtime(r) => r.poll_read(cx, buf),
            Waits::Helper(helper) => helper.poll_read(cx, buf),
        }
    }
}

impl Registered {
    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<Filled>> {
        let mut watch = self.lock();
        let retry = match &*watch {
            Watch::Tokio(registered) => match poll_read_tokio(registered, self.fd.as_fd(), cx, buf)
            {
                Read::Done(poll) => return poll,
                Read::RuntimeGone => true,
            },
            Watch::Thread { retry, .. } => *retry,
        };
        // Off the hot path: the runtime registered with is gone, or a helper thread waits
        // because none was available. Move to the current runtime if there is one.
        let mut no_io = false;
        if retry {
            match register_with_current(self.fd.as_fd()) {
                Ok(registered) => {
                    let read = poll_read_tokio(&registered, self.fd.as_fd(), cx, buf);
                    if let Read::Done(poll) = read {
                        // The old registration (and its duplicate, or the helper thread) go;
                        // `self.fd` stays.
                        *watch = Watch::Tokio(registered);
                        return poll;
                    }
                    // A runtime that is shutting down already: no better than none.
                }
                Err(Unregistered::NoIo) => no_io = true,
                Err(Unregistered::NoRuntime | Unregistered::Failed(_)) => {}
            }
        }
        if let Watch::Thread { reactor, retry } = &mut *watch {
            *retry &= !no_io;
            return reactor.poll_read(cx, buf);
        }
        let reactor = duplicate(self.fd.as_fd()).and_then(|dup| {
            ThreadReactor::register(dup).map_err(|e| io::Error::other(e.to_string()))
        });
        match reactor {
            Ok(reactor) => {
                let poll = reactor.poll_read(cx, buf);
                *watch = Watch::Thread {
                    reactor,
                    retry: !no_io,
                };
                poll
            }
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

/// A `tokio::process` child that holds a jobserver [`Token`] until it is reaped.
///
/// Made by [`spawn_with_token`]. The token goes back when [`TokioTokenChild::wait`]
/// completes; never while the child runs.
///
/// Dropping it while the child runs kills nothing and loses no token: a task on the current
/// runtime waits for the child and then gives the token back. Without a runtime at that
/// moment the token goes back at once (and tokio reaps the child in the background).
#[cfg(feature = "process")]
#[derive(Debug)]
pub struct TokioTokenChild {
    child: Option<tokio::process::Child>,
    token: Option<Token>,
}

/// Configures `cmd` to share `client`'s jobserver, spawns it, and ties `token` to the child
/// until it is reaped.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let client = jobserver_tokio::Client::from_env_or_new(2)?;
/// let token = client.acquire().await?;
/// let mut child = jobserver_tokio::spawn_with_token(&client, token, &mut tokio::process::Command::new("true"))?;
/// assert!(child.wait().await?.success()); // the token went back after the reap
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// When the spawn fails; the token is given back then.
#[cfg(feature = "process")]
pub fn spawn_with_token(
    client: &Client,
    token: Token,
    cmd: &mut tokio::process::Command,
) -> io::Result<TokioTokenChild> {
    client.configure(cmd.as_std_mut());
    let child = cmd.spawn()?;
    Ok(TokioTokenChild {
        child: Some(child),
        token: Some(token),
    })
}

#[cfg(feature = "process")]
impl TokioTokenChild {
    /// The child's process id, while it runs.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// The child, for its pipes.
    pub fn child_mut(&mut self) -> &mut tokio::process::Child {
        self.child.as_mut().expect("present until dropped")
    }

    /// The token the child holds, until it is reaped.
    pub fn token(&self) -> Option<&Token> {
        self.token.as_ref()
    }

    /// Sends `SIGKILL` to the child (without waiting). The token stays held until it is
    /// reaped.
    ///
    /// # Errors
    ///
    /// As `tokio::process::Child::start_kill`.
    pub fn start_kill(&mut self) -> io::Result<()> {
        self.child_mut().start_kill()
    }

    /// Waits for the child to exit, then gives the token back.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future leaves the child running and the token held; wait
    /// again, or drop the `TokioTokenChild` (see its docs).
    ///
    /// # Errors
    ///
    /// As `tokio::process::Child::wait`; the token is given back either way.
    pub async fn wait(&mut self) -> io::Result<std::process::ExitStatus> {
        let status = self.child_mut().wait().await;
        drop(self.token.take());
        status
    }
}

#[cfg(feature = "process")]
impl Drop for TokioTokenChild {
    fn drop(&mut self) {
        let (Some(mut child), Some(token)) = (self.child.take(), self.token.take()) else {
            return;
        };
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = child.wait().await;
                drop(token);
            });
        }
    }
}
