//! OUR server above real peers: a pool of `N` made by `Server::new` (pipe) or
//! `Server::new_fifo`, handed with `Server::configure` to a child make 4.3 (pipe only),
//! make 4.4.1 (pipe and fifo) or ninja 1.13.2 (pipe and fifo; run without `-j`, so it joins
//! the jobserver). The child runs more jobs than `N`, each a worker holding one unit (its
//! implicit slot, which the child paid for with one of our tokens).
//!
//! The jobs running at once must reach `N` and never exceed it, the child must succeed, and
//! `Server::shutdown` must find every token back (and a fifo pool's fifo must be gone). The
//! last tests add jobs of the server's own process (through `Server::client`) running beside
//! the child: the total still never exceeds `N`.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use jobserver_io::Server;
use jobserver_tests::timeline::{
    clean_env, run, write_build_ninja, write_makefile, Delta, LogWriter, Plus, Run, TempDir,
    Timeline, Worker,
};
use jobserver_tests::{peers, Driver};

const WORKER: &str = env!("CARGO_BIN_EXE_jobserver-worker");
/// The pool: `N` jobs.
const N: usize = 3;
/// Jobs the child runs, more than `N`.
const CHILD_JOBS: usize = 8;
const HOLD_MS: u64 = 150;

#[derive(Debug, Clone, Copy)]
enum Pool {
    Pipe,
    Fifo,
}

#[derive(Debug, Clone, Copy)]
enum Peer {
    Make43,
    Make44,
    Ninja,
}

fn new_server<D: Driver>(pool: Pool) -> Server<D> {
    match pool {
        Pool::Pipe => Server::<D>::new(N),
        Pool::Fifo => Server::<D>::new_fifo(N),
    }
    .unwrap_or_else(|e| panic!("creating a {pool:?} pool of {N}: {e}"))
}

/// Writes the child's build file (each job runs `worker`) and returns the command that runs
/// the child on it, without `-j` so that it joins our jobserver.
fn child_command(peer: Peer, dir: &Path, jobs: usize, worker: &Worker) -> Command {
    let program = match peer {
        Peer::Make43 => peers::make43(),
        Peer::Make44 => peers::make44(),
        Peer::Ninja => peers::ninja(),
    };
    let mut cmd = Command::new(program);
    clean_env(&mut cmd);
    match peer {
        Peer::Make43 | Peer::Make44 => {
            write_makefile(dir, jobs, Plus::Yes, worker);
            cmd.arg("-f").arg("Makefile");
        }
        Peer::Ninja => {
            write_build_ninja(dir, jobs, worker);
        }
    }
    cmd
}

/// Checks the child's run: success, and proof that it joined our jobserver.
fn check_child_run(peer: Peer, pool: Pool, run: &Run) {
    run.assert_success(&format!("{peer:?} under our {pool:?} pool"));
    match peer {
        Peer::Make43 | Peer::Make44 => {
            run.assert_no_internal();
            assert_eq!(
                run.jobserver_warnings(),
                Vec::<&str>::new(),
                "output:\n{}",
                run.output
            );
        }
        Peer::Ninja => assert!(
            run.output.contains("ninja: Jobserver mode detected"),
            "ninja did not join our jobserver; output:\n{}",
            run.output
        ),
    }
    let mode = match pool {
        Pool::Pipe => "Pipe",
        Pool::Fifo => "Fifo",
    };
    for line in run.lines_starting_with("connected ") {
        assert!(line.ends_with(&format!(" mode={mode}")), "{line}");
    }
}

fn child_stays_within_pool<D: Driver>(pool: Pool, peer: Peer) {
    let dir = TempDir::new(&format!("server-{peer:?}-{pool:?}-{}", D::NAME));
    let log = dir.join("units.log");
    let worker = Worker::new(WORKER)
        .driver("tokio")
        .units(1)
        .hold_ms(HOLD_MS)
        .log(&log);
    let server = new_server::<D>(pool);
    let mut cmd = child_command(peer, dir.path(), CHILD_JOBS, &worker);
    server.configure(&mut cmd);

    let child = run(&mut cmd, dir.path());
    check_child_run(peer, pool, &child);
    assert_eq!(child.lines_starting_with("connected ").len(), CHILD_JOBS);

    let timeline = Timeline::read(&log);
    timeline.assert_balanced();
    assert_eq!(timeline.acquisitions(), CHILD_JOBS);
    assert_eq!(
        timeline.max_concurrency(),
        N,
        "jobs running at once under our pool of {N} ({CHILD_JOBS} jobs: enough to reach it)"
    );

    drop(cmd);
    let fifo = server.fifo_path().map(Path::to_path_buf);
    let report = server.shutdown().expect("shutting the pool down");
    assert!(report.is_balanced(), "{report} ({report:?})");
    drop(server);
    if let Some(fifo) = fifo {
        assert!(!fifo.exists(), "{} was left behind", fifo.display());
    }
}

