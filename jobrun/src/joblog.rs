//! The job log: one line per finished task, read at the next run for priorities and the ETA.
//!
//! # Format
//!
//! A text file. The first line is `# jobrun log v1`; every other line is one finished run of
//! a task, four fields separated by tabs:
//!
//! ```text
//! # jobrun log v1
//! compile-a<TAB>1764612345678<TAB>1523400<TAB>ok
//! test-b<TAB>1764612347201<TAB>20311<TAB>exit:1
//! ```
//!
//! 1. the task's name, with `\` written as `\\`, a tab as `\t` and a newline as `\n`;
//! 2. when it started, in milliseconds since the Unix epoch;
//! 3. how long it ran, in microseconds;
//! 4. how it ended: `ok`, `exit:N` (exit status N), `signal:N` (killed by signal N),
//!    `retry` (asked to be retried later), or `error` (it could not start, or an in-process
//!    task failed or panicked).
//!
//! Lines are appended as tasks end, so a run that is interrupted keeps what it learned. At
//! the next run the latest successful duration of each name is its cost. A log that grew to
//! more than twice its number of names (plus 100 lines) is rewritten with the latest line of
//! each name. Lines that cannot be parsed are ignored.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The first line of a job log.
pub const HEADER: &str = "# jobrun log v1";

/// How a logged run ended (field 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStatus {
    /// `ok`.
    Ok,
    /// `exit:N`.
    Exit(i32),
    /// `signal:N`.
    Signal(i32),
    /// `retry`.
    Retry,
    /// `error`.
    Error,
}

impl std::fmt::Display for LogStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogStatus::Ok => f.write_str("ok"),
            LogStatus::Exit(n) => write!(f, "exit:{n}"),
            LogStatus::Signal(n) => write!(f, "signal:{n}"),
            LogStatus::Retry => f.write_str("retry"),
            LogStatus::Error => f.write_str("error"),
        }
    }
}

impl LogStatus {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ok" => LogStatus::Ok,
            "retry" => LogStatus::Retry,
            "error" => LogStatus::Error,
            _ => {
                if let Some(n) = s.strip_prefix("exit:") {
                    LogStatus::Exit(n.parse().ok()?)
                } else if let Some(n) = s.strip_prefix("signal:") {
                    LogStatus::Signal(n.parse().ok()?)
                } else {
                    return None;
                }
            }
        })
    }
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The task's name.
    pub name: String,
    /// When it started.
    pub start: SystemTime,
    /// How long it ran.
    pub duration: Duration,
    /// How it ended.
    pub status: LogStatus,
}

impl Entry {
    /// The entry as one line, with its newline.
    pub fn to_line(&self) -> String {
        let start = self
            .start
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let micros = u64::try_from(self.duration.as_micros()).unwrap_or(u64::MAX);
        format!(
            "{}\t{}\t{micros}\t{}\n",
            escape(&self.name),
            u64::try_from(start).unwrap_or(u64::MAX),
            self.status
        )
    }

    /// Parses one line (without its newline). `None` for a comment or a malformed line.
    pub fn parse(line: &str) -> Option<Entry> {
        if line.starts_with('#') {
            return None;
        }
        let mut fields = line.split('\t');
        let name = unescape(fields.next()?)?;
        let start: u64 = fields.next()?.parse().ok()?;
        let duration: u64 = fields.next()?.parse().ok()?;
        let status = LogStatus::parse(fields.next()?)?;
        if fields.next().is_some() {
            return None;
        }
        Some(Entry {
            name,
            start: UNIX_EPOCH + Duration::from_millis(start),
            duration: Duration::from_micros(duration),
            status,
        })
    }
}

fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

