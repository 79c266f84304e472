//! A [`Reactor`] on a helper thread of its own, for every runtime and none.
//!
//! The thread waits for the jobserver and tells the driver through the driver's [`Waker`],
//! so a [`Client<HelperReactor>`](crate::Client) works under tokio, smol, any other executor
//! and the blocking client alike, and the runtime adapters hold one where their own reactor
//! must not be used ([`Reactor::from_helper`]). It is engaged only while a request of the
//! client waits (otherwise it sleeps on a condition variable, watching nothing), and it ends
//! when the client goes.
//!
//! It comes in three kinds ([`HelperKind`]):
//!
//! - [`HelperKind::Private`]: a private non-blocking description (the blocking client's
//!   default). The thread waits with `poll(2)`; the driver reads and writes the descriptor
//!   itself.
//! - [`HelperKind::Shared`]: the description of an inherited pipe that make and its other
//!   children share, used as it is where no private reopen exists (macOS, the BSDs). Its
//!   flags are never changed. One thread waits with `poll(2)` and tells the driver, which
//!   reads if it still wants a token: directly while the description is non-blocking (as
//!   make 4.3 and later leave it), otherwise by asking a second thread, the only one that
//!   ever reads a blocking shared description (a read that another process beat to the byte
//!   blocks there, never on a runtime thread). A byte that arrives when nobody wants it any
//!   more is written straight back: the exact byte.
//! - [`HelperKind::Exclusive`] (Linux): a private non-blocking description registered with
//!   `EPOLLEXCLUSIVE` in an epoll of the thread's own, only while a request waits, so that
//!   the kernel wakes one waiting process per token. The first read after a wake-up passes
//!   leftover tokens on ("read 2, write 1 back"), so none is stranded. See
//!   [`ClientOptions::exclusive_wakeups`](crate::ClientOptions::exclusive_wakeups).
//!
//! ```
//! # fn main() -> Result<(), jobserver_io::Error> {
//! use jobserver_io::thread::{HelperKind, HelperReactor};
//! use jobserver_io::ClientOptions;
//!
//! // The blocking client's reactor is a helper: here one that reads the description the
//! // pool's children get, as on a platform without /proc/self/fd.
//! let server = jobserver_io::Server::<HelperReactor>::new(2)?;
//! let options = ClientOptions::new().shared_description(true);
//! let client = jobserver_io::blocking::Client::from(server.client_with(&options)?);
//! let implicit = client.acquire()?;
//! let token = client.acquire()?; // read by the helper thread
//! drop((token, implicit));
//! assert_eq!(server.available().unwrap(), 1);
//! # let _ = HelperKind::Shared;
//! # Ok(())
//! # }
//! ```

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags};
use rustix::io::Errno;

use crate::driver::{count_lost, wake_catching, Filled, Reactor};
use crate::error::{Error, ErrorKind};
use crate::sys;

/// How long bytes the reader thread read for the driver are kept after the driver was told,
/// if it did not come for them, before they are written back. The driver handles a wake-up
/// in the oldest waiting request's task, which a busy runtime may poll a few milliseconds
/// later; a give-back before then costs that task a second wake-up.
const GIVE_BACK_GRACE: Duration = Duration::from_millis(20);

/// How long a caller waits for the reader thread to start a read it asked for, with bytes in
/// the pipe (the thread may have to be scheduled first on a busy machine).
const SERVE_START: Duration = Duration::from_millis(100);

/// How long the pipe may stay empty while the reader thread is in a read a caller asked for,
/// before the caller stops waiting: longer means another process took the bytes first and
/// the thread waits for the next one (a reader merely slow to return after draining the
/// pipe is the other explanation, hence some margin).
const SERVE_READ: Duration = Duration::from_millis(10);

/// Exclusive mode: how long after a wake-up that nobody here answered with a read the helper
/// waits before it passes a token still in the pipe on to the next exclusive waiter.
#[cfg(any(target_os = "linux", target_os = "android"))]
const RELAY_DELAY: Duration = Duration::from_millis(10);

/// The most bytes read at once by a helper (the driver asks for at most 128).
const READ_MAX: usize = 256;

