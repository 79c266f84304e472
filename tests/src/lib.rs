//! Cross-process tests against real peers.
