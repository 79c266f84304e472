//! A jobserver-aware task-graph runner: each task holds GNU make jobserver tokens while it
//! runs, so a whole graph, and the make, ninja and cargo processes it starts, share one
//! `-jN`.
//!
//! ```
//! use jobrun::{Options, Runner, Task, TaskGraph};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut graph = TaskGraph::new();
//! graph.add(Task::shell("generate", "echo generated"));
//! graph.add(Task::shell("compile", "echo compiled").deps(["generate"]).tokens(2));
//! graph.add(Task::closure("check", |cx| async move {
//!     // In-process work, holding its tokens until the future ends.
//!     assert_eq!(cx.tokens(), 1);
//!     Ok(())
//! }).deps(["compile"]));
//!
//! // Join make's jobserver if there is one; otherwise make a pool of 4 that every child
//! // shares.
//! let options = Options { jobs: 4, log: None, ..Options::default() };
//! let mut runner = Runner::from_env(options)?;
//! runner.on_event(|event, snapshot| {
//!     if let jobrun::Event::Finished { name, .. } = event {
//!         println!("{name} done ({}/{})", snapshot.counts.finished(), snapshot.total);
//!     }
//! });
//! let report = runner.run(graph).await?;
//! assert!(report.success());
//! assert!(report.audit.is_clean()); // every token read was written back
//! # Ok(())
//! # }
//! ```
//!
//! # Parts
//!
//! - [`sched`]: the pure scheduling core. It does no I/O, starts no process, reads no clock
//!   and knows nothing of tokio: inputs ("tokens granted", "task finished", "lock busy",
//!   "capacity is now n", "stop") go in, [`sched::Action`]s ("start T with these tokens",
//!   "hand T's tokens to U", "give these back") come out. [`sched::sim`] runs it in
//!   simulated time; the tests and the dry run do.
//! - [`Runner`]: the tokio runner. It carries the actions out with a
//!   `jobserver_tokio::Client`, child processes in process groups of their own, and `flock`
//!   locks, and tells what happens through [`Event`]s.
//! - [`joblog`]: the job log, whose durations set the next run's priorities and ETA.
//! - [`mod@file`]: the TOML task-graph format of the `jobrun` command.
//!
//! # What a run guarantees
//!
//! - **Tokens.** One client per run: the jobserver in the environment is joined, or a pool
//!   of [`Options::jobs`] is created when there is none (never a second pool under an
//!   existing one). A task holds its tokens until its process is reaped (or its closure
//!   ends, fails, panics or is cancelled); then they go straight to the next ready task, or
//!   to its `then` successor with no jobserver I/O at all, or back to the pipe. The
//!   [`Report`]'s [`Audit`] checks at the end that every token read was written back.
//! - **Order.** Ready tasks go by critical path, weighted by the durations in the previous
//!   run's job log; ties by declaration order.
//! - **Multi-token tasks** never deadlock against other processes: see the rules in
//!   [`sched`].
//! - **Locks.** A task whose lock another process holds waits in the queue holding no
//!   token, and is tried again when a task finishes or after a back-off; the runner sleeps
//!   meanwhile.
//! - **Stopping.** Every child runs in its own process group. [`Controller::stop`] starts
//!   nothing more, sends the termination sequence to every group, reaps, and gives every
//!   token back. When a task's main process exits, whatever it left running in its group is
//!   killed, so no grandchild outlives the run (one that leaves the group with `setsid`
//!   escapes, as from every runner built on process groups).
//!
//! # Platform
//!
//! Unix; Linux is where it is tested. Exits are observed through pidfds on Linux, and
//! through a blocking `waitid` elsewhere.
#![cfg(unix)]
#![doc(test(attr(deny(warnings))))]

pub mod file;
pub mod joblog;
mod process;
mod runner;
pub mod sched;
mod task;

pub use runner::{
    Audit, Controller, Event, Failure, Options, OutputMode, Report, RunError, RunErrorKind, Runner,
    Snapshot, Status, TaskReport, TermSeq,
};
pub use task::{BoxError, Task, TaskContext, TaskFuture, TaskGraph, Work};