/// What a [`HelperReactor`] waits on, and who reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HelperKind {
    /// A private non-blocking description; the thread waits with `poll(2)` and the driver
    /// reads and writes the descriptor itself.
    Private,
    /// The description shared with other processes, exactly as it is (possibly blocking):
    /// one thread waits with `poll(2)`, another makes every read that could block.
    Shared,
    /// A private non-blocking description in an `EPOLLEXCLUSIVE` epoll of the thread's own
    /// (Linux): one process woken per token, leftover tokens passed on.
    Exclusive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Sleeping on the condition variable, or between steps.
    Idle,
    /// In `poll` or `epoll_wait`.
    Waiting,
    /// Calling the driver's waker.
    Waking,
}

#[derive(Debug)]
struct State {
    /// Whom to wake at the next readability: set exactly while the driver waits for it
    /// (`poll_read` returned `Pending`, or a short read that armed).
    waker: Option<Waker>,
    /// Shared mode: bytes the driver asked the reader thread to read (0: none).
    request: usize,
    /// Bytes the reader thread read (shared mode) or that could not be relayed (exclusive
    /// mode), not taken by the driver yet. They are tokens: given to the driver, or
    /// written back.
    held: Vec<u8>,
    /// A read found end-of-file (sticky).
    eof: bool,
    /// A read failed (sticky).
    error: Option<(io::ErrorKind, String)>,
    /// What the waiting thread does.
    phase: Phase,
    /// Shared mode: since when the reader thread is in `read`.
    reading: Option<Instant>,
    /// Shared mode: the reader thread got something; the driver is to be told.
    need_wake: bool,
    /// Shared mode: reads the reader thread finished so far (held bytes belong to the last).
    reads: u64,
    /// Shared mode: callers waiting in `poll_read` for a read they asked for (held bytes
    /// are theirs to take).
    sync_waiters: usize,
    /// Calls of `poll_read` so far: tells a helper whether the driver looked after a wake.
    polls: u64,
    /// Threads waiting on `work` and on `done`: a condition variable is only notified when
    /// someone waits on it (std's notify makes a system call even when nobody does).
    work_waiters: usize,
    done_waiters: usize,
    /// Exclusive mode: the kernel woke this process for the jobserver and no read has passed
    /// the wake-up on yet. Only then may tokens left in the pipe have nobody awake to take
    /// them; reads that did not follow a wake-up need no relay.
    woken: bool,
    stop: bool,
}

struct Inner {
    kind: HelperKind,
    fd: OwnedFd,
    /// Where bytes go back: `None` when `fd` is also open for writing.
    back: Option<OwnedFd>,
    /// Exclusive mode: `back` is the same pipe as `fd`, so a byte written back wakes the
    /// next exclusive waiter (with `--jobserver-auth=R,W` naming two different pipes, as
    /// some tests do, relaying would only move tokens from one to the other).
    relays: bool,
    state: Mutex<State>,
    /// The helper threads wait here for something to do.
    work: Condvar,
    /// Callers and helpers wait here for each other: a read done, a `poll_read` made.
    done: Condvar,
    /// A byte here interrupts the waiting thread's `poll` or `epoll_wait`.
    nudge_read: OwnedFd,
    nudge_write: OwnedFd,
    #[cfg(any(target_os = "linux", target_os = "android"))]
    epoll: Option<OwnedFd>,
}

/// A [`Reactor`] whose waiting is done by a helper thread of its own; see the
/// [module docs](self).
///
/// As a `Reactor` made by [`Reactor::register`] it is [`HelperKind::Private`]: the reactor
/// of the blocking client. Clients make the other kinds when they need them and hand them
/// to their runtime's reactor through [`Reactor::from_helper`].
pub struct HelperReactor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for HelperReactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HelperReactor")
            .field("kind", &self.inner.kind)
            .finish_non_exhaustive()
    }
}

fn spawn(name: &str, inner: &Arc<Inner>, run: fn(&Inner)) -> Result<(), Error> {
    let inner = inner.clone();
    thread::Builder::new()
        .name(name.into())
        .spawn(move || run(&inner))
        .map(drop)
        .map_err(|e| Error::io("starting a jobserver helper thread", e))
}

