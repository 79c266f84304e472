//! The server going away and failed writes are visible, never a hang or a silent loss.
//!
//! A client keeps a private write end of its own pipe open, so end-of-file on a single pipe
//! can never be seen. These tests therefore connect with `R` from one test pipe and `W` from a
//! different one (the client checks each descriptor on its own): closing the test's write end
//! of the `R` pipe is then "make exited".

mod fixture;

use fixture::{fill, poll_once, within, TestPipe};
use jobserver_io::ErrorKind;
use jobserver_tests::Driver;

jobserver_tests::conformance!(
    server_gone_fails_every_waiter_and_later_acquires,
    server_gone_gives_back_tokens_promised_to_failed_requests,
    failed_write_back_is_reported_and_retried,
    kept_token_is_written_when_the_client_is_dropped,
    token_whose_last_write_fails_is_counted_as_lost,
);

/// Connects R from `reads` and W from `writes`.
fn split_auth(reads: &TestPipe, writes: &TestPipe) -> String {
    use std::os::fd::AsRawFd;
    format!(
        "{},{}",
        reads.read_fd().as_raw_fd(),
        writes.write_fd().as_raw_fd()
    )
}

fn server_gone_fails_every_waiter_and_later_acquires<D: Driver>() {
    D::block_on(async {
        let mut reads = TestPipe::new();
        let writes = TestPipe::new();
        let client = fixture::connect::<D>(&split_auth(&reads, &writes));
        let implicit = client.acquire().await.expect("implicit slot");

        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let client = client.clone();
                D::spawn(async move { client.acquire().await.map(|t| t.units()) })
            })
            .collect();
        // Also one waiting acquire_many, polled by the test itself.
        let mut many = client.acquire_many(2);
        assert!(poll_once(&mut many).is_pending());
        fixture::wait_until("4 requests waiting", || client.stats().waiting == 4).await;

        // "make exits": the last write end of the pipe we read from goes away.
        drop(reads.write.take());

        // The oldest request may be the test's own (the spawned ones may queue after it):
        // polling it lets the driver see end-of-file for everyone.
        let err = fixture::poll_until_ready("acquire_many to fail", &mut many)
            .await
            .expect_err("closed jobserver");
        assert_eq!(err.kind(), ErrorKind::ServerGone, "{}: {err}", D::NAME);
        for waiter in waiters {
            let err = within("a waiter to fail", waiter)
                .await
                .expect_err("no token can come from a closed jobserver");
            assert_eq!(err.kind(), ErrorKind::ServerGone, "{}: {err}", D::NAME);
            assert!(err.to_string().contains("exited"), "{err}");
        }
        assert_eq!(client.stats().waiting, 0);

        // Later requests fail at once while the implicit slot is taken...
        let err = within("a later acquire", client.acquire())
            .await
            .expect_err("closed jobserver");
        assert_eq!(err.kind(), ErrorKind::ServerGone);
        let err = client.try_acquire().expect_err("closed jobserver");
        assert_eq!(err.kind(), ErrorKind::ServerGone);
        // ...and the implicit slot still works once it is free.
        drop(implicit);
        let token = within("acquire with the implicit slot", client.acquire())
            .await
            .expect("the implicit slot needs no jobserver");
        assert_eq!(token.units(), 1);
        let stats = client.stats();
        assert_eq!((stats.bytes_read, stats.bytes_held), (0, 0), "{stats:?}");
    });
}

/// A request that holds part of its tokens when the server goes away fails, and the bytes
/// promised to it are written back, not kept.
fn server_gone_gives_back_tokens_promised_to_failed_requests<D: Driver>() {
    D::block_on(async {
        let mut reads = TestPipe::new();
        let writes = TestPipe::new();
        let client = fixture::connect::<D>(&split_auth(&reads, &writes));
        let implicit = client.acquire().await.expect("implicit slot");

        let mut many = client.acquire_many(2);
        assert!(poll_once(&mut many).is_pending());
        fixture::put(reads.write_fd(), b"x");
        fixture::drive_until("1 of 2 bytes read", &mut many, || {
            client.stats().bytes_read == 1
        })
        .await;
        assert_eq!(client.stats().reserved, 1);

        drop(reads.write.take());
        let err = fixture::poll_until_ready("acquire_many to fail", &mut many)
            .await
            .expect_err("closed jobserver");
        assert_eq!(err.kind(), ErrorKind::ServerGone, "{}: {err}", D::NAME);
        let stats = client.stats();
        assert_eq!((stats.reserved, stats.bytes_held), (0, 0), "{stats:?}");
        assert_eq!(
            fixture::drain_sorted(writes.read_fd()),
            b"x",
            "the promised byte is written back"
        );
        drop(implicit);
    });
}

