//! `fifo-signal-server`: a process that owns a fifo pool and waits to be sent a signal, for
//! `tests/tests/fifo_removed_on_signal.rs`.
//!
//! ```text
//! fifo-signal-server plain|tokio-before|tokio-after
//! ```
//!
//! Creates a `Server::new_fifo(2)` (and a client of it), prints `path PATH` and then `ready`
//! once it can be signalled, and waits (at most 60 s, then exits with status 3).
//!
//! - `plain`: no signal handling of its own; the signal's default action applies.
//! - `tokio-before`: handles `SIGINT` and `SIGTERM` with `tokio::signal`, registered *before*
//!   the fifo pool is created; `tokio-after`: registered after it. On the signal it prints
//!   `handled SIGNAL`, then `fifo_exists yes|no` (whether the path is still there while the
//!   pool is alive, that is, after only the library's handler ran), and exits with status
//!   42 through `std::process::exit`, which runs no destructors (so the pool's `Drop` does
//!   not remove the fifo).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};

fn signals() -> Result<(Signal, Signal), String> {
    let int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    Ok((int, term))
}

fn main() -> ExitCode {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building a runtime");
    let result: Result<(), String> = rt.block_on(async {
        let early = match mode.as_str() {
            "tokio-before" => Some(signals()?),
            "plain" | "tokio-after" => None,
            other => return Err(format!("unknown mode {other:?}")),
        };
        let server = jobserver_tokio::Server::new_fifo(2).map_err(|e| e.to_string())?;
        let client = server.client().map_err(|e| e.to_string())?;
        let _held = client.acquire().await.map_err(|e| e.to_string())?;
        let path = server.fifo_path().ok_or("no fifo path")?.to_owned();
        let handlers = match (mode.as_str(), early) {
            ("tokio-after", _) => Some(signals()?),
            (_, early) => early,
        };
        let mut out = std::io::stdout().lock();
        writeln!(out, "path {}", path.display()).map_err(|e| e.to_string())?;
        writeln!(out, "ready").map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
        drop(out);
        let Some((mut int, mut term)) = handlers else {
            tokio::time::sleep(Duration::from_secs(60)).await;
            return Err("no signal came".into());
        };
        let name = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
            _ = tokio::time::sleep(Duration::from_secs(60)) => return Err("no signal came".into()),
        };
        println!("handled {name}");
        let exists = if path.exists() { "yes" } else { "no" };
        println!("fifo_exists {exists}");
        std::io::stdout().flush().map_err(|e| e.to_string())?;
        // No destructors: only the signal handler can have removed the fifo.
        std::process::exit(42);
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fifo-signal-server: {e}");
            ExitCode::from(3)
        }
    }
}
