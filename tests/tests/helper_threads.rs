//! A client's helper threads sleep while nobody waits and end when the client goes.
//!
//! One test in a binary of its own, so that no other test's helper threads are counted:
//! for each kind of helper (the blocking client's poll thread, the shared description's
//! poller and reader, the exclusive epoll thread), a client waits for a token, and once the
//! client, its futures and its tokens are dropped, its threads are gone.
#![cfg(target_os = "linux")]

mod fixture;

use std::pin::pin;

use fixture::{poll_once, wait_until, TestPipe};
use jobserver_io::thread::HelperReactor;
use jobserver_io::ClientOptions;

/// How many threads of this process have the name `name` (`/proc/self/task/*/comm`).
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == name)
        .count()
}

#[test]
fn helper_threads_end_when_the_client_goes() {
    let cases = [
        ("private", ClientOptions::new(), &["jobserver-poll"][..]),
        (
            "shared",
            ClientOptions::new().shared_description(true),
            &["jobserver-wait", "jobserver-read"][..],
        ),
        (
            "exclusive",
            ClientOptions::new().exclusive_wakeups(true),
            &["jobserver-excl"][..],
        ),
    ];
    for (what, options, names) in cases {
        for name in names {
            assert_eq!(threads_named(name), 0, "{what}: {name} before");
        }
        let pipe = TestPipe::new();
        let client = jobserver_io::Client::<HelperReactor>::from_env_with_options(
            &options,
            fixture::makeflags(format!("-j2 --jobserver-auth={}", pipe.auth())),
        )
        .expect("connecting");
        let implicit = futures_lite::future::block_on(client.acquire()).expect("implicit");
        {
            // A request waits: the helper watches the pipe.
            let mut waiting = pin!(client.acquire());
            assert!(poll_once(&mut waiting).is_pending(), "{what}");
            // (A new thread names itself once it runs.)
            futures_lite::future::block_on(wait_until("the helper threads", || {
                names.iter().all(|name| threads_named(name) == 1)
            }));
            fixture::put(pipe.write_fd(), b"t");
            let token = futures_lite::future::block_on(fixture::poll_until_ready(
                "the token",
                &mut waiting,
            ))
            .expect("token");
            drop(token);
        }
        drop((implicit, client));
        futures_lite::future::block_on(wait_until("the helper threads to end", || {
            names.iter().all(|name| threads_named(name) == 0)
        }));
        assert_eq!(fixture::drain_sorted(pipe.read_fd()), b"t", "{what}");
    }
}
