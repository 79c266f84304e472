//! A blocking client for code that is not async (build scripts, thread pools).
//!
//! It drives the same token machine as the async adapters. Waiting threads park; one helper
//! thread per client waits for the jobserver with `poll(2)` whenever a request waits, so one
//! party per process watches the pipe and each token wakes exactly one thread.
//!
//! ```
//! use jobserver_io::blocking::Client;
//!
//! # fn main() -> Result<(), jobserver_io::Error> {
//! let client = Client::from_env_or_new(4)?;
//! std::thread::scope(|s| {
//!     for i in 0..8 {
//!         let client = &client;
//!         s.spawn(move || {
//!             let _token = client.acquire().expect("jobserver failed");
//!             println!("job {i} runs");
//!         });
//!     }
//! });
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

use rustix::event::{poll, PollFd, PollFlags};

use crate::driver::{Filled, Reactor};
use crate::error::Error;
use crate::sys;

/// The token type of the blocking client.
pub type Token = crate::Token<ThreadReactor>;

struct Watch {
    /// Who to wake when the jobserver is readable; `None` while nobody needs to know.
    waker: Option<Waker>,
    stop: bool,
}

struct Inner {
    fd: OwnedFd,
    watch: Mutex<Watch>,
    armed: Condvar,
    /// Written to stop the helper's `poll`.
    stop_write: OwnedFd,
    stop_read: OwnedFd,
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Watch> {
        self.watch.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The helper thread: sleeps until a waker is armed, then waits for readability.
    fn run(&self) {
        loop {
            {
                let mut watch = self.lock();
                while watch.waker.is_none() && !watch.stop {
                    watch = self.armed.wait(watch).unwrap_or_else(|p| p.into_inner());
                }
                if watch.stop {
                    return;
                }
            }
            let mut fds = [
                PollFd::new(&self.fd, PollFlags::IN),
                PollFd::new(&self.stop_read, PollFlags::IN),
            ];
            match poll(&mut fds, None) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => {
                    // Wake the driver anyway: its read reports the error.
                }
            }
            if self.lock().stop {
                return;
            }
            let readable = !fds[0].revents().is_empty();
            if readable || fds[1].revents().is_empty() {
                let waker = self.lock().waker.take();
                if let Some(waker) = waker {
                    // A panicking waker must not end this thread: nobody would watch the
                    // jobserver any more, and waiting acquires would hang with tokens in it.
                    crate::driver::wake_catching(waker);
                }
            }
        }
    }
}

/// The [`Reactor`] of the blocking client: a helper thread that waits with `poll(2)`.
pub struct ThreadReactor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ThreadReactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadReactor").finish_non_exhaustive()
    }
}

impl Reactor for ThreadReactor {
    fn register(fd: OwnedFd) -> Result<Self, Error> {
        let (stop_read, stop_write) = sys::create_pipe()
            .map_err(|e| Error::io("creating the blocking client's wake-up pipe", e))?;
        let inner = Arc::new(Inner {
            fd,
            watch: Mutex::new(Watch {
                waker: None,
                stop: false,
            }),
            armed: Condvar::new(),
            stop_write,
            stop_read,
        });
        let helper = inner.clone();
        thread::Builder::new()
            .name("jobserver-poll".into())
            .spawn(move || helper.run())
            .map_err(|e| Error::io("starting the blocking client's helper thread", e))?;
        Ok(ThreadReactor { inner })
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.inner.fd.as_fd()
    }

    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<Filled>> {
        let arm = || {
            let mut watch = self.inner.lock();
            watch.waker = Some(cx.waker().clone());
            self.inner.armed.notify_one();
        };
        match sys::read(self.inner.fd.as_fd(), buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                arm();
                Poll::Pending
            }
            // The pipe ran empty: the helper's poll(2) is level-triggered, so arming now
            // cannot miss a byte that arrives in between.
            Ok(n) if n > 0 && n < buf.len() => {
                arm();
                Poll::Ready(Ok(Filled {
                    len: n,
                    armed: true,
                }))
            }
            other => Poll::Ready(other.map(Filled::unarmed)),
        }
    }
}

impl Drop for ThreadReactor {
    fn drop(&mut self) {
        self.inner.lock().stop = true;
        self.inner.armed.notify_one();
        // Interrupts a poll under way; the thread exits on its own (never joined here, since
        // the last reference may be dropped on that very thread).
        let _ = sys::write_byte(self.inner.stop_write.as_fd(), 0);
    }
}

struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

thread_local! {
    /// This thread's waker for [`block_on`], made once.
    static UNPARK: Waker = Waker::from(Arc::new(Unpark(thread::current())));
}

