//! A make that a task runs joins jobrun's pool: every sleep job of every nested make counts
//! against one bound.
//!
//! The nested makes are started as plain `make -f sub.mk` (no `-j`): they find the jobserver
//! in the `MAKEFLAGS` jobrun gives its tasks. (A nested `make -j` with no number does not join:
//! GNU make says "-j0 forced in submake: resetting jobserver mode" and runs without a bound.)
//!
//! 1. `nested_makes_share_jobruns_own_pool`: `jobrun -j2` runs a make 4.3 with 2 jobs and a
//!    make 4.4.1 with 6 jobs; all their jobs together stay within 2, and the second make runs
//!    2 at once once the first is done (it really takes tokens from the pool).
//! 2. `nested_makes_share_an_outer_makes_pool`: the same under `make -j3` (make 4.3, with `+`):
//!    within 3.
//! 3. `nested_makes_share_an_outer_make44_fifo_pool`: under make 4.4.1 `-j3
//!    --jobserver-style=fifo`, with nested make 4.4.1s: within 3.

mod cli_common;

use std::path::Path;

use cli_common::{
    assert_make_tokens_clean, command, jobrun, make43, make44, ninja, run, sh_quote,
    write_makefile, Output, Spans, TempDir, JOBRUN,
};

const HOLD: &str = "0.4";

/// Writes `<name>.mk`: `jobs` phony targets, each logging a span `<prefix><i>` into `log`.
fn write_submake(dir: &TempDir, name: &str, prefix: &str, jobs: usize, log: &Path) {
    let targets: Vec<String> = (1..=jobs).map(|i| format!("{prefix}{i}")).collect();
    let log = sh_quote(&log.display().to_string());
    let text = format!(
        ".PHONY: all {t}\nall: {t}\n{t}:\n\t@echo \"S $@ $$(date +%s%N)\" >> {log}; sleep {HOLD}; echo \"E $@ $$(date +%s%N)\" >> {log}\n",
        t = targets.join(" ")
    );
    dir.write(&format!("{name}.mk"), &text);
}

/// The two nested makes' commands: `make_a` (make 4.3 unless given) with jobs A1..A2, make
/// 4.4.1 with jobs B1..B6.
fn nested_commands(dir: &TempDir, make_a: Option<&Path>) -> Vec<String> {
    let log = dir.join("spans.log");
    write_submake(dir, "a", "A", 2, &log);
    write_submake(dir, "b", "B", 6, &log);
    vec![
        format!(
            "{} -f a.mk",
            make_a.map_or_else(make43, Path::to_path_buf).display()
        ),
        format!("{} -f b.mk", make44().display()),
    ]
}

fn check_spans(dir: &TempDir, bound: usize, out: &Output) {
    let spans = Spans::read(&dir.join("spans.log"));
    assert_eq!(spans.started(), 8, "{}\n{out}", spans.text());
    spans.assert_all_ended();
    let max = spans.max_concurrency();
    assert!(
        max <= bound,
        "{max} nested make jobs at once, bound {bound}:\n{}\n{out}",
        spans.pretty()
    );
    assert!(max >= 2, "only {max} at once:\n{}\n{out}", spans.pretty());
    let b = spans.max_concurrency_of("B");
    assert!(
        b >= 2,
        "the make 4.4.1 of 6 jobs never ran 2 at once ({b}): it did not take tokens from the pool\n{}\n{out}",
        spans.pretty()
    );
}

#[test]
fn nested_makes_share_jobruns_own_pool() {
    let dir = TempDir::new("nested-own");
    let mut args = vec!["-v".to_owned(), "-j2".to_owned(), "--".to_owned()];
    args.extend(nested_commands(&dir, None));
    let out = run(jobrun(&dir, &args), &dir, "jobrun");
    out.assert_code(0);
    assert!(
        !out.stderr.contains("forced in submake") && !out.stdout.contains("forced in submake"),
        "a nested make reset the jobserver\n{out}"
    );
    assert!(out.stderr.contains("created a pool of 2"), "{out}");
    assert!(out.stderr.contains("pool whole: audit clean"), "{out}");
    check_spans(&dir, 2, &out);
    assert!(
        dir.fifos_in_tmp().is_empty(),
        "fifos left: {:?}",
        dir.fifos_in_tmp()
    );
}

