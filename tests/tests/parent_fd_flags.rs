//! Our client never changes the flags of the pipe description it shares with make.
//!
//! With `--jobserver-auth=R,W` the worker's inherited R and W are the same open file
//! descriptions as make's: a client that set `O_NONBLOCK` (or anything else) on them would
//! change them for make and every sibling. Each worker, in a make recipe with `+`, reads the
//! flags of make's own R and W (`/proc/<make>/fdinfo`) and of its inherited R and W
//! (`F_GETFL`) before connecting, connects, holds tokens (some read from make's pipe), releases
//! them, reads the flags again and fails if anything changed. `O_NONBLOCK` may only be set on
//! the client's private reopen.
//!
//! make 4.3 and 4.4.1 already keep `O_NONBLOCK` on the read side, so setting it there would
//! not show; setting it on the write side (blocking in make) would, as would clearing it on the
//! read side. The last test proves the check fires by flipping `O_NONBLOCK` on W on purpose.

use std::path::Path;

use jobserver_tests::timeline::{run_make, write_makefile, Plus, TempDir, Timeline, Worker};
use jobserver_tests::{conformance, peers, Driver};

const WORKER: &str = env!("CARGO_BIN_EXE_jobserver-worker");
/// `-j4` with 3 recipes of 2 units: make keeps 3 tokens busy starting recipes, so the workers
/// must read the 4th from make's pipe.
const JOBS: usize = 4;
const RECIPES: usize = 3;
const UNITS: usize = 2;
const HOLD_MS: u64 = 100;

fn fds_keep_their_flags<D: Driver>(make: &Path, extra: &[&str]) {
    let dir = TempDir::new(&format!("fd-flags-{}", D::NAME));
    let log = dir.join("units.log");
    let worker = Worker::new(WORKER)
        .driver(D::NAME)
        .units(UNITS)
        .hold_ms(HOLD_MS)
        .log(&log)
        .arg("--check-parent-fd-flags");
    write_makefile(dir.path(), RECIPES, Plus::Yes, &worker);

    let run = run_make(make, dir.path(), Some(JOBS), extra);
    // A worker that saw a flag change exits non-zero, and so does make.
    run.assert_success("make");
    let checked = run.lines_starting_with("fd-flags-unchanged ");
    assert_eq!(
        checked.len(),
        RECIPES,
        "every worker must have compared the flags; output:\n{}",
        run.output
    );
    let connected = run.lines_starting_with("connected ");
    assert_eq!(connected.len(), RECIPES, "output:\n{}", run.output);
    for line in connected {
        assert!(line.ends_with(" mode=Pipe"), "{line}");
    }

    // The clients really used make's pipe: the 4th unit can only have been read from it.
    let timeline = Timeline::read(&log);
    timeline.assert_balanced();
    assert_eq!(timeline.acquisitions(), RECIPES * UNITS);
    assert_eq!(timeline.max_concurrency(), JOBS);
}

fn make43_pipe_keeps_its_flags<D: Driver>() {
    fds_keep_their_flags::<D>(&peers::make43(), &[]);
}

fn make44_pipe_keeps_its_flags<D: Driver>() {
    fds_keep_their_flags::<D>(&peers::make44(), &["--jobserver-style=pipe"]);
}

conformance!(make43_pipe_keeps_its_flags, make44_pipe_keeps_its_flags);

/// The check itself: a worker that flips `O_NONBLOCK` on its inherited W (make's write side)
/// must report it and fail, so a passing run above means the flags really stayed the same.
#[test]
fn a_flag_flipped_on_makes_pipe_is_detected() {
    let dir = TempDir::new("fd-flags-self-test");
    let worker = Worker::new(WORKER)
        .driver("blocking")
        .units(1)
        .hold_ms(10)
        .arg("--check-parent-fd-flags")
        .arg("--flip-write-fd-flags");
    write_makefile(dir.path(), 1, Plus::Yes, &worker);

    let run = run_make(&peers::make43(), dir.path(), Some(2), &[]);
    assert!(
        !run.status.success(),
        "make succeeded although the worker changed a flag; output:\n{}",
        run.output
    );
    assert!(
        run.output.contains("jobserver descriptor flags changed"),
        "output:\n{}",
        run.output
    );
}
