//! The fast path gives back the exact bytes it read when a pool holds bytes of several values
//! and several threads take and give back tokens at once: its units are fungible, so a thread
//! that gives a token back pops some byte from the stash (a count per byte value) without
//! knowing which token read what, and the bytes that reach the machine (`HandOff`, merges)
//! must keep their values too. Threads take one-token (fast) and two-token (machine)
//! requests, hold several, give them back in random order, and switch the release policy; at
//! the end the jobserver holds exactly the bytes it started with, and the client's counters
//! balance.

mod fixture;

use fixture::{sorted, Kind, Pool, XorShift};
use jobserver_io::{ReleasePolicy, Token};
use jobserver_tests::Driver;

/// Mostly `+`, as make writes, with other values mixed in.
const BYTES: &[u8] = b"a++b+++c++d+++";
const THREADS: u64 = 4;
const STEPS: usize = 20_000;

jobserver_tests::conformance!(threads_give_back_the_exact_bytes);

fn threads_give_back_the_exact_bytes<D: Driver>() {
    for kind in [Kind::Pipe, Kind::Fifo] {
        D::block_on(async {
            let pool = Pool::<D>::new(kind);
            pool.put(BYTES);
            let client = pool.client();
            std::thread::scope(|scope| {
                for seed in 1..=THREADS {
                    let client = client.clone();
                    scope.spawn(move || {
                        let mut rng = XorShift::new(seed * 7919);
                        let mut held: Vec<Token<D>> = Vec::new();
                        for _ in 0..STEPS {
                            match rng.below(16) {
                                0..=7 if held.len() < 4 => {
                                    if let Some(t) = client.try_acquire().expect("try_acquire") {
                                        held.push(t);
                                    }
                                }
                                8 if held.len() < 4 => {
                                    if let Some(t) =
                                        client.try_acquire_many(2).expect("try_acquire_many")
                                    {
                                        assert_eq!(t.units(), 2);
                                        held.push(t);
                                    }
                                }
                                9 => client.set_release_policy(if rng.below(2) == 0 {
                                    ReleasePolicy::HandOff
                                } else {
                                    ReleasePolicy::ReturnToPipe
                                }),
                                _ if !held.is_empty() => {
                                    let i = rng.below(held.len() as u64) as usize;
                                    drop(held.swap_remove(i));
                                }
                                _ => {}
                            }
                        }
                    });
                }
            });
            let stats = client.stats();
            assert_eq!(stats.running, 0, "{}/{kind:?}: {stats:?}", D::NAME);
            assert_eq!(stats.bytes_held, 0, "{}/{kind:?}: {stats:?}", D::NAME);
            assert_eq!(
                stats.bytes_read,
                stats.bytes_written,
                "{}/{kind:?}: every byte read was written back: {stats:?}",
                D::NAME
            );
            assert!(stats.bytes_read > 0, "{}/{kind:?}: {stats:?}", D::NAME);
            assert_eq!(
                pool.drain_sorted(),
                sorted(BYTES),
                "{}/{kind:?}: the jobserver holds the bytes it started with",
                D::NAME
            );
        });
    }
}
