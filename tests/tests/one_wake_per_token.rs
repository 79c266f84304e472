//! Each token read wakes exactly one waiting task, in the order the tasks started waiting, and
//! no waiting task is woken for nothing.
//!
//! 1000 tasks wait on one client connected to a test-owned pipe while the test holds the
//! implicit slot. Each task's waker is wrapped in one that counts `wake()` calls. The test
//! writes 999 tokens one at a time and waits after each for exactly one more task to finish.
//! (The blocking driver runs each task on a thread of its own: 1000 threads with small
//! stacks, which is quick enough on Linux.)

mod fixture;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use fixture::{poll_once, put, settle, within, TestPipe};
use jobserver_tests::Driver;

const WAITERS: usize = 1000;

jobserver_tests::conformance!(each_token_wakes_exactly_one_waiter_in_fifo_order);

/// Forwards to the task's waker and counts the calls.
struct CountingWaker {
    wakes: Arc<AtomicUsize>,
    inner: Waker,
}

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, SeqCst);
        self.inner.wake_by_ref();
    }
}

/// A waiter: polls the inner future with a counting waker and reports its index when done.
struct Waiter<F> {
    index: usize,
    inner: F,
    /// Polls of all waiters, counted together.
    polls: Arc<AtomicUsize>,
    wakes: Arc<AtomicUsize>,
    done: smol::channel::Sender<usize>,
}

impl<F: Future + Unpin> Future for Waiter<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.polls.fetch_add(1, SeqCst);
        let waker = Waker::from(Arc::new(CountingWaker {
            wakes: self.wakes.clone(),
            inner: cx.waker().clone(),
        }));
        let out = Pin::new(&mut self.inner).poll(&mut Context::from_waker(&waker));
        if out.is_ready() {
            self.done.try_send(self.index).expect("unbounded channel");
        }
        out
    }
}

/// The byte written for token `i`: varied, so the test can check the same bytes come back.
fn token_byte(i: usize) -> u8 {
    b'a' + (i % 26) as u8
}

fn each_token_wakes_exactly_one_waiter_in_fifo_order<D: Driver>() {
    D::block_on(async {
        let pipe = TestPipe::new();
        let client = fixture::connect::<D>(&pipe.auth());
        let implicit = client.acquire().await.expect("implicit slot");

        let (done_tx, done_rx) = smol::channel::unbounded();
        let polls = Arc::new(AtomicUsize::new(0));
        let wakes: Vec<Arc<AtomicUsize>> = (0..WAITERS).map(|_| Arc::default()).collect();
        let mut tasks = Vec::with_capacity(WAITERS);
        for (index, wakes) in wakes.iter().enumerate() {
            let mut waiter = Waiter {
                index,
                inner: client.acquire(),
                polls: polls.clone(),
                wakes: wakes.clone(),
                done: done_tx.clone(),
            };
            // The first poll queues the request: the queue order is the index order.
            assert!(poll_once(&mut waiter).is_pending(), "waiter {index}");
            tasks.push(D::spawn(waiter));
        }
        drop(done_tx);
        assert_eq!(client.stats().waiting, WAITERS);
        // Every waiter waits in its executor (polled there once) before the first token: this
        // test counts the wake-ups of waiting tasks. A task whose first poll runs while a
        // token arrives may act on that readiness itself, and with the fallback's reader
        // thread a token can then cost the oldest waiter a second wake-up.
        fixture::wait_until("every waiter to be polled by its executor", || {
            polls.load(SeqCst) >= 2 * WAITERS
        })
        .await;

        // One token at a time: exactly one more waiter finishes, the oldest still waiting.
        let tokens = WAITERS - 1;
        for i in 0..tokens {
            put(pipe.write_fd(), &[token_byte(i)]);
            let finished = within("a waiter to finish", done_rx.recv())
                .await
                .expect("channel open");
            assert_eq!(
                finished,
                i,
                "{}: token {i} finished waiter {finished}",
                D::NAME
            );
            if let Ok(extra) = done_rx.try_recv() {
                panic!("{}: token {i} also finished waiter {extra}", D::NAME);
            }
        }

        // No token left for the last waiter: it must still wait, and nobody else finished.
        settle().await;
        assert!(
            done_rx.try_recv().is_err(),
            "{}: a waiter finished without a token",
            D::NAME
        );
        let stats = client.stats();
        assert_eq!(stats.waiting, 1, "{}: {stats:?}", D::NAME);
        assert_eq!(stats.bytes_read, tokens as u64, "{}: {stats:?}", D::NAME);
        assert_eq!(fixture::count(pipe.read_fd()), 0);
        let total: usize = wakes.iter().map(|w| w.load(SeqCst)).sum();
        assert_eq!(total, tokens, "{}: wake() calls != tokens written", D::NAME);
        for (index, wakes) in wakes.iter().enumerate() {
            let expected = usize::from(index < tokens);
            assert_eq!(wakes.load(SeqCst), expected, "{}: waiter {index}", D::NAME);
        }

        // The test's implicit slot frees the last waiter.
        drop(implicit);
        let last = within("the last waiter", done_rx.recv())
            .await
            .expect("open");
        assert_eq!(last, WAITERS - 1);
        let total: usize = wakes.iter().map(|w| w.load(SeqCst)).sum();
        assert_eq!(total, WAITERS, "{}: one wake per finished waiter", D::NAME);

        // Release everything: every byte comes back, unchanged.
        let mut held = Vec::with_capacity(WAITERS);
        for task in tasks {
            held.push(within("joining a waiter", task).await.expect("token"));
        }
        drop(held);
        let stats = client.stats();
        assert_eq!((stats.running, stats.bytes_held), (0, 0), "{stats:?}");
        let mut expected: Vec<u8> = (0..tokens).map(token_byte).collect();
        expected.sort_unstable();
        assert_eq!(
            fixture::drain_sorted(pipe.read_fd()),
            expected,
            "{}",
            D::NAME
        );
    });
}
