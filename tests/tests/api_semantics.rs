//! What each client method promises: the implicit slot first, `try_acquire*` never waits and
//! never loses or steals tokens, `acquire_many` is all-or-nothing and FIFO, the release
//! policy decides whether a released token passes through the pipe, the thread-safety of the
//! types, and the blocking client's synchronous API.

mod fixture;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc};
use std::task::Poll;
use std::time::Duration;

use fixture::{drive_until, poll_once, poll_until_ready, settle, within, Kind, Pool};
use jobserver_io::{Client, ErrorKind, ReleasePolicy, Token};
use jobserver_tests::Driver;

jobserver_tests::conformance!(
    implicit_slot_comes_first_without_a_read,
    try_acquire_returns_none_when_nothing_is_free_and_loses_nothing,
    try_acquire_up_to_takes_what_is_free,
    acquire_many_is_all_or_nothing_and_first_come_first_served,
    release_policy_decides_whether_a_token_passes_through_the_pipe,
    a_zero_unit_request_behind_a_hand_over_completes_in_its_turn,
    token_units_count_jobs,
    types_are_thread_safe,
    a_completed_acquire_polled_again_is_a_typed_error,
    several_tokens_at_once_without_a_jobserver_is_a_capacity_error,
);

fn ready<T>(poll: Poll<T>, what: &str) -> T {
    match poll {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("{what}: pending"),
    }
}

fn implicit_slot_comes_first_without_a_read<D: Driver>() {
    D::block_on(async {
        let pool = Pool::<D>::new(Kind::Pipe);
        let client = pool.client();
        pool.put(b"ab");
        let first = ready(poll_once(&mut client.acquire()), "first acquire").expect("implicit");
        assert_eq!(
            client.stats().bytes_read,
            0,
            "the implicit slot needs no read"
        );
        assert_eq!(pool.count(), 2);
        let second = within("second acquire", client.acquire())
            .await
            .expect("token");
        let stats = client.stats();
        assert_eq!((stats.bytes_read, stats.bytes_held), (1, 1), "{stats:?}");
        assert_eq!(pool.count(), 1);
        drop(first);
        drop(second);
        // Back to the implicit slot only: the byte went back.
        assert_eq!(pool.count(), 2);
        assert_eq!(client.stats().bytes_held, 0);
    });
}

fn try_acquire_returns_none_when_nothing_is_free_and_loses_nothing<D: Driver>() {
    D::block_on(async {
        let pool = Pool::<D>::new(Kind::Pipe);
        let client = pool.client();
        let implicit = client.try_acquire().expect("try").expect("implicit slot");
        assert_eq!(client.stats().bytes_read, 0);

        assert!(client.try_acquire().expect("try").is_none());
        let stats = client.stats();
        assert_eq!(
            (stats.waiting, stats.unmet, stats.reserved, stats.running),
            (0, 0, 0, 1),
            "no request is left behind: {stats:?}"
        );
        // A token that arrives later is not taken for the failed attempt.
        pool.put(b"x");
        settle().await;
        assert_eq!(pool.count(), 1);

        let token = client
            .try_acquire()
            .expect("try")
            .expect("the byte is free");
        assert_eq!(pool.count(), 0);
        drop(token);
        assert_eq!(pool.count(), 1);

        // try_acquire does not jump the queue: a waiting request comes first.
        assert_eq!(pool.drain_sorted(), b"x");
        let mut waiting = client.acquire();
        assert!(poll_once(&mut waiting).is_pending());
        pool.put(b"y");
        assert!(
            client.try_acquire().expect("try").is_none(),
            "the token belongs to the waiting request"
        );
        let token = poll_until_ready("the waiting request", &mut waiting)
            .await
            .expect("token");
        drop(token);
        drop(implicit);
        assert_eq!(pool.drain_sorted(), b"y");
    });
}

fn try_acquire_up_to_takes_what_is_free<D: Driver>() {
    D::block_on(async {
        let pool = Pool::<D>::new(Kind::Pipe);
        let client = pool.client();

        let one = client.try_acquire_up_to(1).expect("try").expect("implicit");
        assert_eq!(one.units(), 1);
        assert_eq!(client.stats().bytes_read, 0);
        assert!(client.try_acquire_up_to(3).expect("try").is_none());
        drop(one);

        // Right after another process gave tokens back (no yield in between).
        pool.put(b"abc");
        let two = client.try_acquire_up_to(2).expect("try").expect("tokens");
        assert_eq!(two.units(), 2, "implicit + 1 byte");
        assert_eq!(client.stats().bytes_read, 1, "reads only what it takes");
        assert_eq!(pool.count(), 2);
        drop(two);
        assert_eq!(pool.count(), 3);

        let all = client.try_acquire_up_to(10).expect("try").expect("tokens");
        assert_eq!(all.units(), 4, "implicit + the 3 bytes free");
        assert_eq!(pool.count(), 0);
        assert!(client.try_acquire_up_to(10).expect("try").is_none());
        drop(all);
        assert_eq!(pool.drain_sorted(), b"abc");
    });
}