/// With the W pipe full, giving back an explicit token fails: `Drop` counts it and keeps the
/// error for `take_release_error`, and `Token::release` returns it. The tokens are not lost:
/// the client keeps them and writes them at its next operation once the pipe has room.
fn failed_write_back_is_reported_and_retried<D: Driver>() {
    D::block_on(async {
        let reads = TestPipe::new();
        let writes = TestPipe::new();
        let client = fixture::connect::<D>(&split_auth(&reads, &writes));
        let implicit = client.acquire().await.expect("implicit slot");

        fixture::put(reads.write_fd(), b"xy");
        let dropped = within("acquire", client.acquire()).await.expect("token");
        let released = within("acquire", client.acquire()).await.expect("token");
        assert_eq!(client.stats().bytes_held, 2);
        assert!(client.take_release_error().is_none());

        fill(writes.write_fd());
        let full = fixture::count(writes.read_fd());

        drop(dropped);
        let stats = client.stats();
        assert_eq!(stats.write_failures, 1, "{}: {stats:?}", D::NAME);
        assert_eq!(stats.bytes_held, 1, "{stats:?}");
        assert_eq!(stats.bytes_unwritten, 1, "kept, not lost: {stats:?}");
        let err = client
            .take_release_error()
            .expect("the failed write is reported");
        // The crate's own error, as everywhere else, with the OS error as its source.
        assert_eq!(err.kind(), ErrorKind::Io, "{err}");
        let os = std::error::Error::source(&err)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .expect("the io::Error of the write");
        assert_eq!(os.kind(), std::io::ErrorKind::WouldBlock, "{err}");
        assert!(client.take_release_error().is_none(), "taken once");

        // release() retries the kept byte and tries its own: both fail on the full pipe.
        let err = released.release().expect_err("the pipe is full");
        assert_eq!(err.kind(), ErrorKind::Io, "{err}");
        assert!(std::error::Error::source(&err).is_some(), "the OS error");
        let stats = client.stats();
        assert_eq!(stats.write_failures, 3, "{stats:?}");
        assert_eq!(stats.bytes_unwritten, 2, "{stats:?}");
        assert_eq!(
            fixture::count(writes.read_fd()),
            full,
            "nothing was written"
        );

        // Make room. The next operation (here the implicit slot's release) writes both back,
        // exactly as they were read.
        let drained = fixture::drain_sorted(writes.read_fd());
        assert_eq!(drained.len(), full);
        drop(implicit);
        let stats = client.stats();
        assert_eq!(stats.bytes_unwritten, 0, "{stats:?}");
        assert_eq!(stats.bytes_written, 2, "{stats:?}");
        let back = fixture::drain_sorted(writes.read_fd());
        assert_eq!(back, b"xy", "every token came back, unchanged");
    });
}

/// A token whose write failed and that no later operation managed to write is written once
/// more when the client goes away.
fn kept_token_is_written_when_the_client_is_dropped<D: Driver>() {
    D::block_on(async {
        let reads = TestPipe::new();
        let writes = TestPipe::new();
        let client = fixture::connect::<D>(&split_auth(&reads, &writes));
        let implicit = client.acquire().await.expect("implicit slot");
        fixture::put(reads.write_fd(), b"k");
        let token = within("acquire", client.acquire()).await.expect("token");

        fill(writes.write_fd());
        let full = fixture::count(writes.read_fd());
        drop(token);
        // The last token's release retries, and fails again: the pipe is still full.
        drop(implicit);
        let stats = client.stats();
        assert_eq!(stats.bytes_unwritten, 1, "{stats:?}");
        assert_eq!(stats.write_failures, 2, "{stats:?}");
        assert_eq!(fixture::count(writes.read_fd()), full);

        // Room again; nothing else happens until the client itself is dropped.
        assert_eq!(fixture::drain_sorted(writes.read_fd()).len(), full);
        drop(client);
        assert_eq!(fixture::drain_sorted(writes.read_fd()), b"k");
    });
}

/// Serialises the tests that read the process-wide [`jobserver_io::lost_tokens`] counter.
static LOST_COUNTER: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// When even the last write attempt (the client being dropped) fails, the byte is gone: it is
/// counted in `jobserver_io::lost_tokens()` (and in the client's machine), never dropped
/// silently.
fn token_whose_last_write_fails_is_counted_as_lost<D: Driver>() {
    let _serial = LOST_COUNTER.lock().unwrap_or_else(|p| p.into_inner());
    D::block_on(async {
        let reads = TestPipe::new();
        let writes = TestPipe::new();
        let client = fixture::connect::<D>(&split_auth(&reads, &writes));
        let implicit = client.acquire().await.expect("implicit slot");
        fixture::put(reads.write_fd(), b"k");
        let token = within("acquire", client.acquire()).await.expect("token");

        fill(writes.write_fd());
        let full = fixture::count(writes.read_fd());
        drop(token);
        drop(implicit);
        assert_eq!(client.stats().bytes_unwritten, 1);
        let before = jobserver_io::lost_tokens();

        // The pipe is still full when the client goes away: the last attempt fails too.
        drop(client);
        assert_eq!(
            jobserver_io::lost_tokens() - before,
            1,
            "{}: the byte whose last write failed is counted as lost",
            D::NAME
        );
        assert_eq!(
            fixture::count(writes.read_fd()),
            full,
            "nothing was written"
        );
    });
}
