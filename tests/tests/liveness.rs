//! Liveness on a real jobserver: a client whose make is killed (`SIGKILL`, so make cleans
//! nothing up) while its requests wait learns that the server is gone, within a bounded
//! time, and loses no token.
//!
//! The pipe never reaches end-of-file here: the client holds a write end itself. Each test
//! runs `liveness-waiter` as the only recipe of `make -j4` (with `+`), directly (make is its
//! parent) or under a shell that stays (`sh` is its parent, make its grandparent). The
//! waiter holds 3 of the 4 units, leaves one `acquire_many(2)` holding the last token and a
//! second one waiting behind it, and writes `waiting`. The test then kills make, does not
//! reap it at first (a zombie make must count as gone too), and reads the waiter's
//! `report`: both requests failed with `ServerGone` (the token promised to the first passed
//! to the second and was written back when it failed too), the message says what happened
//! and what to do, and after the waiter gave back what it held the pipe has all 3 tokens
//! again.
//!
//! With make 4.4.1 the jobserver is a fifo, which a killed make leaves on disk: the fifo's
//! path does not help, the server process check does.
//!
//! Two in-process tests cover the rest: a fifo whose path is removed (as make 4.4 does when
//! it exits normally) fails the waiters, and a waiter whose server is alive keeps waiting
//! through several checks and is then served as usual (no false alarm).

mod fixture;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fixture::{poll_once, within, Kind, Pool};
use jobserver_io::{ErrorKind, Server};
use jobserver_tests::timeline::{clean_env, TempDir};
use jobserver_tests::{conformance, peers, Driver};

const WAITER: &str = env!("CARGO_BIN_EXE_liveness-waiter");
const JOBS: usize = 4;
/// How long the waiter may take to notice (its checks run every 500 ms; the bound leaves
/// room for a loaded machine).
const BOUND: Duration = Duration::from_secs(5);
/// How long the test waits for the waiter to get ready before failing.
const READY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Under {
    /// `+WAITER ...`: make runs it itself.
    Make,
    /// `+WAITER ...; true`: make runs a shell, which runs it and waits.
    Shell,
}

