//! Signals, as a user sends them to a running `jobrun`.
//!
//! 1. `ctrl_c_own_pool_stops_everything`: `jobrun -j2` runs a task that leaves a background
//!    grandchild and another task; SIGINT: exit 130 within a few seconds, the tasks and the
//!    grandchild are gone, the audit is clean (own pool: a pipe, no fifo left in `TMPDIR`).
//! 2. `ctrl_c_under_make44_fifo_loses_no_token`: the same run in a `+` recipe of
//!    `make -j3 --jobserver-style=fifo`; SIGINT to jobrun: make reports `Error 130`, its
//!    exit-time token check is quiet, no fifo is left in `TMPDIR`, nothing is left running.
//! 3. `second_ctrl_c_kills_at_once`: a task that ignores SIGTERM, `--termseq
//!    TERM,10000,KILL,25`; the first SIGINT leaves jobrun waiting out its 10 s, a second one
//!    300 ms later kills at once.
//! 4. `ctrl_c_to_makes_process_group_stops_everything`: Ctrl-C as a terminal sends it, to
//!    make's whole process group (make 4.4.1, fifo): nothing is left running, no fifo left.
//! 5. `ctrl_c_while_waiting_for_tokens_make43` / `..._make44_fifo`: two jobruns under
//!    `make -j3` compete for tokens (one is always waiting for one); SIGINT to each in turn:
//!    make's token check is quiet.
//! 6. `sigusr1_adds_and_sigusr2_removes_slots`: `-j1`, 6 tasks of 1.5 s; two SIGUSR1 let 3 run
//!    at once; two SIGUSR2 bring it back to one at a time; no running task is killed.
//! 7. `sigusr2_caps_a_joined_pool`: the same SIGUSR2s under `make -j3`.

mod cli_common;

use std::time::{Duration, Instant};

use rustix::process::Signal;

use cli_common::{
    assert_make_tokens_clean, command, epoch_ns, is_running, jobrun, make44, make_escape, sh_quote,
    span_cmd, spawn, wait_until, write_makefile, Marker, Output, Proc, Spans, TempDir, JOBRUN,
};

/// How long jobrun may take to exit after the signal that should end it. The default
/// termination sequence needs a few ms here; this is far below the 10 s the tests' tasks
/// would otherwise last, with room for a loaded machine.
const EXIT_LIMIT: Duration = Duration::from_secs(3);

/// The two tasks of the Ctrl-C tests: the first leaves a background grandchild and records
/// its pid; each records its own. Every process carries `marker`.
fn ctrl_c_tasks(marker: &Marker) -> [String; 2] {
    let s = marker.secs();
    [
        format!(
            "echo $$ > t1.tmp && mv t1.tmp t1.pid; sleep {s} & echo $! > gc.tmp && mv gc.tmp gc.pid; sleep {s}"
        ),
        format!("echo $$ > t2.tmp && mv t2.tmp t2.pid; sleep {s}"),
    ]
}

fn read_pid(dir: &TempDir, name: &str) -> i32 {
    let text = dir.read(name);
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{name} holds {text:?}, not a pid"))
}

/// Waits until the named pid files exist and every process carrying `marker` that they
/// name runs; returns the pids.
fn wait_for_pids(dir: &TempDir, names: &[&str], proc_: &Proc) -> Vec<i32> {
    wait_until(
        Duration::from_secs(30),
        "the tasks to start",
        || names.iter().all(|n| dir.exists(n)),
        || format!("stderr so far:\n{}", proc_.stderr_so_far()),
    );
    names.iter().map(|n| read_pid(dir, n)).collect()
}

/// Asserts that the pids and every process carrying `marker` are gone (allowing a moment
/// for a killed process to finish dying).
fn assert_all_gone(pids: &[i32], marker: &Marker, out: &Output) {
    let gone = || pids.iter().all(|&p| !is_running(p)) && marker.live().is_empty();
    let deadline = Instant::now() + Duration::from_secs(2);
    while !gone() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let running: Vec<i32> = pids.iter().copied().filter(|&p| is_running(p)).collect();
    assert!(
        running.is_empty(),
        "still running after jobrun exited: {running:?} (of {pids:?})\n{out}"
    );
    let live = marker.live();
    assert!(
        live.is_empty(),
        "processes of the run outlived it: {live:?}\n{out}"
    );
}

