//! `two-clients`: one process that joins the jobserver in its environment *twice* and runs
//! jobs on both clients, for `tests/tests/one_machine_per_pool.rs`.
//!
//! ```text
//! two-clients FIRST SECOND JOBS HOLD_MS LOG
//! ```
//!
//! `FIRST` and `SECOND` are drivers (`tokio`, `smol` or `blocking`). Each client gets a thread
//! of its own running that driver's runtime (so two tokio clients live in two runtimes), and is
//! made there with `Client::from_env()`. Once both exist, each client runs `JOBS` concurrent
//! jobs: acquire a token, append `+1` to `LOG` (see `jobserver_tests::timeline`), hold it
//! `HOLD_MS` ms, append `-1`, release. Prints `connected first=MODE second=MODE` and, at the
//! end, `done`. Exits non-zero with a message on stderr on any error.
//!
//! Both clients share one pool and one implicit slot, so under `make -jN` the process holds
//! at most `N` units at once (its implicit slot, which is the job make started it as, plus
//! the `N - 1` tokens in make's pipe), however its requests are split between the clients.

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use jobserver_io::blocking::ThreadReactor;
use jobserver_io::Client;
use jobserver_smol::AsyncIoReactor;
use jobserver_tests::timeline::{Delta, LogWriter};
use jobserver_tests::Driver;
use jobserver_tokio::TokioReactor;

type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A driver and the way to wait in it.
trait Sleeper: Driver {
    fn sleep(duration: Duration) -> Sleep;
}

impl Sleeper for TokioReactor {
    fn sleep(duration: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(duration))
    }
}

impl Sleeper for AsyncIoReactor {
    fn sleep(duration: Duration) -> Sleep {
        Box::pin(async move {
            smol::Timer::after(duration).await;
        })
    }
}

impl Sleeper for ThreadReactor {
    fn sleep(duration: Duration) -> Sleep {
        // The blocking driver runs each job on a thread of its own.
        Box::pin(async move { std::thread::sleep(duration) })
    }
}

struct Plan {
    jobs: usize,
    hold: Duration,
    log: Arc<LogWriter>,
    /// Both clients exist before either runs a job.
    ready: Arc<Barrier>,
}

fn run<D: Sleeper>(plan: Plan, connected: std::sync::mpsc::Sender<String>) -> Result<(), String> {
    D::block_on(async move {
        let client = Client::<D>::from_env();
        let client = match client {
            Ok(client) => {
                let _ = connected.send(format!("{:?}", client.mode()));
                client
            }
            Err(e) => {
                let _ = connected.send(format!("error: {e}"));
                plan.ready.wait();
                return Err(format!("{}: from_env: {e}", D::NAME));
            }
        };
        plan.ready.wait();
        let mut jobs = Vec::new();
        for _ in 0..plan.jobs {
            let client = client.clone();
            let log = plan.log.clone();
            let hold = plan.hold;
            jobs.push(D::spawn(async move {
                let token = client.acquire().await.map_err(|e| e.to_string())?;
                log.event(Delta::Acquired).map_err(|e| e.to_string())?;
                D::sleep(hold).await;
                log.event(Delta::Released).map_err(|e| e.to_string())?;
                token.release().map_err(|e| e.to_string())
            }));
        }
        for job in jobs {
            job.await.map_err(|e| format!("{}: {e}", D::NAME))?;
        }
        Ok(())
    })
}

fn spawn_client(
    driver: &str,
    plan: Plan,
    connected: std::sync::mpsc::Sender<String>,
) -> Result<std::thread::JoinHandle<Result<(), String>>, String> {
    let run: fn(Plan, std::sync::mpsc::Sender<String>) -> Result<(), String> = match driver {
        "tokio" => run::<TokioReactor>,
        "smol" => run::<AsyncIoReactor>,
        "blocking" => run::<ThreadReactor>,
        other => return Err(format!("unknown driver {other:?}")),
    };
    Ok(std::thread::spawn(move || run(plan, connected)))
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => {
            println!("done");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("two-clients: {e}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [first, second, jobs, hold, log] = args.as_slice() else {
        return Err("usage: two-clients FIRST SECOND JOBS HOLD_MS LOG".into());
    };
    let jobs: usize = jobs.parse().map_err(|e| format!("JOBS: {e}"))?;
    let hold = Duration::from_millis(hold.parse().map_err(|e| format!("HOLD_MS: {e}"))?);
    let log = Arc::new(LogWriter::open(log.as_ref()).map_err(|e| format!("LOG: {e}"))?);
    let ready = Arc::new(Barrier::new(2));
    let plan = || Plan {
        jobs,
        hold,
        log: log.clone(),
        ready: ready.clone(),
    };
    // The first client is made before the second one starts.
    let (tx, rx) = std::sync::mpsc::channel();
    let a = spawn_client(first, plan(), tx.clone())?;
    let first_mode = rx.recv().map_err(|e| e.to_string())?;
    let b = spawn_client(second, plan(), tx)?;
    let second_mode = rx.recv().map_err(|e| e.to_string())?;
    println!("connected first={first_mode} second={second_mode}");
    let a = a.join().map_err(|_| "the first client's thread panicked")?;
    let b = b
        .join()
        .map_err(|_| "the second client's thread panicked")?;
    a.and(b)
}
