//! MAKEFLAGS parsing.