#[test]
fn ctrl_c_own_pool_stops_everything() {
    let dir = TempDir::new("sigint-own");
    let marker = Marker::new();
    let [t1, t2] = ctrl_c_tasks(&marker);
    let p = spawn(jobrun(&dir, ["-j2", "--", &t1, &t2]), &dir, "jobrun");
    let pids = wait_for_pids(&dir, &["t1.pid", "t2.pid", "gc.pid"], &p);
    let sent = Instant::now();
    p.signal(Signal::INT);
    let out = p.wait(Duration::from_secs(30));
    let took = sent.elapsed();
    out.assert_code(130);
    assert!(
        took < EXIT_LIMIT,
        "jobrun took {took:?} to exit after SIGINT\n{out}"
    );
    assert_all_gone(&pids, &marker, &out);
    assert!(
        out.stderr.contains("pool whole: audit clean"),
        "every token back in the own pool\n{out}"
    );
    assert!(
        dir.fifos_in_tmp().is_empty(),
        "fifos left in TMPDIR: {:?}",
        dir.fifos_in_tmp()
    );
}

#[test]
fn ctrl_c_under_make44_fifo_loses_no_token() {
    let dir = TempDir::new("sigint-make44");
    let marker = Marker::new();
    let [t1, t2] = ctrl_c_tasks(&marker);
    // The shell writes its pid, then becomes jobrun.
    let line = format!(
        "echo $$ > jobrun.tmp && mv jobrun.tmp jobrun.pid; exec {JOBRUN} -v -j2 -- {} {}",
        sh_quote(&t1),
        sh_quote(&t2)
    );
    write_makefile(&dir, &[("all", &[format!("+{}", make_escape(&line))])]);
    let mut cmd = command(make44(), &dir);
    cmd.args(["-j3", "--jobserver-style=fifo"]);
    let make = spawn(cmd, &dir, "make");
    let pids = wait_for_pids(&dir, &["jobrun.pid", "t1.pid", "t2.pid", "gc.pid"], &make);
    let jobrun_pid = pids[0];
    let cmdline = std::fs::read(format!("/proc/{jobrun_pid}/cmdline")).unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("jobrun"),
        "pid {jobrun_pid} is not jobrun: {:?}",
        String::from_utf8_lossy(&cmdline)
    );
    let sent = Instant::now();
    cli_common::signal_pid(jobrun_pid, Signal::INT);
    let out = make.wait(Duration::from_secs(30));
    let took = sent.elapsed();
    assert!(
        took < EXIT_LIMIT,
        "make ended {took:?} after jobrun's SIGINT\n{out}"
    );
    assert!(
        out.stderr.contains("Error 130"),
        "jobrun must exit 130 (make reports `Error 130`)\n{out}"
    );
    assert_ne!(out.code(), 0, "{out}");
    assert!(out.stderr.contains("joined the jobserver"), "{out}");
    assert_make_tokens_clean(&out);
    assert!(out.stderr.contains("audit clean"), "{out}");
    assert_all_gone(&pids, &marker, &out);
    assert!(
        dir.fifos_in_tmp().is_empty(),
        "fifos left in TMPDIR: {:?}",
        dir.fifos_in_tmp()
    );
}

