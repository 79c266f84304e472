//! Reading and writing the jobserver options carried in `MAKEFLAGS`.
//!
//! This module is pure: it never reads the environment, opens a file or
//! checks a file descriptor. It turns the bytes of a `MAKEFLAGS`-style value
//! into a [`MakeFlags`] description ([`parse`]), picks the variable that
//! decides among `CARGO_MAKEFLAGS`, `MAKEFLAGS` and `MFLAGS` through a lookup
//! closure supplied by the caller ([`from_env`]), and builds the value a
//! server exports to its children ([`encode_pipe`], [`encode_fifo`], and
//! [`encode_pipe_with_flags`] / [`encode_fifo_with_flags`] to pass make's
//! one-letter flags on as well).
//!
//! The reading rules follow what GNU make 4.4.1 does when it finds its own
//! options in the environment:
//!
//! * the value is cut into words at blanks (space and tab); a backslash makes
//!   the byte after it part of the word, so `a\ b` is the single word `a b`;
//! * a word `--` ends the options: everything after it is a variable
//!   assignment, even if it looks like an option;
//! * a first word that neither starts with `-` nor contains `=` is a cluster
//!   of one-letter flags (`iks` reads as `-iks`);
//! * `--jobserver-auth` and `--jobserver-fds` are two names for one setting,
//!   and the last occurrence of either decides;
//! * options a client has no use for are skipped, together with the argument
//!   they take, so that an argument is never mistaken for an option.
//!
//! Values are bytes rather than `str` because an environment variable on
//! Unix may hold any bytes except NUL, and a fifo path is not necessarily
//! UTF-8.

use std::error::Error;
use std::fmt;
use std::num::NonZeroUsize;

/// What a `MAKEFLAGS`-style value says about the jobserver and the flags a
/// client may care about.
///
/// Obtained from [`parse`] or, with the variable it came from, from
/// [`from_env`]. [`MakeFlags::default`] describes an empty value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MakeFlags {
    /// How to reach the jobserver, if the value names one.
    pub auth: Auth,
    /// The `-j`/`--jobs` hint. It is only a hint: when a jobserver is
    /// present, the tokens it hands out are what limits parallelism.
    pub jobs: Jobs,
    /// Set by `n`, `-n`, `--dry-run`, `--just-print` or `--recon`: make was
    /// asked to print commands instead of running them.
    pub dry_run: bool,
    /// Set by `k`, `-k` or `--keep-going`; a later `-S`, `--no-keep-going` or
    /// `--stop` clears it again.
    pub keep_going: bool,
    /// Set by `s`, `-s`, `--silent` or `--quiet`.
    pub silent: bool,
    /// Set by `i`, `-i` or `--ignore-errors`.
    pub ignore_errors: bool,
    /// Whether make prints debugging information: set by `d`, `-d`,
    /// `--debug` or `--debug=LEVELS`, as GNU make 4.4.1 decides it.
    ///
    /// make writes `-d` as the letter `d` of the flag cluster and `--debug`
    /// as `--debug=basic`. The level `n` (`none`) in a `--debug` list turns
    /// debugging off again, even that of a `-d` written anywhere in the
    /// value, because make applies `-d` before every `--debug` list: the last
    /// level of the last list decides (`--debug=n -d` is off, `-d
    /// --debug=n,b` is on). Levels other than `a`, `b`, `i`, `j`, `m`, `n`,
    /// `p`, `v` and `w` (only the first letter of each comma-separated level
    /// counts, in either case) are ignored here; make itself rejects them.
    ///
    /// Which kinds of debugging were asked for is not kept. The encoders
    /// write the flag back as `d` (see [`encode_flags`]).
    pub debug: bool,
    /// The variable assignments after the word `--` (make's command-line
    /// variables, such as `FOO=bar Y=a\ b`), exactly as written in the
    /// value: make's escapes are kept, so that writing them back after a
    /// `--` gives a child the same variables. Empty when there are none.
    ///
    /// make writes them in the value it exports and a child make defines
    /// them again; the `_with_flags` encoders write them back
    /// ([`encode_pipe_with_flags`], [`encode_fifo_with_flags`]).
    pub variables: Vec<u8>,
}

impl MakeFlags {
    /// Whether the value carried a jobserver option at all, that is whether
    /// [`auth`](MakeFlags::auth) is anything other than [`Auth::None`].
    ///
    /// A [disabled](Auth::Disabled) jobserver counts: make did pass one, and
    /// the caller should explain why it cannot be used rather than behave as
    /// if no make were involved.
    pub fn has_jobserver(&self) -> bool {
        self.auth != Auth::None
    }
}

impl Default for MakeFlags {
    /// No jobserver, no jobs hint and every flag off: what an empty value
    /// means.
    fn default() -> Self {
        MakeFlags {
            auth: Auth::None,
            jobs: Jobs::Unspecified,
            dry_run: false,
            keep_going: false,
            silent: false,
            ignore_errors: false,
            debug: false,
            variables: Vec::new(),
        }
    }
}

/// The jobserver named by a `--jobserver-auth` (or `--jobserver-fds`) option.
///
/// Parsing only reads the text: whether the descriptors are open, or whether
/// the path names a fifo, is checked when connecting.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Auth {
    /// The value has no jobserver option.
    None,
    /// `R,W`: descriptors of an anonymous pipe inherited from make. Both are
    /// zero or more.
    Pipe {
        /// Descriptor to read tokens from.
        read: i32,
        /// Descriptor to write tokens back to.
        write: i32,
    },
    /// `R,W` where at least one number is negative. make 4.4 writes
    /// `-2,-2` for a child it does not consider recursive: this process
    /// must run with its implicit slot only, and the user can fix it by
    /// marking the make rule with `+`. This is not a parse error.
    Disabled {
        /// The first number as written.
        read: i32,
        /// The second number as written.
        write: i32,
    },
    /// `fifo:PATH` (make 4.4 and later): the path of a named pipe to open,
    /// with make's backslash escapes already removed. Never empty.
    Fifo(Vec<u8>),
    /// Any other value that does not start like a pair of numbers. On
    /// Windows this is the name of the semaphore make created; on Unix no
    /// make writes it, and a client should report it as unsupported.
    Semaphore(Vec<u8>),
}

