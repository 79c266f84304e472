//! The liveness checks cost nothing on the fast path: in a fresh process, requests granted
//! at their first poll (the implicit slot, a token already in the pipe, `try_acquire`) never
//! start the timer thread, under any driver. A request that has to wait starts it.
//!
//! One test in its own binary, so that no other test has started the thread before.

mod fixture;

use fixture::{poll_once, TestPipe};
use jobserver_io::Reactor;
use jobserver_tests::Driver;

/// Whether a thread of this process is named `jobserver-timer`.
fn timer_thread_runs() -> bool {
    std::fs::read_dir("/proc/self/task")
        .expect("reading /proc/self/task")
        .flatten()
        .any(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|comm| comm.trim_end() == "jobserver-timer")
        })
}

fn fast_path_only<D: Driver + Reactor>() {
    D::block_on(async {
        let pipe = TestPipe::new();
        let client = fixture::connect::<D>(&pipe.auth());
        let implicit = client.acquire().await.expect("the implicit slot");
        fixture::put(pipe.write_fd(), b"ab");
        let one = client.acquire().await.expect("a token in the pipe");
        let two = client
            .try_acquire()
            .expect("no error")
            .expect("a token in the pipe");
        assert_eq!(client.stats().bytes_read, 2);
        drop((one, two, implicit));
        assert_eq!(fixture::drain_sorted(pipe.read_fd()), b"ab");
    });
}

#[test]
fn only_a_waiting_request_starts_the_timer_thread() {
    assert!(!timer_thread_runs(), "nothing has run yet");
    fast_path_only::<jobserver_tokio::TokioReactor>();
    fast_path_only::<jobserver_smol::AsyncIoReactor>();
    fast_path_only::<jobserver_io::blocking::ThreadReactor>();
    // A thread names itself once it runs: give one that was started by mistake time to.
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(
        !timer_thread_runs(),
        "requests granted at their first poll must not arm the liveness checks"
    );

    jobserver_io::blocking::ThreadReactor::block_on(async {
        let pipe = TestPipe::new();
        let client = fixture::connect::<jobserver_io::blocking::ThreadReactor>(&pipe.auth());
        let implicit = client.acquire().await.expect("the implicit slot");
        let mut waiter = client.acquire();
        assert!(poll_once(&mut waiter).is_pending());
        // The thread names itself once it runs.
        fixture::wait_until(
            "a waiting request to start the timer thread",
            timer_thread_runs,
        )
        .await;
        fixture::put(pipe.write_fd(), b"w");
        let token = fixture::poll_until_ready("the token", &mut waiter)
            .await
            .expect("granted");
        drop((token, implicit));
    });
}
