//! Counting wrappers: a [`Reactor`] that counts what the driver asks of the descriptor and
//! how often readiness woke it, and a future wrapper that counts task wake-ups.

use std::future::Future;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use jobserver_io::thread::HelperReactor;
use jobserver_io::{ClientOptions, Error, Filled, Reactor};

/// Process-wide counters of every [`CountingReactor`].
#[derive(Debug)]
pub struct ReactorCounts {
    poll_read: AtomicU64,
    reads_with_bytes: AtomicU64,
    would_block: AtomicU64,
    readiness_wakes: AtomicU64,
}

/// A copy of [`ReactorCounts`] at one moment; subtract two for what happened in between.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReactorSnapshot {
    /// Calls of [`Reactor::poll_read`] by the driver.
    pub poll_read: u64,
    /// Of those, calls that returned bytes.
    pub reads_with_bytes: u64,
    /// Of those, calls that found nothing and returned `Pending` (each is at least one read
    /// that failed with `EAGAIN`).
    pub would_block: u64,
    /// Times the runtime's reactor woke the driver because the descriptor became readable.
    pub readiness_wakes: u64,
}

impl std::ops::Sub for ReactorSnapshot {
    type Output = ReactorSnapshot;

    fn sub(self, earlier: ReactorSnapshot) -> ReactorSnapshot {
        ReactorSnapshot {
            poll_read: self.poll_read - earlier.poll_read,
            reads_with_bytes: self.reads_with_bytes - earlier.reads_with_bytes,
            would_block: self.would_block - earlier.would_block,
            readiness_wakes: self.readiness_wakes - earlier.readiness_wakes,
        }
    }
}

/// The counters of every [`CountingReactor`] in this process.
pub static REACTOR_COUNTS: ReactorCounts = ReactorCounts {
    poll_read: AtomicU64::new(0),
    reads_with_bytes: AtomicU64::new(0),
    would_block: AtomicU64::new(0),
    readiness_wakes: AtomicU64::new(0),
};

impl ReactorCounts {
    /// The counters now.
    pub fn snapshot(&self) -> ReactorSnapshot {
        ReactorSnapshot {
            poll_read: self.poll_read.load(Relaxed),
            reads_with_bytes: self.reads_with_bytes.load(Relaxed),
            would_block: self.would_block.load(Relaxed),
            readiness_wakes: self.readiness_wakes.load(Relaxed),
        }
    }
}

/// Wraps a runtime's [`Reactor`] and counts into [`REACTOR_COUNTS`]: `jobserver_io::Client<
/// CountingReactor<TokioReactor>>` behaves as the tokio client and tells what it did.
///
/// The driver's own waker is wrapped (once, then reused) so that readiness wake-ups are
/// counted as the runtime delivers them.
#[derive(Debug)]
pub struct CountingReactor<R> {
    inner: R,
    /// The driver's waker and our counting wrapper around it.
    wakers: Mutex<Option<(Waker, Waker)>>,
}

struct CountWake(Waker);

impl Wake for CountWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        REACTOR_COUNTS.readiness_wakes.fetch_add(1, Relaxed);
        self.0.wake_by_ref();
    }
}

impl<R: Reactor> Reactor for CountingReactor<R> {
    fn register(fd: OwnedFd) -> Result<Self, Error> {
        Ok(CountingReactor {
            inner: R::register(fd)?,
            wakers: Mutex::new(None),
        })
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.inner.fd()
    }

    fn direct_io(&self) -> bool {
        self.inner.direct_io()
    }

    fn from_helper(helper: HelperReactor) -> Result<Self, Error> {
        Ok(CountingReactor {
            inner: R::from_helper(helper)?,
            wakers: Mutex::new(None),
        })
    }

    fn default_options() -> ClientOptions {
        R::default_options()
    }

    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<Filled>> {
        REACTOR_COUNTS.poll_read.fetch_add(1, Relaxed);
        let waker = {
            let mut cached = self.wakers.lock().unwrap_or_else(|p| p.into_inner());
            match &*cached {
                Some((driver, wrapped)) if driver.will_wake(cx.waker()) => wrapped.clone(),
                _ => {
                    let wrapped = Waker::from(Arc::new(CountWake(cx.waker().clone())));
                    *cached = Some((cx.waker().clone(), wrapped.clone()));
                    wrapped
                }
            }
        };
        let result = self.inner.poll_read(&mut Context::from_waker(&waker), buf);
        match &result {
            Poll::Ready(Ok(filled)) if filled.len > 0 => {
                REACTOR_COUNTS.reads_with_bytes.fetch_add(1, Relaxed);
            }
            Poll::Pending => {
                REACTOR_COUNTS.would_block.fetch_add(1, Relaxed);
            }
            Poll::Ready(_) => {}
        }
        result
    }
}

/// Counts the wake-ups of the tasks whose futures it wrapped with [`WakeProbe::wrap`].
#[derive(Debug, Default)]
pub struct WakeProbe {
    wake_calls: AtomicU64,
    woken: AtomicU64,
    polls: AtomicU64,
    outstanding: AtomicI64,
}

impl WakeProbe {
    /// A new probe with all counts at zero.
    pub fn new() -> Arc<WakeProbe> {
        Arc::new(WakeProbe::default())
    }

    /// Wraps a task's future: its wake-ups are counted here.
    pub fn wrap<F: Future>(self: &Arc<Self>, future: F) -> Counted<F> {
        let flag = Arc::new(TaskFlag {
            probe: self.clone(),
            notified: AtomicBool::new(false),
            task: Mutex::new(None),
        });
        Counted {
            future: Box::pin(future),
            waker: Waker::from(flag.clone()),
            flag,
        }
    }

    /// Wake-ups: a task woken several times before it ran again counts once.
    pub fn woken(&self) -> u64 {
        self.woken.load(Relaxed)
    }

    /// Every call of a wrapped task's waker.
    pub fn wake_calls(&self) -> u64 {
        self.wake_calls.load(Relaxed)
    }

    /// Polls of wrapped tasks.
    pub fn polls(&self) -> u64 {
        self.polls.load(Relaxed)
    }

    /// Tasks woken and not polled since: zero once every woken task has run.
    pub fn outstanding(&self) -> i64 {
        self.outstanding.load(Relaxed)
    }
}

struct TaskFlag {
    probe: Arc<WakeProbe>,
    notified: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for TaskFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.probe.wake_calls.fetch_add(1, Relaxed);
        if !self.notified.swap(true, Relaxed) {
            self.probe.woken.fetch_add(1, Relaxed);
            self.probe.outstanding.fetch_add(1, Relaxed);
        }
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(waker) = task.as_ref() {
            waker.wake_by_ref();
        }
    }
}

/// A future whose task's wake-ups a [`WakeProbe`] counts.
pub struct Counted<F> {
    future: Pin<Box<F>>,
    waker: Waker,
    flag: Arc<TaskFlag>,
}

impl<F> std::fmt::Debug for Counted<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counted").finish_non_exhaustive()
    }
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let probe = &self.flag.probe;
        if self.flag.notified.swap(false, Relaxed) {
            probe.outstanding.fetch_sub(1, Relaxed);
        }
        probe.polls.fetch_add(1, Relaxed);
        {
            let mut task = self.flag.task.lock().unwrap_or_else(|p| p.into_inner());
            if !task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        let this = &mut *self;
        this.future
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker))
    }
}
