//! The task-graph file of the `jobrun` command: TOML, one `[[task]]` table per task.
//!
//! ```toml
//! [[task]]
//! name = "compile-a"          # unique
//! cmd = "cc -c a.c"           # run with sh -c; or argv = ["cc", "-c", "a.c"]
//! deps = ["generate"]         # optional
//! tokens = 2                  # optional, default 1
//! lock = "locks/zlib"         # optional: flock'ed; busy means re-queue without a token
//! then = "link-a"             # optional: successor that inherits this task's tokens
//! duration = 1.5              # optional hint in seconds, used until the job log knows better
//! env = { CFLAGS = "-O2" }    # optional environment variables
//! dir = "build"               # optional working directory
//! ```
//!
//! Relative `lock` and `dir` paths are relative to the directory `jobrun` runs in. Unknown
//! keys, a task with neither or both of `cmd` and `argv`, duplicate names, unknown names and
//! cycles are errors that name the file, the line, the task and the key.
//!
//! ```
//! let text = r#"
//! [[task]]
//! name = "a"
//! cmd = "true"
//!
//! [[task]]
//! name = "b"
//! cmd = "true"
//! deps = ["nope"]
//! "#;
//! let err = jobrun::file::parse(text, "graph.toml".as_ref()).unwrap_err();
//! assert_eq!(err.to_string(),
//!     "graph.toml:9: task `b`, key `deps`: task `b` depends on `nope`, but no task has that name");
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::task::{Task, TaskGraph};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    #[serde(default)]
    task: Vec<Spanned<TaskDoc>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskDoc {
    name: Spanned<String>,
    cmd: Option<Spanned<String>>,
    argv: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    deps: Option<Spanned<Vec<String>>>,
    tokens: Option<Spanned<i64>>,
    lock: Option<String>,
    then: Option<Spanned<String>>,
    duration: Option<Spanned<f64>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    dir: Option<String>,
}

/// A graph file that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    /// The file.
    pub path: PathBuf,
    /// The line (from 1), when known.
    pub line: Option<usize>,
    /// The task, when known.
    pub task: Option<String>,
    /// The key, when known.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": ")?;
        match (&self.task, &self.key) {
            (Some(t), Some(k)) => write!(f, "task `{t}`, key `{k}`: ")?,
            (Some(t), None) => write!(f, "task `{t}`: ")?,
            (None, Some(k)) => write!(f, "key `{k}`: ")?,
            (None, None) => {}
        }
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for FileError {}

/// Where a task's name, `deps`, `then` and `tokens` are in the text.
type KeySpans = (
    Range<usize>,
    Option<Range<usize>>,
    Option<Range<usize>>,
    Option<Range<usize>>,
);

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

/// Reads and validates the graph file at `path`.
///
/// # Errors
///
/// When it cannot be read, is not valid TOML of this format, or its graph is invalid.
pub fn load(path: &Path) -> Result<TaskGraph, FileError> {
    let text = std::fs::read_to_string(path).map_err(|e| FileError {
        path: path.to_owned(),
        line: None,
        task: None,
        key: None,
        message: format!("cannot read it: {e}"),
    })?;
    parse(&text, path)
}

