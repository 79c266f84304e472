#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it. Installs what it needs (the pinned peers GNU make
# 4.4.1 and ninja 1.13.2, into .peers/) and then checks formatting, lints, docs and all tests.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "install pinned peers"
bash scripts/install-peers.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo clippy, optional features (jobserver-io's tracing; adapters without process)"
cargo clippy -p jobserver-io --all-targets --features tracing --locked -- -D warnings
cargo clippy -p jobserver-tokio -p jobserver-smol --no-default-features --locked -- -D warnings

# macOS and the BSDs have no /proc/self/fd: the no-procfs feature compiles the reopen out of a
# Linux build, so that the fallback (the shared description read on a helper thread) is what
# every inherited pipe gets. The workspace must build that way, and the I/O crate's own tests
# (its pools of every setup, its docs) must pass.
step "without /proc: cargo check of the workspace, jobserver-io's tests"
cargo check --workspace --all-targets --locked --features jobserver-io/no-procfs
cargo clippy -p jobserver-io --all-targets --locked --features no-procfs -- -D warnings
cargo test -p jobserver-io --locked --features no-procfs

step "cargo doc"
RUSTDOCFLAGS=-Dwarnings cargo doc --workspace --no-deps --locked

# Every crate that is published (all but jobserver-benches and jobserver-tests, which are
# `publish = false`) must package: metadata, readme, path dependencies with versions. cargo
# packages the workspace's crates together and resolves each against the others' fresh
# packages, so it needs the crates.io index for the rest (CI and dev machines reach it). It
# also builds each tarball on its own (no --no-verify): that catches a file left out of a
# package, for about a minute on two cores.
# --allow-dirty: this checks the packages, not that the work is committed, so the script also
# runs on uncommitted work.
step "cargo package"
cargo package --workspace --locked --allow-dirty \
    --exclude jobserver-benches --exclude jobserver-tests

step "cargo test"
cargo test --workspace --locked

step "benchmarks, smoke mode (so none of them rots; figures not meaningful)"
bash scripts/bench.sh --smoke

step "demo (the README's first command)"
cargo run --locked -q -p jobrun -- -j4 -v -f jobrun/examples/demo/graph.toml

step "the library's own demo"
cargo run --locked -q -p jobserver-tokio --example demo
