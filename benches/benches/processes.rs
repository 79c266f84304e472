//! Processes woken per token when 8 or 32 processes wait on the same pool (issue item 8, and
//! issue 12's exclusive wake-ups).
//!
//! `bench-child wait-*` processes each wait for a token; the bench writes tokens one at a
//! time, each time waiting until one child reports it got the token and every child's threads
//! sleep again. Each child takes every token it can and keeps it, so all of them wait for
//! every token. The herds:
//!
//! - `wait-ours`: our tokio client (wrapped in a counting reactor), the default wait: tokio's
//!   reactor on a private description;
//! - `wait-exclusive`: the same client with exclusive wake-ups (a helper thread in an
//!   `EPOLLEXCLUSIVE` epoll, with the relay);
//! - `wait-read-thread`: the other way to exclusive wake-ups, measured to choose between
//!   them: a helper thread in a blocking `read` on a private blocking description;
//! - `wait-blocking`: the `jobserver` crate's blocking `read` (the reference: exclusive
//!   wake-ups since Linux 5.6).
//!
//! Processes woken are counted by the kernel: a child whose threads' voluntary context
//! switches grew during a token's round was woken. (The switches themselves are reported
//! too: a woken child of ours switches on its helper and runtime threads.) The counting
//! reactors of `wait-ours` also report readiness wake-ups and reads that found nothing.
//!
//! A burst row writes 8 tokens in one `write` while the children wait: with exclusive
//! wake-ups the kernel wakes one process for it, and the relay must get all 8 taken (0 left
//! unread).

use std::fs::File;
use std::os::fd::AsFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use jobserver_benches::child::{Record, Tag, RECORD_LEN};
use jobserver_benches::harness::{self, Paired};
use jobserver_benches::procfs::{voluntary_switches, wait_asleep};
use jobserver_benches::{Kind, Pool, Results, Row, Target};
use jobserver_io::sys;
use rustix::event::{poll, PollFd, PollFlags, Timespec};

static RESULTS: Results = Results::new("processes");

/// Tokens in the burst row, written in one `write`.
const BURST: usize = 8;
/// How long the burst row waits for all its tokens to be taken before it counts the rest as
/// stranded.
const BURST_WAIT: Duration = Duration::from_secs(2);

/// Children waiting on one pool.
struct Herd {
    mode: &'static str,
    children: Vec<Child>,
    pids: Vec<u32>,
    /// The write end of the children's shared stdin; dropping it tells them to stop.
    control: Option<File>,
    /// The read end of the children's shared stdout.
    reports: File,
    pool: Pool,
    tokens: u64,
    /// Children woken, summed over the tokens written one at a time.
    woken: u64,
    /// Voluntary context switches of the children's threads over those tokens.
    switches: u64,
    unread: usize,
    /// Bursts written, tokens of them taken in time, tokens left unread after them, and the
    /// time from each burst's write to its last token taken, summed.
    bursts: u64,
    burst_taken: u64,
    burst_unread: usize,
    burst_time: Duration,
}

impl Herd {
    fn spawn(mode: &'static str, count: usize) -> Herd {
        let pool = Pool::new(Kind::Pipe, 0);
        let (control_read, control_write) = sys::create_pipe().expect("pipe");
        let (report_read, report_write) = sys::create_pipe().expect("pipe");
        let mut children = Vec::new();
        for id in 0..count {
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
            mode,
            children,
            pids,
            control: Some(File::from(control_write)),
            reports: File::from(report_read),
            pool,
            tokens: 0,
            woken: 0,
            switches: 0,
            unread: 0,
            bursts: 0,
            burst_taken: 0,
            burst_unread: 0,
            burst_time: Duration::ZERO,
        };
        for _ in 0..count {
            let record = Record::receive(&mut herd.reports).expect("a record from bench-child");
            assert_eq!(record.tag, Tag::Ready);
        }
        herd.settle();
        herd
    }

    fn settle(&self) {
        wait_asleep(&self.pids, Duration::from_secs(10));
    }