#[test]
fn second_ctrl_c_kills_at_once() {
    let dir = TempDir::new("sigint-twice");
    let marker = Marker::new();
    let task = format!(
        "trap '' TERM; echo $$ > t.tmp && mv t.tmp t.pid; sleep {}",
        marker.secs()
    );
    let mut p = spawn(
        jobrun(
            &dir,
            ["-j2", "--termseq", "TERM,10000,KILL,25", "--", &task],
        ),
        &dir,
        "jobrun",
    );
    let pids = wait_for_pids(&dir, &["t.pid"], &p);
    p.signal(Signal::INT);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !p.has_exited(),
        "jobrun ended within 300 ms of the first SIGINT although its task ignores SIGTERM and \
         --termseq waits 10 s\n{}",
        p.stderr_so_far()
    );
    let second = Instant::now();
    p.signal(Signal::INT);
    let out = p.wait(Duration::from_secs(30));
    let took = second.elapsed();
    assert!(
        took < EXIT_LIMIT,
        "jobrun took {took:?} to exit after the second SIGINT (it should kill at once)\n{out}"
    );
    out.assert_code(130);
    assert_all_gone(&pids, &marker, &out);
    assert!(out.stderr.contains("audit clean"), "{out}");
}

/// Waits until `/proc/<pid>/cmdline` says jobrun (the recipe's shell has exec'ed it).
fn wait_for_jobrun(pid: i32, make: &Proc) {
    wait_until(
        Duration::from_secs(30),
        &format!("pid {pid} to become jobrun"),
        || {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("jobrun"))
        },
        || format!("stderr so far:\n{}", make.stderr_so_far()),
    );
}

/// Ctrl-C at a terminal: SIGINT to make's whole process group (make and jobrun; the tasks
/// are in process groups of their own, so jobrun must stop them).
#[test]
fn ctrl_c_to_makes_process_group_stops_everything() {
    use std::os::unix::process::ExitStatusExt;
    let dir = TempDir::new("sigint-group");
    let marker = Marker::new();
    let [t1, t2] = ctrl_c_tasks(&marker);
    let line = format!(
        "echo $$ > jobrun.tmp && mv jobrun.tmp jobrun.pid; exec {JOBRUN} -v -- {} {}",
        sh_quote(&t1),
        sh_quote(&t2)
    );
    write_makefile(&dir, &[("all", &[format!("+{}", make_escape(&line))])]);
    let mut cmd = command(make44(), &dir);
    cmd.args(["-j3", "--jobserver-style=fifo"]);
    let make = spawn(cmd, &dir, "make");
    let pids = wait_for_pids(&dir, &["jobrun.pid", "t1.pid", "t2.pid", "gc.pid"], &make);
    wait_for_jobrun(pids[0], &make);
    let sent = Instant::now();
    // The spawned make leads its own process group.
    let group = rustix::process::Pid::from_raw(make.pid()).expect("a pid");
    rustix::process::kill_process_group(group, Signal::INT).expect("signal make's group");
    let out = make.wait(Duration::from_secs(30));
    let took = sent.elapsed();
    assert!(took < EXIT_LIMIT, "make ended {took:?} after Ctrl-C\n{out}");
    assert!(
        out.status.signal() == Some(2) || out.status.code().is_some_and(|c| c != 0),
        "make must end by the interrupt\n{out}"
    );
    assert!(
        out.stderr.contains("stopping") && out.stderr.contains("audit clean"),
        "jobrun stops its tasks and gives every token back\n{out}"
    );
    assert_all_gone(&pids, &marker, &out);
    assert!(
        dir.fifos_in_tmp().is_empty(),
        "fifos left in TMPDIR: {:?}",
        dir.fifos_in_tmp()
    );
}

