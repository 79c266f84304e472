//! The error type shared by every driver.

use std::error::Error as StdError;
use std::fmt;
use std::io;

/// What went wrong, for callers that branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// None of `CARGO_MAKEFLAGS`, `MAKEFLAGS` or `MFLAGS` names a jobserver.
    NoJobserver,
    /// make passed negative descriptors: it does not treat this command as a recursive make,
    /// so it gives it no jobserver. Mark the make rule with `+` (or use `$(MAKE)` in it).
    Disabled,
    /// The variable names a jobserver, but its value cannot be parsed.
    InvalidMakeflags,
    /// The descriptors named in the variable are closed, are not pipes, or are open in the
    /// wrong direction. Usually the make rule lacks `+`, so make closed them for this command.
    BadFds,
    /// The `fifo:` path is not a fifo or character device (a regular file, say): no token is
    /// ever written to it.
    NotAFifo,
    /// Not possible on this platform or with this reactor: a Windows semaphore on Unix,
    /// exclusive wake-ups off Linux or without a private description, or a reactor that
    /// cannot wait on a helper thread where one is needed.
    Unsupported,
    /// The make (or other server) that owns the jobserver has exited: its pipe reached
    /// end-of-file, or, for a client found in the environment, a liveness check saw the server
    /// process exit or its fifo removed while requests waited (see
    /// [`Client::from_env`](crate::Client::from_env), *Liveness*). No more tokens will come;
    /// the implicit slot still works, and tokens held are still written back.
    ServerGone,
    /// More tokens than a jobserver can hold were asked for: a pool larger than its pipe
    /// can hold; one request for more than
    /// [`MAX_UNITS`](crate::MAX_UNITS) tokens (`acquire_many(usize::MAX)`, say); or a
    /// request for more than one token at once from a client without a jobserver
    /// ([`Mode::ImplicitOnly`](crate::Mode::ImplicitOnly): it only ever has its implicit
    /// slot, see [`Client::degraded`](crate::Client::degraded) for why). Such a request
    /// could never be met, so it fails at once instead of waiting forever.
    Capacity,
    /// The runtime the driver needs is not running (for example a tokio client created outside
    /// a tokio runtime).
    NoRuntime,
    /// The pool is still in use: [`Server::shutdown`](crate::Server::shutdown) was called
    /// while a client of it in this process held tokens (or waited for some). Release them
    /// and call it again.
    InUse,
    /// An [`Acquire`](crate::Acquire) future was polled again after it had completed. That is
    /// a bug in the caller (std's futures may panic then); this one returns this error
    /// instead, every time it is polled again, and does nothing else: no request is made and
    /// no token is taken or given.
    PolledAfterCompletion,
    /// Any other operating-system error.
    Io,
}

/// An error from a jobserver client or server. Its message says what to do about it.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

impl Error {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying cause, returned by [`std::error::Error::source`].
    pub fn with_source(mut self, source: impl StdError + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// An [`ErrorKind::Io`] error: `context` says what was being done.
    pub fn io(context: impl fmt::Display, err: io::Error) -> Self {
        let kind = if err.kind() == io::ErrorKind::Unsupported {
            ErrorKind::Unsupported
        } else {
            ErrorKind::Io
        };
        Error::new(kind, format!("{context}: {err}")).with_source(err)
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

impl From<Error> for io::Error {
    fn from(err: Error) -> Self {
        let kind = match err.kind {
            ErrorKind::NoJobserver => io::ErrorKind::NotFound,
            ErrorKind::Unsupported => io::ErrorKind::Unsupported,
            ErrorKind::ServerGone => io::ErrorKind::UnexpectedEof,
            ErrorKind::InvalidMakeflags | ErrorKind::BadFds | ErrorKind::NotAFifo => {
                io::ErrorKind::InvalidInput
            }
            ErrorKind::InUse => io::ErrorKind::ResourceBusy,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, err)
    }
}
