//! The tokio runner: carries out the scheduler's actions with real tokens, processes and
//! locks.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rustix::process::Signal;
use tokio::sync::mpsc;

use jobserver_tokio::{Client, ErrorKind as JsErrorKind, Server, Token};

use crate::joblog::{Entry, History, JobLog, LogStatus};
use crate::process::{self, Capture, Ended, LockFile, Msg};
use crate::sched::{
    sim, Action, Config, Counts, GraphError, Ledger, Outcome, RequeueReason, Scheduler, TaskId,
    TaskState,
};
use crate::task::{TaskContext, TaskGraph, Work};

/// What to do with a task's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OutputMode {
    /// Capture stdout and stderr together; hand them over in one [`Event::Output`] when the
    /// task ends (ninja's and make `-O`'s way).
    #[default]
    Grouped,
    /// Capture them and hand over each line as it comes ([`Event::Output`] per line).
    Line,
    /// Don't capture: tasks write to this process's stdout and stderr directly.
    Inherit,
}

/// A termination sequence: signals to send to every task's process group, each followed by
/// a wait, as GNU parallel's `--termseq` (`TERM,200,TERM,100,TERM,50,KILL,25`). After the
/// last step `SIGKILL` is sent to whatever is left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TermSeq {
    steps: Vec<(Signal, Duration)>,
}

impl Default for TermSeq {
    fn default() -> Self {
        TermSeq::parse("TERM,200,TERM,100,TERM,50,KILL,25").expect("valid default")
    }
}

impl TermSeq {
    /// Parses `SIG,MS,SIG,MS,...`: signal names with or without `SIG` (`TERM`, `INT`, `HUP`,
    /// `QUIT`, `KILL`, `USR1`, `USR2`, `CONT`, `STOP`, `ALRM`) or numbers, each followed by
    /// the milliseconds to wait.
    ///
    /// # Errors
    ///
    /// A message naming the part that is not a signal or a number.
    pub fn parse(spec: &str) -> Result<TermSeq, String> {
        let parts: Vec<&str> = spec.split(',').map(str::trim).collect();
        if parts.is_empty() || !parts.len().is_multiple_of(2) {
            return Err(format!(
                "`{spec}`: expected pairs of a signal and milliseconds, like TERM,200,KILL,25"
            ));
        }
        let mut steps = Vec::new();
        for pair in parts.chunks(2) {
            let sig = parse_signal(pair[0])
                .ok_or_else(|| format!("`{}` in `{spec}` is not a signal name", pair[0]))?;
            let ms: u64 = pair[1].parse().map_err(|_| {
                format!("`{}` in `{spec}` is not a number of milliseconds", pair[1])
            })?;
            steps.push((sig, Duration::from_millis(ms)));
        }
        Ok(TermSeq { steps })
    }
}

fn parse_signal(s: &str) -> Option<Signal> {
    let s = s.strip_prefix("SIG").unwrap_or(s);
    Some(match s {
        "TERM" => Signal::TERM,
        "INT" => Signal::INT,
        "HUP" => Signal::HUP,
        "QUIT" => Signal::QUIT,
        "KILL" => Signal::KILL,
        "USR1" => Signal::USR1,
        "USR2" => Signal::USR2,
        "CONT" => Signal::CONT,
        "STOP" => Signal::STOP,
        "ALRM" => Signal::ALARM,
        n => Signal::from_named_raw(n.parse().ok()?)?,
    })
}

/// How a run behaves. Build it with struct update syntax over `Options::default()`.
#[derive(Debug, Clone)]
pub struct Options {
    /// Size of the pool [`Runner::from_env`] creates when the environment has no jobserver.
    pub jobs: usize,
    /// Fail instead of creating a pool when the environment has no usable jobserver.
    pub require_jobserver: bool,
    /// Stop starting tasks after this many failures; 0 = never (default 1, as ninja).
    pub keep_going: u32,
    /// List what would run, in the order it would start, and run nothing.
    pub dry_run: bool,
    /// Follow make's `k` (keep going: never stop) and `n` (dry run) flags from the
    /// jobserver's `MAKEFLAGS` (default true).
    pub honour_makeflags: bool,
    /// What to do with output.
    pub output: OutputMode,
    /// The job log (default `.jobrun_log`); `None` for none.
    pub log: Option<PathBuf>,
    /// The termination sequence used by [`Controller::stop`].
    pub termseq: TermSeq,
    /// The exit status that means "retry later" (default 75, `EX_TEMPFAIL`); `None` to
    /// treat it as any failure.
    pub retry_exit_code: Option<i32>,
    /// How often a task is retried after "retry later" before it counts as failed.
    pub retry_limit: u32,
    /// First back-off before re-queued tasks are tried again when nothing finishes.
    pub retry_after: Duration,
    /// Longest time a partial set of tokens is held for a multi-token task.
    pub partial_hold: Duration,
    /// A local cap on token units held at once (below the pool's size).
    pub capacity: Option<u32>,
    /// How often an [`Event::Progress`] comes.
    pub progress_every: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            require_jobserver: false,
            keep_going: 1,
            dry_run: false,
            honour_makeflags: true,
            output: OutputMode::Grouped,
            log: Some(PathBuf::from(".jobrun_log")),
            termseq: TermSeq::default(),
            retry_exit_code: Some(75),
            retry_limit: 10,
            retry_after: Duration::from_millis(200),
            partial_hold: Duration::from_secs(1),
            capacity: None,
            progress_every: Duration::from_secs(1),
        }
    }
}