/// Two jobruns under `make -j3` compete for its tokens (each wants 3), so at any moment one
/// of them is waiting for a token; SIGINT to each in turn loses none.
fn ctrl_c_while_waiting_for_tokens(make_path: &std::path::Path, style: &[&str], label: &str) {
    let dir = TempDir::new(label);
    let marker = Marker::new();
    let sleep = format!("sleep {}", marker.secs());
    let line = format!(
        "echo $$ > $@.tmp && mv $@.tmp $@.pid; exec {JOBRUN} -v -- {q} {q} {q}",
        q = sh_quote(&sleep)
    );
    // `$@` stays make's: escape the rest.
    let recipe = format!("+{}", make_escape(&line).replace("$$@", "$@"));
    write_makefile(
        &dir,
        &[
            ("a", std::slice::from_ref(&recipe)),
            ("b", std::slice::from_ref(&recipe)),
        ],
    );
    let mut cmd = command(make_path, &dir);
    cmd.arg("-j3").args(style).args(["a", "b"]);
    let make = spawn(cmd, &dir, "make");
    let pids = wait_for_pids(&dir, &["a.pid", "b.pid"], &make);
    for &p in &pids {
        wait_for_jobrun(p, &make);
    }
    let sleeps = || {
        marker
            .live()
            .iter()
            .filter(|(_, c)| c.starts_with("sleep "))
            .count()
    };
    wait_until(
        Duration::from_secs(30),
        "3 tasks to run (all of make's tokens in use)",
        || sleeps() >= 3,
        || format!("stderr so far:\n{}", make.stderr_so_far()),
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        sleeps(),
        3,
        "make -j3 allows 3 tasks at once\n{}",
        make.stderr_so_far()
    );
    cli_common::signal_pid(pids[0], Signal::INT);
    std::thread::sleep(Duration::from_millis(300));
    cli_common::signal_pid(pids[1], Signal::INT);
    let out = make.wait(Duration::from_secs(30));
    assert_eq!(out.code(), 2, "both recipes failed\n{out}");
    assert_eq!(out.stderr_lines_with("Error 130").len(), 2, "{out}");
    assert_make_tokens_clean(&out);
    assert_eq!(out.stderr_lines_with("audit clean").len(), 2, "{out}");
    assert_all_gone(&pids, &marker, &out);
    assert!(
        dir.fifos_in_tmp().is_empty(),
        "fifos left in TMPDIR: {:?}",
        dir.fifos_in_tmp()
    );
}

#[test]
fn ctrl_c_while_waiting_for_tokens_make43() {
    ctrl_c_while_waiting_for_tokens(&cli_common::make43(), &[], "sigint-wait-43");
}

#[test]
fn ctrl_c_while_waiting_for_tokens_make44_fifo() {
    ctrl_c_while_waiting_for_tokens(&make44(), &["--jobserver-style=fifo"], "sigint-wait-44");
}