    /// Each child's voluntary context switches now.
    fn switches_now(&self) -> Vec<u64> {
        self.pids
            .iter()
            .map(|&pid| voluntary_switches(pid).expect("/proc/<pid>/task"))
            .collect()
    }

    /// Writes `n` tokens one at a time; returns the time from each write to a child holding
    /// the token, summed.
    fn run(&mut self, n: u64) -> Duration {
        let mut elapsed = Duration::ZERO;
        for _ in 0..n {
            let before = self.switches_now();
            let start = Instant::now();
            self.pool.write_token();
            let record = Record::receive(&mut self.reports).expect("a record from bench-child");
            elapsed += start.elapsed();
            assert_eq!(record.tag, Tag::Got, "{}", self.mode);
            self.settle();
            let after = self.switches_now();
            for (b, a) in before.iter().zip(&after) {
                self.woken += u64::from(a > b);
                self.switches += a - b;
            }
        }
        self.tokens += n;
        self.unread = self.unread.max(self.pool.available());
        elapsed
    }

    /// Writes [`BURST`] tokens in one `write` and waits (at most [`BURST_WAIT`]) until the
    /// children took them all.
    fn burst(&mut self) {
        let start = Instant::now();
        self.pool.write_tokens(BURST);
        let mut taken = 0;
        while taken < BURST {
            let Some(left) = BURST_WAIT.checked_sub(start.elapsed()) else {
                break;
            };
            if !readable_within(&self.reports, left) {
                break;
            }
            let record = Record::receive(&mut self.reports).expect("a record from bench-child");
            assert_eq!(record.tag, Tag::Got, "{}", self.mode);
            taken += 1;
        }
        if taken == BURST {
            self.burst_time += start.elapsed();
        }
        self.settle();
        self.bursts += 1;
        self.burst_taken += taken as u64;
        self.burst_unread = self.burst_unread.max(self.pool.available());
        // Tokens a stranded burst left behind would be taken by the next round: take them
        // out without blocking (a child may take one first), and read the records of any
        // taken meanwhile.
        if self.pool.available() > 0 {
            let reader = self.pool.private_reader();
            let mut buf = [0u8; 64];
            while matches!(sys::read(reader.as_fd(), &mut buf), Ok(n) if n > 0) {}
        }
        while readable_within(&self.reports, Duration::ZERO) {
            let _ = Record::receive(&mut self.reports);
        }
    }