impl HelperReactor {
    fn start(kind: HelperKind, fd: OwnedFd, back: Option<OwnedFd>) -> Result<Self, Error> {
        let (nudge_read, nudge_write) = sys::create_pipe()
            .map_err(|e| Error::io("creating the helper thread's wake-up pipe", e))?;
        // Our own pipe, shared with nobody.
        for end in [&nudge_read, &nudge_write] {
            sys::set_nonblocking(end.as_fd())
                .map_err(|e| Error::io("setting up the helper thread's wake-up pipe", e))?;
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let epoll = match kind {
            HelperKind::Exclusive => Some(exclusive_epoll(&nudge_read)?),
            _ => None,
        };
        let relays = kind == HelperKind::Exclusive && same_pipe(&fd, back.as_ref().unwrap_or(&fd));
        let inner = Arc::new(Inner {
            kind,
            fd,
            back,
            relays,
            state: Mutex::new(State {
                waker: None,
                request: 0,
                held: Vec::new(),
                eof: false,
                error: None,
                phase: Phase::Idle,
                reading: None,
                need_wake: false,
                reads: 0,
                sync_waiters: 0,
                polls: 0,
                work_waiters: 0,
                done_waiters: 0,
                woken: false,
                stop: false,
            }),
            work: Condvar::new(),
            done: Condvar::new(),
            nudge_read,
            nudge_write,
            #[cfg(any(target_os = "linux", target_os = "android"))]
            epoll,
        });
        // Made before the threads start: dropped on an error below, it stops those started.
        let reactor = HelperReactor { inner };
        match kind {
            HelperKind::Private => spawn("jobserver-poll", &reactor.inner, Inner::run_private)?,
            HelperKind::Shared => {
                spawn("jobserver-wait", &reactor.inner, Inner::run_shared_poller)?;
                spawn("jobserver-read", &reactor.inner, Inner::run_shared_reader)?;
            }
            HelperKind::Exclusive => {
                spawn("jobserver-excl", &reactor.inner, Inner::run_exclusive)?;
            }
        }
        Ok(reactor)
    }

    /// A helper on the description `read` of an inherited pipe, shared with other processes,
    /// used exactly as it is; `write` is where bytes nobody wants go back (a duplicate of the
    /// write end is fine).
    pub(crate) fn shared(read: OwnedFd, write: OwnedFd) -> Result<Self, Error> {
        Self::start(HelperKind::Shared, read, Some(write))
    }

    /// A helper with exclusive wake-ups on the private non-blocking description `read`;
    /// `write` is where relayed bytes go (`None` when `read` is open read-write).
    ///
    /// Fails with [`ErrorKind::Unsupported`] off Linux.
    pub(crate) fn exclusive(read: OwnedFd, write: Option<OwnedFd>) -> Result<Self, Error> {
        if cfg!(any(target_os = "linux", target_os = "android")) {
            Self::start(HelperKind::Exclusive, read, write)
        } else {
            drop((read, write));
            Err(Error::new(
                ErrorKind::Unsupported,
                "exclusive wake-ups need Linux's EPOLLEXCLUSIVE; leave \
                 ClientOptions::exclusive_wakeups off on this platform",
            ))
        }
    }

    /// What this helper waits on, and who reads.
    pub fn kind(&self) -> HelperKind {
        self.inner.kind
    }

    /// The start of every `poll_read`: the driver reads now, so it no longer waits for a
    /// wake-up (a waker left from before is dropped; returning `Pending` arms again).
    fn begin(&self) -> MutexGuard<'_, State> {
        let mut st = self.inner.lock();
        st.polls += 1;
        st.waker = None;
        self.inner.notify_done(&st);
        st
    }

    fn arm(&self, cx: &Context<'_>) {
        let mut st = self.inner.lock();
        st.waker = Some(cx.waker().clone());
        self.inner.notify_work(&st);
    }

