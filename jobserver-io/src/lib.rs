//! The I/O half of the jobserver workspace, shared by every driver: the OS layer, the
//! runtime-agnostic driver of the [`jobserver_proto`] token machine, and a blocking client.
//!
//! Runtime crates (`jobserver-tokio`, `jobserver-smol`) implement one small trait,
//! [`Reactor`], and export [`Client`], [`Token`], [`Server`] and [`Acquire`] under their own
//! names; [`blocking`] does the same with a helper thread for code that is not async.
//!
//! ```
//! # fn main() -> Result<(), jobserver_io::Error> {
//! // Blocking use: join make's jobserver, or make a pool of 4 when there is none.
//! let client = jobserver_io::blocking::Client::from_env_or_new(4)?;
//! let token = client.acquire()?;
//! // ... run one job ...
//! drop(token);
//! # Ok(())
//! # }
//! ```
//!
//! # Platform-specific behavior
//!
//! Unix only. An inherited pipe is reopened through `/proc/self/fd` (Linux) so that the
//! non-blocking mode is set on a private description. Where that is impossible (macOS, the
//! BSDs) the client reads the description that make and its other children share as it is,
//! through a helper thread ([`thread::HelperReactor`]), and never changes its flags. Pools of
//! our own ([`Server`]) need no reopen anywhere, and fifos are opened privately everywhere.
//! Exclusive wake-ups ([`ClientOptions::exclusive_wakeups`]) need Linux.
#![cfg(unix)]
#![doc(test(attr(deny(warnings))))]

pub mod blocking;
mod client;
mod driver;
mod error;
mod liveness;
mod options;
mod registry;
mod server;
mod signals;
mod spawn;
pub mod sys;
pub mod thread;
mod timer;

pub use client::{Client, Mode};
pub use driver::{lost_tokens, Acquire, Filled, Metrics, Reactor, Token};
pub use error::{Error, ErrorKind};
pub use jobserver_proto::makeflags::{EnvVar, Jobs, MakeFlags};
pub use jobserver_proto::{ReleasePolicy, Report, Stats, MAX_UNITS};
pub use options::{env_var, ClientOptions};
pub use server::Server;
pub use spawn::TokenChild;

/// Declares the public names of a runtime adapter over its [`Reactor`], so that every
/// adapter crate exports the same API: `Client`, `Token`, `Server`, `Acquire`, and the error
/// and configuration types.
///
/// ```text
/// jobserver_io::adapter_api!(TokioReactor, "tokio");
/// ```
#[macro_export]
macro_rules! adapter_api {
    ($reactor:ty, $runtime:literal) => {
        pub use $crate::{
            env_var, lost_tokens, ClientOptions, EnvVar, Error, ErrorKind, Jobs, MakeFlags,
            Metrics, Mode, ReleasePolicy, Report, Stats, MAX_UNITS,
        };

        #[doc = concat!("The jobserver client for ", $runtime, ". See [`jobserver_io::Client`] for every method.")]
        pub type Client = $crate::Client<$reactor>;
        /// Tokens granted by a [`Client`]; given back on drop. See [`jobserver_io::Token`].
        pub type Token = $crate::Token<$reactor>;
        /// A pool of our own for our children; see [`jobserver_io::Server`].
        pub type Server = $crate::Server<$reactor>;
        /// The future of [`Client::acquire`](jobserver_io::Client::acquire); see
        /// [`jobserver_io::Acquire`] for its cancel safety.
        pub type Acquire = $crate::Acquire<$reactor>;
    };
}
