//! One token machine per jobserver per process.
//!
//! Every process started by a jobserver owns one implicit slot (PROTOCOL.md §2). If each
//! client had its own [`Machine`], `from_env()` called twice (or `Server::client()` twice)
//! would give the process two implicit slots, and it could run one job more than its share.
//! So every client of the same pool in the process shares one [`Shared`] state: one machine,
//! one implicit slot, one FIFO queue, one reader of the pipe.
//!
//! # How a pool is recognised
//!
//! By the identity of the file behind its read side: `st_dev` and `st_ino` of the pipe (an
//! anonymous pipe has an inode on the kernel's pipe filesystem, which every descriptor and
//! every reopen of it through `/proc/self/fd` shares) or of the fifo. While a client of the
//! pool lives, it keeps the pipe or fifo open, so the number cannot be reused by another
//! file meanwhile.
//!
//! # Clients of different runtimes
//!
//! A [`Shared`] is generic over its [`Reactor`]: a tokio client and a blocking client of the
//! same pool cannot share one. Each reactor type gets its own machine, but the implicit slot
//! is still counted once per pool: the first machine made for the pool counts it, and every
//! other machine of the pool is made [without it](Machine::without_implicit_slot) (each of
//! its units is a byte read from the pipe). When the machine that counts the slot goes away
//! (its last client and token are dropped), the slot passes to another live machine of the
//! pool ([`Machine::add_implicit_slot`]), so a process left with only the second machine does
//! not wait for a token it already owns. Requests on different runtimes queue separately, so
//! FIFO order holds within a runtime, not across them.
//!
//! The registry holds only weak references; an entry ends with its last machine.

use std::any::{Any, TypeId};
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use jobserver_proto::Machine;

use crate::driver::{Conn, Reactor, Shared};

/// The identity of a pool: device and inode of its pipe or fifo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PoolKey {
    dev: u64,
    ino: u64,
}

impl PoolKey {
    // `st_dev` and `st_ino` are `u64` on Linux but narrower or signed elsewhere.
    #[allow(clippy::useless_conversion)]
    fn of(fd: BorrowedFd<'_>) -> Option<PoolKey> {
        let stat = rustix::fs::fstat(fd).ok()?;
        Some(PoolKey {
            dev: u64::try_from(stat.st_dev).ok()?,
            ino: u64::try_from(stat.st_ino).ok()?,
        })
    }
}

/// What the registry needs of a [`Shared`], whatever its reactor type.
trait Member: Send + Sync + 'static {
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
    /// The pool's implicit slot now belongs to this machine.
    fn adopt_implicit_slot(&self);
}

impl<R: Reactor> Member for Shared<R> {
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }

    fn adopt_implicit_slot(&self) {
        // A failed write of the byte this frees is kept and reported by the driver, as for
        // any release.
        let _ = self.with(|state| state.machine.add_implicit_slot());
    }
}

struct Slot {
    id: u64,
    reactor: TypeId,
    shared: Weak<dyn Member>,
}

struct Entry {
    key: PoolKey,
    slots: Vec<Slot>,
    /// The machine that counts the pool's implicit slot. It stays set while that machine is
    /// being dropped (its weak reference is dead, but its [`Membership`] has not run yet),
    /// so that a machine made in between does not count the slot a second time.
    holder: Option<u64>,
}

/// Pools with at least one machine alive (or being dropped). A process has few, so a list.
static POOLS: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn pools() -> MutexGuard<'static, Vec<Entry>> {
    // Every change below is a single push, remove or assignment: a panic cannot leave an
    // entry half-updated, so a poisoned lock is used as it is.
    POOLS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A machine's place in the registry, kept in its [`Shared`] and dropped with it: leaves the
/// registry and passes the implicit slot on.
#[derive(Debug)]
pub(crate) struct Membership {
    key: PoolKey,
    id: u64,
}

impl Drop for Membership {
    fn drop(&mut self) {
        let mut pools = pools();
        let Some(at) = pools.iter().position(|e| e.key == self.key) else {
            return;
        };
        let entry = &mut pools[at];
        entry.slots.retain(|s| s.id != self.id);
        let mut heir = None;
        if entry.holder == Some(self.id) {
            entry.holder = None;
            for slot in &entry.slots {
                if let Some(shared) = slot.shared.upgrade() {
                    entry.holder = Some(slot.id);
                    heir = Some(shared);
                    break;
                }
            }
        }
        if entry.slots.is_empty() {
            pools.swap_remove(at);
        }
        // Never drop a `Shared` (or call into one) under the registry's lock: its own
        // membership would take the lock again.
        drop(pools);
        if let Some(heir) = heir {
            heir.adopt_implicit_slot();
        }
    }
}

/// The shared state for a new client: the live one of the same pool and reactor type when
/// there is one (then `conn` and `machine` are dropped unused), otherwise a new one made of
/// them, which counts the process's implicit slot only if no other machine of the pool does.
///
/// A client without a connection (only the implicit slot, no pool) gets a state of its own.
pub(crate) fn shared_for<R: Reactor>(machine: Machine, conn: Option<Conn<R>>) -> Arc<Shared<R>> {
    let Some(key) = conn.as_ref().and_then(|c| PoolKey::of(c.reader.fd())) else {
        return Shared::new(machine, conn);
    };
    let reactor = TypeId::of::<R>();
    // Declared before the guard, so that it is dropped after the lock is released.
    let mut found: Option<Arc<dyn Member>> = None;
    let mut pools = pools();
    let at = match pools.iter().position(|e| e.key == key) {
        Some(at) => at,
        None => {
            pools.push(Entry {
                key,
                slots: Vec::new(),
                holder: None,
            });
            pools.len() - 1
        }
    };
    let entry = &mut pools[at];
    for slot in entry.slots.iter().filter(|s| s.reactor == reactor) {
        if let Some(shared) = slot.shared.upgrade() {
            found = Some(shared);
            break;
        }
    }
    if let Some(shared) = found.take() {
        drop(pools);
        if let Ok(shared) = shared.into_any().downcast::<Shared<R>>() {
            return shared;
        }
        // Unreachable: the slot's reactor type is `R`. Fall back to a state of its own,
        // without the implicit slot, which is counted once whatever happens.
        return Shared::new(machine.without_implicit_slot(), conn);
    }
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let counts_slot = entry.holder.is_none();
    let machine = if counts_slot {
        entry.holder = Some(id);
        machine
    } else {
        machine.without_implicit_slot()
    };
    let shared = Shared::new(machine, conn);
    let weak: Weak<dyn Member> = Arc::downgrade(&shared) as Weak<dyn Member>;
    entry.slots.push(Slot {
        id,
        reactor,
        shared: weak,
    });
    let _ = shared.membership.set(Membership { key, id });
    drop(pools);
    shared
}
