//! Support for the cross-process conformance suite: one behaviour, written once, run against
//! every driver (tokio, smol, blocking), and helpers to find the real peers.

pub mod drivers;
pub mod peers;
pub mod timeline;

pub use drivers::Driver;