/// Why a run could not start or went wrong as a whole.
#[derive(Debug)]
#[non_exhaustive]
pub enum RunError {
    /// The graph is invalid.
    Graph(GraphError),
    /// A task asks for more tokens than the pool has.
    TooManyTokens {
        /// The task.
        task: String,
        /// Units it asks for.
        tokens: u32,
        /// The pool's size.
        pool: usize,
    },
    /// No usable jobserver, and one was required. The error says why (none in the
    /// environment, or make left it out because the rule lacks `+`).
    NoJobserver(jobserver_tokio::Error),
    /// Joining or creating the pool, or reading tokens, failed.
    Jobserver(jobserver_tokio::Error),
    /// The job log could not be opened.
    Log {
        /// Its path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// What kind of [`RunError`] this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunErrorKind {
    /// The graph or a task's demand is invalid: a usage error.
    Graph,
    /// No jobserver where one was required.
    NoJobserver,
    /// The jobserver failed.
    Jobserver,
    /// The job log failed.
    Log,
}

impl RunError {
    /// The kind of error.
    pub fn kind(&self) -> RunErrorKind {
        match self {
            RunError::Graph(_) | RunError::TooManyTokens { .. } => RunErrorKind::Graph,
            RunError::NoJobserver(_) => RunErrorKind::NoJobserver,
            RunError::Jobserver(_) => RunErrorKind::Jobserver,
            RunError::Log { .. } => RunErrorKind::Log,
        }
    }
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Graph(e) => write!(f, "{e}"),
            RunError::TooManyTokens { task, tokens, pool } => write!(
                f,
                "task `{task}` asks for {tokens} tokens, but the pool has {pool} jobs: \
                 lower its `tokens` or run with a larger pool (-j)"
            ),
            RunError::NoJobserver(e) => {
                if e.kind() == JsErrorKind::NoJobserver {
                    write!(
                        f,
                        "no jobserver found, and one is required: run this from a make recipe \
                         (and mark the rule with `+` so that make passes its jobserver on), \
                         or drop --require-jobserver ({e})"
                    )
                } else {
                    write!(f, "no usable jobserver, and one is required: {e}")
                }
            }
            RunError::Jobserver(e) => write!(f, "jobserver: {e}"),
            RunError::Log { path, source } => {
                write!(f, "cannot open the job log {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for RunError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RunError::Graph(e) => Some(e),
            RunError::NoJobserver(e) | RunError::Jobserver(e) => Some(e),
            RunError::Log { source, .. } => Some(source),
            RunError::TooManyTokens { .. } => None,
        }
    }
}

impl From<GraphError> for RunError {
    fn from(e: GraphError) -> Self {
        RunError::Graph(e)
    }
}

/// Why a task failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// It exited with this non-zero status.
    Exit(i32),
    /// It was killed by this signal.
    Signal(i32),
    /// It could not be started (or its lock could not be taken); the message says why.
    Spawn(String),
    /// An in-process task returned an error.
    Error(String),
    /// An in-process task panicked.
    Panic(String),
    /// It was stopped: terminated by the run's stop, or cancelled.
    Interrupted,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Exit(n) => write!(f, "exit status {n}"),
            Failure::Signal(n) => write!(f, "killed by signal {n}"),
            Failure::Spawn(m) => write!(f, "could not start: {m}"),
            Failure::Error(m) => write!(f, "failed: {m}"),
            Failure::Panic(m) => write!(f, "panicked: {m}"),
            Failure::Interrupted => write!(f, "interrupted"),
        }
    }
}

/// A task's final status in a [`Report`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Status {
    /// It succeeded.
    Succeeded,
    /// It failed.
    Failed(Failure),
    /// It did not run because this task (a dependency, directly or not) failed.
    Skipped {
        /// The failed task's name.
        because: String,
    },
    /// It did not run: the run stopped or reached its failure limit first (or it is a dry
    /// run).
    NotRun,
}

/// One task in a [`Report`].
#[derive(Debug, Clone)]
pub struct TaskReport {
    /// The task's name.
    pub name: String,
    /// How it ended.
    pub status: Status,
    /// When it (last) started, from the run's start.
    pub start: Option<Duration>,
    /// How long its last run took.
    pub duration: Option<Duration>,
    /// Token units it held in its last run (what it asked for, if it never ran).
    pub tokens: u32,
    /// The predecessor whose tokens it inherited in its last run (a `then` hand-off), if any.
    pub inherited_from: Option<String>,
    /// How many times it was retried after "retry later".
    pub retries: u32,
}

/// What one task held: the runner's per-task ledger.
#[derive(Debug, Clone, Copy)]
struct TaskLedger {
    units: u32,
    from: Option<TaskId>,
    runs: u32,
}

/// The token audit at the end of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Audit {
    /// The scheduler's ledger: units granted, released, started, handed off.
    pub ledger: Ledger,
    /// Token bytes this process read from the jobserver.
    pub bytes_read: u64,
    /// Token bytes it wrote back.
    pub bytes_written: u64,
    /// Bytes held at the end (should be 0).
    pub bytes_held: usize,
    /// Bytes whose write back failed and were still kept at the end (should be 0).
    pub bytes_unwritten: usize,
    /// For an own pool: tokens missing from the pipe after the run (should be 0).
    pub pool_lost: Option<usize>,
    /// For an own pool: tokens found beyond what the pool should hold (should be 0).
    pub pool_extra: Option<usize>,
    /// For an own pool: the pool could not be counted at the end (its shutdown refused,
    /// e.g. because a token is still held somewhere). Never clean.
    pub pool_unchecked: bool,
}

