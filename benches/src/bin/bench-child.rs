//! The helper process of the cross-process benchmarks (`latency` and `processes`).
//!
//! `bench-child MODE [ID]`, with the pool named in `MAKEFLAGS`, control bytes on stdin and
//! records on stdout (see `jobserver_benches::child`). Modes:
//!
//! - `latency-ours`: a tokio client; per round (a `g` on stdin) it polls `acquire()` once,
//!   reports `Ready`, awaits the token, reports `Got` with the time, and drops the token.
//! - `latency-epoll`: the same round with a bare `epoll_wait` + `read` on a private
//!   non-blocking description: the floor any reactor-based client can reach.
//! - `latency-helper`: the same round with the `jobserver` crate's helper thread
//!   (`into_helper_thread` + `request_token`) delivering to a tokio task through a channel.
//! - `wait-ours ID`: a tokio client (with a counting reactor) that takes every token it can
//!   and keeps it, reporting `Got` for each; at end-of-file on stdin it reports its `Counts`
//!   and exits.
//! - `wait-exclusive ID`: the same client with exclusive wake-ups (a helper thread in an
//!   `EPOLLEXCLUSIVE` epoll).
//! - `wait-read-thread ID`: the other way to exclusive wake-ups, measured to choose between
//!   them: a helper thread in a blocking `read` on a private blocking description (a reopen
//!   without `O_NONBLOCK`), handing each byte to a tokio task through a channel.
//! - `wait-blocking ID`: the same with the `jobserver` crate's blocking `acquire`.
#![cfg(target_os = "linux")]

use std::future::Future;
use std::io::{self, Read};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::Poll;

use jobserver_benches::child::{monotonic_ns, Record, Tag, GO};
use jobserver_benches::counting::{CountingReactor, REACTOR_COUNTS};
use jobserver_io::sys::{self, Access};
use jobserver_io::ClientOptions;
use jobserver_tokio::TokioReactor;
use rustix::event::epoll;
use rustix::fs::{Mode, OFlags};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("");
    let id: u8 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
    match mode {
        "latency-ours" => runtime().block_on(latency_ours()),
        "latency-epoll" => latency_epoll(),
        "latency-helper" => runtime().block_on(latency_helper()),
        "latency-asyncfd" => runtime().block_on(latency_asyncfd()),
        "wait-ours" => wait_ours(id, ClientOptions::new()),
        "wait-exclusive" => wait_ours(id, ClientOptions::new().exclusive_wakeups(true)),
        "wait-read-thread" => wait_read_thread(id),
        "wait-blocking" => wait_blocking(id),
        _ => {
            eprintln!(
                "usage: bench-child latency-ours|latency-epoll|latency-helper|latency-asyncfd|\
                 wait-ours ID|wait-exclusive ID|wait-read-thread ID|wait-blocking ID"
            );
            std::process::exit(2);
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building a tokio runtime")
}

/// Waits for the next round; false at end-of-file (quit).
fn next_round() -> bool {
    let mut byte = [0u8; 1];
    match io::stdin().lock().read(&mut byte) {
        Ok(1) => byte[0] == GO,
        _ => false,
    }
}

fn send(tag: Tag, id: u8, values: [u64; 4]) {
    Record::new(tag, id, values)
        .send(io::stdout().as_fd())
        .expect("writing a record to the bench");
}

/// Polls `future` once: `Some(output)` if it finished, `None` if it is pending (and then
/// registered to wake this task).
async fn poll_once<F: Future + Unpin>(future: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| match std::pin::Pin::new(&mut *future).poll(cx) {
        Poll::Ready(out) => Poll::Ready(Some(out)),
        Poll::Pending => Poll::Ready(None),
    })
    .await
}

async fn latency_ours() {
    let client = jobserver_tokio::Client::from_env().expect("joining the pool");
    // Hold the implicit slot, so every round reads a byte from the pool.
    let _implicit = client.acquire().await.expect("the implicit slot");
    while next_round() {
        let mut acquire = pin!(client.acquire());
        assert!(
            poll_once(&mut acquire).await.is_none(),
            "a token was already in the pool"
        );
        send(Tag::Ready, 0, [0; 4]);
        let token = acquire.await.expect("acquiring a token");
        let now = monotonic_ns();
        send(Tag::Got, 0, [now, 0, 0, 0]);
        drop(token);
    }
}

