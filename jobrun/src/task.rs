//! The task model: what a task runs, what it needs, and the graph builder.

use std::error::Error as StdError;
use std::ffi::OsString;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::sched::{Graph, GraphError, NodeSpec};

/// The error type of an in-process task.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// The future an in-process task returns.
pub type TaskFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send + 'static>>;

type Closure = Arc<dyn Fn(TaskContext) -> TaskFuture + Send + Sync + 'static>;

/// What an in-process task is given when it starts.
#[derive(Debug, Clone)]
pub struct TaskContext {
    pub(crate) name: Arc<str>,
    pub(crate) tokens: u32,
    pub(crate) attempt: u32,
    pub(crate) client: jobserver_tokio::Client,
}

impl TaskContext {
    /// The task's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Token units the task holds while it runs: it may use that many threads or children.
    pub fn tokens(&self) -> u32 {
        self.tokens
    }

    /// How many times the task ran before (0 on its first run).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Lets a child process share the run's pool (for children the task spawns itself).
    pub fn configure<'c>(
        &self,
        cmd: &'c mut std::process::Command,
    ) -> &'c mut std::process::Command {
        self.client.configure(cmd)
    }
}

/// What a task runs.
#[derive(Clone)]
pub enum Work {
    /// A shell command line, run with `sh -c`.
    Shell(String),
    /// A program and its arguments, run directly.
    Argv(Vec<OsString>),
    /// An async closure, run in-process while the task holds its tokens.
    Closure(Closure),
}

impl fmt::Debug for Work {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Work::Shell(s) => f.debug_tuple("Shell").field(s).finish(),
            Work::Argv(a) => f.debug_tuple("Argv").field(a).finish(),
            Work::Closure(_) => f.write_str("Closure(..)"),
        }
    }
}

impl Work {
    /// The command as a person would type it (for dry runs and messages).
    pub fn display(&self) -> String {
        match self {
            Work::Shell(s) => s.clone(),
            Work::Argv(a) => a
                .iter()
                .map(|w| {
                    let w = w.to_string_lossy();
                    if !w.is_empty()
                        && w.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
                    {
                        w.into_owned()
                    } else {
                        format!("'{}'", w.replace('\'', r"'\''"))
                    }
                })
                .collect::<Vec<_>>()
                .join(" "),
            Work::Closure(_) => "(in-process task)".to_owned(),
        }
    }
}

/// One task: a name, what it runs, and what it needs.
///
/// ```
/// use jobrun::Task;
/// let compile = Task::shell("compile-a", "cc -c a.c")
///     .deps(["generate"])
///     .tokens(2)
///     .then("link-a")
///     .duration(std::time::Duration::from_millis(1500));
/// assert_eq!(compile.name(), "compile-a");
/// ```
#[derive(Debug, Clone)]
pub struct Task {
    pub(crate) name: String,
    pub(crate) work: Work,
    pub(crate) deps: Vec<String>,
    pub(crate) tokens: u32,
    pub(crate) lock: Option<PathBuf>,
    pub(crate) then: Option<String>,
    pub(crate) duration: Option<Duration>,
    pub(crate) env: Vec<(OsString, OsString)>,
    pub(crate) cwd: Option<PathBuf>,
}

impl Task {
    fn with(name: impl Into<String>, work: Work) -> Self {
        Task {
            name: name.into(),
            work,
            deps: Vec::new(),
            tokens: 1,
            lock: None,
            then: None,
            duration: None,
            env: Vec::new(),
            cwd: None,
        }
    }

    /// A task that runs `command` with `sh -c`.
    pub fn shell(name: impl Into<String>, command: impl Into<String>) -> Self {
        Self::with(name, Work::Shell(command.into()))
    }

    /// A task that runs a program directly: `argv[0]` with the rest as arguments.
    pub fn argv<I, S>(name: impl Into<String>, argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Self::with(name, Work::Argv(argv.into_iter().map(Into::into).collect()))
    }

