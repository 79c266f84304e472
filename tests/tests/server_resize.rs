//! A pool of our own changes size at run time: growing writes new tokens (or keeps tokens
//! still owed from a shrink), shrinking never blocks anyone and absorbs tokens as they come
//! back, a full pipe fails without hanging, and shutdown balances after any of it.

mod fixture;

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use fixture::within;
use jobserver_io::{ErrorKind, Server};
use jobserver_tests::Driver;

jobserver_tests::conformance!(
    grow_writes_the_new_tokens,
    shrink_with_all_tokens_free_absorbs_at_once,
    shrink_while_tokens_are_held_absorbs_them_as_they_come_back,
    shrink_then_grow_cancels_the_debt,
    later_resize_and_shutdown_absorb_the_debt,
    resize_to_zero_or_beyond_any_pipe_is_a_capacity_error,
    grow_into_a_full_pipe_fails_promptly_and_counts_what_was_written,
    resize_from_another_thread,
);

fn server<D: Driver>(fifo: bool, jobs: usize) -> Server<D> {
    if fifo {
        Server::<D>::new_fifo(jobs)
    } else {
        Server::<D>::new(jobs)
    }
    .expect("server")
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

/// Resizes `server` on another thread, failing the test if that blocks; hands it back.
fn resize_promptly<D: Driver>(server: Server<D>, jobs: usize) -> Server<D> {
    let server = Arc::new(server);
    let shared = server.clone();
    promptly(&format!("resize({jobs})"), fixture::HANG, move || {
        shared.resize(jobs)
    })
    .unwrap_or_else(|e| panic!("resize({jobs}): {e}"));
    Arc::try_unwrap(server).expect("the resize thread is done")
}

/// `(jobs, bytes in the pipe, debt)`.
fn state<D: Driver>(server: &Server<D>) -> (usize, usize, usize) {
    (
        server.jobs(),
        server.available().expect("FIONREAD"),
        server.pending_absorb(),
    )
}

fn grow_writes_the_new_tokens<D: Driver>() {
    for fifo in [false, true] {
        let server = server::<D>(fifo, 2);
        assert_eq!(state(&server), (2, 1, 0), "fifo={fifo}");
        // Nothing is owed: absorbing takes nothing.
        assert_eq!(server.absorb().expect("absorb"), 0);
        server.resize(5).expect("grow");
        assert_eq!(state(&server), (5, 4, 0), "fifo={fifo}");
        server.resize(5).expect("same size");
        assert_eq!(state(&server), (5, 4, 0), "fifo={fifo}");
        server.resize(7).expect("grow again");
        assert_eq!(state(&server), (7, 6, 0), "fifo={fifo}");
        let report = server.shutdown().expect("shutdown");
        assert_eq!((report.expected, report.returned), (6, 6), "fifo={fifo}");
        assert!(report.is_balanced(), "fifo={fifo}: {report}");
    }
}

fn shrink_with_all_tokens_free_absorbs_at_once<D: Driver>() {
    for fifo in [false, true] {
        let server = server::<D>(fifo, 4);
        assert_eq!(state(&server), (4, 3, 0), "fifo={fifo}");
        server.resize(1).expect("shrink");
        assert_eq!(state(&server), (1, 0, 0), "fifo={fifo}");
        assert_eq!(server.absorb().expect("absorb"), 0);
        let report = server.shutdown().expect("shutdown");
        assert_eq!((report.expected, report.returned), (0, 0), "fifo={fifo}");
        assert!(report.is_balanced(), "fifo={fifo}: {report}");
    }
}

fn shrink_while_tokens_are_held_absorbs_them_as_they_come_back<D: Driver>() {
    for fifo in [false, true] {
        D::block_on(async {
            let server = server::<D>(fifo, 4);
            let client = server.client().expect("client");
            // Four single tokens: the implicit slot and all 3 bytes.
            let mut tokens = Vec::new();
            for i in 0..4 {
                tokens.push(
                    within(&format!("token {i}"), client.acquire())
                        .await
                        .expect("token"),
                );
            }
            assert_eq!(client.stats().bytes_held, 3);
            assert_eq!(state(&server), (4, 0, 0), "fifo={fifo}");

            // Shrinking to 2 blocks nobody and takes nothing from the holder.
            let server = resize_promptly(server, 2);
            assert_eq!(state(&server), (2, 0, 2), "fifo={fifo}");
            assert_eq!(client.stats().bytes_held, 3);
            assert_eq!(server.absorb().expect("absorb"), 0);

            // Each release writes one byte back; the first two are absorbed.
            drop(tokens.pop());
            assert_eq!(state(&server), (2, 1, 2), "fifo={fifo}");
            assert_eq!(server.absorb().expect("absorb"), 1);
            assert_eq!(state(&server), (2, 0, 1), "fifo={fifo}");
            drop(tokens.pop());
            assert_eq!(server.absorb().expect("absorb"), 1);
            assert_eq!(state(&server), (2, 0, 0), "fifo={fifo}");
            // The debt is paid: the third byte stays in the pool.
            drop(tokens.pop());
            assert_eq!(server.absorb().expect("absorb"), 0);
            assert_eq!(state(&server), (2, 1, 0), "fifo={fifo}");
            // The implicit slot writes nothing.
            drop(tokens.pop());
            drop(client);
            assert_eq!(state(&server), (2, 1, 0), "fifo={fifo}");

            let report = server.shutdown().expect("shutdown");
            assert_eq!((report.expected, report.returned), (1, 1), "fifo={fifo}");
            assert!(report.is_balanced(), "fifo={fifo}: {report}");
        });
    }
}

fn shrink_then_grow_cancels_the_debt<D: Driver>() {
    for fifo in [false, true] {
        D::block_on(async {
            let server = server::<D>(fifo, 4);
            let client = server.client().expect("client");
            let held = within("4 tokens", client.acquire_many(4))
                .await
                .expect("tokens");
            assert_eq!(state(&server), (4, 0, 0), "fifo={fifo}");

            let server = resize_promptly(server, 2);
            assert_eq!(state(&server), (2, 0, 2), "fifo={fifo}");
            // Growing by 1 is covered by the debt: nothing is written.
            server.resize(3).expect("grow within the debt");
            assert_eq!(state(&server), (3, 0, 1), "fifo={fifo}");
            // Growing by 2 more: 1 from the debt, 1 new byte.
            server.resize(5).expect("grow past the debt");
            assert_eq!(state(&server), (5, 1, 0), "fifo={fifo}");

            drop(held);
            drop(client);
            assert_eq!(state(&server), (5, 4, 0), "fifo={fifo}");
            assert_eq!(server.absorb().expect("absorb"), 0);
            let report = server.shutdown().expect("shutdown");
            assert_eq!((report.expected, report.returned), (4, 4), "fifo={fifo}");
            assert!(report.is_balanced(), "fifo={fifo}: {report}");
        });
    }
}

/// The debt is also paid by the next resize, and what is still owed at shutdown is expected
/// back (draining absorbs it); a token never returned is reported lost against it.
fn later_resize_and_shutdown_absorb_the_debt<D: Driver>() {
    for fifo in [false, true] {
        D::block_on(async {
            let server = server::<D>(fifo, 5);
            let client = server.client().expect("client");
            // The implicit slot and one byte in one token, and 3 bytes.
            let pair = within("2 tokens", client.acquire_many(2))
                .await
                .expect("tokens");
            let mut singles = Vec::new();
            for i in 0..3 {
                singles.push(
                    within(&format!("token {i}"), client.acquire())
                        .await
                        .expect("token"),
                );
            }
            assert_eq!(client.stats().bytes_held, 4);
            assert_eq!(state(&server), (5, 0, 0), "fifo={fifo}");
            server.resize(2).expect("shrink");
            assert_eq!(state(&server), (2, 0, 3), "fifo={fifo}");

            drop(singles.pop());
            drop(singles.pop());
            assert_eq!(state(&server), (2, 2, 3), "fifo={fifo}");
            // A resize to the same size absorbs what is free.
            server.resize(2).expect("same size");
            assert_eq!(state(&server), (2, 0, 1), "fifo={fifo}");

            drop(singles.pop());
            drop(pair);
            drop(client);
            assert_eq!(state(&server), (2, 2, 1), "fifo={fifo}");
            // Another process takes a token and never gives it back.
            let path = match server.fifo_path() {
                Some(path) => path.to_owned(),
                None => format!("/proc/self/fd/{}", pipe_fds(server.makeflags()).0).into(),
            };
            let mut other = std::fs::OpenOptions::new()
                .read(true)
                .write(fifo)
                .open(&path)
                .expect("opening the pool");
            let mut byte = [0u8; 1];
            std::io::Read::read_exact(&mut other, &mut byte).expect("taking a token");
            assert_eq!(state(&server), (2, 1, 1), "fifo={fifo}");
            // In circulation: 1 (N - 1) + 1 still owed = 2; 1 comes back, 1 is lost.
            let report = server.shutdown().expect("shutdown");
            assert_eq!((report.expected, report.returned), (2, 1), "fifo={fifo}");
            assert_eq!(report.lost(), 1, "fifo={fifo}: {report}");
        });
    }
}

fn resize_to_zero_or_beyond_any_pipe_is_a_capacity_error<D: Driver>() {
    for fifo in [false, true] {
        let server = Arc::new(server::<D>(fifo, 3));
        server.resize(2).expect("shrink");
        assert_eq!(state(&server), (2, 1, 0), "fifo={fifo}");

        let err = server.resize(0).expect_err("a pool needs a job");
        assert_eq!(err.kind(), ErrorKind::Capacity, "{err}");
        assert!(err.to_string().contains("at least 1"), "{err}");
        assert_eq!(state(&server), (2, 1, 0), "fifo={fifo}: unchanged");

        // 2^31 + 1 tokens: more than F_SETPIPE_SZ can ever grant.
        let shared = server.clone();
        let err = promptly("resize(2^31 + 2)", fixture::HANG, move || {
            shared.resize((1usize << 31) + 2)
        })
        .expect_err("cannot hold 2^31 + 1 tokens");
        assert_eq!(err.kind(), ErrorKind::Capacity, "{err}");
        assert!(err.to_string().contains("fewer jobs"), "{err}");
        assert_eq!(state(&server), (2, 1, 0), "fifo={fifo}: unchanged");

        let server = Arc::try_unwrap(server).expect("one owner");
        let report = server.shutdown().expect("shutdown");
        assert_eq!((report.expected, report.returned), (1, 1), "fifo={fifo}");
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

fn pipe_read_fd(makeflags: &std::ffi::OsStr) -> i32 {
    pipe_fds(makeflags).0
}

fn pipe_write_fd(makeflags: &std::ffi::OsStr) -> i32 {
    pipe_fds(makeflags).1
}

/// Opens the pool as another process would, non-blocking, for writing (and, for a fifo,
/// reading too).
fn intruder<D: Driver>(server: &Server<D>) -> File {
    match server.fifo_path() {
        Some(path) => OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nonblock_flag())
            .open(path),
        None => OpenOptions::new()
            .write(true)
            .custom_flags(nonblock_flag())
            .open(format!(
                "/proc/self/fd/{}",
                pipe_write_fd(server.makeflags())
            )),
    }
    .expect("opening the pool for writing")
}

fn nonblock_flag() -> i32 {
    rustix::fs::OFlags::NONBLOCK.bits() as i32
}

/// Another process fills the pipe with tokens it never read, until the kernel takes no more:
/// growing then writes nothing, fails with a capacity error without hanging, and leaves the
/// pool as it was. After some room is made, a grow larger than the room writes part of its
/// tokens, fails, and the pool grows by exactly the tokens written.
fn grow_into_a_full_pipe_fails_promptly_and_counts_what_was_written<D: Driver>() {
    for fifo in [false, true] {
        let server = server::<D>(fifo, 2);
        let mut intruder = intruder(&server);
        let capacity = jobserver_io::sys::pipe_capacity(intruder.as_fd()).expect("capacity");
        let mut injected = 0;
        loop {
            match intruder.write(b"x") {
                Ok(1) => injected += 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                other => panic!("filling the pool: {other:?}"),
            }
        }
        let full = 1 + injected;
        assert!(full <= capacity, "{full} > {capacity}");
        assert_eq!(state(&server), (2, full, 0), "fifo={fifo}");

        let server = Arc::new(server);
        let shared = server.clone();
        let err = promptly("resize(4) into a full pipe", fixture::HANG, move || {
            shared.resize(4)
        })
        .expect_err("the pipe is full");
        assert_eq!(err.kind(), ErrorKind::Capacity, "{err}");
        assert!(err.to_string().contains("after 0 of 2"), "{err}");
        assert_eq!(state(&server), (2, full, 0), "fifo={fifo}: unchanged");

        // Make room: another process takes half the pipe's bytes (and keeps them).
        let taken = capacity / 2;
        let reader = match server.fifo_path() {
            Some(_) => intruder.try_clone().expect("dup"),
            None => OpenOptions::new()
                .read(true)
                .custom_flags(nonblock_flag())
                .open(format!(
                    "/proc/self/fd/{}",
                    pipe_read_fd(server.makeflags())
                ))
                .expect("opening the pool for reading"),
        };
        let mut buf = vec![0u8; taken];
        (&reader).read_exact(&mut buf).expect("taking bytes");
        let left = full - taken;
        assert_eq!(state(&server), (2, left, 0), "fifo={fifo}");

        // Ask for as many new tokens as the pipe could ever hold: more than the room.
        let wanted = capacity - 1;
        let shared = server.clone();
        let err = promptly("resize into a part-full pipe", fixture::HANG, move || {
            shared.resize(2 + wanted)
        })
        .expect_err("the pipe fills up");
        assert_eq!(err.kind(), ErrorKind::Capacity, "{err}");
        let grown = server.jobs() - 2;
        assert!(grown > 0 && grown < wanted, "grown by {grown}: {err}");
        assert!(
            err.to_string()
                .contains(&format!("after {grown} of {wanted} new tokens")),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains(&format!("now has {} jobs", 2 + grown)),
            "{err}"
        );
        assert_eq!(state(&server), (2 + grown, left + grown, 0), "fifo={fifo}");

        drop((intruder, reader));
        let server = Arc::try_unwrap(server).expect("one owner");
        let report = server.shutdown().expect("shutdown");
        // 1 preloaded + the grown ones are expected; the intruder injected `injected` and
        // took `taken`.
        assert_eq!(
            (report.expected, report.returned),
            (1 + grown, left + grown),
            "fifo={fifo}: {report}"
        );
    }
}
/// The server is shared: one thread shrinks it while a task holds tokens and gives them back;
/// every returned byte is either absorbed or left for the new size, exactly.
fn resize_from_another_thread<D: Driver>() {
    D::block_on(async {
        let server = Arc::new(server::<D>(false, 8));
        let client = server.client().expect("client");
        let held = within("8 tokens", client.acquire_many(8))
            .await
            .expect("tokens");
        let shared = server.clone();
        promptly("resize(3) on another thread", fixture::HANG, move || {
            shared.resize(3)
        })
        .expect("shrink");
        assert_eq!(state(&server), (3, 0, 5));
        drop(held);
        drop(client);
        assert_eq!(state(&server), (3, 7, 5));
        let shared = server.clone();
        let absorbed = promptly("absorb on another thread", fixture::HANG, move || {
            shared.absorb()
        })
        .expect("absorb");
        assert_eq!(absorbed, 5);
        assert_eq!(state(&server), (3, 2, 0));
        let server = Arc::try_unwrap(server).expect("one owner");
        let report = server.shutdown().expect("shutdown");
        assert_eq!((report.expected, report.returned), (2, 2));
    });
}
