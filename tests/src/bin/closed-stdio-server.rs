//! `closed-stdio-server`: a process that closes its standard streams (fds 0, 1 and 2) and
//! then creates a pool of its own, for `tests/tests/closed_stdio.rs`.
//!
//! ```text
//! closed-stdio-server DRIVER pipe|fifo REPORT WORKER
//! ```
//!
//! A Rust program cannot *start* with closed standard streams (std reopens them on
//! `/dev/null` before `main`), so this one closes them itself first, as a daemon does. It
//! then creates a `Server` of 3 jobs before anything else takes a descriptor (`DRIVER`, the
//! runtime of its client, is a driver name: `tokio`, `smol`, `blocking`, `fallback` or
//! `exclusive`), takes 2 units through `Server::client` (one byte read through the client's private reopen), and
//! runs `WORKER` (a `jobserver-worker`) configured for the pool, with its standard streams
//! redirected (which is what overwrites a jobserver descriptor at 0, 1 or 2 in the child).
//! Every finding goes to the file `REPORT`, one `key value` line each:
//!
//! - `stdio_closed yes|no`: whether 0, 1 and 2 were all closed before the server was made;
//! - `makeflags VALUE`: the server's `MAKEFLAGS`;
//! - `pool ID`: the `/proc/self/fd` link of the pool (`pipe:[inode]` or the fifo's path);
//! - `low N LINK`: each of 0, 1, 2 open once the server and its client exist, and its link;
//! - `worker STATUS`, `worker_output TEXT` (newlines as `\n`): the configured child's run;
//! - `shutdown REPORT` or `error TEXT`, and `panic TEXT` if it panicked.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use jobserver_io::blocking::ThreadReactor;
use jobserver_io::Server;
use jobserver_smol::AsyncIoReactor;
use jobserver_tests::drivers::{Exclusive, Fallback};
use jobserver_tests::Driver;
use jobserver_tokio::TokioReactor;

fn is_open(fd: i32) -> bool {
    // SAFETY: only F_GETFD on the number, which fails with EBADF when it is closed.
    rustix::io::fcntl_getfd(unsafe { BorrowedFd::borrow_raw(fd) }).is_ok()
}

fn link(fd: impl std::fmt::Display) -> String {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|e| format!("?{e}"))
}

fn one_line(text: &[u8]) -> String {
    String::from_utf8_lossy(text).replace('\n', "\\n")
}

fn run<D: Driver>(fifo: bool, worker: &Path, out: &mut Vec<String>) -> Result<(), String> {
    // Before the runtime exists, so that the pool is the first thing to take descriptors.
    let server = if fifo {
        Server::<D>::new_fifo(3)
    } else {
        Server::<D>::new(3)
    }
    .map_err(|e| format!("creating the server: {e}"))?;
    D::block_on(async {
        let client = server.client().map_err(|e| format!("client: {e}"))?;
        let token = client
            .acquire_many(2)
            .await
            .map_err(|e| format!("acquire_many(2): {e}"))?;
        let makeflags = server.makeflags().to_string_lossy().into_owned();
        out.push(format!("makeflags {makeflags}"));
        let pool = match server.fifo_path() {
            Some(path) => path.display().to_string(),
            None => {
                let auth = makeflags
                    .split(' ')
                    .filter_map(|w| w.strip_prefix("--jobserver-auth="))
                    .next_back()
                    .ok_or("no --jobserver-auth")?;
                link(auth.split(',').next().unwrap_or(""))
            }
        };
        out.push(format!("pool {pool}"));
        for fd in 0..3 {
            if is_open(fd) {
                out.push(format!("low {fd} {}", link(fd)));
            }
        }
        drop(token);

        let mut cmd = Command::new(worker);
        cmd.args(["--driver", D::NAME, "--units", "2", "--hold-ms", "10"])
            .env_remove("CARGO_MAKEFLAGS")
            .env_remove("MFLAGS")
            .stdin(Stdio::null());
        server.configure(&mut cmd);
        let run = cmd
            .output()
            .map_err(|e| format!("running the worker: {e}"))?;
        out.push(format!("worker {}", run.status));
        let mut text = run.stdout;
        text.extend_from_slice(&run.stderr);
        out.push(format!("worker_output {}", one_line(&text)));
        drop(cmd);
        drop(client);
        let report = server.shutdown().map_err(|e| format!("shutdown: {e}"))?;
        out.push(format!("shutdown {report}"));
        Ok(())
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [driver, kind, report, worker] = args.as_slice() else {
        eprintln!("usage: closed-stdio-server DRIVER pipe|fifo REPORT WORKER");
        return ExitCode::from(2);
    };
    let report_path = PathBuf::from(report);
    // Opened while 0-2 are still open, so it lands above them.
    let mut report = match File::create(&report_path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("creating {report}: {e}");
            return ExitCode::from(2);
        }
    };
    let hook_path = report_path.clone();
    std::panic::set_hook(Box::new(move |info| {
        if let Ok(mut f) = OpenOptions::new().append(true).open(&hook_path) {
            let _ = writeln!(f, "panic {}", one_line(info.to_string().as_bytes()));
        }
    }));
    for fd in 0..3 {
        if is_open(fd) {
            // SAFETY: the standard streams are not owned by any Rust value here (nothing
            // has printed or read yet), and std tolerates them being closed (EBADF on
            // stdout/stderr is ignored).
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
    let closed = (0..3).all(|fd| !is_open(fd));
    let mut out = vec![format!(
        "stdio_closed {}",
        if closed { "yes" } else { "no" }
    )];
    let fifo = kind == "fifo";
    let worker = Path::new(worker);
    let result = match driver.as_str() {
        "tokio" => run::<TokioReactor>(fifo, worker, &mut out),
        "smol" => run::<AsyncIoReactor>(fifo, worker, &mut out),
        "blocking" => run::<ThreadReactor>(fifo, worker, &mut out),
        "fallback" => run::<Fallback>(fifo, worker, &mut out),
        "exclusive" => run::<Exclusive>(fifo, worker, &mut out),
        other => Err(format!("unknown driver {other}")),
    };
    if let Err(e) = result {
        out.push(format!("error {}", one_line(e.as_bytes())));
    }
    for line in out {
        let _ = writeln!(report, "{line}");
    }
    ExitCode::SUCCESS
}
