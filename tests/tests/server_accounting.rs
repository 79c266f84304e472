//! A pool of our own: it accounts for every token at shutdown (lost and extra ones), refuses
//! sizes it cannot hold without hanging, cleans up its fifo, and hands its pipe to the
//! children it configures and to no others.

mod fixture;

use std::os::unix::fs::FileTypeExt;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use fixture::within;
use jobserver_io::{ErrorKind, Server};
use jobserver_tests::Driver;

const WORKER: &str = env!("CARGO_BIN_EXE_jobserver-worker");

jobserver_tests::conformance!(
    shutdown_is_balanced_after_use,
    shutdown_refuses_while_a_client_holds_tokens,
    forgotten_token_keeps_the_pool_in_use,
    token_kept_by_another_process_is_reported_lost,
    injected_bytes_are_reported_extra,
    zero_jobs_is_a_capacity_error,
    pool_larger_than_any_pipe_fails_promptly,
    pool_larger_than_default_pipe_resizes_or_refuses,
    fifo_exists_while_server_or_client_lives,
    configure_hands_the_pipe_to_that_child_only,
    configured_command_keeps_the_pipe_after_server_drop,
    configured_command_keeps_the_fifo_after_server_drop,
    configured_make_keeps_the_fifo_after_server_drop,
);

fn shutdown_is_balanced_after_use<D: Driver>() {
    for fifo in [false, true] {
        D::block_on(async {
            let server = if fifo {
                Server::<D>::new_fifo(4)
            } else {
                Server::<D>::new(4)
            }
            .expect("server");
            assert_eq!(server.jobs(), 4);
            assert_eq!(server.available().unwrap(), 3);
            let client = server.client().expect("client");
            let tokens = within("4 tokens", client.acquire_many(4))
                .await
                .expect("tokens");
            assert_eq!(server.available().unwrap(), 0);
            assert!(client.try_acquire().expect("try").is_none());
            drop(tokens);
            drop(client);
            let report = server.shutdown().expect("shutdown");
            assert!(report.is_balanced(), "fifo={fifo}: {report}");
            assert_eq!((report.expected, report.returned), (3, 3));
        });
    }
}

/// While a client of the pool holds a token read from it (or waits for one), shutdown
/// refuses and takes nothing; once the token is back it is balanced, and it steals nothing
/// from a client that still exists: the pool works afterwards.
fn shutdown_refuses_while_a_client_holds_tokens<D: Driver>() {
    for fifo in [false, true] {
        D::block_on(async {
            let server = if fifo {
                Server::<D>::new_fifo(4)
            } else {
                Server::<D>::new(4)
            }
            .expect("server");
            let client = server.client().expect("client");
            let token = within("2 tokens", client.acquire_many(2))
                .await
                .expect("tokens");
            assert_eq!(server.available().unwrap(), 2);
            let err = server
                .shutdown()
                .expect_err("a client holds a token read from the pool");
            assert_eq!(err.kind(), ErrorKind::InUse, "fifo={fifo}: {err}");
            assert!(err.to_string().contains("hold 1 token"), "{err}");
            assert_eq!(server.available().unwrap(), 2, "shutdown took tokens");

            // A request waiting for tokens is a use too.
            let mut waiting = client.acquire_many(4);
            assert!(fixture::poll_once(&mut waiting).is_pending());
            let err = server.shutdown().expect_err("a request waits");
            assert_eq!(err.kind(), ErrorKind::InUse, "fifo={fifo}: {err}");
            drop(waiting);
            assert_eq!(server.available().unwrap(), 2);

            drop(token);
            assert_eq!(server.available().unwrap(), 3);
            // The client still exists but holds nothing: shutdown counts, and puts back.
            let report = server.shutdown().expect("shutdown");
            assert!(report.is_balanced(), "fifo={fifo}: {report}");
            assert_eq!((report.expected, report.returned), (3, 3));
            assert_eq!(server.available().unwrap(), 3, "shutdown stole the tokens");
            let all = within("the whole pool after shutdown", client.acquire_many(4))
                .await
                .expect("the pool still works");
            drop(all);
            drop(client);
            let report = server.shutdown().expect("shutdown");
            assert!(report.is_balanced(), "fifo={fifo}: {report}");
            assert_eq!((report.expected, report.returned), (3, 3));
        });
    }
}