/// The `-j` hint found in the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Jobs {
    /// No usable `-j` or `--jobs` option.
    #[default]
    Unspecified,
    /// `-jN` with N at least 1. A number too large for `usize` becomes
    /// `usize::MAX`.
    Limited(NonZeroUsize),
    /// `-j` or `--jobs` without a number: no limit.
    Unlimited,
}

/// A jobserver option whose value cannot be understood.
///
/// Only the jobserver option can make [`parse`] fail: a client ignores any
/// other option it does not understand, as make does with the hint options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    option: &'static str,
    value: Vec<u8>,
    kind: ParseErrorKind,
}

/// What is wrong with a jobserver option's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// The value is empty, or the option is the last word and has no value.
    Empty,
    /// The value starts like a number but is not two numbers separated by a
    /// comma (for example `7`, `7,` or `0x7,8`).
    NotFdPair,
    /// One of the two numbers does not fit in a C `int`.
    FdOutOfRange,
    /// The value is `fifo:` with nothing after it.
    EmptyFifoPath,
}

impl ParseError {
    /// What is wrong with the value.
    pub fn kind(&self) -> ParseErrorKind {
        self.kind
    }

    /// The value as found in the variable, after make's backslash escapes
    /// were removed.
    pub fn value(&self) -> &[u8] {
        &self.value
    }

    /// The option that carried the value, as written: `"--jobserver-auth"`
    /// or `"--jobserver-fds"`.
    pub fn option(&self) -> &'static str {
        self.option
    }
}

/// What a jobserver value should look like, for error messages.
const EXPECTED_AUTH: &str =
    "expected two file descriptors `R,W` (as make writes them) or `fifo:PATH`";

/// Why a malformed value is there, for error messages.
const LIKELY_CAUSE: &str = "make never writes such a value, so the variable was \
                            probably written by hand or corrupted";

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let option = self.option;
        let value = Shown(&self.value);
        match self.kind {
            ParseErrorKind::Empty => {
                write!(f, "empty {option} value: {EXPECTED_AUTH}; {LIKELY_CAUSE}")
            }
            ParseErrorKind::NotFdPair => write!(
                f,
                "invalid {option} value `{value}`: {EXPECTED_AUTH}; {LIKELY_CAUSE}"
            ),
            ParseErrorKind::FdOutOfRange => write!(
                f,
                "invalid {option} value `{value}`: a file descriptor number is outside \
                 the range of a C `int`; {EXPECTED_AUTH}; {LIKELY_CAUSE}"
            ),
            ParseErrorKind::EmptyFifoPath => write!(
                f,
                "invalid {option} value `{value}`: the path after `fifo:` is empty; \
                 expected `fifo:PATH` naming the jobserver's named pipe; {LIKELY_CAUSE}"
            ),
        }
    }
}

impl Error for ParseError {}

/// Displays bytes as lossy UTF-8, with control characters escaped so that a
/// stray newline or escape sequence cannot garble an error message.
struct Shown<'a>(&'a [u8]);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in String::from_utf8_lossy(self.0).chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// Reads a `MAKEFLAGS`-style value.
///
/// Returns the jobserver, the jobs hint and the flags the value carries. An
/// empty value, or one without any option of interest, gives
/// [`MakeFlags::default`]. Unknown options and variable assignments are
/// ignored, as a client cannot know every option of every make version.
///
/// When the jobserver option appears more than once (under either name), only
/// the last occurrence is validated; an earlier malformed one is forgotten.
///
/// # Errors
///
/// Fails only when the last jobserver option has a value that is neither a
/// pair of numbers, nor `fifo:` followed by a path, nor something that could
/// be a Windows semaphore name; [`ParseError::kind`] says which.
///
/// # Examples
///
/// ```
/// use jobserver_proto::makeflags::{parse, Auth, Jobs};
///
/// let flags = parse(b" -j4 --jobserver-auth=fifo:/tmp/GMfifo8634 --no-print-directory")?;
/// assert_eq!(flags.auth, Auth::Fifo(b"/tmp/GMfifo8634".to_vec()));
/// assert_eq!(flags.jobs, Jobs::Limited(4.try_into().unwrap()));
/// # Ok::<(), jobserver_proto::makeflags::ParseError>(())
/// ```
pub fn parse(value: &[u8]) -> Result<MakeFlags, ParseError> {
    scan(value).finish()
}

