//! Issue item 4: 1000 tasks wait for a token and tokens are written into the pool one at a
//! time. Per token: how many tasks were woken and how many reads failed with `EAGAIN`, for
//! our tokio client and for a naive shared `AsyncFd` on which every waiter awaits readiness
//! and tries the read itself.
//!
//! The same is measured for the fallback where no private reopen exists (the tokio client
//! reading the shared, blocking description through helper threads), paired with the default.
//!
//! Wake-ups are counted by wrapping each task's waker ([`WakeProbe`]). For our client the reads
//! are counted twice: by a [`CountingReactor`] around the tokio reactor (driver calls that
//! returned `Pending`), and exactly, by the `syscr` counter of `/proc/thread-self/io` (every
//! read system call of the runtime thread, failed ones included) minus the reads that got a
//! byte. The naive version counts its `EAGAIN` reads directly. Each task that gets a token
//! keeps it and waits again, so 1000 tasks wait for every token. A token is written only once
//! every woken task has run.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use jobserver_benches::counting::{CountingReactor, WakeProbe, REACTOR_COUNTS};
use jobserver_benches::harness::{self, Paired};
use jobserver_benches::procfs::thread_read_syscalls;
use jobserver_benches::{Kind, Pool, Results, Row, Target};
use jobserver_io::{sys, ClientOptions};
use jobserver_tokio::TokioReactor;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

static RESULTS: Results = Results::new("wakeups");

const WAITERS: usize = 1000;

type CountingClient = jobserver_io::Client<CountingReactor<TokioReactor>>;

/// What one run counted.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    tokens: u64,
    /// Distinct task wake-ups.
    woken: u64,
    /// Read system calls that failed with EAGAIN (from `syscr`, or counted directly).
    eagain: u64,
    /// Calls of the tasks' wakers (a task may be woken more than once before it runs).
    wake_calls: u64,
    /// Polls of the tasks.
    polls: u64,
    /// Driver calls of `poll_read` (ours only).
    poll_read: u64,
    /// Driver calls of `poll_read` that returned `Pending` (ours only).
    would_block: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.tokens += o.tokens;
        self.woken += o.woken;
        self.wake_calls += o.wake_calls;
        self.polls += o.polls;
        self.eagain += o.eagain;
        self.poll_read += o.poll_read;
        self.would_block += o.would_block;
    }
}

/// Read system calls that reading `syscr` itself costs.
fn syscr_overhead() -> u64 {
    let a = thread_read_syscalls().expect("/proc/thread-self/io");
    let b = thread_read_syscalls().expect("/proc/thread-self/io");
    b - a
}

/// Yields until every woken task has run.
async fn settle(probe: &WakeProbe) {
    while probe.outstanding() > 0 {
        tokio::task::yield_now().await;
    }
}

fn ours(rt: &Runtime, tokens: u64, overhead: u64, options: &ClientOptions) -> (Duration, Counts) {
    rt.block_on(async {
        let pool = Pool::new(Kind::Pipe, 0);
        let client: CountingClient = pool.client_with(options);
        let implicit = client.acquire().await.expect("implicit slot");
        let probe = WakeProbe::new();
        let held = Arc::new(Mutex::new(Vec::new()));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let tasks: Vec<_> = (0..WAITERS)
            .map(|_| {
                let (client, held, tx) = (client.clone(), held.clone(), tx.clone());
                tokio::spawn(probe.wrap(async move {
                    loop {
                        let token = client.acquire().await.expect("acquire");
                        held.lock().expect("lock").push(token);
                        let _ = tx.send(());
                    }
                }))
            })
            .collect();
        while client.stats().waiting < WAITERS {
            tokio::task::yield_now().await;
        }
        settle(&probe).await;

        let (woken, wake_calls, polls) = (probe.woken(), probe.wake_calls(), probe.polls());
        let reactor = REACTOR_COUNTS.snapshot();
        let syscr = thread_read_syscalls().expect("/proc/thread-self/io");
        let mut elapsed = Duration::ZERO;
        for _ in 0..tokens {
            let start = Instant::now();
            pool.write_token();
            rx.recv().await.expect("a task got the token");
            elapsed += start.elapsed();
            settle(&probe).await;
        }
        let syscr = thread_read_syscalls().expect("/proc/thread-self/io") - syscr - overhead;
        let reactor = REACTOR_COUNTS.snapshot() - reactor;
        let counts = Counts {
            tokens,
            woken: probe.woken() - woken,
            wake_calls: probe.wake_calls() - wake_calls,
            polls: probe.polls() - polls,
            eagain: syscr.saturating_sub(reactor.reads_with_bytes),
            poll_read: reactor.poll_read,
            would_block: reactor.would_block,
        };
        assert_eq!(reactor.reads_with_bytes, tokens, "one read per token");

        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
        drop(held);
        drop(implicit);
        (elapsed, counts)
    })
}