/// A `Token` that holds an explicit byte (units 2: the implicit slot plus one byte) and is
/// forgotten keeps its client's state alive, holding that byte: to shutdown the pool is in
/// use, for good.
fn forgotten_token_keeps_the_pool_in_use<D: Driver>() {
    D::block_on(async {
        let server = Server::<D>::new(4).expect("server");
        let client = server.client().expect("client");
        let token = within("2 tokens", client.acquire_many(2))
            .await
            .expect("tokens");
        assert_eq!(client.stats().bytes_held, 1);
        std::mem::forget(token);
        drop(client);
        assert_eq!(server.available().unwrap(), 2);
        let err = server.shutdown().expect_err("the forgotten token is held");
        assert_eq!(err.kind(), ErrorKind::InUse, "{err}");
        assert_eq!(server.available().unwrap(), 2);
    });
}

/// A token that another process took and never gave back is reported lost.
fn token_kept_by_another_process_is_reported_lost<D: Driver>() {
    for fifo in [false, true] {
        let server = if fifo {
            Server::<D>::new_fifo(4)
        } else {
            Server::<D>::new(4)
        }
        .expect("server");
        let path = match server.fifo_path() {
            Some(path) => path.to_owned(),
            None => format!("/proc/self/fd/{}", pipe_fds(server.makeflags()).0).into(),
        };
        // Another process's own description of the pool: it takes one token and keeps it.
        let mut other = std::fs::OpenOptions::new()
            .read(true)
            .write(fifo)
            .open(&path)
            .expect("opening the pool");
        let mut byte = [0u8; 1];
        std::io::Read::read_exact(&mut other, &mut byte).expect("taking a token");
        assert_eq!(server.available().unwrap(), 2);
        let report = server.shutdown().expect("shutdown");
        assert_eq!(report.lost(), 1, "fifo={fifo}: {report}");
        assert_eq!(report.extra(), 0);
        assert!(!report.is_balanced());
        assert!(report.to_string().contains("1 of 3"), "{report}");
    }
}

/// The `R,W` of a pipe pool's `MAKEFLAGS`.
fn pipe_fds(makeflags: &std::ffi::OsStr) -> (i32, i32) {
    let value = makeflags.to_str().expect("utf-8");
    let auth = value
        .split(' ')
        .filter_map(|w| w.strip_prefix("--jobserver-auth="))
        .next_back()
        .expect("--jobserver-auth");
    let (r, w) = auth.split_once(',').expect("R,W");
    (r.parse().expect("R"), w.parse().expect("W"))
}

fn injected_bytes_are_reported_extra<D: Driver>() {
    let server = Server::<D>::new(2).expect("server");
    let (_, write) = pipe_fds(server.makeflags());
    // Another process writes a token it never read (a new description of the pool's pipe).
    std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/self/fd/{write}"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"+"))
        .expect("writing into the pool");
    assert_eq!(server.available().unwrap(), 2);
    let report = server.shutdown().expect("shutdown");
    assert_eq!((report.expected, report.returned), (1, 2));
    assert_eq!(report.extra(), 1, "{report}");
    assert_eq!(report.lost(), 0);
    assert!(report.to_string().contains("more than"), "{report}");
}

fn zero_jobs_is_a_capacity_error<D: Driver>() {
    for result in [Server::<D>::new(0), Server::<D>::new_fifo(0)] {
        let err = result.expect_err("a pool needs a job");
        assert_eq!(err.kind(), ErrorKind::Capacity, "{err}");
        assert!(err.to_string().contains("at least 1"), "{err}");
    }
}

/// Runs `f` on a thread and fails the test if it does not return within `limit`.
fn promptly<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("{what} did not return within {limit:?}"))
}

fn pool_larger_than_any_pipe_fails_promptly<D: Driver>() {
    // 2^31 + 1 tokens: more than F_SETPIPE_SZ can ever grant (at most 2^31 bytes).
    let jobs = (1usize << 31) + 2;
    for fifo in [false, true] {
        let err = promptly("Server::new(2^31 + 2)", fixture::HANG, move || {
            if fifo {
                Server::<D>::new_fifo(jobs).map(drop)
            } else {
                Server::<D>::new(jobs).map(drop)
            }
        })
        .expect_err("cannot hold 2^31 + 1 tokens");
        assert_eq!(err.kind(), ErrorKind::Capacity, "fifo={fifo}: {err}");
        assert!(err.to_string().contains("fewer jobs"), "{err}");
    }
}