/// The result of reading a value before the jobserver option is validated.
#[derive(Debug)]
struct Scan {
    /// Flags and jobs; `auth` stays [`Auth::None`] here.
    flags: MakeFlags,
    /// The last jobserver option seen: its name and its raw value.
    auth: Option<(&'static str, Vec<u8>)>,
}

impl Scan {
    fn finish(self) -> Result<MakeFlags, ParseError> {
        let mut flags = self.flags;
        if let Some((option, value)) = self.auth {
            flags.auth = parse_auth(option, value)?;
        }
        Ok(flags)
    }
}

/// The bytes make treats as word separators.
fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Cuts a value into words the way make does: blanks separate words, and a
/// backslash makes the next byte part of the word. A backslash that ends the
/// value stays as it is. Empty words are dropped.
#[cfg(test)]
fn split_words(value: &[u8]) -> Vec<Vec<u8>> {
    split_words_with_spans(value)
        .into_iter()
        .map(|(word, _)| word)
        .collect()
}

/// The words of `value` as `split_words` cuts them, each with the range of
/// its raw bytes in `value`, escapes included.
fn split_words_with_spans(value: &[u8]) -> Vec<(Vec<u8>, std::ops::Range<usize>)> {
    let mut words = Vec::new();
    let mut word = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while let Some(&b) = value.get(i) {
        if word.is_empty() && !is_blank(b) {
            start = i;
        }
        if b == b'\\' {
            match value.get(i + 1) {
                Some(&next) => {
                    word.push(next);
                    i += 1;
                }
                None => word.push(b),
            }
        } else if is_blank(b) {
            if !word.is_empty() {
                words.push((std::mem::take(&mut word), start..i));
            }
        } else {
            word.push(b);
        }
        i += 1;
    }
    if !word.is_empty() {
        words.push((word, start..value.len()));
    }
    words
}

/// Long options that a client ignores but whose argument, when not attached
/// with `=`, is the next word.
const LONG_WITH_ARGUMENT: &[&[u8]] = &[
    b"directory",
    b"file",
    b"makefile",
    b"include-dir",
    b"old-file",
    b"assume-old",
    b"what-if",
    b"new-file",
    b"assume-new",
    b"eval",
    b"jobserver-style",
    b"sync-mutex",
    b"temp-stdin",
];

/// Walks the words of a value the way make's option parser would.
struct Scanner {
    words: Vec<Vec<u8>>,
    /// Where each word lies in the value, for the variables after `--`.
    spans: Vec<std::ops::Range<usize>>,
    /// Index of the next word to read.
    next: usize,
    /// A `d` flag (`-d`) was seen anywhere.
    debug_flag: bool,
    /// What the last known level of the `--debug` lists seen so far says:
    /// `Some(false)` for `n`, `Some(true)` for any other level.
    debug_level: Option<bool>,
    /// The scan stopped at a word `--`: the words from `next` on are variables.
    stopped_at_variables: bool,
    out: Scan,
}

fn scan(value: &[u8]) -> Scan {
    let (words, spans) = split_words_with_spans(value).into_iter().unzip();
    let mut scanner = Scanner {
        words,
        spans,
        next: 0,
        debug_flag: false,
        debug_level: None,
        stopped_at_variables: false,
        out: Scan {
            flags: MakeFlags::default(),
            auth: None,
        },
    };
    scanner.run();
    // The words after `--`, if the scan stopped there, raw as they were written.
    if let (Some(first), Some(last)) = (scanner.spans.get(scanner.next), scanner.spans.last()) {
        if scanner.stopped_at_variables {
            scanner.out.flags.variables = value[first.start..last.end].to_vec();
        }
    }
    scanner.out
}

impl Scanner {
    fn run(&mut self) {
        // A first word such as `iks` is a cluster of flags without its dash;
        // a first word such as `FOO=bar` is a variable.
        if let Some(first) = self.words.first() {
            if first.first() != Some(&b'-') && !first.contains(&b'=') {
                let cluster = first.clone();
                self.next = 1;
                self.short_cluster(&cluster);
            }
        }
        while let Some(word) = self.take_word() {
            if word == b"--" {
                // Everything after this is a variable assignment.
                self.stopped_at_variables = true;
                break;
            } else if let Some(long) = word.strip_prefix(b"--") {
                self.long_option(long);
            } else if let Some(cluster) = word.strip_prefix(b"-") {
                self.short_cluster(cluster);
            }
            // Other words are variables or targets.
        }
    }

    /// Returns the next word and moves past it.
    fn take_word(&mut self) -> Option<Vec<u8>> {
        let word = self.words.get(self.next)?.clone();
        self.next += 1;
        Some(word)
    }

    /// Returns the next word and moves past it if it is a number, as make
    /// accepts `-j 4` for `-j4`.
    fn take_number(&mut self) -> Option<Vec<u8>> {
        let word = self.words.get(self.next)?;
        if !word.is_empty() && word.iter().all(u8::is_ascii_digit) {
            self.take_word()
        } else {
            None
        }
    }

    /// Handles the letters of `-abc` (without the dash).
    fn short_cluster(&mut self, cluster: &[u8]) {
        for (i, &letter) in cluster.iter().enumerate() {
            let rest = &cluster[i + 1..];
            let flags = &mut self.out.flags;
            match letter {
                b'n' => flags.dry_run = true,
                b'k' => flags.keep_going = true,
                b'S' => flags.keep_going = false,
                b's' => flags.silent = true,
                b'i' => flags.ignore_errors = true,
                b'd' => {
                    self.debug_flag = true;
                    self.update_debug();
                }
                b'j' => {
                    if rest.is_empty() {
                        self.jobs_without_attached_argument();
                    } else {
                        set_jobs(flags, rest);
                    }
                    return;
                }
                b'C' | b'f' | b'I' | b'o' | b'W' | b'E' => {
                    // The argument is the rest of the cluster, or else the
                    // next word.
                    if rest.is_empty() {
                        self.next += 1;
                    }
                    return;
                }
                // Their argument can only be attached.
                b'l' | b'O' => return,
                _ => {}
            }
        }
    }

    /// Handles `-j` or `--jobs` with nothing attached: a following number is
    /// its argument, otherwise it means no limit.
    fn jobs_without_attached_argument(&mut self) {
        match self.take_number() {
            Some(number) => set_jobs(&mut self.out.flags, &number),
            None => self.out.flags.jobs = Jobs::Unlimited,
        }
    }

    /// Applies a `--debug` list such as `b,j` or `basic`: make looks only at
    /// the first letter of each level, and `n` clears everything before it.
    fn debug_levels(&mut self, list: &[u8]) {
        for level in list.split(|&b| b == b',' || b == b' ') {
            match level.first().map(u8::to_ascii_lowercase) {
                Some(b'n') => self.debug_level = Some(false),
                Some(b'a' | b'b' | b'i' | b'j' | b'm' | b'p' | b'v' | b'w') => {
                    self.debug_level = Some(true);
                }
                // make fails on an unknown level; a client ignores it.
                _ => {}
            }
        }
        self.update_debug();
    }

    /// Recomputes [`MakeFlags::debug`] the way make does once it has read
    /// every option: `-d` first, then every `--debug` list in order.
    fn update_debug(&mut self) {
        self.out.flags.debug = self.debug_level.unwrap_or(self.debug_flag);
    }