    /// A read by the caller on a description that cannot block.
    fn read_direct(
        &self,
        cx: &Context<'_>,
        buf: &mut [u8],
        relay: bool,
    ) -> Poll<io::Result<Filled>> {
        let result = if relay {
            self.inner.read_relaying(buf)
        } else {
            sys::read(self.inner.fd.as_fd(), buf)
        };
        match result {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.arm(cx);
                Poll::Pending
            }
            // The pipe ran empty: the helper's wait is level-triggered, so arming now cannot
            // miss a byte that arrives in between.
            Ok(n) if n > 0 && n < buf.len() => {
                self.arm(cx);
                Poll::Ready(Ok(Filled {
                    len: n,
                    armed: true,
                }))
            }
            other => Poll::Ready(other.map(Filled::unarmed)),
        }
    }

    fn poll_shared(&self, cx: &Context<'_>, buf: &mut [u8]) -> Poll<io::Result<Filled>> {
        let inner = &*self.inner;
        let mut st = self.begin();
        if let Some(ready) = take_held(&mut st, cx, buf) {
            return Poll::Ready(ready);
        }
        drop(st);
        match sys::is_nonblocking(inner.fd.as_fd()) {
            // A read made now cannot block, whoever else reads this description.
            Ok(true) => return self.read_direct(cx, buf, false),
            Ok(false) => {}
            Err(e) => return Poll::Ready(Err(e)),
        }
        match readable_now(inner.fd.as_fd()) {
            // Nothing to read: the poller thread waits for readability and tells the driver.
            Ok(false) => {
                self.arm(cx);
                return Poll::Pending;
            }
            Ok(true) => {}
            Err(e) => return Poll::Ready(Err(e)),
        }
        // Bytes are there (or end-of-file): the reader thread reads them for us (a blocking
        // read may only happen there), and we wait a little for it.
        let mut st = inner.lock();
        st.request = st.request.max(buf.len());
        st.sync_waiters += 1;
        inner.notify_work(&st);
        let start = Instant::now();
        let mut empty_since = None;
        loop {
            if let Some(ready) = take_held(&mut st, cx, buf) {
                // The driver has what the read got: nobody needs to tell it again (and the
                // poller, which may be settling these bytes, learns that they are taken).
                if st.held.is_empty() {
                    st.need_wake = false;
                }
                st.sync_waiters -= 1;
                inner.notify_done(&st);
                return Poll::Ready(ready);
            }
            let gave_up = match st.reading {
                // A read with bytes in the pipe returns (however slowly the reader thread is
                // scheduled); one that finds the pipe empty for long waited for the next
                // byte: another process was first.
                Some(_) => match sys::bytes_available(inner.fd.as_fd()) {
                    Ok(0) | Err(_) => {
                        let since: &mut Instant = empty_since.get_or_insert_with(Instant::now);
                        since.elapsed() > SERVE_READ
                    }
                    Ok(_) => {
                        empty_since = None;
                        false
                    }
                },
                // Served, and nothing is left for us.
                None => st.request == 0,
            };
            if gave_up || start.elapsed() > SERVE_START {
                break;
            }
            st = inner.wait_done(st, Duration::from_micros(500));
        }
        // Not served in time: the reader's read completes later and the driver is told.
        st.sync_waiters -= 1;
        st.waker = Some(cx.waker().clone());
        inner.notify_work(&st);
        inner.notify_done(&st);
        Poll::Pending
    }

    /// Shared mode, for a server of ours without a private description: reads what can be
    /// had now without waiting for more (`WouldBlock` when nothing), as a non-blocking read
    /// would. `Ok(0)` is end-of-file. A read the reader thread could not finish in time
    /// completes later, and its bytes, wanted by nobody, go back to the pipe.
    pub(crate) fn read_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        let cx = Context::from_waker(Waker::noop());
        let result = match self.poll_shared(&cx, buf) {
            Poll::Ready(Ok(filled)) => Ok(filled.len),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        };
        // Nobody is to be woken: the caller does not wait.
        self.inner.lock().waker = None;
        result
    }

    fn poll_exclusive(&self, cx: &Context<'_>, buf: &mut [u8]) -> Poll<io::Result<Filled>> {
        let mut st = self.begin();
        if let Some(ready) = take_held(&mut st, cx, buf) {
            return Poll::Ready(ready);
        }
        let relay = st.woken && self.inner.relays;
        drop(st);
        let ready = self.read_direct(cx, buf, relay);
        if relay {
            // Passed on (or nothing was left to pass on).
            let mut st = self.inner.lock();
            st.woken = false;
            self.inner.notify_done(&st);
        }
        ready
    }
}

