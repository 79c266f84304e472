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

step "cargo doc"
RUSTDOCFLAGS=-Dwarnings cargo doc --workspace --no-deps --locked

step "cargo test"
cargo test --workspace --locked

step "benchmarks, smoke mode (so none of them rots; figures not meaningful)"
bash scripts/bench.sh --smoke

step "demo (the README's first command)"
cargo run --locked -q -p jobrun -- -j4 -v -f jobrun/examples/demo/graph.toml

step "the library's own demo"
cargo run --locked -q -p jobserver-tokio --example demo
