//! Issue item 8: processes woken per token when 8 processes wait on the same pool.
//!
//! Eight `bench-child wait-ours` processes each wait for a token through our tokio client
//! (wrapped in a counting reactor); the bench writes tokens one at a time, each time waiting
//! until one child reports it got the token and every child's threads sleep again. Each child
//! takes every token it can and keeps it, so eight processes wait for every token.
//!
//! Processes woken are counted two ways: by the children's counting reactors (readiness
//! wake-ups, and reads that found nothing), and by the kernel (the children's voluntary
//! context switches: each wake-up from sleep adds one). The reference is eight children that
//! wait with the `jobserver` crate's blocking `read` (exclusive wake-ups since Linux 5.6),
//! counted by the kernel. After the last token the pool must be empty: none left unread.

use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use jobserver_benches::child::{Record, Tag};
use jobserver_benches::harness::{self, Paired};
use jobserver_benches::procfs::{voluntary_switches, wait_asleep};
use jobserver_benches::{Kind, Pool, Results, Row, Target};
use jobserver_io::sys;

static RESULTS: Results = Results::new("processes");

const CHILDREN: usize = 8;

/// Eight children waiting on one pool.
struct Herd {
    children: Vec<Child>,
    pids: Vec<u32>,
    /// The write end of the children's shared stdin; dropping it tells them to stop.
    control: Option<File>,
    /// The read end of the children's shared stdout.
    reports: File,
    pool: Pool,
    tokens: u64,
    switches: u64,
    unread: usize,
}

impl Herd {
    fn spawn(mode: &str) -> Herd {
        let pool = Pool::new(Kind::Pipe, 0);
        let (control_read, control_write) = sys::create_pipe().expect("pipe");
        let (report_read, report_write) = sys::create_pipe().expect("pipe");
        let mut children = Vec::new();
        for id in 0..CHILDREN {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_bench-child"));
            cmd.arg(mode)
                .arg(id.to_string())
                .stdin(Stdio::from(control_read.try_clone().expect("dup")))
                .stdout(Stdio::from(report_write.try_clone().expect("dup")))
                .stderr(Stdio::inherit());
            pool.configure(&mut cmd);
            children.push(cmd.spawn().expect("spawning bench-child"));
        }
        drop((control_read, report_write));
        let pids = children.iter().map(Child::id).collect();
        let mut herd = Herd {
            children,
            pids,
            control: Some(File::from(control_write)),
            reports: File::from(report_read),
            pool,
            tokens: 0,
            switches: 0,
            unread: 0,
        };
        for _ in 0..CHILDREN {
            let record = Record::receive(&mut herd.reports).expect("a record from bench-child");
            assert_eq!(record.tag, Tag::Ready);
        }
        wait_asleep(&herd.pids, Duration::from_secs(10));
        herd
    }

    fn switches_now(&self) -> u64 {
        self.pids
            .iter()
            .map(|&pid| voluntary_switches(pid).expect("/proc/<pid>/task"))
            .sum()
    }

    /// Writes `n` tokens one at a time; returns the time from each write to a child holding
    /// the token, summed.
    fn run(&mut self, n: u64) -> Duration {
        let before = self.switches_now();
        let mut elapsed = Duration::ZERO;
        for _ in 0..n {
            let start = Instant::now();
            self.pool.write_token();
            let record = Record::receive(&mut self.reports).expect("a record from bench-child");
            elapsed += start.elapsed();
            assert_eq!(record.tag, Tag::Got);
            wait_asleep(&self.pids, Duration::from_secs(10));
        }
        self.switches += self.switches_now() - before;
        self.tokens += n;
        self.unread = self.unread.max(self.pool.available());
        elapsed
    }

    /// Stops the children and sums their counters.
    fn finish(mut self) -> [u64; 4] {
        drop(self.control.take());
        let mut totals = [0u64; 4];
        for _ in 0..CHILDREN {
            let record = Record::receive(&mut self.reports).expect("a record from bench-child");
            assert_eq!(record.tag, Tag::Counts);
            for (t, v) in totals.iter_mut().zip(record.values) {
                *t += v;
            }
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
        totals
    }
}

fn processes(c: &mut Criterion) {
    let mut ours = Herd::spawn("wait-ours");
    let mut blocking = Herd::spawn("wait-blocking");
    let mut paired = Paired::new();
    let mut group = c.benchmark_group("eight_processes");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.measurement_time(harness::scale(
        Duration::from_secs(4),
        Duration::from_millis(40),
    ));
    group.bench_function("token_written", |b| {
        b.iter_custom(|iters| paired.run(iters, |n| ours.run(n), |n| blocking.run(n)))
    });
    group.finish();

    let (tokens, switches, unread) = (ours.tokens, ours.switches, ours.unread);
    let (ref_tokens, ref_switches, ref_unread) =
        (blocking.tokens, blocking.switches, blocking.unread);
    let counts = ours.finish();
    let ref_counts = blocking.finish();
    assert_eq!(
        counts[3], tokens,
        "every token was taken by exactly one child"
    );
    assert_eq!(
        ref_counts[3], ref_tokens,
        "every token was taken by exactly one child"
    );

    let per = |v: u64, n: u64| v as f64 / n.max(1) as f64;
    let ref_woken = per(ref_switches, ref_tokens);
    let target = Target::AtMost(1.5);
    RESULTS.push(Row::count(
        format!(
            "processes woken per token ({CHILDREN} waiting processes), tokio client (kernel count)"
        ),
        (per(switches, tokens), ref_woken),
        "`jobserver` crate blocking read",
        target,
        format!(
            "{tokens} tokens; voluntary context switches of the children's threads per token: \
             every thread the kernel woke and that went back to sleep counts one"
        ),
    ));
    RESULTS.push(Row::count(
        format!(
            "processes that saw readiness per token ({CHILDREN} waiting processes), tokio client"
        ),
        (per(counts[0], tokens), ref_woken),
        "`jobserver` crate blocking read, kernel count",
        target,
        "counted by the children's reactors: readiness wake-ups delivered to the client; \
         a child whose epoll_wait found the pipe already emptied goes back to sleep in \
         the kernel without seeing it"
            .to_owned(),
    ));
    RESULTS.push(Row {
        metric: format!("reads finding nothing per token ({CHILDREN} waiting processes)"),
        ours: format!("{:.2}", per(counts[1], tokens)),
        reference: "0.00 (blocking read never fails)".to_owned(),
        ratio: "—".to_owned(),
        target: Target::Report.describe(""),
        met: None,
        note: format!(
            "driver reads that returned Pending, summed over the children; successful reads {:.2} \
             per token",
            per(counts[2], tokens)
        ),
    });
    let target = Target::Exactly(0.0);
    RESULTS.push(Row {
        metric: format!("tokens left unread ({CHILDREN} waiting processes)"),
        ours: unread.to_string(),
        reference: format!("{ref_unread} (`jobserver` crate blocking read)"),
        ratio: "—".to_owned(),
        target: target.describe(""),
        met: target.met(unread as f64),
        note: "largest FIONREAD of the pool after the children settled".to_owned(),
    });
    if let Some(s) = paired.summary(10) {
        RESULTS.push(Row::timing(
            &format!("time from token written to a child holding it ({CHILDREN} waiting)"),
            "`jobserver` crate blocking read",
            &s,
            Target::Report,
        ));
    }
}

criterion_group! {
    name = benches;
    config = harness::config();
    targets = processes
}
criterion_main!(benches);