fn naive(rt: &Runtime, tokens: u64) -> (Duration, Counts) {
    rt.block_on(async {
        let pool = Pool::new(Kind::Pipe, 0);
        let reader = pool.private_reader();
        // SAFETY: `OwnedFd` owns an open descriptor that it never replaces; it stays open and
        // names the same description until the `AsyncFd`, its only owner, is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(reader, Interest::READABLE) };
        let fd = Arc::new(fd.expect("registering with tokio"));
        let eagain = Arc::new(AtomicU64::new(0));
        let probe = WakeProbe::new();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let tasks: Vec<_> = (0..WAITERS)
            .map(|_| {
                let (fd, eagain, tx) = (fd.clone(), eagain.clone(), tx.clone());
                tokio::spawn(probe.wrap(async move {
                    loop {
                        let mut guard = fd.readable().await.expect("readable");
                        let mut byte = [0u8; 1];
                        match guard.try_io(|fd| sys::read(fd.get_ref().as_fd(), &mut byte)) {
                            Ok(Ok(1)) => {
                                let _ = tx.send(());
                            }
                            Ok(other) => panic!("naive read: {other:?}"),
                            Err(_would_block) => {
                                eagain.fetch_add(1, Relaxed);
                            }
                        }
                    }
                }))
            })
            .collect();
        // Let every task reach its `readable().await`.
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        settle(&probe).await;

        let (woken, wake_calls, polls) = (probe.woken(), probe.wake_calls(), probe.polls());
        let failed = eagain.load(Relaxed);
        let mut elapsed = Duration::ZERO;
        for _ in 0..tokens {
            let start = Instant::now();
            pool.write_token();
            rx.recv().await.expect("a task got the token");
            elapsed += start.elapsed();
            settle(&probe).await;
        }
        let counts = Counts {
            tokens,
            woken: probe.woken() - woken,
            wake_calls: probe.wake_calls() - wake_calls,
            polls: probe.polls() - polls,
            eagain: eagain.load(Relaxed) - failed,
            ..Counts::default()
        };
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
        (elapsed, counts)
    })
}

fn wakeups(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building a tokio runtime");
    let overhead = syscr_overhead();
    let mut paired = Paired::new();
    let (mut ours_counts, mut naive_counts) = (Counts::default(), Counts::default());
    let mut group = c.benchmark_group("wakeups_1000_waiters");
    group.sample_size(10);
    group.bench_function("token_written", |b| {
        b.iter_custom(|iters| {
            paired.run(
                iters,
                |n| {
                    let (t, counts) = ours(&rt, n, overhead, &ClientOptions::new());
                    ours_counts += counts;
                    t
                },
                |n| {
                    let (t, counts) = naive(&rt, n);
                    naive_counts += counts;
                    t
                },
            )
        })
    });
    let fallback_options = ClientOptions::new().shared_description(true);
    let mut fallback_paired = Paired::new();
    let mut fallback_counts = Counts::default();
    group.bench_function("token_written_fallback", |b| {
        b.iter_custom(|iters| {
            fallback_paired.run(
                iters,
                |n| {
                    let (t, counts) = ours(&rt, n, overhead, &fallback_options);
                    fallback_counts += counts;
                    t
                },
                |n| ours(&rt, n, overhead, &ClientOptions::new()).0,
            )
        })
    });
    group.finish();
    if let Some(s) = fallback_paired.summary(10) {
        let f = &fallback_counts;
        let per = |v: u64| v as f64 / f.tokens.max(1) as f64;
        RESULTS.push(Row::count(
            format!("tasks woken per token ({WAITERS} waiting), fallback: shared description"),
            (per(f.woken), 1.0),
            "default client",
            Target::Exactly(1.0),
            format!(
                "{} tokens; the tokio client forced to read the blocking pipe through helper \
                 threads (ClientOptions::shared_description), as where no /proc/self/fd \
                 exists; waker calls {:.2}, task polls {:.2}, driver poll_read calls {:.2} \
                 per token",
                f.tokens,
                per(f.wake_calls),
                per(f.polls),
                per(f.poll_read)
            ),
        ));
        RESULTS.push(Row::timing(
            &format!("time from token written to task woken ({WAITERS} waiting), fallback"),
            "default client",
            &s,
            Target::Report,
        ));
    }
    let Some(s) = paired.summary(10) else { return };
    let per = |v: u64, c: &Counts| v as f64 / c.tokens.max(1) as f64;
    let (o, n) = (&ours_counts, &naive_counts);

    RESULTS.push(Row::count(
        format!("tasks woken per token ({WAITERS} waiting)"),
        (per(o.woken, o), per(n.woken, n)),
        "naive shared AsyncFd",
        Target::Exactly(1.0),
        format!(
            "{} tokens for ours, {} for naive; counted by wrapping each task's waker; per token, \
             waker calls {:.2} vs {:.2}, task polls {:.2} vs {:.2}",
            o.tokens,
            n.tokens,
            per(o.wake_calls, o),
            per(n.wake_calls, n),
            per(o.polls, o),
            per(n.polls, n)
        ),
    ));

    RESULTS.push(Row::count(
        format!("EAGAIN reads per token ({WAITERS} waiting)"),
        (per(o.eagain, o), per(n.eagain, n)),
        "naive shared AsyncFd",
        Target::Exactly(0.0),
        format!(
            "ours: read syscalls from /proc/thread-self/io syscr minus reads that got a byte; \
             driver poll_read calls per token {:.2}, of which Pending {:.2}",
            per(o.poll_read, o),
            per(o.would_block, o)
        ),
    ));

    RESULTS.push(Row::timing(
        &format!("time from token written to task woken ({WAITERS} waiting)"),
        "naive shared AsyncFd",
        &s,
        Target::Report,
    ));
}

criterion_group! {
    name = benches;
    config = harness::config();
    targets = wakeups
}
criterion_main!(benches);
