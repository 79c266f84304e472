//! Failures, `-k` and `-n`, on the command line and through make's `MAKEFLAGS`.
//!
//! The failure graph, run with `-j1` so that the order is the priority order (critical path,
//! then declaration order): `f1` fails and has a dependent `d`, so it goes first; then `x`,
//! `f2` (fails), `y`.
//!
//! 1. `default_stops_starting_after_the_first_failure`: nothing after `f1` starts; `d` is
//!    reported skipped, the rest not run; exit 1.
//! 2. `keep_going_zero_runs_every_independent_task`: `-k 0`: `x` and `y` run, `d` is skipped;
//!    exit 1.
//! 3. `keep_going_two_stops_after_the_second_failure`: `-k 2`: `x` runs, `y` does not.
//! 4. `dry_run_prints_commands_in_start_order_and_runs_nothing`: `-n`.
//! 5. `make_n_is_a_dry_run_under_a_jobserver` / `make_k_keeps_going_under_a_jobserver`:
//!    `make -n -j2` / `make -k -j2` with a `+` rule pass `n` / `k` in `MAKEFLAGS`.
//! 6. `make_n_is_a_dry_run_without_a_jobserver` / `make_k_keeps_going_without_a_jobserver`:
//!    the same with no `-j` (so no jobserver, just `MAKEFLAGS=n` / `k`).
//! 7. `make_k_keeps_going_in_a_rule_without_plus`: `make -k -j2`, rule without `+` (make
//!    closes the jobserver's descriptors; `k` is still in `MAKEFLAGS`).
//! 8. `make_d_implies_verbose` / `make_debug_implies_verbose_under_a_jobserver`: make 4.4.1
//!    `-d` (`MAKEFLAGS=d`) and `--debug=b -j2` turn on jobrun's `-v` lines;
//!    `makeflags_debug_implies_verbose` checks the values make writes, without make.

mod cli_common;

use cli_common::{
    command, jobrun, make43, make44, run, toml_task, write_makefile, Output, TempDir, JOBRUN,
};

fn failure_graph(dir: &TempDir) {
    let toml = toml_task("f1", "exit 3", "")
        + &toml_task("d", "touch mark_d", "deps = [\"f1\"]")
        + &toml_task("x", "touch mark_x", "")
        + &toml_task("f2", "exit 4", "")
        + &toml_task("y", "touch mark_y", "");
    dir.write("g.toml", &toml);
}

fn marks(dir: &TempDir) -> Vec<&'static str> {
    [
        "mark_a", "mark_b", "mark_c", "mark_d", "mark_x", "mark_y", "mark_z",
    ]
    .into_iter()
    .filter(|m| dir.exists(m))
    .collect()
}

/// The summary line (`jobrun: N ok, ...`).
fn summary(out: &Output) -> &str {
    out.stderr
        .lines()
        .find(|l| l.starts_with("jobrun: ") && l.contains(" ok") && l.contains(" in "))
        .unwrap_or_else(|| panic!("no summary line\n{out}"))
}

fn assert_summary(out: &Output, parts: &[&str]) {
    let line = summary(out);
    for p in parts {
        assert!(line.contains(p), "summary {line:?} lacks {p:?}\n{out}");
    }
}

fn assert_reports_skipped(out: &Output, task: &str, because: &str) {
    assert!(
        out.stderr
            .lines()
            .any(|l| l.trim_start().starts_with("skipped:")
                && l.contains(task)
                && l.contains(because)),
        "the summary must list `{task}` as skipped because `{because}` failed\n{out}"
    );
}

#[test]
fn default_stops_starting_after_the_first_failure() {
    let dir = TempDir::new("fail-default");
    failure_graph(&dir);
    let out = run(jobrun(&dir, ["-j1", "-f", "g.toml"]), &dir, "jobrun");
    out.assert_code(1);
    assert_eq!(
        marks(&dir),
        Vec::<&str>::new(),
        "nothing starts after f1 failed\n{out}"
    );
    assert_summary(&out, &["0 ok", "1 failed", "1 skipped", "3 not run"]);
    assert_reports_skipped(&out, "d", "f1");
}

#[test]
fn keep_going_zero_runs_every_independent_task() {
    let dir = TempDir::new("fail-k0");
    failure_graph(&dir);
    let out = run(
        jobrun(&dir, ["-j1", "-k", "0", "-f", "g.toml"]),
        &dir,
        "jobrun",
    );
    out.assert_code(1);
    assert_eq!(marks(&dir), ["mark_x", "mark_y"], "{out}");
    assert_summary(&out, &["2 ok", "2 failed", "1 skipped"]);
    assert!(!summary(&out).contains("not run"), "{out}");
    assert_reports_skipped(&out, "d", "f1");
}

