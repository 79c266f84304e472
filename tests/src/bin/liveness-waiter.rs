//! `liveness-waiter`: run by `tests/liveness.rs` as the one recipe of a make that the test
//! then kills. It joins make's jobserver, takes every token, and leaves two requests
//! waiting; they must fail with `ServerGone` once make is gone, and every token read must be
//! back in the pipe at the end.
//!
//! ```text
//! liveness-waiter --driver tokio|smol|blocking|fallback|exclusive --dir DIR
//! ```
//!
//! 1. Connects with `from_env` and reads `-jN` from make's flags (N >= 3).
//! 2. Takes the implicit slot and `N - 2` tokens (one token is left in the pipe).
//! 3. Starts `acquire_many(2)` ("first"), which reads the last token and waits for another,
//!    then a second `acquire_many(2)` ("second"), which waits behind it. Nothing can ever
//!    satisfy them: make runs only this recipe. When the first fails, the token promised to
//!    it passes to the second, which fails too and must write it back.
//! 4. Writes `DIR/waiting`: `pid=.. ppid=.. parent=<comm of the parent> fifo=<path or ->`.
//! 5. Waits (at most 30 s) for both requests to end and writes `DIR/report`, one
//!    `key=value` per line: `first=<ErrorKind or "granted">`, `first_message=..`,
//!    `second=..`, `second_message=..`, `wait_ms=<from writing DIR/waiting to both ending>`,
//!    then, after
//!    giving back every token held, `available=<bytes in the pipe>` and `stats=<Stats>`.
//!
//! Exits non-zero, with a message on stderr, on any error before the report.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use jobserver_io::{Client, Error, Jobs};
use jobserver_smol::AsyncIoReactor;
use jobserver_tests::Driver;
use jobserver_tokio::TokioReactor;

/// Longest wait for the requests to fail before giving up (the test fails then).
const GIVE_UP: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("liveness-waiter[{}]: error: {msg}", std::process::id());
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let (mut driver, mut dir) = (None, None);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--driver" => driver = args.next(),
            "--dir" => dir = args.next().map(PathBuf::from),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let dir = dir.ok_or("--dir DIR is required")?;
    match driver.as_deref() {
        Some("tokio") => run_async::<TokioReactor>(&dir),
        Some("smol") => run_async::<AsyncIoReactor>(&dir),
        Some("fallback") => run_async::<jobserver_tests::drivers::Fallback>(&dir),
        Some("exclusive") => run_async::<jobserver_tests::drivers::Exclusive>(&dir),
        Some("blocking") => run_blocking(&dir),
        other => Err(format!(
            "--driver tokio|smol|blocking|fallback|exclusive, not {other:?}"
        )),
    }
}

/// make's `-jN`.
fn jobs(client: &Client<impl jobserver_io::Reactor>) -> Result<usize, String> {
    match client.flags().jobs {
        Jobs::Limited(n) if n.get() >= 3 => Ok(n.get()),
        other => Err(format!("run me under make -jN with N >= 3, not {other:?}")),
    }
}

/// `DIR/waiting`: who this process is and who its parent is.
fn write_waiting(dir: &Path) -> Result<(), String> {
    let ppid = rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get());
    let parent = std::fs::read_to_string(format!("/proc/{ppid}/comm")).unwrap_or_default();
    let makeflags = std::env::var("MAKEFLAGS").unwrap_or_default();
    let fifo = makeflags
        .split_ascii_whitespace()
        .filter_map(|w| w.strip_prefix("--jobserver-auth=fifo:"))
        .next_back()
        .unwrap_or("-");
    let text = format!(
        "pid={} ppid={ppid} parent={} fifo={fifo}\n",
        std::process::id(),
        parent.trim()
    );
    // Written whole under a temporary name, then renamed: the test never reads half of it.
    let tmp = dir.join("waiting.tmp");
    std::fs::write(&tmp, text).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, dir.join("waiting")).map_err(|e| e.to_string())
}

fn outcome(report: &mut String, name: &str, result: Option<Result<usize, Error>>) {
    let (kind, message) = match result {
        None => (
            "timeout".to_owned(),
            format!("still waiting after {GIVE_UP:?}"),
        ),
        Some(Ok(units)) => ("granted".to_owned(), format!("{units} units")),
        Some(Err(e)) => (format!("{:?}", e.kind()), e.to_string()),
    };
    writeln!(report, "{name}={kind}\n{name}_message={message}").unwrap();
}

