//! Absurd token counts are a typed error, never a panic, a wrap or a hang: a request above
//! `MAX_UNITS` fails at once, leaves nothing queued or read, and later requests are served
//! with exact counts.
//!
//! Each test runs against a test-owned anonymous pipe and against the fifo of
//! `Server::new_fifo`, for every driver.

mod fixture;

use fixture::{settle, within, Kind, Pool};
use jobserver_io::{ErrorKind, MAX_UNITS};
use jobserver_tests::Driver;

const KINDS: [Kind; 2] = [Kind::Pipe, Kind::Fifo];

jobserver_tests::conformance!(
    acquire_many_above_the_bound_fails_cleanly,
    try_acquire_up_to_any_n_takes_what_is_free,
);

/// `acquire_many(usize::MAX)` then `acquire_many(2)`: the first fails with `Capacity` at once
/// (it used to overflow the machine's counts: a panic in debug, a silent hang in release),
/// reads nothing, and the second gets exactly two tokens.
fn acquire_many_above_the_bound_fails_cleanly<D: Driver>() {
    for kind in KINDS {
        D::block_on(async {
            let pool = Pool::<D>::new(kind);
            let client = pool.client();
            let implicit = client.acquire().await.expect("implicit slot");
            pool.put(b"ab");

            for n in [usize::MAX, MAX_UNITS + 1] {
                let err = within("an absurd acquire_many", client.acquire_many(n))
                    .await
                    .expect_err("more tokens than any jobserver can hold");
                assert_eq!(err.kind(), ErrorKind::Capacity, "{kind:?}: {err}");
                assert!(
                    err.to_string().contains("at most"),
                    "says what to do: {err}"
                );
                let stats = client.stats();
                assert_eq!(
                    (stats.waiting, stats.unmet, stats.reserved, stats.running),
                    (0, 0, 0, 1),
                    "{kind:?}: nothing queued or promised: {stats:?}"
                );
                settle().await;
                assert_eq!(pool.count(), 2, "{kind:?}: nothing was read");
                assert_eq!(client.stats().bytes_read, 0);
            }

            let two = within("acquire_many(2)", client.acquire_many(2))
                .await
                .expect("two tokens");
            assert_eq!(two.units(), 2);
            assert_eq!(pool.count(), 0, "{kind:?}");
            assert_eq!(client.stats().bytes_held, 2);
            drop(two);
            assert_eq!(pool.count(), 2, "{kind:?}: both went back");
            let one = within("acquire", client.acquire()).await.expect("a token");
            assert_eq!(pool.count(), 1);
            drop(one);
            drop(implicit);
            let stats = client.stats();
            assert_eq!((stats.bytes_read, stats.bytes_written), (3, 3), "{stats:?}");
            assert_eq!(pool.drain_sorted(), b"ab", "{kind:?}: no token lost");
        });
    }
}

/// `try_acquire_up_to(usize::MAX)` means "all that are free": it takes every token waiting
/// and leaves nothing queued.
fn try_acquire_up_to_any_n_takes_what_is_free<D: Driver>() {
    for kind in KINDS {
        D::block_on(async {
            let pool = Pool::<D>::new(kind);
            let client = pool.client();
            pool.put(b"xyz");
            let all = client
                .try_acquire_up_to(usize::MAX)
                .expect("no error")
                .expect("some tokens are free");
            assert_eq!(all.units(), 4, "{kind:?}: the implicit slot and 3 tokens");
            let stats = client.stats();
            assert_eq!((stats.waiting, stats.unmet), (0, 0), "{stats:?}");
            assert_eq!(pool.count(), 0);
            drop(all);
            assert_eq!(pool.drain_sorted(), b"xyz", "{kind:?}");
        });
    }
}