    /// Stops the children and sums their counters.
    fn finish(mut self) -> [u64; 4] {
        drop(self.control.take());
        let mut totals = [0u64; 4];
        for _ in 0..self.children.len() {
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

    fn per_token(&self, v: u64) -> f64 {
        v as f64 / self.tokens.max(1) as f64
    }

    fn woken_per_token(&self) -> f64 {
        self.per_token(self.woken)
    }
}

/// Whether a whole record can be read from `reports` within `limit`.
fn readable_within(reports: &File, limit: Duration) -> bool {
    let timeout = Timespec {
        tv_sec: limit.as_secs() as i64,
        tv_nsec: i64::from(limit.subsec_nanos()),
    };
    let mut fds = [PollFd::new(reports, PollFlags::IN)];
    match poll(&mut fds, Some(&timeout)) {
        Ok(_) => sys::bytes_available(reports.as_fd()).is_ok_and(|n| n >= RECORD_LEN),
        Err(_) => false,
    }
}

/// Runs `ours` and `reference` interleaved under criterion (one benchmark), then (with
/// `bursts`) a few bursts each; returns the latency summary.
fn measure(
    c: &mut Criterion,
    name: &str,
    ours: &mut Herd,
    reference: &mut Herd,
    bursts: bool,
) -> Option<harness::PairSummary> {
    let mut paired = Paired::new();
    let mut group = c.benchmark_group(name);
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.measurement_time(harness::scale(
        Duration::from_secs(4),
        Duration::from_millis(40),
    ));
    group.bench_function("token_written", |b| {
        b.iter_custom(|iters| paired.run(iters, |n| ours.run(n), |n| reference.run(n)))
    });
    group.finish();
    for _ in 0..if bursts { harness::scale(5, 1) } else { 0 } {
        ours.burst();
        reference.burst();
    }
    paired.summary(10)
}

fn woken_row(n: usize, ours: &Herd, reference: &Herd, reference_name: &str, target: Target) -> Row {
    Row::count(
        format!(
            "processes woken per token ({n} waiting processes), {} (kernel count)",
            describe(ours.mode)
        ),
        (ours.woken_per_token(), reference.woken_per_token()),
        &format!("{reference_name}, kernel count"),
        target,
        format!(
            "{} tokens; a child whose threads' voluntary context switches grew during the \
             token's round was woken; switches per token, all threads of all children: {:.2} \
             (reference {:.2})",
            ours.tokens,
            ours.per_token(ours.switches),
            reference.per_token(reference.switches)
        ),
    )
}

fn burst_row(n: usize, ours: &Herd, reference: &Herd, reference_name: &str) -> Row {
    let target = Target::Exactly(0.0);
    let unread = ours
        .burst_unread
        .max(BURST * ours.bursts as usize - ours.burst_taken as usize);
    Row {
        metric: format!(
            "tokens left unread after {BURST} tokens in one write ({n} waiting), {}",
            describe(ours.mode)
        ),
        ours: unread.to_string(),
        reference: format!(
            "{} ({reference_name})",
            reference
                .burst_unread
                .max(BURST * reference.bursts as usize - reference.burst_taken as usize)
        ),
        ratio: "—".to_owned(),
        target: target.describe(""),
        met: target.met(unread as f64),
        note: format!(
            "{} bursts; tokens not taken within {} s or left in the pipe (FIONREAD) after the \
             children settled; mean time from the write to the last of the {BURST} taken: \
             {} (reference {})",
            ours.bursts,
            BURST_WAIT.as_secs(),
            mean_burst(ours),
            mean_burst(reference)
        ),
    }
}

fn mean_burst(herd: &Herd) -> String {
    let complete = herd.burst_taken / BURST as u64;
    if complete == 0 {
        return "—".to_owned();
    }
    harness::fmt_ns(herd.burst_time.as_nanos() as f64 / complete as f64)
}

fn describe(mode: &str) -> &'static str {
    match mode {
        "wait-ours" => "tokio client",
        "wait-exclusive" => "tokio client, exclusive wake-ups",
        "wait-read-thread" => "helper thread in a blocking read (alternative)",
        "wait-blocking" => "`jobserver` crate blocking read",
        _ => "?",
    }
}

fn processes(c: &mut Criterion) {
    let small = 8;
    let large = harness::scale(32, 8);

    // 8 waiting: the default against the `jobserver` crate's blocking read.
    let mut ours = Herd::spawn("wait-ours", small);
    let mut blocking = Herd::spawn("wait-blocking", small);
    let default_latency = measure(c, "eight_processes", &mut ours, &mut blocking, false);
    let reference = "`jobserver` crate blocking read";
    RESULTS.push(woken_row(
        small,
        &ours,
        &blocking,
        reference,
        Target::AtMost(1.5),
    ));

    // 8 waiting: exclusive wake-ups against the default, and the alternative.
    let mut exclusive = Herd::spawn("wait-exclusive", small);
    let mut default = Herd::spawn("wait-ours", small);
    let exclusive_latency = measure(
        c,
        "eight_processes_exclusive",
        &mut exclusive,
        &mut default,
        true,
    );
    let mut read_thread = Herd::spawn("wait-read-thread", small);
    let mut exclusive2 = Herd::spawn("wait-exclusive", small);
    let alternative_latency = measure(
        c,
        "eight_processes_read_thread",
        &mut read_thread,
        &mut exclusive2,
        true,
    );
    RESULTS.push(woken_row(
        small,
        &exclusive,
        &blocking,
        reference,
        Target::AtMost(1.2),
    ));
    RESULTS.push(woken_row(
        small,
        &read_thread,
        &blocking,
        reference,
        Target::Report,
    ));
    RESULTS.push(burst_row(small, &exclusive, &default, "tokio client"));
    RESULTS.push(burst_row(
        small,
        &read_thread,
        &exclusive2,
        "exclusive wake-ups",
    ));
    for herd in [exclusive, default, read_thread, exclusive2] {
        finish_checked(herd);
    }

    // 32 waiting: exclusive wake-ups against the default's herd.
    let mut exclusive = Herd::spawn("wait-exclusive", large);
    let mut default = Herd::spawn("wait-ours", large);
    let large_latency = measure(
        c,
        "many_processes_exclusive",
        &mut exclusive,
        &mut default,
        true,
    );
    RESULTS.push(woken_row(
        large,
        &exclusive,
        &default,
        "tokio client",
        Target::AtMost(1.2),
    ));
    RESULTS.push(woken_row(
        large,
        &default,
        &blocking,
        reference,
        Target::Report,
    ));
    RESULTS.push(burst_row(large, &exclusive, &default, "tokio client"));
    for herd in [exclusive, default] {
        finish_checked(herd);
    }

    // The default's own rows, from its counting reactors.
    let (tokens, unread) = (ours.tokens, ours.unread);
    let ref_unread = blocking.unread;
    let counts = finish_checked(ours);
    finish_checked(blocking);
    let per = |v: u64, n: u64| v as f64 / n.max(1) as f64;
    RESULTS.push(Row::count(
        format!("processes that saw readiness per token ({small} waiting processes), tokio client"),
        (per(counts[0], counts[3]), 1.0),
        "`jobserver` crate blocking read, kernel count",
        Target::AtMost(1.5),
        "counted by the children's reactors: readiness wake-ups delivered to the client; \
         a child whose epoll_wait found the pipe already emptied goes back to sleep in \
         the kernel without seeing it"
            .to_owned(),
    ));
    RESULTS.push(Row {
        metric: format!("reads finding nothing per token ({small} waiting processes)"),
        ours: format!("{:.2}", per(counts[1], counts[3])),
        reference: "0.00 (blocking read never fails)".to_owned(),
        ratio: "—".to_owned(),
        target: Target::Report.describe(""),
        met: None,
        note: format!(
            "driver reads that returned Pending, summed over the children; successful reads {:.2} \
             per token",
            per(counts[2], counts[3])
        ),
    });
    let target = Target::Exactly(0.0);
    RESULTS.push(Row {
        metric: format!("tokens left unread ({small} waiting processes)"),
        ours: unread.to_string(),
        reference: format!("{ref_unread} (`jobserver` crate blocking read)"),
        ratio: "—".to_owned(),
        target: target.describe(""),
        met: target.met(unread as f64),
        note: format!("largest FIONREAD of the pool after the children settled; {tokens} tokens"),
    });
    let timing = [
        (
            default_latency,
            format!("time from token written to a child holding it ({small} waiting)"),
            reference,
        ),
        (
            exclusive_latency,
            format!("time from token written to a child holding it ({small} waiting), exclusive wake-ups"),
            "tokio client, default wait",
        ),
        (
            large_latency,
            format!("time from token written to a child holding it ({large} waiting), exclusive wake-ups"),
            "tokio client, default wait",
        ),
        (
            alternative_latency,
            format!("time from token written to a child holding it ({small} waiting), helper thread in a blocking read"),
            "tokio client, exclusive wake-ups",
        ),
    ];
    for (summary, metric, reference) in timing {
        if let Some(s) = summary {
            RESULTS.push(Row::timing(&metric, reference, &s, Target::Report));
        }
    }
}

/// Stops a herd and checks that every token it was given was taken by exactly one child
/// (a stranded burst's leftovers were taken out again by the bench); returns its counters.
fn finish_checked(herd: Herd) -> [u64; 4] {
    let (mode, given) = (herd.mode, herd.tokens + herd.burst_taken);
    let counts = herd.finish();
    assert!(
        counts[3] >= given,
        "{mode}: the children got {} tokens of the {given} taken",
        counts[3]
    );
    counts
}

criterion_group! {
    name = benches;
    config = harness::config();
    targets = processes
}
criterion_main!(benches);