#[test]
fn keep_going_two_stops_after_the_second_failure() {
    let dir = TempDir::new("fail-k2");
    failure_graph(&dir);
    let out = run(
        jobrun(&dir, ["-j1", "-k", "2", "-f", "g.toml"]),
        &dir,
        "jobrun",
    );
    out.assert_code(1);
    assert_eq!(marks(&dir), ["mark_x"], "{out}");
    assert_summary(&out, &["1 ok", "2 failed", "1 skipped", "1 not run"]);
}

/// `x`; `a` -> `b` -> `c`. At -j1 by critical path: a (3), b (2), then x and c tie (1) and
/// go in declaration order.
fn chain_graph(dir: &TempDir) {
    let toml = toml_task("x", "touch mark_x", "")
        + &toml_task("a", "touch mark_a", "")
        + &toml_task("b", "touch mark_b", "deps = [\"a\"]")
        + &toml_task("c", "touch mark_c", "deps = [\"b\"]");
    dir.write("g.toml", &toml);
}

#[test]
fn dry_run_prints_commands_in_start_order_and_runs_nothing() {
    let dir = TempDir::new("dry-run");
    chain_graph(&dir);
    let out = run(jobrun(&dir, ["-n", "-j1", "-f", "g.toml"]), &dir, "jobrun");
    out.assert_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "touch mark_a",
            "touch mark_b",
            "touch mark_x",
            "touch mark_c"
        ],
        "{out}"
    );
    assert_eq!(
        marks(&dir),
        Vec::<&str>::new(),
        "a dry run ran something\n{out}"
    );
}

fn run_make(dir: &TempDir, args: &[&str]) -> Output {
    run_make_rule(dir, args, "+")
}

/// Runs make 4.3 with `args` on a rule `<prefix>jobrun -f g.toml`.
fn run_make_rule(dir: &TempDir, args: &[&str], prefix: &str) -> Output {
    write_makefile(dir, &[("all", &[format!("{prefix}{JOBRUN} -f g.toml")])]);
    let mut cmd = command(make43(), dir);
    cmd.args(args);
    run(cmd, dir, "make")
}

fn make_n_is_a_dry_run(args: &[&str], label: &str) {
    let dir = TempDir::new(label);
    chain_graph(&dir);
    let out = run_make(&dir, args);
    assert_eq!(
        marks(&dir),
        Vec::<&str>::new(),
        "`make {}` must make jobrun a dry run, but tasks ran\n{out}",
        args.join(" ")
    );
    out.assert_code(0);
    let mut planned: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("touch mark_"))
        .collect();
    planned.sort_unstable();
    assert_eq!(
        planned,
        [
            "touch mark_a",
            "touch mark_b",
            "touch mark_c",
            "touch mark_x"
        ],
        "the dry run lists every command once\n{out}"
    );
}

#[test]
fn make_n_is_a_dry_run_under_a_jobserver() {
    make_n_is_a_dry_run(&["-n", "-j2"], "make-n-j2");
}

/// Fails at the time of writing: `jobrun` follows `n`/`k` only from the `MAKEFLAGS` of a
/// jobserver it joined (`Runner::run`: `honour_makeflags && self.client.var().is_some()`), so
/// with no (usable) jobserver it ignores them, although `--help` says "-n ... (also make's
/// `n`)" and "make's `k` flag means 0".
#[test]
fn make_n_is_a_dry_run_without_a_jobserver() {
    make_n_is_a_dry_run(&["-n"], "make-n");
}

/// `f1` fails at once and goes first (it has a dependent); `s` takes the second slot; then
/// `x`, `y`, `z`. Without `k` nothing after the failure starts.
fn keep_going_graph(dir: &TempDir) {
    let toml = toml_task("f1", "exit 3", "")
        + &toml_task("d", "touch mark_d", "deps = [\"f1\"]")
        + &toml_task("s", "sleep 0.3", "")
        + &toml_task("x", "touch mark_x", "")
        + &toml_task("y", "touch mark_y", "")
        + &toml_task("z", "touch mark_z", "");
    dir.write("g.toml", &toml);
}

fn make_k_keeps_going(jobs: &[&str], label: &str) {
    make_k_keeps_going_rule(jobs, "+", label);
}

