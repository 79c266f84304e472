//! Cancellation never loses a token: a pending `acquire()` that is dropped takes nothing, one
//! that was granted (or partly served) and then dropped gives every byte back, a panic while
//! holding a token gives it back, and the bytes given back are exactly the bytes read.
//!
//! Each test runs against a test-owned anonymous pipe and against the fifo of
//! `Server::new_fifo`, for every driver.

mod fixture;

use std::panic::AssertUnwindSafe;

use fixture::{
    drive_until, poll_once, poll_until_ready, settle, sorted, wait_until, within, Kind, Pool,
};
use futures_lite::FutureExt;
use jobserver_io::ReleasePolicy;
use jobserver_tests::Driver;

const KINDS: [Kind; 2] = [Kind::Pipe, Kind::Fifo];

jobserver_tests::conformance!(
    pending_acquire_dropped_takes_nothing,
    granted_acquire_dropped_returns_its_byte,
    granted_acquire_dropped_passes_its_token_to_the_next_waiter,
    partly_served_acquire_many_dropped_returns_every_byte,
    panic_while_holding_a_token_returns_it,
    released_bytes_are_the_bytes_read,
);

/// An `acquire()` polled once while nothing is free, then dropped, leaves the pipe alone: a
/// token that arrives afterwards stays in the pipe for others, and a later acquire works.
fn pending_acquire_dropped_takes_nothing<D: Driver>() {
    for kind in KINDS {
        D::block_on(async {
            let pool = Pool::<D>::new(kind);
            let client = pool.client();
            let implicit = client.acquire().await.expect("implicit slot");

            let mut acquire = client.acquire();
            assert!(
                poll_once(&mut acquire).is_pending(),
                "{kind:?}: nothing is free"
            );
            assert_eq!(client.stats().waiting, 1);
            drop(acquire);
            let stats = client.stats();
            assert_eq!((stats.waiting, stats.unmet), (0, 0), "{kind:?}: {stats:?}");
            assert_eq!(pool.count(), 0);

            // A token that arrives now is nobody's in this process: it must stay in the pipe.
            pool.put(b"x");
            settle().await;
            assert_eq!(
                pool.count(),
                1,
                "{kind:?}: the cancelled request took a token"
            );
            assert_eq!(client.stats().bytes_read, 0, "{kind:?}");

            // A later acquire still works (and takes that token).
            let token = within("a later acquire", client.acquire())
                .await
                .expect("later acquire");
            assert_eq!(pool.count(), 0);
            assert_eq!(client.stats().bytes_read, 1);
            drop(token);
            drop(implicit);
            assert_eq!(pool.drain_sorted(), b"x", "{kind:?}");
        });
    }
}

/// Makes the driver read the pipe for the requests that wait, without polling them: a
/// non-blocking try looks at the pipe at once (and gets nothing, as older requests come
/// first). Waits until `bytes` bytes were read in all.
async fn read_for_the_oldest<R: jobserver_io::Reactor>(
    client: &jobserver_io::Client<R>,
    bytes: u64,
) {
    wait_until("the driver to read for the oldest request", || {
        let got = client.try_acquire().expect("try_acquire");
        assert!(got.is_none(), "a try must not overtake waiting requests");
        client.stats().bytes_read == bytes
    })
    .await;
}

/// The granted-then-cancelled path: the driver reads a token for a request whose future is
/// not polled (another party's read grants it); dropping the future writes that byte back.
fn granted_acquire_dropped_returns_its_byte<D: Driver>() {
    for kind in KINDS {
        D::block_on(async {
            let pool = Pool::<D>::new(kind);
            let client = pool.client();
            let implicit = client.acquire().await.expect("implicit slot");

            let mut acquire = client.acquire();
            assert!(poll_once(&mut acquire).is_pending());
            pool.put(b"x");
            // A non-blocking try reads the pipe at once; the byte goes to the older request,
            // which is granted without being polled.
            read_for_the_oldest(&client, 1).await;
            assert_eq!(pool.count(), 0);
            let stats = client.stats();
            assert_eq!(
                (stats.running, stats.bytes_held, stats.waiting),
                (2, 1, 0),
                "{kind:?}: granted, not yet collected: {stats:?}"
            );

            drop(acquire);
            assert_eq!(
                pool.count(),
                1,
                "{kind:?}: the granted byte was not returned"
            );
            let stats = client.stats();
            assert_eq!(
                (stats.running, stats.bytes_held, stats.bytes_written),
                (1, 0, 1),
                "{kind:?}: {stats:?}"
            );

            let token = within("a later acquire", client.acquire())
                .await
                .expect("later acquire");
            drop(token);
            drop(implicit);
            assert_eq!(pool.drain_sorted(), b"x", "{kind:?}");
        });
    }
}

/// A request that was granted and then dropped passes its token on to the next waiting
/// request (through the pipe with the default policy, directly with `HandOff`), so the next
/// request is not left waiting while the token sits unused.
fn granted_acquire_dropped_passes_its_token_to_the_next_waiter<D: Driver>() {
    for kind in KINDS {
        for policy in [ReleasePolicy::ReturnToPipe, ReleasePolicy::HandOff] {
            D::block_on(async {
                let pool = Pool::<D>::new(kind);
                let client = pool.client();
                client.set_release_policy(policy);
                let implicit = client.acquire().await.expect("implicit slot");
                let mut first = client.acquire();
                assert!(poll_once(&mut first).is_pending());
                let mut second = client.acquire();
                assert!(poll_once(&mut second).is_pending());

                pool.put(b"x");
                read_for_the_oldest(&client, 1).await;
                assert!(
                    poll_once(&mut second).is_pending(),
                    "FIFO: the first one has it"
                );
                drop(first);
                let token = poll_until_ready("the next waiter", &mut second)
                    .await
                    .expect("token");
                let stats = client.stats();
                assert_eq!(stats.waiting, 0, "{kind:?} {policy:?}: {stats:?}");
                let expected_written = match policy {
                    ReleasePolicy::HandOff => 0,
                    _ => 1,
                };
                assert_eq!(stats.bytes_written, expected_written, "{kind:?} {policy:?}");
                drop(token);
                drop(implicit);
                assert_eq!(pool.drain_sorted(), b"x", "{kind:?} {policy:?}");
            });
        }
    }
}

