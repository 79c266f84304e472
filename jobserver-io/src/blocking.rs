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
use std::process::Command;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

use rustix::event::{poll, PollFd, PollFlags};

use crate::client::Mode;
use crate::driver::{Filled, Reactor};
use crate::error::Error;
use crate::sys;
use crate::Stats;

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
#[derive(Debug, Clone)]
pub struct Client {
    inner: crate::Client<ThreadReactor>,
}

impl From<crate::Client<ThreadReactor>> for Client {
    fn from(inner: crate::Client<ThreadReactor>) -> Self {
        Client { inner }
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

    /// One token if one is free now; see [`crate::Client::try_acquire`].
    ///
    /// # Errors
    ///
    /// As [`crate::Client::try_acquire`].
    pub fn try_acquire(&self) -> Result<Option<Token>, Error> {
        self.inner.try_acquire()
    }

    /// Spawns `cmd` sharing the pool, holding `token` until the child is reaped; see
    /// [`crate::Client::spawn_with_token`].
    ///
    /// # Errors
    ///
    /// When the spawn fails; the token is given back then.
    pub fn spawn_with_token(
        &self,
        token: Token,
        cmd: &mut Command,
    ) -> io::Result<crate::TokenChild<ThreadReactor>> {
        self.inner.spawn_with_token(token, cmd)
    }

    /// Wait times and peaks; see [`crate::Client::metrics`].
    pub fn metrics(&self) -> crate::Metrics {
        self.inner.metrics()
    }

    /// `n` tokens if all are free now; see [`crate::Client::try_acquire_many`].
    ///
    /// # Errors
    ///
    /// As [`crate::Client::try_acquire_many`].
    pub fn try_acquire_many(&self, n: usize) -> Result<Option<Token>, Error> {
        self.inner.try_acquire_many(n)
    }

    /// As many tokens as are free now, up to `n`; see [`crate::Client::try_acquire_up_to`].
    ///
    /// # Errors
    ///
    /// As [`crate::Client::try_acquire_up_to`].
    pub fn try_acquire_up_to(&self, n: usize) -> Result<Option<Token>, Error> {
        self.inner.try_acquire_up_to(n)
    }

    /// Lets `cmd`'s child share the jobserver; see [`crate::Client::configure`].
    pub fn configure<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        self.inner.configure(cmd)
    }

    /// Counters and gauges of the token machine; see [`crate::Client::stats`].
    pub fn stats(&self) -> Stats {
        self.inner.stats()
    }

    /// Tokens waiting in the jobserver pipe now; see [`crate::Client::available`].
    ///
    /// # Errors
    ///
    /// When the ioctl fails.
    pub fn available(&self) -> io::Result<Option<usize>> {
        self.inner.available()
    }

    /// The most recent failure to write a token back; see
    /// [`crate::Client::take_release_error`].
    pub fn take_release_error(&self) -> Option<io::Error> {
        self.inner.take_release_error()
    }

    /// Why the client fell back to the implicit slot; see [`crate::Client::degraded`].
    pub fn degraded(&self) -> Option<&Error> {
        self.inner.degraded()
    }

    /// The async-shaped client underneath (same machine, same connection).
    pub fn as_inner(&self) -> &crate::Client<ThreadReactor> {
        &self.inner
    }

    /// How this client reaches its tokens.
    pub fn mode(&self) -> Mode {
        self.inner.mode()
    }
}

/// A pool of our own for the blocking client; see [`crate::Server`].
pub type Server = crate::Server<ThreadReactor>;
