//! A jobserver pool whose descriptors the bench holds: it writes tokens into it, drains it,
//! hands it to children, and does the raw reference reads and writes on it.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use jobserver_io::sys::{self, Access};
use jobserver_io::Reactor;
use rustix::event::{poll, PollFd, PollFlags};

/// The kind of descriptor the pool lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An anonymous pipe (`--jobserver-auth=R,W`).
    Pipe,
    /// A named pipe (`--jobserver-auth=fifo:PATH`).
    Fifo,
}

impl Kind {
    /// `pipe` or `fifo`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Pipe => "pipe",
            Kind::Fifo => "fifo",
        }
    }
}

/// A jobserver pool made by the bench (not by the library under test).
#[derive(Debug)]
pub struct Pool {
    kind: Kind,
    /// Pipe: the blocking, close-on-exec read end. Fifo: our read-write description.
    read: OwnedFd,
    /// Pipe: the blocking, close-on-exec write end. Fifo: a second read-write description.
    write: OwnedFd,
    path: Option<PathBuf>,
    makeflags: String,
}

impl Pool {
    /// A pool holding `tokens` bytes (so `tokens + 1` jobs, counting the implicit slot of the
    /// first process that joins it).
    ///
    /// # Panics
    ///
    /// When the pipe or fifo cannot be made.
    pub fn new(kind: Kind, tokens: usize) -> Pool {
        let jobs = tokens + 1;
        let pool = match kind {
            Kind::Pipe => {
                let (read, write) = sys::create_pipe().expect("creating a pipe");
                let makeflags = format!(
                    "-j{jobs} --jobserver-fds={r},{w} --jobserver-auth={r},{w}",
                    r = read.as_raw_fd(),
                    w = write.as_raw_fd()
                );
                Pool {
                    kind,
                    read,
                    write,
                    path: None,
                    makeflags,
                }
            }
            Kind::Fifo => {
                let path = sys::create_fifo(&std::env::temp_dir()).expect("creating a fifo");
                let read = sys::open_fifo(&path).expect("opening the fifo");
                let write = sys::open_fifo(&path).expect("opening the fifo");
                let makeflags = format!("-j{jobs} --jobserver-auth=fifo:{}", path.display());
                Pool {
                    kind,
                    read,
                    write,
                    path: Some(path),
                    makeflags,
                }
            }
        };
        sys::ensure_pipe_capacity(pool.write.as_fd(), tokens + 1024).expect("sizing the pipe");
        pool.write_tokens(tokens);
        pool
    }

    /// Pipe or fifo.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The `MAKEFLAGS` value that names this pool.
    pub fn makeflags(&self) -> &str {
        &self.makeflags
    }

    /// A variable lookup for `Client::from_env_with` that finds only this pool.
    pub fn lookup(&self) -> impl FnMut(&str) -> Option<Vec<u8>> {
        let value = self.makeflags.clone().into_bytes();
        move |name| (name == "MAKEFLAGS").then(|| value.clone())
    }

    /// A client of ours on this pool, connected the way a child of make connects
    /// (`from_env`: validate, then reopen a private description).
    ///
    /// # Panics
    ///
    /// When connecting fails.
    pub fn client<R: Reactor>(&self) -> jobserver_io::Client<R> {
        jobserver_io::Client::<R>::from_env_with(self.lookup()).expect("connecting to the pool")
    }

    /// [`Pool::client`] with [`ClientOptions`](jobserver_io::ClientOptions): exclusive
    /// wake-ups, or the shared description read through helper threads (the fallback where
    /// no private reopen exists).
    ///
    /// # Panics
    ///
    /// When connecting fails.
    pub fn client_with<R: Reactor>(
        &self,
        options: &jobserver_io::ClientOptions,
    ) -> jobserver_io::Client<R> {
        jobserver_io::Client::<R>::from_env_with_options(options, self.lookup())
            .expect("connecting to the pool")
    }

    /// Runs `f` with `CARGO_MAKEFLAGS` and `MAKEFLAGS` naming this pool (for the `jobserver`
    /// and `jobslot` crates, which only read the real environment), then restores them.
    /// Call it before starting threads that might read the environment.
    pub fn with_env<T>(&self, f: impl FnOnce() -> T) -> T {
        let names = ["CARGO_MAKEFLAGS", "MAKEFLAGS", "MFLAGS"];
        let saved: Vec<(&str, Option<OsString>)> =
            names.iter().map(|&n| (n, std::env::var_os(n))).collect();
        std::env::set_var("CARGO_MAKEFLAGS", &self.makeflags);
        std::env::set_var("MAKEFLAGS", &self.makeflags);
        std::env::remove_var("MFLAGS");
        let out = f();
        for (name, value) in saved {
            match value {
                Some(v) => std::env::set_var(name, v),
                None => std::env::remove_var(name),
            }
        }
        out
    }