impl Audit {
    /// Every unit granted was released, every byte read was written back unchanged, and
    /// an own pool is whole.
    pub fn is_clean(&self) -> bool {
        self.ledger.granted == self.ledger.released
            && self.bytes_read == self.bytes_written
            && self.bytes_held == 0
            && self.bytes_unwritten == 0
            && self.pool_lost.unwrap_or(0) == 0
            && self.pool_extra.unwrap_or(0) == 0
            && !self.pool_unchecked
    }
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Report {
    /// Every task, in declaration order.
    pub tasks: Vec<TaskReport>,
    /// Counts by state.
    pub counts: Counts,
    /// Wall time of the run.
    pub wall: Duration,
    /// The heaviest chain by the costs used for priorities (names, first to last).
    pub critical_path: Vec<String>,
    /// Its length by those costs.
    pub critical_path_cost: Duration,
    /// The token audit.
    pub audit: Audit,
    /// Whether it was stopped ([`Controller::stop`] or [`Controller::kill`]).
    pub stopped: bool,
    /// For a dry run: task ids in the order they would start, with the simulated start.
    pub plan: Vec<(usize, Duration)>,
}

impl Report {
    /// Whether every task succeeded (a dry run counts as success).
    pub fn success(&self) -> bool {
        !self.stopped
            && self.counts.failed == 0
            && self.counts.skipped == 0
            && (self.counts.not_run == 0 || !self.plan.is_empty())
    }
}

/// Something that happened during a run, for drawing a status of one's own.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A task started.
    Started {
        /// The task.
        task: TaskId,
        /// Its name.
        name: &'a str,
        /// Units it holds.
        tokens: u32,
        /// The predecessor whose tokens it inherited, if any.
        from: Option<TaskId>,
    },
    /// Output of a task: all of it at the end ([`OutputMode::Grouped`]) or one line
    /// ([`OutputMode::Line`]).
    Output {
        /// The task.
        task: TaskId,
        /// Its name.
        name: &'a str,
        /// The bytes.
        data: &'a [u8],
    },
    /// A task ended.
    Finished {
        /// The task.
        task: TaskId,
        /// Its name.
        name: &'a str,
        /// `None` on success.
        failure: Option<&'a Failure>,
        /// How long it ran.
        duration: Duration,
    },
    /// A task went back into the queue holding nothing.
    Requeued {
        /// The task.
        task: TaskId,
        /// Its name.
        name: &'a str,
        /// Why.
        reason: RequeueReason,
    },
    /// A task will not run because a dependency failed.
    Skipped {
        /// The task.
        task: TaskId,
        /// Its name.
        name: &'a str,
        /// The failed task's name.
        because: &'a str,
    },
    /// The capacity changed (a [`Controller`] call).
    Capacity {
        /// Units that may be held at once now.
        capacity: u32,
        /// The own pool's new size, when there is one.
        pool_jobs: Option<usize>,
    },
    /// The run is stopping: nothing more starts, running tasks are terminated.
    Stopping,
    /// A warning worth showing (an unreadable job log, a failed token write).
    Warning(&'a str),
    /// Periodic progress (every [`Options::progress_every`]).
    Progress {
        /// Estimated time left, from the costs.
        eta: Duration,
        /// Tokens in the jobserver pipe now, if it can tell.
        pool_free: Option<usize>,
        /// Running tasks, heaviest remaining critical path first: name and time running.
        running: &'a [(&'a str, Duration)],
    },
}

/// A cheap snapshot passed with every [`Event`].
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    /// Tasks in each state.
    pub counts: Counts,
    /// Tasks in the graph.
    pub total: usize,
    /// Token units held now (running tasks and the collected set).
    pub held: u32,
    /// Units that may be held at once.
    pub capacity: u32,
    /// Time since the run started.
    pub elapsed: Duration,
}

