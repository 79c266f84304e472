//! Issue item 2: acquire + release of the implicit slot (no I/O at all) on the tokio client,
//! against `tokio::sync::Semaphore` acquire + drop with one permit.
//!
//! A core-only bench: the client is connected to a pipe but never touches it, because one
//! request at a time is always served by the process's implicit slot.

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use jobserver_benches::harness::{self, Paired};
use jobserver_benches::{Kind, Pool, Results, Row, Target};
use jobserver_tokio::TokioReactor;
use tokio::sync::Semaphore;

static RESULTS: Results = Results::new("implicit_slot");

fn implicit_slot(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building a tokio runtime");
    let pool = Pool::new(Kind::Pipe, 0);
    let client = rt.block_on(async { pool.client::<TokioReactor>() });
    let semaphore = Semaphore::new(1);
    let mut paired = Paired::new();
    c.bench_function("implicit_slot/tokio", |b| {
        b.iter_custom(|iters| {
            paired.run(
                iters,
                |n| {
                    rt.block_on(async {
                        let start = Instant::now();
                        for _ in 0..n {
                            drop(black_box(client.acquire().await.expect("acquire")));
                        }
                        start.elapsed()
                    })
                },
                |n| {
                    rt.block_on(async {
                        let start = Instant::now();
                        for _ in 0..n {
                            drop(black_box(semaphore.acquire().await.expect("acquire")));
                        }
                        start.elapsed()
                    })
                },
            )
        })
    });
    let stats = client.stats();
    assert_eq!(stats.bytes_read, 0, "the implicit slot must need no read");
    if let Some(summary) = paired.summary(harness::sample_size()) {
        RESULTS.push(Row::timing(
            "implicit slot acquire+release, tokio",
            "tokio Semaphore(1) acquire+drop",
            &summary,
            Target::AtMost(1.3),
        ));
    }
}

criterion_group! {
    name = benches;
    config = harness::config();
    targets = implicit_slot
}
criterion_main!(benches);
