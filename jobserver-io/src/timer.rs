//! A process-wide timer service: wake a [`Waker`] at a deadline, from one helper thread.
//!
//! The driver needs time in a few places where no runtime timer can be assumed (the blocking
//! client has no runtime at all, and a client may be polled from any executor): the periodic
//! liveness check of a waiting request is one. This module gives them one shared service:
//!
//! - [`wake_at`] arms a one-shot timer: at (or soon after) its deadline, the service calls
//!   [`Waker::wake`] on the waker it was given. It returns a [`TimerHandle`].
//! - Dropping the handle, or [`TimerHandle::cancel`], disarms the timer if it has not fired;
//!   [`TimerHandle::detach`] lets it fire without keeping the handle;
//!   [`TimerHandle::set_waker`] replaces the waker of an armed timer (a future re-polled
//!   with another waker).
//!
//! # How it works, and what it costs
//!
//! One thread, named `jobserver-timer`, is started the first time a timer is armed and then
//! lives as long as the process; while no timer is armed it sleeps on a condition variable
//! and costs nothing. Timers sit in a binary heap by deadline under one mutex:
//!
//! - arming is a lock, a hash-map insert and a heap push, plus one futex wake-up only when
//!   the new deadline is earlier than every armed one (the thread must then sleep less);
//! - cancelling is a lock and a hash-map removal; the heap entry stays behind and is skipped
//!   when it comes up. When such stale entries outnumber the live ones (and there are more
//!   than a few dozen), the heap is rebuilt, so a pattern of arm-then-cancel does not grow
//!   it without bound;
//! - firing wakes every due waker with the lock released, in deadline order.
//!
//! Deadlines are [`Instant`]s (the monotonic clock). A timer fires no earlier than its
//! deadline; how much later depends on the scheduler (typically well under a millisecond
//! on an idle machine). Wakers run on the timer thread, so they should be short: a waker
//! that blocks delays every other timer.
//!
//! # Panicking wakers
//!
//! A waker that panics is caught (as in the driver's `wake_all`: the panic hook has already
//! reported it) and the thread goes on with the next one, so one broken executor cannot stop
//! every other timer of the process.
//!
//! # Failure
//!
//! Only starting the thread can fail (the process is out of threads or memory); [`wake_at`]
//! then returns the error, arms nothing, and the next call tries to start it again. Like any
//! thread, it does not exist in a child created by `fork` without `exec`.

use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::task::Waker;
use std::time::Instant;

/// The name of the service's thread (as `/proc/self/task/*/comm` shows it).
pub(crate) const THREAD_NAME: &str = "jobserver-timer";

/// Stale heap entries tolerated before a rebuild is considered.
const STALE_SLACK: usize = 64;

/// An armed timer.
struct Entry {
    deadline: Instant,
    waker: Waker,
}

/// Everything under the service's lock.
#[derive(Default)]
struct Timers {
    /// Armed timers by id. An id missing here has fired or was cancelled.
    armed: HashMap<u64, Entry>,
    /// `(deadline, id)`, earliest first; may hold ids no longer armed (skipped).
    heap: BinaryHeap<std::cmp::Reverse<(Instant, u64)>>,
    next_id: u64,
    /// Whether the thread was started.
    running: bool,
}

impl Timers {
    fn earliest(&self) -> Option<Instant> {
        self.heap.peek().map(|std::cmp::Reverse((d, _))| *d)
    }

    /// Drops the heap entries of cancelled timers once they outnumber the live ones.
    fn compact(&mut self) {
        if self.heap.len() > STALE_SLACK + 2 * self.armed.len() {
            let live = self
                .armed
                .iter()
                .map(|(&id, e)| std::cmp::Reverse((e.deadline, id)));
            self.heap = live.collect();
        }
    }

    /// Removes and returns the wakers of every timer due at `now`.
    fn take_due(&mut self, now: Instant) -> Vec<Waker> {
        let mut due = Vec::new();
        while let Some(&std::cmp::Reverse((deadline, id))) = self.heap.peek() {
            if deadline > now {
                break;
            }
            self.heap.pop();
            if let Some(entry) = self.armed.remove(&id) {
                due.push(entry.waker);
            }
        }
        due
    }
}

struct Service {
    timers: Mutex<Timers>,
    /// Signalled when the earliest deadline moves earlier.
    changed: Condvar,
}

