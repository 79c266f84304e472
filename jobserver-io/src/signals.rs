//! Removing own fifos on fatal signals, as GNU make 4.4 does.
//!
//! A fifo pool's file is removed when the pool is dropped, but Ctrl-C (`SIGINT`) or a
//! `kill` (`SIGTERM`) ends the process without running destructors, and would leave it in
//! the temporary directory. So while a fifo pool lives, a handler for `SIGHUP`, `SIGINT`,
//! `SIGQUIT` and `SIGTERM` (make's own list of fatal signals, less the resource-limit
//! ones) removes every fifo the process still owns, then lets the signal do what it would
//! have done without us:
//!
//! - The handler is installed the first time a fifo pool is created, over whatever
//!   disposition the signal had then, and stays installed. A signal that is *ignored* then
//!   (`SIG_IGN`, as a shell leaves `SIGINT` for a background job) is left alone: it stays
//!   ignored, and the fifo is not removed for it.
//! - If the disposition it replaced was a handler (the application's own, or tokio's
//!   `signal` machinery), that handler is called next, with the same arguments: the
//!   application still decides what a Ctrl-C means. The fifo is gone by then; its open
//!   descriptors (this process's clients, running children) keep working, and only opening
//!   the path again fails.
//! - If it replaced the default action, the handler restores the default and raises the
//!   signal again, so the process dies of it as it would have (its exit status says so).
//!   But if someone installed a handler *over ours* since and calls ours in a chain (as
//!   `signal-hook` does, and so `tokio::signal`), that handler owns the signal now: ours only
//!   removes the fifos and returns.
//!
//! An application that installs a handler over ours without calling the one it replaced,
//! or resets the signal to its default, takes this cleanup away; so does `SIGKILL`.
//!
//! The handler is async-signal-safe: it calls only `getpid`, `unlink`, `sigaction` and
//! `raise`, on paths stored beforehand as C strings in a list that is only ever changed with
//! atomic operations (its nodes are never freed). A fifo is removed only by the process
//! that created it, never by a child forked from it that gets the signal before it execs.

use std::ffi::{c_char, c_int, c_void, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicUsize, Ordering};
use std::sync::Once;

/// The signals after which a fifo is removed.
const SIGNALS: [c_int; 4] = [libc::SIGHUP, libc::SIGINT, libc::SIGQUIT, libc::SIGTERM];

/// One fifo path in the list. Nodes are leaked on purpose: the handler may be reading any of
/// them at any time, so none is ever freed; a free one is reused.
struct Node {
    in_use: AtomicBool,
    /// The process that registered the path (a forked child must not remove it).
    pid: AtomicI32,
    /// The path, or null while the node is free (or the handler has taken it).
    path: AtomicPtr<c_char>,
    /// Set before the node is published, never changed after.
    next: *mut Node,
}

static HEAD: AtomicPtr<Node> = AtomicPtr::new(ptr::null_mut());

/// The disposition each of [`SIGNALS`] had before ours: its handler address and flags.
/// `SIG_IGN` means ours was not installed for it.
struct Previous {
    handler: AtomicUsize,
    flags: AtomicI32,
}

#[allow(clippy::declare_interior_mutable_const)]
const UNSET: Previous = Previous {
    handler: AtomicUsize::new(libc::SIG_IGN),
    flags: AtomicI32::new(0),
};
static PREVIOUS: [Previous; SIGNALS.len()] = [UNSET; SIGNALS.len()];

// SAFETY: `next` is written once, before the node is published, and only read after; the
// other fields are atomics.
unsafe impl Sync for Node {}

/// A fifo path registered for removal on a fatal signal; unregisters it when dropped (the
/// caller removes the file itself then).
pub(crate) struct RemoveOnSignal {
    node: &'static Node,
    /// The C string in `node.path`, owned by this guard unless a handler took it.
    path: *mut c_char,
}

impl std::fmt::Debug for RemoveOnSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoveOnSignal").finish_non_exhaustive()
    }
}

