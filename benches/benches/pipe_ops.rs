//! Issue item 1: acquire + release with a token in the pool, against the raw 1-byte read +
//! 1-byte write on the same kind of descriptor.
//!
//! For the tokio, smol and blocking clients, on an anonymous pipe and on a fifo; for the
//! tokio client with exclusive wake-ups, and (pipe only) forced to read the shared
//! description through helper threads (the fallback where no private reopen exists); and,
//! on the same pools, the `jobserver` crate's blocking acquire + drop and `jobslot`'s async
//! acquire (tokio) + drop. Each of our clients holds its implicit slot for the whole bench, so every
//! measured acquire reads a byte and every release writes it back, as the raw pair does.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use jobserver_benches::harness::{self, Paired};
use jobserver_benches::{Kind, Pool, Results, Row, Target};
use jobserver_io::blocking::ThreadReactor;
use jobserver_io::ClientOptions;
use jobserver_smol::AsyncIoReactor;
use jobserver_tokio::TokioReactor;

static RESULTS: Results = Results::new("pipe_ops");

/// Ours must stay within 5% of the raw read + write (issue 10's target; the `jobserver`
/// crate and `jobslot` measure 1.05x-1.15x here).
const OURS: Target = Target::AtMost(1.05);

fn timed(iters: u64, mut op: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        op();
    }
    start.elapsed()
}

/// Benchmarks `ours` paired with the raw pair `raw` and records the ratio.
fn pair(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    metric: &str,
    target: Target,
    mut ours: impl FnMut(u64) -> Duration,
    mut raw: impl FnMut(u64) -> Duration,
) {
    let mut paired = Paired::new();
    group.bench_function(name, |b| {
        b.iter_custom(|iters| paired.run(iters, &mut ours, &mut raw))
    });
    if let Some(summary) = paired.summary(harness::sample_size()) {
        RESULTS.push(Row::timing(metric, "raw read+write", &summary, target));
    }
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building a tokio runtime")
}

fn acquire_release(c: &mut Criterion) {
    let mut group = c.benchmark_group("acquire_release");
    for kind in [Kind::Pipe, Kind::Fifo] {
        let k = kind.name();
        let pool = Pool::new(kind, 8);
        let raw = pool.raw_pair();
        let mut raw_pair = |iters| timed(iters, || raw.take_and_give());

        // The other crates read only the real environment: connect them first, before any
        // thread of ours exists.
        let (js, jsl) = pool.with_env(|| {
            // SAFETY: the descriptors named in the environment are this pool's, open in this
            // process for as long as `pool` lives (longer than both clients).
            let js = unsafe { jobserver::Client::from_env() }.expect("jobserver from_env");
            // SAFETY: as above.
            let jsl = unsafe { jobslot::Client::from_env() }.expect("jobslot from_env");
            (js, jsl)
        });

        // tokio
        let rt = current_thread();
        let client = rt.block_on(async { pool.client::<TokioReactor>() });
        let implicit = rt.block_on(client.acquire()).expect("implicit slot");
        pair(
            &mut group,
            &format!("tokio/{k}"),
            &format!("acquire+release, tokio, {k}"),
            OURS,
            |iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        drop(black_box(client.acquire().await.expect("acquire")));
                    }
                    start.elapsed()
                })
            },
            &mut raw_pair,
        );
        drop(implicit);
        drop(client);

        // tokio, with exclusive wake-ups; and (a pipe) through the shared description.
        let mut variants = vec![(
            "exclusive",
            "exclusive wake-ups",
            ClientOptions::new().exclusive_wakeups(true),
        )];
        if kind == Kind::Pipe {
            variants.push((
                "fallback",
                "fallback: shared description",
                ClientOptions::new().shared_description(true),
            ));
        }
        for (name, what, options) in variants {
            let client = rt.block_on(async { pool.client_with::<TokioReactor>(&options) });
            let implicit = rt.block_on(client.acquire()).expect("implicit slot");
            pair(
                &mut group,
                &format!("tokio-{name}/{k}"),
                &format!("acquire+release, tokio, {what}, {k}"),
                Target::Report,
                |iters| {
                    rt.block_on(async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            drop(black_box(client.acquire().await.expect("acquire")));
                        }
                        start.elapsed()
                    })
                },
                &mut raw_pair,
            );
            drop(implicit);
            drop(client);
        }

        // smol (async-io's reactor)
        let client = pool.client::<AsyncIoReactor>();
        let implicit = async_io::block_on(client.acquire()).expect("implicit slot");
        pair(
            &mut group,
            &format!("smol/{k}"),
            &format!("acquire+release, smol, {k}"),
            OURS,
            |iters| {
                async_io::block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        drop(black_box(client.acquire().await.expect("acquire")));
                    }
                    start.elapsed()
                })
            },
            &mut raw_pair,
        );
        drop(implicit);
        drop(client);

        // blocking
        let client = jobserver_io::blocking::Client::from(pool.client::<ThreadReactor>());
        let implicit = client.acquire().expect("implicit slot");
        pair(
            &mut group,
            &format!("blocking/{k}"),
            &format!("acquire+release, blocking, {k}"),
            OURS,
            |iters| {
                timed(iters, || {
                    drop(black_box(client.acquire().expect("acquire")))
                })
            },
            &mut raw_pair,
        );
        drop(implicit);
        drop(client);

        // the `jobserver` crate, blocking
        pair(
            &mut group,
            &format!("jobserver-crate/{k}"),
            &format!("acquire+drop, `jobserver` crate (blocking), {k}"),
            Target::Report,
            |iters| timed(iters, || drop(black_box(js.acquire().expect("acquire")))),
            &mut raw_pair,
        );

        // `jobslot`, async on tokio. For a pipe it warns that O_NONBLOCK would break old
        // make; its reopened description is private here, so that does not apply.
        let try_client = match jsl.into_try_acquire_client() {
            Ok(c) => c,
            Err(jobslot::IntoTryAcquireClientError::IncompatibleWithOlderMake(c)) => c,
            Err(e) => panic!("jobslot try-acquire client: {e}"),
        };
        let jsl = rt.block_on(async {
            jobslot::AsyncAcquireClient::new(try_client).expect("jobslot async client")
        });
        pair(
            &mut group,
            &format!("jobslot/{k}"),
            &format!("acquire+drop, `jobslot` (async, tokio), {k}"),
            Target::Report,
            |iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        drop(black_box(jsl.acquire().await.expect("acquire")));
                    }
                    start.elapsed()
                })
            },
            &mut raw_pair,
        );
        drop(jsl);
        drop(js);

        let left = pool.available();
        assert_eq!(left, 8, "{k}: the pool should hold its 8 tokens again");
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = harness::config();
    targets = acquire_release
}
criterion_main!(benches);
