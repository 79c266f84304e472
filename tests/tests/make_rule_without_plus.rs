//! Our client in a make recipe WITHOUT `+`, where make does not hand the jobserver on:
//!
//! - make 4.3 closes the descriptors but still names them in `MAKEFLAGS`: `from_env` fails
//!   with `ErrorKind::BadFds` and a message that says to add `+`;
//! - make 4.4.1 (`--jobserver-style=pipe`) appends `--jobserver-auth=-2,-2`: `from_env`
//!   fails with `ErrorKind::Disabled`.
//!
//! In both, `from_env_or_new` falls back to `Mode::ImplicitOnly` with the reason in
//! `degraded()`, and the worker still runs its units, one at a time. And when the numbers in
//! `MAKEFLAGS` name an unrelated open file, the client refuses it without touching it.

use std::path::Path;

use jobserver_tests::timeline::{run_make, write_makefile, Plus, Run, TempDir, Timeline, Worker};
use jobserver_tests::{conformance, peers, Driver};

const WORKER: &str = env!("CARGO_BIN_EXE_jobserver-worker");
const JOBS: usize = 4;
const RECIPES: usize = 4;
/// Two units per worker: with only the implicit slot they must run one after the other.
const UNITS: usize = 2;
const HOLD_MS: u64 = 50;

/// Runs `RECIPES` workers without `+` that expect `from_env` to fail with `kind`; checks what
/// they reported and that each then ran its units one at a time.
fn degrades_to_implicit_only<D: Driver>(
    make: &Path,
    extra: &[&str],
    kind: &str,
    worker_args: &[&str],
    dir: &TempDir,
) -> Run {
    let log = dir.join("units.log");
    let mut worker = Worker::new(WORKER)
        .driver(D::NAME)
        .units(UNITS)
        .hold_ms(HOLD_MS)
        .log(&log)
        .arg("--expect-error")
        .arg(kind);
    for arg in worker_args {
        worker = worker.arg(arg);
    }
    write_makefile(dir.path(), RECIPES, Plus::No, &worker);

    let run = run_make(make, dir.path(), Some(JOBS), extra);
    // The worker itself fails unless from_env gave `kind` and from_env_or_new fell back.
    run.assert_success("make");

    let from_env = run.lines_starting_with("from_env: ");
    assert_eq!(from_env.len(), RECIPES, "output:\n{}", run.output);
    for line in from_env {
        assert!(
            line.starts_with(&format!("from_env: err kind={kind} ")),
            "{line}"
        );
        assert!(
            line.contains("prefixing the recipe line with `+`"),
            "the error must tell the user to add `+`: {line}"
        );
    }
    let or_new = run.lines_starting_with("from_env_or_new: ");
    assert_eq!(or_new.len(), RECIPES, "output:\n{}", run.output);
    for line in or_new {
        assert!(
            line.starts_with(&format!(
                "from_env_or_new: ok mode=ImplicitOnly degraded={kind} "
            )),
            "{line}"
        );
    }

    let timeline = Timeline::read(&log);
    timeline.assert_balanced();
    assert_eq!(timeline.acquisitions(), RECIPES * UNITS);
    assert_eq!(timeline.pids().len(), RECIPES);
    for pid in timeline.pids() {
        assert_eq!(
            timeline.max_concurrency_of(pid),
            1,
            "worker {pid} has only its implicit slot: one unit at a time"
        );
    }
    run
}

fn make43_closed_fds_give_bad_fds_then_implicit_only<D: Driver>() {
    let dir = TempDir::new(&format!("no-plus-make43-{}", D::NAME));
    let run = degrades_to_implicit_only::<D>(&peers::make43(), &[], "BadFds", &[], &dir);
    for line in run.lines_starting_with("from_env: ") {
        // Closed, or (tokio, smol) already reused by the runtime's own epoll descriptor.
        assert!(
            line.contains("is not open in this process")
                || line.contains("is open but is not a pipe"),
            "{line}"
        );
    }
}

fn make44_negative_fds_give_disabled_then_implicit_only<D: Driver>() {
    let dir = TempDir::new(&format!("no-plus-make44-{}", D::NAME));
    degrades_to_implicit_only::<D>(
        &peers::make44(),
        &["--jobserver-style=pipe"],
        "Disabled",
        &[],
        &dir,
    );
}

/// The worker opens a regular file onto the (closed) numbers in `MAKEFLAGS` before connecting:
/// the client must refuse them as "not a pipe" and leave the file's flags, offset and
/// contents alone (the worker checks flags and offsets; this test checks the contents too).
fn make43_unrelated_file_on_the_named_fds_is_refused_untouched<D: Driver>() {
    let dir = TempDir::new(&format!("no-plus-victim-{}", D::NAME));
    let victim = dir.join("victim.txt");
    let contents = "an unrelated file; no token may be written here\n";
    std::fs::write(&victim, contents).unwrap();
    let victim_arg = victim.to_str().expect("a UTF-8 temporary path");

    let run = degrades_to_implicit_only::<D>(
        &peers::make43(),
        &[],
        "BadFds",
        &["--occupy-jobserver-fds", victim_arg],
        &dir,
    );
    for line in run.lines_starting_with("from_env: ") {
        assert!(line.contains("is open but is not a pipe"), "{line}");
    }
    let untouched = run.lines_starting_with("occupied-fds-untouched ");
    assert_eq!(
        untouched.len(),
        RECIPES,
        "every worker must have occupied the named fds and found them untouched; output:\n{}",
        run.output
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), contents);
}

conformance!(
    make43_closed_fds_give_bad_fds_then_implicit_only,
    make44_negative_fds_give_disabled_then_implicit_only,
    make43_unrelated_file_on_the_named_fds_is_refused_untouched,
);
