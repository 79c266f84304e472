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
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

use crate::error::Error;
use crate::options::ClientOptions;

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

    /// The async-shaped client underneath (same machine, same connection), for the methods
    /// that this type's own shadow: [`crate::Client::acquire`] as a future, say.
    pub fn as_inner(&self) -> &crate::Client<ThreadReactor> {
        &self.inner
    }
}

/// A pool of our own for the blocking client; see [`crate::Server`].
pub type Server = crate::Server<ThreadReactor>;