type Listener = Box<dyn FnMut(&Event<'_>, &Snapshot) + Send>;

#[derive(Debug)]
enum Control {
    Stop,
    Kill,
    Capacity(i64),
    Progress,
}

/// Controls a run from elsewhere: stop it, change its capacity, ask for progress. Cheap to
/// clone; calls after the run ended do nothing.
#[derive(Debug, Clone)]
pub struct Controller {
    tx: mpsc::UnboundedSender<Control>,
}

impl Controller {
    /// Starts nothing more, terminates every running task's process group with the
    /// termination sequence (in-process tasks are cancelled), and lets the run end once
    /// every task is reaped and every token is back.
    pub fn stop(&self) {
        let _ = self.tx.send(Control::Stop);
    }

    /// As [`Controller::stop`], but kills every group with `SIGKILL` at once.
    pub fn kill(&self) {
        let _ = self.tx.send(Control::Kill);
    }

    /// Adds `delta` slots (negative to remove): an own pool is resized (a shrink takes
    /// tokens out as they come back and never kills a job); a joined pool gets a local cap.
    /// The capacity never goes below 1.
    pub fn add_slots(&self, delta: i64) {
        let _ = self.tx.send(Control::Capacity(delta));
    }

    /// Asks for an [`Event::Progress`] now.
    pub fn progress(&self) {
        let _ = self.tx.send(Control::Progress);
    }
}

enum Pool {
    Joined,
    Own(Server),
}

/// Runs a [`TaskGraph`] under a jobserver: each task holds its tokens until its process is
/// reaped (or its closure ends).
pub struct Runner {
    client: Client,
    pool: Pool,
    /// make's flags from the environment (`n`, `k`, ...), with or without a jobserver.
    make_flags: Option<jobserver_tokio::MakeFlags>,
    options: Options,
    listener: Option<Listener>,
    control_tx: mpsc::UnboundedSender<Control>,
    control_rx: mpsc::UnboundedReceiver<Control>,
}

impl fmt::Debug for Runner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runner")
            .field("client", &self.client)
            .field("own_pool", &matches!(self.pool, Pool::Own(_)))
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Runner {
    /// A runner that takes its tokens from `client` (a pool joined or created elsewhere).
    /// Capacity changes become a local cap.
    ///
    /// The run calls [`Client::inherit_in_every_child`] on the client (so that tasks spawn
    /// by vfork): with a pipe jobserver, every child the process spawns afterwards, on any
    /// thread, inherits the pipe while the client lives. Give the runner a client of its own
    /// pool, or accept that, in a process that spawns other children.
    pub fn new(client: Client, options: Options) -> Self {
        Self::build(client, Pool::Joined, options)
    }

    /// A runner on an own pool: tokens come from a client of `server`, and capacity changes
    /// resize the pool itself.
    ///
    /// # Errors
    ///
    /// When the server's client cannot be made (no tokio runtime).
    pub fn with_server(server: Server, options: Options) -> Result<Self, RunError> {
        let client = server.client().map_err(RunError::Jobserver)?;
        Ok(Self::build(client, Pool::Own(server), options))
    }

    /// Joins the jobserver in the environment, or creates an own pool of
    /// [`Options::jobs`] when there is none (never a second pool under an existing one).
    /// When make disabled the jobserver for this command (the rule lacks `+`), runs one task
    /// at a time, as make does, and [`Runner::degraded`] says why; with
    /// [`Options::require_jobserver`], both cases are errors.
    ///
    /// # Errors
    ///
    /// [`RunError::NoJobserver`] as above; [`RunError::Jobserver`] for a broken jobserver.
    pub fn from_env(options: Options) -> Result<Self, RunError> {
        let flags = env_make_flags();
        let runner = Self::from_env_inner(options)?;
        Ok(Runner {
            make_flags: flags.or(runner.make_flags),
            ..runner
        })
    }

    fn from_env_inner(options: Options) -> Result<Self, RunError> {
        match Client::from_env() {
            Ok(client) => Ok(Self::new(client, options)),
            Err(e) if options.require_jobserver => Err(RunError::NoJobserver(e)),
            Err(e) if e.kind() == JsErrorKind::NoJobserver => {
                let server = Server::new(options.jobs.max(1)).map_err(RunError::Jobserver)?;
                Self::with_server(server, options)
            }
            Err(e) if matches!(e.kind(), JsErrorKind::Disabled | JsErrorKind::BadFds) => {
                Ok(Self::new(Client::implicit_only(Some(e)), options))
            }
            Err(e) => Err(RunError::Jobserver(e)),
        }
    }

    fn build(client: Client, pool: Pool, options: Options) -> Self {
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let make_flags = client.var().is_some().then(|| client.flags().clone());
        Runner {
            client,
            pool,
            make_flags,
            options,
            listener: None,
            control_tx,
            control_rx,
        }
    }

    /// The client tokens come from.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// make's flags as found in the environment (`CARGO_MAKEFLAGS`, `MAKEFLAGS` or `MFLAGS`,
    /// chosen as [`jobserver_proto::makeflags::from_env`] does), whether or not they name a
    /// jobserver: [`dry_run`](jobserver_tokio::MakeFlags::dry_run),
    /// [`keep_going`](jobserver_tokio::MakeFlags::keep_going),
    /// [`debug`](jobserver_tokio::MakeFlags::debug) and the rest.
    ///
    /// For a runner made by [`Runner::from_env`], `None` when none of those variables is set
    /// or the one that decides cannot be parsed; for one made by [`Runner::new`] or
    /// [`Runner::with_server`], the flags of the client's variable, if it came from one.
    /// [`Options::honour_makeflags`] decides whether [`Runner::run`] follows `n` and `k`;
    /// this getter reports them either way.
    pub fn make_flags(&self) -> Option<&jobserver_tokio::MakeFlags> {
        self.make_flags.as_ref()
    }

    /// Why the runner runs one task at a time instead of joining make's jobserver, if it
    /// does (see [`Runner::from_env`]).
    pub fn degraded(&self) -> Option<&jobserver_tokio::Error> {
        self.client.degraded()
    }

    /// Whether the runner owns its pool (none was in the environment).
    pub fn owns_pool(&self) -> bool {
        matches!(self.pool, Pool::Own(_))
    }

    /// The pool's size: the own pool's, or the `-jN` hint of a joined one.
    pub fn pool_size(&self) -> Option<usize> {
        match &self.pool {
            Pool::Own(s) => Some(s.jobs()),
            Pool::Joined => match self.client.flags().jobs {
                jobserver_tokio::Jobs::Limited(n) if self.client.degraded().is_none() => {
                    Some(n.get())
                }
                _ if self.client.mode() == jobserver_tokio::Mode::ImplicitOnly => Some(1),
                _ => None,
            },
        }
    }

    /// The options in force.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// A handle to stop the run or change its capacity while it runs.
    pub fn controller(&self) -> Controller {
        Controller {
            tx: self.control_tx.clone(),
        }
    }

    /// Calls `f` for every [`Event`], on the run's task, in order. Keep it quick.
    pub fn on_event(&mut self, f: impl FnMut(&Event<'_>, &Snapshot) + Send + 'static) {
        self.listener = Some(Box::new(f));
    }

    /// Runs `graph` to the end.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes kills every running task's process group at
    /// once (`SIGKILL`, no termination sequence) and cancels in-process tasks; the tokens
    /// go back with the dropped future, and the processes are reaped in the background
    /// while the runtime runs. Nothing is written to the job log for them and no report
    /// comes. To stop gracefully, call [`Controller::stop`] and await the future.
    ///
    /// # Errors
    ///
    /// Before anything runs: an invalid graph, a task asking for more tokens than the pool
    /// has, an unopenable job log. During the run, a failing jobserver stops the run and is
    /// returned after every task has ended.
    pub async fn run(mut self, graph: TaskGraph) -> Result<Report, RunError> {
        let core = graph.validate()?;
        if let Some(pool) = self.pool_size() {
            if let Some(t) = graph.tasks.iter().find(|t| t.tokens as usize > pool) {
                return Err(RunError::TooManyTokens {
                    task: t.name.clone(),
                    tokens: t.tokens,
                    pool,
                });
            }
        }
        let mut options = self.options.clone();
        if let Some(flags) = self
            .make_flags
            .as_ref()
            .filter(|_| options.honour_makeflags)
        {
            options.dry_run |= flags.dry_run;
            if flags.keep_going {
                options.keep_going = 0;
            }
        }
        let (history, mut warnings) = match &options.log {
            Some(path) => match History::read(path) {
                Ok(h) => (h, Vec::new()),
                Err(e) => (
                    History::default(),
                    vec![format!("ignoring the job log {}: {e}", path.display())],
                ),
            },
            None => (History::default(), Vec::new()),
        };
        let capacity = self
            .pool_size()
            .map(|n| n as u32)
            .unwrap_or(u32::MAX)
            .min(options.capacity.unwrap_or(u32::MAX));
        let config = Config {
            capacity,
            keep_going: options.keep_going,
            retry_limit: options.retry_limit,
            retry_after: options.retry_after,
            partial_hold: options.partial_hold,
            jitter_seed: u64::from(std::process::id())
                ^ SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos().into()),
            ..Config::default()
        };
        let names: Vec<&str> = graph.tasks.iter().map(|t| t.name.as_str()).collect();
        let sched = Scheduler::new(core, config, |t| history.duration(names[t.index()]));
        if options.dry_run {
            return Ok(self.dry_run(sched, &graph));
        }
        let log = match &options.log {
            Some(path) => Some(
                JobLog::open(path, &history).map_err(|source| RunError::Log {
                    path: path.clone(),
                    source,
                })?,
            ),
            None => None,
        };
        // Every child shares the pool: let them all inherit a pipe jobserver, so spawning
        // needs no pre_exec hook and std uses posix_spawn instead of fork.
        if let Err(e) = self.client.inherit_in_every_child() {
            warnings.push(format!("children will be spawned the slow way: {e}"));
        }
        let mut run = Run {
            sched,
            graph: &graph,
            client: self.client.clone(),
            options: &options,
            listener: self.listener.take(),
            wallet: Vec::new(),
            slots: HashMap::new(),
            locks: HashMap::new(),
            failures: HashMap::new(),
            ledgers: HashMap::new(),
            log,
            t0: Instant::now(),
            tx: None,
            stopped: false,
            fatal: None,
        };
        for w in warnings.drain(..) {
            run.emit(&Event::Warning(&w));
        }
        let result = run.drive(&mut self.control_rx, &self.pool).await;
        debug_assert!(run.wallet.is_empty() && run.slots.is_empty());
        result?;
        if let Some(e) = run.fatal.take() {
            return Err(RunError::Jobserver(e));
        }
        let failures = std::mem::take(&mut run.failures);
        let (stopped, t0) = (run.stopped, run.t0);
        let wall = t0.elapsed();
        let stats = self.client.stats();
        let (pool_lost, pool_extra, pool_unchecked) =
            match std::mem::replace(&mut self.pool, Pool::Joined) {
                Pool::Own(server) => {
                    drop(std::mem::replace(
                        &mut self.client,
                        Client::implicit_only(None),
                    ));
                    match server.shutdown() {
                        Ok(r) => (Some(r.lost()), Some(r.extra()), false),
                        Err(_) => (None, None, true),
                    }
                }
                Pool::Joined => (None, None, false),
            };
        let audit = Audit {
            ledger: run.sched.ledger(),
            bytes_read: stats.bytes_read,
            bytes_written: stats.bytes_written,
            bytes_held: stats.bytes_held,
            bytes_unwritten: stats.bytes_unwritten,
            pool_lost,
            pool_extra,
            pool_unchecked,
        };
        Ok(report(
            &run.sched,
            &graph,
            &run.ledgers,
            failures,
            wall,
            audit,
            stopped,
            Vec::new(),
        ))
    }

    fn dry_run(&self, mut sched: Scheduler, graph: &TaskGraph) -> Report {
        // As wide as the capacity, and never narrower than the widest task (a pool of unknown
        // size gets one lane per task).
        let widest = graph.tasks.iter().map(|t| t.tokens).max().unwrap_or(1);
        let pool = if sched.capacity() == u32::MAX {
            (graph.len() as u32).max(widest)
        } else {
            sched.capacity()
        };
        let costs: Vec<Duration> = sched.graph().ids().map(|t| sched.cost(t)).collect();
        let sim = sim::simulate(
            &mut sched,
            pool,
            |t, _| (costs[t.index()], Outcome::Success),
            |_, _| true,
        );
        let plan = sim
            .map(|s| s.starts.iter().map(|s| (s.task.index(), s.at)).collect())
            .unwrap_or_default();
        let audit = Audit {
            ledger: Ledger::default(),
            bytes_read: 0,
            bytes_written: 0,
            bytes_held: 0,
            bytes_unwritten: 0,
            pool_lost: None,
            pool_extra: None,
            pool_unchecked: false,
        };
        let mut r = report(
            &sched,
            graph,
            &HashMap::new(),
            HashMap::new(),
            Duration::ZERO,
            audit,
            false,
            plan,
        );
        for t in &mut r.tasks {
            t.status = Status::NotRun;
            t.start = None;
            t.duration = None;
        }
        r.counts = Counts {
            not_run: graph.len(),
            ..Counts::default()
        };
        r
    }
}

#[allow(clippy::too_many_arguments)]
fn report(
    sched: &Scheduler,
    graph: &TaskGraph,
    ledgers: &HashMap<TaskId, TaskLedger>,
    mut failures: HashMap<TaskId, Failure>,
    wall: Duration,
    audit: Audit,
    stopped: bool,
    plan: Vec<(usize, Duration)>,
) -> Report {
    let g = sched.graph();
    let tasks = g
        .ids()
        .map(|t| {
            let (start, end) = sched.times(t);
            let status = match sched.state(t) {
                TaskState::Succeeded => Status::Succeeded,
                TaskState::Failed => {
                    Status::Failed(failures.remove(&t).unwrap_or(Failure::Interrupted))
                }
                TaskState::Skipped => Status::Skipped {
                    because: sched
                        .skipped_because(t)
                        .map(|c| g.name(c).to_owned())
                        .unwrap_or_default(),
                },
                _ => Status::NotRun,
            };
            TaskReport {
                name: graph.tasks[t.index()].name.clone(),
                status,
                start,
                duration: start.zip(end).map(|(s, e)| e.saturating_sub(s)),
                tokens: ledgers
                    .get(&t)
                    .map_or(graph.tasks[t.index()].tokens, |l| l.units),
                inherited_from: ledgers
                    .get(&t)
                    .and_then(|l| l.from)
                    .map(|f| g.name(f).to_owned()),
                retries: sched.retries(t),
            }
        })
        .collect();
    // The critical path: from the heaviest root, follow the heaviest dependent.
    let mut path = Vec::new();
    let mut cost = Duration::ZERO;
    let mut cur = g
        .ids()
        .filter(|&t| g.deps(t).len() == 0)
        .max_by_key(|&t| (sched.weight(t), std::cmp::Reverse(t)));
    while let Some(t) = cur {
        path.push(g.name(t).to_owned());
        cost += sched.cost(t);
        cur = g
            .dependents(t)
            .max_by_key(|&d| (sched.weight(d), std::cmp::Reverse(d)));
    }
    Report {
        tasks,
        counts: sched.counts(),
        wall,
        critical_path: path,
        critical_path_cost: cost,
        audit,
        stopped,
        plan,
    }
}

struct Slot {
    tokens: Vec<Token>,
    lock: Option<LockFile>,
    pgid: Option<i32>,
    abort: Option<tokio::task::AbortHandle>,
    started: Instant,
    started_wall: SystemTime,
}

/// The state of one run, borrowed from the runner.
struct Run<'a> {
    sched: Scheduler,
    graph: &'a TaskGraph,
    client: Client,
    options: &'a Options,
    listener: Option<Listener>,
    /// The collected set: tokens that belong to no running task.
    wallet: Vec<Token>,
    slots: HashMap<TaskId, Slot>,
    locks: HashMap<TaskId, LockFile>,
    failures: HashMap<TaskId, Failure>,
    /// Per started task: the units it holds or held, where they came from, how often it ran.
    ledgers: HashMap<TaskId, TaskLedger>,
    log: Option<JobLog>,
    t0: Instant,
    tx: Option<mpsc::UnboundedSender<Msg>>,
    stopped: bool,
    fatal: Option<jobserver_tokio::Error>,
}

