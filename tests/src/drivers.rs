//! The drivers behind one trait, so each conformance test is written once: tokio, smol and
//! the blocking client, plus two that wait on a helper thread through the runtime adapters:
//! `fallback` (tokio, forced to read inherited pipes through their shared description, as
//! where no `/proc/self/fd` exists) and `exclusive` (smol, exclusive wake-ups).

use std::future::Future;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use jobserver_io::blocking::ThreadReactor;
use jobserver_io::thread::HelperReactor;
use jobserver_io::{ClientOptions, Error, Filled, Reactor};
use jobserver_smol::AsyncIoReactor;
use jobserver_tokio::TokioReactor;

/// A boxed future that a spawned task's result arrives through.
pub type JoinFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A driver: its reactor, plus how to run and spawn futures on its runtime.
pub trait Driver: Reactor {
    /// `tokio`, `smol` or `blocking`.
    const NAME: &'static str;

    /// Runs `future` to completion in this driver's runtime (clients must be created inside).
    fn block_on<F: Future>(future: F) -> F::Output;

    /// Runs `future` concurrently: a tokio task, a smol task, or (blocking) its own thread.
    fn spawn<T: Send + 'static>(future: impl Future<Output = T> + Send + 'static) -> JoinFuture<T>;
}

impl Driver for TokioReactor {
    const NAME: &'static str = "tokio";

    fn block_on<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("building a tokio runtime")
            .block_on(future)
    }

    fn spawn<T: Send + 'static>(future: impl Future<Output = T> + Send + 'static) -> JoinFuture<T> {
        let handle = tokio::spawn(future);
        Box::pin(async move { handle.await.expect("task panicked") })
    }
}

impl Driver for AsyncIoReactor {
    const NAME: &'static str = "smol";

    fn block_on<F: Future>(future: F) -> F::Output {
        smol::block_on(future)
    }

    fn spawn<T: Send + 'static>(future: impl Future<Output = T> + Send + 'static) -> JoinFuture<T> {
        Box::pin(smol::spawn(future))
    }
}

impl Driver for ThreadReactor {
    const NAME: &'static str = "blocking";

    fn block_on<F: Future>(future: F) -> F::Output {
        futures_lite::future::block_on(future)
    }

    fn spawn<T: Send + 'static>(future: impl Future<Output = T> + Send + 'static) -> JoinFuture<T> {
        let slot = Arc::new(Mutex::new((None::<T>, None::<Waker>)));
        let done = slot.clone();
        std::thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn(move || {
                let out = futures_lite::future::block_on(future);
                let waker = {
                    let mut guard = done.lock().unwrap();
                    guard.0 = Some(out);
                    guard.1.take()
                };
                if let Some(waker) = waker {
                    waker.wake();
                }
            })
            .expect("spawning a thread");
        Box::pin(ThreadJoin { slot })
    }
}

/// A runtime adapter's reactor whose clients connect with other default options.
macro_rules! forced_reactor {
    ($(#[$doc:meta])* $name:ident($inner:ty), $options:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name($inner);

        impl $name {
            /// The adapter's reactor underneath.
            pub fn inner(&self) -> &$inner {
                &self.0
            }
        }

        impl Reactor for $name {
            fn register(fd: OwnedFd) -> Result<Self, Error> {
                <$inner>::register(fd).map($name)
            }

            fn fd(&self) -> BorrowedFd<'_> {
                self.0.fd()
            }

            fn poll_read(
                &self,
                cx: &mut Context<'_>,
                buf: &mut [u8],
            ) -> Poll<io::Result<Filled>> {
                self.0.poll_read(cx, buf)
            }

            fn direct_io(&self) -> bool {
                self.0.direct_io()
            }

            fn from_helper(helper: HelperReactor) -> Result<Self, Error> {
                <$inner>::from_helper(helper).map($name)
            }

            fn default_options() -> ClientOptions {
                $options
            }
        }
    };
}

forced_reactor!(
    /// The tokio adapter with [`ClientOptions::shared_description`]: every pipe jobserver
    /// (make's, a test's, a pool of our own) is read through the description it shares with
    /// other processes, on a helper thread, as where no private reopen exists.
    Fallback(TokioReactor),
    ClientOptions::new().shared_description(true)
);

forced_reactor!(
    /// The smol adapter with [`ClientOptions::exclusive_wakeups`] (Linux).
    Exclusive(AsyncIoReactor),
    ClientOptions::new().exclusive_wakeups(true)
);

impl Driver for Fallback {
    const NAME: &'static str = "fallback";

    fn block_on<F: Future>(future: F) -> F::Output {
        TokioReactor::block_on(future)
    }

    fn spawn<T: Send + 'static>(future: impl Future<Output = T> + Send + 'static) -> JoinFuture<T> {
        TokioReactor::spawn(future)
    }
}

impl Driver for Exclusive {
    const NAME: &'static str = "exclusive";

    fn block_on<F: Future>(future: F) -> F::Output {
        AsyncIoReactor::block_on(future)
    }

    fn spawn<T: Send + 'static>(future: impl Future<Output = T> + Send + 'static) -> JoinFuture<T> {
        AsyncIoReactor::spawn(future)
    }
}

type Slot<T> = Arc<Mutex<(Option<T>, Option<Waker>)>>;

struct ThreadJoin<T> {
    slot: Slot<T>,
}

impl<T> Future for ThreadJoin<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut guard = self.slot.lock().unwrap();
        match guard.0.take() {
            Some(out) => Poll::Ready(out),
            None => {
                guard.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// Generates one `#[test]` per driver for a generic test function `fn name<D: Driver>()`.
#[macro_export]
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn tokio() {
                    super::$name::<jobserver_tokio::TokioReactor>();
                }
                #[test]
                fn smol() {
                    super::$name::<jobserver_smol::AsyncIoReactor>();
                }
                #[test]
                fn blocking() {
                    super::$name::<jobserver_io::blocking::ThreadReactor>();
                }
                #[test]
                fn fallback() {
                    super::$name::<$crate::drivers::Fallback>();
                }
                #[test]
                fn exclusive() {
                    super::$name::<$crate::drivers::Exclusive>();
                }
            }
        )*
    };
}