fn finish(
    dir: &Path,
    mut report: String,
    available: Option<usize>,
    stats: String,
) -> Result<(), String> {
    writeln!(report, "available={}", available.map_or(-1, |n| n as i64)).unwrap();
    writeln!(report, "stats={stats}").unwrap();
    let tmp = dir.join("report.tmp");
    std::fs::write(&tmp, report).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, dir.join("report")).map_err(|e| e.to_string())
}

/// Waits, without a runtime timer of its own, until `cond` holds.
async fn until(what: &str, mut cond: impl FnMut() -> bool) -> Result<(), String> {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > GIVE_UP {
            return Err(format!("gave up waiting for {what}"));
        }
        smol::Timer::after(Duration::from_millis(2)).await;
    }
    Ok(())
}

async fn timeout<T>(fut: impl std::future::Future<Output = T>, limit: Duration) -> Option<T> {
    futures_lite::future::or(async { Some(fut.await) }, async {
        smol::Timer::after(limit).await;
        None
    })
    .await
}

fn run_async<D: Driver>(dir: &Path) -> Result<(), String> {
    D::block_on(async {
        let client = Client::<D>::from_env().map_err(|e| format!("from_env: {e}"))?;
        let n = jobs(&client)?;
        let implicit = client.acquire().await.map_err(|e| e.to_string())?;
        let held = client
            .acquire_many(n - 2)
            .await
            .map_err(|e| e.to_string())?;
        let c = client.clone();
        let first = D::spawn(async move { c.acquire_many(2).await.map(|t| t.units()) });
        until("the first request to hold the last token", || {
            let s = client.stats();
            s.waiting == 1 && s.reserved == 1
        })
        .await?;
        let c = client.clone();
        let second = D::spawn(async move { c.acquire_many(2).await.map(|t| t.units()) });
        until("the second request to wait", || client.stats().waiting == 2).await?;

        write_waiting(dir)?;
        let start = Instant::now();
        let first = timeout(first, GIVE_UP).await;
        let second = timeout(second, GIVE_UP.saturating_sub(start.elapsed())).await;
        let mut report = String::new();
        outcome(&mut report, "first", first);
        outcome(&mut report, "second", second);
        writeln!(report, "wait_ms={}", start.elapsed().as_millis()).unwrap();
        drop((held, implicit));
        let available = client.available().ok().flatten();
        finish(dir, report, available, format!("{:?}", client.stats()))
    })
}

fn run_blocking(dir: &Path) -> Result<(), String> {
    let client =
        jobserver_io::blocking::Client::from_env().map_err(|e| format!("from_env: {e}"))?;
    let n = jobs(client.as_inner())?;
    let implicit = client.acquire().map_err(|e| e.to_string())?;
    let held = client.acquire_many(n - 2).map_err(|e| e.to_string())?;
    let (tx, rx) = std::sync::mpsc::channel();
    let spawn = |name: &'static str| {
        let (client, tx) = (client.clone(), tx.clone());
        std::thread::spawn(move || {
            let result = client.acquire_many(2).map(|t| t.units());
            let _ = tx.send((name, result));
        })
    };
    let wait = |what: &str, cond: &dyn Fn() -> bool| {
        let start = Instant::now();
        while !cond() {
            if start.elapsed() > GIVE_UP {
                return Err(format!("gave up waiting for {what}"));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    };
    spawn("first");
    wait("the first request to hold the last token", &|| {
        let s = client.stats();
        s.waiting == 1 && s.reserved == 1
    })?;
    spawn("second");
    wait("the second request to wait", &|| {
        client.stats().waiting == 2
    })?;

    write_waiting(dir)?;
    let start = Instant::now();
    let (mut first, mut second) = (None, None);
    for _ in 0..2 {
        let Ok((name, result)) = rx.recv_timeout(GIVE_UP.saturating_sub(start.elapsed())) else {
            break;
        };
        match name {
            "first" => first = Some(result),
            _ => second = Some(result),
        }
    }
    let mut report = String::new();
    outcome(&mut report, "first", first);
    outcome(&mut report, "second", second);
    writeln!(report, "wait_ms={}", start.elapsed().as_millis()).unwrap();
    drop((held, implicit));
    let available = client.available().ok().flatten();
    finish(dir, report, available, format!("{:?}", client.stats()))
}
