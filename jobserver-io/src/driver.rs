//! The runtime-agnostic driver: one [`Machine`] behind a mutex, the wakers of the tasks that
//! wait on it, and the loop that carries out the machine's actions.
//!
//! A runtime adapter supplies only a [`Reactor`]: a way to read the jobserver without blocking
//! and to be woken when it becomes readable.

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use jobserver_proto::{Action, Failure, Machine, Outcome, Permit, WaiterId, MAX_UNITS};

use crate::error::{Error, ErrorKind};
use crate::sys;

/// How a runtime reads the jobserver: the one piece each adapter writes itself.
///
/// The driver calls [`Reactor::poll_read`] from one place at a time (under its lock) and always
/// with its own waker, never a task's: exactly one party waits for readability per process, and
/// the driver then hands each token to exactly one task.
pub trait Reactor: Send + Sync + Sized + 'static {
    /// Registers a private, non-blocking, close-on-exec description of the jobserver's read
    /// side with the runtime.
    ///
    /// # Errors
    ///
    /// When the runtime is not available ([`ErrorKind::NoRuntime`]) or registration fails.
    fn register(fd: OwnedFd) -> Result<Self, Error>;

    /// The registered descriptor.
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
    pub(crate) metrics: Metrics,
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
type WakeList = Vec<Waker>;

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
pub(crate) fn wake_all(list: WakeList) {
    for waker in list {
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

/// The shared half of a client: the machine, the connection and the driver's own waker.
pub(crate) struct Shared<R: Reactor> {
    state: Mutex<State>,
    conn: Option<Conn<R>>,
    /// Woken by the reactor when the jobserver becomes readable. Holds only a weak reference,
    /// so a registration left in the reactor does not keep the client alive.
    read_waker: Waker,
    /// What waiting requests time themselves from (as nanoseconds in a `u64`, which keeps
    /// the `Acquire` future small).
    epoch: Instant,
}

struct ReadReady<R: Reactor> {
    shared: Weak<Shared<R>>,
}

impl<R: Reactor> Wake for ReadReady<R> {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(shared) = self.shared.upgrade() {
            shared.on_readable();
        }
    }
}

impl<R: Reactor> Drop for Shared<R> {
    /// The last chance for tokens whose write back failed: try once more, then count any
    /// that still failed in [`lost_tokens`] (never lost silently).
    fn drop(&mut self) {
        let mut wake = WakeList::new();
        let mut state = self.lock();
        if state.machine.stats().bytes_unwritten > 0 {
            state.machine.retry_writes();
            self.pump(&mut state, &mut wake);
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
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl<R: Reactor> Shared<R> {
    pub(crate) fn new(machine: Machine, conn: Option<Conn<R>>) -> Arc<Self> {
        Arc::new_cyclic(|weak| Shared {
            state: Mutex::new(State {
                machine,
                wakers: Vec::new(),
                read_error: None,
                write_error: None,
                metrics: Metrics::default(),
            }),
            conn,
            read_waker: Waker::from(Arc::new(ReadReady {
                shared: weak.clone(),
            })),
            epoch: Instant::now(),
        })
    }

    /// Locks the state. A panic while the lock was held cannot leave the machine half-updated
    /// (its methods do not panic), so a poisoned lock is used as it is.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` under the lock, drains the machine, then wakes whoever was granted. Returns
    /// `f`'s result and the first error of a token written back during the drain.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> (T, Option<io::Error>) {
        let mut wake = WakeList::new();
        let mut state = self.lock();
        let out = f(&mut state);
        let write_error = self.pump(&mut state, &mut wake);
        drop(state);
        wake_all(wake);
        (out, write_error)
    }

    fn on_readable(&self) {
        self.with(|state| state.machine.handle_readable());
    }

    /// Carries out every action of the machine (the single-mutation rule).
    fn pump(&self, state: &mut State, wake: &mut WakeList) -> Option<io::Error> {
        let mut first_write_error = None;
        let mut buf = [0u8; 128];
        while let Some(action) = state.machine.poll_action() {
            match action {
                Action::Read { max } => {
                    let Some(conn) = &self.conn else {
                        // A machine without a pipe never asks; answer as if the pipe were shut.
                        state.machine.handle_eof();
                        continue;
                    };
                    let len = max.min(buf.len());
                    let mut cx = Context::from_waker(&self.read_waker);
                    match conn.reader.poll_read(&mut cx, &mut buf[..len]) {
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
                        Poll::Pending => state.machine.handle_would_block(),
                    }
                }
                Action::Write(byte) => {
                    let result = match &self.conn {
                        Some(conn) => sys::write_byte(conn.write_fd(), byte),
                        None => Err(io::Error::other("no jobserver to write to")),
                    };
                    if let Err(err) = result {
                        state.machine.handle_write_error(byte);
                        let copy = io::Error::new(err.kind(), err.to_string());
                        state.write_error = Some(copy);
                        first_write_error.get_or_insert(err);
                    }
                }
                Action::Grant(id) | Action::Fail(id, _) => {
                    if let Some(waker) = state.wakers.get_mut(id.index()).and_then(Option::take) {
                        wake.push(waker);
                    }
                }
            }
        }
        let stats = state.machine.stats();
        let m = &mut state.metrics;
        m.peak_units = m.peak_units.max(stats.running);
        m.peak_waiting = m.peak_waiting.max(stats.waiting);
        first_write_error
    }

    fn failure_error(&self, failure: Failure, state: &State) -> Error {
        match failure {
            Failure::Eof => Error::new(
                ErrorKind::ServerGone,
                "the jobserver reached end-of-file: the make (or other server) that owns it has exited; \
                 no more tokens can be had, so stop starting jobs",
            ),
            Failure::ReadError(kind) => {
                let detail = state.read_error.clone().unwrap_or_else(|| kind.to_string());
                Error::new(ErrorKind::Io, format!("reading a token from the jobserver failed: {detail}"))
                    .with_source(io::Error::new(kind, detail))
            }
            Failure::NoPipe => Error::new(
                ErrorKind::Disabled,
                "more than one token was requested, but this process has no jobserver and only its \
                 implicit slot; request one token at a time",
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
        // "Up to n" has no upper limit that matters: anything above the bound means "all".
        let units = if partial { units.min(MAX_UNITS) } else { units };
        let mut wake = WakeList::new();
        let mut state = self.lock();
        let id = state.machine.acquire(units);
        // A non-blocking try must look at the pipe now, even while an earlier read waits for
        // readiness: tokens may have arrived that the reactor has not reported yet.
        state.machine.handle_readable();
        self.pump(&mut state, &mut wake);
        let result = if partial {
            let outcome = state.machine.take_partial(id);
            self.outcome(outcome, &state)
        } else {
            match state.machine.take_outcome(id) {
                Outcome::Pending => {
                    state.machine.cancel(id);
                    None
                }
                other => self.outcome(other, &state),
            }
        };
        self.pump(&mut state, &mut wake);
        drop(state);
        wake_all(wake);
        match result {
            Some(Ok(permit)) if permit.units() == 0 => {
                self.release(permit);
                Ok(None)
            }
            Some(Ok(permit)) => Ok(Some(Token {
                shared: self.clone(),
                permit: Some(permit),
            })),
            Some(Err(err)) => Err(err),
            None => Ok(None),
        }
    }

    pub(crate) fn release(&self, permit: Permit) -> Option<io::Error> {
        self.with(|state| state.machine.release(permit)).1
    }

    pub(crate) fn reader_fd(&self) -> Option<BorrowedFd<'_>> {
        self.conn.as_ref().map(|c| c.reader.fd())
    }

    pub(crate) fn take_write_error(&self) -> Option<io::Error> {
        self.lock().write_error.take()
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
/// than parking it.
#[must_use = "futures do nothing unless polled"]
pub struct Acquire<R: Reactor> {
    /// Handed to the token on completion; `None` once the future has completed.
    shared: Option<Arc<Shared<R>>>,
    units: usize,
    id: Option<WaiterId>,
    /// Set when the request first had to wait (no clock is read on the fast path).
    /// Nanoseconds after the client's epoch, plus one; 0 until it is pending.
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
                ErrorKind::Io,
                "an Acquire future was polled after it completed",
            )));
        };
        let mut wake = WakeList::new();
        let mut state = shared.lock();
        let id = match this.id {
            Some(id) => id,
            None => {
                let id = state.machine.acquire(this.units);
                this.id = Some(id);
                // Try the jobserver before anyone waits for readiness.
                shared.pump(&mut state, &mut wake);
                id
            }
        };
        let outcome = state.machine.take_outcome(id);
        let result = shared.outcome(outcome, &state);
        match &result {
            None => {
                state.set_waker(id, cx.waker());
                if this.pending_since == 0 {
                    let since = shared.epoch.elapsed().as_nanos();
                    this.pending_since = u64::try_from(since).unwrap_or(u64::MAX - 1) + 1;
                }
            }
            Some(done) => {
                state.clear_waker(id);
                this.id = None;
                let waited = (this.pending_since != 0).then(|| {
                    let since = Duration::from_nanos(this.pending_since - 1);
                    shared.epoch.elapsed().saturating_sub(since)
                });
                let m = &mut state.metrics;
                match done {
                    Ok(_) => {
                        m.granted += 1;
                        if let Some(w) = waited {
                            m.waited += 1;
                            m.total_wait += w;
                            m.max_wait = m.max_wait.max(w);
                        }
                    }
                    Err(_) => m.failed += 1,
                }
                #[cfg(feature = "tracing")]
                match done {
                    Ok(_) => tracing::debug!(
                        units = this.units,
                        wait_us = waited.map_or(0, |w| w.as_micros() as u64),
                        "jobserver tokens granted"
                    ),
                    Err(e) => {
                        tracing::warn!(units = this.units, error = %e, "jobserver request failed")
                    }
                }
            }
        }
        drop(state);
        wake_all(wake);
        let Some(result) = result else {
            return Poll::Pending;
        };
        // The future is done: its reference to the client moves into the token.
        let shared = this.shared.take();
        Poll::Ready(result.and_then(|permit| {
            shared
                .map(|shared| Token {
                    shared,
                    permit: Some(permit),
                })
                .ok_or_else(unknown_request)
        }))
    }
}

impl<R: Reactor> Drop for Acquire<R> {
    fn drop(&mut self) {
        if let (Some(id), Some(shared)) = (self.id.take(), &self.shared) {
            shared.with(|state| {
                state.clear_waker(id);
                state.machine.cancel(id);
            });
        }
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
    permit: Option<Permit>,
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
        self.permit.as_ref().map_or(0, Permit::units)
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
        let permit = self.permit.as_mut()?.split(units)?;
        Some(Token {
            shared: self.shared.clone(),
            permit: Some(permit),
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
        match (self.permit.as_mut(), other.permit.take()) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (None, theirs) => self.permit = theirs,
            (Some(_), None) => {}
        }
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
        match self.permit.take() {
            Some(permit) => match self.shared.release(permit) {
                None => Ok(()),
                Some(err) => {
                    // Taken here, so the client does not report it a second time.
                    self.shared.take_write_error();
                    Err(Error::io(
                        "writing a token back to the jobserver failed",
                        err,
                    ))
                }
            },
            None => Ok(()),
        }
    }
}

impl<R: Reactor> Drop for Token<R> {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            // A failure is recorded by the driver (counted, and kept for the client).
            let _ = self.shared.release(permit);
        }
    }
}
