//! Benchmarks for the jobserver workspace (see `benches/`).