fn acquire_many_is_all_or_nothing_and_first_come_first_served<D: Driver>() {
    D::block_on(async {
        let pool = Pool::<D>::new(Kind::Pipe);
        let client = pool.client();
        let implicit = client.acquire().await.expect("implicit slot");

        let mut many = client.acquire_many(3);
        assert!(poll_once(&mut many).is_pending());
        let mut single = client.acquire();
        assert!(poll_once(&mut single).is_pending());

        pool.put(b"ab");
        drive_until("2 bytes read", &mut many, || client.stats().bytes_read == 2).await;
        settle().await;
        assert!(poll_once(&mut many).is_pending(), "all or nothing");
        assert!(
            poll_once(&mut single).is_pending(),
            "a later request waits behind acquire_many"
        );
        assert_eq!(client.stats().reserved, 2);

        pool.put(b"c");
        let three = poll_until_ready("acquire_many(3)", &mut many)
            .await
            .expect("tokens");
        assert_eq!(three.units(), 3);
        settle().await;
        assert!(poll_once(&mut single).is_pending(), "no token left for it");

        pool.put(b"d");
        let one = poll_until_ready("acquire()", &mut single)
            .await
            .expect("token");
        assert_eq!(one.units(), 1);
        assert!(client.try_acquire().expect("try").is_none());
        drop((implicit, three, one));
        assert_eq!(pool.drain_sorted(), b"abcd");
    });
}

/// With `ReturnToPipe` (the default) a released explicit token is written to the pipe even
/// while a local request waits, and that request reads it back; with `HandOff` it goes
/// straight to the waiting request and the pipe never sees it.
fn release_policy_decides_whether_a_token_passes_through_the_pipe<D: Driver>() {
    for policy in [None, Some(ReleasePolicy::HandOff)] {
        D::block_on(async {
            let pool = Pool::<D>::new(Kind::Pipe);
            let client = pool.client();
            if let Some(policy) = policy {
                client.set_release_policy(policy);
            }
            let implicit = client.acquire().await.expect("implicit slot");
            pool.put(b"x");
            let explicit = within("acquire", client.acquire()).await.expect("token");
            let mut waiting = client.acquire();
            assert!(poll_once(&mut waiting).is_pending());

            drop(explicit);
            match policy {
                None => {
                    assert_eq!(
                        client.stats().bytes_written,
                        1,
                        "ReturnToPipe writes the byte back at once"
                    );
                    let token = poll_until_ready("the waiting request", &mut waiting)
                        .await
                        .expect("token");
                    assert_eq!(client.stats().bytes_read, 2, "read back from the pipe");
                    drop(token);
                }
                Some(_) => {
                    let stats = client.stats();
                    assert_eq!(stats.bytes_written, 0, "HandOff: {stats:?}");
                    let token = ready(poll_once(&mut waiting), "handed off").expect("token");
                    settle().await;
                    let stats = client.stats();
                    assert_eq!((stats.bytes_read, stats.bytes_written), (1, 0));
                    assert_eq!(pool.count(), 0, "the pipe never saw it");
                    // With nobody waiting, a released byte goes to the pipe as usual.
                    drop(token);
                    assert_eq!(pool.count(), 1);
                }
            }
            drop(implicit);
            assert_eq!(pool.drain_sorted(), b"x", "{policy:?}");
        });
    }
}

/// `acquire_many(0)` queued behind a waiting `acquire()` completes as soon as that one is
/// granted, also when the grant is a direct hand-over (`HandOff`), which skips the general
/// settle: before this was fixed the zero-unit request waited for some later event.
fn a_zero_unit_request_behind_a_hand_over_completes_in_its_turn<D: Driver>() {
    for policy in [ReleasePolicy::HandOff, ReleasePolicy::ReturnToPipe] {
        D::block_on(async {
            let pool = Pool::<D>::new(Kind::Pipe);
            let client = pool.client();
            client.set_release_policy(policy);
            let implicit = client.acquire().await.expect("implicit slot");
            pool.put(b"x");
            let explicit = within("acquire", client.acquire()).await.expect("token");
            let mut one = client.acquire();
            assert!(poll_once(&mut one).is_pending());
            let mut zero = client.acquire_many(0);
            assert!(
                poll_once(&mut zero).is_pending(),
                "{policy:?}: waits its turn"
            );

            drop(explicit);
            let one = poll_until_ready("the waiting acquire()", &mut one)
                .await
                .expect("token");
            // Nothing else happens: the zero-unit request's turn came with that grant.
            let zero = ready(poll_once(&mut zero), "acquire_many(0) after its turn came")
                .expect("a token of zero units");
            assert_eq!((one.units(), zero.units()), (1, 0), "{policy:?}");
            assert_eq!(client.stats().waiting, 0, "{policy:?}");
            drop((one, zero, implicit));
            assert_eq!(pool.drain_sorted(), b"x", "{policy:?}");
        });
    }
}