/// Parses and validates graph-file text; `path` is used in messages.
///
/// # Errors
///
/// As [`load`].
pub fn parse(text: &str, path: &Path) -> Result<TaskGraph, FileError> {
    let err =
        |span: Option<Range<usize>>, task: Option<&str>, key: Option<&str>, message: String| {
            FileError {
                path: path.to_owned(),
                line: span.map(|s| line_of(text, s.start)),
                task: task.map(str::to_owned),
                key: key.map(str::to_owned),
                message,
            }
        };
    let doc: Doc = toml::from_str(text).map_err(|e| {
        let message = e.message().trim_end().to_owned();
        // Name the key serde complains about, when it says which.
        let key = message
            .strip_prefix("unknown field `")
            .and_then(|m| m.split('`').next())
            .map(str::to_owned);
        let task = e.span().and_then(|s| task_at(text, s.start));
        FileError {
            path: path.to_owned(),
            line: e.span().map(|s| line_of(text, s.start)),
            task,
            key,
            message,
        }
    })?;
    let mut graph = TaskGraph::new();
    let mut spans: Vec<KeySpans> = Vec::new();
    for t in &doc.task {
        let t_span = t.span();
        let t = t.get_ref();
        let name = t.name.get_ref().as_str();
        if name.is_empty() {
            return Err(err(
                Some(t.name.span()),
                None,
                Some("name"),
                "a task name cannot be empty".into(),
            ));
        }
        let mut task = match (&t.cmd, &t.argv) {
            (Some(cmd), None) => Task::shell(name, cmd.get_ref().clone()),
            (None, Some(argv)) => {
                if argv.get_ref().is_empty() {
                    return Err(err(
                        Some(argv.span()),
                        Some(name),
                        Some("argv"),
                        "argv needs at least the program to run".into(),
                    ));
                }
                Task::argv(name, argv.get_ref().iter().cloned())
            }
            (Some(_), Some(argv)) => {
                return Err(err(
                    Some(argv.span()),
                    Some(name),
                    Some("argv"),
                    "give either `cmd` (run with sh -c) or `argv`, not both".into(),
                ))
            }
            (None, None) => {
                return Err(err(
                    Some(t_span),
                    Some(name),
                    Some("cmd"),
                    "missing `cmd` (a shell command) or `argv` (a program and its arguments)"
                        .into(),
                ))
            }
        };
        if let Some(deps) = &t.deps {
            task = task.deps(deps.get_ref().iter().cloned());
        }
        if let Some(tokens) = &t.tokens {
            let n = *tokens.get_ref();
            if !(1..=i64::from(u32::MAX)).contains(&n) {
                return Err(err(
                    Some(tokens.span()),
                    Some(name),
                    Some("tokens"),
                    format!("{n} tokens: a task needs at least 1"),
                ));
            }
            task = task.tokens(n as u32);
        }
        if let Some(lock) = &t.lock {
            task = task.lock(lock);
        }
        if let Some(then) = &t.then {
            task = task.then(then.get_ref().clone());
        }
        if let Some(d) = &t.duration {
            let secs = *d.get_ref();
            if !(secs.is_finite() && secs >= 0.0) {
                return Err(err(
                    Some(d.span()),
                    Some(name),
                    Some("duration"),
                    format!("{secs}: a duration is a number of seconds, 0 or more"),
                ));
            }
            task = task.duration(Duration::from_secs_f64(secs.min(1e9)));
        }
        for (k, v) in &t.env {
            task = task.env(k, v);
        }
        if let Some(dir) = &t.dir {
            task = task.current_dir(dir);
        }
        graph.add(task);
        spans.push((
            t.name.span(),
            t.deps.as_ref().map(|d| d.span()),
            t.then.as_ref().map(|d| d.span()),
            t.tokens.as_ref().map(|d| d.span()),
        ));
    }
    if let Err(e) = graph.validate() {
        // Point at the task the error names: its second declaration for a duplicate.
        let task = e.task().map(str::to_owned);
        let idx = task.as_deref().and_then(|name| {
            let mut matching = doc
                .task
                .iter()
                .enumerate()
                .filter(|(_, t)| t.get_ref().name.get_ref() == name)
                .map(|(i, _)| i);
            let first = matching.next();
            match e.kind() {
                crate::sched::GraphErrorKind::DuplicateName => matching.next().or(first),
                _ => first,
            }
        });
        let key = e.key();
        let span = idx.map(|i| {
            let (name, deps, then, tokens) = &spans[i];
            match key {
                Some("deps") => deps.clone().unwrap_or(name.clone()),
                Some("then") => then.clone().unwrap_or(name.clone()),
                Some("tokens") => tokens.clone().unwrap_or(name.clone()),
                _ => name.clone(),
            }
        });
        return Err(err(span, task.as_deref(), key, e.to_string()));
    }
    Ok(graph)
}

/// The name of the `[[task]]` table around `offset`, for messages from the TOML parser.
fn task_at(text: &str, offset: usize) -> Option<String> {
    let before = &text[..offset.min(text.len())];
    let start = before.rfind("[[task]]")?;
    let table = &text[start..];
    let end = table[8..].find("[[").map_or(table.len(), |e| e + 8);
    let table = &table[..end];
    for line in table.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("name") {
            let rest = rest.trim_start().strip_prefix('=')?.trim();
            let v: toml::Value = toml::from_str(&format!("v = {rest}")).ok()?;
            return v.get("v")?.as_str().map(str::to_owned);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(text: &str) -> FileError {
        parse(text, Path::new("g.toml")).unwrap_err()
    }

    #[test]
    fn unknown_key_names_line_task_and_key() {
        let e = parse_err("[[task]]\nname = \"a\"\ncmd = \"true\"\ntokenz = 2\n");
        assert_eq!(e.line, Some(4), "{e}");
        assert_eq!(e.task.as_deref(), Some("a"), "{e}");
        assert_eq!(e.key.as_deref(), Some("tokenz"), "{e}");
    }

    #[test]
    fn duplicate_points_at_the_second() {
        let e =
            parse_err("[[task]]\nname = \"a\"\ncmd = \"x\"\n[[task]]\nname = \"a\"\ncmd = \"y\"\n");
        assert_eq!(e.line, Some(5), "{e}");
        assert_eq!(e.key.as_deref(), Some("name"));
    }

    #[test]
    fn cycle_and_missing_cmd_are_named() {
        let e = parse_err(
            "[[task]]\nname = \"a\"\ncmd = \"x\"\ndeps = [\"b\"]\n[[task]]\nname = \"b\"\ncmd = \"y\"\ndeps = [\"a\"]\n",
        );
        assert!(e.message.contains("cycle"), "{e}");
        assert_eq!(e.key.as_deref(), Some("deps"));
        let e = parse_err("[[task]]\nname = \"a\"\n");
        assert_eq!(e.key.as_deref(), Some("cmd"), "{e}");
        let e = parse_err("[[task]]\nname = \"a\"\ncmd = \"x\"\ntokens = 0\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(4), Some("tokens")), "{e}");
    }

    #[test]
    fn a_full_task_parses() {
        let g = parse(
            "[[task]]\nname = \"a\"\nargv = [\"echo\", \"hi\"]\ntokens = 2\nlock = \"l\"\nthen = \"b\"\nduration = 1.5\nenv = { X = \"1\" }\ndir = \".\"\n[[task]]\nname = \"b\"\ncmd = \"true\"\n",
            Path::new("g.toml"),
        )
        .unwrap();
        assert_eq!(g.len(), 2);
        let a = &g.tasks()[0];
        assert_eq!(a.token_count(), 2);
        assert_eq!(a.duration, Some(Duration::from_millis(1500)));
        assert_eq!(a.then.as_deref(), Some("b"));
    }
}