fn under_outer_make(outer: &Path, style: &[&str], make_a: Option<&Path>, label: &str) {
    let dir = TempDir::new(label);
    let cmds: Vec<String> = nested_commands(&dir, make_a)
        .iter()
        .map(|c| sh_quote(c))
        .collect();
    write_makefile(
        &dir,
        &[("all", &[format!("+{JOBRUN} -v -j1 -- {}", cmds.join(" "))])],
    );
    let mut cmd = command(outer, &dir);
    cmd.arg("-j3").args(style);
    let out = run(cmd, &dir, "make");
    out.assert_code(0);
    assert_make_tokens_clean(&out);
    assert!(
        !out.stdout.contains("jobserver") && !out.stderr.contains("forced in submake"),
        "a nested make had trouble with the jobserver\n{out}"
    );
    assert!(out.stderr.contains("joined the jobserver"), "{out}");
    assert!(out.stderr.contains("audit clean"), "{out}");
    check_spans(&dir, 3, &out);
    assert!(
        dir.fifos_in_tmp().is_empty(),
        "fifos left: {:?}",
        dir.fifos_in_tmp()
    );
}

#[test]
fn nested_makes_share_an_outer_makes_pool() {
    under_outer_make(&make43(), &[], None, "nested-outer-43");
}

/// make 4.4.1's fifo jobserver passes through jobrun to nested make 4.4.1s (make 4.3 cannot
/// read a fifo jobserver, so both nested makes are 4.4.1 here).
#[test]
fn nested_makes_share_an_outer_make44_fifo_pool() {
    let m44 = make44();
    under_outer_make(
        &m44,
        &["--jobserver-style=fifo"],
        Some(&m44),
        "nested-outer-44",
    );
}

/// ninja 1.13 joins a jobserver when run without `-j`: run by `jobrun -j3` next to a make,
/// its edges and the make's jobs share the 3 slots.
#[test]
fn nested_ninja_shares_jobruns_own_pool() {
    let dir = TempDir::new("nested-ninja");
    let log = dir.join("spans.log");
    write_submake(&dir, "a", "A", 2, &log);
    let quoted = sh_quote(&log.display().to_string());
    let mut build = String::from("rule span\n  command = echo \"S $out $$(date +%s%N)\" >> LOG; sleep HOLD; echo \"E $out $$(date +%s%N)\" >> LOG\n");
    build = build.replace("LOG", &quoted).replace("HOLD", HOLD);
    for i in 1..=6 {
        build += &format!("build N{i}: span\n");
    }
    dir.write("build.ninja", &build);
    let args = vec![
        "-v".to_owned(),
        "-j3".to_owned(),
        "--".to_owned(),
        format!("{} -f a.mk", make43().display()),
        format!("{} -f build.ninja", ninja().display()),
    ];
    let out = run(jobrun(&dir, &args), &dir, "jobrun");
    out.assert_code(0);
    assert!(out.stderr.contains("pool whole: audit clean"), "{out}");
    let spans = Spans::read(&log);
    assert_eq!(spans.started(), 8, "{}\n{out}", spans.text());
    spans.assert_all_ended();
    let max = spans.max_concurrency();
    assert!(
        max <= 3,
        "{max} jobs at once, bound 3:\n{}\n{out}",
        spans.pretty()
    );
    let n = spans.max_concurrency_of("N");
    assert!(
        n >= 2,
        "ninja never ran 2 edges at once ({n}): it did not take tokens from the pool\n{}\n{out}",
        spans.pretty()
    );
}
