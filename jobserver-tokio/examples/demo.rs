//! A pool of 4 shared by a dozen tokio tasks and a nested `make`.
//!
//! Eleven tasks each hold a token while a real command runs; the twelfth holds one while a
//! nested GNU make runs six recipes in parallel, taking its further tokens from the same pool.
//! Every job logs when it starts and ends; the timeline at the end shows that no more than 4
//! ran at once.
//!
//! ```text
//! cargo run -p jobserver-tokio --example demo
//! ```

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use jobserver_tokio::{Client, Server};

const POOL: usize = 4;
const TASKS: usize = 11;
const MAKE_RECIPES: usize = 6;

/// A shell command that logs its start and end (wall-clock nanoseconds) around a short sleep.
fn job_script(name: &str, log: &Path, secs: &str) -> String {
    let log = log.display();
    format!(
        "echo \"+ $(date +%s%N) {name}\" >> {log}; sleep {secs}; echo \"- $(date +%s%N) {name}\" >> {log}"
    )
}

async fn run_task(client: Client, i: usize, log: &Path) -> Result<(), String> {
    let token = client.acquire().await.map_err(|e| e.to_string())?;
    let name = format!("task-{i:02}");
    let secs = ["0.2", "0.3", "0.4"][i % 3];
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(job_script(&name, log, secs))
        .status()
        .await
        .map_err(|e| e.to_string())?;
    drop(token);
    status
        .success()
        .then_some(())
        .ok_or(format!("{name} failed"))
}

async fn run_make(client: Client, dir: &Path, log: &Path) -> Result<(), String> {
    // This token covers make's own implicit slot; make reads the rest from the pool.
    let token = client.acquire().await.map_err(|e| e.to_string())?;
    let mut makefile = String::from(".PHONY: all\nall:");
    for r in 0..MAKE_RECIPES {
        write!(makefile, " r{r}").unwrap();
    }
    makefile.push('\n');
    for r in 0..MAKE_RECIPES {
        let script = job_script(&format!("make:r{r}"), log, "0.25").replace('$', "$$");
        writeln!(makefile, "r{r}:\n\t@{script}").unwrap();
    }
    std::fs::write(dir.join("Makefile"), makefile).map_err(|e| e.to_string())?;
    let mut cmd = tokio::process::Command::new("make");
    cmd.arg("-s").arg("-C").arg(dir);
    // The parallelism comes from MAKEFLAGS (-j4 and the jobserver), not from the command line.
    client.configure(cmd.as_std_mut());
    let out = cmd
        .output()
        .await
        .map_err(|e| format!("running make: {e}"))?;
    drop(token);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || stderr.contains("jobserver") {
        return Err(format!("make failed or complained: {stderr}"));
    }
    Ok(())
}

/// Parses the log into (name, start, end) in milliseconds from the first start.
fn intervals(log: &str) -> Vec<(String, f64, f64)> {
    let mut starts = std::collections::HashMap::new();
    let mut out = Vec::new();
    for line in log.lines() {
        let mut parts = line.split_whitespace();
        let (Some(sign), Some(ns), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let Ok(ns) = ns.parse::<u128>() else { continue };
        if sign == "+" {
            starts.insert(name.to_string(), ns);
        } else if let Some(start) = starts.remove(name) {
            out.push((name.to_string(), start, ns));
        }
    }
    let t0 = out.iter().map(|i| i.1).min().unwrap_or(0);
    let mut out: Vec<_> = out
        .into_iter()
        .map(|(n, s, e)| (n, (s - t0) as f64 / 1e6, (e - t0) as f64 / 1e6))
        .collect();
    out.sort_by(|a, b| a.1.total_cmp(&b.1));
    out
}

/// The most jobs that ran at once (ends before starts at equal times).
fn peak(intervals: &[(String, f64, f64)]) -> usize {
    let mut events: Vec<(f64, i32)> = intervals
        .iter()
        .flat_map(|i| [(i.1, 1), (i.2, -1)])
        .collect();
    events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut now, mut max) = (0i32, 0i32);
    for (_, d) in events {
        now += d;
        max = max.max(now);
    }
    max as usize
}

fn render(intervals: &[(String, f64, f64)]) -> String {
    let end = intervals.iter().map(|i| i.2).fold(0.0, f64::max).max(1.0);
    let width = 60.0;
    let mut out = String::new();
    writeln!(
        out,
        "{:>10}  0 ms{:>w$} ms",
        "",
        end.round(),
        w = width as usize - 1
    )
    .unwrap();
    for (name, s, e) in intervals {
        let a = (s / end * width) as usize;
        let b = ((e / end * width) as usize).max(a + 1);
        writeln!(out, "{name:>10}  {}{}", " ".repeat(a), "#".repeat(b - a)).unwrap();
    }
    // A row of how many jobs run in each column.
    let mut counts = String::new();
    for col in 0..width as usize {
        let t = (col as f64 + 0.5) / width * end;
        let n = intervals.iter().filter(|i| i.1 <= t && t < i.2).count();
        counts.push(char::from_digit(n as u32, 36).unwrap_or('+'));
    }
    writeln!(out, "{:>10}  {counts}", "running").unwrap();
    out
}

#[tokio::main]
async fn main() -> ExitCode {
    let dir = std::env::temp_dir().join(format!("jobserver-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating a temporary directory");
    let log = dir.join("timeline.log");

    let server = Server::new(POOL).expect("creating the pool");
    let client = server.client().expect("joining the pool");
    println!(
        "pool of {POOL}: children get MAKEFLAGS={:?}\n",
        server.makeflags()
    );

    let mut handles = Vec::new();
    for i in 0..TASKS {
        let (client, log) = (client.clone(), log.clone());
        handles.push(tokio::spawn(async move { run_task(client, i, &log).await }));
    }
    {
        let (client, dir, log) = (client.clone(), dir.clone(), log.clone());
        handles.push(tokio::spawn(
            async move { run_make(client, &dir, &log).await },
        ));
    }
    let mut failed = false;
    for handle in handles {
        if let Err(err) = handle.await.expect("task panicked") {
            eprintln!("error: {err}");
            failed = true;
        }
    }
    drop(client);
    tokio::time::sleep(Duration::from_millis(10)).await;

    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let jobs = intervals(&text);
    print!("{}", render(&jobs));
    let peak = peak(&jobs);
    println!(
        "\n{} jobs ({} via make); peak concurrency {peak}, limit {POOL}",
        jobs.len(),
        MAKE_RECIPES
    );
    let report = server.shutdown().expect("draining the pool");
    println!("{report}");
    let _ = std::fs::remove_dir_all(&dir);

    if failed || peak > POOL || jobs.len() != TASKS + MAKE_RECIPES || !report.is_balanced() {
        eprintln!("demo FAILED");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
