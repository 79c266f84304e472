//! The embeddable runner with real tokens and real processes: where every token goes.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jobrun::sched::RequeueReason;
use jobrun::{Event, Failure, Options, Runner, Status, Task, TaskGraph};
use jobserver_tokio::Server;

const LIMIT: Duration = Duration::from_secs(60);

fn options() -> Options {
    Options {
        log: None,
        ..Options::default()
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("jobrun-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Whether `pid` names a live process (a zombie waiting for its reaper is dead).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            state != Some("Z") && state != Some("X")
        }
        Err(_) => false,
    }
}

/// Runs `graph` on an own pool of `jobs`, bounded in time.
async fn run_own(jobs: usize, graph: TaskGraph, opts: Options) -> jobrun::Report {
    let runner = Runner::with_server(Server::new(jobs).unwrap(), opts).unwrap();
    tokio::time::timeout(LIMIT, runner.run(graph))
        .await
        .expect("the run ended in time")
        .expect("the run started")
}

/// A closure task that tracks how many such tasks run at once.
fn tracked(name: &str, now: &Arc<AtomicUsize>, peak: &Arc<AtomicUsize>, ms: u64) -> Task {
    let (now, peak) = (now.clone(), peak.clone());
    Task::closure(name, move |_| {
        let (now, peak) = (now.clone(), peak.clone());
        async move {
            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(n, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            now.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        }
    })
}

#[tokio::test]
async fn handing_tokens_to_a_then_successor_does_no_pipe_io() {
    let mut g = TaskGraph::new();
    g.add(
        Task::closure("build", |_| async { Ok(()) })
            .tokens(2)
            .then("merge"),
    );
    g.add(
        Task::closure("merge", |cx| async move {
            assert_eq!(cx.tokens(), 2);
            Ok(())
        })
        .tokens(2),
    );
    let r = run_own(4, g, options()).await;
    assert!(r.success(), "{r:?}");
    // Two units: the implicit slot and one byte, read once for `build`; `merge` got them
    // from `build` with no read and no write in between.
    assert_eq!(r.audit.ledger.handed_off, 2, "{:?}", r.audit);
    assert_eq!(r.tasks[1].inherited_from.as_deref(), Some("build"));
    assert_eq!(r.tasks[1].tokens, 2);
    assert_eq!(r.tasks[0].inherited_from, None);
    assert_eq!(r.audit.bytes_read, 1, "{:?}", r.audit);
    assert_eq!(r.audit.bytes_written, 1, "{:?}", r.audit);
    assert_eq!(r.audit.pool_lost, Some(0));
    assert!(r.audit.is_clean(), "{:?}", r.audit);
}

#[tokio::test]
async fn a_task_waiting_for_its_lock_holds_no_token() {
    let dir = temp_dir("lock");
    let lock = dir.join("the.lock");
    let file = std::fs::File::create(&lock).unwrap();
    rustix::fs::flock(file.as_fd(), rustix::fs::FlockOperation::LockExclusive).unwrap();
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        drop(file);
    });
    let mut g = TaskGraph::new();
    g.add(Task::closure("locked", |_| async { Ok(()) }).lock(&lock));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut runner = Runner::with_server(Server::new(2).unwrap(), options()).unwrap();
    let seen2 = seen.clone();
    runner.on_event(move |e, snap| {
        if let Event::Requeued { reason, .. } = e {
            seen2.lock().unwrap().push((*reason, snap.held));
        }
    });
    let r = tokio::time::timeout(LIMIT, runner.run(g))
        .await
        .unwrap()
        .unwrap();
    releaser.join().unwrap();
    assert!(r.success(), "{r:?}");
    let seen = seen.lock().unwrap();
    assert!(!seen.is_empty(), "the task was never re-queued");
    for &(reason, held) in seen.iter() {
        assert_eq!(reason, RequeueReason::LockBusy);
        assert_eq!(held, 0, "a token was held while waiting for the lock");
    }
    // Back-off, not spinning: a handful of attempts in 700 ms, not thousands.
    assert!(seen.len() < 20, "{} attempts", seen.len());
    assert!(r.audit.is_clean(), "{:?}", r.audit);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn growing_and_shrinking_the_pool_is_seen_by_the_run() {
    let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut g = TaskGraph::new();
    for i in 0..12 {
        g.add(tracked(&format!("t{i}"), &now, &peak, 250));
    }
    let mut runner = Runner::with_server(Server::new(1).unwrap(), options()).unwrap();
    let controller = runner.controller();
    let started = Arc::new(AtomicUsize::new(0));
    let started2 = started.clone();
    let c2 = controller.clone();
    let (peak2, now2) = (peak.clone(), now.clone());
    let capacities = Arc::new(Mutex::new(Vec::new()));
    let caps2 = capacities.clone();
    runner.on_event(move |e, snap| match e {
        Event::Started { .. } => {
            let n = started2.fetch_add(1, Ordering::SeqCst) + 1;
            if n == 1 {
                c2.add_slots(2); // 1 -> 3
            }
            if n == 7 {
                // Shrink while three run: nobody is killed; the pool takes tokens back as
                // they come.
                peak2.store(now2.load(Ordering::SeqCst), Ordering::SeqCst);
                c2.add_slots(-2);
            }
            assert!(snap.held <= 3, "held {} units", snap.held);
        }
        Event::Capacity { pool_jobs, .. } => caps2.lock().unwrap().push(*pool_jobs),
        _ => {}
    });
    let r = tokio::time::timeout(LIMIT, runner.run(g))
        .await
        .unwrap()
        .unwrap();
    assert!(r.success(), "{r:?}");
    assert_eq!(*capacities.lock().unwrap(), vec![Some(3), Some(1)]);
    // After the shrink the run went back to one at a time: the last tasks ran alone.
    let starts: Vec<Duration> = {
        let mut s: Vec<Duration> = r.tasks.iter().filter_map(|t| t.start).collect();
        s.sort();
        s
    };
    let last = &starts[starts.len() - 3..];
    assert!(
        last.windows(2)
            .all(|w| w[1] - w[0] >= Duration::from_millis(200)),
        "the last tasks overlapped after the shrink: {starts:?}"
    );
    // While grown, three ran at once.
    let overlap = starts
        .windows(3)
        .any(|w| w[2] - w[0] < Duration::from_millis(200));
    assert!(overlap, "never three at once after growing: {starts:?}");
    assert_eq!(r.audit.pool_lost, Some(0), "{:?}", r.audit);
    assert_eq!(r.audit.pool_extra, Some(0), "{:?}", r.audit);
    assert!(r.audit.is_clean(), "{:?}", r.audit);
}