fn token_units_count_jobs<D: Driver>() {
    D::block_on(async {
        let pool = Pool::<D>::new(Kind::Pipe);
        let client = pool.client();
        pool.put(b"abcdef");
        let one = client.acquire().await.expect("token");
        assert_eq!(one.units(), 1);
        let three = within("acquire_many(3)", client.acquire_many(3))
            .await
            .expect("tokens");
        assert_eq!(three.units(), 3);
        let up_to = client.try_acquire_up_to(5).expect("try").expect("tokens");
        assert_eq!(up_to.units(), 3, "the 3 bytes left");
        assert_eq!(client.stats().running, 7);
        drop((one, three, up_to));
        assert_eq!(pool.count(), 6);
        assert_eq!(client.stats().running, 0);
    });
}

/// Polling a completed `Acquire` again returns `PolledAfterCompletion` every time, and
/// takes nothing: no request, no read, no second token.
fn a_completed_acquire_polled_again_is_a_typed_error<D: Driver>() {
    D::block_on(async {
        let pool = Pool::<D>::new(Kind::Pipe);
        let client = pool.client();
        pool.put(b"a");
        for units in [1, 2] {
            let mut fut = client.acquire_many(units);
            let token = poll_until_ready("the request", &mut fut)
                .await
                .expect("granted");
            let before = client.stats();
            for _ in 0..2 {
                let err = ready(poll_once(&mut fut), "polled again").expect_err("completed");
                assert_eq!(err.kind(), ErrorKind::PolledAfterCompletion, "{err}");
                assert!(err.to_string().contains("polled again"), "{err}");
            }
            assert_eq!(client.stats(), before, "nothing was requested or read");
            drop(token);
        }
        assert_eq!(pool.count(), 1, "the token went back");
    });
}

/// With only the implicit slot, a request for several tokens at once can never be met: it
/// fails at once with `Capacity` (not `Disabled`, which is about how the client was found),
/// and one token at a time still works.
fn several_tokens_at_once_without_a_jobserver_is_a_capacity_error<D: Driver>() {
    D::block_on(async {
        let client = Client::<D>::implicit_only(None);
        let err = within("acquire_many(2)", client.acquire_many(2))
            .await
            .expect_err("cannot be met");
        assert_eq!(err.kind(), ErrorKind::Capacity, "{err}");
        assert!(err.to_string().contains("implicit slot"), "{err}");
        let err = client.try_acquire_many(2).expect_err("cannot be met");
        assert_eq!(err.kind(), ErrorKind::Capacity, "{err}");
        let one = within("acquire_many(1)", client.acquire_many(1))
            .await
            .expect("the implicit slot");
        assert_eq!(one.units(), 1);
        assert_eq!(client.stats().waiting, 0);
    });
}

fn types_are_thread_safe<D: Driver>() {
    fn clone_send_sync<T: Clone + Send + Sync + 'static>() {}
    fn send_static<T: Send + 'static>() {}
    fn send<T: Send>() {}
    clone_send_sync::<Client<D>>();
    send_static::<Token<D>>();
    send::<jobserver_io::Acquire<D>>();
    clone_send_sync::<jobserver_io::blocking::Client>();
    send_static::<jobserver_io::blocking::Token>();
    // And a token can really move to another thread and be released there.
    D::block_on(async {
        let pool = Pool::<D>::new(Kind::Pipe);
        let client = pool.client();
        let _implicit = client.acquire().await.expect("implicit");
        pool.put(b"t");
        let token = within("acquire", client.acquire()).await.expect("token");
        std::thread::spawn(move || drop(token))
            .join()
            .expect("thread");
        assert_eq!(pool.count(), 1);
    });
}

