//! `jobrun` inside a make recipe marked with `+` keeps make's `-j` bound, under make 4.3 (a
//! pipe jobserver) and make 4.4.1 (`--jobserver-style=fifo`), and gives every token back:
//! make's exit-time token check stays quiet.
//!
//! 1. `make43_pipe_bound_holds_for_one_jobrun` / `make44_fifo_bound_holds_for_one_jobrun`:
//!    `make -j3` runs one `+jobrun -f g.toml` of 8 tasks; at most 3 run at once and at least
//!    2 (jobrun really takes tokens from make's pool).
//! 2. `make43_pipe_two_jobruns_share_the_bound` / `make44_fifo_two_jobruns_share_the_bound`:
//!    `make -j3 graph cmds` runs a `-f g.toml` jobrun and a `-- cmds` jobrun side by side;
//!    together they stay within 3.
//! 3. `make_token_check_catches_a_stolen_token`: the oracle has teeth: a recipe that reads a
//!    token and never writes it back makes both makes complain.

mod cli_common;

use std::path::Path;

use cli_common::{
    assert_make_tokens_clean, command, make43, make44, make_escape, make_token_complaints, run,
    sh_quote, span_cmd, toml_task, write_makefile, Output, Spans, TempDir, JOBRUN,
};

const TASKS: usize = 8;
const HOLD: &str = "0.4";

/// Writes `g.toml` with `TASKS` span tasks `g1..` logging into `spans.log`; returns the
/// recipe line that runs it (`-v`, so that it says it joined make's pool; `-j1`, which a
/// joined pool ignores).
fn graph_recipe(dir: &TempDir) -> String {
    let log = dir.join("spans.log");
    let mut toml = String::new();
    for i in 1..=TASKS {
        toml += &toml_task(
            &format!("g{i}"),
            &span_cmd(&log, &format!("g{i}"), HOLD),
            "",
        );
    }
    dir.write("g.toml", &toml);
    format!("+{JOBRUN} -v -j1 -f g.toml")
}

/// The recipe line of a `-- cmds` jobrun with `TASKS` span commands `c1..`.
fn cmds_recipe(dir: &TempDir) -> String {
    let log = dir.join("spans.log");
    let cmds: Vec<String> = (1..=TASKS)
        .map(|i| sh_quote(&make_escape(&span_cmd(&log, &format!("c{i}"), HOLD))))
        .collect();
    format!("+{JOBRUN} -v -j1 -- {}", cmds.join(" "))
}

fn run_make(make: &Path, dir: &TempDir, args: &[&str]) -> Output {
    let mut cmd = command(make, dir);
    cmd.args(args);
    run(cmd, dir, "make")
}

/// Checks a clean make run: exit 0, the token check quiet, every jobrun's audit clean, every
/// span ended, the bound held; returns the spans.
fn check_run(out: &Output, dir: &TempDir, jobruns: usize, spans_expected: usize) -> Spans {
    out.assert_code(0);
    assert_make_tokens_clean(out);
    // Each jobrun joined make's pool (-j1 is ignored then) and says its own audit was clean.
    let joined = out.stderr_lines_with("joined the jobserver");
    assert_eq!(
        joined.len(),
        jobruns,
        "every jobrun joins make's pool\n{out}"
    );
    let clean = out.stderr_lines_with("audit clean");
    assert_eq!(
        clean.len(),
        jobruns,
        "every jobrun's token audit is clean\n{out}"
    );
    let spans = Spans::read(&dir.join("spans.log"));
    assert_eq!(spans.started(), spans_expected, "{}", spans.text());
    spans.assert_all_ended();
    let max = spans.max_concurrency();
    assert!(
        max <= 3,
        "{max} tasks ran at once under make -j3:\n{}",
        spans.pretty()
    );
    spans
}

fn bound_holds_for_one_jobrun(make: &Path, style: &[&str], label: &str) {
    let dir = TempDir::new(label);
    write_makefile(&dir, &[("graph", &[graph_recipe(&dir)])]);
    let mut args = vec!["-j3"];
    args.extend_from_slice(style);
    args.push("graph");
    let out = run_make(make, &dir, &args);
    let spans = check_run(&out, &dir, 1, TASKS);
    let max = spans.max_concurrency();
    assert!(
        max >= 2,
        "only {max} at once: jobrun took no token from make's pool:\n{}\n{out}",
        spans.pretty()
    );
    assert!(
        dir.fifos_in_tmp().is_empty(),
        "fifos left: {:?}",
        dir.fifos_in_tmp()
    );
}

fn two_jobruns_share_the_bound(make: &Path, style: &[&str], label: &str) {
    let dir = TempDir::new(label);
    write_makefile(
        &dir,
        &[
            ("graph", &[graph_recipe(&dir)]),
            ("cmds", &[cmds_recipe(&dir)]),
        ],
    );
    let mut args = vec!["-j3"];
    args.extend_from_slice(style);
    args.extend(["graph", "cmds"]);
    let out = run_make(make, &dir, &args);
    let spans = check_run(&out, &dir, 2, 2 * TASKS);
    let max = spans.max_concurrency();
    assert!(max >= 2, "only {max} at once:\n{}", spans.pretty());
    assert!(
        dir.fifos_in_tmp().is_empty(),
        "fifos left: {:?}",
        dir.fifos_in_tmp()
    );
}

#[test]
fn make43_pipe_bound_holds_for_one_jobrun() {
    bound_holds_for_one_jobrun(&make43(), &[], "bound-43");
}

#[test]
fn make44_fifo_bound_holds_for_one_jobrun() {
    bound_holds_for_one_jobrun(&make44(), &["--jobserver-style=fifo"], "bound-44");
}

#[test]
fn make43_pipe_two_jobruns_share_the_bound() {
    two_jobruns_share_the_bound(&make43(), &[], "bound2-43");
}

#[test]
fn make44_fifo_two_jobruns_share_the_bound() {
    two_jobruns_share_the_bound(&make44(), &["--jobserver-style=fifo"], "bound2-44");
}

/// A recipe that reads one token from make's jobserver and never gives it back: make's
/// exit-time check must say so, or the checks above would prove nothing.
#[test]
fn make_token_check_catches_a_stolen_token() {
    // make 4.3: `--jobserver-auth=R,W`.
    let dir = TempDir::new("oracle-43");
    let steal = make_escape(r#"r=${MAKEFLAGS##*auth=}; r=${r%%,*}; head -c1 <&$r >/dev/null"#);
    write_makefile(&dir, &[("all", &[format!("+{steal}")])]);
    let out = run_make(&make43(), &dir, &["-j3"]);
    assert!(
        !make_token_complaints(&out.stderr).is_empty(),
        "make 4.3 did not notice a stolen token\n{out}"
    );

    // make 4.4.1: `--jobserver-auth=fifo:PATH`.
    let dir = TempDir::new("oracle-44");
    let steal = make_escape(r#"f=${MAKEFLAGS##*fifo:}; f=${f%% *}; head -c1 "$f" >/dev/null"#);
    write_makefile(&dir, &[("all", &[format!("+{steal}")])]);
    let out = run_make(&make44(), &dir, &["-j3", "--jobserver-style=fifo"]);
    assert!(
        !make_token_complaints(&out.stderr).is_empty(),
        "make 4.4.1 did not notice a stolen token\n{out}"
    );
}