impl Drop for Run<'_> {
    fn drop(&mut self) {
        // Only a dropped run future gets here with tasks running: leave nothing behind.
        for slot in self.slots.values() {
            if let Some(pgid) = slot.pgid {
                process::signal_group(pgid, Signal::KILL);
            }
            if let Some(a) = &slot.abort {
                a.abort();
            }
        }
    }
}

/// Where a termination sequence is.
struct Terminating {
    next_step: usize,
    at: tokio::time::Instant,
}

impl<'a> Run<'a> {
    fn now(&self) -> Duration {
        self.t0.elapsed()
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            counts: self.sched.counts(),
            total: self.graph.len(),
            held: self.sched.running_units() + self.sched.collected(),
            capacity: self.sched.capacity(),
            elapsed: self.now(),
        }
    }

    fn emit(&mut self, event: &Event<'_>) {
        if self.listener.is_some() {
            let snap = self.snapshot();
            if let Some(l) = self.listener.as_mut() {
                l(event, &snap);
            }
        }
    }

    /// The task's name, borrowed from the graph (not from `self`, so that events can carry
    /// it while `self` is borrowed mutably).
    fn name(&self, t: TaskId) -> &'a str {
        let graph: &'a TaskGraph = self.graph;
        &graph.tasks[t.index()].name
    }

    async fn drive(
        &mut self,
        control: &mut mpsc::UnboundedReceiver<Control>,
        pool: &Pool,
    ) -> Result<(), RunError> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.tx = Some(tx);
        let mut acquire: Option<jobserver_tokio::Acquire> = None;
        let mut terminating: Option<Terminating> = None;
        let every = self.options.progress_every.max(Duration::from_millis(10));
        let mut progress = tokio::time::interval(every);
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        progress.tick().await;
        loop {
            self.carry_out();
            if self.sched.is_finished() && self.slots.is_empty() {
                break;
            }
            if self.sched.demand() == 0 {
                acquire = None;
            } else if acquire.is_none() {
                acquire = Some(self.client.acquire());
            }
            let timeout = self
                .sched
                .poll_timeout()
                .map(|d| tokio::time::Instant::from_std(self.t0 + d));
            let term_at = terminating.as_ref().map(|t| t.at);
            tokio::select! {
                biased;
                msg = rx.recv() => {
                    // `tx` is held by the run itself, so the channel never closes here.
                    if let Some(msg) = msg {
                        self.handle_msg(msg, pool);
                    }
                }
                got = async { acquire.as_mut().expect("guarded").await }, if acquire.is_some() => {
                    acquire = None;
                    match got {
                        Ok(token) => {
                            let units = token.units() as u32;
                            self.wallet.push(token);
                            let now = self.now();
                            self.sched.handle_granted(units, now);
                        }
                        Err(e) => {
                            let msg = format!("reading a token failed, stopping: {e}");
                            self.emit(&Event::Warning(&msg));
                            self.fatal = Some(e);
                            self.begin_stop(&mut terminating);
                        }
                    }
                }
                cmd = control.recv() => match cmd {
                    Some(Control::Stop) => self.begin_stop(&mut terminating),
                    Some(Control::Kill) => {
                        self.begin_stop(&mut terminating);
                        self.signal_all(Signal::KILL);
                        if let Some(t) = terminating.as_mut() {
                            t.next_step = self.options.termseq.steps.len();
                        }
                    }
                    Some(Control::Capacity(delta)) => self.change_capacity(delta, pool),
                    Some(Control::Progress) => self.progress(),
                    None => {}
                },
                _ = sleep_until(timeout), if timeout.is_some() => {
                    let now = self.now();
                    self.sched.handle_timeout(now);
                }
                _ = sleep_until(term_at), if term_at.is_some() => {
                    if let Some(t) = terminating.as_mut() {
                        let steps = &self.options.termseq.steps;
                        if let Some(&(sig, wait)) = steps.get(t.next_step) {
                            t.next_step += 1;
                            t.at = tokio::time::Instant::now() + wait;
                            self.signal_all(sig);
                        } else {
                            // Past the sequence: make sure, then poll slowly.
                            self.signal_all(Signal::KILL);
                            t.at = tokio::time::Instant::now() + Duration::from_millis(100);
                        }
                    }
                }
                _ = progress.tick() => {
                    if let Pool::Own(server) = pool {
                        if server.pending_absorb() > 0 {
                            let _ = server.absorb();
                        }
                    }
                    self.progress();
                }
            }
        }
        drop(acquire);
        Ok(())
    }

    fn begin_stop(&mut self, terminating: &mut Option<Terminating>) {
        if terminating.is_none() {
            self.stopped = true;
            let now = self.now();
            self.sched.stop(now);
            self.emit(&Event::Stopping);
            for slot in self.slots.values() {
                if let Some(a) = &slot.abort {
                    a.abort();
                }
            }
            *terminating = Some(Terminating {
                next_step: 0,
                at: tokio::time::Instant::now(),
            });
        }
    }

    fn signal_all(&self, sig: Signal) {
        for slot in self.slots.values() {
            if let Some(pgid) = slot.pgid {
                process::signal_group(pgid, sig);
            }
        }
    }

    fn change_capacity(&mut self, delta: i64, pool: &Pool) {
        let now = self.now();
        let (capacity, pool_jobs) = match pool {
            Pool::Own(server) => {
                let jobs = (server.jobs() as i64 + delta).max(1) as usize;
                if let Err(e) = server.resize(jobs) {
                    let msg = format!("resizing the pool to {jobs} failed: {e}");
                    self.emit(&Event::Warning(&msg));
                }
                let jobs = server.jobs();
                let cap = (jobs as u32).min(self.options.capacity.unwrap_or(u32::MAX));
                (cap, Some(jobs))
            }
            Pool::Joined => {
                let cur = self.sched.capacity();
                let base = if cur == u32::MAX {
                    // No known size: count from the most this run has held at once.
                    let held = self.sched.running_units() + self.sched.collected();
                    self.sched.ledger().peak.max(held).max(1)
                } else {
                    cur
                };
                let cap = if cur == u32::MAX && delta > 0 {
                    u32::MAX
                } else {
                    (i64::from(base) + delta).clamp(1, i64::from(u32::MAX)) as u32
                };
                (cap, None)
            }
        };
        self.sched.set_capacity(capacity, now);
        self.emit(&Event::Capacity {
            capacity,
            pool_jobs,
        });
    }

    fn progress(&mut self) {
        let now = self.now();
        let eta = self.sched.estimate_remaining(now);
        let pool_free = self.client.available().ok().flatten();
        let mut running: Vec<(TaskId, Duration)> = self
            .slots
            .iter()
            .map(|(&t, s)| (t, s.started.elapsed()))
            .collect();
        running.sort_by_key(|&(t, _)| (std::cmp::Reverse(self.sched.weight(t)), t));
        let named: Vec<(&str, Duration)> = running
            .iter()
            .map(|&(t, d)| (self.graph.tasks[t.index()].name.as_str(), d))
            .collect();
        let event = Event::Progress {
            eta,
            pool_free,
            running: &named,
        };
        if self.listener.is_some() {
            let snap = self.snapshot();
            if let Some(l) = self.listener.as_mut() {
                l(&event, &snap);
            }
        }
    }

    /// Drains the scheduler's actions and carries each out.
    fn carry_out(&mut self) {
        while let Some(action) = self.sched.poll_action() {
            match action {
                Action::TryLock(t) => {
                    let path = self.graph.tasks[t.index()]
                        .lock
                        .clone()
                        .expect("TryLock for a task with a lock");
                    let now = self.now();
                    match process::try_lock(&path) {
                        Ok(Some(lock)) => {
                            self.locks.insert(t, lock);
                            self.sched.handle_lock(t, true, now);
                        }
                        Ok(None) => self.sched.handle_lock(t, false, now),
                        Err(e) => {
                            // Fails for good: the task fails without starting or tokens.
                            let failure =
                                Failure::Spawn(format!("cannot lock {}: {e}", path.display()));
                            let name = self.name(t);
                            self.emit(&Event::Finished {
                                task: t,
                                name,
                                failure: Some(&failure),
                                duration: Duration::ZERO,
                            });
                            self.failures.insert(t, failure);
                            self.sched.handle_lock_failed(t, now);
                        }
                    }
                }
                Action::Unlock(t) => {
                    self.locks.remove(&t);
                }
                Action::Start { task, tokens } => self.start(task, tokens, None),
                Action::HandOff { from, to, tokens } => self.start(to, tokens, Some(from)),
                Action::Release { tokens } => {
                    for _ in 0..tokens {
                        let token = self
                            .wallet
                            .pop()
                            .expect("the collected set mirrors the core");
                        if let Err(e) = token.release() {
                            let msg = format!(
                                "writing a token back failed (it is kept and retried): {e}"
                            );
                            self.emit(&Event::Warning(&msg));
                        }
                    }
                }
                Action::Requeue { task, reason } => {
                    let name = self.name(task);
                    self.emit(&Event::Requeued { task, name, reason });
                }
                Action::Skip { task, because } => {
                    let (name, because) = (self.name(task), self.name(because));
                    self.emit(&Event::Skipped {
                        task,
                        name,
                        because,
                    });
                }
                Action::Done => {}
            }
        }
    }

    fn start(&mut self, task: TaskId, units: u32, from: Option<TaskId>) {
        let mut tokens = Vec::with_capacity(units as usize);
        let mut got = 0u32;
        while got < units {
            let t = self
                .wallet
                .pop()
                .expect("the collected set mirrors the core");
            got += t.units() as u32;
            tokens.push(t);
        }
        let ledger = self.ledgers.entry(task).or_insert(TaskLedger {
            units,
            from,
            runs: 0,
        });
        let attempt = ledger.runs;
        *ledger = TaskLedger {
            units,
            from,
            runs: attempt + 1,
        };
        let spec = &self.graph.tasks[task.index()];
        let lock = self.locks.remove(&task);
        let tx = self.tx.clone().expect("set at drive");
        let mut slot = Slot {
            tokens,
            lock,
            pgid: None,
            abort: None,
            started: Instant::now(),
            started_wall: SystemTime::now(),
        };
        let spawned: Result<(), String> = {
            match &spec.work {
                Work::Closure(f) => {
                    let cx = TaskContext {
                        name: Arc::from(spec.name.as_str()),
                        tokens: units,
                        attempt,
                        client: self.client.clone(),
                    };
                    let fut = f(cx);
                    let handle = tokio::spawn(fut);
                    slot.abort = Some(handle.abort_handle());
                    tokio::spawn(async move {
                        let ended = match handle.await {
                            Ok(Ok(())) => Ended::ClosureOk,
                            Ok(Err(e)) => Ended::ClosureErr(e.to_string()),
                            Err(e) if e.is_panic() => {
                                Ended::Panicked(panic_message(e.into_panic()))
                            }
                            Err(_) => Ended::Aborted,
                        };
                        let _ = tx.send(Msg::Done(task, ended, Vec::new()));
                    });
                    Ok(())
                }
                work => {
                    let mut cmd = match work {
                        Work::Shell(s) => match process::plain_words(s) {
                            // No shell syntax: run it directly, as make does.
                            Some(words) => {
                                let mut c = Command::new(words[0]);
                                c.args(&words[1..]);
                                c
                            }
                            None => {
                                let mut c = Command::new("/bin/sh");
                                c.arg("-c").arg(s);
                                c
                            }
                        },
                        Work::Argv(argv) => {
                            let mut c = Command::new(&argv[0]);
                            c.args(&argv[1..]);
                            c
                        }
                        Work::Closure(_) => unreachable!("handled above"),
                    };
                    for (k, v) in &spec.env {
                        cmd.env(k, v);
                    }
                    if let Some(dir) = &spec.cwd {
                        cmd.current_dir(dir);
                    }
                    self.client.configure(&mut cmd);
                    let capture = match self.options.output {
                        OutputMode::Grouped => Capture::Whole,
                        OutputMode::Line => Capture::Lines,
                        OutputMode::Inherit => Capture::None,
                    };
                    match process::spawn(&mut cmd, capture) {
                        Ok((child, out)) => {
                            slot.pgid = Some(child.id() as i32);
                            tokio::spawn(process::watch(task, child, out, capture, tx));
                            Ok(())
                        }
                        Err(e) => Err(match work {
                            Work::Argv(a) => format!("{}: {e}", a[0].to_string_lossy()),
                            _ => format!("/bin/sh: {e}"),
                        }),
                    }
                }
            }
        };
        self.slots.insert(task, slot);
        if spawned.is_ok() {
            let now = self.now();
            self.sched.handle_started(task, now);
        }
        let name = self.name(task);
        self.emit(&Event::Started {
            task,
            name,
            tokens: units,
            from,
        });
        if let Err(msg) = spawned {
            let _ = self.tx.as_ref().expect("set").send(Msg::Done(
                task,
                Ended::SpawnFailed(io::Error::other(msg)),
                Vec::new(),
            ));
        }
    }

    fn handle_msg(&mut self, msg: Msg, pool: &Pool) {
        match msg {
            Msg::Line(task, line) => {
                let name = self.name(task);
                self.emit(&Event::Output {
                    task,
                    name,
                    data: &line,
                });
            }
            Msg::Done(task, ended, output) => {
                let Some(slot) = self.slots.remove(&task) else {
                    return;
                };
                // The task's tokens go back to the collected set first; the scheduler
                // decides where they go next.
                self.wallet.extend(slot.tokens);
                drop(slot.lock);
                let duration = slot.started.elapsed();
                let (outcome, failure, log_status) = self.classify(ended);
                if let Some(log) = self.log.as_mut() {
                    let entry = Entry {
                        name: self.graph.tasks[task.index()].name.clone(),
                        start: slot.started_wall,
                        duration,
                        status: log_status,
                    };
                    if let Err(e) = log.append(&entry) {
                        let msg = format!("cannot write the job log {}: {e}", log.path().display());
                        self.log = None;
                        self.emit(&Event::Warning(&msg));
                    }
                }
                let name = self.name(task);
                if !output.is_empty() {
                    self.emit(&Event::Output {
                        task,
                        name,
                        data: &output,
                    });
                }
                self.emit(&Event::Finished {
                    task,
                    name,
                    failure: failure.as_ref(),
                    duration,
                });
                match failure {
                    Some(f) => {
                        self.failures.insert(task, f);
                    }
                    None => {
                        self.failures.remove(&task);
                    }
                }
                let now = self.now();
                self.sched.handle_finished(task, outcome, now);
                if let Pool::Own(server) = pool {
                    if server.pending_absorb() > 0 {
                        // Release what the scheduler gave back first, then absorb.
                        self.carry_out();
                        let _ = server.absorb();
                    }
                }
            }
        }
    }

    fn classify(&self, ended: Ended) -> (Outcome, Option<Failure>, LogStatus) {
        let retry = self.options.retry_exit_code;
        match ended {
            Ended::Exited(s) => match (s.code(), s.signal()) {
                (Some(0), _) => (Outcome::Success, None, LogStatus::Ok),
                (Some(c), _) if Some(c) == retry && !self.stopped => {
                    (Outcome::Retry, Some(Failure::Exit(c)), LogStatus::Retry)
                }
                (Some(c), _) => {
                    let outcome = if self.stopped {
                        Outcome::Interrupted
                    } else {
                        Outcome::Failure
                    };
                    (outcome, Some(Failure::Exit(c)), LogStatus::Exit(c))
                }
                (None, Some(sig)) if self.stopped => (
                    Outcome::Interrupted,
                    Some(Failure::Interrupted),
                    LogStatus::Signal(sig),
                ),
                (None, Some(sig)) => (
                    Outcome::Failure,
                    Some(Failure::Signal(sig)),
                    LogStatus::Signal(sig),
                ),
                (None, None) => (Outcome::Failure, Some(Failure::Signal(0)), LogStatus::Error),
            },
            Ended::SpawnFailed(e) => (
                Outcome::Failure,
                Some(Failure::Spawn(e.to_string())),
                LogStatus::Error,
            ),
            Ended::ClosureOk => (Outcome::Success, None, LogStatus::Ok),
            Ended::ClosureErr(m) => (Outcome::Failure, Some(Failure::Error(m)), LogStatus::Error),
            Ended::Panicked(m) => (Outcome::Failure, Some(Failure::Panic(m)), LogStatus::Error),
            Ended::Aborted => (
                Outcome::Interrupted,
                Some(Failure::Interrupted),
                LogStatus::Error,
            ),
        }
    }
}