fn read_map(path: &Path) -> HashMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.split(['\n', ' '])
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Waits until `path` exists, failing with make's output after `limit`.
fn wait_for(path: &Path, limit: Duration, output: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < limit,
            "{} did not appear within {limit:?}; make's output:\n{}",
            path.display(),
            std::fs::read_to_string(output).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn killed_make_is_noticed<D: Driver>(make: &Path, extra: &[&str], under: Under, fifo: bool) {
    let dir = TempDir::new(&format!("liveness-{}", D::NAME));
    let line = format!(
        "+{WAITER} --driver {} --dir {}",
        D::NAME,
        dir.path().display()
    );
    let line = match under {
        Under::Make => line,
        Under::Shell => format!("{line}; true"),
    };
    std::fs::write(dir.join("Makefile"), format!("all:\n\t{line}\n")).unwrap();
    let output = dir.join("output.txt");
    let out = std::fs::File::create(&output).unwrap();
    let mut cmd = Command::new(make);
    clean_env(&mut cmd);
    cmd.arg("-f")
        .arg("Makefile")
        .arg(format!("-j{JOBS}"))
        .args(extra)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    let mut make_child = cmd.spawn().expect("starting make");

    let waiting = dir.join("waiting");
    wait_for(&waiting, READY, &output);
    let who = read_map(&waiting);
    let expected_parent = match under {
        Under::Make => make.file_name().unwrap().to_string_lossy().into_owned(),
        Under::Shell => "sh".to_owned(),
    };
    let parent = &who["parent"];
    assert!(
        expected_parent.starts_with(parent.as_str()),
        "the waiter's parent is {parent:?}, not {expected_parent:?} (comm is cut at 15 bytes)"
    );
    assert_eq!(who["fifo"] != "-", fifo, "jobserver kind: {who:?}");

    // make dies without cleaning up; it stays a zombie until reaped below.
    let killed = Instant::now();
    make_child.kill().expect("killing make");
    let report_path = dir.join("report");
    wait_for(&report_path, READY, &output);
    let noticed = killed.elapsed();
    let status = make_child.wait().expect("reaping make");
    assert!(!status.success(), "make was killed: {status}");
    if fifo {
        // A killed make leaves its fifo behind.
        let _ = std::fs::remove_file(&who["fifo"]);
    }

    let report = std::fs::read_to_string(&report_path).unwrap();
    let r: HashMap<&str, &str> = report.lines().filter_map(|l| l.split_once('=')).collect();
    eprintln!(
        "{} {} under {under:?}: waiters failed {noticed:?} after make was killed",
        D::NAME,
        make.display()
    );
    for name in ["first", "second"] {
        assert_eq!(r[name], "ServerGone", "{name}: {report}");
        let message = r[&*format!("{name}_message")];
        assert!(
            message.contains("has exited") && message.contains("stop starting jobs"),
            "the message says what happened and what to do: {message}"
        );
    }
    assert!(
        noticed < BOUND,
        "the waiters noticed {noticed:?} after make was killed, more than {BOUND:?}"
    );
    assert_eq!(
        r["available"],
        (JOBS - 1).to_string(),
        "every token read is back in the pipe: {report}"
    );
}

fn make43_pipe_direct<D: Driver>() {
    killed_make_is_noticed::<D>(&peers::make43(), &[], Under::Make, false);
}

fn make43_pipe_under_a_shell<D: Driver>() {
    killed_make_is_noticed::<D>(&peers::make43(), &[], Under::Shell, false);
}

fn make44_fifo_direct<D: Driver>() {
    killed_make_is_noticed::<D>(&peers::make44(), &[], Under::Make, true);
}

fn make44_fifo_under_a_shell<D: Driver>() {
    killed_make_is_noticed::<D>(&peers::make44(), &[], Under::Shell, true);
}

/// make 4.4 removes its fifo when it exits: a waiting client notices the path is gone.
fn removed_fifo_fails_the_waiters<D: Driver>() {
    D::block_on(async {
        let server = Server::<D>::new_fifo(1).expect("a fifo pool");
        let path = server.fifo_path().expect("a path").to_owned();
        let client = jobserver_io::Client::<D>::from_env_with(fixture::makeflags(
            server.makeflags().to_str().unwrap().to_owned(),
        ))
        .expect("connecting to the fifo");
        let implicit = client.acquire().await.expect("the implicit slot");
        let mut waiter = client.acquire();
        let mut many = client.acquire_many(2);
        assert!(poll_once(&mut waiter).is_pending());
        assert!(poll_once(&mut many).is_pending());

        std::fs::remove_file(&path).expect("removing the fifo");
        let removed = Instant::now();
        for (name, fut) in [("acquire", &mut waiter), ("acquire_many", &mut many)] {
            let err = fixture::poll_until_ready(name, fut)
                .await
                .expect_err("the server is gone");
            assert_eq!(err.kind(), ErrorKind::ServerGone, "{}: {err}", D::NAME);
            assert!(err.to_string().contains("was removed"), "{err}");
        }
        assert!(
            removed.elapsed() < BOUND,
            "noticed after {:?}",
            removed.elapsed()
        );
        // Later requests fail at once; the implicit slot still works once free.
        let err = within("a later acquire", client.acquire())
            .await
            .expect_err("gone");
        assert_eq!(err.kind(), ErrorKind::ServerGone);
        drop(implicit);
        let token = within("the implicit slot", client.acquire())
            .await
            .expect("the implicit slot needs no server");
        assert_eq!(token.units(), 1);
    });
}

/// A waiter whose server is alive (here: the test's parent, which started it) is not told
/// otherwise: it waits through several checks and gets the token when one comes.
fn a_live_server_is_not_reported_gone<D: Driver>() {
    D::block_on(async {
        for kind in [Kind::Pipe, Kind::Fifo] {
            let pool = Pool::<D>::new(kind);
            let client = pool.client();
            let implicit = client.acquire().await.expect("the implicit slot");
            let mut waiter = client.acquire();
            assert!(poll_once(&mut waiter).is_pending());
            // Three checks' worth of waiting.
            smol::Timer::after(Duration::from_millis(1600)).await;
            assert!(
                poll_once(&mut waiter).is_pending(),
                "{kind:?}: still waiting"
            );
            assert_eq!(client.stats().waiting, 1);
            pool.put(b"t");
            let token = fixture::poll_until_ready("the token", &mut waiter)
                .await
                .expect("granted");
            drop((token, implicit));
            assert_eq!(pool.drain_sorted(), b"t", "{kind:?}: written back");
        }
    });
}

conformance!(
    removed_fifo_fails_the_waiters,
    a_live_server_is_not_reported_gone,
    make43_pipe_direct,
    make43_pipe_under_a_shell,
    make44_fifo_direct,
    make44_fifo_under_a_shell,
);
