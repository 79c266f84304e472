//! The driver's fast path keeps the machine's accounting exact: after every step of a random
//! sequence of one-token acquires (the fast path), multi-token acquires (the machine),
//! releases, splits, merges and policy changes, the client holds exactly
//! `max(units in use - 1, 0)` bytes (the first unit is the implicit slot), the pool holds
//! the rest, and at the end every byte is back, unchanged.
//!
//! Single-threaded and seeded, so a failure replays; `cancel_stress` covers the
//! interleavings between threads.

mod fixture;

use fixture::XorShift;
use jobserver_io::{ReleasePolicy, Server, Token};
use jobserver_tests::Driver;

const JOBS: usize = 6;
const STEPS: usize = 400;
const SEEDS: u64 = 40;

jobserver_tests::conformance!(random_fast_and_slow_steps_keep_the_accounting_exact);

fn random_fast_and_slow_steps_keep_the_accounting_exact<D: Driver>() {
    for seed in 0..SEEDS {
        D::block_on(async {
            let server = Server::<D>::new(JOBS).expect("pool");
            let client = server.client().expect("client");
            let mut rng = XorShift::new(seed + 1);
            let mut held: Vec<Token<D>> = Vec::new();
            for step in 0..STEPS {
                match rng.below(8) {
                    0..=2 => {
                        if let Some(t) = client.try_acquire().expect("try_acquire") {
                            held.push(t);
                        }
                    }
                    3 => {
                        let n = 2 + rng.below(2) as usize;
                        if let Some(t) = client.try_acquire_many(n).expect("try_acquire_many") {
                            assert_eq!(t.units(), n);
                            held.push(t);
                        }
                    }
                    4 | 5 if !held.is_empty() => {
                        let i = rng.below(held.len() as u64) as usize;
                        drop(held.swap_remove(i));
                    }
                    6 if !held.is_empty() => {
                        let i = rng.below(held.len() as u64) as usize;
                        if held[i].units() >= 2 {
                            let one = held[i].split(1).expect("split");
                            held.push(one);
                        } else if held.len() >= 2 {
                            let other = held.swap_remove(i);
                            let j = rng.below(held.len() as u64) as usize;
                            held[j].merge(other).expect("same client");
                        }
                    }
                    7 => {
                        let policy = if rng.below(2) == 0 {
                            ReleasePolicy::HandOff
                        } else {
                            ReleasePolicy::ReturnToPipe
                        };
                        client.set_release_policy(policy);
                    }
                    _ => {}
                }
                let units: usize = held.iter().map(Token::units).sum();
                let stats = client.stats();
                let in_pool = server.available().expect("FIONREAD");
                let ctx = format!("{} seed {seed} step {step}: {stats:?}", D::NAME);
                assert!(units <= JOBS, "{ctx}: {units} units of {JOBS}");
                assert_eq!(stats.running, units, "{ctx}");
                assert_eq!(stats.bytes_held, units.saturating_sub(1), "{ctx}");
                assert_eq!(in_pool, JOBS - 1 - stats.bytes_held, "{ctx}");
                assert_eq!(
                    stats.bytes_read,
                    stats.bytes_written + stats.bytes_held as u64,
                    "{ctx}"
                );
            }
            drop(held);
            let stats = client.stats();
            assert_eq!((stats.running, stats.bytes_held), (0, 0), "{stats:?}");
            assert_eq!(server.available().expect("FIONREAD"), JOBS - 1);
        });
    }
}