    /// Handles `--name` or `--name=value` (without the two dashes).
    fn long_option(&mut self, option: &[u8]) {
        let (name, attached) = match option.iter().position(|&b| b == b'=') {
            Some(eq) => (&option[..eq], Some(&option[eq + 1..])),
            None => (option, None),
        };
        let flags = &mut self.out.flags;
        match name {
            b"jobserver-auth" | b"jobserver-fds" => {
                let option_name = if name == b"jobserver-auth" {
                    "--jobserver-auth"
                } else {
                    "--jobserver-fds"
                };
                let value = match attached {
                    Some(value) => value.to_vec(),
                    // A missing value is reported as an empty one.
                    None => self.take_word().unwrap_or_default(),
                };
                self.out.auth = Some((option_name, value));
            }
            b"jobs" => match attached {
                Some(value) => set_jobs(flags, value),
                None => self.jobs_without_attached_argument(),
            },
            // Its argument is optional, so it is never the next word;
            // without one, make means `basic`.
            b"debug" => self.debug_levels(attached.unwrap_or(b"basic")),
            // make refuses an argument on the switches below; a word such as
            // `--dry-run=yes` is skipped.
            _ if attached.is_some() => {}
            b"dry-run" | b"just-print" | b"recon" => flags.dry_run = true,
            b"keep-going" => flags.keep_going = true,
            b"no-keep-going" | b"stop" => flags.keep_going = false,
            b"silent" | b"quiet" => flags.silent = true,
            b"ignore-errors" => flags.ignore_errors = true,
            _ if LONG_WITH_ARGUMENT.contains(&name) => self.next += 1,
            _ => {}
        }
    }
}

/// Applies a `-j` argument: a positive decimal number sets the hint; zero or
/// anything else leaves the previous hint in place.
fn set_jobs(flags: &mut MakeFlags, argument: &[u8]) {
    if argument.is_empty() || !argument.iter().all(u8::is_ascii_digit) {
        return;
    }
    let n = argument.iter().fold(0usize, |n, &d| {
        n.saturating_mul(10).saturating_add(usize::from(d - b'0'))
    });
    if let Some(n) = NonZeroUsize::new(n) {
        flags.jobs = Jobs::Limited(n);
    }
}

/// Whitespace as C's `isspace` sees it in the "C" locale; `sscanf`'s `%d`
/// skips it before a number.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

/// The outcome of reading one `%d` number.
enum Number {
    /// No digits where a number was expected.
    Missing,
    /// Digits that do not fit in an `i32`.
    OutOfRange,
    /// A number that fits.
    Value(i32),
}

/// Reads one number as `sscanf`'s `%d` would, starting at `*pos`: optional
/// whitespace, an optional sign, then at least one decimal digit. On return
/// `*pos` is just past the last digit.
fn read_number(bytes: &[u8], pos: &mut usize) -> Number {
    let mut i = *pos;
    while bytes.get(i).copied().is_some_and(is_c_space) {
        i += 1;
    }
    let negative = match bytes.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let start = i;
    // Accumulated as a magnitude that stops growing once it is out of range,
    // so that any number of digits is fine.
    let mut magnitude: i64 = 0;
    while let Some(&d) = bytes.get(i).filter(|d| d.is_ascii_digit()) {
        magnitude = (magnitude * 10 + i64::from(d - b'0')).min(i64::from(u32::MAX));
        i += 1;
    }
    if i == start {
        return Number::Missing;
    }
    *pos = i;
    let value = if negative { -magnitude } else { magnitude };
    match i32::try_from(value) {
        Ok(value) => Number::Value(value),
        Err(_) => Number::OutOfRange,
    }
}

/// Validates the value of the last jobserver option.
fn parse_auth(option: &'static str, value: Vec<u8>) -> Result<Auth, ParseError> {
    let error = |kind, value| {
        Err(ParseError {
            option,
            value,
            kind,
        })
    };
    if let Some(path) = value.strip_prefix(b"fifo:") {
        return if path.is_empty() {
            error(ParseErrorKind::EmptyFifoPath, value)
        } else {
            Ok(Auth::Fifo(path.to_vec()))
        };
    }
    if value.is_empty() {
        return error(ParseErrorKind::Empty, value);
    }
    let looks_numeric = value
        .iter()
        .find(|&&b| !is_c_space(b))
        .is_some_and(|&b| b.is_ascii_digit() || b == b'+' || b == b'-');
    if !looks_numeric {
        return Ok(Auth::Semaphore(value));
    }
    // `%d,%d`: the comma must follow the first number immediately; text after
    // the second number is ignored.
    let mut pos = 0;
    let read = read_number(&value, &mut pos);
    let write = if value.get(pos) == Some(&b',') {
        pos += 1;
        read_number(&value, &mut pos)
    } else {
        Number::Missing
    };
    match (read, write) {
        (Number::Missing, _) | (_, Number::Missing) => error(ParseErrorKind::NotFdPair, value),
        (Number::OutOfRange, _) | (_, Number::OutOfRange) => {
            error(ParseErrorKind::FdOutOfRange, value)
        }
        (Number::Value(read), Number::Value(write)) if read < 0 || write < 0 => {
            Ok(Auth::Disabled { read, write })
        }
        (Number::Value(read), Number::Value(write)) => Ok(Auth::Pipe { read, write }),
    }
}

/// An environment variable that may carry make's options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EnvVar {
    /// `CARGO_MAKEFLAGS`: what cargo hands to build scripts.
    CargoMakeflags,
    /// `MAKEFLAGS`: what make exports to the commands of its rules.
    Makeflags,
    /// `MFLAGS`: an older variable with the same options, each with its dash.
    Mflags,
}

impl EnvVar {
    /// Every variable, in the order [`from_env`] consults them.
    pub const ALL: [EnvVar; 3] = [EnvVar::CargoMakeflags, EnvVar::Makeflags, EnvVar::Mflags];

    /// The variable's name, such as `"CARGO_MAKEFLAGS"`.
    pub fn name(self) -> &'static str {
        match self {
            EnvVar::CargoMakeflags => "CARGO_MAKEFLAGS",
            EnvVar::Makeflags => "MAKEFLAGS",
            EnvVar::Mflags => "MFLAGS",
        }
    }
}

impl fmt::Display for EnvVar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The flags found by [`from_env`] and the variable they were read from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EnvFlags {
    /// The variable that decided, or `None` when none of them is set.
    pub var: Option<EnvVar>,
    /// What that variable says.
    pub flags: MakeFlags,
}

/// A malformed jobserver option in the variable that decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvError {
    var: EnvVar,
    error: ParseError,
}

impl EnvError {
    /// The variable holding the malformed option.
    pub fn var(&self) -> EnvVar {
        self.var
    }

    /// What is wrong with the option.
    pub fn error(&self) -> &ParseError {
        &self.error
    }