/// Whether `a` and `b` are descriptions of the same pipe (or fifo).
fn same_pipe(a: &OwnedFd, b: &OwnedFd) -> bool {
    match (rustix::fs::fstat(a), rustix::fs::fstat(b)) {
        (Ok(a), Ok(b)) => a.st_dev == b.st_dev && a.st_ino == b.st_ino,
        _ => false,
    }
}

/// Whether a read of `fd` would return at once (bytes, end-of-file or an error): a `poll`
/// with no timeout. On a description shared with other processes, another one may still
/// take the bytes before our read.
fn readable_now(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    loop {
        match poll(&mut fds, Some(&zero)) {
            Ok(_) => return Ok(!fds[0].revents().is_empty()),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn exclusive_epoll(nudge: &OwnedFd) -> Result<OwnedFd, Error> {
    use rustix::event::epoll;
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC)
        .map_err(|e| Error::io("creating the helper thread's epoll", e.into()))?;
    let ep =
        sys::above_stdio(ep).map_err(|e| Error::io("creating the helper thread's epoll", e))?;
    epoll::add(
        &ep,
        nudge,
        epoll::EventData::new_u64(NUDGE),
        epoll::EventFlags::IN,
    )
    .map_err(|e| Error::io("setting up the helper thread's epoll", e.into()))?;
    Ok(ep)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
const NUDGE: u64 = 1;
#[cfg(any(target_os = "linux", target_os = "android"))]
const JOBSERVER: u64 = 2;

/// What a helper already has for the driver: held bytes (into `buf`), or its sticky
/// end-of-file or error. `None` when there is nothing.
fn take_held(st: &mut State, cx: &Context<'_>, buf: &mut [u8]) -> Option<io::Result<Filled>> {
    if !st.held.is_empty() {
        let n = st.held.len().min(buf.len());
        buf[..n].copy_from_slice(&st.held[..n]);
        st.held.drain(..n);
        if n < buf.len() && !st.eof && st.error.is_none() {
            // Short: arm for the rest, as a short read does.
            st.waker = Some(cx.waker().clone());
            return Some(Ok(Filled {
                len: n,
                armed: true,
            }));
        }
        return Some(Ok(Filled::unarmed(n)));
    }
    if st.eof {
        return Some(Ok(Filled::unarmed(0)));
    }
    st.error
        .as_ref()
        .map(|(kind, message)| Err(io::Error::new(*kind, message.clone())))
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits on `work`, counted (see [`State::work_waiters`]).
    fn wait_work<'a>(&self, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        st.work_waiters += 1;
        let mut st = self.work.wait(st).unwrap_or_else(PoisonError::into_inner);
        st.work_waiters -= 1;
        st
    }

    /// Waits on `done` for at most `timeout`, counted (see [`State::work_waiters`]).
    fn wait_done<'a>(
        &self,
        mut st: MutexGuard<'a, State>,
        timeout: Duration,
    ) -> MutexGuard<'a, State> {
        st.done_waiters += 1;
        let mut st = self
            .done
            .wait_timeout(st, timeout)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
        st.done_waiters -= 1;
        st
    }

    fn notify_work(&self, st: &State) {
        if st.work_waiters > 0 {
            self.work.notify_all();
        }
    }

    fn notify_done(&self, st: &State) {
        if st.done_waiters > 0 {
            self.done.notify_all();
        }
    }

    /// Waits on `done` until `deadline`, or until `keep_waiting` is false.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn wait_done_until<'a>(
        &self,
        mut st: MutexGuard<'a, State>,
        deadline: Instant,
        keep_waiting: impl Fn(&State) -> bool,
    ) -> MutexGuard<'a, State> {
        while keep_waiting(&st) && !st.stop {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            st = self.wait_done(st, deadline - now);
        }
        st
    }

    fn nudge(&self) {
        // A full nudge pipe already holds a nudge.
        let _ = sys::write_byte(self.nudge_write.as_fd(), 0);
    }

    fn drain_nudge(&self) {
        let mut buf = [0u8; 64];
        while let Ok(n) = sys::read(self.nudge_read.as_fd(), &mut buf) {
            if n < buf.len() {
                break;
            }
        }
    }

    fn back_fd(&self) -> BorrowedFd<'_> {
        self.back.as_ref().map_or(self.fd.as_fd(), AsFd::as_fd)
    }

    /// Writes `bytes` back to the jobserver; returns how many went in.
    fn write_back(&self, bytes: &[u8]) -> usize {
        let mut written = 0;
        while written < bytes.len() {
            match rustix::io::write(self.back_fd(), &bytes[written..]) {
                Ok(0) => break,
                Ok(n) => written += n,
                Err(Errno::INTR) => continue,
                Err(_) => break,
            }
        }
        written
    }

    /// Writes held bytes that nobody took back; those that cannot be written stay held
    /// (they are tokens: the driver gets them at its next read, or the drop tries again).
    fn give_back(&self, mut st: MutexGuard<'_, State>) {
        if st.held.is_empty() {
            return;
        }
        let bytes = std::mem::take(&mut st.held);
        drop(st);
        let written = self.write_back(&bytes);
        if written < bytes.len() {
            let mut st = self.lock();
            let mut rest = bytes[written..].to_vec();
            rest.append(&mut st.held);
            st.held = rest;
        }
    }

    /// A non-blocking read into `buf` that passes leftover tokens on (exclusive mode, the
    /// first read after a wake-up): it asks for one byte more than wanted, and a byte more
    /// that comes is written back at once, which wakes the next exclusive waiter for the
    /// tokens still in the pipe.
    fn read_relaying(&self, buf: &mut [u8]) -> io::Result<usize> {
        let fd = self.fd.as_fd();
        let mut extra = None;
        let n = if buf.len() < READ_MAX {
            let mut scratch = [0u8; READ_MAX];
            let got = sys::read(fd, &mut scratch[..=buf.len()])?;
            if got > buf.len() {
                extra = Some(scratch[buf.len()]);
            }
            let n = got.min(buf.len());
            buf[..n].copy_from_slice(&scratch[..n]);
            n
        } else {
            let got = sys::read(fd, buf)?;
            if got == buf.len() {
                let mut one = [0u8; 1];
                if let Ok(1) = sys::read(fd, &mut one) {
                    extra = Some(one[0]);
                }
            }
            got
        };
        if let Some(byte) = extra {
            if self.write_back(&[byte]) == 0 {
                // Kept as a token of ours, not lost: the next read takes it first.
                self.lock().held.push(byte);
            }
        }
        Ok(n)
    }

    /// Waits with `poll(2)` for the jobserver or a nudge; true when the jobserver is
    /// readable (or the wait failed: the driver's read then reports the error).
    fn wait_readable(&self) -> bool {
        let mut fds = [
            PollFd::new(&self.fd, PollFlags::IN),
            PollFd::new(&self.nudge_read, PollFlags::IN),
        ];
        match poll(&mut fds, None) {
            Ok(_) => {}
            Err(Errno::INTR) => return false,
            Err(_) => return true,
        }
        if !fds[1].revents().is_empty() {
            self.drain_nudge();
        }
        !fds[0].revents().is_empty()
    }

    /// Wakes the driver if it waits (with the lock released) and returns the `poll_read`
    /// count from before, for telling whether the driver looked since.
    fn wake_driver(&self, mut st: MutexGuard<'_, State>) -> u64 {
        let polls = st.polls;
        let Some(waker) = st.waker.take() else {
            return polls;
        };
        st.phase = Phase::Waking;
        drop(st);
        // A panicking waker must not end this thread: nobody would watch the jobserver any
        // more, and waiting acquires would hang with tokens in it.
        wake_catching(waker);
        self.lock().phase = Phase::Idle;
        polls
    }

    /// Sleeps until the driver waits (a waker is armed), then marks the thread waiting;
    /// `false` when the thread must stop instead.
    fn wait_armed(&self) -> bool {
        let mut st = self.lock();
        while st.waker.is_none() && !st.stop {
            st = self.wait_work(st);
        }
        if st.stop {
            return false;
        }
        st.phase = Phase::Waiting;
        true
    }

    /// Private mode: the thread waits with `poll` while the driver waits, and wakes it.
    fn run_private(&self) {
        loop {
            if !self.wait_armed() {
                return;
            }
            let readable = self.wait_readable();
            let mut st = self.lock();
            st.phase = Phase::Idle;
            if st.stop {
                return;
            }
            if readable {
                self.wake_driver(st);
            }
        }
    }

    /// Shared mode, the waiting thread: `poll` while the driver waits, then wake it (the
    /// driver reads, or asks the reader thread to, if it still wants a token; nothing is
    /// read for a driver that no longer does); and tell the driver what the reader got.
    fn run_shared_poller(&self) {
        loop {
            let mut st = self.lock();
            loop {
                if st.stop {
                    return;
                }
                if st.need_wake || (st.waker.is_some() && st.reading.is_none() && st.request == 0) {
                    break;
                }
                st = self.wait_work(st);
            }
            if st.need_wake {
                st.need_wake = false;
                let reads = st.reads;
                let polls = self.wake_driver(st);
                self.settle_held(polls, reads);
                continue;
            }
            st.phase = Phase::Waiting;
            drop(st);
            let readable = self.wait_readable();
            let mut st = self.lock();
            st.phase = Phase::Idle;
            if st.stop {
                return;
            }
            // While a read is asked for or under way, its end tells the driver.
            if readable && !st.need_wake && st.reading.is_none() && st.request == 0 {
                self.wake_driver(st);
            }
        }
    }

    /// Shared mode, the reader thread: the only one that reads a blocking shared
    /// description. When another process took the bytes first, it waits in `read` for the
    /// next ones; nothing else waits for it.
    fn run_shared_reader(&self) {
        let mut buf = [0u8; READ_MAX];
        loop {
            let mut st = self.lock();
            while st.request == 0 && !st.stop {
                st = self.wait_work(st);
            }
            if st.stop {
                return;
            }
            let want = std::mem::take(&mut st.request).min(READ_MAX);
            st.reading = Some(Instant::now());
            drop(st);
            let result = sys::read(self.fd.as_fd(), &mut buf[..want]);
            let mut st = self.lock();
            st.reading = None;
            st.reads += 1;
            let got = match result {
                Ok(0) => {
                    st.eof = true;
                    true
                }
                Ok(n) => {
                    st.held.extend_from_slice(&buf[..n]);
                    true
                }
                // The description became non-blocking and another process was first.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
                Err(e) => {
                    st.error = Some((e.kind(), e.to_string()));
                    true
                }
            };
            st.need_wake |= got;
            let polling = st.phase == Phase::Waiting;
            self.notify_done(&st);
            self.notify_work(&st);
            drop(st);
            if polling {
                self.nudge();
            }
        }
    }

    /// After the driver was told of bytes the reader read (in read number `reads`): bytes it
    /// did not take go back. If it looked (called `poll_read`) since `polls_before`, it took
    /// what it wanted; if not, it gets [`GIVE_BACK_GRACE`] to come for them. Bytes of a later
    /// read, or with a read asked for or under way, are left for that read's own settling.
    fn settle_held(&self, polls_before: u64, reads: u64) {
        let mut st = self.lock();
        let deadline = Instant::now() + GIVE_BACK_GRACE;
        loop {
            if st.stop || st.held.is_empty() || st.reads != reads {
                break;
            }
            let timeout = if st.sync_waiters > 0 {
                // A caller that asked for this read takes the bytes (or leaves, and says so).
                Duration::from_millis(1)
            } else {
                let now = Instant::now();
                if st.polls != polls_before || now >= deadline {
                    break;
                }
                deadline - now
            };
            st = self.wait_done(st, timeout);
        }
        if st.stop || st.reads != reads || st.reading.is_some() || st.request > 0 {
            // Given back by the drop, or by the next settling.
            return;
        }
        self.give_back(st);
    }

    /// Exclusive mode: `epoll_wait` with the jobserver registered `EPOLLEXCLUSIVE` while the
    /// driver waits; then wake it, and pass the token on if nobody here reads.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn run_exclusive(&self) {
        use rustix::event::epoll;
        use std::mem::MaybeUninit;

        let Some(ep) = self.epoll.as_ref() else {
            return;
        };
        let mut registered = false;
        loop {
            if !self.wait_armed() {
                return;
            }
            // Into the pipe's wait queue only while the driver waits, and at its end: the
            // kernel wakes the exclusive waiter that queued first, so processes take turns.
            if !registered {
                let flags = epoll::EventFlags::IN | epoll::EventFlags::EXCLUSIVE;
                let data = epoll::EventData::new_u64(JOBSERVER);
                if let Err(e) = epoll::add(ep, &self.fd, data, flags) {
                    let e = io::Error::from(e);
                    let mut st = self.lock();
                    st.phase = Phase::Idle;
                    st.error = Some((
                        e.kind(),
                        format!("registering the jobserver with EPOLLEXCLUSIVE: {e}"),
                    ));
                    self.wake_driver(st);
                    return;
                }
                registered = true;
            }
            let mut events = [MaybeUninit::<epoll::Event>::uninit(); 2];
            let (mut readable, mut failed) = (false, false);
            match epoll::wait(ep, &mut events[..], None) {
                Ok((ready, _)) => {
                    for event in ready.iter() {
                        match event.data.u64() {
                            JOBSERVER => readable = true,
                            _ => self.drain_nudge(),
                        }
                    }
                }
                Err(Errno::INTR) => {}
                Err(_) => failed = true,
            }
            let mut st = self.lock();
            st.phase = Phase::Idle;
            if st.stop {
                return;
            }
            if failed {
                // The driver's read reports what is wrong, if anything.
                self.wake_driver(st);
                continue;
            }
            if !readable {
                continue;
            }
            let _ = epoll::delete(ep, &self.fd);
            registered = false;
            st.woken = true;
            self.wake_driver(st);
            self.relay_if_unanswered();
        }
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn run_exclusive(&self) {}

    /// Exclusive mode, after a wake-up: when no read passed it on (nobody here wants a token
    /// now: a request was cancelled), the kernel woke this process instead of another
    /// exclusive waiter. After [`RELAY_DELAY`], if a token is still in the pipe and still
    /// nobody here read, read one and write it back: the write wakes the next waiter.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn relay_if_unanswered(&self) {
        if !self.relays {
            return;
        }
        let st = self.lock();
        let deadline = Instant::now() + RELAY_DELAY;
        let mut st = self.wait_done_until(st, deadline, |st| st.woken);
        if !st.woken || st.stop {
            return;
        }
        st.woken = false;
        drop(st);
        if !matches!(sys::bytes_available(self.fd.as_fd()), Ok(n) if n > 0) {
            return;
        }
        let mut one = [0u8; 1];
        if let Ok(1) = sys::read(self.fd.as_fd(), &mut one) {
            if self.write_back(&one) == 0 {
                self.lock().held.push(one[0]);
            }
        }
    }
}

