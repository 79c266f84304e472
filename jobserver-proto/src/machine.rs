//! The token state machine of one jobserver client process.
//!
//! See [`Machine`] for the contract and the order in which an adapter calls it.

use std::collections::VecDeque;
use std::fmt;
use std::io::ErrorKind;

/// Marks an unused link in the waiter list.
const NIL: u32 = u32::MAX;

/// The byte a server preloads and the byte written for a token of unknown origin.
///
/// The machine itself never invents bytes: it only ever writes back bytes it read.
pub const DEFAULT_TOKEN_BYTE: u8 = b'+';

/// The most units one request may ask for: `u32::MAX` (or `usize::MAX` where that is
/// smaller).
///
/// No jobserver can hold that many tokens: a pipe holds at most 2^31 bytes on Linux (and far
/// fewer without `F_SETPIPE_SZ`), so a larger request could never be met. Such a request
/// fails at once with [`Failure::TooMany`] instead of waiting forever, and the bound keeps
/// every count of the machine far from overflow. A request that would push the total demand
/// of the queued requests past `usize::MAX` fails the same way.
pub const MAX_UNITS: usize = if usize::BITS > u32::BITS {
    u32::MAX as usize
} else {
    usize::MAX
};

/// Identifies one pending request in a [`Machine`].
///
/// Ids are small and dense: [`WaiterId::index`] is a good key for a side table (an adapter
/// keeps its wakers there). A stale id (one whose request was already settled) is recognised
/// by its generation and ignored by every method that takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WaiterId {
    slot: u32,
    generation: u32,
}

impl WaiterId {
    /// A dense index, below the number of requests that were ever pending at once.
    pub fn index(self) -> usize {
        self.slot as usize
    }

    /// The id as one number, unique among the ids of one machine (slot and generation), for
    /// an adapter that keeps an id in an atomic.
    pub fn to_bits(self) -> u64 {
        (u64::from(self.slot) << 32) | u64::from(self.generation)
    }

    /// The id whose [`WaiterId::to_bits`] is `bits`. A number that no live request of the
    /// machine has is a stale id, which every method that takes an id ignores.
    pub fn from_bits(bits: u64) -> WaiterId {
        WaiterId {
            slot: (bits >> 32) as u32,
            generation: bits as u32,
        }
    }
}

/// Permission to run `units` jobs, handed out by [`Machine::take_outcome`].
///
/// A permit is not a byte: the bytes stay inside the machine, which keeps exactly as many as
/// the process needs beyond its implicit slot. A permit must be handed back with
/// [`Machine::release`] (to the machine that issued it); forgetting it keeps its tokens out
/// of the pool for the life of the process.
#[must_use = "a permit that is not released keeps its tokens out of the pool"]
#[derive(Debug, PartialEq, Eq)]
pub struct Permit {
    units: usize,
}

impl Permit {
    /// How many jobs this permit allows.
    pub fn units(&self) -> usize {
        self.units
    }

    /// Splits `units` off into a new permit, or gives `None` if this permit has fewer.
    pub fn split(&mut self, units: usize) -> Option<Permit> {
        if units > self.units {
            return None;
        }
        self.units = self.units.saturating_sub(units);
        Some(Permit { units })
    }

    /// Joins another permit into this one.
    pub fn merge(&mut self, other: Permit) {
        self.units = self.units.saturating_add(other.units);
    }
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// Reading the jobserver returned end-of-file: the server is gone.
    Eof,
    /// Reading the jobserver failed with this error.
    ReadError(ErrorKind),
    /// The process has no jobserver (only its implicit slot) and the request needs more than
    /// one token, so it could never be met.
    NoPipe,
    /// The request asked for more units than [`MAX_UNITS`], or for more than the queued
    /// requests' total demand can still grow by without overflow; the number is what it
    /// asked for. It could never be met, so it fails at once and is never queued.
    TooMany(usize),
    /// The adapter found the server gone although the pipe did not reach end-of-file (see
    /// [`Machine::handle_server_gone`]): no more tokens will come.
    ServerGone,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Eof => f.write_str(
                "the jobserver pipe reached end-of-file: the make (or other server) that owns it has exited",
            ),
            Failure::ReadError(kind) => write!(f, "reading a token from the jobserver failed: {kind}"),
            Failure::NoPipe => f.write_str(
                "more than one token was requested, but this process has no jobserver and only its implicit slot",
            ),
            Failure::TooMany(units) => write!(
                f,
                "{units} tokens were requested at once, more than any jobserver can hold (at most {MAX_UNITS} per request)",
            ),
            Failure::ServerGone => f.write_str(
                "the make (or other server) that owns the jobserver has exited, although its pipe is still open",
            ),
        }
    }
}

impl std::error::Error for Failure {}

/// What happened to a request, as told by [`Machine::take_outcome`].
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub enum Outcome {
    /// Still queued: wait for a [`Action::Grant`] or [`Action::Fail`] naming it.
    Pending,
    /// Granted; the request is settled and its id is no longer valid.
    Granted(Permit),
    /// Failed; the request is settled and its id is no longer valid.
    Failed(Failure),
    /// The id does not name a live request (already settled or cancelled).
    Unknown,
}

/// What to do with explicit tokens that a holder gives back while other local requests wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReleasePolicy {
    /// Write the byte back to the pipe at once, even when local requests wait (the default).
    ///
    /// Other processes that share the pool may have waited longer than our own requests, and
    /// they can only see a token that is in the pipe. Local requests then compete for it by
    /// reading, which costs a write and a read per hand-over.
    #[default]
    ReturnToPipe,
    /// Give the byte straight to the oldest local request when there is one.
    ///
    /// Cheaper (no system call) and lower latency inside one process, but while this process
    /// keeps finding work it can keep tokens from processes that wait on the pipe. The
    /// implicit slot and tokens nobody waits for are handled the same as with
    /// [`ReleasePolicy::ReturnToPipe`].
    HandOff,
}