/// The blocking client has every method of the async one (through `Deref`), including those
/// the old hand-written wrapper lacked.
#[test]
fn blocking_client_has_every_method_of_the_async_one() {
    use jobserver_io::blocking::{Client as Blocking, Server};
    let server = Server::new(2).expect("a pool");
    let client = Blocking::from(server.client().expect("a client"));
    client.set_release_policy(ReleasePolicy::HandOff);
    assert!(client.makeflags().is_some());
    assert_eq!(client.var(), None, "an own pool");
    assert_eq!(
        client.flags().jobs,
        jobserver_io::Jobs::Limited(2.try_into().unwrap())
    );
    assert_eq!(client.mode(), jobserver_io::Mode::Pipe);
    assert!(client.take_release_error().is_none());
    let token = client.acquire().expect("the implicit slot");
    let more = client
        .try_acquire_up_to(3)
        .expect("try")
        .expect("the pool's token");
    assert_eq!((token.units(), more.units()), (1, 1));
    drop((token, more));
    // The constructors return the blocking type.
    let alone = Blocking::implicit_only(None);
    assert_eq!(alone.mode(), jobserver_io::Mode::ImplicitOnly);
    let _: Result<jobserver_io::blocking::Token, _> = alone.acquire();
    // And it converts back to the async-shaped client.
    let inner: Client<jobserver_io::blocking::ThreadReactor> = alone.into();
    assert_eq!(inner.stats().running, 0);
}

/// The blocking client's synchronous API, shared across threads.
#[test]
fn blocking_client_acquires_across_threads() {
    const JOBS: usize = 3;
    let server = jobserver_io::blocking::Server::new(JOBS).expect("server");
    let client: jobserver_io::blocking::Client = server.client().expect("client").into();
    let held = Arc::new(AtomicUsize::new(0));
    let max_held = Arc::new(AtomicUsize::new(0));
    let (done_tx, done_rx) = mpsc::channel();

    let threads: Vec<_> = (0..8)
        .map(|i| {
            let client = client.clone();
            let (held, max_held, done_tx) = (held.clone(), max_held.clone(), done_tx.clone());
            std::thread::spawn(move || {
                for _ in 0..5 {
                    let units = if i % 2 == 0 { 1 } else { 2 };
                    let token = if units == 1 {
                        client.acquire()
                    } else {
                        client.acquire_many(2)
                    }
                    .expect("acquire");
                    assert_eq!(token.units(), units);
                    let now = held.fetch_add(units, SeqCst) + units;
                    max_held.fetch_max(now, SeqCst);
                    std::thread::sleep(Duration::from_micros(200));
                    held.fetch_sub(units, SeqCst);
                    drop(token);
                }
                done_tx.send(()).expect("send");
            })
        })
        .collect();
    for _ in 0..threads.len() {
        done_rx
            .recv_timeout(fixture::HANG)
            .expect("a thread hung in acquire");
    }
    for thread in threads {
        thread.join().expect("thread");
    }
    let max = max_held.load(SeqCst);
    assert!(max <= JOBS, "{max} units held at once");

    // try_acquire never blocks: with everything held elsewhere it says None at once.
    let all = client.acquire_many(JOBS).expect("all");
    let (tx, rx) = mpsc::channel();
    let other = client.clone();
    std::thread::spawn(move || {
        let _ = tx.send(other.try_acquire().map(|t| t.is_none()));
        let _ = tx.send(other.acquire().map(|t| t.units() == 1));
    });
    assert!(rx
        .recv_timeout(fixture::HANG)
        .expect("try_acquire blocked")
        .expect("try"));
    assert!(
        rx.recv_timeout(Duration::from_millis(50)).is_err(),
        "acquire must wait while all tokens are held"
    );
    drop(all);
    assert!(rx
        .recv_timeout(fixture::HANG)
        .expect("acquire hung")
        .expect("acquire"));
    assert_eq!(client.mode(), jobserver_io::Mode::Pipe);

    drop(client);
    assert_eq!(server.available().expect("available"), JOBS - 1);
    assert!(server.shutdown().expect("shutdown").is_balanced());
}

/// `try_acquire` makes its own non-blocking read, even when an earlier request's read found
/// the pipe empty and the driver now waits for the runtime to report readiness. A tokio
/// current-thread runtime only reports readiness when the task yields, which makes the check
/// deterministic.
#[test]
fn try_acquire_reads_the_pipe_even_while_a_readiness_wait_is_armed() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let pool = Pool::<jobserver_tokio::TokioReactor>::new(Kind::Pipe);
        let client = pool.client();
        let implicit = client.try_acquire().expect("try").expect("implicit slot");
        // The pipe is empty: this read would block, so the driver arms a readiness wait.
        assert!(client.try_acquire().expect("try").is_none());

        pool.put(b"x");
        let token = client.try_acquire().expect("try");
        assert!(
            token.is_some(),
            "a token is in the pipe ({} byte), but try_acquire made no read",
            pool.count()
        );
        drop((token, implicit));
        assert_eq!(pool.drain_sorted(), b"x");
    });
}
