//! Interop with the `jobserver` crate (what cargo, cc and rustc use), both ways:
//!
//! - the crate as a CLIENT of our server: workers using `jobserver::Client::from_env` and
//!   blocking `acquire()` under our pipe or fifo pool of `N` never run more than `N` units at
//!   once, and our `Server::shutdown` finds every token back;
//! - the crate as the SERVER for our client: `jobserver::Client::new(N)` configured into our
//!   workers (every driver); they use its tokens, and once they exit the crate's pipe holds
//!   all `N` again, each the byte the crate wrote.
//!
//! Each child's implicit slot is paid for by the parent with a token held while the child
//! runs, as make does for each recipe; so the bound across all processes is exactly `N`.

use std::process::Command;

use jobserver_io::blocking;
use jobserver_tests::timeline::{run, Run, TempDir, Timeline, Worker};
use jobserver_tests::{conformance, Driver};

const WORKER: &str = env!("CARGO_BIN_EXE_jobserver-worker");
/// Worker processes running at once.
const CHILDREN: usize = 2;
/// Units each worker holds at once: its implicit slot plus tokens it must read.
const UNITS: usize = 3;
const HOLD_MS: u64 = 150;

/// Runs every command at once, each on its own thread, and returns their runs in order.
fn run_all(commands: Vec<Command>, dir: &TempDir) -> Vec<Run> {
    std::thread::scope(|s| {
        let handles: Vec<_> = commands
            .into_iter()
            .map(|mut cmd| s.spawn(move || run(&mut cmd, dir.path())))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a child runner panicked"))
            .collect()
    })
}

fn check_timeline(log: &std::path::Path, n: usize) {
    let timeline = Timeline::read(log);
    timeline.assert_balanced();
    assert_eq!(timeline.acquisitions(), CHILDREN * UNITS);
    assert_eq!(timeline.pids().len(), CHILDREN);
    let max = timeline.max_concurrency();
    assert!(max <= n, "{max} units held at once with a pool of {n}");
    assert_eq!(
        max,
        n,
        "the workers must have read the free tokens from the pool (demand {} > {n})",
        CHILDREN * UNITS
    );
}

/// Pool size for the crate-as-client tests: `CHILDREN` tokens pay for the children's implicit
/// slots, the other 2 must be read by the crate's `acquire()`.
const OUR_N: usize = 4;

fn jobserver_crate_clients_stay_within(server: blocking::Server, label: &str) {
    let dir = TempDir::new(label);
    let log = dir.join("units.log");
    let client = blocking::Client::from(server.client().expect("a client of our pool"));
    let for_children: Vec<_> = (0..CHILDREN)
        .map(|_| client.acquire().expect("a token for a child"))
        .collect();

    let commands = (0..CHILDREN)
        .map(|_| {
            let mut cmd = Worker::new(WORKER)
                .driver("jobserver-crate")
                .units(UNITS)
                .hold_ms(HOLD_MS)
                .log(&log)
                .command();
            server.configure(&mut cmd);
            cmd
        })
        .collect();
    for child in run_all(commands, &dir) {
        child.assert_success("a worker using the jobserver crate");
        assert_eq!(
            child
                .lines_starting_with("connected driver=JobserverCrate")
                .len(),
            1
        );
    }
    check_timeline(&log, OUR_N);

    for token in for_children {
        token.release().expect("releasing a child's token");
    }
    drop(client);
    let report = server.shutdown().expect("shutting the pool down");
    assert!(report.is_balanced(), "{report} ({report:?})");
}

#[test]
fn jobserver_crate_clients_stay_within_our_pipe_pool() {
    let server = blocking::Server::new(OUR_N).expect("a pipe pool");
    jobserver_crate_clients_stay_within(server, "crate-client-pipe");
}

#[test]
fn jobserver_crate_clients_stay_within_our_fifo_pool() {
    let server = blocking::Server::new_fifo(OUR_N).expect("a fifo pool");
    jobserver_crate_clients_stay_within(server, "crate-client-fifo");
}

/// The crate's pool: `jobserver::Client::new(n)` writes `n` tokens (the crate's convention;
/// make would preload `n - 1`).
const CRATE_N: usize = 3;

fn our_client_returns_every_token_to_a_jobserver_crate_pool<D: Driver>() {
    let dir = TempDir::new(&format!("crate-server-{}", D::NAME));
    let log = dir.join("units.log");
    let pool = jobserver::Client::new(CRATE_N).expect("a jobserver crate pool");
    assert_eq!(pool.available().unwrap(), CRATE_N);
    let for_children: Vec<_> = (0..CHILDREN)
        .map(|_| pool.acquire().expect("a token for a child"))
        .collect();

    let commands = (0..CHILDREN)
        .map(|_| {
            let mut cmd = Worker::new(WORKER)
                .driver(D::NAME)
                .units(UNITS)
                .hold_ms(HOLD_MS)
                .log(&log)
                .command();
            // The crate's way to hand its pool to a child (CARGO_MAKEFLAGS and the fds).
            pool.configure(&mut cmd);
            cmd
        })
        .collect();
    for child in run_all(commands, &dir) {
        child.assert_success("our worker under a jobserver crate pool");
        let connected = child.lines_starting_with("connected ");
        assert_eq!(connected.len(), 1, "output:\n{}", child.output);
        assert!(connected[0].ends_with(" mode=Pipe"), "{}", connected[0]);
    }
    check_timeline(&log, CRATE_N);

    drop(for_children);
    assert_eq!(
        pool.available().unwrap(),
        CRATE_N,
        "every token of the jobserver crate's pool must be back in its pipe"
    );
    // And byte for byte: the crate fills its pipe with `|`; a client must write back the byte
    // it read, never one of its own (make's `+`, say).
    assert_eq!(drain(&pool), vec![b'|'; CRATE_N]);
}

/// Reads every byte out of the crate's pipe, through a private non-blocking description of
/// its read side (found in the `CARGO_MAKEFLAGS` the crate gives children).
fn drain(pool: &jobserver::Client) -> Vec<u8> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;

    let mut probe = Command::new("true");
    pool.configure(&mut probe);
    let makeflags = probe
        .get_envs()
        .find(|(k, _)| *k == "CARGO_MAKEFLAGS")
        .and_then(|(_, v)| v)
        .expect("the crate sets CARGO_MAKEFLAGS")
        .to_str()
        .unwrap()
        .to_owned();
    let fds = makeflags
        .split(' ')
        .find_map(|w| w.strip_prefix("--jobserver-auth="))
        .expect("--jobserver-auth in the crate's CARGO_MAKEFLAGS");
    let (read, _) = fds.split_once(',').expect("R,W");
    let mut pipe = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(format!("/proc/self/fd/{read}"))
        .expect("reopening the crate's pipe");
    let mut bytes = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("reading the crate's pipe: {e}"),
        }
    }
    bytes
}

conformance!(our_client_returns_every_token_to_a_jobserver_crate_pool);
