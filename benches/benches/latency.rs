//! Issue items 5 and 6: token latency.
//!
//! - Cross-process wake latency (item 5, and the second half of item 6): a child process
//!   waits for a token and the bench writes it. Latency is from just before the bench's
//!   `write` to just after the child holds the token, both `CLOCK_MONOTONIC`, the child's
//!   stamp sent back over its stdout. Three children, each on its own pool, take turns round
//!   by round: our tokio client, a bare `epoll_wait` + `read` (the reference of item 5), and
//!   the `jobserver` crate's helper thread delivering to a tokio task (the reference of item
//!   6). A fourth child waits with tokio's own `AsyncFd` (readable + read), to tell the
//!   runtime's share from our client's. A token is written only once every thread of the
//!   child sleeps, so each round measures a real wake-up from sleep. It runs twice: with
//!   the children on the bench's CPU (the software path alone: the bench's `write`, a
//!   context switch, the child's wake-up path) and on another CPU (adds waking an idle
//!   CPU, which on a virtual machine costs tens of microseconds and varies a lot).
//! - Token latency when a token is already in the pool (item 6): in this process, from asking
//!   to holding, our tokio client against the `jobserver` crate's helper thread
//!   (`request_token`, delivered to a tokio task through a channel).

use std::io::Write;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use jobserver_benches::child::{monotonic_ns, Record, Tag, GO};
use jobserver_benches::harness::{self, fmt_ns, fmt_ratio, quantile, PairSample, Paired};
use jobserver_benches::procfs::{self, wait_asleep};
use jobserver_benches::{Kind, Pool, Results, Row, Target};
use jobserver_tokio::TokioReactor;

static RESULTS: Results = Results::new("latency");

/// A child process that waits for one token per round.
struct Waiter {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    pool: Pool,
}

impl Waiter {
    fn spawn(mode: &str) -> Waiter {
        let pool = Pool::new(Kind::Pipe, 0);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bench-child"));
        cmd.arg(mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        pool.configure(&mut cmd);
        let mut child = cmd.spawn().expect("spawning bench-child");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("child stdout");
        Waiter {
            child,
            stdin,
            stdout,
            pool,
        }
    }

    fn receive(&mut self, tag: Tag) -> Record {
        let record = Record::receive(&mut self.stdout).expect("a record from bench-child");
        assert_eq!(record.tag, tag, "unexpected record from bench-child");
        record
    }

    /// One round: returns the nanoseconds from writing the token to the child holding it.
    fn round(&mut self) -> u64 {
        let stdin = self.stdin.as_mut().expect("child stdin");
        stdin.write_all(&[GO]).expect("starting a round");
        stdin.flush().expect("starting a round");
        self.receive(Tag::Ready);
        wait_asleep(&[self.child.id()], Duration::from_secs(10));
        let start = monotonic_ns();
        self.pool.write_token();
        let got = self.receive(Tag::Got).values[0];
        // The child gives the token back; take it so the pool is empty for the next round.
        self.pool.take_token();
        got.saturating_sub(start)
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// Latencies of one sample, per child.
#[derive(Default)]
struct Rounds {
    ours: Vec<Vec<u64>>,
    epoll: Vec<Vec<u64>>,
    helper: Vec<Vec<u64>>,
    asyncfd: Vec<Vec<u64>>,
}

/// Where the children run relative to the bench.
#[derive(Clone, Copy)]
struct Placement {
    name: &'static str,
    bench_cpu: usize,
    child_cpu: usize,
}

fn cross_process(c: &mut Criterion) {
    let original = procfs::affinity().expect("sched_getaffinity");
    let cpus = procfs::allowed_cpus().expect("sched_getaffinity");
    let mut placements = vec![Placement {
        name: "same CPU",
        bench_cpu: cpus[0],
        child_cpu: cpus[0],
    }];
    if cpus.len() > 1 {
        placements.push(Placement {
            name: "other CPU",
            bench_cpu: cpus[0],
            child_cpu: cpus[1],
        });
    }
    for placement in placements {
        cross_process_on(c, placement);
    }
    procfs::set_affinity(&original).expect("sched_setaffinity");
}

fn cross_process_on(c: &mut Criterion, placement: Placement) {
    // Children inherit the affinity of the thread that spawns them.
    procfs::set_affinity(&procfs::only_cpu(placement.child_cpu)).expect("sched_setaffinity");
    let mut ours = Waiter::spawn("latency-ours");
    let mut epoll = Waiter::spawn("latency-epoll");
    let mut helper = Waiter::spawn("latency-helper");
    let mut asyncfd = Waiter::spawn("latency-asyncfd");
    procfs::set_affinity(&procfs::only_cpu(placement.bench_cpu)).expect("sched_setaffinity");
    let mut rounds = Rounds::default();
    let mut group = c.benchmark_group("cross_process_wake");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(harness::scale(20, 10));
    group.measurement_time(harness::scale(
        Duration::from_secs(6),
        Duration::from_millis(40),
    ));
    let id = format!("tokio_client/{}", placement.name.replace(' ', "_"));
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let (mut o, mut e, mut h, mut a) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            // Rotate the order of the children from sample to sample.
            let shift = rounds.ours.len() % 4;
            for _ in 0..iters {
                for k in 0..4 {
                    match (k + shift) % 4 {
                        0 => o.push(ours.round()),
                        1 => e.push(epoll.round()),
                        2 => h.push(helper.round()),
                        _ => a.push(asyncfd.round()),
                    }
                }
            }
            let total = Duration::from_nanos(o.iter().sum());
            rounds.ours.push(o);
            rounds.epoll.push(e);
            rounds.helper.push(h);
            rounds.asyncfd.push(a);
            total
        })
    });
    group.finish();
    drop((ours, epoll, helper, asyncfd));

    let keep = harness::scale(20, 10).min(rounds.ours.len());
    let last = |v: &[Vec<u64>]| -> Vec<f64> {
        v[v.len() - keep..]
            .iter()
            .flatten()
            .map(|&x| x as f64)
            .collect()
    };
    let (o, e, h, a) = (
        last(&rounds.ours),
        last(&rounds.epoll),
        last(&rounds.helper),
        last(&rounds.asyncfd),
    );
    if o.is_empty() {
        return;
    }
    // Per-sample medians, for the spread of the ratio.
    let sample_ratio = |theirs: &[Vec<u64>]| -> (f64, f64) {
        let n = rounds.ours.len();
        let ratios: Vec<f64> = (n - keep..n)
            .map(|i| {
                let m = |v: &[u64]| quantile(&v.iter().map(|&x| x as f64).collect::<Vec<_>>(), 0.5);
                m(&rounds.ours[i]) / m(&theirs[i])
            })
            .collect();
        (quantile(&ratios, 0.25), quantile(&ratios, 0.75))
    };
    let rows = [
        (
            "bare epoll_wait + read",
            &e,
            Target::AtMost(1.3),
            sample_ratio(&rounds.epoll),
        ),
        (
            "`jobserver` helper thread → tokio task",
            &h,
            Target::AtMost(0.2),
            sample_ratio(&rounds.helper),
        ),
        (
            "tokio AsyncFd readable + read",
            &a,
            Target::Report,
            sample_ratio(&rounds.asyncfd),
        ),
    ];
    for (reference, theirs, target, (q1, q3)) in rows {
        for (label, q) in [("median", 0.5), ("p99", 0.99)] {
            let (ours_q, theirs_q) = (quantile(&o, q), quantile(theirs, q));
            let ratio = ours_q / theirs_q;
            let note = if q == 0.5 {
                format!(
                    "{} rounds each, interleaved; per-sample median ratio IQR {}–{}",
                    o.len(),
                    fmt_ratio(q1),
                    fmt_ratio(q3)
                )
            } else {
                format!("{} rounds each, interleaved", o.len())
            };
            RESULTS.push(Row {
                metric: format!(
                    "cross-process wake latency, {label}, tokio client, child on {}",
                    placement.name
                ),
                ours: fmt_ns(ours_q),
                reference: format!("{} ({reference})", fmt_ns(theirs_q)),
                ratio: fmt_ratio(ratio),
                target: target.describe("x"),
                met: target.met(ratio),
                note,
            });
        }
    }
}