/// `acquire_many` that got part of its tokens, then is dropped, gives all of them back.
fn partly_served_acquire_many_dropped_returns_every_byte<D: Driver>() {
    for kind in KINDS {
        D::block_on(async {
            let pool = Pool::<D>::new(kind);
            let client = pool.client();

            // Implicit slot free: 3 = the implicit slot + 2 bytes; 1 of the 2 arrives.
            let mut many = client.acquire_many(3);
            assert!(poll_once(&mut many).is_pending());
            pool.put(b"x");
            drive_until("the driver to read 1 token", &mut many, || {
                client.stats().bytes_read == 1
            })
            .await;
            let stats = client.stats();
            assert_eq!(
                (stats.reserved, stats.unmet, stats.waiting),
                (2, 1, 1),
                "{kind:?}: {stats:?}"
            );
            assert!(poll_once(&mut many).is_pending(), "all or nothing");
            drop(many);
            assert_eq!(
                pool.count(),
                1,
                "{kind:?}: the partial byte was not returned"
            );
            let stats = client.stats();
            assert_eq!((stats.reserved, stats.bytes_held), (0, 0), "{stats:?}");
            // The implicit slot that was promised is free again: no read needed.
            let implicit = match poll_once(&mut client.acquire()) {
                std::task::Poll::Ready(token) => token.expect("implicit slot"),
                std::task::Poll::Pending => panic!("{kind:?}: implicit slot not given back"),
            };
            assert_eq!(client.stats().bytes_read, 1);

            // Implicit slot held: 3 bytes needed; 2 of them arrive.
            let mut many = client.acquire_many(3);
            assert!(poll_once(&mut many).is_pending());
            pool.put(b"y");
            drive_until("the driver to read 2 tokens", &mut many, || {
                client.stats().bytes_read == 3
            })
            .await;
            assert_eq!(client.stats().reserved, 2);
            assert_eq!(pool.count(), 0);
            drop(many);
            assert_eq!(pool.count(), 2, "{kind:?}: both bytes must come back");
            drop(implicit);
            assert_eq!(pool.drain_sorted(), b"xy", "{kind:?}");
        });
    }
}

/// A job that panics while it holds a token gives the token back as it unwinds, both
/// inside a future and on a thread of its own.
fn panic_while_holding_a_token_returns_it<D: Driver>() {
    for kind in KINDS {
        D::block_on(async {
            let pool = Pool::<D>::new(kind);
            let client = pool.client();
            let implicit = client.acquire().await.expect("implicit slot");

            pool.put(b"x");
            let job = client.clone();
            let unwound = AssertUnwindSafe(async move {
                let token = job.acquire().await.expect("token");
                assert_eq!(job.stats().bytes_held, 1);
                let _held = token;
                panic!("expected panic: a job fails while holding a token");
            })
            .catch_unwind()
            .await;
            assert!(unwound.is_err());
            assert_eq!(client.stats().bytes_read, 1);
            assert_eq!(
                pool.count(),
                1,
                "{kind:?}: the panicking future kept the byte"
            );

            let token = within("acquire", client.acquire()).await.expect("token");
            assert_eq!(client.stats().bytes_held, 1);
            let joined = std::thread::spawn(move || {
                let _held = token;
                panic!("expected panic: a thread fails while holding a token");
            })
            .join();
            assert!(joined.is_err());
            assert_eq!(
                pool.count(),
                1,
                "{kind:?}: the panicking thread kept the byte"
            );
            assert_eq!(client.stats().bytes_held, 0);

            drop(implicit);
            assert_eq!(pool.drain_sorted(), b"x", "{kind:?}");
        });
    }
}

/// Every byte read is written back unchanged (never replaced by `+`), whatever the order of
/// release and whichever method took it.
fn released_bytes_are_the_bytes_read<D: Driver>() {
    for kind in KINDS {
        D::block_on(async {
            let pool = Pool::<D>::new(kind);
            let client = pool.client();
            pool.put(b"xyz");

            let implicit = client.acquire().await.expect("implicit slot");
            let one = within("acquire", client.acquire()).await.expect("token");
            let two = within("acquire_many(2)", client.acquire_many(2))
                .await
                .expect("tokens");
            assert_eq!(client.stats().bytes_read, 3);
            assert_eq!(pool.count(), 0);
            drop(implicit);
            drop(two);
            drop(one);
            assert_eq!(pool.drain_sorted(), sorted(b"xyz"), "{kind:?}");

            pool.put(b"ab");
            let up_to = client
                .try_acquire_up_to(5)
                .expect("try_acquire_up_to")
                .expect("some tokens");
            assert_eq!(up_to.units(), 3, "{kind:?}: implicit + 2 bytes");
            drop(up_to);
            assert_eq!(pool.drain_sorted(), b"ab", "{kind:?}");
        });
    }
}
