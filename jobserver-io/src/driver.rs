//! The runtime-agnostic driver: one [`Machine`] behind a mutex, a lock-free fast path in
//! front of it, the wakers of the tasks that wait, and the code that carries out the
//! machine's actions.
//!
//! A runtime adapter supplies only a [`Reactor`]: a way to read the jobserver without blocking
//! and to be woken when it becomes readable.
//!
//! # Concurrency design
//!
//! **The machine is the one source of truth, and no system call runs under its lock.** A
//! thread locks the state, feeds the machine a command or event, and drains the actions
//! (see `Shared::drive`). Wakers of granted requests are collected; reads and writes are
//! collected too. The thread then releases the lock, writes the bytes and does the read, and
//! locks again to feed the results. The machine allows that (see "Carrying out actions with
//! other inputs in between" on [`Machine`]): at most one read is outstanding, so one party
//! reads at a time, while other threads keep acquiring and releasing. Wakers run with the
//! lock released, each inside `catch_unwind`.
//!
//! **The reactor's waker waits for no lock and does no I/O.** It sets an atomic `readable`
//! flag and makes sure someone acts on it (`Signal::kick`): if the driver's lock is free at
//! once (a `try_lock`), it wakes the task of the oldest waiting request, marked as the one
//! woken for this readiness; that task, when polled, takes the lock, sees the flag, and does
//! the read for everyone, so a token wakes exactly one task and the reactor (tokio's I/O
//! driver, async-io's reactor, the blocking client's helper thread) never waits for the
//! driver. If the lock is busy, its holder acts on the flag: every lock holder looks at the
//! flags before it unlocks and, through the same `kick`, right after, so a readiness that
//! arrives at any moment is never lost. The oldest waiter is looked up only when a readiness
//! comes in, so granting and queueing requests do no bookkeeping for it.
//!
//! **A waiting request collects its grant without the lock.** The lock holder that sees a
//! request granted marks it in the `Mail` (one word per request slot) and wakes it; the
//! permit stays in the machine, so the slot is not reused. The request's next poll claims the
//! mark with one compare-and-swap and completes; the next lock holder collects the permits of
//! claimed slots from the machine (all of them with one swap of a lock-free stack). So a
//! hand-over takes the lock once, in the releasing thread, as tokio's `Semaphore` does. Units
//! of the machine held by tokens are counted in one permit under the lock (`State::lent`), so
//! tokens split and merge without it.
//!
//! **After writing a token back while requests wait** (`ReleasePolicy::ReturnToPipe`), the
//! releasing thread reads for them at once instead of waiting for the reactor to report its
//! own write.
//!
//! **The fast path skips the lock while no request waits.** One atomic word holds two flags
//! and two counters: `PARKED` (the implicit slot is lent to the fast path), `SLOW` (some
//! request waits, so everything goes through the machine, in FIFO order), the units held by
//! fast tokens, and a count of fast grants. Fast units are fungible, exactly as the machine's
//! are: the first is the implicit slot and needs no byte; each further one is backed by one
//! byte in a stash (a multiset of byte values), whichever token it was read for. Then:
//! - a one-token request while `PARKED` is set and `SLOW` clear takes the first unit with
//!   one compare-and-swap, or reads one byte straight into the stash and counts one more unit;
//! - a fast token given back counts one unit down with one compare-and-swap; unless it was the
//!   last unit, it pops a byte from the stash and writes it back. So releasing the token that
//!   "had" the implicit slot while another holds a byte sends a byte back at once, as the
//!   machine would: the process never sits on a pool token its implicit slot could cover.
//!   A byte given back while requests wait is written directly under
//!   [`ReleasePolicy::ReturnToPipe`] (what the machine would do too); under `HandOff` it joins
//!   the machine ([`Machine::adopt`]) for the oldest waiter, and so does a byte whose write
//!   fails. The last unit given back while requests wait goes to the machine, for them.
//!
//! The invariant that keeps the machine's counts exact: while `PARKED` is set, the machine
//! counts the implicit slot as one unit in use (a permit kept under the lock, `State::parked`)
//! and knows nothing of the fast units; the fast path holds `max(units - 1, 0)` bytes in its
//! stash (a byte is pushed before its unit is counted and popped after its unit is counted
//! down, so a pop never comes up empty), and `fast_read = fast_written + adopted + stashed`.
//! A thread that queues a request sets `SLOW` under the lock and, in the same atomic
//! operation, takes the implicit slot back (clears `PARKED`) if no fast unit uses it; when
//! the last request leaves, the lock holder parks the implicit slot again (if the machine has
//! it free) and clears `SLOW`. So the implicit slot has exactly one owner at any time, the fast
//! path never overtakes a waiting request, and [`Client::stats`](crate::Client::stats) adds
//! the fast path's counters to the machine's to report exact totals.

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use jobserver_proto::{
    Action, Failure, Machine, Outcome, Permit, ReleasePolicy, Stats, WaiterId, MAX_UNITS,
};

use crate::error::{Error, ErrorKind};
use crate::sys;

