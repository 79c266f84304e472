//! `--require-jobserver`: exit 2, with a message that says to mark the make rule with `+`,
//! when there is no usable jobserver, and nothing runs.
//!
//! 1. `require_jobserver_without_one_in_the_environment`: `MAKEFLAGS`, `MFLAGS` and
//!    `CARGO_MAKEFLAGS` removed.
//! 2. `require_jobserver_under_make43_rule_without_plus`: make 4.3 `-j2` closes the
//!    jobserver's descriptors for a rule without `+` but still names them in `MAKEFLAGS`.
//! 3. `require_jobserver_under_make44_pipe_rule_without_plus`: make 4.4.1
//!    `--jobserver-style=pipe` passes `--jobserver-auth=-2,-2` to a rule without `+`.
//! 4. `require_jobserver_is_satisfied_with_plus`: the same rules with `+` run (make 4.3 and
//!    make 4.4.1 fifo).

mod cli_common;

use std::path::Path;

use cli_common::{
    assert_make_tokens_clean, command, jobrun, make43, make44, run, write_makefile, Output,
    TempDir, JOBRUN,
};

fn assert_no_jobserver_failure(out: &Output, dir: &TempDir) {
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("jobrun:"))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("jobserver") && l.contains('+')),
        "jobrun must say that the rule needs `+`\n{out}"
    );
    assert!(
        !dir.exists("ran"),
        "a task ran although the run failed\n{out}"
    );
}

fn under_make(make: &Path, style: &[&str], plus: bool, label: &str) -> (Output, TempDir) {
    let dir = TempDir::new(label);
    let recipe = format!(
        "{}{JOBRUN} --require-jobserver -- 'touch ran'",
        if plus { "+" } else { "" }
    );
    write_makefile(&dir, &[("all", &[recipe])]);
    let mut cmd = command(make, &dir);
    cmd.arg("-j2").args(style);
    let out = run(cmd, &dir, "make");
    (out, dir)
}

#[test]
fn require_jobserver_without_one_in_the_environment() {
    let dir = TempDir::new("require-env");
    // `jobrun()` removes MAKEFLAGS, MFLAGS and CARGO_MAKEFLAGS (and the other make variables).
    let out = run(
        jobrun(&dir, ["--require-jobserver", "--", "touch ran"]),
        &dir,
        "jobrun",
    );
    out.assert_code(2);
    assert!(
        out.stderr.contains("`+`"),
        "the message must mention `+`\n{out}"
    );
    assert_no_jobserver_failure(&out, &dir);
}

#[test]
fn require_jobserver_under_make43_rule_without_plus() {
    let (out, dir) = under_make(&make43(), &[], false, "require-43");
    assert_ne!(out.code(), 0, "{out}");
    assert!(
        out.stderr.contains("Error 2"),
        "jobrun must exit 2 (make reports `Error 2`)\n{out}"
    );
    assert_no_jobserver_failure(&out, &dir);
    assert_make_tokens_clean(&out);
}

#[test]
fn require_jobserver_under_make44_pipe_rule_without_plus() {
    let (out, dir) = under_make(&make44(), &["--jobserver-style=pipe"], false, "require-44");
    assert_ne!(out.code(), 0, "{out}");
    assert!(
        out.stderr.contains("Error 2"),
        "jobrun must exit 2 (make reports `Error 2`)\n{out}"
    );
    assert_no_jobserver_failure(&out, &dir);
    assert_make_tokens_clean(&out);
}

#[test]
fn require_jobserver_is_satisfied_with_plus() {
    for (make, style, label) in [
        (make43(), &[][..], "require-ok-43"),
        (make44(), &["--jobserver-style=fifo"][..], "require-ok-44"),
    ] {
        let (out, dir) = under_make(&make, style, true, label);
        out.assert_code(0);
        assert_make_tokens_clean(&out);
        assert!(dir.exists("ran"), "{out}");
    }
}
