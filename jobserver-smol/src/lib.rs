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
//! Spawning children that share the pool: configure a `std::process::Command` with
//! [`Client::configure`] and convert it, or use [`command`] for an `async_process::Command`.
//!
//! # Platform-specific behavior
//!
//! Unix. `Async::new` sets `O_NONBLOCK` on the descriptor it is given; it is only ever given a
//! private description (reopened through `/proc/self/fd` on Linux, or a fifo opened by this
//! process). Where no private reopen exists a pipe jobserver is refused with
//! [`ErrorKind::Unsupported`]. See [`jobserver_io`].
#![cfg(unix)]
#![doc(test(attr(deny(warnings))))]

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::task::{ready, Context, Poll};

use async_io::Async;
use jobserver_io::Filled;

jobserver_io::adapter_api!(AsyncIoReactor, "async-io (smol)");

/// An `async_process::Command` for `program` whose child shares `client`'s jobserver.
pub fn command(client: &Client, program: impl AsRef<OsStr>) -> async_process::Command {
    let mut cmd = std::process::Command::new(program);
    client.configure(&mut cmd);
    async_process::Command::from(cmd)
}

/// Reads the jobserver through async-io's reactor (`Async`).
#[derive(Debug)]
pub struct AsyncIoReactor {
    fd: Async<OwnedFd>,
}

impl jobserver_io::Reactor for AsyncIoReactor {
    fn register(fd: OwnedFd) -> Result<Self, Error> {
        let fd = Async::new(fd)
            .map_err(|e| Error::io("registering the jobserver with async-io's reactor", e))?;
        Ok(AsyncIoReactor { fd })
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.fd.get_ref().as_fd()
    }

    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<Filled>> {
        loop {
            match jobserver_io::sys::read(self.fd(), buf) {
                Ok(n) if n > 0 && n < buf.len() => {
                    // The pipe ran empty: register for the next readability now.
                    return Poll::Ready(Ok(Filled {
                        len: n,
                        armed: self.arm(cx),
                    }));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return Poll::Ready(done.map(Filled::unarmed)),
            }
            ready!(self.fd.poll_readable(cx))?;
        }
    }
}

impl AsyncIoReactor {
    /// Registers `cx`'s waker for the next readability. async-io first reports, once, the event
    /// that led here; the call after that registers (and re-arms the poller, which reports
    /// bytes already waiting).
    fn arm(&self, cx: &mut Context<'_>) -> bool {
        for _ in 0..2 {
            match self.fd.poll_readable(cx) {
                Poll::Pending => return true,
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(_)) => return false,
            }
        }
        false
    }
}