    /// A task that runs `f` in-process while it holds its tokens. The future may be run more
    /// than once (a retry); it is dropped when the run is stopped. A panic or an `Err` fails
    /// the task; its tokens go back either way.
    pub fn closure<F, Fut>(name: impl Into<String>, f: F) -> Self
    where
        F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        Self::with(name, Work::Closure(Arc::new(move |cx| Box::pin(f(cx)))))
    }

    /// Adds dependencies: tasks that must succeed before this one starts.
    pub fn deps<I, S>(mut self, deps: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.deps.extend(deps.into_iter().map(Into::into));
        self
    }

    /// Token units the task holds while it runs (default 1, at least 1): a task that runs
    /// `make -j4` itself, or a compiler with 4 threads, asks for 4.
    pub fn tokens(mut self, units: u32) -> Self {
        self.tokens = units;
        self
    }

    /// A lock file: the task starts only once it holds an exclusive `flock` on it (created
    /// if missing). While another process holds it, the task waits in the queue holding no
    /// token.
    pub fn lock(mut self, path: impl Into<PathBuf>) -> Self {
        self.lock = Some(path.into());
        self
    }

    /// A successor that inherits this task's tokens when it succeeds (it is made to depend
    /// on this task). The tokens move without a write to or read from the jobserver.
    pub fn then(mut self, successor: impl Into<String>) -> Self {
        self.then = Some(successor.into());
        self
    }

    /// A duration hint, used for priorities until the job log knows better.
    pub fn duration(mut self, hint: Duration) -> Self {
        self.duration = Some(hint);
        self
    }

    /// Sets an environment variable for the task's process.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Runs the task's process in `dir`.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// The task's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What it runs.
    pub fn work(&self) -> &Work {
        &self.work
    }

    /// Token units it asks for.
    pub fn token_count(&self) -> u32 {
        self.tokens
    }

    /// Its lock file, if any.
    pub fn lock_path(&self) -> Option<&std::path::Path> {
        self.lock.as_deref()
    }
}

/// A set of tasks to run, in declaration order (which breaks priority ties).
///
/// ```
/// use jobrun::{Task, TaskGraph};
/// let mut graph = TaskGraph::new();
/// graph.add(Task::shell("gen", "echo gen"));
/// graph.add(Task::shell("build", "echo build").deps(["gen"]));
/// assert_eq!(graph.len(), 2);
/// ```
#[derive(Debug, Clone, Default)]
pub struct TaskGraph {
    pub(crate) tasks: Vec<Task>,
}

impl TaskGraph {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// A graph of independent shell commands, one task each, named after the command (a
    /// repeated command gets ` #2`, ` #3`, ... so that names stay unique and stable from
    /// one run to the next, for the job log).
    pub fn from_commands<I, S>(commands: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut seen = std::collections::HashMap::<String, u32>::new();
        let mut g = TaskGraph::new();
        for c in commands {
            let c: String = c.into();
            let n = seen.entry(c.clone()).or_insert(0);
            *n += 1;
            let name = if *n == 1 {
                c.clone()
            } else {
                format!("{c} #{n}")
            };
            g.add(Task::shell(name, c));
        }
        g
    }

    /// Adds a task.
    pub fn add(&mut self, task: Task) -> &mut Self {
        self.tasks.push(task);
        self
    }

    /// The tasks, in declaration order.
    pub fn tasks(&self) -> &[Task] {
        &self.tasks
    }

    /// The number of tasks.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether there are no tasks.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Validates the graph for the scheduler.
    ///
    /// # Errors
    ///
    /// Duplicate names, unknown names, cycles: see [`GraphError`].
    pub fn validate(&self) -> Result<Graph, GraphError> {
        Graph::new(self.tasks.iter().map(|t| NodeSpec {
            name: t.name.clone(),
            deps: t.deps.clone(),
            tokens: t.tokens,
            locked: t.lock.is_some(),
            then: t.then.clone(),
            hint: t.duration,
        }))
    }
}

impl FromIterator<Task> for TaskGraph {
    fn from_iter<I: IntoIterator<Item = Task>>(iter: I) -> Self {
        TaskGraph {
            tasks: iter.into_iter().collect(),
        }
    }
}

impl Extend<Task> for TaskGraph {
    fn extend<I: IntoIterator<Item = Task>>(&mut self, iter: I) {
        self.tasks.extend(iter);
    }
}
