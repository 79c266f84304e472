//! No hold-and-wait across processes: a multi-token request that holds part of its tokens
//! from the jobserver gives them back after a while, so another process that waits for the
//! same tokens gets its turn (issue: two processes that each want more than half the pool).
//!
//! The test plays the other process itself: it takes 2 of the pool's 3 tokens and wants a
//! third, while the client's `acquire_many(3)` (its implicit slot + 2 bytes) takes the last
//! byte and waits for one more. Without the rule both wait for ever.

mod fixture;

use fixture::{drive_until, poll_until_ready, Kind, Pool};
use jobserver_tests::Driver;

const KINDS: [Kind; 2] = [Kind::Pipe, Kind::Fifo];

jobserver_tests::conformance!(partial_grant_is_given_back_to_a_process_that_waits_for_it);

fn partial_grant_is_given_back_to_a_process_that_waits_for_it<D: Driver>() {
    for kind in KINDS {
        D::block_on(async {
            let pool = Pool::<D>::new(kind);
            pool.put(b"abc");
            let client = pool.client();

            // The other process holds 2 tokens and waits for a third.
            let mut other = pool.take(2);
            assert_eq!(other.len(), 2);

            // The client takes its implicit slot and the last byte, and waits for one more.
            let mut many = client.acquire_many(3);
            drive_until("the client to read the last byte", &mut many, || {
                client.stats().bytes_read == 1
            })
            .await;
            assert_eq!(pool.count(), 0, "{kind:?}");
            assert_eq!(client.stats().reserved, 2, "{kind:?}: implicit + 1 byte");

            // Deadlock, unless the client gives its partial grant back: the other process
            // takes the byte as soon as it is in the pipe.
            drive_until("the partial grant to come back", &mut many, || {
                other.extend(pool.take(1));
                other.len() == 3
            })
            .await;
            let stats = client.stats();
            assert_eq!(
                (stats.bytes_held, stats.reserved),
                (0, 1),
                "{kind:?}: the byte went back, the implicit slot stays promised: {stats:?}"
            );

            // The other process runs its job and gives its 3 tokens back; the client, after
            // its back-off, collects again and completes.
            pool.put(&other);
            let token = poll_until_ready("acquire_many(3) after the back-off", &mut many)
                .await
                .expect("tokens");
            assert_eq!(token.units(), 3);
            assert_eq!(pool.count(), 1, "{kind:?}: it took only the 2 it needed");
            drop(token);
            let mut back = pool.drain_sorted();
            back.sort_unstable();
            assert_eq!(back, b"abc", "{kind:?}: every token is back, unchanged");
            let stats = client.stats();
            assert_eq!((stats.bytes_held, stats.waiting), (0, 0), "{stats:?}");
        });
    }
}