/// The pool's descriptor numbers from `MAKEFLAGS` (`--jobserver-auth=R,W`).
fn inherited_fds() -> (i32, i32) {
    let flags = std::env::var("MAKEFLAGS").expect("MAKEFLAGS");
    let auth = flags
        .split_whitespace()
        .rev()
        .find_map(|w| w.strip_prefix("--jobserver-auth="))
        .expect("--jobserver-auth in MAKEFLAGS");
    let (r, w) = auth.split_once(',').expect("a pipe jobserver (R,W)");
    (r.parse().expect("read fd"), w.parse().expect("write fd"))
}

/// Private descriptions of the inherited pipe, opened as our client opens them.
fn private_pipe() -> (OwnedFd, OwnedFd) {
    let (r, w) = inherited_fds();
    let r = sys::dup_inherited(r).expect("dup of the read fd");
    let w = sys::dup_inherited(w).expect("dup of the write fd");
    (
        sys::reopen_private(r.as_fd(), Access::Read).expect("reopening the read fd"),
        sys::reopen_private(w.as_fd(), Access::Write).expect("reopening the write fd"),
    )
}

fn latency_epoll() {
    let (read, write) = private_pipe();
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC).expect("epoll_create");
    epoll::add(
        &ep,
        &read,
        epoll::EventData::new_u64(1),
        epoll::EventFlags::IN,
    )
    .expect("epoll_ctl");
    let mut buf = [0u8; 1];
    while next_round() {
        // Like our client, try the read once before waiting.
        match sys::read(read.as_fd(), &mut buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            other => panic!("a token was already in the pool: {other:?}"),
        }
        send(Tag::Ready, 0, [0; 4]);
        loop {
            let mut events = [MaybeUninit::<epoll::Event>::uninit(); 4];
            match epoll::wait(&ep, &mut events[..], None) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => panic!("epoll_wait: {e}"),
            }
            match sys::read(read.as_fd(), &mut buf) {
                Ok(1) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => panic!("reading the pool: {other:?}"),
            }
        }
        let now = monotonic_ns();
        send(Tag::Got, 0, [now, 0, 0, 0]);
        sys::write_byte(write.as_fd(), buf[0]).expect("giving the token back");
    }
}

async fn latency_asyncfd() {
    let (read, write) = private_pipe();
    // SAFETY: `OwnedFd` owns an open descriptor that it never replaces; it stays open and
    // names the same description until the `AsyncFd`, its only owner, is dropped.
    let fd = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(read, tokio::io::Interest::READABLE)
    }
    .expect("registering with tokio");
    let mut buf = [0u8; 1];
    while next_round() {
        match sys::read(fd.get_ref().as_fd(), &mut buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            other => panic!("a token was already in the pool: {other:?}"),
        }
        // Arm: a readiness left over from the last round is cleared by a failed read, as
        // TokioReactor does.
        let mut readable = Box::pin(fd.readable());
        while let Some(guard) = poll_once(&mut readable).await {
            let mut guard = guard.expect("readable");
            match guard.try_io(|fd| sys::read(fd.get_ref().as_fd(), &mut buf)) {
                Err(_would_block) => readable = Box::pin(fd.readable()),
                Ok(other) => panic!("a token was already in the pool: {other:?}"),
            }
        }
        send(Tag::Ready, 0, [0; 4]);
        loop {
            let mut guard = readable.await.expect("readable");
            match guard.try_io(|fd| sys::read(fd.get_ref().as_fd(), &mut buf)) {
                Ok(Ok(1)) => break,
                Ok(other) => panic!("reading the pool: {other:?}"),
                Err(_would_block) => readable = Box::pin(fd.readable()),
            }
        }
        let now = monotonic_ns();
        send(Tag::Got, 0, [now, 0, 0, 0]);
        sys::write_byte(write.as_fd(), buf[0]).expect("giving the token back");
    }
}

