//! A run where everything succeeds: exit 0, a summary line, the tasks' output, and the job
//! log `.jobrun_log` with one line per task.
//!
//! 1. `success_exits_zero_with_a_summary_and_a_job_log`: `-f g.toml` with a dependency; run
//!    twice, the log gains one line per task each time.
//! 2. `commands_after_dashes_succeed_too`: the `-- CMD...` form.

mod cli_common;

use cli_common::{jobrun, run, toml_task, Output, TempDir};

/// The summary line (`jobrun: N ok ... in T`).
fn assert_summary(out: &Output, ok: usize) {
    let want = format!("jobrun: {ok} ok");
    let line = out
        .stderr
        .lines()
        .find(|l| l.starts_with(&want))
        .unwrap_or_else(|| panic!("no summary line starting with {want:?}\n{out}"));
    assert!(
        !line.contains("failed") && !line.contains("skipped") && !line.contains("not run"),
        "{line}"
    );
    assert!(out.stderr.contains("audit clean"), "{out}");
}

/// The job log's task lines: (name, status).
fn log_lines(dir: &TempDir) -> Vec<(String, String)> {
    let text = dir.read(".jobrun_log");
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("# jobrun log v1"),
        "the log's header:\n{text}"
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 4, "four tab-separated fields: {l:?}");
            assert!(f[1].parse::<u64>().is_ok(), "start in ms: {l:?}");
            assert!(f[2].parse::<u64>().is_ok(), "duration in µs: {l:?}");
            (f[0].to_owned(), f[3].to_owned())
        })
        .collect()
}

#[test]
fn success_exits_zero_with_a_summary_and_a_job_log() {
    let dir = TempDir::new("success");
    let toml = toml_task("gen", "echo generated > gen.out", "")
        + &toml_task("use", "cat gen.out; echo used", "deps = [\"gen\"]")
        + &toml_task("other", "echo other", "");
    dir.write("g.toml", &toml);
    for round in 1..=2 {
        let out = run(jobrun(&dir, ["-j2", "-f", "g.toml"]), &dir, "jobrun");
        out.assert_code(0);
        assert_summary(&out, 3);
        assert!(
            out.stdout.contains("generated\nused"),
            "`use` ran after `gen` and its output is shown\n{out}"
        );
        assert!(out.stdout.contains("other"), "{out}");
        assert!(!out.stderr.contains("FAILED"), "{out}");
        let lines = log_lines(&dir);
        assert_eq!(
            lines.len(),
            3 * round,
            "one log line per task per run: {lines:?}"
        );
        let mut names: Vec<&str> = lines[lines.len() - 3..]
            .iter()
            .map(|(n, s)| {
                assert_eq!(s, "ok", "{lines:?}");
                n.as_str()
            })
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["gen", "other", "use"]);
    }
}

#[test]
fn commands_after_dashes_succeed_too() {
    let dir = TempDir::new("success-cmds");
    let out = run(
        jobrun(&dir, ["-j2", "--", "echo one", "echo two", "true"]),
        &dir,
        "jobrun",
    );
    out.assert_code(0);
    assert_summary(&out, 3);
    assert!(
        out.stdout.contains("one") && out.stdout.contains("two"),
        "{out}"
    );
    let lines = log_lines(&dir);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines.iter().all(|(_, s)| s == "ok"), "{lines:?}");
}
