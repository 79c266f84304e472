//! A blocking client for code that is not async (build scripts, thread pools).
//!
//! It drives the same token machine as the async adapters. Waiting threads park; one helper
//! thread per client ([`HelperReactor`](crate::thread::HelperReactor)) waits for the
//! jobserver whenever a request waits, so one party per process watches the pipe and each
//! token wakes exactly one thread.
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
use std::pin::pin;
use std::process::Command;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

use crate::client::Mode;
use crate::error::Error;
use crate::options::ClientOptions;
use crate::Stats;

/// The token type of the blocking client.
pub type Token = crate::Token<ThreadReactor>;

/// The [`Reactor`](crate::Reactor) of the blocking client: a helper thread that waits with
/// `poll(2)` (see [`HelperReactor`](crate::thread::HelperReactor), which it is).
pub type ThreadReactor = crate::thread::HelperReactor;

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

    /// [`Client::from_env_with`] with [`ClientOptions`]; see
    /// [`crate::Client::from_env_with_options`].
    ///
    /// # Errors
    ///
    /// As [`crate::Client::from_env_with_options`].
    pub fn from_env_with_options(
        options: &ClientOptions,
        lookup: impl FnMut(&str) -> Option<Vec<u8>>,
    ) -> Result<Self, Error> {
        crate::Client::from_env_with_options(options, lookup).map(Client::from)
    }

    /// [`Client::from_env_or_new_with`] with [`ClientOptions`]; see
    /// [`crate::Client::from_env_or_new_with_options`].
    ///
    /// # Errors
    ///
    /// As [`crate::Client::from_env_or_new`].
    pub fn from_env_or_new_with_options(
        jobs: usize,
        options: &ClientOptions,
        lookup: impl FnMut(&str) -> Option<Vec<u8>>,
    ) -> Result<Self, Error> {
        crate::Client::from_env_or_new_with_options(jobs, options, lookup).map(Client::from)
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