/// How a runtime reads the jobserver: the one piece each adapter writes itself.
///
/// The driver calls [`Reactor::poll_read`] from one place at a time (the token machine allows
/// one read outstanding; the call is made with the driver's lock released) and always with its
/// own waker, never a task's: exactly one party waits for readability per process, and the
/// driver then hands each token to exactly one task. That waker takes no lock and does no I/O
/// (it sets a flag and wakes one task), so it may be woken from inside the runtime's reactor.
///
/// [`Reactor::fd`] may be called at any time from any thread: unless
/// [`Reactor::direct_io`] says otherwise, the driver's fast path reads and writes single token
/// bytes on that descriptor itself, without the lock and concurrently with `poll_read`.
pub trait Reactor: Send + Sync + Sized + 'static {
    /// Registers a private, non-blocking, close-on-exec description of the jobserver's read
    /// side with the runtime.
    ///
    /// # Errors
    ///
    /// When the runtime is not available ([`ErrorKind::NoRuntime`]) or registration fails.
    fn register(fd: OwnedFd) -> Result<Self, Error>;

    /// The registered descriptor. It must stay the same open, private, non-blocking
    /// description for the reactor's whole life, and this must be callable concurrently with
    /// [`Reactor::poll_read`].
    fn fd(&self) -> BorrowedFd<'_>;

    /// Reads at most `buf.len()` bytes without blocking. When nothing can be read, arranges for
    /// `cx`'s waker to be woken once the descriptor is readable and returns `Pending`.
    ///
    /// A short read (fewer than `buf.len()` bytes, but some) means the pipe ran empty; the
    /// reactor should then arm itself for the next readability as for `Pending` and say so with
    /// [`Filled::armed`], which spares the driver a read that could only find nothing.
    ///
    /// It must try the read before waiting unless it knows the descriptor is still empty, must
    /// not return `WouldBlock` as an error, and must not wake the waker from inside this call.
    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<Filled>>;

    /// Whether the driver may read and write [`Reactor::fd`] itself, without going through
    /// [`Reactor::poll_read`]: only when the description is private and non-blocking and the
    /// reactor needs to see every read. The default is `true`.
    ///
    /// A reactor on a helper thread ([`HelperReactor`](crate::thread::HelperReactor))
    /// answers `false` when its descriptor is the description shared with other processes
    /// (possibly blocking: a read there may only happen on the helper thread), and in
    /// exclusive-wake-up mode (every read after a wake-up must pass on leftover tokens).
    fn direct_io(&self) -> bool {
        true
    }

    /// Builds this reactor around a helper thread instead of the runtime's own reactor, for
    /// what the runtime must not be given: the description of an inherited pipe that is
    /// shared with other processes (no private reopen: no `/proc/self/fd`, or
    /// [`ClientOptions::shared_description`](crate::ClientOptions::shared_description)), or
    /// a wait with exclusive wake-ups
    /// ([`ClientOptions::exclusive_wakeups`](crate::ClientOptions::exclusive_wakeups)).
    ///
    /// Every adapter of this workspace supports it. The default refuses, so such clients
    /// fail with [`ErrorKind::Unsupported`].
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Unsupported`] when the reactor cannot hold a helper.
    fn from_helper(helper: crate::thread::HelperReactor) -> Result<Self, Error> {
        drop(helper);
        Err(Error::new(
            ErrorKind::Unsupported,
            "this reactor cannot wait on a helper thread (Reactor::from_helper), which an \
             inherited pipe without a private reopen and exclusive wake-ups need",
        ))
    }

    /// The options of a client of this reactor made without explicit ones
    /// ([`Client::from_env`](crate::Client::from_env), `from_env_or_new`,
    /// [`Server::client`](crate::Server::client), ...). The default is
    /// [`ClientOptions::new`](crate::ClientOptions::new); a newtype around a reactor can
    /// choose others, such as a client type that always waits with exclusive wake-ups.
    fn default_options() -> crate::ClientOptions {
        crate::ClientOptions::new()
    }
}

/// What one [`Reactor::poll_read`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filled {
    /// Bytes read into the buffer; 0 means end-of-file.
    pub len: usize,
    /// The read came back short because the pipe ran empty, and the reactor is already armed
    /// to wake the waker at the next readability.
    pub armed: bool,
}

impl Filled {
    /// A read of `len` bytes after which the reactor is not armed.
    pub fn unarmed(len: usize) -> Self {
        Filled { len, armed: false }
    }
}

/// The connection to a jobserver: where tokens are read and where they are written back.
pub(crate) struct Conn<R> {
    pub(crate) reader: R,
    /// `None` when the reader's descriptor is also open for writing (a fifo opened read-write).
    pub(crate) writer: Option<OwnedFd>,
}

impl<R: Reactor> Conn<R> {
    fn write_fd(&self) -> BorrowedFd<'_> {
        match &self.writer {
            Some(fd) => fd.as_fd(),
            None => self.reader.fd(),
        }
    }
}

// ----- the fast path's word -----

/// The implicit slot is parked with the fast path (the machine counts it as one unit in use).
const PARKED: u64 = 1;
/// Some request waits in the machine (or a byte waits to be written again): acquires queue
/// behind it, and the implicit slot goes to it when the fast path's last unit comes back.
const SLOW: u64 = 1 << 1;
/// Units held by fast tokens (32 bits from bit 2; a pipe holds fewer than 2^31 bytes, so the
/// field cannot overflow into the next).
const UNITS_SHIFT: u32 = 2;
const UNIT: u64 = 1 << UNITS_SHIFT;
const UNITS_MASK: u64 = ((1 << 32) - 1) << UNITS_SHIFT;
/// Requests granted by the fast path and not yet folded into [`Metrics::granted`] (the top 30
/// bits; folded under the lock before they could wrap).
const GRANTS_SHIFT: u32 = 34;
const GRANT: u64 = 1 << GRANTS_SHIFT;
const GRANTS_MASK: u64 = !((1 << GRANTS_SHIFT) - 1);

fn units_of(word: u64) -> usize {
    usize::try_from((word & UNITS_MASK) >> UNITS_SHIFT).unwrap_or(usize::MAX)
}

/// The fast path's token bytes: a multiset, one counter per byte value. Units are fungible,
/// as in the machine: the first fast unit is the implicit slot, each further one is backed by
/// one byte in here, whichever token it was read for.
struct Stash {
    counts: [AtomicU32; 256],
    /// The value pushed last: where a pop looks first (pools hold one value, usually `+`).
    hint: AtomicU8,
}

impl Stash {
    fn new() -> Box<Self> {
        Box::new(Stash {
            counts: std::array::from_fn(|_| AtomicU32::new(0)),
            hint: AtomicU8::new(b'+'),
        })
    }

    fn push(&self, byte: u8) {
        self.counts[usize::from(byte)].fetch_add(1, Ordering::AcqRel);
        self.hint.store(byte, Ordering::Relaxed);
    }

    fn take(&self, byte: u8) -> bool {
        self.counts[usize::from(byte)]
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| c.checked_sub(1))
            .is_ok()
    }

    fn pop(&self) -> Option<u8> {
        let hint = self.hint.load(Ordering::Relaxed);
        if self.take(hint) {
            return Some(hint);
        }
        (0..=u8::MAX).find(|&b| self.take(b))
    }
}

impl std::fmt::Debug for Stash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held: u64 = self
            .counts
            .iter()
            .map(|c| u64::from(c.load(Ordering::Relaxed)))
            .sum();
        f.debug_struct("Stash").field("bytes", &held).finish()
    }
}

/// What a token holds.
#[derive(Debug)]
enum Hold {
    /// Nothing (a token split down to zero units, or already given back).
    Empty,
    /// One unit of the fast path (see [`Stash`]).
    Fast,
    /// Units granted by the machine. Their permits are merged into `State::lent`, so that a
    /// grant can be handed to its request through the [`Mail`] and units moved between
    /// tokens without the lock; giving them back splits them off again.
    Units(usize),
}

impl Hold {
    fn units(&self) -> usize {
        match self {
            Hold::Empty => 0,
            Hold::Fast => 1,
            Hold::Units(n) => *n,
        }
    }
}

/// Grants waiting to be collected by their requests without the lock: one word per request
/// slot ([`WaiterId::index`]), in chunks that are allocated (under the lock) as the number of
/// requests pending at once grows and kept for the life of the client.
///
/// A word is `EMPTY`, `GRANTED` or `RETIRED` (bits 0..2), with the request's generation
/// (bits 2..34) and, when retired, a link to the next retired slot (bits 34..64, slot + 1).
/// - The lock holder that sees a request granted marks its word `GRANTED`, then wakes it. The
///   permit stays in the machine (so the slot is not reused).
/// - The request's next poll claims the word (`GRANTED` to `RETIRED`, one compare-and-swap)
///   and pushes the slot onto the `retired` stack (another): it completes without the lock,
///   with the units it asked for (an `Acquire` is all or nothing).
/// - Every lock holder first takes the whole stack (one swap) and collects the permits of the
///   retired slots from the machine into `State::lent`, emptying their words. So a unit is
///   in `lent` before anyone under the lock can give it back, and a slot is only reused once
///   its word is empty.
/// - A request collected under the lock, or dropped, empties its `GRANTED` word itself.
struct Mail {
    chunks: [std::sync::OnceLock<Box<[AtomicU64]>>; MAIL_CHUNKS],
    hot: MailHot,
}

/// What a request that completes from the mail writes, on one cache line: it takes the line
/// once, not once per counter.
#[derive(Default)]
#[repr(align(64))]
struct MailHot {
    /// The retired slots not collected yet: the first one's slot + 1 (0 for none).
    retired: AtomicU64,
    /// Requests that waited and collected their grant from the mail (folded into
    /// [`Metrics::granted`] and [`Metrics::waited`]).
    waits: AtomicU64,
    /// The total and the longest wait of every request that waited, in nanoseconds (timed
    /// with the lock released; folded into [`Metrics`]).
    wait_ns: AtomicU64,
    max_wait_ns: AtomicU64,
}

/// Chunk `k` holds `MAIL_FIRST << k` words; 25 chunks cover the first 2^30 slots (more
/// requests than that pending at once are collected under the lock).
const MAIL_FIRST: usize = 64;
const MAIL_CHUNKS: usize = 25;
const MAIL_SLOTS: usize = 1 << 30;
const MAIL_GRANTED: u64 = 1;
const MAIL_RETIRED: u64 = 2;
const MAIL_TAG: u64 = 3;

impl Mail {
    fn new() -> Self {
        Mail {
            chunks: std::array::from_fn(|_| std::sync::OnceLock::new()),
            hot: MailHot::default(),
        }
    }

    fn locate(index: usize) -> (usize, usize) {
        let k = (index / MAIL_FIRST + 1).ilog2() as usize;
        (k, index - MAIL_FIRST * ((1 << k) - 1))
    }

    fn generation(id: WaiterId) -> u64 {
        id.to_bits() & u64::from(u32::MAX)
    }

    fn slot(&self, index: usize) -> Option<&AtomicU64> {
        let (k, offset) = Self::locate(index);
        self.chunks.get(k)?.get()?.get(offset)
    }

    /// Marks `id` granted, under the lock. `false` when its slot has no word (then the grant
    /// is collected under the lock).
    fn put(&self, id: WaiterId) -> bool {
        let index = id.index();
        if index >= MAIL_SLOTS {
            return false;
        }
        let (k, offset) = Self::locate(index);
        let Some(chunk) = self.chunks.get(k) else {
            return false;
        };
        let chunk = chunk.get_or_init(|| (0..MAIL_FIRST << k).map(|_| AtomicU64::new(0)).collect());
        match chunk.get(offset) {
            Some(slot) => {
                slot.store(MAIL_GRANTED | Self::generation(id) << 2, Ordering::Release);
                true
            }
            None => false,
        }
    }

    /// Claims `id`'s grant without the lock and retires its slot; `true` if it was granted.
    fn claim(&self, id: WaiterId) -> bool {
        let Some(slot) = self.slot(id.index()) else {
            return false;
        };
        let granted = MAIL_GRANTED | Self::generation(id) << 2;
        if slot.load(Ordering::Acquire) != granted {
            return false;
        }
        let link = |next: u64| MAIL_RETIRED | Self::generation(id) << 2 | next << 34;
        let mut head = self.hot.retired.load(Ordering::Acquire);
        if slot
            .compare_exchange(granted, link(head), Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        // The slot is this request's now; it becomes reachable with the push below.
        let me = u64::try_from(id.index())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        loop {
            match self.hot.retired.compare_exchange_weak(
                head,
                me,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => {
                    head = now;
                    slot.store(link(head), Ordering::Release);
                }
            }
        }
    }

    /// Empties `id`'s word if it is marked granted, under the lock; `true` if it was.
    fn unmark(&self, id: WaiterId) -> bool {
        let Some(slot) = self.slot(id.index()) else {
            return false;
        };
        let granted = MAIL_GRANTED | Self::generation(id) << 2;
        slot.load(Ordering::Acquire) == granted
            && slot
                .compare_exchange(granted, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }

    /// Collects the permits of every retired slot into `lent`, under the lock.
    fn reap(&self, state: &mut State) {
        if self.hot.retired.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut next = self.hot.retired.swap(0, Ordering::AcqRel);
        while next != 0 {
            let index = usize::try_from(next - 1).unwrap_or(usize::MAX);
            let Some(slot) = self.slot(index) else { break };
            let word = slot.load(Ordering::Acquire);
            debug_assert_eq!(word & MAIL_TAG, MAIL_RETIRED);
            next = word >> 34;
            slot.store(0, Ordering::Release);
            let generation = (word >> 2) & u64::from(u32::MAX);
            let bits = (u64::try_from(index).unwrap_or(0) << 32) | generation;
            if let Outcome::Granted(permit) = state.machine.take_outcome(WaiterId::from_bits(bits))
            {
                state.lend(permit);
            }
        }
    }
}

impl std::fmt::Debug for Mail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let chunks = self.chunks.iter().filter(|c| c.get().is_some()).count();
        f.debug_struct("Mail")
            .field("chunks", &chunks)
            .field("retired", &self.hot.retired.load(Ordering::Relaxed))
            .finish()
    }
}

/// What the fast path found.
enum Fast {
    Got,
    /// No request waits, the implicit slot is in use and the jobserver is empty.
    Empty,
    /// Go through the machine.
    Slow,
}

/// Everything the driver keeps under its lock.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) machine: Machine,
    /// The waker of each waiting request, indexed by [`WaiterId::index`].
    wakers: Vec<Option<Waker>>,
    /// The error behind [`Failure::ReadError`], for messages.
    read_error: Option<String>,
    /// The most recent failed write of a token, not yet taken by the application.
    write_error: Option<io::Error>,
    /// Wait times and peaks, measured here (the machine has no clock).
    metrics: Metrics,
    /// The implicit slot while the fast path owns it (free or lent to a token).
    parked: Option<Permit>,
    /// Bytes the fast path read and then handed to the machine.
    adopted: u64,
    /// The rule against hold-and-wait across processes (see [`PartialHold`]).
    hold: PartialHold,
    /// The permits of every [`Hold::Units`] and of every grant in the [`Mail`], merged.
    lent: Option<Permit>,
    /// A buffer for the bytes of one round of writes, kept to spare an allocation under the
    /// lock.
    writes: Vec<u8>,
    /// The last drive's read came back `Pending`, and the reactor's waker was woken while
    /// it was under way (see `Shared::flagged_for`).
    read_came_back_pending: bool,
}

/// How long the oldest request may hold part of a multi-token request from the jobserver
/// while it waits for the rest, before it gives that part back.
pub(crate) const PARTIAL_HOLD: Duration = Duration::from_millis(500);

/// The first back-off after a partial grant was given back; it doubles with each further
/// give-back of the same request, up to 16 times, and is jittered by ±50 %.
const BACKOFF: Duration = Duration::from_millis(100);

/// The driver's side of [`Machine::yield_partial`]: when the oldest request started holding a
/// partial grant, how often it gave one back, and the timer that brings the driver back.
///
/// The rule: a request that holds jobserver bytes for part of its demand for longer than
/// [`PARTIAL_HOLD`] gives them back (keeping its place in the local queue and the implicit
/// slot), waits a jittered, growing back-off, and collects again. So two processes that each
/// want more than half of the pool cannot hold each other's tokens for ever, and make's own
/// jobs get the tokens back in the meantime.
#[derive(Debug, Default)]
struct PartialHold {
    /// The request that holds (or held) a partial grant.
    head: Option<WaiterId>,
    /// When it started holding the current partial grant.
    since: Option<Instant>,
    /// How many times it gave a partial grant back.
    yields: u32,
    /// The end of the current back-off.
    backoff_until: Option<Instant>,
    /// The timer armed for the next deadline, and that deadline.
    timer: Option<(Instant, crate::timer::TimerHandle)>,
    /// A cheap pseudo-random state for the jitter.
    seed: u64,
}

impl PartialHold {
    fn backoff(&mut self) -> Duration {
        if self.seed == 0 {
            self.seed = u64::from(std::process::id()) | 1;
        }
        // xorshift64
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let base = BACKOFF * (1u32 << self.yields.saturating_sub(1).min(4));
        // 50 % .. 150 % of the base.
        let permille = 500 + u32::try_from(self.seed % 1000).unwrap_or(0);
        base * permille / 1000
    }
}

/// Woken by the timer of [`PartialHold`]: flags the driver and wakes the oldest waiter, so
/// that a lock holder looks at the deadline.
struct TimerDue(Arc<Signal>);

impl Wake for TimerDue {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.timer_due.store(true, Ordering::SeqCst);
        self.0.kick();
    }
}

/// How long requests waited for tokens, and the peaks of one client (and its clones).
///
/// Measured by the driver: a request that is granted on its first poll counts as a wait of
/// zero and reads no clock; one that has to wait is timed from its first poll to the poll
/// that completes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// Requests that completed with a token.
    pub granted: u64,
    /// Of those, requests that had to wait (were pending at least once).
    pub waited: u64,
    /// Requests that failed (the jobserver failed, or the request could never be met).
    pub failed: u64,
    /// Total time the `waited` requests spent waiting.
    pub total_wait: Duration,
    /// The longest single wait.
    pub max_wait: Duration,
    /// The most units held at once by this client's tokens (implicit slot included).
    pub peak_units: usize,
    /// The most requests waiting at once.
    pub peak_waiting: usize,
}

impl Metrics {
    /// The mean wait of the requests that had to wait.
    pub fn mean_wait(&self) -> Option<Duration> {
        u32::try_from(self.waited)
            .ok()
            .filter(|&n| n > 0)
            .map(|n| self.total_wait / n)
    }
}

impl State {
    fn new(machine: Machine) -> Self {
        State {
            machine,
            wakers: Vec::new(),
            read_error: None,
            write_error: None,
            metrics: Metrics::default(),
            parked: None,
            adopted: 0,
            hold: PartialHold::default(),
            lent: None,
            writes: Vec::new(),
            read_came_back_pending: false,
        }
    }

    fn set_waker(&mut self, id: WaiterId, waker: &Waker) {
        let i = id.index();
        if self.wakers.len() <= i {
            self.wakers.resize_with(i + 1, || None);
        }
        match &mut self.wakers[i] {
            Some(existing) if existing.will_wake(waker) => {}
            slot => *slot = Some(waker.clone()),
        }
    }

    /// Takes a permit of the machine into `lent`; returns its units.
    fn lend(&mut self, permit: Permit) -> usize {
        let units = permit.units();
        match &mut self.lent {
            Some(lent) => lent.merge(permit),
            None => self.lent = Some(permit),
        }
        units
    }

    /// Takes `units` back out of `lent`, to give them back to the machine.
    fn unlend(&mut self, units: usize) -> Option<Permit> {
        let permit = self.lent.as_mut().and_then(|lent| lent.split(units));
        debug_assert!(permit.is_some(), "{units} units given back were never lent");
        permit
    }

    fn clear_waker(&mut self, id: WaiterId) {
        if let Some(slot) = self.wakers.get_mut(id.index()) {
            *slot = None;
        }
    }
}

fn unknown_request() -> Error {
    Error::new(
        ErrorKind::Io,
        "internal error: the request is unknown to the token machine",
    )
}

/// Wakers to wake once the lock is released.
///
/// The first is kept inline: one release grants one request, and the list is filled under the
/// lock, where an allocation would lengthen the wait of every other thread.
#[derive(Default)]
struct WakeList {
    first: Option<Waker>,
    rest: Vec<Waker>,
}

impl WakeList {
    fn new() -> Self {
        WakeList::default()
    }

    fn push(&mut self, waker: Waker) {
        if self.first.is_none() {
            self.first = Some(waker);
        } else {
            self.rest.push(waker);
        }
    }
}

/// Wakes every waker in `list`, even when some of them panic.
///
/// A panic in a waker is caught and not passed on, and the next waker is woken. Rationale:
/// the waker belongs to some task's executor, and its panic is a bug there; the panic hook
/// has already reported it (with `panic = "abort"` the process is gone anyway). Passing it
/// on would unwind into whoever happened to trigger the grant: a task releasing a token, a
/// `Drop` (possibly during another unwind, which aborts), or the runtime's reactor or the
/// blocking client's helper thread, which would then stop watching the jobserver for every
/// task. The driver's state is already settled when wakers run (they run with the lock
/// released), so every other granted request is still woken and no token is lost. The
/// request whose waker panicked keeps its grant; it completes when its task is polled again
/// or gives the tokens back when its future is dropped.
#[inline]
fn wake_all(list: WakeList) {
    // `push` fills `first` before `rest`: an empty list (most calls) costs one test.
    if list.first.is_some() {
        wake_each(list);
    }
}

fn wake_each(list: WakeList) {
    for waker in list.first.into_iter().chain(list.rest) {
        wake_catching(waker);
    }
}

/// Wakes `waker`, catching a panic and not passing it on (see [`wake_all`] for why).
pub(crate) fn wake_catching(waker: Waker) {
    let _panicked = catch_unwind(AssertUnwindSafe(|| waker.wake())).is_err();
}

/// Tokens this process lost for good; see [`lost_tokens`].
static LOST_TOKENS: AtomicU64 = AtomicU64::new(0);

/// Tokens this process has lost for good since it started: bytes whose write back to the
/// jobserver failed, were kept by their client, and could still not be written at the last
/// attempt when that client was dropped.
///
/// Each one is a token missing from the pool until its server exits (make then reports it
/// as `INTERNAL: Exiting with N jobserver tokens available; should be M!`). It is counted
/// process-wide because the client that lost it no longer exists; the per-client
/// counterpart, while the client lives, is `Stats::bytes_unwritten`. It only ever grows.
/// A write back normally fails only when the pipe is full, which a correct pool never is;
/// a nonzero value is worth reporting, for example in a build tool's summary.
pub fn lost_tokens() -> u64 {
    LOST_TOKENS.load(Ordering::Relaxed)
}

/// Counts `n` tokens lost for good outside the driver (in [`lost_tokens`]): bytes a helper
/// thread held that could not be written back when it ended.
pub(crate) fn count_lost(n: usize) {
    let n = u64::try_from(n).unwrap_or(u64::MAX);
    LOST_TOKENS.fetch_add(n, Ordering::Relaxed);
}

/// What the reactor's waker reaches: the flags, and the driver's state, which a waker only
/// ever try-locks. It never blocks and does no I/O (see [`Signal::kick`]).
#[derive(Debug)]
struct Signal {
    /// The jobserver became readable and no lock holder has acted on it yet.
    readable: AtomicBool,
    /// The request woken for a readiness whose task has not polled it since
    /// (`WaiterId::to_bits() + 1`; 0 for none). The readiness is its to act on: other lock
    /// holders leave it, and a grant need not wake it again, which keeps one wake per token.
    woken: AtomicU64,
    /// A deadline of [`PartialHold`] passed.
    timer_due: AtomicBool,
    /// Grants on their way to their requests (see [`Mail`]).
    mail: Mail,
    /// Everything else: the machine, the wakers of waiting requests, the metrics.
    state: Mutex<State>,
}

fn woken_bits(id: WaiterId) -> u64 {
    id.to_bits().wrapping_add(1)
}

/// The driver's lock, held. Releasing it (dropping the guard) looks at the flags once more
/// ([`Signal::kick`]), so a readiness or deadline flagged while it was held is acted on.
pub(crate) struct Guard<'a> {
    signal: &'a Signal,
    inner: Option<MutexGuard<'a, State>>,
}

impl std::ops::Deref for Guard<'_> {
    type Target = State;

    #[inline]
    fn deref(&self) -> &State {
        match &self.inner {
            Some(guard) => guard,
            None => unreachable!("the guard is only emptied when it is dropped"),
        }
    }
}

impl std::ops::DerefMut for Guard<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut State {
        match &mut self.inner {
            Some(guard) => guard,
            None => unreachable!("the guard is only emptied when it is dropped"),
        }
    }
}

impl Drop for Guard<'_> {
    /// Unlocks, then looks at the flags again if a wake-up could have been left to this
    /// holder: only while the machine waits for readiness or a partial-hold timer is armed.
    /// Otherwise a readiness is of no use (a read is under way, whose reader looks at the
    /// flags when it locks again, or none is needed) and no deadline is pending.
    #[inline]
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        let watch = inner.machine.awaits_readiness() || inner.hold.timer.is_some();
        drop(inner);
        if watch {
            self.signal.kick();
        }
    }
}

impl Signal {
    fn new(state: State) -> Self {
        Signal {
            readable: AtomicBool::new(false),
            woken: AtomicU64::new(0),
            timer_due: AtomicBool::new(false),
            mail: Mail::new(),
            state: Mutex::new(state),
        }
    }

    /// Locks the state, and collects the grants that requests took from the [`Mail`] since.
    /// A panic while the lock was held cannot leave the machine half-updated (its methods do
    /// not panic), so a poisoned lock is used as it is.
    fn lock(&self) -> Guard<'_> {
        let mut inner = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.mail.reap(&mut inner);
        Guard {
            signal: self,
            inner: Some(inner),
        }
    }

    /// `id`'s task is polling it, or it is gone: it no longer stands for a readiness.
    /// Returns whether it did.
    fn forget(&self, id: WaiterId) -> bool {
        let bits = woken_bits(id);
        self.woken.load(Ordering::SeqCst) == bits
            && self
                .woken
                .compare_exchange(bits, 0, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
    }

    /// A readiness that this lock holder should act on: flagged, and no woken request is
    /// about to act on it.
    fn ready_for_anyone(&self) -> bool {
        self.readable.load(Ordering::SeqCst) && self.woken.load(Ordering::SeqCst) == 0
    }

    /// Something a lock holder must act on: a readiness nobody is woken for, or a deadline.
    fn flagged(&self) -> bool {
        self.ready_for_anyone() || self.timer_due.load(Ordering::SeqCst)
    }

    fn is_woken(&self, id: WaiterId) -> bool {
        self.woken.load(Ordering::SeqCst) == woken_bits(id)
    }

    /// Makes sure a flagged readiness or deadline is acted on, without waiting: if the lock is
    /// free at once, wakes the oldest waiting request's task (for a readiness, marked as the
    /// one to act on it), which then takes the lock and reads for everyone. If the lock is
    /// busy, its holder acts on the flags itself: every lock holder looks at them before it
    /// unlocks and, through this, right after (the fences order the flag's store before a
    /// waker's `try_lock`, and a holder's unlock before its second look, so one of the two
    /// sees the other). Nobody to wake (no request waits, or the oldest one's first poll is
    /// still under way) leaves the flag to the next lock holder.
    ///
    /// Called by the reactor's waker, the partial-hold timer's waker, and every unlock.
    #[inline]
    fn kick(&self) {
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.flagged() {
            self.kick_flagged();
        }
    }

    #[cold]
    fn kick_flagged(&self) {
        let readable = self.ready_for_anyone();
        if !readable && !self.timer_due.load(Ordering::SeqCst) {
            return;
        }
        let state = match self.state.try_lock() {
            Ok(state) => state,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        // A read under way (its thread released the lock only for the I/O) is as good as
        // a busy lock: its thread locks again to report it, and then acts on the flag
        // itself (it reads again, or hands on a readiness that came in while its read came
        // back empty). Waking a task for it too would be a second wake for one token: a
        // releaser's own write, reported by the reactor while the releaser reads it back
        // for the oldest waiter, woke that waiter once for the readiness and once for the
        // grant.
        if readable && !self.timer_due.load(Ordering::SeqCst) && state.machine.read_in_flight() {
            return;
        }
        let Some(head) = state.machine.oldest_waiter() else {
            return;
        };
        let Some(waker) = state.wakers.get(head.index()).and_then(Option::clone) else {
            return;
        };
        let bits = woken_bits(head);
        let marked = readable
            && self
                .woken
                .compare_exchange(0, bits, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok();
        drop(state);
        if catch_unwind(AssertUnwindSafe(|| waker.wake())).is_err() && marked {
            // That task's executor is broken: leave the readiness to the next lock holder.
            let _ = self
                .woken
                .compare_exchange(bits, 0, Ordering::SeqCst, Ordering::SeqCst);
        }
    }
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    /// Sets the flag and makes sure someone acts on it ([`Signal::kick`]). This waker may run
    /// inside a runtime's reactor: it never waits for a lock and does no I/O.
    fn wake_by_ref(self: &Arc<Self>) {
        self.readable.store(true, Ordering::SeqCst);
        self.kick();
    }
}

/// Results of the I/O carried out with the lock released.
#[derive(Default)]
struct Done {
    failed_writes: Vec<(u8, io::Error)>,
    read: Option<(Poll<io::Result<Filled>>, [u8; READ_BUF])>,
    /// The reactor's waker was woken while the read was under way (see
    /// `Shared::flagged_for`).
    woken_during_read: bool,
}

/// The most bytes one read takes.
const READ_BUF: usize = 128;

/// The shared half of a client: the fast path, the machine, the connection.
pub(crate) struct Shared<R: Reactor> {
    /// Its place among the machines of this pool in the process (see `registry`); first, so
    /// that it leaves the registry before the connection closes.
    pub(crate) membership: std::sync::OnceLock<crate::registry::Membership>,
    /// The fast path's word: `PARKED`, `SLOW`, fast units held, fast grants.
    fast: AtomicU64,
    /// The bytes behind the fast units beyond the first.
    stash: Box<Stash>,
    /// Bytes the fast path read, and wrote back itself.
    fast_read: AtomicU64,
    fast_written: AtomicU64,
    /// Units in use in the machine besides the parked implicit slot (granted, collected or
    /// not, and promised), published under the lock by `sync_fast`.
    machine_units: AtomicUsize,
    /// The most units held at once.
    peak: AtomicUsize,
    /// The release policy is [`ReleasePolicy::HandOff`] (mirrors the machine's, for the fast
    /// path).
    handoff: AtomicBool,
    /// The fast path may read and write the descriptor itself.
    direct: bool,
    /// The flags and the state (see [`Signal`]).
    signal: Arc<Signal>,
    /// Woken by the reactor when the jobserver becomes readable: the [`Signal`].
    read_waker: Waker,
    conn: Option<Conn<R>>,
    /// What the periodic liveness check watches, and what it found (see `crate::liveness`).
    pub(crate) liveness: crate::liveness::Liveness,
}

impl<R: Reactor> Drop for Shared<R> {
    /// The last chance for tokens whose write back failed: try once more, then count any
    /// that still failed in [`lost_tokens`] (never lost silently).
    fn drop(&mut self) {
        let mut wake = WakeList::new();
        let mut state = self.lock();
        if state.machine.stats().bytes_unwritten > 0 {
            state.machine.retry_writes();
            let (mut state, _) = self.drive(state, &mut wake);
            let lost = state.machine.abandon_unwritten();
            if lost > 0 {
                let lost = u64::try_from(lost).unwrap_or(u64::MAX);
                LOST_TOKENS.fetch_add(lost, Ordering::Relaxed);
            }
        }
    }
}

impl<R: Reactor> std::fmt::Debug for Shared<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("fast", &self.fast.load(Ordering::Relaxed))
            .field("signal", &self.signal)
            .finish_non_exhaustive()
    }
}

impl<R: Reactor> Shared<R> {
    pub(crate) fn new(machine: Machine, conn: Option<Conn<R>>) -> Arc<Self> {
        let policy = machine.policy();
        let signal = Arc::new(Signal::new(State::new(machine)));
        let handoff = policy == ReleasePolicy::HandOff;
        let direct = conn.as_ref().is_some_and(|c| c.reader.direct_io());
        let shared = Arc::new(Shared {
            membership: std::sync::OnceLock::new(),
            fast: AtomicU64::new(0),
            stash: Stash::new(),
            fast_read: AtomicU64::new(0),
            fast_written: AtomicU64::new(0),
            machine_units: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            handoff: AtomicBool::new(handoff),
            direct,
            read_waker: Waker::from(signal.clone()),
            signal,
            conn,
            liveness: Default::default(),
        });
        // Park the implicit slot with the fast path.
        let mut wake = WakeList::new();
        let state = shared.lock();
        drop(shared.drive(state, &mut wake));
        shared
    }

    /// Locks the state (see [`Signal::lock`]).
    pub(crate) fn lock(&self) -> Guard<'_> {
        self.signal.lock()
    }

    /// Runs `f` under the lock, drives the machine, then wakes whoever was granted. Returns
    /// `f`'s result and the first error of a token written back meanwhile.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> (T, Option<io::Error>) {
        let mut wake = WakeList::new();
        let mut state = self.lock();
        let out = f(&mut state);
        let (state, write_error) = self.drive(state, &mut wake);
        drop(state);
        wake_all(wake);
        (out, write_error)
    }

    /// Sets the release policy, for the machine and the fast path.
    pub(crate) fn set_policy(&self, policy: ReleasePolicy) {
        self.with(|state| {
            state.machine.set_policy(policy);
            self.handoff
                .store(policy == ReleasePolicy::HandOff, Ordering::Relaxed);
        });
    }

    /// The liveness check found the server gone: fails every waiting request that cannot be
    /// met (and every later one) with [`ErrorKind::ServerGone`], and wakes them.
    pub(crate) fn server_gone(&self) {
        self.with(|state| state.machine.handle_server_gone());
    }

    // ----- the fast path -----

    /// Records a new count of fast units, for [`Metrics::peak_units`].
    fn note_units(&self, fast_units: usize) {
        let held = fast_units.saturating_add(self.machine_units.load(Ordering::Relaxed));
        if held > self.peak.load(Ordering::Relaxed) {
            self.peak.fetch_max(held, Ordering::Relaxed);
        }
    }

    /// One unit without the lock, while no request waits and the implicit slot is parked
    /// here: the first unit needs no byte; a further one reads one byte directly into the
    /// stash.
    fn fast_acquire(&self) -> Fast {
        let mut word = self.fast.load(Ordering::Relaxed);
        loop {
            if word & (PARKED | SLOW) != PARKED || word & GRANTS_MASK == GRANTS_MASK {
                return Fast::Slow;
            }
            if units_of(word) != 0 {
                break;
            }
            match self.fast.compare_exchange_weak(
                word,
                word + UNIT + GRANT,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.note_units(1);
                    return Fast::Got;
                }
                Err(now) => word = now,
            }
        }
        if !self.direct {
            return Fast::Slow;
        }
        let Some(conn) = &self.conn else {
            return Fast::Slow;
        };
        let mut byte = [0u8; 1];
        match sys::read(conn.reader.fd(), &mut byte) {
            Ok(1) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Fast::Empty,
            // End-of-file or an error: the machine reports it.
            _ => return Fast::Slow,
        }
        self.fast_read.fetch_add(1, Ordering::Relaxed);
        // The byte backs a unit before the unit is counted, so a release that pops (after
        // counting its unit down) always finds one.
        self.stash.push(byte[0]);
        let before = self.fast.fetch_add(UNIT + GRANT, Ordering::AcqRel);
        if before & PARKED == 0 {
            // The implicit slot went back to the machine meanwhile (only possible once every
            // fast unit was given back): this request goes through the machine, and the byte
            // goes back.
            self.fast.fetch_sub(UNIT + GRANT, Ordering::AcqRel);
            let _ = self.give_back_stashed();
            return Fast::Slow;
        }
        let units = units_of(before) + 1;
        self.note_units(units);
        if units == 1 {
            // Everyone gave their units back meanwhile: this one is the implicit slot, and
            // the byte is surplus.
            self.give_back_stashed();
        }
        Fast::Got
    }

    /// Takes one byte out of the stash and writes it back (or, when the write fails or a
    /// waiting request should get it under `HandOff`, gives it to the machine).
    fn give_back_stashed(&self) -> Option<io::Error> {
        let byte = self.stash.pop()?;
        let hand_off =
            self.fast.load(Ordering::Relaxed) & SLOW != 0 && self.handoff.load(Ordering::Relaxed);
        if !hand_off {
            if let Some(conn) = &self.conn {
                if sys::write_byte(conn.write_fd(), byte).is_ok() {
                    self.fast_written.fetch_add(1, Ordering::Relaxed);
                    if self.fast.load(Ordering::Relaxed) & SLOW == 0 {
                        return None;
                    }
                    // Requests wait here: read for them now (as `drive` does after the
                    // machine's own writes) rather than wait for the reactor.
                    return self
                        .with(|state| {
                            if state.machine.has_waiters() {
                                state.machine.handle_readable();
                            }
                        })
                        .1;
                }
            }
        }
        // The machine takes the byte: it hands it to the oldest waiter, or writes it and
        // keeps it (and the error) if the write fails again.
        self.with(|state| {
            state.adopted += 1;
            let permit = state.machine.adopt(byte);
            state.machine.release(permit);
        })
        .1
    }

    /// Gives one fast unit back without the lock when possible: the last one frees the
    /// implicit slot (unless a request waits for it); any other one sends a stashed byte back.
    /// Returns `None` when the machine must take it (the lock is needed).
    fn fast_release(&self) -> Option<Option<io::Error>> {
        let mut word = self.fast.load(Ordering::Relaxed);
        loop {
            let units = units_of(word);
            // The last fast unit is the implicit slot: while requests wait it goes to them,
            // and while the machine's permits hold bytes it goes to the machine, whose
            // surplus byte then goes back (units stay fungible across both). The machine's
            // units are published under the lock before `SLOW` is cleared, so either this
            // sees them, or the CAS below fails on `SLOW` and looks again.
            if units == 1 && (word & SLOW != 0 || self.machine_units.load(Ordering::SeqCst) > 0) {
                return None;
            }
            match self.fast.compare_exchange_weak(
                word,
                word.saturating_sub(UNIT),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) if units >= 2 => return Some(self.give_back_stashed()),
                Ok(_) => return Some(None),
                Err(now) => word = now,
            }
        }
    }

    /// Marks the machine busy (`SLOW`) and takes the implicit slot back from the fast path if
    /// no fast unit uses it, so that the machine can grant it; folds the fast grants into the
    /// metrics. Called under the lock before a request joins the machine.
    fn reclaim(&self, state: &mut State) {
        let word = self.fast.load(Ordering::Acquire);
        let idle = word & PARKED != 0 && units_of(word) == 0;
        if word & SLOW != 0 && word & GRANTS_MASK == 0 && !idle {
            // Already in the machine's hands (requests wait): nothing to change.
            return;
        }
        let before = self
            .fast
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |w| {
                let idle = w & PARKED != 0 && units_of(w) == 0;
                let w = (w | SLOW) & !GRANTS_MASK;
                Some(if idle { w & !PARKED } else { w })
            })
            .unwrap_or_else(|w| w);
        state.metrics.granted += before >> GRANTS_SHIFT;
        if before & PARKED != 0 && units_of(before) == 0 {
            if let Some(permit) = state.parked.take() {
                state.machine.release(permit);
            }
        }
    }

    /// Whether [`Shared::check_partial`] has nothing to do, apart from a deadline that
    /// passed (`timer_due`, which the caller looks at): no partial grant is held, nobody is
    /// backing off, and no hold is being timed.
    #[inline]
    fn partial_idle(&self, state: &State) -> bool {
        state.machine.partial_bytes() == 0
            && !state.machine.is_paused()
            && state.hold.since.is_none()
            && state.hold.backoff_until.is_none()
    }

    /// Applies the rule of [`PartialHold`], under the lock. Reads the clock only while the
    /// oldest request holds a partial grant, is backing off, or a deadline passed.
    fn check_partial(&self, state: &mut State) {
        let due = self.signal.timer_due.load(Ordering::Relaxed)
            && self.signal.timer_due.swap(false, Ordering::SeqCst);
        if !due && self.partial_idle(state) {
            return;
        }
        let partial = state.machine.partial_bytes() > 0;
        let paused = state.machine.is_paused();
        let hold = &mut state.hold;
        let now = Instant::now();
        let head = state.machine.oldest_waiter();
        if hold.head != head {
            hold.head = head;
            hold.since = None;
            hold.yields = 0;
        }
        let next = if paused {
            match hold.backoff_until {
                Some(until) if now < until => Some(until),
                _ => {
                    hold.backoff_until = None;
                    state.machine.resume();
                    None
                }
            }
        } else if partial {
            hold.backoff_until = None;
            let since = *hold.since.get_or_insert(now);
            if now.saturating_duration_since(since) >= PARTIAL_HOLD {
                hold.since = None;
                hold.yields = hold.yields.saturating_add(1);
                let until = now + hold.backoff();
                hold.backoff_until = Some(until);
                state.machine.yield_partial();
                #[cfg(feature = "tracing")]
                tracing::debug!(
                    yields = hold.yields,
                    "a partial multi-token grant held too long was given back"
                );
                Some(until)
            } else {
                Some(since + PARTIAL_HOLD)
            }
        } else {
            hold.since = None;
            hold.backoff_until = None;
            None
        };
        match next {
            Some(at) if hold.timer.as_ref().is_none_or(|(t, _)| *t != at) => {
                let waker = Waker::from(Arc::new(TimerDue(self.signal.clone())));
                // Without a timer thread the rule waits for the next lock holder instead.
                hold.timer = crate::timer::wake_at(at, waker).ok().map(|h| (at, h));
            }
            Some(_) => {}
            None => hold.timer = None,
        }
    }

    /// Keeps the fast path's flags in line with the machine, under the lock: `SLOW` while a
    /// request waits (or a byte waits to be written again); otherwise the implicit slot parked
    /// with the fast path (if the machine has it free) and `SLOW` cleared.
    fn sync_fast(&self, state: &mut State) {
        let units = state
            .machine
            .units_in_use()
            .saturating_sub(usize::from(state.parked.is_some()));
        if self.machine_units.load(Ordering::Relaxed) != units {
            self.machine_units.store(units, Ordering::SeqCst);
            // The peak of units held: the machine's (granted, collected or not, and
            // promised) and the fast path's.
            let held = units.saturating_add(units_of(self.fast.load(Ordering::Relaxed)));
            if held > self.peak.load(Ordering::Relaxed) {
                self.peak.fetch_max(held, Ordering::Relaxed);
            }
        }
        if state.machine.has_waiters() || state.machine.has_unwritten() {
            if self.fast.load(Ordering::Relaxed) & SLOW == 0 {
                self.fast.fetch_or(SLOW, Ordering::AcqRel);
            }
            return;
        }
        let mut park = 0;
        if state.parked.is_none()
            && state.machine.units_in_use() == 0
            && state.machine.has_implicit_slot()
        {
            let id = state.machine.acquire(1);
            match state.machine.take_outcome(id) {
                Outcome::Granted(permit) => {
                    state.parked = Some(permit);
                    park = PARKED;
                }
                _ => state.machine.cancel(id),
            }
        }
        let word = self.fast.load(Ordering::Relaxed);
        if word & SLOW != 0 || park != 0 {
            let _ = self
                .fast
                .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |w| {
                    Some((w & !SLOW) | park)
                });
        }
    }

    /// Debug builds: checks that the fast path's flags and published units are what
    /// [`Shared::sync_fast`] would make them, where a shortcut skips the drive on that
    /// premise.
    #[cfg(debug_assertions)]
    fn assert_synced(&self, state: &mut State) {
        let flags = |w: u64| w & (PARKED | SLOW);
        let word = self.fast.load(Ordering::Acquire);
        let units = self.machine_units.load(Ordering::Acquire);
        self.sync_fast(state);
        debug_assert_eq!(
            flags(word),
            flags(self.fast.load(Ordering::Acquire)),
            "fast flags"
        );
        debug_assert_eq!(
            units,
            self.machine_units.load(Ordering::Acquire),
            "machine units"
        );
    }

    /// Moves one fast unit into the machine's accounting, as a permit of one unit: the last
    /// fast unit carries the implicit slot (un-parked), any other a stashed byte (adopted).
    /// Under the lock.
    fn import_fast(&self, state: &mut State) -> Option<Permit> {
        let before = self
            .fast
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |w| {
                let w2 = w.saturating_sub(UNIT);
                Some(if units_of(w) == 1 { w2 & !PARKED } else { w2 })
            })
            .unwrap_or_else(|w| w);
        if units_of(before) == 1 {
            state.parked.take()
        } else {
            let byte = self.stash.pop()?;
            state.adopted += 1;
            Some(state.machine.adopt(byte))
        }
    }

    /// A hold as lent units of the machine (for merging), under the lock.
    fn import(&self, state: &mut State, hold: Hold) -> usize {
        match hold {
            Hold::Empty => 0,
            Hold::Units(units) => units,
            Hold::Fast => match self.import_fast(state) {
                Some(permit) => state.lend(permit),
                None => 0,
            },
        }
    }

    // ----- the machine -----

    /// Carries out every action of the machine until it has none, with the lock released
    /// for the I/O; returns with the lock held again, and the first error of a token
    /// written back. Wakers of granted and failed requests go to `wake`.
    #[inline]
    fn drive<'a>(
        &'a self,
        mut state: Guard<'a>,
        wake: &mut WakeList,
    ) -> (Guard<'a>, Option<io::Error>) {
        state.read_came_back_pending = false;
        // The usual cases: a request joined the queue or a grant was collected (no action),
        // or a release was handed over (grants only); nothing is flagged and no partial grant
        // is timed. The loop below would bring the fast path's flags in line and hand out
        // the grants, in that order, and that is what this does. A read or write left (or
        // brought by the sync: parking the implicit slot grants a request of the machine's
        // own, drained here in the same lock hold, before its slot can be reused) goes to
        // the loop, in order. Unlike the loop, this does not look at the flags again before
        // it returns; no flag set meanwhile is lost: the unlock looks at them whenever a
        // read is armed (`Guard::drop`), a read in flight has its reader look when it
        // reports, no timer is armed while no partial grant is timed, and a pending
        // `Acquire` looks again after it stored its waker.
        if !self.signal.flagged() && self.partial_idle(&state) {
            self.sync_fast(&mut state);
            while let Some(action) = state.machine.poll_completion() {
                self.complete(&mut state, action, wake);
            }
            if !state.machine.has_actions() {
                let waiting = state.machine.waiting();
                let m = &mut state.metrics;
                m.peak_waiting = m.peak_waiting.max(waiting);
                return (state, None);
            }
        }
        self.drive_loop(state, wake)
    }

    /// The general half of [`Shared::drive`]: every action in order, the I/O with the lock
    /// released, and the flags looked at again before it returns. Kept out of line, so that
    /// the usual calls, which end in `drive`'s first half, do not pay for its frame.
    #[inline(never)]
    fn drive_loop<'a>(
        &'a self,
        mut state: Guard<'a>,
        wake: &mut WakeList,
    ) -> (Guard<'a>, Option<io::Error>) {
        let mut first_write_error = None;
        loop {
            if !state.read_came_back_pending
                && self.signal.ready_for_anyone()
                && self.signal.readable.swap(false, Ordering::SeqCst)
            {
                state.machine.handle_readable();
            }
            self.check_partial(&mut state);
            self.sync_fast(&mut state);
            let mut writes = std::mem::take(&mut state.writes);
            writes.clear();
            let mut read = None;
            let mut read_for_waiters = false;
            while let Some(action) = state.machine.poll_action() {
                match action {
                    Action::Read { max } => read = Some(max),
                    Action::Write(byte) => writes.push(byte),
                    Action::Grant(_) | Action::Fail(..) => self.complete(&mut state, action, wake),
                }
                if read.is_none()
                    && !read_for_waiters
                    && self.direct
                    && !writes.is_empty()
                    && state.machine.has_waiters()
                {
                    // Tokens go back to the pipe while requests here wait for some
                    // (`ReturnToPipe`): read for them right after the write, in the same
                    // unlocked stretch, instead of waiting for the reactor to report the
                    // bytes this very thread wrote. Other processes have the same chance at
                    // them as at any write; the read takes what is there, and one that finds
                    // nothing arms the reactor again.
                    read_for_waiters = true;
                    state.machine.handle_readable();
                }
            }
            let waiting = state.machine.waiting();
            let m = &mut state.metrics;
            m.peak_waiting = m.peak_waiting.max(waiting);
            if writes.is_empty() && read.is_none() {
                state.writes = writes;
                if self.flagged_for(&state) {
                    continue;
                }
                debug_assert!(!state.machine.has_actions(), "drive left actions behind");
                return (state, first_write_error);
            }
            drop(state);
            let done = self.carry_out(&writes, read);
            state = self.lock();
            state.writes = writes;
            for (byte, err) in done.failed_writes {
                state.machine.handle_write_error(byte);
                state.write_error = Some(io::Error::new(err.kind(), err.to_string()));
                first_write_error.get_or_insert(err);
            }
            if let Some((result, buf)) = done.read {
                match result {
                    Poll::Ready(Ok(Filled { len: 0, .. })) => state.machine.handle_eof(),
                    Poll::Ready(Ok(Filled { len, armed: true })) => {
                        state.machine.handle_read_drained(&buf[..len]);
                    }
                    Poll::Ready(Ok(Filled { len, armed: false })) => {
                        state.machine.handle_read(&buf[..len]);
                    }
                    Poll::Ready(Err(err)) => {
                        state.read_error = Some(err.to_string());
                        state.machine.handle_read_error(err.kind());
                    }
                    Poll::Pending => {
                        state.machine.handle_would_block();
                        state.read_came_back_pending = done.woken_during_read;
                    }
                }
            }
        }
    }

    /// Hands out a grant or failure of the machine, under the lock: a grant goes to the
    /// [`Mail`], and the request's waker to `wake`.
    #[inline]
    fn complete(&self, state: &mut State, action: Action, wake: &mut WakeList) {
        let (Action::Grant(id) | Action::Fail(id, _)) = action else {
            return;
        };
        if matches!(action, Action::Grant(_)) {
            self.post(state, id);
        }
        if let Some(waker) = state.wakers.get_mut(id.index()).and_then(Option::take) {
            // Woken for a readiness already, and not polled since: its task polls anyway
            // and collects the grant.
            if !self.signal.is_woken(id) {
                wake.push(waker);
            }
        }
    }

    /// Marks a granted request in the [`Mail`], where its request collects the grant without
    /// the lock. Under the lock.
    fn post(&self, state: &State, id: WaiterId) {
        // A stale grant (of a request collected already, such as the one that parks the
        // implicit slot) is not marked.
        if state.machine.is_granted(id) {
            self.signal.mail.put(id);
        }
    }

    /// Collects what the machine has for `id` under the lock, as a number of lent units or
    /// an error.
    fn collect(&self, state: &mut State, id: WaiterId) -> Option<Result<usize, Error>> {
        self.signal.mail.unmark(id);
        let outcome = state.machine.take_outcome(id);
        match self.outcome(outcome, state)? {
            Ok(permit) => Some(Ok(state.lend(permit))),
            Err(err) => Some(Err(err)),
        }
    }

    /// Whether this lock holder should drive the machine again: a deadline passed, or a
    /// readiness came in that nobody acts on. Not for a readiness that came in while this
    /// holder's own last read was under way and came back `Pending`: that read's reactor
    /// woke its waker during the read (a helper thread's poller that saw a byte another
    /// process then took first, or a reactor that breaks the rule of [`Reactor::poll_read`]),
    /// and reading again at once can chase it for ever. That readiness is left flagged, and
    /// the unlock hands it on (`Signal::kick`): the oldest waiter's task reads when it is
    /// polled again. A readiness that comes in after the read returned is acted on at once.
    ///
    /// Measured: without this, `shared_description`'s fallback run starves a two-token
    /// request for 10 s in 4 of 4 runs with four in parallel; with it, 4 of 4 pass.
    fn flagged_for(&self, state: &State) -> bool {
        self.signal.timer_due.load(Ordering::SeqCst)
            || (!state.read_came_back_pending && self.signal.ready_for_anyone())
    }

    /// The machine's writes and read, with the lock released.
    fn carry_out(&self, writes: &[u8], read: Option<usize>) -> Done {
        let mut done = Done::default();
        let Some(conn) = &self.conn else {
            for &byte in writes {
                let err = io::Error::other("no jobserver to write to");
                done.failed_writes.push((byte, err));
            }
            // A machine without a pipe never asks to read; answer as if the pipe were shut.
            if read.is_some() {
                done.read = Some((Poll::Ready(Ok(Filled::unarmed(0))), [0; READ_BUF]));
            }
            return done;
        };
        for &byte in writes {
            if let Err(err) = sys::write_byte(conn.write_fd(), byte) {
                done.failed_writes.push((byte, err));
            }
        }
        if let Some(max) = read {
            let mut buf = [0u8; READ_BUF];
            let len = max.clamp(1, READ_BUF);
            let mut cx = Context::from_waker(&self.read_waker);
            let before = self.signal.readable.load(Ordering::SeqCst);
            let result = conn.reader.poll_read(&mut cx, &mut buf[..len]);
            done.woken_during_read = !before && self.signal.readable.load(Ordering::SeqCst);
            done.read = Some((result, buf));
        }
        done
    }

    fn failure_error(&self, failure: Failure, state: &State) -> Error {
        match failure {
            Failure::Eof => Error::new(
                ErrorKind::ServerGone,
                "the jobserver reached end-of-file: the make (or other server) that owns it has exited; \
                 no more tokens can be had, so stop starting jobs",
            ),
            Failure::ServerGone => Error::new(ErrorKind::ServerGone, self.liveness.message()),
            Failure::ReadError(kind) => {
                let detail = state.read_error.clone().unwrap_or_else(|| kind.to_string());
                Error::new(ErrorKind::Io, format!("reading a token from the jobserver failed: {detail}"))
                    .with_source(io::Error::new(kind, detail))
            }
            Failure::NoPipe => Error::new(
                ErrorKind::Capacity,
                "more than one token was requested at once, but this client has no jobserver, only \
                 its implicit slot, so the request could never be met (Client::degraded says why \
                 there is none; under make, mark the rule with `+`); request one token at a time",
            ),
            Failure::TooMany(units) => Error::new(
                ErrorKind::Capacity,
                format!(
                    "{units} tokens were requested at once, more than any jobserver can hold (at \
                     most {MAX_UNITS} per request); ask for at most the pool size (the -j value) and \
                     start further jobs as tokens come back"
                ),
            ),
            _ => Error::new(ErrorKind::Io, failure.to_string()),
        }
    }

    fn outcome(&self, outcome: Outcome, state: &State) -> Option<Result<Permit, Error>> {
        match outcome {
            Outcome::Pending => None,
            Outcome::Granted(permit) => Some(Ok(permit)),
            Outcome::Failed(failure) => Some(Err(self.failure_error(failure, state))),
            Outcome::Unknown => Some(Err(unknown_request())),
        }
    }

    /// A token of `units` lent units of the machine (counted in the peak when they were
    /// granted, see `sync_fast`).
    fn token(self: Arc<Self>, units: usize) -> Token<R> {
        Token {
            shared: self,
            hold: Hold::Units(units),
        }
    }

    /// Counts the wait of a request that waited and completed (timed with no lock held).
    fn note_wait_time(&self, waited: Duration) {
        let ns = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        self.signal
            .mail
            .hot
            .wait_ns
            .fetch_add(ns, Ordering::Relaxed);
        if ns > self.signal.mail.hot.max_wait_ns.load(Ordering::Relaxed) {
            self.signal
                .mail
                .hot
                .max_wait_ns
                .fetch_max(ns, Ordering::Relaxed);
        }
    }

    /// Counts a request that waited and collected its grant from the mail.
    fn note_mail_wait(&self, waited: Duration) {
        self.signal.mail.hot.waits.fetch_add(1, Ordering::Relaxed);
        self.note_wait_time(waited);
    }

    /// Gives `units` lent units back to the machine, under the lock.
    fn give_back_units(state: &mut State, units: usize) {
        if let Some(permit) = state.unlend(units) {
            state.machine.release(permit);
        }
    }

    pub(crate) fn acquire(self: &Arc<Self>, units: usize) -> Acquire<R> {
        Acquire {
            shared: Some(self.clone()),
            units,
            id: None,
            pending_since: 0,
        }
    }

    /// Makes a request, tries the jobserver once without waiting, and settles with what it got:
    /// all `units` or nothing (`partial == false`), or as many as were free (`partial`).
    pub(crate) fn try_acquire(
        self: &Arc<Self>,
        units: usize,
        partial: bool,
    ) -> Result<Option<Token<R>>, Error> {
        if units == 1 {
            match self.fast_acquire() {
                Fast::Got => {
                    return Ok(Some(Token {
                        shared: self.clone(),
                        hold: Hold::Fast,
                    }))
                }
                Fast::Empty => return Ok(None),
                Fast::Slow => {}
            }
        }
        // "Up to n" has no upper limit that matters: anything above the bound means "all".
        let units = if partial { units.min(MAX_UNITS) } else { units };
        let mut wake = WakeList::new();
        let mut state = self.lock();
        self.reclaim(&mut state);
        let id = state.machine.acquire(units);
        // A non-blocking try must look at the pipe now, even while an earlier read waits for
        // readiness: tokens may have arrived that the reactor has not reported yet.
        state.machine.handle_readable();
        let (mut state, _) = self.drive(state, &mut wake);
        self.signal.mail.unmark(id);
        let outcome = if partial {
            state.machine.take_partial(id)
        } else {
            match state.machine.take_outcome(id) {
                Outcome::Pending => {
                    state.machine.cancel(id);
                    Outcome::Pending
                }
                other => other,
            }
        };
        let result = self
            .outcome(outcome, &state)
            .map(|r| r.map(|permit| state.lend(permit)));
        let result = match result {
            Some(Ok(0)) => {
                Self::give_back_units(&mut state, 0);
                None
            }
            other => other,
        };
        if let Some(Ok(_)) = &result {
            state.metrics.granted += 1;
        }
        let (state, _) = self.drive(state, &mut wake);
        drop(state);
        wake_all(wake);
        match result {
            Some(Ok(units)) => Ok(Some(self.clone().token(units))),
            Some(Err(err)) => Err(err),
            None => Ok(None),
        }
    }

    /// Gives a token's hold back; returns the error of a failed write.
    fn release(&self, hold: Hold) -> Option<io::Error> {
        match hold {
            Hold::Empty => None,
            Hold::Fast => match self.fast_release() {
                Some(result) => result,
                // The last fast unit while requests wait: the implicit slot goes to the oldest.
                None => {
                    self.with(|state| {
                        if let Some(permit) = self.import_fast(state) {
                            state.machine.release(permit);
                        }
                    })
                    .1
                }
            },
            Hold::Units(units) => self.with(|state| Self::give_back_units(state, units)).1,
        }
    }

    pub(crate) fn reader_fd(&self) -> Option<BorrowedFd<'_>> {
        self.conn.as_ref().map(|c| c.reader.fd())
    }

    pub(crate) fn take_write_error(&self) -> Option<io::Error> {
        self.lock().write_error.take()
    }

    /// The machine's counters with the fast path's added: exact whenever no token is being
    /// taken or given back on another thread at the same moment.
    pub(crate) fn stats(&self) -> Stats {
        let state = self.lock();
        let mut stats = state.machine.stats();
        let word = self.fast.load(Ordering::Acquire);
        let read = self.fast_read.load(Ordering::Acquire);
        let written = self.fast_written.load(Ordering::Acquire);
        let stashed = read.saturating_sub(written).saturating_sub(state.adopted);
        let stashed = usize::try_from(stashed).unwrap_or(usize::MAX);
        stats.bytes_read = stats.bytes_read.saturating_add(read);
        stats.bytes_written = stats.bytes_written.saturating_add(written);
        stats.bytes_held = stats.bytes_held.saturating_add(stashed);
        // The machine counts the parked implicit slot as one unit; the fast path's own count
        // says how many are really in use.
        let parked = usize::from(state.parked.is_some());
        stats.running = stats
            .running
            .saturating_sub(parked)
            .saturating_add(units_of(word));
        stats
    }

    /// Wait times and peaks, with the fast path's grants folded in.
    pub(crate) fn metrics(&self) -> Metrics {
        let mut state = self.lock();
        let before = self.fast.fetch_and(!GRANTS_MASK, Ordering::AcqRel);
        state.metrics.granted += before >> GRANTS_SHIFT;
        let mut metrics = state.metrics;
        let mail = self.signal.mail.hot.waits.load(Ordering::Relaxed);
        metrics.granted += mail;
        metrics.waited += mail;
        metrics.total_wait =
            Duration::from_nanos(self.signal.mail.hot.wait_ns.load(Ordering::Relaxed));
        metrics.max_wait =
            Duration::from_nanos(self.signal.mail.hot.max_wait_ns.load(Ordering::Relaxed));
        metrics.peak_units = metrics.peak_units.max(self.peak.load(Ordering::Relaxed));
        metrics
    }
}

/// A future that resolves to a [`Token`] once the jobserver grants the requested tokens.
///
/// Created by `Client::acquire` and `Client::acquire_many`.
///
/// # Cancel safety
///
/// Dropping it before it completes withdraws the request: its place in the queue is lost, and
/// any token already granted or promised to it goes to the next waiting request or back to the
/// jobserver. No token is lost. A future that is neither polled nor dropped keeps its place and
/// whatever was promised to it, which can hold up later requests (futurelock): drop it rather
/// than parking it. While it is the oldest request, it is also the task woken when the
/// jobserver becomes readable (that task does the read for everyone), so parking it holds up
/// the reads for the requests behind it too.
///
/// # Polling after completion
///
/// Once it has returned `Ready`, polling it again returns
/// `Err` with [`ErrorKind::PolledAfterCompletion`] (every time), without a new request:
/// it never panics and never hands out a second token.
#[must_use = "futures do nothing unless polled"]
pub struct Acquire<R: Reactor> {
    /// Handed to the token on completion; `None` once the future has completed.
    shared: Option<Arc<Shared<R>>>,
    units: usize,
    id: Option<WaiterId>,
    /// Set when the request first had to wait (no clock is read on the fast path): the
    /// monotonic clock in nanoseconds ([`sys::monotonic_ns`]); 0 until it is pending.
    pending_since: u64,
}

impl<R: Reactor> std::fmt::Debug for Acquire<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acquire")
            .field("units", &self.units)
            .field("id", &self.id)
            .finish()
    }
}

impl<R: Reactor> Future for Acquire<R> {
    type Output = Result<Token<R>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(shared) = this.shared.as_deref() else {
            return Poll::Ready(Err(Error::new(
                ErrorKind::PolledAfterCompletion,
                "an Acquire future was polled again after it completed (a bug in the caller: \
                 await each acquire() once); nothing was requested",
            )));
        };
        match this.id {
            None if this.units == 1 => {
                if let Fast::Got = shared.fast_acquire() {
                    let shared = this.shared.take().ok_or_else(unknown_request)?;
                    return Poll::Ready(Ok(Token {
                        shared,
                        hold: Hold::Fast,
                    }));
                }
            }
            None => {}
            // Granted while it waited: the grant is in the mail, collected without the lock.
            Some(id) if shared.signal.mail.claim(id) => {
                let units = this.units;
                this.id = None;
                // If it was the request woken for a readiness, someone else acts on it now.
                if shared.signal.forget(id) {
                    shared.signal.kick();
                }
                let waited = this.waited();
                shared.note_mail_wait(waited);
                #[cfg(feature = "tracing")]
                tracing::debug!(
                    units = this.units,
                    wait_us = waited.as_micros() as u64,
                    "jobserver tokens granted"
                );
                let shared = this.shared.take().ok_or_else(unknown_request)?;
                return Poll::Ready(Ok(shared.token(units)));
            }
            Some(_) => {}
        }
        let mut wake = WakeList::new();
        let mut state = shared.lock();
        // A request polled again has changed nothing the machine would act on: unless a flag
        // asks for it, its outcome is looked at first, without driving the machine.
        let mut drive = true;
        let mut pending = false;
        let id = match this.id {
            Some(id) => {
                // This task is being polled: a grant made while it drives the machine below
                // must not wake it a second time.
                state.clear_waker(id);
                shared.signal.forget(id);
                drive = shared.signal.flagged();
                id
            }
            None => {
                shared.reclaim(&mut state);
                let units = state.machine.units_in_use();
                let id = state.machine.acquire(this.units);
                this.id = Some(id);
                // The usual new request, queued behind others: the machine has no action
                // (so no grant or failure for it: it is pending), no unit was promised to
                // it (a new oldest request can be promised the free implicit slot), and no
                // flag or partial hold asks for anything. Driving would only sync the fast
                // path's flags, which `reclaim` already did (`SLOW` is set), so it is
                // skipped, and so is collecting a pending outcome.
                if !state.machine.has_actions()
                    && state.machine.units_in_use() == units
                    && !shared.signal.flagged()
                    && shared.partial_idle(&state)
                {
                    debug_assert!(!state.machine.is_granted(id));
                    #[cfg(debug_assertions)]
                    shared.assert_synced(&mut state);
                    let waiting = state.machine.waiting();
                    let m = &mut state.metrics;
                    m.peak_waiting = m.peak_waiting.max(waiting);
                    drive = false;
                    pending = true;
                }
                id
            }
        };
        let result = loop {
            if drive {
                let (driven, _) = shared.drive(state, &mut wake);
                state = driven;
            }
            drive = true;
            let result = if pending {
                pending = false;
                None
            } else {
                shared.collect(&mut state, id)
            };
            if result.is_some() {
                break result;
            }
            state.set_waker(id, cx.waker());
            // A readiness that came in meanwhile (while the lock was released for I/O, or
            // before this request's waker was known) is acted on here.
            if !shared.flagged_for(&state) {
                break None;
            }
        };
        let mut first_wait = false;
        match &result {
            None => first_wait = this.pending_since == 0,
            Some(done) => {
                state.clear_waker(id);
                this.id = None;
                let m = &mut state.metrics;
                match done {
                    Ok(_) => {
                        m.granted += 1;
                        if this.pending_since != 0 {
                            m.waited += 1;
                        }
                    }
                    Err(_) => m.failed += 1,
                }
            }
        }
        drop(state);
        wake_all(wake);
        let Some(result) = result else {
            if first_wait {
                this.pending_since = sys::monotonic_ns().max(1);
                crate::liveness::watch(this.shared.as_ref());
            }
            return Poll::Pending;
        };
        if this.pending_since != 0 && result.is_ok() {
            // Timed with the lock released; counted in `waited` above.
            let waited = this.waited();
            shared.note_wait_time(waited);
        }
        #[cfg(feature = "tracing")]
        match &result {
            Ok(_) => tracing::debug!(units = this.units, "jobserver tokens granted"),
            Err(e) => {
                tracing::warn!(units = this.units, error = %e, "jobserver request failed")
            }
        }
        // The future is done: its reference to the client moves into the token.
        let shared = this.shared.take();
        Poll::Ready(result.and_then(|units| {
            shared
                .map(|shared| shared.token(units))
                .ok_or_else(unknown_request)
        }))
    }
}

impl<R: Reactor> Acquire<R> {
    /// How long this request has waited, from its first pending poll (zero if it never was).
    fn waited(&self) -> Duration {
        match self.pending_since {
            0 => Duration::ZERO,
            since => Duration::from_nanos(sys::monotonic_ns().saturating_sub(since)),
        }
    }
}

impl<R: Reactor> Drop for Acquire<R> {
    fn drop(&mut self) {
        let (Some(id), Some(shared)) = (self.id.take(), &self.shared) else {
            return;
        };
        let mut state = shared.lock();
        state.clear_waker(id);
        shared.signal.forget(id);
        // Granted but not collected: cancelling gives the units back as if released.
        shared.signal.mail.unmark(id);
        let units = state.machine.units_in_use();
        state.machine.cancel(id);
        // The usual cancel, of a request queued behind others or before them: nothing to
        // hand out or carry out, no flag or partial hold to act on, and the fast path's
        // flags still right (requests still wait, so `SLOW` stays; no unit moved).
        if !state.machine.has_actions()
            && state.machine.has_waiters()
            && state.machine.units_in_use() == units
            && !shared.signal.flagged()
            && shared.partial_idle(&state)
        {
            #[cfg(debug_assertions)]
            shared.assert_synced(&mut state);
            return;
        }
        let mut wake = WakeList::new();
        let (state, _) = shared.drive(state, &mut wake);
        drop(state);
        wake_all(wake);
    }
}

/// Permission to run jobs: one token, or several from `acquire_many`.
///
/// Dropping it gives its tokens back: the implicit slot to the process, every other token as
/// the exact byte that was read, to the jobserver. If that write fails, the token is not lost:
/// the client keeps the byte and writes it (or hands it to a waiting request) at its next
/// operation, and the error is counted and can be taken with
/// [`Client::take_release_error`](crate::Client::take_release_error).
#[must_use = "a token is released as soon as it is dropped"]
pub struct Token<R: Reactor> {
    shared: Arc<Shared<R>>,
    hold: Hold,
}

impl<R: Reactor> std::fmt::Debug for Token<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("units", &self.units())
            .finish()
    }
}

impl<R: Reactor> Token<R> {
    /// How many jobs this token allows (1 unless it came from `acquire_many` or
    /// `try_acquire_up_to`).
    pub fn units(&self) -> usize {
        self.hold.units()
    }

    /// Splits `units` off into a new token of the same client, or gives `None` if this token
    /// has fewer. Nothing is read or written: the units (and the bytes behind them) move
    /// from one token to the other, so a thread pool can give its units back one at a time
    /// as its threads finish.
    ///
    /// ```
    /// # fn main() -> Result<(), jobserver_io::Error> {
    /// let server = jobserver_io::blocking::Server::new(4)?;
    /// let client = jobserver_io::blocking::Client::from(server.client()?);
    /// let mut four = client.acquire_many(4)?;
    /// let one = four.split(1).expect("4 units");
    /// assert_eq!((four.units(), one.units()), (3, 1));
    /// drop(one); // one unit back: a byte is written to the pool
    /// assert_eq!(server.available().unwrap(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn split(&mut self, units: usize) -> Option<Token<R>> {
        let have = self.units();
        if units > have {
            return None;
        }
        let hold = if units == have {
            std::mem::replace(&mut self.hold, Hold::Empty)
        } else if units == 0 {
            Hold::Empty
        } else {
            match &mut self.hold {
                Hold::Units(n) => {
                    *n -= units;
                    Hold::Units(units)
                }
                // One-unit holds are handled above (all or nothing).
                _ => return None,
            }
        };
        Some(Token {
            shared: self.shared.clone(),
            hold,
        })
    }

    /// Joins `other` into this token. Both must come from the same client (or its clones);
    /// otherwise `other` is handed back unchanged in `Err`.
    ///
    /// # Errors
    ///
    /// `Err(other)` when it belongs to another client.
    pub fn merge(&mut self, mut other: Token<R>) -> Result<(), Token<R>> {
        if !Arc::ptr_eq(&self.shared, &other.shared) {
            return Err(other);
        }
        let theirs = std::mem::replace(&mut other.hold, Hold::Empty);
        if theirs.units() == 0 {
            return Ok(());
        }
        if self.hold.units() == 0 {
            self.hold = theirs;
            return Ok(());
        }
        let mine = std::mem::replace(&mut self.hold, Hold::Empty);
        if let (Hold::Units(a), Hold::Units(b)) = (&mine, &theirs) {
            // Both lent already: nothing moves in the machine.
            self.hold = Hold::Units(a.saturating_add(*b));
            return Ok(());
        }
        let shared = &self.shared;
        // Through the machine's drive: adopting a byte may leave one to write back, and the
        // fast path must see the machine's new units (see `fast_release`).
        let (merged, _) = shared.with(|state| {
            let a = shared.import(state, mine);
            a.saturating_add(shared.import(state, theirs))
        });
        self.hold = if merged == 0 {
            Hold::Empty
        } else {
            Hold::Units(merged)
        };
        Ok(())
    }

    /// Gives the tokens back now and reports whether writing them to the jobserver worked.
    ///
    /// # Errors
    ///
    /// The I/O error of a failed write. The token is not lost: the client keeps the byte and
    /// tries again at its next operation (and once more when it is dropped); the failure is
    /// counted in the client's statistics.
    pub fn release(mut self) -> Result<(), Error> {
        let hold = std::mem::replace(&mut self.hold, Hold::Empty);
        match self.shared.release(hold) {
            None => Ok(()),
            Some(err) => {
                // Taken here, so the client does not report it a second time.
                self.shared.take_write_error();
                Err(Error::io(
                    "writing a token back to the jobserver failed",
                    err,
                ))
            }
        }
    }
}

