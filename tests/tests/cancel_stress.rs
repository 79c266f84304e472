//! Many tasks acquiring with random timeouts, random holds and futures dropped at random
//! points: no token is lost or duplicated, never more than `JOBS` run at once, and at the
//! end the pool's account is balanced.
//!
//! Deterministic schedule of choices (seeded xorshift per task); the interleaving is up to
//! the runtime. The generic version times out by racing the acquire against an async-io
//! timer (works under every executor); `tokio_time_timeouts_lose_no_token` uses
//! `tokio::time::timeout` instead.

mod fixture;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use fixture::{poll_once, within, XorShift};
use jobserver_io::Server;
use jobserver_tests::Driver;

const JOBS: usize = 4;
const TASKS: u64 = 64;
const ROUNDS: usize = 24;

jobserver_tests::conformance!(random_timeouts_and_drops_lose_no_token);

fn random_timeouts_and_drops_lose_no_token<D: Driver>() {
    stress::<D, AsyncIoClock>(false);
    stress::<D, AsyncIoClock>(true);
}

#[test]
fn tokio_time_timeouts_lose_no_token() {
    stress::<jobserver_tokio::TokioReactor, TokioClock>(false);
}

/// A timer source.
trait Clock: 'static {
    const NAME: &'static str;

    fn timeout<F>(limit: Duration, fut: F) -> impl Future<Output = Option<F::Output>> + Send
    where
        F: Future + Send,
        F::Output: Send;

    fn sleep(d: Duration) -> impl Future<Output = ()> + Send;
}

struct AsyncIoClock;

impl Clock for AsyncIoClock {
    const NAME: &'static str = "async-io timer";

    fn timeout<F>(limit: Duration, fut: F) -> impl Future<Output = Option<F::Output>> + Send
    where
        F: Future + Send,
        F::Output: Send,
    {
        fixture::timeout(limit, fut)
    }

    async fn sleep(d: Duration) {
        smol::Timer::after(d).await;
    }
}

struct TokioClock;

impl Clock for TokioClock {
    const NAME: &'static str = "tokio::time";

    async fn timeout<F>(limit: Duration, fut: F) -> Option<F::Output>
    where
        F: Future + Send,
        F::Output: Send,
    {
        tokio::time::timeout(limit, fut).await.ok()
    }

    async fn sleep(d: Duration) {
        tokio::time::sleep(d).await;
    }
}

#[derive(Default)]
struct Counters {
    /// Units held by tasks right now, and the most ever held at once.
    held: AtomicUsize,
    max_held: AtomicUsize,
    granted: AtomicUsize,
    timed_out: AtomicUsize,
    dropped_early: AtomicUsize,
}

fn stress<D: Driver, C: Clock>(fifo: bool) {
    D::block_on(async {
        let server = if fifo {
            Server::<D>::new_fifo(JOBS)
        } else {
            Server::<D>::new(JOBS)
        }
        .expect("server");
        let client = server.client().expect("client");
        let counters = Arc::new(Counters::default());

        let mut tasks = Vec::new();
        for task in 0..TASKS {
            let client = client.clone();
            let counters = counters.clone();
            tasks.push(D::spawn(async move {
                let mut rng = XorShift::new(task + 1);
                for _ in 0..ROUNDS {
                    let units = if rng.below(4) == 0 { 2 } else { 1 };
                    let acquire = client.acquire_many(units);
                    match rng.below(8) {
                        0 => {
                            // Dropped after a single poll (whatever it returned).
                            let mut acquire = acquire;
                            let _ = poll_once(&mut acquire);
                            drop(acquire);
                            counters.dropped_early.fetch_add(1, SeqCst);
                        }
                        choice => {
                            // Short timeouts for some rounds, generous ones for others.
                            let limit = if choice < 4 {
                                Duration::from_micros(rng.below(300))
                            } else {
                                Duration::from_micros(500 + rng.below(5000))
                            };
                            match C::timeout(limit, acquire).await {
                                Some(Ok(token)) => {
                                    assert_eq!(token.units(), units);
                                    let now = counters.held.fetch_add(units, SeqCst) + units;
                                    counters.max_held.fetch_max(now, SeqCst);
                                    counters.granted.fetch_add(1, SeqCst);
                                    let hold = rng.below(1000);
                                    if hold > 300 {
                                        C::sleep(Duration::from_micros(hold)).await;
                                    }
                                    counters.held.fetch_sub(units, SeqCst);
                                    drop(token);
                                }
                                Some(Err(err)) => panic!("acquire failed: {err}"),
                                None => {
                                    counters.timed_out.fetch_add(1, SeqCst);
                                }
                            }
                        }
                    }
                }
            }));
        }
        for task in tasks {
            within("a stress task", task).await;
        }

        let what = format!("{} with {}, fifo={fifo}", D::NAME, C::NAME);
        let max_held = counters.max_held.load(SeqCst);
        assert!(max_held <= JOBS, "{what}: {max_held} units held at once");
        assert!(counters.granted.load(SeqCst) > 0, "{what}: nothing granted");
        assert!(
            counters.timed_out.load(SeqCst) > 0,
            "{what}: no acquire timed out: the cancel path was not exercised"
        );
        assert!(counters.dropped_early.load(SeqCst) > 0, "{what}");
        eprintln!(
            "{what}: granted {}, timed out {}, dropped after one poll {}, max held {max_held}",
            counters.granted.load(SeqCst),
            counters.timed_out.load(SeqCst),
            counters.dropped_early.load(SeqCst),
        );

        let stats = client.stats();
        assert_eq!(
            (
                stats.running,
                stats.reserved,
                stats.waiting,
                stats.unmet,
                stats.bytes_held
            ),
            (0, 0, 0, 0, 0),
            "{what}: {stats:?}"
        );
        assert_eq!(stats.write_failures, 0, "{what}");
        assert_eq!(stats.bytes_read, stats.bytes_written, "{what}: {stats:?}");
        drop(client);

        assert_eq!(server.available().expect("available"), JOBS - 1, "{what}");
        let report = server.shutdown().expect("shutdown");
        assert!(report.is_balanced(), "{what}: {report}");
    });
}
