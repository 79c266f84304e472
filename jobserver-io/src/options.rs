//! How a client waits for the jobserver: [`ClientOptions`].

/// How a client waits for the jobserver, for
/// [`Client::from_env_with_options`](crate::Client::from_env_with_options),
/// [`Client::from_env_or_new_with_options`](crate::Client::from_env_or_new_with_options) and
/// [`Server::client_with`](crate::Server::client_with).
///
/// The default ([`ClientOptions::new`]) is what a client made without options uses: the
/// runtime's own reactor on a private non-blocking description where one can be had, and a
/// helper thread on the shared description where it cannot.
///
/// ```
/// # fn main() -> Result<(), jobserver_io::Error> {
/// use jobserver_io::ClientOptions;
///
/// let options = if cfg!(target_os = "linux") {
///     // Many processes share this pool: wake one of them per token, not all.
///     ClientOptions::new().exclusive_wakeups(true)
/// } else {
///     ClientOptions::new()
/// };
/// let client = jobserver_io::blocking::Client::from_env_or_new_with_options(
///     4,
///     &options,
///     jobserver_io::env_var,
/// )?;
/// drop(client.acquire()?);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientOptions {
    exclusive: bool,
    shared: bool,
}

impl ClientOptions {
    /// The default options: no exclusive wake-ups, a private description where possible.
    pub const fn new() -> Self {
        ClientOptions {
            exclusive: false,
            shared: false,
        }
    }

    /// Waits for the jobserver on a helper thread that sleeps in an `epoll_wait` of its own,
    /// with the pipe registered `EPOLLEXCLUSIVE` only while a request of this process waits
    /// (Linux only). The kernel then wakes one waiting process per token instead of every
    /// process that waits on the pool.
    ///
    /// Choose it when many processes wait on one pool at once (a build tool that runs many
    /// clients of ours, or nests in a large make) and wake-ups are what it costs: with the
    /// default, every waiting process wakes for every token (8 processes waiting: 8 woken;
    /// 32: 32), although only one gets it.
    ///
    /// What it costs:
    /// - **Latency.** A token passes through the helper thread before the driver sees it: one
    ///   thread hop more than the runtime's reactor (see the README's benchmark table).
    /// - **Relays.** The kernel wakes one process per `write`, however many tokens it holds.
    ///   So a process woken for a token that finds more than it needs writes one of them back
    ///   at once ("read 2, write 1 back"), which wakes the next exclusive waiter: without
    ///   that, tokens written in one `write` would be stranded (`WAKEUPS.md`). One extra
    ///   write, only after a wake-up and only when tokens were left over.
    /// - **Fairness and hostages.** The kernel wakes the process whose wait started first,
    ///   and only that one: a woken process that is slow to read holds the token up for
    ///   everyone. A helper that was woken when nobody here wanted the token any more (a
    ///   cancelled request) passes it on with a relay after 10 ms.
    /// - **Threads.** One helper thread per client, and every read goes through the reactor
    ///   ([`Reactor::direct_io`](crate::Reactor::direct_io) is `false`), which must see the
    ///   reads that follow a wake-up.
    ///
    /// Needs a private description of the pipe (Linux reopens inherited pipes through
    /// `/proc/self/fd`; own pools and fifos have one). Connecting fails with
    /// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) on other systems, or when
    /// no private description can be had.
    pub const fn exclusive_wakeups(mut self, on: bool) -> Self {
        self.exclusive = on;
        self
    }

    /// Reads an inherited pipe (`--jobserver-auth=R,W`) through the description it shares
    /// with make and the other processes, on a helper thread, as a client does on its own
    /// where no private description can be had (no `/proc/self/fd`: macOS, the BSDs). The
    /// flags of that description are never changed; when it is blocking, reads are made
    /// only on the helper thread (one that another process beat to the byte waits there),
    /// and a byte that arrives when nobody wants it any more is written straight back.
    ///
    /// For a pool of our own ([`Server`](crate::Server)) the client reads the blocking
    /// description that children get. A fifo (`fifo:PATH`) is always opened privately, so
    /// this changes nothing for it.
    ///
    /// What it costs, beside a helper-thread hop per read (about 40 µs per acquire and
    /// release on a blocking description, against 1.5 µs): every waiting process still wakes
    /// for every token; a read that finds a token in the pipe waits (holding the client's
    /// lock) until the reader thread brings it, up to 10 ms when another process takes it
    /// first; and tokens are written back to the shared write end as it is, so on a blocking
    /// one a write to a full pipe (more bytes in it than the pool has tokens: a broken pool)
    /// waits for room instead of failing.
    ///
    /// Forcing it on Linux is for tests and benchmarks of that path.
    pub const fn shared_description(mut self, on: bool) -> Self {
        self.shared = on;
        self
    }

    /// Whether [`ClientOptions::exclusive_wakeups`] is on.
    pub const fn is_exclusive(&self) -> bool {
        self.exclusive
    }

    /// Whether [`ClientOptions::shared_description`] is on.
    pub const fn is_shared_description(&self) -> bool {
        self.shared
    }
}

/// The process environment as a variable lookup for the `*_with` constructors
/// ([`Client::from_env_with_options`](crate::Client::from_env_with_options), say): the value
/// of `name` as bytes, or `None` when it is not set.
pub fn env_var(name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStringExt;
    std::env::var_os(name).map(std::ffi::OsString::into_vec)
}
