//! Placeholder.
pub mod makeflags;
