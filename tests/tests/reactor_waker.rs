//! The reactor's waker does no I/O and takes no lock of the driver (issue 10, item 1): when the
//! jobserver becomes readable, it only flags the readiness and wakes the oldest waiting
//! request's task; that task, once polled, reads. So a task waker that calls back into the
//! client from inside `wake()` (as an executor that polls inline might) cannot deadlock, and
//! no token is taken from the pipe on the reactor's thread.
//!
//! Each test runs against a test-owned anonymous pipe and against the fifo of
//! `Server::new_fifo`, for every driver.

mod fixture;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake, Waker};

use fixture::{poll_until_ready, wait_until, Kind, Pool};
use jobserver_io::Client;
use jobserver_tests::Driver;

const KINDS: [Kind; 2] = [Kind::Pipe, Kind::Fifo];

jobserver_tests::conformance!(reactor_waker_reads_nothing_and_allows_reentry);

/// A task's waker that, when woken, calls into the client on the waking thread (which takes
/// the driver's lock) and records what the driver had done by then.
struct Reentrant<D: Driver> {
    client: Client<D>,
    wakes: AtomicUsize,
    /// `(bytes read, requests waiting)` as the client reported them inside each wake.
    seen: Mutex<Vec<(u64, usize)>>,
}

impl<D: Driver> Wake for Reentrant<D> {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let stats = self.client.stats();
        self.seen
            .lock()
            .unwrap()
            .push((stats.bytes_read, stats.waiting));
        self.wakes.fetch_add(1, Ordering::SeqCst);
    }
}

/// One waiting request; a token arrives. Its task is woken once, by the reactor (or helper
/// thread), without being polled in between: the waker's call back into the client returns
/// (no lock is held around it), and the driver has read nothing yet and the request still
/// waits. The token is read, and granted, only when the task polls.
fn reactor_waker_reads_nothing_and_allows_reentry<D: Driver>() {
    for kind in KINDS {
        D::block_on(async {
            let pool = Pool::<D>::new(kind);
            let client = pool.client();
            let implicit = client.acquire().await.expect("implicit slot");

            let task = Arc::new(Reentrant::<D> {
                client: client.clone(),
                wakes: AtomicUsize::new(0),
                seen: Mutex::new(Vec::new()),
            });
            let waker = Waker::from(task.clone());
            let mut request = client.acquire();
            let poll = Pin::new(&mut request).poll(&mut Context::from_waker(&waker));
            assert!(poll.is_pending(), "{kind:?}: the pool is empty");
            let before = client.stats().bytes_read;

            pool.put(b"x");
            wait_until("the waiting task is woken by the readiness", || {
                task.wakes.load(Ordering::SeqCst) > 0
            })
            .await;
            let seen = task.seen.lock().unwrap().clone();
            assert_eq!(
                seen,
                vec![(before, 1)],
                "{kind:?}: woken once, with nothing read and the request still waiting"
            );
            let stats = client.stats();
            assert_eq!(
                (stats.bytes_read, stats.waiting),
                (before, 1),
                "{kind:?}: the reactor read nothing for the task: {stats:?}"
            );

            // Polled, the task reads the byte for itself and gets it.
            let token = poll_until_ready("the woken request completes", &mut request)
                .await
                .expect("a token from the pipe");
            assert_eq!(pool.count(), 0, "{kind:?}: the byte was read");
            assert_eq!(client.stats().bytes_read, before + 1, "{kind:?}");
            assert_eq!(task.wakes.load(Ordering::SeqCst), 1, "{kind:?}: one wake");
            drop(token);
            drop(implicit);
            drop(request);
            assert_eq!(pool.drain_sorted(), b"x", "{kind:?}: no token lost");
        });
    }
}
