//! Exclusive wake-ups (Linux): tokens written in one `write` while several processes wait
//! with `EPOLLEXCLUSIVE` reach every one of them, because each process that finds more than
//! it needs passes one on at once (the relay). Without it the kernel wakes one process per
//! `write`, and the rest of the burst would wait in the pipe until a token came back.
//!
//! - Eight `jobserver-worker --driver exclusive` processes each hold their implicit slot and
//!   wait for one token more, holding both for long. One `write` of 8 tokens must let all of
//!   them hold both units at the same time (no one waits for another's release), and every
//!   token comes back to the pool.
//! - A process that the kernel wakes for a token nobody in it wants any more (a request was
//!   cancelled) passes the token on to the next exclusive waiter, which would otherwise never
//!   be woken for it.
#![cfg(target_os = "linux")]

mod fixture;

use std::pin::pin;
use std::time::{Duration, Instant};

use fixture::poll_once;
use jobserver_io::thread::HelperReactor;
use jobserver_io::{ClientOptions, Server};
use jobserver_tests::timeline::{TempDir, Timeline, Worker};

const WORKER: &str = env!("CARGO_BIN_EXE_jobserver-worker");
const PROCESSES: usize = 8;
/// Long enough that a token which had to wait for another's release would show.
const HOLD_MS: u64 = 3000;
const HANG: Duration = Duration::from_secs(30);

fn acquisitions(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log)
        .ok()
        .and_then(|text| Timeline::parse(&text).ok())
        .map_or(0, |t| t.acquisitions())
}

#[test]
fn a_burst_in_one_write_reaches_every_exclusive_waiter() {
    let dir = TempDir::new("exclusive-burst");
    let log = dir.join("units.log");
    // No token in the pool yet: each worker's second unit has to wait.
    let server = Server::<HelperReactor>::new(1).expect("a pool");
    let worker = Worker::new(WORKER)
        .driver("exclusive")
        .units(2)
        .hold_ms(HOLD_MS)
        .log(&log);
    let mut children = Vec::new();
    for _ in 0..PROCESSES {
        let mut cmd = worker.command();
        server.configure(&mut cmd);
        cmd.stdout(std::process::Stdio::null());
        children.push(cmd.spawn().expect("spawning jobserver-worker"));
    }
    let start = Instant::now();
    while acquisitions(&log) < PROCESSES {
        assert!(start.elapsed() < HANG, "the workers did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Give every worker time to go to sleep in its exclusive wait (not needed for the
    // outcome: a worker that is not asleep yet finds the tokens in the pipe).
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(server.available().expect("FIONREAD"), 0);

    // One write of 8 tokens.
    server.resize(1 + PROCESSES).expect("8 tokens more");
    for mut child in children {
        let status = child.wait().expect("waiting for a worker");
        assert!(status.success(), "a worker failed: {status}");
    }

    let timeline = Timeline::read(&log);
    timeline.assert_balanced();
    assert_eq!(timeline.acquisitions(), 2 * PROCESSES);
    assert_eq!(
        timeline.max_concurrency(),
        2 * PROCESSES,
        "every worker held its second unit before any gave one back: none was stranded"
    );
    assert_eq!(
        server.available().expect("FIONREAD"),
        PROCESSES,
        "all came back"
    );
    let report = server.shutdown().expect("shutdown");
    assert!(report.is_balanced(), "{report:?}");
}

#[test]
fn a_wake_up_nobody_here_answers_is_passed_on() {
    let dir = TempDir::new("exclusive-unanswered");
    let log = dir.join("units.log");
    let server = Server::<HelperReactor>::new(1).expect("a pool");
    let exclusive = ClientOptions::new().exclusive_wakeups(true);
    let here = server.client_with(&exclusive).expect("a client");
    let implicit = futures_lite::future::block_on(here.acquire()).expect("implicit slot");
    {
        // This process queues first in the pipe's wait queue, then cancels its request:
        // its helper still waits, and the kernel will wake it first.
        let mut cancelled = pin!(here.acquire());
        assert!(poll_once(&mut cancelled).is_pending());
        std::thread::sleep(Duration::from_millis(100));
    }

    let mut cmd = Worker::new(WORKER)
        .driver("exclusive")
        .units(2)
        .hold_ms(HOLD_MS)
        .log(&log)
        .command();
    server.configure(&mut cmd);
    cmd.stdout(std::process::Stdio::null());
    let mut other = cmd.spawn().expect("spawning jobserver-worker");
    let start = Instant::now();
    while acquisitions(&log) < 1 {
        assert!(start.elapsed() < HANG, "the worker did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));

    // One token: the kernel wakes this process, which wants none, and it must pass it on.
    server.resize(2).expect("a token more");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = other.try_wait().expect("waiting for the worker") {
            break status;
        }
        if start.elapsed() > HANG {
            let _ = other.kill();
            let _ = other.wait();
            panic!("the token was stranded: the worker never got it");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "the worker failed: {status}");
    let timeline = Timeline::read(&log);
    timeline.assert_balanced();
    assert_eq!(timeline.acquisitions(), 2);
    assert_eq!(
        timeline.max_concurrency(),
        2,
        "the worker got the token while it held its implicit slot (not the slot after it)"
    );
    assert_eq!(here.stats().bytes_read, 0, "this process kept nothing");
    drop((implicit, here));
    assert_eq!(server.available().expect("FIONREAD"), 1);
    assert!(server.shutdown().expect("shutdown").is_balanced());
}