async fn latency_helper() {
    // SAFETY: called once, before this process opens any descriptor that the numbers in
    // MAKEFLAGS could name by accident; they are the pool the bench passed down.
    let client = unsafe { jobserver::Client::from_env() }.expect("joining the pool");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let helper = client
        .into_helper_thread(move |acquired| {
            let _ = tx.send(acquired);
        })
        .expect("starting the helper thread");
    while next_round() {
        helper.request_token();
        send(Tag::Ready, 0, [0; 4]);
        let acquired = rx
            .recv()
            .await
            .expect("the helper thread stopped")
            .expect("acquiring a token");
        let now = monotonic_ns();
        send(Tag::Got, 0, [now, 0, 0, 0]);
        drop(acquired);
    }
}

/// Starts the thread that waits for end-of-file on stdin, then reports `counts()` and exits
/// the process (the tokens held vanish with it; the bench discards the pool).
fn exit_at_eof(id: u8, counts: impl Fn() -> [u64; 4] + Send + 'static) {
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = io::stdin().lock().read_to_end(&mut sink);
        send(Tag::Counts, id, counts());
        std::process::exit(0);
    });
}

fn wait_ours(id: u8, options: ClientOptions) {
    let got = Arc::new(AtomicU64::new(0));
    let seen = got.clone();
    exit_at_eof(id, move || {
        let c = REACTOR_COUNTS.snapshot();
        [
            c.readiness_wakes,
            c.would_block,
            c.reads_with_bytes,
            seen.load(Relaxed),
        ]
    });
    runtime().block_on(async {
        let client = jobserver_io::Client::<CountingReactor<TokioReactor>>::from_env_with_options(
            &options,
            jobserver_io::env_var,
        )
        .expect("joining the pool");
        let mut held = vec![client.acquire().await.expect("the implicit slot")];
        let mut first = true;
        loop {
            let mut acquire = pin!(client.acquire());
            if first {
                assert!(
                    poll_once(&mut acquire).await.is_none(),
                    "a token was already in the pool"
                );
                send(Tag::Ready, id, [0; 4]);
                first = false;
            }
            let token = acquire.await.expect("acquiring a token");
            got.fetch_add(1, Relaxed);
            send(Tag::Got, id, [monotonic_ns(), 0, 0, 0]);
            held.push(token);
        }
    });
}

fn wait_read_thread(id: u8) {
    let (r, _) = inherited_fds();
    // A private description that stays blocking: a reopen without O_NONBLOCK.
    let read = rustix::fs::open(
        format!("/proc/self/fd/{r}").as_str(),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .expect("reopening the read fd");
    let got = Arc::new(AtomicU64::new(0));
    let seen = got.clone();
    exit_at_eof(id, move || [0, 0, 0, seen.load(Relaxed)]);
    let (want_tx, want_rx) = std::sync::mpsc::channel::<()>();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u8>();
    std::thread::spawn(move || {
        for () in want_rx {
            let mut byte = [0u8; 1];
            loop {
                match rustix::io::read(&read, &mut byte) {
                    Ok(1) => break,
                    Err(rustix::io::Errno::INTR) => continue,
                    other => panic!("reading the pool: {other:?}"),
                }
            }
            if tx.send(byte[0]).is_err() {
                return;
            }
        }
    });
    runtime().block_on(async {
        let mut held = Vec::new();
        let mut first = true;
        loop {
            want_tx.send(()).expect("the reader thread");
            if first {
                send(Tag::Ready, id, [0; 4]);
                first = false;
            }
            let byte = rx.recv().await.expect("the reader thread");
            got.fetch_add(1, Relaxed);
            send(Tag::Got, id, [monotonic_ns(), 0, 0, 0]);
            held.push(byte);
        }
    });
}

fn wait_blocking(id: u8) {
    // SAFETY: called first thing, before this process opens any descriptor that the numbers
    // in MAKEFLAGS could name by accident; they are the pool the bench passed down.
    let client = unsafe { jobserver::Client::from_env() }.expect("joining the pool");
    let got = Arc::new(AtomicU64::new(0));
    let seen = got.clone();
    exit_at_eof(id, move || [0, 0, 0, seen.load(Relaxed)]);
    send(Tag::Ready, id, [0; 4]);
    let mut held = Vec::new();
    loop {
        let token = client.acquire().expect("acquiring a token");
        got.fetch_add(1, Relaxed);
        send(Tag::Got, id, [monotonic_ns(), 0, 0, 0]);
        held.push(token);
    }
}
