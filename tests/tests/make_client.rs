//! Our client, in every driver, under a real top-level GNU make: make 4.3 (`-jN`, an
//! anonymous pipe), make 4.4.1 (`-jN`, a fifo) and make 4.4.1 `--jobserver-style=pipe`.
//!
//! make runs more recipes than `N`; each runs the worker, which holds 2 units at once (its
//! implicit slot plus a token read from make's jobserver). The units held across all processes
//! must reach `N` and never exceed it, and make must end with every token back.

use std::path::Path;

use jobserver_tests::timeline::{run_make, write_makefile, Plus, TempDir, Timeline, Worker};
use jobserver_tests::{conformance, peers, Driver};

const WORKER: &str = env!("CARGO_BIN_EXE_jobserver-worker");
/// make's `-jN`.
const JOBS: usize = 4;
/// More recipes than `JOBS`, so make has to wait for tokens.
const RECIPES: usize = 8;
/// Units each worker holds at once: the implicit slot and one token read from make.
const UNITS: usize = 2;
const HOLD_MS: u64 = 150;

fn units_never_exceed_jobs<D: Driver>(make: &Path, extra: &[&str], mode: &str) {
    let dir = TempDir::new(&format!("make-client-{}", D::NAME));
    let log = dir.join("units.log");
    let worker = Worker::new(WORKER)
        .driver(D::NAME)
        .units(UNITS)
        .hold_ms(HOLD_MS)
        .log(&log);
    write_makefile(dir.path(), RECIPES, Plus::Yes, &worker);

    let run = run_make(make, dir.path(), Some(JOBS), extra);
    run.assert_success("make");
    assert_eq!(
        run.jobserver_warnings(),
        Vec::<&str>::new(),
        "make warned about the jobserver; output:\n{}",
        run.output
    );
    // Every worker joined make's jobserver, in the mode under test.
    let connected = run.lines_starting_with("connected ");
    assert_eq!(connected.len(), RECIPES, "output:\n{}", run.output);
    for line in connected {
        assert!(line.ends_with(&format!(" mode={mode}")), "{line}");
    }

    let timeline = Timeline::read(&log);
    timeline.assert_balanced();
    assert_eq!(timeline.acquisitions(), RECIPES * UNITS);
    assert_eq!(timeline.pids().len(), RECIPES);
    assert_eq!(
        timeline.max_concurrency(),
        JOBS,
        "units held at once across all workers under make -j{JOBS} (at most {JOBS}, and \
         {RECIPES} recipes of {UNITS} units give enough demand to reach it)"
    );
}

fn under_make43_pipe<D: Driver>() {
    units_never_exceed_jobs::<D>(&peers::make43(), &[], "Pipe");
}

fn under_make44_fifo<D: Driver>() {
    units_never_exceed_jobs::<D>(&peers::make44(), &[], "Fifo");
}

fn under_make44_pipe<D: Driver>() {
    units_never_exceed_jobs::<D>(&peers::make44(), &["--jobserver-style=pipe"], "Pipe");
}

conformance!(under_make43_pipe, under_make44_fifo, under_make44_pipe);