    /// Shorthand for `self.error().kind()`.
    pub fn kind(&self) -> ParseErrorKind {
        self.error.kind()
    }
}

impl fmt::Display for EnvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "in {}: {}", self.var, self.error)
    }
}

impl Error for EnvError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.error)
    }
}

/// Finds the jobserver and the make flags in the environment.
///
/// `lookup` is called with a variable name and returns its value, or `None`
/// when the variable is not set; it is usually a thin wrapper around
/// [`std::env::var_os`]. The variables are consulted in the order of
/// [`EnvVar::ALL`]: `CARGO_MAKEFLAGS`, then `MAKEFLAGS`, then `MFLAGS`.
///
/// The first variable whose value carries a jobserver option decides, whether
/// that option is valid, malformed or [disabled](Auth::Disabled): a broken
/// jobserver in `CARGO_MAKEFLAGS` is reported rather than silently replaced by
/// an unrelated one further down. Once a variable decides, the later ones are
/// not looked up.
///
/// When no variable carries a jobserver option, the result has
/// [`Auth::None`], and its jobs hint and flags come from the first variable
/// that is set (even to an empty value), named in [`EnvFlags::var`]. When no
/// variable is set, the result is [`MakeFlags::default`] with `var` `None`.
///
/// # Errors
///
/// Fails when the jobserver option of the deciding variable is malformed; the
/// error names the variable.
///
/// # Examples
///
/// ```
/// use jobserver_proto::makeflags::{from_env, Auth, EnvVar};
///
/// let env = |name: &str| match name {
///     "CARGO_MAKEFLAGS" => Some(b"-j8".to_vec()),
///     "MAKEFLAGS" => Some(b" -j4 --jobserver-auth=3,4".to_vec()),
///     _ => None,
/// };
/// let found = from_env(env)?;
/// assert_eq!(found.var, Some(EnvVar::Makeflags));
/// assert_eq!(found.flags.auth, Auth::Pipe { read: 3, write: 4 });
/// # Ok::<(), jobserver_proto::makeflags::EnvError>(())
/// ```
pub fn from_env<F: FnMut(&str) -> Option<Vec<u8>>>(mut lookup: F) -> Result<EnvFlags, EnvError> {
    let mut first_set: Option<(EnvVar, MakeFlags)> = None;
    for var in EnvVar::ALL {
        let Some(value) = lookup(var.name()) else {
            continue;
        };
        let scanned = scan(&value);
        if scanned.auth.is_some() {
            return match scanned.finish() {
                Ok(flags) => Ok(EnvFlags {
                    var: Some(var),
                    flags,
                }),
                Err(error) => Err(EnvError { var, error }),
            };
        }
        if first_set.is_none() {
            first_set = Some((var, scanned.flags));
        }
    }
    Ok(match first_set {
        Some((var, flags)) => EnvFlags {
            var: Some(var),
            flags,
        },
        None => EnvFlags {
            var: None,
            flags: MakeFlags::default(),
        },
    })
}

/// Builds the value that hands an anonymous-pipe jobserver to a child:
/// `-jN --jobserver-fds=R,W --jobserver-auth=R,W`.
///
/// Both option names are written because make 4.1 and older know only the
/// first one, make 4.2 only the second, and later versions take the last.
/// The descriptors must be inherited by the child for the value to be of
/// any use.
///
/// # Examples
///
/// ```
/// use jobserver_proto::makeflags::encode_pipe;
///
/// let value = encode_pipe(4.try_into().unwrap(), 3, 4);
/// assert_eq!(value, b"-j4 --jobserver-fds=3,4 --jobserver-auth=3,4");
/// ```
pub fn encode_pipe(jobs: NonZeroUsize, read: i32, write: i32) -> Vec<u8> {
    format!("-j{jobs} --jobserver-fds={read},{write} --jobserver-auth={read},{write}").into_bytes()
}