/// An instruction from the machine that the adapter must carry out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Action {
    /// Try one non-blocking read of at most `max` bytes from the jobserver, then report the
    /// result with exactly one of [`Machine::handle_read`], [`Machine::handle_read_drained`],
    /// [`Machine::handle_would_block`],
    /// [`Machine::handle_eof`] or [`Machine::handle_read_error`].
    ///
    /// `max` never exceeds the tokens that waiting requests still lack, so the process never
    /// takes tokens from the pool that nobody asked for.
    Read {
        /// The most bytes to read.
        max: usize,
    },
    /// Write this byte to the jobserver. It is a byte this machine read earlier, unchanged.
    /// If the write fails, report it with [`Machine::handle_write_error`].
    Write(u8),
    /// This request was granted: wake whoever waits for it, who will collect a permit with
    /// [`Machine::take_outcome`].
    Grant(WaiterId),
    /// This request failed: wake whoever waits for it, who will collect the failure with
    /// [`Machine::take_outcome`].
    Fail(WaiterId, Failure),
}

/// Counters and gauges, for tests, diagnostics and shutdown reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Bytes read from the jobserver so far.
    pub bytes_read: u64,
    /// Bytes written back so far: handed out in [`Action::Write`] and not reported failed.
    pub bytes_written: u64,
    /// Write attempts reported failed by [`Machine::handle_write_error`] (a byte retried
    /// several times counts each time).
    pub write_failures: u64,
    /// Bytes given up by [`Machine::abandon_unwritten`]: their write back failed and the
    /// adapter stopped trying (a client going away). Each is a token lost to the pool.
    pub bytes_abandoned: u64,
    /// Bytes the adapter read itself (outside any [`Action::Read`]) and handed to the machine
    /// with [`Machine::adopt`].
    pub bytes_adopted: u64,
    /// Explicit token bytes the process holds now (those backing units in use).
    pub bytes_held: usize,
    /// Bytes whose write back failed, kept to be tried again at the next input.
    pub bytes_unwritten: usize,
    /// Units held by permits, including granted permits not yet collected.
    pub running: usize,
    /// Units promised to requests that still wait for the rest of their demand.
    pub reserved: usize,
    /// Requests waiting.
    pub waiting: usize,
    /// Units that waiting requests still lack.
    pub unmet: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadState {
    /// No read outstanding and no readiness wait armed.
    Idle,
    /// An [`Action::Read`] was handed out and its result is not in yet.
    InFlight,
    /// The last read would block; the adapter waits for readiness.
    Armed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pipe {
    /// Tokens beyond the implicit slot come from the pipe.
    Open,
    /// The pipe failed; only the implicit slot and bytes already held can be granted.
    Closed(Failure),
    /// There is no pipe: only the implicit slot.
    Absent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Free,
    Queued,
    Granted,
    Failed(Failure),
}

#[derive(Debug, Clone)]
struct Entry {
    generation: u32,
    state: State,
    want: usize,
    got: usize,
    prev: u32,
    /// Next in the queue while queued; next free entry while free.
    next: u32,
}

/// The token state machine for one process: the implicit slot, the explicit token bytes held,
/// and a FIFO queue of requests.
///
/// It performs no I/O. The adapter feeds it commands and events and carries out the
/// [`Action`]s it hands back.
///
/// # Calling order
///
/// 1. **Commands** from the application: [`acquire`](Self::acquire),
///    [`cancel`](Self::cancel), [`take_outcome`](Self::take_outcome),
///    [`take_partial`](Self::take_partial), [`release`](Self::release),
///    [`retry_writes`](Self::retry_writes), [`set_policy`](Self::set_policy).
/// 2. **Events** from the jobserver, each only in answer to an action:
///    [`handle_read`](Self::handle_read), [`handle_read_drained`](Self::handle_read_drained),
///    [`handle_would_block`](Self::handle_would_block),
///    [`handle_readable`](Self::handle_readable), [`handle_eof`](Self::handle_eof),
///    [`handle_read_error`](Self::handle_read_error),
///    [`handle_write_error`](Self::handle_write_error); and one that answers no action,
///    [`handle_server_gone`](Self::handle_server_gone).
/// 3. **Output**: after every command or event, call [`poll_action`](Self::poll_action) until
///    it returns `None` and carry out each action before the next command or event (the
///    single-mutation rule). Carrying out an action may produce an event; feed it, then keep
///    draining.
/// 4. **Getters** (`&self`): [`stats`](Self::stats), [`is_closed`](Self::is_closed),
///    [`failure`](Self::failure), [`has_pipe`](Self::has_pipe), [`policy`](Self::policy).
///
/// # Invariants
///
/// After every drained step:
/// - the process holds exactly `max(units in use - 1, 0)` explicit bytes, where units in use
///   are those of live permits plus those promised to queued requests: the first unit is the
///   implicit slot, every further unit is backed by one byte. So the implicit slot is never
///   written to the pipe, and a process never sits on a pool token that its implicit slot
///   could cover. A machine made [without the implicit
///   slot](Machine::without_implicit_slot) holds exactly one byte per unit in use;
/// - every byte written is a byte that was read (or adopted), unchanged, and each is written
///   at most once: bytes read + bytes adopted = bytes written + bytes held + bytes whose write
///   failed (those are kept and tried again, never dropped unless the adapter gives up on
///   them with [`Machine::abandon_unwritten`], which counts them);
/// - no count overflows: a request above [`MAX_UNITS`] fails at once, every other count is
///   bounded by the bytes held or by the queued demand, and the arithmetic saturates rather
///   than panic or wrap;
/// - requests are granted (or failed) strictly in the order they were made;
/// - a read asks for at most the units that queued requests still lack;
/// - a request is only ever woken by [`Action::Grant`] or [`Action::Fail`].
///
/// # Carrying out actions with other inputs in between
///
/// An adapter that shares the machine between threads may carry out an action after it has
/// released its lock, so that no system call runs under it, and feed the result later. The
/// machine is built for that:
/// - at most one [`Action::Read`] is outstanding: until its result comes in, no command or
///   event makes the machine ask for another, so one party reads at a time;
/// - commands and other events that come in while a read is outstanding are handled as
///   usual (tokens released meanwhile are granted or written back at once), and the read's
///   result is then applied to the queue as it is by then;
/// - an [`Action::Write`] counts as done when it is handed out; a failure reported later by
///   [`Machine::handle_write_error`] puts the byte back, whatever happened in between.
///
/// The property tests interleave every command with outstanding reads and late write
/// failures in this way.
#[derive(Debug, Clone)]
pub struct Machine {
    entries: Vec<Entry>,
    free_head: u32,
    head: u32,
    tail: u32,
    waiting: usize,
    unmet: usize,
    reserved: usize,
    running: usize,
    bytes: Vec<u8>,
    actions: VecDeque<Action>,
    read: ReadState,
    pipe: Pipe,
    policy: ReleasePolicy,
    bytes_read: u64,
    bytes_written: u64,
    write_failures: u64,
    bytes_abandoned: u64,
    bytes_adopted: u64,
    /// Bytes whose write failed; given back to `bytes` at the next settle.
    unwritten: Vec<u8>,
    /// Reading is paused after [`Machine::yield_partial`], until [`Machine::resume`] or until
    /// that request leaves the queue.
    paused: bool,
    /// Whether the process's implicit slot is counted in this machine (see
    /// [`Machine::without_implicit_slot`]).
    implicit: bool,
}

impl Default for Machine {
    fn default() -> Self {
        Machine::new()
    }
}

impl Machine {
    /// A machine for a process with a jobserver pipe and its implicit slot, with
    /// [`ReleasePolicy::ReturnToPipe`].
    pub fn new() -> Self {
        Machine::with_pipe(Pipe::Open)
    }

    /// A machine for a process without a jobserver: only the implicit slot, so it behaves as a
    /// semaphore with one permit and never asks for I/O. Requests for more than one unit fail
    /// with [`Failure::NoPipe`].
    pub fn implicit_only() -> Self {
        Machine::with_pipe(Pipe::Absent)
    }

    fn with_pipe(pipe: Pipe) -> Self {
        Machine {
            entries: Vec::new(),
            free_head: NIL,
            head: NIL,
            tail: NIL,
            waiting: 0,
            unmet: 0,
            reserved: 0,
            running: 0,
            bytes: Vec::new(),
            actions: VecDeque::new(),
            read: ReadState::Idle,
            pipe,
            policy: ReleasePolicy::default(),
            bytes_read: 0,
            bytes_written: 0,
            write_failures: 0,
            bytes_abandoned: 0,
            bytes_adopted: 0,
            unwritten: Vec::new(),
            paused: false,
            implicit: true,
        }
    }

    /// The same machine without the process's implicit slot (builder style): every unit it
    /// grants is backed by a byte read from the pipe.
    ///
    /// For a second machine on the same jobserver in one process, whose implicit slot is
    /// already counted by the first (two clients of the same pool that cannot share one
    /// machine, say on two different runtimes). The process then still runs at most one job
    /// without a token, never two. When the machine that counts the slot goes away, hand the
    /// slot to this one with [`Machine::add_implicit_slot`].
    ///
    /// Without a pipe as well ([`Machine::implicit_only`]), such a machine grants nothing
    /// until it is given the slot: its requests wait.
    pub fn without_implicit_slot(mut self) -> Self {
        self.implicit = false;
        self
    }

    /// Sets the release policy (builder style).
    pub fn with_policy(mut self, policy: ReleasePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Changes the release policy; it applies from the next release on.
    pub fn set_policy(&mut self, policy: ReleasePolicy) {
        self.policy = policy;
    }

    // ----- getters -----

    /// The release policy in force.
    pub fn policy(&self) -> ReleasePolicy {
        self.policy
    }

    /// Counters and gauges.
    pub fn stats(&self) -> Stats {
        Stats {
            bytes_read: self.bytes_read,
            bytes_written: self.bytes_written,
            write_failures: self.write_failures,
            bytes_abandoned: self.bytes_abandoned,
            bytes_adopted: self.bytes_adopted,
            bytes_held: self.bytes.len(),
            bytes_unwritten: self.unwritten.len(),
            running: self.running,
            reserved: self.reserved,
            waiting: self.waiting,
            unmet: self.unmet,
        }
    }

    /// True once the pipe failed (end-of-file, a read error, or the server found gone); see
    /// [`Machine::failure`].
    pub fn is_closed(&self) -> bool {
        matches!(self.pipe, Pipe::Closed(_))
    }

    /// Why the pipe is closed, if it is.
    pub fn failure(&self) -> Option<Failure> {
        match self.pipe {
            Pipe::Closed(failure) => Some(failure),
            _ => None,
        }
    }

    /// True if the process's implicit slot is counted in this machine: always, unless it was
    /// made [without it](Machine::without_implicit_slot) and not given it since.
    pub fn has_implicit_slot(&self) -> bool {
        self.implicit
    }

    /// True if this machine has a jobserver pipe (open or failed), false for
    /// [`Machine::implicit_only`].
    pub fn has_pipe(&self) -> bool {
        !matches!(self.pipe, Pipe::Absent)
    }

    /// The oldest waiting request: the one the next token goes to. An adapter that wakes one
    /// task when the jobserver becomes readable wakes this one's.
    pub fn oldest_waiter(&self) -> Option<WaiterId> {
        (self.head != NIL).then(|| WaiterId {
            slot: self.head,
            generation: self.entries[self.head as usize].generation,
        })
    }

    /// True while some request waits.
    pub fn has_waiters(&self) -> bool {
        self.head != NIL
    }

    /// How many requests wait (as [`Stats::waiting`], without building the whole `Stats`).
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    /// True while bytes whose write back failed wait to be written again (as
    /// [`Stats::bytes_unwritten`] > 0).
    pub fn has_unwritten(&self) -> bool {
        !self.unwritten.is_empty()
    }

    /// Units in use: those of live permits plus those promised to waiting requests. The
    /// implicit slot is free exactly when this is 0.
    pub fn units_in_use(&self) -> usize {
        self.running.saturating_add(self.reserved)
    }

    /// Bytes from the jobserver promised to the oldest request while it waits for the rest
    /// of its demand (the implicit slot, if promised to it, is not counted).
    pub fn partial_bytes(&self) -> usize {
        if self.head == NIL {
            return 0;
        }
        if self.running > 0 || !self.implicit {
            self.reserved
        } else {
            self.reserved.saturating_sub(1)
        }
    }

    /// True while the last read found the pipe empty and the adapter waits for readiness
    /// before the next ([`Machine::handle_readable`]): only then does a readiness matter.
    pub fn awaits_readiness(&self) -> bool {
        self.read == ReadState::Armed
    }

    /// True while an [`Action::Read`] was handed out and its result is not in yet: whoever
    /// carries it out reports back, and can act on a readiness that came in meanwhile.
    pub fn read_in_flight(&self) -> bool {
        self.read == ReadState::InFlight
    }

    /// True while reading is paused by [`Machine::yield_partial`].
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    // ----- commands -----

    /// Gives back the jobserver bytes promised to the oldest request ([`Machine::partial_bytes`])
    /// and pauses reading until [`Machine::resume`]; returns how many bytes go back (as
    /// [`Action::Write`]s). The request keeps its place, and the implicit slot if it was
    /// promised.
    ///
    /// This is the rule against hold-and-wait across processes: two processes that each
    /// collect a multi-token request from the same pool can each hold part of it and wait for
    /// the other for ever. An adapter with a clock calls this when the oldest request has held
    /// a partial grant for a while, and `resume` after a back-off (jittered, so that two
    /// processes do not retry in step). While paused, the oldest request is granted only
    /// when all it asks for is free at once (from tokens released locally); nothing is
    /// promised to it piecemeal.
    pub fn yield_partial(&mut self) -> usize {
        let give_back = self.partial_bytes();
        if give_back == 0 {
            return 0;
        }
        let slot = self.head;
        let entry = &mut self.entries[slot as usize];
        entry.got = entry.got.saturating_sub(give_back);
        self.reserved = self.reserved.saturating_sub(give_back);
        self.unmet = self.unmet.saturating_add(give_back);
        self.paused = true;
        let written_before = self.bytes_written;
        self.return_surplus();
        usize::try_from(self.bytes_written.saturating_sub(written_before)).unwrap_or(usize::MAX)
    }

    /// Ends the pause of [`Machine::yield_partial`]: reading (and collecting) start again.
    pub fn resume(&mut self) {
        if self.paused {
            self.paused = false;
            self.settle(false);
        }
    }

    /// Queues a request for `units` tokens, all or nothing.
    ///
    /// The request is granted in FIFO order. Units promised to it while it waits for the rest
    /// stay promised until it is granted, cancelled or fails. A request for zero units is
    /// granted when its turn comes.
    ///
    /// A request for more than [`MAX_UNITS`] (or one that would overflow the total demand)
    /// fails at once with [`Failure::TooMany`]: it is never queued, so it holds up nobody.
    pub fn acquire(&mut self, units: usize) -> WaiterId {
        // A request that queues behind others changes nothing a settle looks at but the
        // demand: the head and what is available stay as the last settle left them, so the
        // head still cannot be granted, and no byte becomes surplus. Only a read could be
        // due; the last settle already asked for one whenever it could be (a queued head
        // means demand), and looking again costs four comparisons.
        let behind = self.head != NIL && self.unwritten.is_empty();
        debug_assert!(
            !behind || self.head_waits(),
            "acquire behind an unsettled head"
        );
        let id = self.enqueue(units);
        if behind {
            self.read_if_due();
        } else {
            self.settle(false);
        }
        id
    }

    /// Allocates a request and queues it, or fails it at once; the first half of
    /// [`Machine::acquire`], which then settles.
    fn enqueue(&mut self, units: usize) -> WaiterId {
        let id = self.alloc(units);
        let unmet = self.unmet.checked_add(units).filter(|_| units <= MAX_UNITS);
        match unmet {
            None => self.set_failed(id.slot, Failure::TooMany(units)),
            Some(_) if units > 1 && self.pipe == Pipe::Absent => {
                self.set_failed(id.slot, Failure::NoPipe);
            }
            Some(unmet) => {
                self.link_tail(id.slot);
                self.waiting = self.waiting.saturating_add(1);
                self.unmet = unmet;
            }
        }
        id
    }

    /// Withdraws a request. Units promised or granted to it but not yet collected go back as if
    /// released (see [`ReleasePolicy`]): to the next request or to the pipe. Stale ids are
    /// ignored.
    pub fn cancel(&mut self, id: WaiterId) {
        let Some(slot) = self.live(id) else { return };
        match self.entries[slot as usize].state {
            State::Queued => {
                // Nothing promised to it: no byte becomes surplus, and what is available
                // stays as the last settle left it. Then only a new head can change
                // anything, and only if it can be given something now (see
                // `head_is_blocked`); a read can be due once a pause ends with its head.
                let quiet = self.entries[slot as usize].got == 0 && self.unwritten.is_empty();
                let was_head = slot == self.head;
                self.dequeue(slot);
                self.free(slot);
                if quiet && (!was_head || self.head_is_blocked()) {
                    debug_assert!(self.head == NIL || self.head_waits(), "unsettled head");
                    self.read_if_due();
                } else {
                    self.settle(true);
                }
            }
            State::Granted => {
                let units = self.entries[slot as usize].want;
                self.free(slot);
                self.running = self.running.saturating_sub(units);
                self.settle(true);
            }
            State::Failed(_) => self.free(slot),
            State::Free => {}
        }
    }

    /// True when `id` names a request that was granted and whose permit was not collected
    /// yet (with [`Machine::take_outcome`]).
    pub fn is_granted(&self, id: WaiterId) -> bool {
        self.live(id)
            .is_some_and(|slot| self.entries[slot as usize].state == State::Granted)
    }

    /// Collects the result of a request: a permit once it is granted, the failure once it
    /// failed. Either settles the request and retires its id.
    pub fn take_outcome(&mut self, id: WaiterId) -> Outcome {
        let Some(slot) = self.live(id) else {
            return Outcome::Unknown;
        };
        match self.entries[slot as usize].state {
            State::Queued => Outcome::Pending,
            State::Granted => {
                let units = self.entries[slot as usize].want;
                self.free(slot);
                Outcome::Granted(Permit { units })
            }
            State::Failed(failure) => {
                self.free(slot);
                Outcome::Failed(failure)
            }
            State::Free => Outcome::Unknown,
        }
    }

    /// Settles a request with whatever it has been promised so far, which may be fewer units
    /// than it asked for (even zero). Used for "take as many as are free now".
    pub fn take_partial(&mut self, id: WaiterId) -> Outcome {
        let Some(slot) = self.live(id) else {
            return Outcome::Unknown;
        };
        if self.entries[slot as usize].state != State::Queued {
            return self.take_outcome(id);
        }
        let got = self.dequeue(slot);
        self.running = self.running.saturating_add(got);
        self.free(slot);
        self.settle(false);
        Outcome::Granted(Permit { units: got })
    }

    /// Takes over a token byte that the adapter read from the jobserver itself, outside any
    /// [`Action::Read`], and returns a permit of one unit backed by it.
    ///
    /// An adapter with a fast path (one that reads a byte without the machine while no
    /// request waits) hands the byte over this way when the token must join the machine's
    /// accounting: to be passed on to a waiting request, split or merged. The byte is then
    /// the machine's as if it had read it: it is written back unchanged, exactly once, when
    /// no unit needs it (at once, if the implicit slot is free and can stand in for it). It
    /// is counted in [`Stats::bytes_adopted`], not in [`Stats::bytes_read`].
    pub fn adopt(&mut self, byte: u8) -> Permit {
        self.bytes_adopted = self.bytes_adopted.saturating_add(1);
        self.bytes.push(byte);
        self.running = self.running.saturating_add(1);
        self.settle(false);
        Permit { units: 1 }
    }

    /// Gives a permit's units back. Bytes beyond what the remaining units need go to the pipe
    /// (or, with [`ReleasePolicy::HandOff`], to waiting requests first); a freed implicit slot
    /// goes to the oldest waiting request.
    pub fn release(&mut self, permit: Permit) {
        self.running = self.running.saturating_sub(permit.units);
        if !self.hand_over(permit.units) {
            self.settle(true);
        }
    }

    /// The common hand-over under [`ReleasePolicy::HandOff`], without the general settle:
    /// the `units` just released are exactly what is free and exactly what the oldest
    /// request still wants, and it holds nothing yet. It is granted them, as `settle` would
    /// grant it, and `settle` would then do nothing more but grant the requests for zero
    /// units right behind it: nothing is left free for the next request or to write back,
    /// and no read is due (a settle never leaves the machine with
    /// demand, an idle read and an open pipe, unpaused; this only lowers the demand). Not
    /// with a closed pipe, where the settle fails the requests it cannot meet. Returns
    /// whether it applied.
    fn hand_over(&mut self, units: usize) -> bool {
        if self.policy != ReleasePolicy::HandOff
            || self.head == NIL
            || self.paused
            || !self.unwritten.is_empty()
            || matches!(self.pipe, Pipe::Closed(_))
        {
            return false;
        }
        let slot = self.head;
        let entry = &self.entries[slot as usize];
        if entry.got != 0 || entry.want != units || self.available() != units {
            return false;
        }
        self.dequeue(slot);
        self.running = self.running.saturating_add(units);
        let entry = &mut self.entries[slot as usize];
        entry.got = units;
        entry.state = State::Granted;
        let generation = entry.generation;
        self.actions
            .push_back(Action::Grant(WaiterId { slot, generation }));
        // Requests for zero units right behind it need nothing free: their turn has come.
        if self.head != NIL && self.entries[self.head as usize].want == 0 {
            self.grant_from_head();
        }
        true
    }

    // ----- events -----

    /// Bytes were read from the jobserver in answer to [`Action::Read`]. Each is a token; they
    /// are granted to waiting requests and any the process does not need are written back.
    /// An empty slice is the same as [`Machine::handle_eof`].
    pub fn handle_read(&mut self, bytes: &[u8]) {
        self.take_bytes(bytes, ReadState::Idle);
    }

    /// Like [`Machine::handle_read`], for a read that came back with fewer bytes than asked
    /// because the pipe ran empty, after which the adapter already waits for readiness (as
    /// after [`Machine::handle_would_block`]). No read is asked for until
    /// [`Machine::handle_readable`], which saves a read that could only find nothing.
    pub fn handle_read_drained(&mut self, bytes: &[u8]) {
        self.take_bytes(bytes, ReadState::Armed);
    }

    fn take_bytes(&mut self, bytes: &[u8], next: ReadState) {
        if bytes.is_empty() {
            self.handle_eof();
            return;
        }
        if self.read == ReadState::InFlight {
            self.read = next;
        }
        self.bytes_read = self
            .bytes_read
            .saturating_add(u64::try_from(bytes.len()).unwrap_or(u64::MAX));
        self.bytes.extend_from_slice(bytes);
        self.settle(false);
    }

    /// The read would block. The adapter now waits for the jobserver to become readable and
    /// then calls [`Machine::handle_readable`].
    pub fn handle_would_block(&mut self) {
        if self.read == ReadState::InFlight {
            self.read = ReadState::Armed;
        }
    }

    /// The jobserver became readable (or the adapter's wait ended for another reason). A new
    /// read is asked for if requests still wait.
    ///
    /// Also call it to force a read attempt now while a readiness wait is armed, as a
    /// non-blocking "try" does: an extra read that finds nothing costs one would-block.
    pub fn handle_readable(&mut self) {
        if self.read == ReadState::Armed {
            self.read = ReadState::Idle;
        }
        self.settle(false);
    }

    /// The read returned end-of-file: the server is gone. Waiting requests that cannot be met
    /// from the implicit slot and the bytes held fail with [`Failure::Eof`], and so will later
    /// ones.
    pub fn handle_eof(&mut self) {
        self.close(Failure::Eof);
    }

    /// The adapter found out, by other means than a read, that the server is gone: for
    /// example the make process that owns the jobserver exited, while the pipe stays open
    /// because this process (or a sibling) still holds a write end, so end-of-file never
    /// comes. Treated like end-of-file, with [`Failure::ServerGone`]: waiting requests that
    /// cannot be met from the implicit slot and the bytes held fail, and so will later ones;
    /// bytes promised to a failed request are written back, and releases keep writing.
    ///
    /// Unlike the other events it answers no action: feed it whenever the adapter finds out,
    /// between two drained steps and not while a read it asked for is under way. After the
    /// pipe has failed it changes nothing.
    pub fn handle_server_gone(&mut self) {
        self.close(Failure::ServerGone);
    }

    /// The read failed with an error other than would-block or interrupted. Treated like
    /// end-of-file, with [`Failure::ReadError`].
    pub fn handle_read_error(&mut self, kind: ErrorKind) {
        self.close(Failure::ReadError(kind));
    }

    /// The byte of an [`Action::Write`] could not be written. The token is not dropped: the
    /// machine keeps it ([`Stats::bytes_unwritten`]) and, at the next command or event, gives
    /// it to a waiting request or asks for the write again (once per input, so a pipe that
    /// stays full costs one failed write per input, never a loop). Each failure is counted in
    /// [`Stats::write_failures`].
    pub fn handle_write_error(&mut self, byte: u8) {
        self.bytes_written = self.bytes_written.saturating_sub(1);
        self.write_failures = self.write_failures.saturating_add(1);
        self.unwritten.push(byte);
    }

    /// Gives up on the bytes whose write back failed and returns how many there were. For an
    /// adapter that is going away after its last [`Machine::retry_writes`] failed too: the
    /// bytes can no longer be written by anyone, so each is a token lost to the pool. They
    /// are counted in [`Stats::bytes_abandoned`], so that bytes read = bytes written + bytes
    /// held + bytes unwritten + bytes abandoned still holds.
    pub fn abandon_unwritten(&mut self) -> usize {
        let lost = self.unwritten.len();
        self.unwritten.clear();
        self.bytes_abandoned = self
            .bytes_abandoned
            .saturating_add(u64::try_from(lost).unwrap_or(u64::MAX));
        lost
    }

    /// Hands the process's implicit slot to a machine made [without
    /// it](Machine::without_implicit_slot), because the machine that counted it is gone.
    /// From now on the first unit in use needs no byte: a byte held for it is surplus and
    /// goes to the oldest waiting request that lacks one, or back to the pipe. Does nothing
    /// when the machine already counts the slot.
    pub fn add_implicit_slot(&mut self) {
        if !self.implicit {
            self.implicit = true;
            self.settle(false);
        }
    }

    /// Tries again now to write back bytes whose write failed (an adapter calls it when it
    /// shuts down, for a last attempt). Does nothing when there are none.
    pub fn retry_writes(&mut self) {
        if !self.unwritten.is_empty() {
            self.settle(false);
        }
    }

    // ----- output -----

    /// True while [`Machine::poll_action`] has an action to hand out. An adapter that finds
    /// none after an input can skip its draining loop.
    #[inline]
    pub fn has_actions(&self) -> bool {
        !self.actions.is_empty()
    }

    /// The next action to carry out, if any. Drain until `None` after every input.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Like [`Machine::poll_action`], but only while the next action completes a request
    /// ([`Action::Grant`] or [`Action::Fail`], which need no I/O): at the first
    /// [`Action::Read`] or [`Action::Write`] it returns `None` and leaves that action, and
    /// those after it, to `poll_action`. For an adapter whose usual input ends in grants
    /// only: it hands those out without its I/O loop.
    #[inline]
    pub fn poll_completion(&mut self) -> Option<Action> {
        match self.actions.front()? {
            Action::Grant(_) | Action::Fail(..) => self.actions.pop_front(),
            Action::Read { .. } | Action::Write(_) => None,
        }
    }

    // ----- internals -----

    fn close(&mut self, failure: Failure) {
        self.read = ReadState::Idle;
        if self.pipe == Pipe::Open {
            self.pipe = Pipe::Closed(failure);
        }
        self.settle(false);
    }

    /// Brings the machine back to its invariants after any change.
    ///
    /// `released` is true when units were given back by a holder: under
    /// [`ReleasePolicy::ReturnToPipe`] surplus bytes go to the pipe before waiting requests
    /// can see them.
    fn settle(&mut self, released: bool) {
        // Bytes whose write failed are surplus bytes again: for a waiting request, or to write.
        if !self.unwritten.is_empty() {
            self.bytes.append(&mut self.unwritten);
        }
        if released && self.policy == ReleasePolicy::ReturnToPipe {
            self.return_surplus();
        }
        self.grant_from_head();
        self.return_surplus();
        self.read_if_due();
    }

    /// True when a settle could give the oldest request nothing now: there is none, or it
    /// wants some units and none is available. (With a closed pipe a settle would fail it
    /// instead, but no request is queued then: the settle that saw the pipe close failed
    /// them all.)
    fn head_is_blocked(&self) -> bool {
        self.head == NIL || (self.available() == 0 && self.entries[self.head as usize].want > 0)
    }

    /// True when the oldest request cannot be granted from what is available, as every
    /// settle leaves it: it still needs some units, and fewer than that are free (a settle
    /// promises what is free to it, or holds back while paused or without a pipe). The
    /// shortcuts that skip the settle rely on it; debug builds check it there.
    fn head_waits(&self) -> bool {
        let entry = &self.entries[self.head as usize];
        let need = entry.want.saturating_sub(entry.got);
        need > 0 && self.available() < need
    }

    /// Asks for a read when there is demand, the pipe is open, no read is under way or
    /// armed, and reading is not paused: the last step of every settle.
    fn read_if_due(&mut self) {
        if self.pipe == Pipe::Open && self.read == ReadState::Idle && self.unmet > 0 && !self.paused
        {
            self.read = ReadState::InFlight;
            self.actions.push_back(Action::Read { max: self.unmet });
        }
    }

    /// Units in use that must be backed by a byte: all but the first when the machine counts
    /// the implicit slot, all of them otherwise.
    fn backed(&self) -> usize {
        let in_use = self.running.saturating_add(self.reserved);
        in_use.saturating_sub(usize::from(self.implicit))
    }

    /// Units available without reading: the implicit slot if nothing uses it, plus held bytes
    /// that back no unit.
    fn available(&self) -> usize {
        let in_use = self.running.saturating_add(self.reserved);
        let implicit = usize::from(self.implicit && in_use == 0);
        (implicit + self.bytes.len()).saturating_sub(self.backed())
    }

    fn grant_from_head(&mut self) {
        while self.head != NIL {
            let slot = self.head;
            let entry = &self.entries[slot as usize];
            let need = entry.want.saturating_sub(entry.got);
            let available = self.available();
            let give = need.min(available);
            if give < need && self.pipe != Pipe::Open {
                // Nothing more will ever come from the pipe for this request.
                let wait_for_implicit = self.pipe == Pipe::Absent;
                if wait_for_implicit {
                    break;
                }
                let failure = self.failure().unwrap_or(Failure::Eof);
                self.dequeue(slot);
                self.set_failed(slot, failure);
                continue;
            }
            if give < need && self.paused {
                // Paused after giving a partial grant back: nothing piecemeal until resumed.
                break;
            }
            let entry = &mut self.entries[slot as usize];
            entry.got = entry.got.saturating_add(give);
            self.reserved = self.reserved.saturating_add(give);
            self.unmet = self.unmet.saturating_sub(give);
            if give < need {
                break;
            }
            let want = self.dequeue(slot);
            self.running = self.running.saturating_add(want);
            self.entries[slot as usize].state = State::Granted;
            let generation = self.entries[slot as usize].generation;
            self.actions
                .push_back(Action::Grant(WaiterId { slot, generation }));
        }
    }

    /// Takes a queued request out of the queue and out of the demand and promise counts.
    /// Returns the units that were promised to it.
    fn dequeue(&mut self, slot: u32) -> usize {
        if slot == self.head {
            // A pause is for the request that gave its partial grant back.
            self.paused = false;
        }
        let entry = &self.entries[slot as usize];
        let (want, got) = (entry.want, entry.got);
        self.unlink(slot);
        self.waiting = self.waiting.saturating_sub(1);
        self.unmet = self.unmet.saturating_sub(want.saturating_sub(got));
        self.reserved = self.reserved.saturating_sub(got);
        got
    }

    fn return_surplus(&mut self) {
        let keep = self.backed();
        while self.bytes.len() > keep {
            let byte = self.bytes.pop().unwrap_or(DEFAULT_TOKEN_BYTE);
            self.bytes_written = self.bytes_written.saturating_add(1);
            self.actions.push_back(Action::Write(byte));
        }
    }

    fn set_failed(&mut self, slot: u32, failure: Failure) {
        let entry = &mut self.entries[slot as usize];
        entry.state = State::Failed(failure);
        let id = WaiterId {
            slot,
            generation: entry.generation,
        };
        self.actions.push_back(Action::Fail(id, failure));
    }

    fn live(&self, id: WaiterId) -> Option<u32> {
        let entry = self.entries.get(id.slot as usize)?;
        (entry.generation == id.generation && entry.state != State::Free).then_some(id.slot)
    }

    fn alloc(&mut self, want: usize) -> WaiterId {
        let slot = if self.free_head != NIL {
            let slot = self.free_head;
            self.free_head = self.entries[slot as usize].next;
            slot
        } else {
            let slot = u32::try_from(self.entries.len())
                .ok()
                .filter(|&s| s != NIL)
                .expect("more than u32::MAX - 1 requests pending at once");
            self.entries.push(Entry {
                generation: 0,
                state: State::Free,
                want: 0,
                got: 0,
                prev: NIL,
                next: NIL,
            });
            slot
        };
        let entry = &mut self.entries[slot as usize];
        entry.state = State::Queued;
        entry.want = want;
        entry.got = 0;
        entry.prev = NIL;
        entry.next = NIL;
        WaiterId {
            slot,
            generation: entry.generation,
        }
    }

    fn free(&mut self, slot: u32) {
        let entry = &mut self.entries[slot as usize];
        entry.state = State::Free;
        entry.generation = entry.generation.wrapping_add(1);
        entry.want = 0;
        entry.got = 0;
        entry.prev = NIL;
        entry.next = self.free_head;
        self.free_head = slot;
    }

    fn link_tail(&mut self, slot: u32) {
        self.entries[slot as usize].prev = self.tail;
        self.entries[slot as usize].next = NIL;
        if self.tail == NIL {
            self.head = slot;
        } else {
            self.entries[self.tail as usize].next = slot;
        }
        self.tail = slot;
    }

    fn unlink(&mut self, slot: u32) {
        let (prev, next) = {
            let entry = &self.entries[slot as usize];
            (entry.prev, entry.next)
        };
        if prev == NIL {
            self.head = next;
        } else {
            self.entries[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.entries[next as usize].prev = prev;
        }
        self.entries[slot as usize].prev = NIL;
        self.entries[slot as usize].next = NIL;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small xorshift, so that a failing sequence replays from its seed.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// Releases `permit` and checks that the machine ends exactly as the general settle
    /// leaves it (every field compared); returns whether the hand-over shortcut applied.
    fn release_checked(m: &mut Machine, permit: Permit, seed: u64) -> bool {
        let mut general = m.clone();
        general.running = general.running.saturating_sub(permit.units);
        general.settle(true);
        let mut probe = m.clone();
        probe.running = probe.running.saturating_sub(permit.units);
        let handed_over = probe.hand_over(permit.units);
        m.release(permit);
        assert_eq!(format!("{m:?}"), format!("{general:?}"), "seed {seed}");
        handed_over
    }

    /// Collects the outcome of every request in `ids`: granted permits move to `permits`,
    /// failed requests are dropped, pending ones stay.
    fn collect(m: &mut Machine, ids: &mut Vec<WaiterId>, permits: &mut Vec<Permit>) {
        ids.retain(|&id| match m.take_outcome(id) {
            Outcome::Granted(permit) => {
                permits.push(permit);
                false
            }
            Outcome::Pending => true,
            _ => false,
        });
    }

    /// `release` with the hand-over shortcut leaves the machine exactly as the general
    /// settle does (every field compared), over random sequences of requests, releases,
    /// cancels, reads, would-blocks and policy switches; and the shortcut is taken.
    #[test]
    fn hand_over_is_the_settle_it_replaces() {
        let mut shortcuts = 0;
        for seed in 1..=300u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut m = Machine::new().with_policy(ReleasePolicy::HandOff);
            let mut ids = Vec::new();
            let mut permits: Vec<Permit> = Vec::new();
            for _ in 0..200 {
                while let Some(action) = m.poll_action() {
                    if let Action::Read { .. } = action {
                        match rng.below(3) {
                            0 => m.handle_would_block(),
                            _ => {
                                let n = 1 + rng.below(3) as usize;
                                m.handle_read(&b"+a+"[..n]);
                            }
                        }
                    }
                }
                match rng.below(7) {
                    // Mostly one or two units; now and then zero, which the hand-over must
                    // not leave waiting behind the request it grants.
                    0 | 1 => {
                        let units = match rng.below(8) {
                            0 => 0,
                            1..=3 => 2,
                            _ => 1,
                        };
                        ids.push(m.acquire(units));
                    }
                    2 if !ids.is_empty() => {
                        let id = ids.swap_remove(rng.below(ids.len() as u64) as usize);
                        m.cancel(id);
                    }
                    3 | 4 if !permits.is_empty() => {
                        let permit = permits.swap_remove(rng.below(permits.len() as u64) as usize);
                        if release_checked(&mut m, permit, seed) {
                            shortcuts += 1;
                        }
                    }
                    5 => m.handle_readable(),
                    _ => {}
                }
                collect(&mut m, &mut ids, &mut permits);
            }
        }
        assert!(shortcuts > 100, "the shortcut was taken {shortcuts} times");
    }

    /// The three shortcuts leave the machine exactly as the general path does (every field
    /// compared): `acquire` behind a queued request, which only looks whether a read is
    /// due; `cancel` of a request promised nothing, which settles only when its removal
    /// unblocks a new head; and `release`, with the hand-over under `HandOff`. After every
    /// input, a settle would change nothing (but for bytes whose write failed, which wait
    /// for the next input by design).
    ///
    /// The sequences mix both policies; machines with the implicit slot, without it (and
    /// given it later), and without a pipe; requests of 0-3 units and absurd ones; cancels,
    /// releases, adopted bytes and partial takes; reads answered at once, drained, refused
    /// (would-block) or left in flight across later inputs; write errors reported at once or
    /// after later inputs, retries and abandons; the partial-grant yield and resume; and
    /// end-of-file, a server gone or a read error near the end.
    #[test]
    fn shortcuts_are_the_general_path_they_replace() {
        let (mut behind, mut cancel_other, mut cancel_head, mut handed_over) = (0, 0, 0, 0);
        for seed in 1..=400u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let mut m = match seed % 5 {
                0 => Machine::implicit_only(),
                1 => Machine::new().without_implicit_slot(),
                _ => Machine::new(),
            };
            let mut ids = Vec::new();
            let mut permits: Vec<Permit> = Vec::new();
            // A read handed out and not answered yet, and writes not reported yet.
            let mut read_in_flight = false;
            let mut unreported: Vec<u8> = Vec::new();
            for step in 0..300 {
                while let Some(action) = m.poll_action() {
                    match action {
                        Action::Read { .. } => read_in_flight = true,
                        Action::Write(byte) => unreported.push(byte),
                        _ => {}
                    }
                }
                // Answer the read now, or leave it in flight for a later step.
                if read_in_flight && rng.below(4) != 0 {
                    read_in_flight = false;
                    let n = 1 + rng.below(3) as usize;
                    match rng.below(5) {
                        0 => m.handle_would_block(),
                        1 => m.handle_read_drained(&b"+a+"[..n]),
                        _ => m.handle_read(&b"+a+"[..n]),
                    }
                }
                // Report the writes now, or some of them after later inputs.
                if rng.below(3) != 0 {
                    for byte in std::mem::take(&mut unreported) {
                        if rng.below(6) == 0 {
                            m.handle_write_error(byte);
                        }
                    }
                }
                match rng.below(18) {
                    0..=4 => {
                        let units = match rng.below(20) {
                            0 => usize::MAX,
                            1 => 0,
                            r => 1 + (r % 3) as usize,
                        };
                        let mut general = m.clone();
                        general.enqueue(units);
                        general.settle(false);
                        if m.head != NIL && m.unwritten.is_empty() {
                            behind += 1;
                        }
                        ids.push(m.acquire(units));
                        assert_eq!(format!("{m:?}"), format!("{general:?}"), "seed {seed}");
                    }
                    5 if !ids.is_empty() => {
                        let id = ids.swap_remove(rng.below(ids.len() as u64) as usize);
                        let mut general = m.clone();
                        if let Some(slot) = general.live(id) {
                            if general.entries[slot as usize].state == State::Queued {
                                let quiet = general.entries[slot as usize].got == 0
                                    && general.unwritten.is_empty();
                                let was_head = slot == general.head;
                                general.dequeue(slot);
                                general.free(slot);
                                if quiet && !was_head {
                                    cancel_other += 1;
                                } else if quiet && general.head_is_blocked() {
                                    cancel_head += 1;
                                }
                                general.settle(true);
                            } else {
                                general.cancel(id);
                            }
                        }
                        m.cancel(id);
                        assert_eq!(format!("{m:?}"), format!("{general:?}"), "seed {seed}");
                    }
                    6 | 7 if !permits.is_empty() => {
                        let permit = permits.swap_remove(rng.below(permits.len() as u64) as usize);
                        if release_checked(&mut m, permit, seed) {
                            handed_over += 1;
                        }
                    }
                    8 => m.handle_readable(),
                    9 => permits.push(m.adopt(b'+')),
                    10 if !ids.is_empty() => {
                        let id = ids.swap_remove(rng.below(ids.len() as u64) as usize);
                        if let Outcome::Granted(permit) = m.take_partial(id) {
                            permits.push(permit);
                        }
                    }
                    11 => {
                        m.yield_partial();
                    }
                    12 => m.resume(),
                    13 => m.set_policy(if rng.below(2) == 0 {
                        ReleasePolicy::HandOff
                    } else {
                        ReleasePolicy::ReturnToPipe
                    }),
                    14 => m.retry_writes(),
                    15 if rng.below(4) == 0 => {
                        m.abandon_unwritten();
                    }
                    16 => m.add_implicit_slot(),
                    17 if step > 250 && rng.below(8) == 0 && !read_in_flight => {
                        match rng.below(3) {
                            0 => m.handle_eof(),
                            1 => m.handle_server_gone(),
                            _ => m.handle_read_error(ErrorKind::Other),
                        }
                    }
                    _ => {}
                }
                if m.unwritten.is_empty() {
                    let mut settled = m.clone();
                    settled.settle(false);
                    assert_eq!(format!("{m:?}"), format!("{settled:?}"), "seed {seed}");
                }
                // Collected at random moments, so that queues grow.
                if rng.below(3) == 0 {
                    collect(&mut m, &mut ids, &mut permits);
                }
            }
        }
        // Each shortcut is taken often enough to matter.
        assert!(behind > 5_000, "acquire behind a head: {behind}");
        assert!(
            cancel_other > 300,
            "cancel of a request behind the head: {cancel_other}"
        );
        assert!(cancel_head > 300, "cancel of a blocked head: {cancel_head}");
        assert!(handed_over > 300, "hand-over: {handed_over}");
    }
}