/// make's flags from `CARGO_MAKEFLAGS`, `MAKEFLAGS` or `MFLAGS` (make's own choice among
/// them), whether or not they name a jobserver. `None` when none is set or it cannot be
/// parsed.
fn env_make_flags() -> Option<jobserver_tokio::MakeFlags> {
    use std::os::unix::ffi::OsStringExt;
    let found = jobserver_proto::makeflags::from_env(|k| std::env::var_os(k).map(|v| v.into_vec()));
    match found {
        Ok(f) if f.var.is_some() => Some(f.flags),
        _ => None,
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a non-string panic payload)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_uncounted_own_pool_is_never_a_clean_audit() {
        let clean = Audit {
            ledger: Ledger::default(),
            bytes_read: 2,
            bytes_written: 2,
            bytes_held: 0,
            bytes_unwritten: 0,
            pool_lost: Some(0),
            pool_extra: Some(0),
            pool_unchecked: false,
        };
        assert!(clean.is_clean());
        let refused = Audit {
            pool_lost: None,
            pool_extra: None,
            pool_unchecked: true,
            ..clean
        };
        assert!(!refused.is_clean());
    }

    #[test]
    fn termseq_parses_gnu_parallel_form() {
        let t = TermSeq::parse("TERM,200,SIGINT,10,KILL,25").unwrap();
        assert_eq!(
            t.steps,
            vec![
                (Signal::TERM, Duration::from_millis(200)),
                (Signal::INT, Duration::from_millis(10)),
                (Signal::KILL, Duration::from_millis(25)),
            ]
        );
        assert!(TermSeq::parse("TERM").is_err());
        assert!(TermSeq::parse("NOPE,1").unwrap_err().contains("NOPE"));
        assert!(TermSeq::parse("TERM,x").unwrap_err().contains("`x`"));
    }
}