impl Service {
    fn get() -> &'static Service {
        static SERVICE: OnceLock<Service> = OnceLock::new();
        SERVICE.get_or_init(|| Service {
            timers: Mutex::new(Timers::default()),
            changed: Condvar::new(),
        })
    }

    /// The lock. No code panics while holding it (wakers run outside), so a poisoned lock
    /// still holds consistent timers.
    fn lock(&self) -> MutexGuard<'_, Timers> {
        self.timers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The thread: sleeps until the earliest deadline, wakes what is due, repeats.
    fn run(&'static self) {
        let mut timers = self.lock();
        loop {
            let now = Instant::now();
            let due = timers.take_due(now);
            if !due.is_empty() {
                drop(timers);
                for waker in due {
                    // See the module docs: a panicking waker must not stop this thread.
                    let _panicked = catch_unwind(AssertUnwindSafe(|| waker.wake())).is_err();
                }
                timers = self.lock();
                continue;
            }
            timers = match timers.earliest() {
                Some(deadline) => {
                    let wait = deadline.saturating_duration_since(now);
                    self.changed
                        .wait_timeout(timers, wait)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                None => self.changed.wait(timers).unwrap_or_else(|p| p.into_inner()),
            };
        }
    }
}

/// Arms a one-shot timer: `waker` is woken, on the timer thread, once `deadline` has passed
/// (at once if it already has). See the [module docs](self) for the costs.
///
/// # Errors
///
/// When the timer thread is not running and cannot be started; nothing is armed then.
pub(crate) fn wake_at(deadline: Instant, waker: Waker) -> io::Result<TimerHandle> {
    let service = Service::get();
    let mut timers = service.lock();
    if !timers.running {
        std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || service.run())?;
        timers.running = true;
    }
    let id = timers.next_id;
    timers.next_id += 1;
    let sooner = timers.earliest().is_none_or(|earliest| deadline < earliest);
    timers.armed.insert(id, Entry { deadline, waker });
    timers.heap.push(std::cmp::Reverse((deadline, id)));
    drop(timers);
    if sooner {
        service.changed.notify_one();
    }
    Ok(TimerHandle { id: Some(id) })
}

/// An armed timer of [`wake_at`]. Dropping it cancels the timer if it has not fired yet;
/// [`TimerHandle::detach`] keeps it armed instead.
#[derive(Debug)]
#[must_use = "dropping the handle cancels the timer; call detach() to let it fire"]
pub(crate) struct TimerHandle {
    /// `None` once cancelled or detached.
    id: Option<u64>,
}

impl TimerHandle {
    /// Disarms the timer. Returns `true` if it had not fired yet (its waker is then dropped
    /// without being woken), `false` if it had already fired.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn cancel(mut self) -> bool {
        self.disarm()
    }

    /// Lets the timer fire without a handle to it.
    pub(crate) fn detach(mut self) {
        self.id = None;
    }

    /// Whether the timer is still armed (has neither fired nor been cancelled).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn is_armed(&self) -> bool {
        self.id
            .is_some_and(|id| Service::get().lock().armed.contains_key(&id))
    }

    /// Replaces the waker the timer will wake (unless `waker` would wake the same task).
    /// Returns `false`, changing nothing, when the timer has already fired.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn set_waker(&self, waker: &Waker) -> bool {
        let Some(id) = self.id else {
            return false;
        };
        let mut timers = Service::get().lock();
        match timers.armed.get_mut(&id) {
            Some(entry) => {
                if !entry.waker.will_wake(waker) {
                    entry.waker = waker.clone();
                }
                true
            }
            None => false,
        }
    }

    fn disarm(&mut self) -> bool {
        let Some(id) = self.id.take() else {
            return false;
        };
        let mut timers = Service::get().lock();
        let entry = timers.armed.remove(&id);
        timers.compact();
        drop(timers);
        // The waker (which may own anything) is dropped with the lock released.
        entry.is_some()
    }
}

impl Drop for TimerHandle {
    fn drop(&mut self) {
        self.disarm();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{mpsc, Arc};
    use std::task::Wake;
    use std::time::Duration;

    /// Sends its tag and the time it was woken.
    struct Tell(Mutex<mpsc::Sender<(usize, Instant)>>, usize);

    impl Wake for Tell {
        fn wake(self: Arc<Self>) {
            let _ = self.0.lock().unwrap().send((self.1, Instant::now()));
        }
    }

    fn sender(tx: &mpsc::Sender<(usize, Instant)>, tag: usize) -> Waker {
        Waker::from(Arc::new(Tell(Mutex::new(tx.clone()), tag)))
    }

    const LONG: Duration = Duration::from_secs(10);

    #[test]
    fn fires_at_its_deadline_not_before() {
        let (tx, rx) = mpsc::channel();
        let deadline = Instant::now() + Duration::from_millis(50);
        wake_at(deadline, sender(&tx, 1)).unwrap().detach();
        let (tag, at) = rx.recv_timeout(LONG).expect("the timer fired");
        assert_eq!(tag, 1);
        assert!(at >= deadline, "woken {:?} early", deadline - at);
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err(), "once");
    }