/// Lines where jobrun says its capacity changed.
fn capacity_lines(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| l.contains("pool is now") || l.contains("tokens at once"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn sigusr1_adds_and_sigusr2_removes_slots() {
    let dir = TempDir::new("sigusr");
    let log = dir.join("spans.log");
    let cmds: Vec<String> = (1..=6)
        .map(|i| span_cmd(&log, &format!("u{i}"), "1.5"))
        .collect();
    let mut args = vec!["-j1".to_owned(), "--".to_owned()];
    args.extend(cmds);
    let p = spawn(jobrun(&dir, &args), &dir, "jobrun");
    let limit = Duration::from_secs(20);
    let ctx = || {
        format!(
            "spans:\n{}stderr:\n{}",
            Spans::read(&log).pretty(),
            p.stderr_so_far()
        )
    };
    // The first task runs: the signal handlers are installed.
    wait_until(
        limit,
        "the first task",
        || Spans::read(&log).started() >= 1,
        ctx,
    );
    // One signal at a time, each waited for (signals of one kind sent back to back may be
    // merged into one by the kernel).
    for (k, starts) in [(1, 2), (2, 3)] {
        p.signal(Signal::USR1);
        wait_until(
            limit,
            &format!("SIGUSR1 #{k} to start task {starts}"),
            || {
                capacity_lines(&p.stderr_so_far()).len() >= k
                    && Spans::read(&log).started() >= starts
            },
            ctx,
        );
    }
    let spans = Spans::read(&log);
    assert_eq!(
        spans.ended(),
        0,
        "a task ended before the third started: the machine is too slow for this test\n{}",
        ctx()
    );
    assert_eq!(spans.max_concurrency(), 3, "{}", ctx());
    for k in [3, 4] {
        p.signal(Signal::USR2);
        wait_until(
            limit,
            &format!("SIGUSR2 #{}", k - 2),
            || capacity_lines(&p.stderr_so_far()).len() >= k,
            ctx,
        );
    }
    let shrunk = epoch_ns();
    let out = p.wait(Duration::from_secs(60));
    out.assert_code(0);
    assert!(
        !out.stderr.contains("FAILED"),
        "a running task was killed\n{out}"
    );
    let caps = capacity_lines(&out.stderr);
    assert!(
        caps[1].contains('3') && caps[3].contains('1'),
        "capacity 1 -> 2 -> 3 -> 2 -> 1 expected: {caps:?}"
    );
    let spans = Spans::read(&log);
    assert_eq!(spans.started(), 6, "{}", spans.pretty());
    spans.assert_all_ended();
    let max = spans.max_concurrency();
    assert_eq!(
        max,
        3,
        "at most 3 at once after two SIGUSR1:\n{}",
        spans.pretty()
    );
    assert_one_at_a_time_after(&spans, shrunk);
}

/// Every span that started after `t` ran alone.
fn assert_one_at_a_time_after(spans: &Spans, t: u128) {
    let late: Vec<_> = spans.spans.iter().filter(|s| s.start > t).collect();
    assert!(
        !late.is_empty(),
        "no task started after the capacity went down to 1:\n{}",
        spans.pretty()
    );
    for s in late {
        let open = spans.open_at(s.start, &s.id);
        assert!(
            open.is_empty(),
            "{} started after the capacity went down to 1 while {:?} still ran:\n{}",
            s.id,
            open.iter().map(|o| &o.id).collect::<Vec<_>>(),
            spans.pretty()
        );
    }
}

/// Under `make -j3` (a joined pool), two SIGUSR2 cap jobrun at one token at a time; no
/// running task is killed and make's token check stays quiet.
#[test]
fn sigusr2_caps_a_joined_pool() {
    let dir = TempDir::new("sigusr2-joined");
    let log = dir.join("spans.log");
    let cmds: Vec<String> = (1..=6)
        .map(|i| sh_quote(&span_cmd(&log, &format!("u{i}"), "1.5")))
        .collect();
    let line = format!(
        "echo $$ > jobrun.tmp && mv jobrun.tmp jobrun.pid; exec {JOBRUN} -- {}",
        cmds.join(" ")
    );
    write_makefile(&dir, &[("all", &[format!("+{}", make_escape(&line))])]);
    let mut cmd = command(cli_common::make43(), &dir);
    cmd.arg("-j3");
    let make = spawn(cmd, &dir, "make");
    let pid = wait_for_pids(&dir, &["jobrun.pid"], &make)[0];
    wait_for_jobrun(pid, &make);
    let limit = Duration::from_secs(20);
    let ctx = || {
        format!(
            "spans:\n{}stderr:\n{}",
            Spans::read(&log).pretty(),
            make.stderr_so_far()
        )
    };
    wait_until(
        limit,
        "3 tasks to start",
        || Spans::read(&log).started() >= 3,
        ctx,
    );
    assert_eq!(
        Spans::read(&log).ended(),
        0,
        "too slow for this test\n{}",
        ctx()
    );
    for k in [1, 2] {
        cli_common::signal_pid(pid, Signal::USR2);
        wait_until(
            limit,
            &format!("SIGUSR2 #{k}"),
            || capacity_lines(&make.stderr_so_far()).len() >= k,
            ctx,
        );
    }
    let shrunk = epoch_ns();
    let out = make.wait(Duration::from_secs(60));
    out.assert_code(0);
    assert_make_tokens_clean(&out);
    assert!(
        !out.stderr.contains("FAILED"),
        "a running task was killed\n{out}"
    );
    let caps = capacity_lines(&out.stderr);
    assert!(
        caps[1].contains('1'),
        "capacity 3 -> 2 -> 1 expected: {caps:?}"
    );
    let spans = Spans::read(&log);
    assert_eq!(spans.started(), 6, "{}", spans.pretty());
    spans.assert_all_ended();
    assert_eq!(spans.max_concurrency(), 3, "{}", spans.pretty());
    assert_one_at_a_time_after(&spans, shrunk);
}