fn pool_larger_than_default_pipe_resizes_or_refuses<D: Driver>() {
    const JOBS: usize = 70_000;
    match promptly("Server::new(70_000)", fixture::HANG, || {
        Server::<D>::new(JOBS)
    }) {
        Ok(server) => {
            eprintln!("{}: a pool of {JOBS} works: the pipe was resized", D::NAME);
            assert_eq!(server.available().unwrap(), JOBS - 1);
            assert!(server.makeflags().to_str().unwrap().starts_with("-j70000 "));
            let report = server.shutdown().expect("shutdown");
            assert!(report.is_balanced(), "{report}");
        }
        Err(err) => {
            eprintln!("{}: a pool of {JOBS} is refused: {err}", D::NAME);
            assert_eq!(err.kind(), ErrorKind::Capacity, "{err}");
        }
    }
}

fn fifo_exists_while_server_or_client_lives<D: Driver>() {
    D::block_on(async {
        let server = Server::<D>::new_fifo(2).expect("fifo server");
        let path = server.fifo_path().expect("path").to_owned();
        let is_fifo = || {
            std::fs::symlink_metadata(&path)
                .map(|m| m.file_type().is_fifo())
                .unwrap_or(false)
        };
        assert!(is_fifo(), "{}", path.display());
        let value = server.makeflags().to_str().expect("utf-8").to_owned();
        assert!(
            value.ends_with(&format!("--jobserver-auth=fifo:{}", path.display())),
            "{value}"
        );
        let client = server.client().expect("client");
        drop(server);
        assert!(is_fifo(), "a client of the pool keeps the fifo");
        let token = within("2 tokens", client.acquire_many(2))
            .await
            .expect("the pool still works");
        drop(token);
        drop(client);
        assert!(!path.exists(), "{} left behind", path.display());

        // Without any client too.
        let server = Server::<D>::new_fifo(2).expect("fifo server");
        let path = server.fifo_path().expect("path").to_owned();
        assert!(path.exists());
        drop(server);
        assert!(!path.exists(), "{} left behind", path.display());
    });
}

/// What `/proc/<pid>/fd` shows for a descriptor of this pipe: `pipe:[inode]` for an
/// anonymous pipe, or the removed fifo's path with ` (deleted)` for the pipe `Server::new`
/// makes from a fifo (`sys::create_split_pipe`).
fn pipe_id(fd: i32) -> String {
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).expect("readlink");
    let link = link.to_str().expect("utf-8").to_owned();
    assert!(
        link.starts_with("pipe:[")
            || (link.contains("jobserver-fifo-") && link.ends_with(" (deleted)")),
        "{link}"
    );
    link
}

const SHOW: &str = r#"echo "$MAKEFLAGS"; echo "$CARGO_MAKEFLAGS"; ls -l /proc/self/fd"#;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("running sh");
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.is_empty(), "the child complained: {stderr}");
    String::from_utf8(out.stdout).expect("utf-8")
}

/// True if the `ls -l /proc/self/fd` output shows descriptor `fd` as `target`.
fn has_fd(listing: &str, fd: i32, target: &str) -> bool {
    listing
        .lines()
        .any(|l| l.ends_with(&format!(" {fd} -> {target}")))
}

fn configure_hands_the_pipe_to_that_child_only<D: Driver>() {
    D::block_on(async {
        let server = Server::<D>::new(3).expect("server");
        // A client too: its private descriptions must not leak either.
        let client = server.client().expect("client");
        let _token = client.acquire().await.expect("token");
        let (read, write) = pipe_fds(server.makeflags());
        let id = pipe_id(read);
        assert_eq!(pipe_id(write), id);

        let mut cmd = Command::new("sh");
        cmd.args(["-c", SHOW]).env_remove("MAKEFLAGS");
        server.configure(&mut cmd);
        let out = run(&mut cmd);
        let mut lines = out.lines();
        let expected = server.makeflags().to_str().unwrap();
        assert_eq!(lines.next(), Some(expected), "MAKEFLAGS:\n{out}");
        assert_eq!(lines.next(), Some(expected), "CARGO_MAKEFLAGS:\n{out}");
        assert!(has_fd(&out, read, &id), "R not inherited:\n{out}");
        assert!(has_fd(&out, write, &id), "W not inherited:\n{out}");

        // The client's configure hands on the same pool.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", SHOW]);
        client.configure(&mut cmd);
        let out = run(&mut cmd);
        assert_eq!(out.lines().next(), Some(expected), "{out}");
        assert!(has_fd(&out, read, &id) && has_fd(&out, write, &id), "{out}");

        // A command nobody configured gets no descriptor of the pipe at all.
        let out = run(Command::new("sh").args(["-c", SHOW]));
        assert!(
            !out.contains(&id),
            "an unconfigured child inherited {id}:\n{out}"
        );
        assert!(!out.lines().next().unwrap().contains(&id));
    });
}

