//! A GNU make jobserver client and server for smol and every executor on async-io's reactor.
//!
//! ```
//! # fn main() -> Result<(), jobserver_smol::Error> {
//! futures_lite::future::block_on(async {
//!     // Join make's jobserver, or create a pool of 4 when there is none.
//!     let client = jobserver_smol::Client::from_env_or_new(4)?;
//!     let token = client.acquire().await?;
//!     // ... run one job ...
//!     drop(token);
//!     Ok(())
//! })
//! # }
//! ```
//!
//! Same names and semantics as `jobserver-tokio`: FIFO order, one wake per token, a dropped
//! [`Acquire`] never loses a token. No particular executor is needed: the client registers
//! with async-io's global reactor. Token accounting lives in `jobserver-proto`; this crate
//! only supplies a [`Reactor`](jobserver_io::Reactor) on `async_io::Async`.
//!
//! A client never outlives its reactor: async-io's reactor is global and lives as long as the
//! process, so a client made under one executor (or thread) keeps working under any other,
//! and needs nothing like the re-registration a tokio client does when its runtime is
//! dropped.
//!
//! Spawning children that share the pool: configure a `std::process::Command` with
//! [`Client::configure`] and convert it, or (with the default `process` feature) use
//! `command` for an `async_process::Command` and `spawn_with_token` for a child that holds
//! a token until it is reaped.
//!
//! # Platform-specific behavior
//!
//! Unix. `Async::new` sets `O_NONBLOCK` on the descriptor it is given; it is only ever given a
//! private description (reopened through `/proc/self/fd` on Linux, a fifo opened by this
//! process, or a pool of our own). Where no private reopen exists (macOS, the BSDs) the
//! shared description of an inherited pipe is read as it is through a helper thread, and
//! never changed. Exclusive wake-ups ([`ClientOptions::exclusive_wakeups`], Linux) also wait
//! on a helper thread. See [`jobserver_io`].
#![cfg(unix)]
#![doc(test(attr(deny(warnings))))]

#[cfg(feature = "process")]
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::task::{ready, Context, Poll};

use async_io::Async;
use jobserver_io::thread::HelperReactor;
use jobserver_io::Filled;

jobserver_io::adapter_api!(AsyncIoReactor, "async-io (smol)");

/// An `async_process::Command` for `program` whose child shares `client`'s jobserver.
#[cfg(feature = "process")]
pub fn command(client: &Client, program: impl AsRef<OsStr>) -> async_process::Command {
    let mut cmd = std::process::Command::new(program);
    client.configure(&mut cmd);
    async_process::Command::from(cmd)
}

/// Reads the jobserver through async-io's reactor (`Async`), or through a helper thread
/// ([`HelperReactor`]) where async-io's reactor must not be used: the shared description of
/// an inherited pipe without a private reopen, or exclusive wake-ups
/// ([`ClientOptions::exclusive_wakeups`]).
#[derive(Debug)]
pub struct AsyncIoReactor {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Fd(Async<OwnedFd>),
    Helper(HelperReactor),
}

impl AsyncIoReactor {
    /// The helper thread this reactor waits on, if it is not async-io's own reactor.
    pub fn helper(&self) -> Option<&HelperReactor> {
        match &self.inner {
            Inner::Helper(helper) => Some(helper),
            Inner::Fd(_) => None,
        }
    }
}