fn token_available(c: &mut Criterion) {
    let pool = Pool::new(Kind::Pipe, 4);
    // SAFETY: the descriptors named in the environment are this pool's, open in this process
    // for as long as `pool` lives (longer than the client).
    let js = pool.with_env(|| unsafe { jobserver::Client::from_env() }.expect("from_env"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building a tokio runtime");
    let client = rt.block_on(async { pool.client::<TokioReactor>() });
    let implicit = rt.block_on(client.acquire()).expect("implicit slot");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let helper = js
        .into_helper_thread(move |acquired| {
            let _ = tx.send(acquired);
        })
        .expect("helper thread");

    let mut paired = Paired::new();
    c.bench_function("token_available/tokio_client", |b| {
        b.iter_custom(|iters| {
            let ours = |n: u64| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..n {
                        let start = Instant::now();
                        let token = client.acquire().await.expect("acquire");
                        total += start.elapsed();
                        drop(token);
                    }
                    total
                })
            };
            let mut theirs = |n: u64| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..n {
                        let start = Instant::now();
                        helper.request_token();
                        let acquired = rx.recv().await.expect("helper").expect("acquire");
                        total += start.elapsed();
                        drop(acquired);
                    }
                    total
                })
            };
            // Interleave finely: alternate batches of 16 within the sample.
            let (mut o, mut t) = (Duration::ZERO, Duration::ZERO);
            let mut left = iters;
            let ours_first = paired.ours_first();
            while left > 0 {
                let n = left.min(16);
                if ours_first {
                    o += ours(n);
                    t += theirs(n);
                } else {
                    t += theirs(n);
                    o += ours(n);
                }
                left -= n;
            }
            paired.push(PairSample {
                iters,
                ours: o,
                reference: t,
            });
            o
        })
    });
    drop(helper);
    drop(implicit);
    if let Some(s) = paired.summary(harness::sample_size()) {
        RESULTS.push(Row::timing(
            "token latency, token already in the pool, tokio client",
            "`jobserver` helper thread → tokio task",
            &s,
            Target::AtMost(0.2),
        ));
    }
}

criterion_group! {
    name = benches;
    config = harness::config();
    targets = token_available, cross_process
}
criterion_main!(benches);