#[tokio::test]
async fn stop_kills_grandchildren_and_gives_every_token_back() {
    let dir = temp_dir("stop");
    let pidfile = dir.join("gc.pid");
    let mut g = TaskGraph::new();
    g.add(Task::shell(
        "leaves-a-grandchild",
        format!("sleep 100 & echo $! > {}; wait", pidfile.display()),
    ));
    g.add(Task::shell("sleeps", "sleep 100"));
    g.add(Task::shell("ignores-term", "trap '' TERM; sleep 100"));
    g.add(Task::shell("never-starts", "true").deps(["sleeps"]));
    let mut runner = Runner::with_server(Server::new(3).unwrap(), options()).unwrap();
    let controller = runner.controller();
    let started = Arc::new(AtomicUsize::new(0));
    let s2 = started.clone();
    runner.on_event(move |e, _| {
        if let Event::Started { .. } = e {
            s2.fetch_add(1, Ordering::SeqCst);
        }
    });
    let stopper = tokio::spawn(async move {
        while started.load(Ordering::SeqCst) < 3 || !pidfile.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        controller.stop();
        pid
    });
    let r = tokio::time::timeout(LIMIT, runner.run(g))
        .await
        .unwrap()
        .unwrap();
    let grandchild = stopper.await.unwrap();
    assert!(r.stopped);
    assert!(!r.success());
    for t in &r.tasks[..3] {
        assert_eq!(t.status, Status::Failed(Failure::Interrupted), "{}", t.name);
    }
    assert_eq!(r.tasks[3].status, Status::NotRun);
    assert!(
        !alive(grandchild),
        "the grandchild {grandchild} outlived the run"
    );
    assert_eq!(r.audit.pool_lost, Some(0), "{:?}", r.audit);
    assert!(r.audit.is_clean(), "{:?}", r.audit);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn panics_errors_and_failed_spawns_give_their_tokens_back() {
    let mut g = TaskGraph::new();
    g.add(Task::closure("panics", |_| async { panic!("boom") }).tokens(2));
    g.add(Task::closure("errs", |_| async { Err("nope".into()) }).tokens(2));
    g.add(Task::argv("no-such-program", ["/nonexistent/program"]));
    g.add(Task::shell("dependent", "true").deps(["errs"]));
    let r = run_own(
        3,
        g,
        Options {
            keep_going: 0,
            ..options()
        },
    )
    .await;
    assert_eq!(
        r.tasks[0].status,
        Status::Failed(Failure::Panic("boom".into()))
    );
    assert_eq!(
        r.tasks[1].status,
        Status::Failed(Failure::Error("nope".into()))
    );
    assert!(
        matches!(r.tasks[2].status, Status::Failed(Failure::Spawn(_))),
        "{:?}",
        r.tasks[2]
    );
    assert_eq!(
        r.tasks[3].status,
        Status::Skipped {
            because: "errs".into()
        }
    );
    assert_eq!(r.audit.pool_lost, Some(0), "{:?}", r.audit);
    assert!(r.audit.is_clean(), "{:?}", r.audit);
}

#[tokio::test]
async fn retry_later_exit_requeues_without_tokens_then_succeeds() {
    let dir = temp_dir("retry");
    let marker = dir.join("tries");
    let mut g = TaskGraph::new();
    // Fails with 75 twice, then succeeds.
    g.add(Task::shell(
        "flaky",
        format!(
            "echo x >> {m}; test $(wc -l < {m}) -ge 3 || exit 75",
            m = marker.display()
        ),
    ));
    let r = run_own(
        2,
        g,
        Options {
            retry_after: Duration::from_millis(20),
            ..options()
        },
    )
    .await;
    assert!(r.success(), "{r:?}");
    assert_eq!(r.tasks[0].retries, 2);
    assert!(r.audit.is_clean(), "{:?}", r.audit);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn the_pool_bound_holds_for_processes_and_closures_together() {
    let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut g = TaskGraph::new();
    for i in 0..10 {
        g.add(tracked(&format!("c{i}"), &now, &peak, 60));
    }
    for i in 0..6 {
        g.add(Task::shell(format!("p{i}"), "sleep 0.05").tokens(2));
    }
    let mut runner = Runner::with_server(Server::new(4).unwrap(), options()).unwrap();
    let max_held = Arc::new(AtomicUsize::new(0));
    let m2 = max_held.clone();
    runner.on_event(move |_, snap| {
        m2.fetch_max(snap.held as usize, Ordering::SeqCst);
    });
    let r = tokio::time::timeout(LIMIT, runner.run(g))
        .await
        .unwrap()
        .unwrap();
    assert!(r.success(), "{r:?}");
    assert!(max_held.load(Ordering::SeqCst) <= 4);
    assert!(peak.load(Ordering::SeqCst) <= 4);
    assert!(r.audit.ledger.peak <= 4);
    assert!(r.audit.is_clean(), "{:?}", r.audit);
}

#[tokio::test]
async fn dropping_the_run_future_kills_its_tasks_and_returns_every_token() {
    let dir = temp_dir("drop");
    let pidfile = dir.join("pids");
    let server = Server::new(3).unwrap();
    let runner = Runner::new(server.client().unwrap(), options());
    let mut g = TaskGraph::new();
    for i in 0..3 {
        g.add(Task::shell(
            format!("sleeper{i}"),
            format!("sleep 100 & echo $! >> {}; wait", pidfile.display()),
        ));
    }
    let run = runner.run(g);
    let dropped = tokio::time::timeout(Duration::from_millis(800), run).await;
    assert!(dropped.is_err(), "the run should still have been running");
    let pids: Vec<i32> = std::fs::read_to_string(&pidfile)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 3, "{pids:?}");
    // The watchers reap in the background; give them a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|&p| alive(p)) {
        assert!(
            std::time::Instant::now() < deadline,
            "a task outlived its dropped run"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        server.available().unwrap(),
        2,
        "tokens missing from the pool"
    );
    let report = server.shutdown().unwrap();
    assert!(report.is_balanced(), "{report:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_lock_that_cannot_be_taken_fails_the_task_without_tokens() {
    let dir = temp_dir("badlock");
    let not_a_dir = dir.join("file");
    std::fs::write(&not_a_dir, "x").unwrap();
    let mut g = TaskGraph::new();
    g.add(
        Task::shell("locked", "true")
            .lock(not_a_dir.join("sub/the.lock"))
            .tokens(2),
    );
    g.add(Task::shell("after", "true").deps(["locked"]));
    g.add(Task::shell("independent", "true"));
    let r = run_own(
        3,
        g,
        Options {
            keep_going: 0,
            ..options()
        },
    )
    .await;
    match &r.tasks[0].status {
        Status::Failed(Failure::Spawn(m)) => assert!(m.contains("cannot lock"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        r.tasks[1].status,
        Status::Skipped {
            because: "locked".into()
        }
    );
    assert_eq!(r.tasks[2].status, Status::Succeeded);
    assert!(r.audit.is_clean(), "{:?}", r.audit);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_dry_run_of_a_multi_token_task_ends_and_a_zero_progress_period_is_fine() {
    let mut g = TaskGraph::new();
    g.add(Task::shell("wide", "exit 1").tokens(2));
    let r = run_own(
        4,
        g,
        Options {
            dry_run: true,
            progress_every: Duration::ZERO,
            ..options()
        },
    )
    .await;
    assert_eq!(r.plan.len(), 1);
    let mut g = TaskGraph::new();
    g.add(Task::shell("quick", "true"));
    let r = run_own(
        2,
        g,
        Options {
            progress_every: Duration::ZERO,
            ..options()
        },
    )
    .await;
    assert!(r.success());
}