impl jobserver_io::Reactor for AsyncIoReactor {
    fn register(fd: OwnedFd) -> Result<Self, Error> {
        let fd = Async::new(fd)
            .map_err(|e| Error::io("registering the jobserver with async-io's reactor", e))?;
        Ok(AsyncIoReactor {
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
        Ok(AsyncIoReactor {
            inner: Inner::Helper(helper),
        })
    }

    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<Filled>> {
        let fd = match &self.inner {
            Inner::Fd(fd) => fd,
            Inner::Helper(helper) => return helper.poll_read(cx, buf),
        };
        loop {
            match jobserver_io::sys::read(fd.get_ref().as_fd(), buf) {
                Ok(n) if n > 0 && n < buf.len() => {
                    // The pipe ran empty: register for the next readability now.
                    return Poll::Ready(Ok(Filled {
                        len: n,
                        armed: arm(fd, cx),
                    }));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return Poll::Ready(done.map(Filled::unarmed)),
            }
            ready!(fd.poll_readable(cx))?;
        }
    }
}

/// Registers `cx`'s waker for the next readability. async-io first reports, once, the event
/// that led here; the call after that registers (and re-arms the poller, which reports
/// bytes already waiting).
fn arm(fd: &Async<OwnedFd>, cx: &mut Context<'_>) -> bool {
    for _ in 0..2 {
        match fd.poll_readable(cx) {
            Poll::Pending => return true,
            Poll::Ready(Ok(())) => continue,
            Poll::Ready(Err(_)) => return false,
        }
    }
    false
}

/// An `async_process` child that holds a jobserver [`Token`] until it is reaped.
///
/// Made by [`spawn_with_token`]. The token goes back when [`SmolTokenChild::status`]
/// completes; never while the child runs.
///
/// Dropping it while the child runs kills nothing and loses no token: a detached thread
/// waits for the child and then gives the token back.
#[cfg(feature = "process")]
#[derive(Debug)]
pub struct SmolTokenChild {
    child: Option<async_process::Child>,
    token: Option<Token>,
}

/// Spawns `cmd` (made by [`command`], so it shares `client`'s jobserver) and ties `token`
/// to the child until it is reaped.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// futures_lite::future::block_on(async {
///     let client = jobserver_smol::Client::from_env_or_new(2)?;
///     let token = client.acquire().await?;
///     let mut cmd = jobserver_smol::command(&client, "true");
///     let mut child = jobserver_smol::spawn_with_token(token, &mut cmd)?;
///     assert!(child.status().await?.success()); // the token went back after the reap
///     Ok(())
/// })
/// # }
/// ```
///
/// # Errors
///
/// When the spawn fails; the token is given back then.
#[cfg(feature = "process")]
pub fn spawn_with_token(
    token: Token,
    cmd: &mut async_process::Command,
) -> io::Result<SmolTokenChild> {
    let child = cmd.spawn()?;
    Ok(SmolTokenChild {
        child: Some(child),
        token: Some(token),
    })
}

#[cfg(feature = "process")]
impl SmolTokenChild {
    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// The child, for its pipes.
    pub fn child_mut(&mut self) -> &mut async_process::Child {
        self.child.as_mut().expect("present until dropped")
    }

    /// The token the child holds, until it is reaped.
    pub fn token(&self) -> Option<&Token> {
        self.token.as_ref()
    }

    /// Sends `SIGKILL` to the child. The token stays held until it is reaped.
    ///
    /// # Errors
    ///
    /// As `async_process::Child::kill`.
    pub fn kill(&mut self) -> io::Result<()> {
        self.child_mut().kill()
    }

    /// Waits for the child to exit, then gives the token back.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future leaves the child running and the token held.
    ///
    /// # Errors
    ///
    /// As `async_process::Child::status`; the token is given back either way.
    pub async fn status(&mut self) -> io::Result<std::process::ExitStatus> {
        let status = self.child_mut().status().await;
        drop(self.token.take());
        status
    }
}

#[cfg(feature = "process")]
impl Drop for SmolTokenChild {
    fn drop(&mut self) {
        let (Some(mut child), Some(token)) = (self.child.take(), self.token.take()) else {
            return;
        };
        if !matches!(child.try_status(), Ok(None)) {
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("jobserver-reaper".into())
            .spawn(move || {
                let _ = async_io::block_on(child.status());
                drop(token);
            });
        drop(spawned);
    }
}
