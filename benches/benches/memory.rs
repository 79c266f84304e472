//! Issue item 7: memory per pending acquire, with 100,000 pending at once.
//!
//! Per waiter: the size of the `Acquire` future plus the heap that the client grows for it
//! (its request slot in the token machine and its waker slot, with the spare capacity of
//! those vectors), measured by a counting global allocator as live bytes after all 100,000
//! were polled once, minus live bytes before. The reference is `tokio::sync::Semaphore`'s
//! acquire future (an intrusive waiter: no heap). Criterion times one batch: create and poll
//! 100,000 acquires, then cancel them all.

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use jobserver_benches::harness::{self, fmt_ratio, Paired};
use jobserver_benches::{Kind, Pool, Results, Row, Target};
use jobserver_tokio::TokioReactor;
use tokio::sync::Semaphore;

static RESULTS: Results = Results::new("memory");

const PENDING: usize = 100_000;

/// Counts live heap bytes and allocations.
struct CountingAlloc;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged and only
// updates counters besides, so `System`'s guarantees hold.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Relaxed);
        ALLOCATIONS.fetch_add(1, Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which we pass on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Relaxed);
        ALLOCATIONS.fetch_add(1, Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Relaxed);
        // SAFETY: `ptr` was allocated by `System` (through us) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Relaxed);
        ALLOCATIONS.fetch_add(1, Relaxed);
        // SAFETY: `ptr` was allocated by `System` (through us) with `layout`; the caller
        // upholds the rest of `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// What one batch of pending acquires cost.
#[derive(Debug, Clone, Copy, Default)]
struct Footprint {
    future: usize,
    heap: isize,
    allocations: u64,
}

impl Footprint {
    fn per_waiter(&self) -> f64 {
        self.future as f64 + self.heap as f64 / PENDING as f64
    }
}

fn ours(rt: &tokio::runtime::Runtime, batches: u64) -> (Duration, Footprint) {
    let _guard = rt.enter();
    let pool = Pool::new(Kind::Pipe, 0);
    let client = pool.client::<TokioReactor>();
    let implicit = rt.block_on(client.acquire()).expect("implicit slot");
    let mut cx = Context::from_waker(Waker::noop());
    let mut futures = Vec::with_capacity(PENDING);
    let mut footprint = Footprint::default();
    let mut elapsed = Duration::ZERO;
    for batch in 0..batches {
        let (live, allocations) = (LIVE.load(Relaxed), ALLOCATIONS.load(Relaxed));
        let start = Instant::now();
        for _ in 0..PENDING {
            let mut acquire = client.acquire();
            assert!(Pin::new(&mut acquire).poll(&mut cx).is_pending());
            futures.push(acquire);
        }
        if batch == 0 {
            footprint = Footprint {
                future: std::mem::size_of_val(&futures[0]),
                heap: LIVE.load(Relaxed) - live,
                allocations: ALLOCATIONS.load(Relaxed) - allocations,
            };
            assert_eq!(client.stats().waiting, PENDING);
        }
        futures.clear();
        elapsed += start.elapsed();
    }
    drop(black_box(implicit));
    (elapsed, footprint)
}

fn semaphore(batches: u64) -> (Duration, Footprint) {
    let semaphore = Semaphore::new(0);
    let mut cx = Context::from_waker(Waker::noop());
    let mut footprint = Footprint::default();
    let mut elapsed = Duration::ZERO;
    for batch in 0..batches {
        let mut futures = Vec::with_capacity(PENDING);
        let (live, allocations) = (LIVE.load(Relaxed), ALLOCATIONS.load(Relaxed));
        let start = Instant::now();
        for _ in 0..PENDING {
            futures.push(semaphore.acquire());
        }
        for acquire in futures.iter_mut() {
            // SAFETY: the vector was allocated at full size before the first push, so it never
            // reallocates; its elements are not moved after this until they are dropped in
            // place by `clear`.
            let acquire = unsafe { Pin::new_unchecked(acquire) };
            assert!(acquire.poll(&mut cx).is_pending());
        }
        if batch == 0 {
            footprint = Footprint {
                future: std::mem::size_of_val(&futures[0]),
                heap: LIVE.load(Relaxed) - live,
                allocations: ALLOCATIONS.load(Relaxed) - allocations,
            };
        }
        futures.clear();
        elapsed += start.elapsed();
    }
    (elapsed, footprint)
}

fn memory(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building a tokio runtime");
    let mut paired = Paired::new();
    let (mut mine, mut theirs) = (Footprint::default(), Footprint::default());
    let mut group = c.benchmark_group("pending_100k");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.measurement_time(harness::scale(
        Duration::from_secs(3),
        Duration::from_millis(40),
    ));
    group.bench_function("acquire_poll_cancel", |b| {
        b.iter_custom(|iters| {
            paired.run(
                iters,
                |n| {
                    let (t, f) = ours(&rt, n);
                    mine = f;
                    t
                },
                |n| {
                    let (t, f) = semaphore(n);
                    theirs = f;
                    t
                },
            )
        })
    });
    group.finish();
    let Some(s) = paired.summary(10) else { return };
    let target = Target::AtMost(128.0);
    let (o, r) = (mine.per_waiter(), theirs.per_waiter());
    RESULTS.push(Row {
        metric: format!("bytes per pending acquire ({PENDING} pending)"),
        ours: format!("{o:.0} B"),
        reference: format!("{r:.0} B (tokio Semaphore acquire)"),
        ratio: fmt_ratio(o / r),
        target: target.describe(" B"),
        met: target.met(o),
        note: format!(
            "ours: future {} B + heap {:.1} B ({} allocations for {PENDING} waiters); \
             Semaphore: future {} B + heap {:.1} B",
            mine.future,
            mine.heap as f64 / PENDING as f64,
            mine.allocations,
            theirs.future,
            theirs.heap as f64 / PENDING as f64,
        ),
    });
    let mut row = Row::timing(
        &format!("enqueue + poll + cancel, per waiter ({PENDING} pending)"),
        "tokio Semaphore",
        &s,
        Target::Report,
    );
    row.ours = harness::fmt_ns(s.ours_ns / PENDING as f64);
    row.reference = format!(
        "{} (tokio Semaphore)",
        harness::fmt_ns(s.reference_ns / PENDING as f64)
    );
    RESULTS.push(row);
}

criterion_group! {
    name = benches;
    config = harness::config();
    targets = memory
}
criterion_main!(benches);
