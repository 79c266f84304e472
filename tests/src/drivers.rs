//! The three drivers behind one trait, so each conformance test is written once.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use jobserver_io::blocking::ThreadReactor;
use jobserver_io::Reactor;
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
            }
        )*
    };
}