    #[test]
    fn a_past_deadline_fires_at_once() {
        let (tx, rx) = mpsc::channel();
        let start = Instant::now();
        let handle = wake_at(start - Duration::from_secs(1), sender(&tx, 7)).unwrap();
        let (tag, _) = rx.recv_timeout(LONG).expect("fired");
        assert_eq!(tag, 7);
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(!handle.is_armed());
        assert!(!handle.cancel(), "already fired");
    }

    #[test]
    fn an_earlier_deadline_armed_later_fires_first() {
        let (tx, rx) = mpsc::channel();
        let now = Instant::now();
        let late = wake_at(now + Duration::from_millis(400), sender(&tx, 2)).unwrap();
        // The thread now sleeps until `late`; this one must wake it sooner.
        let early = wake_at(now + Duration::from_millis(40), sender(&tx, 1)).unwrap();
        let (first, at) = rx.recv_timeout(LONG).unwrap();
        assert_eq!(first, 1);
        assert!(
            at < now + Duration::from_millis(400),
            "not held up by the later one"
        );
        assert_eq!(rx.recv_timeout(LONG).unwrap().0, 2);
        drop((late, early));
    }

    #[test]
    fn cancelled_timers_never_fire() {
        let (tx, rx) = mpsc::channel();
        let deadline = Instant::now() + Duration::from_millis(30);
        let cancelled = wake_at(deadline, sender(&tx, 1)).unwrap();
        let dropped = wake_at(deadline, sender(&tx, 2)).unwrap();
        let kept = wake_at(deadline + Duration::from_millis(20), sender(&tx, 3)).unwrap();
        assert!(cancelled.is_armed());
        assert!(cancelled.cancel(), "cancelled before it fired");
        drop(dropped);
        assert_eq!(rx.recv_timeout(LONG).unwrap().0, 3);
        assert!(!kept.is_armed());
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
    }

    #[test]
    fn set_waker_replaces_the_waker_until_it_fires() {
        let (tx, rx) = mpsc::channel();
        let handle = wake_at(Instant::now() + Duration::from_millis(30), sender(&tx, 1)).unwrap();
        assert!(handle.set_waker(&sender(&tx, 2)));
        assert_eq!(rx.recv_timeout(LONG).unwrap().0, 2, "the new waker");
        assert!(!handle.set_waker(&sender(&tx, 3)), "fired already");
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
    }

    struct Panics;

    impl Wake for Panics {
        fn wake(self: Arc<Self>) {
            panic!("a broken executor's waker");
        }
    }

    #[test]
    fn a_panicking_waker_does_not_stop_the_thread() {
        let (tx, rx) = mpsc::channel();
        let now = Instant::now();
        wake_at(now, Waker::from(Arc::new(Panics)))
            .unwrap()
            .detach();
        wake_at(
            now + Duration::from_millis(1),
            Waker::from(Arc::new(Panics)),
        )
        .unwrap()
        .detach();
        wake_at(now + Duration::from_millis(20), sender(&tx, 1))
            .unwrap()
            .detach();
        assert_eq!(
            rx.recv_timeout(LONG).unwrap().0,
            1,
            "the next timer still fires"
        );
        // And the thread keeps serving new timers.
        wake_at(Instant::now(), sender(&tx, 2)).unwrap().detach();
        assert_eq!(rx.recv_timeout(LONG).unwrap().0, 2);
    }

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn many_timers_fire_each_once_and_cancelling_does_not_grow_the_heap() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let now = Instant::now();
        // Arm and cancel many: the heap must not keep them all.
        for i in 0..10_000u64 {
            let h = wake_at(
                now + Duration::from_secs(60) + Duration::from_nanos(i),
                Waker::from(count.clone()),
            )
            .unwrap();
            assert!(h.cancel());
        }
        {
            let timers = Service::get().lock();
            assert!(
                timers.heap.len() <= STALE_SLACK + 2 * timers.armed.len() + 1,
                "heap {} for {} armed",
                timers.heap.len(),
                timers.armed.len()
            );
        }
        // Then many that fire, in a scrambled order of deadlines.
        for i in 0..1000u64 {
            let ms = (i * 7919) % 50;
            wake_at(now + Duration::from_millis(ms), Waker::from(count.clone()))
                .unwrap()
                .detach();
        }
        let start = Instant::now();
        while count.0.load(Ordering::SeqCst) < 1000 {
            assert!(
                start.elapsed() < LONG,
                "{} of 1000 fired",
                count.0.load(Ordering::SeqCst)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(count.0.load(Ordering::SeqCst), 1000, "each exactly once");
    }
}