    /// The raw reference: a private, non-blocking read description and a write description
    /// of this pool, exactly as our client opens them (a reopen through `/proc/self/fd` for a
    /// pipe, `open_fifo` for a fifo).
    ///
    /// # Panics
    ///
    /// When the descriptors cannot be opened.
    pub fn raw_pair(&self) -> RawPair {
        match self.kind {
            Kind::Pipe => RawPair {
                read: sys::reopen_private(self.read.as_fd(), Access::Read).expect("reopening"),
                write: Some(
                    sys::reopen_private(self.write.as_fd(), Access::Write).expect("reopening"),
                ),
            },
            Kind::Fifo => RawPair {
                read: sys::open_fifo(self.path.as_ref().expect("fifo path")).expect("opening"),
                write: None,
            },
        }
    }

    /// A private, non-blocking read description of this pool (for a naive reader of our own).
    ///
    /// # Panics
    ///
    /// When it cannot be opened.
    pub fn private_reader(&self) -> OwnedFd {
        self.raw_pair().read
    }

    /// Writes `n` tokens (`+` bytes).
    ///
    /// # Panics
    ///
    /// When the write fails.
    pub fn write_tokens(&self, n: usize) {
        let bytes = vec![b'+'; n];
        sys::write_all(self.write.as_fd(), &bytes).expect("writing tokens into the pool");
    }

    /// Writes one token.
    ///
    /// # Panics
    ///
    /// When the write fails.
    pub fn write_token(&self) {
        sys::write_byte(self.write.as_fd(), b'+').expect("writing a token into the pool");
    }

    /// Takes one token, waiting for it if need be.
    ///
    /// # Panics
    ///
    /// When reading fails or the pool reaches end-of-file.
    pub fn take_token(&self) {
        let mut buf = [0u8; 1];
        loop {
            match sys::read(self.read.as_fd(), &mut buf) {
                Ok(1) => return,
                Ok(_) => panic!("the pool reached end-of-file"),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let mut fds = [PollFd::new(&self.read, PollFlags::IN)];
                    let _ = poll(&mut fds, None);
                }
                Err(e) => panic!("reading the pool: {e}"),
            }
        }
    }

    /// Takes every token now in the pool and returns how many there were.
    ///
    /// # Panics
    ///
    /// When reading fails.
    pub fn drain(&self) -> usize {
        let mut total = 0;
        while self.available() > 0 {
            let mut buf = [0u8; 4096];
            let n = self.available().min(buf.len());
            self.read_exact(&mut buf[..n]);
            total += n;
        }
        total
    }

    fn read_exact(&self, mut buf: &mut [u8]) {
        while !buf.is_empty() {
            match sys::read(self.read.as_fd(), buf) {
                Ok(0) => panic!("the pool reached end-of-file"),
                Ok(n) => buf = &mut buf[n..],
                Err(e) => panic!("draining the pool: {e}"),
            }
        }
    }

    /// Tokens in the pool now (FIONREAD).
    ///
    /// # Panics
    ///
    /// When the ioctl fails.
    pub fn available(&self) -> usize {
        sys::bytes_available(self.read.as_fd()).expect("FIONREAD")
    }

    /// Lets `cmd`'s child join the pool: sets `MAKEFLAGS` and `CARGO_MAKEFLAGS`, and for a pipe
    /// lets the child alone inherit the two descriptors.
    pub fn configure<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        cmd.env("MAKEFLAGS", &self.makeflags)
            .env("CARGO_MAKEFLAGS", &self.makeflags)
            .env_remove("MFLAGS");
        if self.kind == Kind::Pipe {
            let (r, w) = (self.read.as_raw_fd(), self.write.as_raw_fd());
            // SAFETY: the hook runs in the child between fork and exec and makes only two pairs
            // of fcntl calls (async-signal-safe, no allocation) on descriptor numbers that this
            // pool keeps open for as long as it lives; the caller spawns while it holds `self`.
            unsafe {
                cmd.pre_exec(move || {
                    sys::set_cloexec(r, false)?;
                    sys::set_cloexec(w, false)
                });
            }
        }
        cmd
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The raw reference's descriptors: what our client reads and writes, without our client.
#[derive(Debug)]
pub struct RawPair {
    read: OwnedFd,
    /// `None` for a fifo: the read description is read-write.
    write: Option<OwnedFd>,
}

impl RawPair {
    /// The private, non-blocking read description.
    pub fn read_fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// The description tokens are written to.
    pub fn write_fd(&self) -> BorrowedFd<'_> {
        self.write.as_ref().unwrap_or(&self.read).as_fd()
    }

    /// One 1-byte read and one 1-byte write of the byte read: a token taken and given back.
    ///
    /// # Panics
    ///
    /// When the pool is empty or an I/O error happens.
    #[inline]
    pub fn take_and_give(&self) {
        let mut buf = [0u8; 1];
        let n = sys::read(self.read_fd(), &mut buf).expect("raw read");
        assert_eq!(n, 1, "raw read found no token");
        sys::write_byte(self.write_fd(), buf[0]).expect("raw write");
    }
}
