//! A bad graph file is a usage error (exit 2) whose message names the file, the line and the
//! key, and nothing runs.
//!
//! `unknown_key_is_named_with_its_line`, `duplicate_name_points_at_the_second`,
//! `unknown_dep_points_at_the_deps_line`, `cycle_points_at_a_deps_line_of_the_cycle`,
//! `self_dependency_is_a_cycle_too`, `toml_syntax_error_names_the_line`.

mod cli_common;

use cli_common::{jobrun, run, Output, TempDir};

/// Runs `jobrun -f g.toml` on `text`; checks exit 2, that no task ran (every task of these
/// files would `touch ran`), and returns the output.
fn run_bad(label: &str, text: &str) -> Output {
    let dir = TempDir::new(label);
    dir.write("g.toml", text);
    let out = run(jobrun(&dir, ["-f", "g.toml"]), &dir, "jobrun");
    out.assert_code(2);
    assert!(!dir.exists("ran"), "a task of an invalid graph ran\n{out}");
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout for a usage error\n{out}"
    );
    out
}

/// The 1-based line of the first line of `text` that starts with `prefix`, from line `from`.
fn line_of(text: &str, prefix: &str, from: usize) -> usize {
    text.lines()
        .enumerate()
        .skip(from - 1)
        .find(|(_, l)| l.starts_with(prefix))
        .map(|(i, _)| i + 1)
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in\n{text}"))
}

/// Asserts stderr names `g.toml:<line>` and the key in backquotes.
fn assert_names(out: &Output, line: usize, key: &str) {
    let want = format!("g.toml:{line}");
    assert!(out.stderr.contains(&want), "stderr must name {want}\n{out}");
    assert!(
        out.stderr.contains(&format!("`{key}`")),
        "stderr must name the key `{key}`\n{out}"
    );
}

#[test]
fn unknown_key_is_named_with_its_line() {
    let text = "[[task]]\nname = \"a\"\ncmd = \"touch ran\"\n\n[[task]]\nname = \"b\"\ncmd = \"touch ran\"\ntokenz = 2\n";
    let out = run_bad("err-unknown-key", text);
    assert_names(&out, line_of(text, "tokenz", 1), "tokenz");
    assert!(out.stderr.contains("`b`"), "and the task\n{out}");
}

#[test]
fn duplicate_name_points_at_the_second() {
    let text = "[[task]]\nname = \"a\"\ncmd = \"touch ran\"\n\n[[task]]\nname = \"b\"\ncmd = \"touch ran\"\n\n[[task]]\nname = \"a\"\ncmd = \"touch ran\"\n";
    let out = run_bad("err-dup", text);
    let second = line_of(text, "name = \"a\"", line_of(text, "name = \"a\"", 1) + 1);
    assert_names(&out, second, "name");
    assert!(out.stderr.contains("`a`"), "and the name\n{out}");
}

#[test]
fn unknown_dep_points_at_the_deps_line() {
    let text = "[[task]]\nname = \"a\"\ncmd = \"touch ran\"\n\n[[task]]\nname = \"b\"\ncmd = \"touch ran\"\ndeps = [\"a\", \"nope\"]\n";
    let out = run_bad("err-unknown-dep", text);
    assert_names(&out, line_of(text, "deps", 1), "deps");
    assert!(out.stderr.contains("`nope`"), "and the unknown name\n{out}");
}

#[test]
fn cycle_points_at_a_deps_line_of_the_cycle() {
    // a -> c -> b -> a, plus an innocent `z`.
    let text = "[[task]]\nname = \"z\"\ncmd = \"touch ran\"\n\n[[task]]\nname = \"a\"\ncmd = \"touch ran\"\ndeps = [\"c\"]\n\n[[task]]\nname = \"b\"\ncmd = \"touch ran\"\ndeps = [\"a\"]\n\n[[task]]\nname = \"c\"\ncmd = \"touch ran\"\ndeps = [\"b\"]\n";
    let out = run_bad("err-cycle", text);
    assert!(
        out.stderr.contains("cycle"),
        "the message says cycle\n{out}"
    );
    // The line is the `deps` line of the task the message names.
    let named = ["a", "b", "c"]
        .into_iter()
        .find(|t| out.stderr.contains(&format!("task `{t}`")))
        .unwrap_or_else(|| panic!("the message names a task of the cycle\n{out}"));
    let task_line = line_of(text, &format!("name = \"{named}\""), 1);
    assert_names(&out, line_of(text, "deps", task_line), "deps");
}

#[test]
fn self_dependency_is_a_cycle_too() {
    let text = "[[task]]\nname = \"a\"\ncmd = \"touch ran\"\n\n[[task]]\nname = \"b\"\ncmd = \"touch ran\"\ndeps = [\"b\"]\n";
    let out = run_bad("err-self", text);
    assert_names(&out, line_of(text, "deps", 1), "deps");
    assert!(out.stderr.contains("`b`"), "{out}");
}

#[test]
fn toml_syntax_error_names_the_line() {
    let text = "[[task]]\nname = \"a\"\ncmd = \"touch ran\"\n\n[[task]]\nname = \"b\"\ncmd = \"touch ran\n";
    let out = run_bad("err-syntax", text);
    // The unterminated string is on the second task's `cmd` line.
    let want = format!(
        "g.toml:{}",
        line_of(text, "cmd", line_of(text, "name = \"b\"", 1))
    );
    assert!(out.stderr.contains(&want), "stderr must name {want}\n{out}");
}
