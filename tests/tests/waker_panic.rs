//! A waker that panics never strands other grants: every granted request is still woken, the
//! driver keeps watching the jobserver (the blocking client's helper thread survives), and no
//! token is lost.
//!
//! Each test runs against a test-owned anonymous pipe and against the fifo of
//! `Server::new_fifo`, for every driver.

mod fixture;

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use fixture::{drive_until, poll_once, poll_until_ready, settle, within, Kind, Pool};
use jobserver_tests::Driver;

const KINDS: [Kind; 2] = [Kind::Pipe, Kind::Fifo];

jobserver_tests::conformance!(panicking_waker_does_not_strand_other_grants);

/// A task's waker that panics when woken (a buggy executor).
struct PanicWaker;

impl Wake for PanicWaker {
    fn wake(self: Arc<Self>) {
        panic!("this test's waker panics on purpose");
    }
}

/// A waker that counts its wake-ups.
#[derive(Default)]
struct CountWaker(AtomicUsize);

impl Wake for CountWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn poll_with<F: std::future::Future + Unpin>(fut: &mut F, waker: &Waker) -> Poll<F::Output> {
    Pin::new(fut).poll(&mut Context::from_waker(waker))
}

/// Three waiting requests A, B and C; A's waker panics; two tokens arrive. B is still woken
/// and completes, A completes when polled again, both tokens go back, and later acquires that
/// must wait for the reactor (or the blocking client's helper thread) still work.
fn panicking_waker_does_not_strand_other_grants<D: Driver>() {
    for kind in KINDS {
        D::block_on(async {
            let pool = Pool::<D>::new(kind);
            let client = pool.client();
            let implicit = client.acquire().await.expect("implicit slot");

            let panics = Waker::from(Arc::new(PanicWaker));
            let counter = Arc::new(CountWaker::default());
            let counts = Waker::from(counter.clone());
            let mut a = client.acquire();
            let mut b = client.acquire();
            assert!(poll_with(&mut a, &panics).is_pending(), "{kind:?}: A waits");
            assert!(poll_with(&mut b, &counts).is_pending(), "{kind:?}: B waits");
            let mut c = client.acquire();
            assert!(poll_once(&mut c).is_pending(), "{kind:?}: C waits");
            assert_eq!(client.stats().waiting, 3);

            // Two tokens arrive. The readiness wakes A, the oldest, and its waker panics: the
            // reactor (or helper thread) survives, and the readiness is left to the next
            // party that takes the driver's lock: C, polled here. C's read grants A, whose
            // waker panics again, and then B, which must still be woken.
            pool.put(b"ab");
            drive_until("B is woken although A's waker panicked", &mut c, || {
                counter.0.load(Ordering::SeqCst) > 0
            })
            .await;
            drop(c);
            let token_b = match poll_with(&mut b, &counts) {
                Poll::Ready(token) => token.expect("B's token"),
                Poll::Pending => panic!("{kind:?}: B was woken but is not granted"),
            };
            // A keeps its grant: it completes once polled again.
            let token_a = poll_until_ready("A completes", &mut a)
                .await
                .expect("A's token");
            assert_eq!(pool.count(), 0, "{kind:?}");
            drop(token_a);
            drop(token_b);
            assert_eq!(pool.count(), 2, "{kind:?}: both tokens went back");

            // The reader still works: a request that has to wait for readiness completes.
            let held = within("acquire", client.acquire())
                .await
                .expect("a token from the pipe");
            let held2 = within("acquire", client.acquire())
                .await
                .expect("a token from the pipe");
            assert_eq!(pool.count(), 0);
            let mut waiting = client.acquire();
            assert!(poll_once(&mut waiting).is_pending());
            settle().await;
            drop(held);
            // ReturnToPipe: the byte goes back and the waiting request must read it, which
            // needs readiness from the reactor or the helper thread.
            let token = within("a waiting acquire after the panic", waiting)
                .await
                .expect("token");
            drop(token);
            drop(held2);
            drop(implicit);
            let stats = client.stats();
            assert_eq!((stats.waiting, stats.bytes_held), (0, 0), "{stats:?}");
            assert_eq!(pool.drain_sorted(), b"ab", "{kind:?}: no token lost");
        });
    }
}