impl Drop for Inner {
    /// The last reference: the helpers have stopped. Bytes still held go back, the exact
    /// bytes; any that cannot be written are counted in [`crate::lost_tokens`].
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        let held = std::mem::take(&mut state.held);
        if !held.is_empty() {
            let written = self.write_back(&held);
            if written < held.len() {
                count_lost(held.len() - written);
            }
        }
    }
}

impl Reactor for HelperReactor {
    fn register(fd: OwnedFd) -> Result<Self, Error> {
        Self::start(HelperKind::Private, fd, None)
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.inner.fd.as_fd()
    }

    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<Filled>> {
        match self.inner.kind {
            // No bookkeeping here: a waker left from before at worst wakes the driver once
            // for nothing, and nothing else looks at `polls`.
            HelperKind::Private => self.read_direct(cx, buf, false),
            HelperKind::Shared => self.poll_shared(cx, buf),
            HelperKind::Exclusive => self.poll_exclusive(cx, buf),
        }
    }

    fn direct_io(&self) -> bool {
        self.inner.kind == HelperKind::Private
    }

    fn from_helper(helper: HelperReactor) -> Result<Self, Error> {
        Ok(helper)
    }
}

impl Drop for HelperReactor {
    fn drop(&mut self) {
        self.inner.lock().stop = true;
        self.inner.work.notify_all();
        self.inner.done.notify_all();
        // Interrupts a wait under way; the threads exit on their own (never joined here:
        // the last reference may be dropped on one of them, and in shared mode the reader
        // may be in a read that only the next byte ends, which is then written back).
        self.inner.nudge();
    }
}