/// Runs a future to completion on this thread, parking between polls.
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    UNPARK.with(|waker| {
        let mut cx = Context::from_waker(waker);
        loop {
            if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return out;
            }
            thread::park();
        }
    })
}

/// A jobserver client with blocking methods. Same semantics and errors as the async clients.
///
/// It is the async-shaped [`crate::Client`] over [`ThreadReactor`] with blocking versions of
/// its two async methods, [`Client::acquire`] and [`Client::acquire_many`], and constructors
/// that return this type. Every other method is the async client's own, reached through
/// [`Deref`](std::ops::Deref) (listed below under *Methods from
/// `Deref<Target = Client<ThreadReactor>>`*): `try_acquire`, `configure`, `stats`,
/// `metrics`, `makeflags`, `flags`, `spawn_with_token`, and the rest. So the two clients can
/// never drift apart: a method added to the async client is there at once.
///
/// ```
/// use jobserver_io::blocking::{Client, Server};
///
/// # fn main() -> Result<(), jobserver_io::Error> {
/// let server = Server::new(2)?;
/// let client = Client::from(server.client()?);
/// let token = client.acquire()?; // blocks this thread, not a task
/// let second = client.try_acquire()?; // the async client's own method, through Deref
/// assert_eq!(second.map(|t| t.units()), Some(1));
/// assert!(client.makeflags().is_some());
/// drop(token);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    inner: crate::Client<ThreadReactor>,
}

impl From<crate::Client<ThreadReactor>> for Client {
    fn from(inner: crate::Client<ThreadReactor>) -> Self {
        Client { inner }
    }
}

impl From<Client> for crate::Client<ThreadReactor> {
    fn from(client: Client) -> Self {
        client.inner
    }
}

impl std::ops::Deref for Client {
    type Target = crate::Client<ThreadReactor>;

    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl Client {
    /// Connects to the jobserver named in the environment; see
    /// [`crate::Client::from_env`].
    ///
    /// # Errors
    ///
    /// As [`crate::Client::from_env`].
    pub fn from_env() -> Result<Self, Error> {
        crate::Client::from_env().map(Client::from)
    }

    /// Joins the environment's jobserver or creates a pool of `jobs`; see
    /// [`crate::Client::from_env_or_new`].
    ///
    /// # Errors
    ///
    /// As [`crate::Client::from_env_or_new`].
    pub fn from_env_or_new(jobs: usize) -> Result<Self, Error> {
        crate::Client::from_env_or_new(jobs).map(Client::from)
    }

    /// [`Client::from_env`] with a custom variable lookup; see
    /// [`crate::Client::from_env_with`].
    ///
    /// # Errors
    ///
    /// As [`crate::Client::from_env`].
    pub fn from_env_with(lookup: impl FnMut(&str) -> Option<Vec<u8>>) -> Result<Self, Error> {
        crate::Client::from_env_with(lookup).map(Client::from)
    }

    /// [`Client::from_env_or_new`] with a custom variable lookup.
    ///
    /// # Errors
    ///
    /// As [`crate::Client::from_env_or_new`].
    pub fn from_env_or_new_with(
        jobs: usize,
        lookup: impl FnMut(&str) -> Option<Vec<u8>>,
    ) -> Result<Self, Error> {
        crate::Client::from_env_or_new_with(jobs, lookup).map(Client::from)
    }

    /// A client with no jobserver, only the implicit slot; see
    /// [`crate::Client::implicit_only`].
    pub fn implicit_only(reason: Option<Error>) -> Self {
        Client::from(crate::Client::implicit_only(reason))
    }

    /// Blocks until one token is granted; see [`crate::Client::acquire`].
    ///
    /// # Errors
    ///
    /// As [`crate::Client::acquire`].
    pub fn acquire(&self) -> Result<Token, Error> {
        block_on(self.inner.acquire())
    }

    /// Blocks until `n` tokens are granted at once; see [`crate::Client::acquire_many`].
    ///
    /// # Errors
    ///
    /// As [`crate::Client::acquire_many`].
    pub fn acquire_many(&self, n: usize) -> Result<Token, Error> {
        block_on(self.inner.acquire_many(n))
    }

    /// The async-shaped client underneath (same machine, same connection), for the methods
    /// that this type's own shadow: [`crate::Client::acquire`] as a future, say.
    pub fn as_inner(&self) -> &crate::Client<ThreadReactor> {
        &self.inner
    }
}

/// A pool of our own for the blocking client; see [`crate::Server`].
pub type Server = crate::Server<ThreadReactor>;