fn make_k_keeps_going_rule(jobs: &[&str], prefix: &str, label: &str) {
    // Without `-k`: jobrun stops starting tasks after f1.
    let dir = TempDir::new(&format!("{label}-control"));
    keep_going_graph(&dir);
    let out = run_make_rule(&dir, jobs, prefix);
    assert_ne!(out.code(), 0, "{out}");
    assert_eq!(marks(&dir), Vec::<&str>::new(), "{out}");

    let dir = TempDir::new(label);
    keep_going_graph(&dir);
    let mut args = vec!["-k"];
    args.extend_from_slice(jobs);
    let out = run_make_rule(&dir, &args, prefix);
    assert_eq!(
        marks(&dir),
        ["mark_x", "mark_y", "mark_z"],
        "`make {}` must make jobrun keep going\n{out}",
        args.join(" ")
    );
    assert_ne!(out.code(), 0, "f1 failed, so make fails\n{out}");
    assert!(out.stderr.contains("Error 1"), "jobrun exits 1\n{out}");
    assert_reports_skipped(&out, "d", "f1");
}

#[test]
fn make_k_keeps_going_under_a_jobserver() {
    make_k_keeps_going(&["-j2"], "make-k-j2");
}

/// Fails at the time of writing: `jobrun` follows `n`/`k` only from the `MAKEFLAGS` of a
/// jobserver it joined (`Runner::run`: `honour_makeflags && self.client.var().is_some()`), so
/// with no (usable) jobserver it ignores them, although `--help` says "-n ... (also make's
/// `n`)" and "make's `k` flag means 0".
#[test]
fn make_k_keeps_going_without_a_jobserver() {
    make_k_keeps_going(&[], "make-k");
}

/// A rule without `+` under `make -k -j2`: jobrun gets no jobserver (it runs one task at a
/// time and says why) but `k` is still in `MAKEFLAGS`. Fails at the time of writing, as
/// `make_k_keeps_going_without_a_jobserver`.
#[test]
fn make_k_keeps_going_in_a_rule_without_plus() {
    make_k_keeps_going_rule(&["-j2"], "", "make-k-noplus");
}

/// The verbose lines `-v` prints for the tasks of [`chain_graph`].
fn start_lines(out: &Output) -> Vec<&str> {
    out.stderr_lines_with("jobrun: start `")
}

/// Runs make 4.4.1 with `args` on a rule `+jobrun -f g.toml`, and checks that jobrun ran
/// every task and printed its verbose lines.
fn make_debug_implies_verbose(args: &[&str], label: &str) {
    let dir = TempDir::new(label);
    chain_graph(&dir);
    write_makefile(&dir, &[("all", &[format!("+{JOBRUN} -f g.toml")])]);
    let mut cmd = command(make44(), &dir);
    cmd.args(args);
    let out = run(cmd, &dir, "make");
    out.assert_code(0);
    assert_eq!(
        marks(&dir),
        ["mark_a", "mark_b", "mark_c", "mark_x"],
        "{out}"
    );
    assert_eq!(
        start_lines(&out).len(),
        4,
        "`make {}` must make jobrun verbose (one `jobrun: start` line per task)\n{out}",
        args.join(" ")
    );
}

#[test]
fn make_d_implies_verbose() {
    make_debug_implies_verbose(&["-d"], "make-d");
}

#[test]
fn make_debug_implies_verbose_under_a_jobserver() {
    make_debug_implies_verbose(&["--debug=b", "-j2"], "make-debug-j2");
}

/// The `MAKEFLAGS` values GNU make 4.4.1 writes (see `jobserver-proto/tests/protocol_vectors.rs`),
/// given to jobrun directly: debug on gives the verbose lines, debug off (no debug option, or
/// `--debug=n`, make's "none") does not.
#[test]
fn makeflags_debug_implies_verbose() {
    for (value, verbose) in [
        ("d", true),
        ("dk", true),
        (" --debug=basic", true),
        (" --debug=v,j", true),
        ("k", false),
        (" --debug=n", false),
        ("", false),
    ] {
        let dir = TempDir::new("makeflags-debug");
        chain_graph(&dir);
        let mut cmd = jobrun(&dir, ["-j1", "-f", "g.toml"]);
        cmd.env("MAKEFLAGS", value);
        let out = run(cmd, &dir, "jobrun");
        out.assert_code(0);
        let want = if verbose { 4 } else { 0 };
        assert_eq!(
            start_lines(&out).len(),
            want,
            "MAKEFLAGS={value:?}: verbose lines expected: {verbose}\n{out}"
        );
    }
}