// SAFETY: `path` is only dereferenced by `drop`, after an atomic exchange has made the guard
// its only owner; the node is `Sync`.
unsafe impl Send for RemoveOnSignal {}
// SAFETY: as above; no `&self` method touches the pointer.
unsafe impl Sync for RemoveOnSignal {}

impl RemoveOnSignal {
    /// Registers `path` (and installs the handlers the first time). `None` when the path
    /// cannot be a C string (it never contains a NUL byte when the fifo was created).
    pub(crate) fn register(path: &Path) -> Option<Self> {
        let path = CString::new(path.as_os_str().as_bytes()).ok()?.into_raw();
        install_handlers();
        let node = claim_node();
        node.pid.store(getpid(), Ordering::Relaxed);
        // Release: the handler that sees the path also sees the pid.
        node.path.store(path, Ordering::Release);
        Some(RemoveOnSignal { node, path })
    }
}

impl Drop for RemoveOnSignal {
    fn drop(&mut self) {
        let taken = self.node.path.compare_exchange(
            self.path,
            ptr::null_mut(),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        if taken.is_ok() {
            // SAFETY: the pointer came from `CString::into_raw` in `register`, and the
            // exchange made this the only owner: the handler can no longer see it.
            drop(unsafe { CString::from_raw(self.path) });
        }
        // Otherwise a handler took the path (and may still be using it): leaked, once.
        self.node.in_use.store(false, Ordering::Release);
    }
}

fn getpid() -> i32 {
    // SAFETY: getpid has no preconditions and cannot fail.
    unsafe { libc::getpid() }
}

/// A free node of the list, or a new one pushed onto it.
fn claim_node() -> &'static Node {
    let mut at = HEAD.load(Ordering::Acquire);
    while !at.is_null() {
        // SAFETY: nodes are never freed, and `at` came from the list.
        let node = unsafe { &*at };
        if node
            .in_use
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            return node;
        }
        at = node.next;
    }
    let node = Box::into_raw(Box::new(Node {
        in_use: AtomicBool::new(true),
        pid: AtomicI32::new(0),
        path: AtomicPtr::new(ptr::null_mut()),
        next: ptr::null_mut(),
    }));
    let mut head = HEAD.load(Ordering::Acquire);
    loop {
        // SAFETY: `node` is ours alone until the exchange below publishes it.
        unsafe { (*node).next = head };
        match HEAD.compare_exchange_weak(head, node, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => break,
            Err(now) => head = now,
        }
    }
    // SAFETY: published and never freed.
    unsafe { &*node }
}

fn install_handlers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for (i, &sig) in SIGNALS.iter().enumerate() {
            install(i, sig);
        }
    });
}

/// Installs [`on_signal`] for `sig` unless it is ignored; a failure leaves it as it was.
fn install(i: usize, sig: c_int) {
    // SAFETY: a zeroed `sigaction` is a valid value (SIG_DFL, no flags, empty mask), and the
    // calls only read and write the structures passed.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(sig, ptr::null(), &mut old) != 0 || old.sa_sigaction == libc::SIG_IGN {
            return;
        }
        PREVIOUS[i].flags.store(old.sa_flags, Ordering::Relaxed);
        PREVIOUS[i]
            .handler
            .store(old.sa_sigaction, Ordering::Release);
        let mut new: libc::sigaction = std::mem::zeroed();
        new.sa_sigaction = on_signal as *const () as usize;
        let chained = old.sa_sigaction != libc::SIG_DFL;
        // Keep what the replaced handler asked for: restarting system calls, and the signals
        // blocked while it runs. For the default action, restart (it ends the process).
        new.sa_flags = libc::SA_SIGINFO
            | libc::SA_ONSTACK
            | if chained {
                old.sa_flags & libc::SA_RESTART
            } else {
                libc::SA_RESTART
            };
        if chained {
            new.sa_mask = old.sa_mask;
        } else {
            libc::sigemptyset(&mut new.sa_mask);
        }
        let mut replaced: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(sig, &new, &mut replaced) != 0 {
            PREVIOUS[i].handler.store(libc::SIG_IGN, Ordering::Release);
            return;
        }
        if replaced.sa_sigaction != old.sa_sigaction {
            // Another thread changed it in between: chain to what was really replaced.
            PREVIOUS[i]
                .flags
                .store(replaced.sa_flags, Ordering::Relaxed);
            PREVIOUS[i]
                .handler
                .store(replaced.sa_sigaction, Ordering::Release);
        }
    }
}

