//! Support shared by the benchmarks in `benches/benches/` and by `bench-child`, the helper
//! process that the cross-process benchmarks spawn.
//!
//! Every benchmark reports its key figure as a ratio to a reference measured in the same run
//! and interleaved with it: this machine's absolute times drift by tens of percent between
//! runs, while paired ratios stay within a few percent.
//!
//! - [`harness`]: the criterion configuration (with a smoke mode, `BENCH_SMOKE=1`), the
//!   [`Paired`] recorder that runs ours and the reference in every criterion sample, and the
//!   [`Results`] file each bench writes under `target/bench-results/` for `scripts/bench.sh`.
//! - [`pool`]: a jobserver pool (an anonymous pipe or a fifo) whose descriptors the benches
//!   hold themselves, so they can write tokens and do the raw reference reads and writes.
//! - [`counting`]: a [`Reactor`](jobserver_io::Reactor) wrapper that counts reads, would-blocks
//!   and readiness wake-ups, and a future wrapper that counts task wake-ups.
//! - [`procfs`]: thread states, read system calls and context switches from `/proc`.
//! - [`child`]: the record format spoken between a bench and `bench-child`.
#![cfg(target_os = "linux")]

pub mod child;
pub mod counting;
pub mod harness;
pub mod pool;
pub mod procfs;

pub use harness::{Paired, Results, Row, Target};
pub use pool::{Kind, Pool};
