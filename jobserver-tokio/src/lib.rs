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

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::task::{Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use jobserver_io::thread::HelperReactor;
use jobserver_io::Filled;

jobserver_io::adapter_api!(TokioReactor, "tokio");

/// Reads the jobserver through tokio's reactor (`AsyncFd`), or through a helper thread
/// ([`HelperReactor`]) where tokio's reactor must not be used: the shared description of an
/// inherited pipe without a private reopen, or exclusive wake-ups
/// ([`ClientOptions::exclusive_wakeups`]).
#[derive(Debug)]
pub struct TokioReactor {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Fd(AsyncFd<OwnedFd>),
    Helper(HelperReactor),
}

impl TokioReactor {
    /// The helper thread this reactor waits on, if it is not tokio's own reactor.
    pub fn helper(&self) -> Option<&HelperReactor> {
        match &self.inner {
            Inner::Helper(helper) => Some(helper),
            Inner::Fd(_) => None,
        }
    }
}

impl jobserver_io::Reactor for TokioReactor {
    fn register(fd: OwnedFd) -> Result<Self, Error> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::new(
                ErrorKind::NoRuntime,
                "a jobserver_tokio client must be created inside a tokio runtime (with I/O enabled)",
            ));
        }
        let register = std::panic::AssertUnwindSafe(move || {
            // SAFETY: `OwnedFd` owns an open descriptor that it never replaces; it stays open
            // and names the same description until the `AsyncFd` (its only owner) is dropped.
            unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
        });
        // tokio panics instead of failing when the runtime was built without I/O.
        let fd = match std::panic::catch_unwind(register) {
            Ok(Ok(fd)) => fd,
            Ok(Err(e)) => {
                return Err(Error::io("registering the jobserver with tokio's reactor", io::Error::from(e)))
            }
            Err(_) => {
                return Err(Error::new(
                    ErrorKind::NoRuntime,
                    "the tokio runtime has no I/O driver: build it with `enable_io()` (or `enable_all()`)",
                ))
            }
        };
        Ok(TokioReactor {
            inner: Inner::Fd(fd),
        })
    }

    fn fd(&self) -> BorrowedFd<'_> {
        match &self.inner {
            Inner::Fd(fd) => fd.get_ref().as_fd(),
            Inner::Helper(helper) => helper.fd(),
        }
    }

    fn direct_io(&self) -> bool {
        match &self.inner {
            Inner::Fd(_) => true,
            Inner::Helper(helper) => helper.direct_io(),
        }
    }

    fn from_helper(helper: HelperReactor) -> Result<Self, Error> {
        Ok(TokioReactor {
            inner: Inner::Helper(helper),
        })
    }

    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<Filled>> {
        let fd = match &self.inner {
            Inner::Fd(fd) => fd,
            Inner::Helper(helper) => return helper.poll_read(cx, buf),
        };
        loop {
            let mut guard = match fd.poll_read_ready(cx) {
                Poll::Ready(Ok(guard)) => guard,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    // Registered. tokio has seen no readiness since the pipe was last found
                    // empty; try once anyway (first use, or bytes not reported yet).
                    return match jobserver_io::sys::read(fd.get_ref().as_fd(), buf) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
                        Ok(n) => Poll::Ready(Ok(Filled {
                            len: n,
                            armed: n > 0 && n < buf.len(),
                        })),
                        Err(e) => Poll::Ready(Err(e)),
                    };
                }
            };
            match guard.try_io(|fd| jobserver_io::sys::read(fd.get_ref().as_fd(), buf)) {
                Ok(Ok(n)) if n > 0 && n < buf.len() => {
                    // A short read: the pipe ran empty. Clear the readiness seen before the
                    // read (tokio keeps any newer event) and register for the next one.
                    guard.clear_ready();
                    drop(guard);
                    let armed = fd.poll_read_ready(cx).is_pending();
                    return Poll::Ready(Ok(Filled { len: n, armed }));
                }
                Ok(done) => return Poll::Ready(done.map(Filled::unarmed)),
                // try_io cleared the stale readiness; poll again to register.
                Err(_would_block) => continue,
            }
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