/// Where `errno` lives, to leave it as the interrupted code had it.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn errno_location() -> Option<*mut c_int> {
    // SAFETY: returns the calling thread's errno address; async-signal-safe.
    Some(unsafe { libc::__errno_location() })
}

/// Where `errno` lives, to leave it as the interrupted code had it.
#[cfg(any(
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "dragonfly"
))]
fn errno_location() -> Option<*mut c_int> {
    // SAFETY: returns the calling thread's errno address; async-signal-safe.
    Some(unsafe { libc::__error() })
}

/// Where `errno` lives: unknown here, so it is not restored (`unlink` rarely fails anyway).
#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "dragonfly"
)))]
fn errno_location() -> Option<*mut c_int> {
    None
}

/// The handler: removes this process's fifos, then chains or re-raises (see the module).
extern "C" fn on_signal(sig: c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
    let errno = errno_location();
    // SAFETY: the location is the thread's errno.
    let saved = errno.map(|e| unsafe { *e });
    let pid = getpid();
    let mut at = HEAD.load(Ordering::Acquire);
    while !at.is_null() {
        // SAFETY: nodes are never freed, and `at` came from the list.
        let node = unsafe { &*at };
        // Acquire: a path seen comes with the pid stored before it.
        let seen = node.path.load(Ordering::Acquire);
        if !seen.is_null() && node.pid.load(Ordering::Relaxed) == pid {
            let path = node.path.swap(ptr::null_mut(), Ordering::AcqRel);
            if !path.is_null() {
                // SAFETY: a NUL-terminated string from `CString::into_raw`, which the
                // swap made ours: its guard will not free it.
                unsafe { libc::unlink(path) };
            }
        }
        at = node.next;
    }
    if let (Some(e), Some(saved)) = (errno, saved) {
        // SAFETY: as above.
        unsafe { *e = saved };
    }
    let Some(i) = SIGNALS.iter().position(|&s| s == sig) else {
        return;
    };
    let handler = PREVIOUS[i].handler.load(Ordering::Acquire);
    let flags = PREVIOUS[i].flags.load(Ordering::Relaxed);
    if handler == libc::SIG_DFL {
        // SAFETY: only reads the current disposition into a zeroed structure.
        let ours = unsafe {
            let mut now: libc::sigaction = std::mem::zeroed();
            libc::sigaction(sig, ptr::null(), &mut now) == 0
                && now.sa_sigaction == on_signal as *const () as usize
        };
        if ours {
            // The default action, as if we had never been here: the process ends of `sig`
            // once this handler returns and the signal is unblocked.
            // SAFETY: plain calls with a valid structure.
            unsafe {
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigemptyset(&mut default.sa_mask);
                libc::sigaction(sig, &default, ptr::null_mut());
                libc::raise(sig);
            }
        }
        // Otherwise a handler installed over ours called us: it decides.
    } else if handler != libc::SIG_IGN {
        if flags & libc::SA_SIGINFO != 0 {
            // SAFETY: the replaced disposition was this three-argument handler
            // (SA_SIGINFO), called as the kernel would have called it.
            let f = unsafe {
                std::mem::transmute::<usize, extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void)>(
                    handler,
                )
            };
            f(sig, info, context);
        } else {
            // SAFETY: the replaced disposition was this one-argument handler.
            let f = unsafe { std::mem::transmute::<usize, extern "C" fn(c_int)>(handler) };
            f(sig);
        }
    }
}