/// Jobs of the server's own process beside the child: `IN_PROCESS_TASKS` tasks, each running
/// `ROUNDS` jobs of `HOLD_MS` one after the other, through `Server::client`.
const IN_PROCESS_TASKS: usize = 3;
const ROUNDS: usize = 3;

fn server_process_and_child_share_n<D: Driver>(pool: Pool, peer: Peer) {
    let dir = TempDir::new(&format!("server-shared-{peer:?}-{pool:?}-{}", D::NAME));
    let log = dir.join("units.log");
    let worker = Worker::new(WORKER)
        .driver("tokio")
        .units(1)
        .hold_ms(HOLD_MS)
        .log(&log);
    let server = new_server::<D>(pool);
    let mut cmd = child_command(peer, dir.path(), CHILD_JOBS, &worker);
    server.configure(&mut cmd);
    let writer = Arc::new(LogWriter::open(&log).expect("opening the log"));

    let child = D::block_on(async {
        let client = server.client().expect("a client of our own pool");
        // The child runs its first job on its implicit slot: pay for it with one of our
        // tokens, held until it exits, as make does for each recipe.
        let for_child = client.acquire().await.expect("a token for the child");
        let tasks: Vec<_> = (0..IN_PROCESS_TASKS)
            .map(|_| {
                let (client, writer) = (client.clone(), writer.clone());
                D::spawn(async move {
                    for _ in 0..ROUNDS {
                        let token = client.acquire().await.expect("acquire in the server");
                        writer.event(Delta::Acquired).unwrap();
                        ::smol::Timer::after(Duration::from_millis(HOLD_MS)).await;
                        writer.event(Delta::Released).unwrap();
                        token.release().expect("release in the server");
                    }
                })
            })
            .collect();
        // Blocks this thread only; the tasks run on the runtime's other threads.
        let child = run(&mut cmd, dir.path());
        for task in tasks {
            task.await;
        }
        for_child.release().expect("releasing the child's token");
        let stats = client.stats();
        drop(client);
        eprintln!("server-side client stats: {stats:?}");
        child
    });
    check_child_run(peer, pool, &child);

    let timeline = Timeline::read(&log);
    timeline.assert_balanced();
    let own = std::process::id();
    assert_eq!(
        timeline.acquisitions(),
        CHILD_JOBS + IN_PROCESS_TASKS * ROUNDS
    );
    assert_eq!(
        timeline.events().iter().filter(|e| e.pid == own).count(),
        2 * IN_PROCESS_TASKS * ROUNDS
    );
    let max = timeline.max_concurrency();
    assert!(
        max <= N,
        "{max} jobs ran at once across the server process and its child; the pool is {N}"
    );
    assert_eq!(max, N, "with this much demand the pool must be used fully");

    drop(cmd);
    let report = server.shutdown().expect("shutting the pool down");
    assert!(report.is_balanced(), "{report} ({report:?})");
}

// Every case runs on every driver (tokio, smol, blocking).
fn make43_child_under_pipe_pool<D: Driver>() {
    child_stays_within_pool::<D>(Pool::Pipe, Peer::Make43);
}

fn make44_child_under_pipe_pool<D: Driver>() {
    child_stays_within_pool::<D>(Pool::Pipe, Peer::Make44);
}

fn make44_child_under_fifo_pool<D: Driver>() {
    child_stays_within_pool::<D>(Pool::Fifo, Peer::Make44);
}

fn ninja_child_under_pipe_pool<D: Driver>() {
    child_stays_within_pool::<D>(Pool::Pipe, Peer::Ninja);
}

fn ninja_child_under_fifo_pool<D: Driver>() {
    child_stays_within_pool::<D>(Pool::Fifo, Peer::Ninja);
}

fn server_process_and_make43_child_share_pipe_pool<D: Driver>() {
    server_process_and_child_share_n::<D>(Pool::Pipe, Peer::Make43);
}

fn server_process_and_make44_child_share_fifo_pool<D: Driver>() {
    server_process_and_child_share_n::<D>(Pool::Fifo, Peer::Make44);
}

fn server_process_and_ninja_child_share_pipe_pool<D: Driver>() {
    server_process_and_child_share_n::<D>(Pool::Pipe, Peer::Ninja);
}

jobserver_tests::conformance!(
    make43_child_under_pipe_pool,
    make44_child_under_pipe_pool,
    make44_child_under_fifo_pool,
    ninja_child_under_pipe_pool,
    ninja_child_under_fifo_pool,
    server_process_and_make43_child_share_pipe_pool,
    server_process_and_make44_child_share_fifo_pool,
    server_process_and_ninja_child_share_pipe_pool,
);
