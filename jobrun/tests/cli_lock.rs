//! A task whose `lock` another process holds is re-queued, holding no token, and runs once
//! the lock is free.
//!
//! `locked_task_is_requeued_and_runs_after_release`: this test process holds an `flock` on
//! `locks/the.lock`; `jobrun -v -j2 -f g.toml` runs task `A` (with that lock) and two slow
//! independent tasks `B` and `C`. The verbose stderr shows `A` re-queued; `B` and `C` run side
//! by side meanwhile (so the waiting `A` holds neither of the 2 tokens); `A` does not start
//! until the lock is released, then runs; the run exits 0.

mod cli_common;

use std::os::fd::AsFd;
use std::time::Duration;

use rustix::fs::{flock, FlockOperation};

use cli_common::{epoch_ns, jobrun, span_cmd, spawn, toml_task, wait_until, Spans, TempDir};

#[test]
fn locked_task_is_requeued_and_runs_after_release() {
    let dir = TempDir::new("lock");
    let log = dir.join("spans.log");
    std::fs::create_dir_all(dir.join("locks")).unwrap();
    let lock_path = dir.join("locks/the.lock");
    let lock_file = std::fs::File::create(&lock_path).unwrap();
    flock(lock_file.as_fd(), FlockOperation::NonBlockingLockExclusive)
        .expect("take the lock before jobrun starts");

    let toml = toml_task("A", &span_cmd(&log, "A", "0"), "lock = \"locks/the.lock\"")
        + &toml_task("B", &span_cmd(&log, "B", "3"), "")
        + &toml_task("C", &span_cmd(&log, "C", "3"), "");
    dir.write("g.toml", &toml);
    let p = spawn(jobrun(&dir, ["-v", "-j2", "-f", "g.toml"]), &dir, "jobrun");
    let ctx = || {
        format!(
            "spans:\n{}stderr:\n{}",
            Spans::read(&log).pretty(),
            p.stderr_so_far()
        )
    };
    wait_until(
        Duration::from_secs(20),
        "`A` to be re-queued and `B` and `C` to start",
        || p.stderr_so_far().contains("re-queued `A`") && Spans::read(&log).started() >= 2,
        ctx,
    );
    // Hold the lock a little longer: A must not run meanwhile.
    std::thread::sleep(Duration::from_millis(500));
    let spans = Spans::read(&log);
    assert!(
        spans.spans.iter().all(|s| s.id != "A"),
        "A ran while its lock was held:\n{}",
        ctx()
    );
    let released = epoch_ns();
    drop(lock_file);

    let out = p.wait(Duration::from_secs(60));
    out.assert_code(0);
    let spans = Spans::read(&log);
    assert_eq!(spans.started(), 3, "{}\n{out}", spans.pretty());
    spans.assert_all_ended();
    let a = spans.spans.iter().find(|s| s.id == "A").unwrap();
    assert!(
        a.start > released,
        "A started before the lock was released:\n{}",
        spans.pretty()
    );
    let b = spans.spans.iter().find(|s| s.id == "B").unwrap();
    let c = spans.spans.iter().find(|s| s.id == "C").unwrap();
    assert!(
        b.start < c.end.unwrap() && c.start < b.end.unwrap(),
        "B and C must run side by side while A waits for its lock holding no token:\n{}\n{out}",
        spans.pretty()
    );
    assert!(out.stderr.contains("pool whole: audit clean"), "{out}");
}