fn unescape(field: &str) -> Option<String> {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.push(match chars.next()? {
                '\\' => '\\',
                't' => '\t',
                'n' => '\n',
                'r' => '\r',
                _ => return None,
            });
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// What a previous run's log says: the latest successful duration of each task.
#[derive(Debug, Clone, Default)]
pub struct History {
    durations: HashMap<String, Duration>,
    lines: usize,
}

impl History {
    /// Reads the log at `path`. A missing file is an empty history.
    ///
    /// # Errors
    ///
    /// When the file exists but cannot be read.
    pub fn read(path: &Path) -> io::Result<History> {
        match File::open(path) {
            Ok(f) => Self::from_reader(BufReader::new(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(History::default()),
            Err(e) => Err(e),
        }
    }

    /// Reads a log from any reader.
    ///
    /// # Errors
    ///
    /// When reading fails.
    pub fn from_reader(reader: impl BufRead) -> io::Result<History> {
        let mut h = History::default();
        for line in reader.split(b'\n') {
            let line = line?;
            let Ok(line) = std::str::from_utf8(&line) else {
                continue;
            };
            if let Some(e) = Entry::parse(line.trim_end_matches('\r')) {
                h.lines += 1;
                if e.status == LogStatus::Ok {
                    h.durations.insert(e.name, e.duration);
                }
            }
        }
        Ok(h)
    }

    /// The latest successful duration of `name`.
    pub fn duration(&self, name: &str) -> Option<Duration> {
        self.durations.get(name).copied()
    }

    /// Tasks with a known duration.
    pub fn len(&self) -> usize {
        self.durations.len()
    }

    /// Whether nothing is known.
    pub fn is_empty(&self) -> bool {
        self.durations.is_empty()
    }

    fn wants_compaction(&self) -> bool {
        self.lines > 2 * self.durations.len() + 100
    }
}

/// An open job log that lines are appended to as tasks end.
#[derive(Debug)]
pub struct JobLog {
    path: PathBuf,
    file: File,
}

impl JobLog {
    /// Opens (creating) the log at `path` for appending, first rewriting it compactly when
    /// `history` (read from it) says it has grown too long.
    ///
    /// # Errors
    ///
    /// When the file cannot be created, rewritten or opened.
    pub fn open(path: &Path, history: &History) -> io::Result<JobLog> {
        if history.wants_compaction() {
            compact(path)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let mut log = JobLog {
            path: path.to_owned(),
            file,
        };
        if log.file.metadata()?.len() == 0 {
            log.file.write_all(format!("{HEADER}\n").as_bytes())?;
        }
        Ok(log)
    }

    /// Appends one entry (one `write` call, so concurrent runs interleave whole lines).
    ///
    /// # Errors
    ///
    /// When the write fails.
    pub fn append(&mut self, entry: &Entry) -> io::Result<()> {
        self.file.write_all(entry.to_line().as_bytes())
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Rewrites the log with the latest line of each name, in order of last appearance,
/// atomically (a temporary file renamed over it).
fn compact(path: &Path) -> io::Result<()> {
    let reader = BufReader::new(File::open(path)?);
    let mut latest: HashMap<String, (usize, String)> = HashMap::new();
    for (i, line) in reader.split(b'\n').enumerate() {
        let line = line?;
        let Ok(line) = std::str::from_utf8(&line) else {
            continue;
        };
        if let Some(e) = Entry::parse(line) {
            // Keep the latest successful line; a failure only when nothing succeeded.
            let keep = match latest.get(&e.name) {
                Some((_, old)) if e.status != LogStatus::Ok => {
                    Entry::parse(old).is_some_and(|o| o.status != LogStatus::Ok)
                }
                _ => true,
            };
            if keep {
                latest.insert(e.name, (i, line.to_owned()));
            }
        }
    }
    let mut lines: Vec<(usize, String)> = latest.into_values().collect();
    lines.sort_unstable();
    let tmp = path.with_extension("jobrun-tmp");
    {
        let mut out = io::BufWriter::new(File::create(&tmp)?);
        writeln!(out, "{HEADER}")?;
        for (_, l) in &lines {
            writeln!(out, "{l}")?;
        }
        out.flush()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_with_awkward_names() {
        let e = Entry {
            name: "a\tb\\c\nd é".into(),
            start: UNIX_EPOCH + Duration::from_millis(1_764_612_345_678),
            duration: Duration::from_micros(1_523_400),
            status: LogStatus::Exit(3),
        };
        let line = e.to_line();
        assert_eq!(line.matches('\t').count(), 3, "{line:?}");
        assert_eq!(Entry::parse(line.trim_end()), Some(e));
    }

    #[test]
    fn latest_success_wins_and_garbage_is_ignored() {
        let text = "# jobrun log v1\n\
                    a\t1\t100\tok\n\
                    a\t2\t300\tok\n\
                    a\t3\t5\texit:1\n\
                    garbage line\n\
                    b\t1\t7\tsignal:9\n";
        let h = History::from_reader(text.as_bytes()).unwrap();
        assert_eq!(h.duration("a"), Some(Duration::from_micros(300)));
        assert_eq!(h.duration("b"), None);
    }

    #[test]
    fn compaction_keeps_the_latest_line_of_each_name() {
        let dir = std::env::temp_dir().join(format!("jobrun-log-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        let mut text = String::from("# jobrun log v1\n");
        for i in 0..300 {
            text.push_str(&format!("t{}\t{i}\t{i}\tok\n", i % 3));
        }
        std::fs::write(&path, text).unwrap();
        let h = History::read(&path).unwrap();
        assert!(h.wants_compaction());
        drop(JobLog::open(&path, &h).unwrap());
        let h2 = History::read(&path).unwrap();
        assert_eq!(h2.lines, 3);
        assert_eq!(h2.duration("t0"), Some(Duration::from_micros(297)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
