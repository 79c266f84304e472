//! What `/proc` tells about processes and threads: whether they are asleep, how many read
//! system calls a thread made, how many times threads blocked; and which CPUs a thread may
//! run on.

use std::fs;
use std::io;
use std::time::{Duration, Instant};

/// The state letters (`R`, `S`, `D`, ...) of every thread of `pid`.
///
/// # Errors
///
/// When `/proc/<pid>/task` cannot be read (the process is gone).
pub fn thread_states(pid: u32) -> io::Result<Vec<char>> {
    let mut states = Vec::new();
    for entry in fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = entry?.path().join("stat");
        let Ok(stat) = fs::read_to_string(&path) else {
            continue; // the thread exited in between
        };
        // "tid (comm) S ...": comm may hold spaces and parentheses; the state follows the last ')'.
        if let Some(state) = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].trim_start().chars().next())
        {
            states.push(state);
        }
    }
    Ok(states)
}

/// True when every thread of `pid` is in an interruptible sleep (`S`): blocked in `epoll_wait`,
/// `read`, `poll` or a futex, not running and not about to.
pub fn asleep(pid: u32) -> bool {
    thread_states(pid).is_ok_and(|s| !s.is_empty() && s.iter().all(|&c| c == 'S'))
}

/// Spins until every thread of every process in `pids` sleeps.
///
/// # Panics
///
/// When that takes longer than `timeout`: a child is stuck or spinning.
pub fn wait_asleep(pids: &[u32], timeout: Duration) {
    let start = Instant::now();
    while !pids.iter().all(|&pid| asleep(pid)) {
        if start.elapsed() > timeout {
            let states: Vec<_> = pids.iter().map(|&p| (p, thread_states(p))).collect();
            panic!("children did not go to sleep within {timeout:?}: {states:?}");
        }
        std::hint::spin_loop();
    }
}

/// Read-family system calls the calling thread made so far (`syscr` in
/// `/proc/thread-self/io`), including those that failed with `EAGAIN`. Reading the file
/// costs a few read calls of its own: take the difference of two calls with nothing in
/// between to calibrate.
///
/// # Errors
///
/// When the file is missing (a kernel without task I/O accounting).
pub fn thread_read_syscalls() -> io::Result<u64> {
    let io = fs::read_to_string("/proc/thread-self/io")?;
    io.lines()
        .find_map(|l| l.strip_prefix("syscr:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io::Error::other("no syscr in /proc/thread-self/io"))
}

/// Times the threads of `pid` blocked of their own accord (summed
/// `voluntary_ctxt_switches`): each sleep that a wake-up ended counts one.
///
/// # Errors
///
/// When `/proc/<pid>/task` cannot be read.
pub fn voluntary_switches(pid: u32) -> io::Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(format!("/proc/{pid}/task"))? {
        let Ok(status) = fs::read_to_string(entry?.path().join("status")) else {
            continue;
        };
        total += status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(total)
}

/// The CPUs the calling thread may run on.
///
/// # Errors
///
/// When `sched_getaffinity` fails.
pub fn affinity() -> io::Result<rustix::thread::CpuSet> {
    Ok(rustix::thread::sched_getaffinity(None)?)
}

/// Restricts the calling thread to `cpus` (processes it spawns inherit that).
///
/// # Errors
///
/// When `sched_setaffinity` fails (for example, a CPU that is not online).
pub fn set_affinity(cpus: &rustix::thread::CpuSet) -> io::Result<()> {
    Ok(rustix::thread::sched_setaffinity(None, cpus)?)
}

/// A set of just `cpu`.
pub fn only_cpu(cpu: usize) -> rustix::thread::CpuSet {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    set
}

/// The CPUs the calling thread may run on, in order.
///
/// # Errors
///
/// When `sched_getaffinity` fails.
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    let set = affinity()?;
    Ok((0..rustix::thread::CpuSet::MAX_CPU)
        .filter(|&c| set.is_set(c))
        .collect())
}