/// Builds the value that hands a named-pipe jobserver to a child:
/// `-jN --jobserver-auth=fifo:PATH`.
///
/// Spaces, tabs and backslashes in `path` are preceded by a backslash, as
/// make writes them, so that [`parse`] (and make 4.4 or later) reads the path
/// back unchanged. Other bytes are written as they are.
///
/// `path` should not be empty (the result would be rejected with
/// [`ParseErrorKind::EmptyFifoPath`]) and cannot contain NUL, which no
/// environment variable can hold. A child make also expands `$` in the
/// value, so a path with `$` in it is best avoided.
///
/// # Examples
///
/// ```
/// use jobserver_proto::makeflags::encode_fifo;
///
/// let value = encode_fifo(4.try_into().unwrap(), b"/tmp/my dir/fifo");
/// assert_eq!(value, b"-j4 --jobserver-auth=fifo:/tmp/my\\ dir/fifo");
/// ```
pub fn encode_fifo(jobs: NonZeroUsize, path: &[u8]) -> Vec<u8> {
    let mut out = format!("-j{jobs} --jobserver-auth=fifo:").into_bytes();
    out.reserve(path.len());
    for &b in path {
        if is_blank(b) || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

/// The one-letter flags of `flags` as make writes them for its children:
/// the first word of the value, without a dash, such as `dk`.
///
/// The letters are `d` ([`debug`](MakeFlags::debug)), `i`
/// ([`ignore_errors`](MakeFlags::ignore_errors)), `k`
/// ([`keep_going`](MakeFlags::keep_going)), `n`
/// ([`dry_run`](MakeFlags::dry_run)) and `s` ([`silent`](MakeFlags::silent)),
/// each when set, in that order, which is the order GNU make 4.4.1 writes
/// them in (`make -snkid` exports `dikns`). The result is empty when none is
/// set. The jobserver and the jobs hint of `flags` are not written: see
/// [`encode_pipe_with_flags`] and [`encode_fifo_with_flags`].
///
/// make writes `-d` as `d` but `--debug=LEVELS` as that option; since
/// [`MakeFlags::debug`] does not keep the levels, a child is always given
/// `d`, make's full debugging.
///
/// # Examples
///
/// ```
/// use jobserver_proto::makeflags::{encode_flags, parse};
///
/// let flags = parse(b"k --debug=b -j4")?;
/// assert_eq!(encode_flags(&flags), b"dk");
/// # Ok::<(), jobserver_proto::makeflags::ParseError>(())
/// ```
pub fn encode_flags(flags: &MakeFlags) -> Vec<u8> {
    [
        (flags.debug, b'd'),
        (flags.ignore_errors, b'i'),
        (flags.keep_going, b'k'),
        (flags.dry_run, b'n'),
        (flags.silent, b's'),
    ]
    .into_iter()
    .filter_map(|(set, letter)| set.then_some(letter))
    .collect()
}

/// Puts the flag cluster of `flags`, when it is not empty, in front of an
/// encoded jobserver value, separated by a space, and its variables, when
/// there are some, after it behind a word `--`, as make writes them
/// (`dk -j4 --jobserver-auth=... -- FOO=bar`).
fn with_flags(flags: &MakeFlags, value: Vec<u8>) -> Vec<u8> {
    let mut out = encode_flags(flags);
    if !out.is_empty() {
        out.push(b' ');
    }
    out.extend_from_slice(&value);
    if !flags.variables.is_empty() {
        out.extend_from_slice(b" -- ");
        out.extend_from_slice(&flags.variables);
    }
    out
}

/// [`encode_pipe`] preceded by the one-letter flags of `flags`
/// ([`encode_flags`]) and followed by its
/// [`variables`](MakeFlags::variables) behind a word `--`, which is where
/// make writes them: for example
/// `dk -j4 --jobserver-fds=3,4 --jobserver-auth=3,4 -- FOO=bar`.
///
/// Only the flags and the variables are taken from `flags`: its
/// [`auth`](MakeFlags::auth) and [`jobs`](MakeFlags::jobs) are ignored in
/// favour of the other arguments. With no flag set and no variable, the
/// result is exactly that of [`encode_pipe`].
///
/// # Examples
///
/// ```
/// use jobserver_proto::makeflags::{encode_pipe_with_flags, MakeFlags};
///
/// let mut flags = MakeFlags::default();
/// flags.debug = true;
/// let value = encode_pipe_with_flags(&flags, 4.try_into().unwrap(), 3, 4);
/// assert_eq!(value, b"d -j4 --jobserver-fds=3,4 --jobserver-auth=3,4");
/// ```
pub fn encode_pipe_with_flags(
    flags: &MakeFlags,
    jobs: NonZeroUsize,
    read: i32,
    write: i32,
) -> Vec<u8> {
    with_flags(flags, encode_pipe(jobs, read, write))
}

/// [`encode_fifo`] preceded by the one-letter flags of `flags`
/// ([`encode_flags`]) and followed by its
/// [`variables`](MakeFlags::variables) behind a word `--`, which is where
/// make writes them: for example
/// `d -j4 --jobserver-auth=fifo:/tmp/GMfifo8634 -- FOO=bar`.
///
/// Only the flags and the variables are taken from `flags`, as with
/// [`encode_pipe_with_flags`]; with no flag set and no variable, the result
/// is exactly that of [`encode_fifo`].
///
/// # Examples
///
/// ```
/// use jobserver_proto::makeflags::{encode_fifo_with_flags, parse};
///
/// let flags = parse(b"d")?;
/// let value = encode_fifo_with_flags(&flags, 4.try_into().unwrap(), b"/tmp/GMfifo8634");
/// assert_eq!(value, b"d -j4 --jobserver-auth=fifo:/tmp/GMfifo8634");
///
/// // make's command-line variables travel behind `--`, escapes kept.
/// let flags = parse(b"k -j2 --jobserver-auth=fifo:/tmp/old -- Y=a\\ b FOO=bar")?;
/// let value = encode_fifo_with_flags(&flags, 4.try_into().unwrap(), b"/tmp/new");
/// assert_eq!(value, b"k -j4 --jobserver-auth=fifo:/tmp/new -- Y=a\\ b FOO=bar");
/// # Ok::<(), jobserver_proto::makeflags::ParseError>(())
/// ```
pub fn encode_fifo_with_flags(flags: &MakeFlags, jobs: NonZeroUsize, path: &[u8]) -> Vec<u8> {
    with_flags(flags, encode_fifo(jobs, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).unwrap()
    }

    fn kind(value: &[u8]) -> ParseErrorKind {
        parse(value).unwrap_err().kind()
    }

    #[test]
    fn words_follow_make_escaping() {
        assert_eq!(
            split_words(b"  a\\ b\t\tc\\\\d e\\"),
            vec![b"a b".to_vec(), b"c\\d".to_vec(), b"e\\".to_vec()]
        );
        assert_eq!(split_words(b"x\\\ty\nz"), vec![b"x\ty\nz".to_vec()]);
        assert!(split_words(b" \t ").is_empty());
    }

    #[test]
    fn sscanf_like_pairs() {
        let auth = |v: &[u8]| parse_auth("--jobserver-auth", v.to_vec());
        assert_eq!(auth(b"3,4"), Ok(Auth::Pipe { read: 3, write: 4 }));
        assert_eq!(auth(b"+3,+4xyz"), Ok(Auth::Pipe { read: 3, write: 4 }));
        assert_eq!(auth(b" 3, 4"), Ok(Auth::Pipe { read: 3, write: 4 }));
        assert_eq!(auth(b"3,4,5"), Ok(Auth::Pipe { read: 3, write: 4 }));
        assert_eq!(
            auth(b"-2,-2"),
            Ok(Auth::Disabled {
                read: -2,
                write: -2
            })
        );
        assert_eq!(
            auth(b"-2147483648,2147483647"),
            Ok(Auth::Disabled {
                read: i32::MIN,
                write: i32::MAX
            })
        );
        for bad in [&b"3 ,4"[..], b"3,", b"3", b"-,4", b"+", b"3,x", b"0x7,8"] {
            assert_eq!(auth(bad).unwrap_err().kind(), ParseErrorKind::NotFdPair);
        }
        for big in [
            &b"2147483648,1"[..],
            b"1,-2147483649",
            b"1,99999999999999999999999",
        ] {
            assert_eq!(auth(big).unwrap_err().kind(), ParseErrorKind::FdOutOfRange);
        }
        assert_eq!(auth(b"sem"), Ok(Auth::Semaphore(b"sem".to_vec())));
        assert_eq!(auth(b" "), Ok(Auth::Semaphore(b" ".to_vec())));
    }

    #[test]
    fn short_options_and_their_arguments() {
        let f = parse(b"-j 12 -C -n -kS -s").unwrap();
        assert_eq!(f.jobs, Jobs::Limited(nz(12)));
        // `-n` was the argument of `-C`.
        assert!(!f.dry_run);
        assert!(!f.keep_going);
        assert!(f.silent);

        let f = parse(b"-Cdir -n -l -k -Onone -i").unwrap();
        assert!(f.dry_run && f.keep_going && f.ignore_errors);

        assert_eq!(parse(b"-j -n").unwrap().jobs, Jobs::Unlimited);
        assert!(parse(b"-j -n").unwrap().dry_run);
        assert_eq!(parse(b"-j4 -j0 -jx").unwrap().jobs, Jobs::Limited(nz(4)));
        assert_eq!(parse(b"-j4 -j").unwrap().jobs, Jobs::Unlimited);
        assert_eq!(
            parse(b"-j99999999999999999999999999").unwrap().jobs,
            Jobs::Limited(nz(usize::MAX))
        );
        // `-jk` gives `k` to `-j`: not a flag, and not a number either.
        let f = parse(b"-jk").unwrap();
        assert_eq!((f.jobs, f.keep_going), (Jobs::Unspecified, false));
    }

    #[test]
    fn first_word_rules() {
        let f = parse(b"iks -j2").unwrap();
        assert!(f.ignore_errors && f.keep_going && f.silent && !f.dry_run);
        assert!(!parse(b"FOO=nnn").unwrap().dry_run);
        // A later bare word is a target, not flags.
        assert!(!parse(b"-j2 n").unwrap().dry_run);
        assert_eq!(parse(b"j 3").unwrap().jobs, Jobs::Limited(nz(3)));
    }

    #[test]
    fn long_options() {
        let f = parse(b"--jobs 3 --dry-run --keep-going --stop --quiet --ignore-errors").unwrap();
        assert_eq!(f.jobs, Jobs::Limited(nz(3)));
        assert!(f.dry_run && !f.keep_going && f.silent && f.ignore_errors);
        assert_eq!(parse(b"--jobs").unwrap().jobs, Jobs::Unlimited);
        assert_eq!(parse(b"--jobs=7").unwrap().jobs, Jobs::Limited(nz(7)));
        assert_eq!(parse(b"--jobs=").unwrap().jobs, Jobs::Unspecified);
        assert!(!parse(b"--directory --dry-run").unwrap().dry_run);
        assert!(parse(b"--directory=x --dry-run").unwrap().dry_run);
        assert!(!parse(b"--dry-run=yes").unwrap().dry_run);
        assert_eq!(
            parse(b"--jobserver-auth 7,8").unwrap().auth,
            Auth::Pipe { read: 7, write: 8 }
        );
        assert_eq!(
            parse(b"--jobserver-auth -2,-2").unwrap().auth,
            Auth::Disabled {
                read: -2,
                write: -2
            }
        );
        assert_eq!(kind(b"-j4 --jobserver-auth"), ParseErrorKind::Empty);
        // The argument of an option is taken even when it is `--`.
        assert_eq!(kind(b"--jobserver-auth -- x"), ParseErrorKind::NotFdPair);
    }

    #[test]
    fn last_jobserver_option_wins() {
        let f = parse(b"--jobserver-auth=0x7,8 --jobserver-fds=3,4").unwrap();
        assert_eq!(f.auth, Auth::Pipe { read: 3, write: 4 });
        let e = parse(b"--jobserver-auth=3,4 --jobserver-fds=7").unwrap_err();
        assert_eq!(e.option(), "--jobserver-fds");
        assert_eq!(e.value(), b"7");
    }

    #[test]
    fn error_messages_name_the_value() {
        let e = parse(b"--jobserver-auth=0x7,8").unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("invalid --jobserver-auth value `0x7,8`: expected"));
        assert!(text.contains("fifo:PATH"));
        let text = parse(b"--jobserver-auth=1\\\n,\xff")
            .unwrap_err()
            .to_string();
        assert!(text.contains("`1\\n,\u{fffd}`"), "{text}");
        assert!(parse(b"--jobserver-auth=fifo:")
            .unwrap_err()
            .to_string()
            .contains("path after `fifo:` is empty"));
    }

    #[test]
    fn env_policy() {
        fn env<'a>(
            vars: &'a [(&'a str, &'a [u8])],
            asked: &'a mut Vec<String>,
        ) -> impl FnMut(&str) -> Option<Vec<u8>> + 'a {
            move |name| {
                asked.push(name.to_owned());
                vars.iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_vec())
            }
        }

        let mut asked = Vec::new();
        let r = from_env(env(&[], &mut asked)).unwrap();
        assert_eq!(r.var, None);
        assert_eq!(r.flags, MakeFlags::default());
        assert_eq!(asked, ["CARGO_MAKEFLAGS", "MAKEFLAGS", "MFLAGS"]);

        // CARGO_MAKEFLAGS decides and the others are not looked at.
        let mut asked = Vec::new();
        let vars: &[(&str, &[u8])] = &[
            ("CARGO_MAKEFLAGS", b"-j2 --jobserver-auth=fifo:/a"),
            ("MAKEFLAGS", b"--jobserver-auth=3,4"),
        ];
        let r = from_env(env(vars, &mut asked)).unwrap();
        assert_eq!(r.var, Some(EnvVar::CargoMakeflags));
        assert_eq!(r.flags.auth, Auth::Fifo(b"/a".to_vec()));
        assert_eq!(asked, ["CARGO_MAKEFLAGS"]);

        // A malformed option decides too.
        let mut asked = Vec::new();
        let vars: &[(&str, &[u8])] = &[
            ("CARGO_MAKEFLAGS", b"-j8"),
            ("MAKEFLAGS", b"--jobserver-auth=7"),
            ("MFLAGS", b"--jobserver-auth=3,4"),
        ];
        let e = from_env(env(vars, &mut asked)).unwrap_err();
        assert_eq!(e.var(), EnvVar::Makeflags);
        assert_eq!(e.kind(), ParseErrorKind::NotFdPair);
        assert!(e
            .to_string()
            .starts_with("in MAKEFLAGS: invalid --jobserver-auth"));
        assert!(e.source().is_some());

        // Without any jobserver, the first set variable gives the flags.
        let mut asked = Vec::new();
        let vars: &[(&str, &[u8])] = &[("MAKEFLAGS", b"k -j3"), ("MFLAGS", b"-n -j5")];
        let r = from_env(env(vars, &mut asked)).unwrap();
        assert_eq!(r.var, Some(EnvVar::Makeflags));
        assert_eq!(r.flags.jobs, Jobs::Limited(nz(3)));
        assert!(r.flags.keep_going && !r.flags.dry_run && !r.flags.has_jobserver());

        // A disabled jobserver in MFLAGS still decides.
        let mut asked = Vec::new();
        let vars: &[(&str, &[u8])] =
            &[("MAKEFLAGS", b""), ("MFLAGS", b"-j --jobserver-auth=-2,-2")];
        let r = from_env(env(vars, &mut asked)).unwrap();
        assert_eq!(r.var, Some(EnvVar::Mflags));
        assert!(r.flags.has_jobserver());
    }

    #[test]
    fn debug_flag() {
        let debug = |v: &[u8]| parse(v).unwrap().debug;
        assert!(!debug(b""));
        assert!(!debug(b" -j4 --jobserver-auth=3,4"));
        for on in [
            &b"d"[..],
            b"dk -j4",
            b"kd",
            b"-d",
            b"-kd -j2",
            b"--debug",
            b"--debug=b",
            b"--debug=basic",
            b"--debug=V,j",
            b"--debug=n,b",
            b"--debug=n --debug=b",
            b"-d --debug=b",
            b"-d --debug=x",
            b"--debug=b --debug=x",
        ] {
            assert!(debug(on), "{:?}", String::from_utf8_lossy(on));
        }
        for off in [
            &b"--debug=n"[..],
            b"--debug=none",
            b"-d --debug=n",
            b"--debug=n -d",
            b"d --debug=b --debug=n",
            b"--debug=b,n",
            b"--debug=x",
            b"--debug=",
            b"FOO=d",
            b"-j2 d",
            b"-- -d",
            b"--debug-x",
            // `-C` takes `-d` as its directory.
            b"-C -d",
        ] {
            assert!(!debug(off), "{:?}", String::from_utf8_lossy(off));
        }
        // `--debug` never takes the next word.
        assert_eq!(parse(b"--debug -j3").unwrap().jobs, Jobs::Limited(nz(3)));
        assert!(debug(b"--debug -j3"));
    }

    #[test]
    fn encoders() {
        assert_eq!(
            encode_pipe(nz(16), 5, 6),
            b"-j16 --jobserver-fds=5,6 --jobserver-auth=5,6"
        );
        let path = b"/tmp/a b\tc\\d=e";
        let value = encode_fifo(nz(3), path);
        assert_eq!(value, b"-j3 --jobserver-auth=fifo:/tmp/a\\ b\\\tc\\\\d=e");
        let f = parse(&value).unwrap();
        assert_eq!(f.auth, Auth::Fifo(path.to_vec()));
        assert_eq!(f.jobs, Jobs::Limited(nz(3)));

        let none = MakeFlags::default();
        assert_eq!(encode_flags(&none), b"");
        assert_eq!(
            encode_pipe_with_flags(&none, nz(2), 3, 4),
            encode_pipe(nz(2), 3, 4)
        );
        assert_eq!(
            encode_fifo_with_flags(&none, nz(2), b"/f"),
            encode_fifo(nz(2), b"/f")
        );
        let all = parse(b"snkid").unwrap();
        assert_eq!(encode_flags(&all), b"dikns");
        let value = encode_fifo_with_flags(&all, nz(2), b"/f");
        assert_eq!(value, b"dikns -j2 --jobserver-auth=fifo:/f");
        let back = parse(&value).unwrap();
        assert_eq!(encode_flags(&back), b"dikns");
        assert_eq!(back.auth, Auth::Fifo(b"/f".to_vec()));

        // Variables travel behind `--`, exactly as written (make's escapes kept).
        let make = parse(b"k -j4 --jobserver-auth=3,4 -- Y=a\\ b FOO=bar").unwrap();
        let value = encode_pipe_with_flags(&make, nz(4), 7, 8);
        assert_eq!(
            value,
            b"k -j4 --jobserver-fds=7,8 --jobserver-auth=7,8 -- Y=a\\ b FOO=bar"
        );
        let back = parse(&value).unwrap();
        assert_eq!(back.variables, make.variables);
        assert_eq!(back.auth, Auth::Pipe { read: 7, write: 8 });
    }

    #[test]
    fn variables_after_the_double_dash() {
        let vars = |v: &[u8]| parse(v).unwrap().variables;
        assert_eq!(vars(b""), b"");
        assert_eq!(vars(b" -j4 --jobserver-auth=3,4"), b"");
        assert_eq!(vars(b" -j4 --"), b"");
        assert_eq!(vars(b" -j4 -- \t "), b"");
        // Real make 4.3 / 4.4.1 output for `make -j2 'Z=a\b' 'D=x$$y' 'T=p<tab>q' E=`.
        assert_eq!(
            vars(b" -j2 --jobserver-auth=3,4 -- E= T=p\\\tq D=x$$$$y Z=a\\b"),
            b"E= T=p\\\tq D=x$$$$y Z=a\\b"
        );
        // Blanks around the words are not part of them; an escaped blank at the end is.
        assert_eq!(vars(b"-- \tA=1  B=2\\ "), b"A=1  B=2\\ ");
        // A first word `--` starts the variables too.
        assert_eq!(
            vars(b"-- X=--jobserver-auth=1,2"),
            b"X=--jobserver-auth=1,2"
        );
        // `-C --`: the `--` is -C's directory, not the end of the options.
        assert_eq!(vars(b"-C -- X=1"), b"");
        // A `FOO=bar` first word is a variable but not behind `--`: make does not write that.
        assert_eq!(vars(b"FOO=bar -j2"), b"");
    }
}