fn configured_command_keeps_the_pipe_after_server_drop<D: Driver>() {
    let server = Server::<D>::new(3).expect("server");
    let (read, write) = pipe_fds(server.makeflags());
    let id = pipe_id(read);
    let expected = server.makeflags().to_str().unwrap().to_owned();
    let mut cmd = Command::new("sh");
    // The child also takes the 2 tokens, proving the pool is usable, not just open. (dash
    // cannot redirect from descriptors above 9, so `head` opens /dev/fd/R.)
    cmd.args([
        "-c",
        &format!("{SHOW}; head -c 2 /dev/fd/{read} | od -An -c | tr -d ' \\n'; echo"),
    ]);
    server.configure(&mut cmd);
    drop(server);
    let out = run(&mut cmd);
    assert_eq!(out.lines().next(), Some(expected.as_str()), "{out}");
    assert!(has_fd(&out, read, &id), "R closed with the server:\n{out}");
    assert!(has_fd(&out, write, &id), "W closed with the server:\n{out}");
    assert_eq!(out.lines().last(), Some("++"), "tokens:\n{out}");
}

/// A command configured for a fifo pool, then the server dropped before the command spawns:
/// the fifo (and its tokens) live as long as the command, and are gone after it.
fn configured_command_keeps_the_fifo_after_server_drop<D: Driver>() {
    let server = Server::<D>::new_fifo(3).expect("fifo server");
    let path = server.fifo_path().expect("path").to_owned();
    let mut cmd = Command::new(WORKER);
    // The worker's second unit is a token read from the fifo.
    cmd.args(["--driver", D::NAME, "--units", "2", "--hold-ms", "10"]);
    jobserver_tests::timeline::clean_env(&mut cmd);
    server.configure(&mut cmd);
    drop(server);
    assert!(
        path.exists(),
        "{} removed under a configured command",
        path.display()
    );
    let out = cmd.output().expect("running the worker");
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("mode=Fifo"), "{stdout}");
    assert!(path.exists(), "the command still exists");
    drop(cmd);
    assert!(!path.exists(), "{} left behind", path.display());
}

/// The same with GNU make 4.4.1 running two jobs at once from the fifo.
fn configured_make_keeps_the_fifo_after_server_drop<D: Driver>() {
    use jobserver_tests::timeline::{run, write_makefile, Plus, TempDir, Timeline, Worker};
    let dir = TempDir::new(&format!("fifo-outlives-server-{}", D::NAME));
    let log = dir.join("units.log");
    let worker = Worker::new(WORKER)
        .driver("tokio")
        .units(1)
        .hold_ms(100)
        .log(&log);
    write_makefile(dir.path(), 4, Plus::Yes, &worker);
    let server = Server::<D>::new_fifo(2).expect("fifo server");
    let path = server.fifo_path().expect("path").to_owned();
    let mut cmd = Command::new(jobserver_tests::peers::make44());
    jobserver_tests::timeline::clean_env(&mut cmd);
    cmd.arg("-f").arg("Makefile");
    server.configure(&mut cmd);
    drop(server);
    let child = run(&mut cmd, dir.path());
    child.assert_success("make 4.4.1 on a fifo pool whose server was dropped");
    child.assert_no_internal();
    assert_eq!(
        child.lines_starting_with("connected ").len(),
        4,
        "{}",
        child.output
    );
    let timeline = Timeline::read(&log);
    timeline.assert_balanced();
    assert_eq!(
        timeline.max_concurrency(),
        2,
        "the pool of 2 was used fully"
    );
    assert!(path.exists());
    drop(cmd);
    assert!(!path.exists(), "{} left behind", path.display());
}
