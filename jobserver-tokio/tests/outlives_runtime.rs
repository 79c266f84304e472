//! A client outlives the runtime it was made in: once that runtime is gone, the client
//! registers again with the runtime it is used from, and keeps every token.

use std::sync::OnceLock;
use std::time::Duration;

use jobserver_tokio::{Client, Server};

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Made in runtime 1, which is then dropped; in runtime 2, a token in the pipe is read.
#[test]
fn acquire_in_a_second_runtime_after_the_first_is_dropped() {
    for (first, second) in [
        (current_thread(), current_thread()),
        (multi_thread(), multi_thread()),
        (current_thread(), multi_thread()),
        (multi_thread(), current_thread()),
    ] {
        let server = jobserver_io::blocking::Server::new(2).unwrap();
        let makeflags = server.makeflags().to_owned();
        let lookup =
            move |name: &str| (name == "MAKEFLAGS").then(|| makeflags.as_encoded_bytes().to_vec());
        let client = first.block_on(async {
            let client = Client::from_env_with(lookup).unwrap();
            // Use it there, so it is registered and has waited for readiness once.
            let implicit = client.acquire().await.unwrap();
            let byte = client.acquire().await.unwrap();
            drop(byte);
            drop(implicit);
            client
        });
        drop(first);
        assert_eq!(server.available().unwrap(), 1, "the token is in the pipe");
        second.block_on(async {
            let implicit = client.acquire().await.unwrap();
            let byte = tokio::time::timeout(Duration::from_secs(10), client.acquire())
                .await
                .expect("the token in the pipe was never read")
                .expect("the client failed with its first runtime");
            assert_eq!(server.available().unwrap(), 0);
            drop(byte);
            // And it waits properly in the new runtime: a token that arrives later wakes it.
            let byte = client.acquire().await.unwrap();
            let waiting = tokio::spawn({
                let client = client.clone();
                async move { client.acquire().await.map(drop) }
            });
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(!waiting.is_finished(), "two jobs at most");
            drop(byte);
            tokio::time::timeout(Duration::from_secs(10), waiting)
                .await
                .expect("the released token never woke the waiting task")
                .unwrap()
                .unwrap();
            drop(implicit);
        });
        assert_eq!(server.available().unwrap(), 1, "every token is back");
        assert!(server.shutdown().unwrap().is_balanced());
    }
}

/// A request waiting when its runtime is dropped is dropped with it, and the token it would
/// have had stays in the pool for the next runtime.
#[test]
fn a_runtime_dropped_while_a_request_waits() {
    let server = Server::new(2).unwrap();
    let rt = current_thread();
    let (client, held) = rt.block_on(async {
        let client = server.client().unwrap();
        let implicit = client.acquire().await.unwrap();
        let byte = client.acquire().await.unwrap();
        // Waits: the pool is empty.
        tokio::spawn({
            let client = client.clone();
            async move {
                let _never = client.acquire().await;
            }
        });
        tokio::task::yield_now().await;
        (client, (implicit, byte))
    });
    drop(rt);
    drop(held);
    assert_eq!(server.available().unwrap(), 1);
    assert_eq!(client.stats().waiting, 0, "the task's request went with it");
    let rt = multi_thread();
    rt.block_on(async {
        let implicit = client.acquire().await.unwrap();
        let byte = tokio::time::timeout(Duration::from_secs(10), client.acquire())
            .await
            .expect("the token in the pipe was never read")
            .unwrap();
        drop((implicit, byte));
    });
    assert_eq!(server.available().unwrap(), 1);
}

/// Used outside any runtime once its runtime is gone (a token dropped on a plain thread
/// while a request of another runtime waits, say), the client still reads and wakes.
#[test]
fn used_from_a_plain_thread_after_its_runtime_is_gone() {
    let server = jobserver_io::blocking::Server::new(2).unwrap();
    let makeflags = server.makeflags().to_owned();
    let lookup =
        move |name: &str| (name == "MAKEFLAGS").then(|| makeflags.as_encoded_bytes().to_vec());
    let rt = current_thread();
    let client = rt.block_on(async { Client::from_env_with(lookup).unwrap() });
    drop(rt);
    // No runtime here: the client cannot register with one, and must not fail for good.
    let implicit = futures_lite_block_on(client.acquire()).unwrap();
    let byte = futures_lite_block_on(client.acquire()).unwrap();
    assert_eq!(server.available().unwrap(), 0);
    let waiter = std::thread::spawn({
        let client = client.clone();
        move || futures_lite_block_on(client.acquire()).map(drop)
    });
    std::thread::sleep(Duration::from_millis(50));
    assert!(!waiter.is_finished(), "two jobs at most");
    drop(byte);
    waiter.join().unwrap().unwrap();
    drop(implicit);
    assert_eq!(server.available().unwrap(), 1);
    // Back in a runtime, it registers with that one.
    current_thread().block_on(async {
        let implicit = client.acquire().await.unwrap();
        let byte = client.acquire().await.unwrap();
        drop((implicit, byte));
    });
    assert_eq!(server.available().unwrap(), 1);
}

/// Polls a future to completion on this thread, parking between polls.
fn futures_lite_block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park_timeout(Duration::from_secs(10));
    }
}

/// One client in a `static`, shared by several `#[tokio::test]`s: each test has a runtime of
/// its own, made and dropped around it, and the client was registered with whichever came
/// first.
mod static_client {
    use super::*;

    struct Pool {
        server: jobserver_io::blocking::Server,
        client: Client,
    }

    fn pool() -> &'static Pool {
        static POOL: OnceLock<Pool> = OnceLock::new();
        POOL.get_or_init(|| {
            let server = jobserver_io::blocking::Server::new(3).unwrap();
            let makeflags = server.makeflags().to_owned();
            let lookup = move |name: &str| {
                (name == "MAKEFLAGS").then(|| makeflags.as_encoded_bytes().to_vec())
            };
            // Registered with the runtime of whichever test gets here first.
            let client = Client::from_env_with(lookup).unwrap();
            Pool { server, client }
        })
    }

    async fn use_pool() {
        let pool = pool();
        for _ in 0..20 {
            // Two units: at least one byte read through the reactor each time. All or
            // nothing, so tests running at once never hold parts of the pool each.
            let tokens = tokio::time::timeout(Duration::from_secs(10), pool.client.acquire_many(2))
                .await
                .expect("a token in the pool was never read")
                .expect("the shared client failed");
            tokio::task::yield_now().await;
            drop(tokens);
        }
        assert!(pool.server.available().unwrap() <= 2);
    }

    #[tokio::test]
    async fn first() {
        use_pool().await;
    }

    #[tokio::test]
    async fn second() {
        use_pool().await;
    }

    #[tokio::test]
    async fn third() {
        use_pool().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fourth() {
        use_pool().await;
    }

    /// The tests above run one after the other too (in one thread), so a later one always
    /// finds the first runtime gone.
    #[test]
    fn in_sequence() {
        for _ in 0..3 {
            current_thread().block_on(use_pool());
        }
    }
}