impl<R: Reactor> Drop for Token<R> {
    fn drop(&mut self) {
        let hold = std::mem::replace(&mut self.hold, Hold::Empty);
        // A failure is recorded by the driver (counted, and kept for the client).
        let _ = self.shared.release(hold);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Grants claimed from the mail by many threads at once all reach `lent` at the next
    /// reap, each slot once, and their machine slots are freed only then.
    #[test]
    fn mail_claims_from_many_threads_are_all_reaped() {
        const N: usize = 300;
        let mut st = State::new(Machine::new());
        let ids: Vec<WaiterId> = (0..N).map(|_| st.machine.acquire(1)).collect();
        let mail = Mail::new();
        let mut granted = 0;
        let mut post = |st: &mut State| {
            while let Some(action) = st.machine.poll_action() {
                if let Action::Grant(id) = action {
                    assert!(st.machine.is_granted(id));
                    assert!(mail.put(id));
                    granted += 1;
                }
            }
        };
        // The first request gets the implicit slot at once; the others N - 1 bytes.
        post(&mut st);
        st.machine.handle_read(&[b'+'; N - 1]);
        post(&mut st);
        assert_eq!(granted, N);
        // One request is cancelled under the lock instead (its word is emptied).
        assert!(mail.unmark(ids[0]));
        st.machine.cancel(ids[0]);
        std::thread::scope(|s| {
            for chunk in ids[1..].chunks(37) {
                let mail = &mail;
                s.spawn(move || {
                    for &id in chunk {
                        assert!(mail.claim(id), "claimed once");
                        assert!(!mail.claim(id), "not twice");
                    }
                });
            }
        });
        // Not reaped yet: the slots are still the machine's.
        assert!(st.machine.is_granted(ids[1]));
        mail.reap(&mut st);
        assert_eq!(st.lent.as_ref().map(Permit::units), Some(N - 1));
        assert_eq!(mail.hot.retired.load(Ordering::SeqCst), 0);
        for &id in &ids {
            assert_eq!(st.machine.take_outcome(id), Outcome::Unknown);
            assert!(mail
                .slot(id.index())
                .is_none_or(|w| w.load(Ordering::SeqCst) == 0));
        }
        // Giving the units back leaves the machine with nothing in use.
        let permit = st.unlend(N - 1).expect("lent");
        st.machine.release(permit);
        assert_eq!(st.machine.units_in_use(), 0);
    }

    #[test]
    fn mail_slots_cover_their_chunks() {
        for index in [0, 63, 64, 191, 192, 1000, 1 << 20, MAIL_SLOTS - 1] {
            let (k, offset) = Mail::locate(index);
            assert!(k < MAIL_CHUNKS, "{index}");
            assert!(offset < MAIL_FIRST << k, "{index}");
        }
    }
}
