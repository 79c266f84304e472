//! A fifo pool's file is removed when `SIGINT` or `SIGTERM` ends its process, as GNU make
//! 4.4 removes its own, and the signal still does what it would have done: the process dies
//! of it, or its own handler decides. An ignored signal stays ignored.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

const SERVER: &str = env!("CARGO_BIN_EXE_fifo-signal-server");

struct Running {
    child: Child,
    stdout: BufReader<ChildStdout>,
    path: PathBuf,
}

impl Running {
    /// Starts `cmd` (a `fifo-signal-server`) and waits until it can be signalled.
    fn start(mut cmd: Command) -> Running {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("starting fifo-signal-server");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let path = PathBuf::from(
            line.trim_end()
                .strip_prefix("path ")
                .unwrap_or_else(|| panic!("expected `path P`, got {line:?}")),
        );
        line.clear();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim_end(), "ready");
        assert!(
            path.exists(),
            "{} exists while the pool lives",
            path.display()
        );
        Running {
            child,
            stdout,
            path,
        }
    }

    fn signal(&self, sig: Signal) {
        let pid = Pid::from_child(&self.child);
        kill_process(pid, sig).expect("sending the signal");
    }

    /// Waits for the exit (at most 30 s) and returns it with the rest of stdout.
    fn finish(mut self) -> (std::process::ExitStatus, String, PathBuf) {
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                panic!("fifo-signal-server did not exit after the signal");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        (status, rest, self.path)
    }
}

fn server(mode: &str) -> Command {
    let mut cmd = Command::new(SERVER);
    cmd.arg(mode);
    cmd
}

/// Without a handler of its own, the process dies of the signal, and the fifo is gone.
#[test]
fn the_default_action_still_kills_and_the_fifo_is_removed() {
    for sig in [Signal::INT, Signal::TERM, Signal::HUP, Signal::QUIT] {
        let running = Running::start(server("plain"));
        running.signal(sig);
        let (status, _, path) = running.finish();
        assert_eq!(
            status.signal(),
            Some(sig.as_raw()),
            "died of {sig:?}: {status}"
        );
        assert!(
            !path.exists(),
            "{} left behind after {sig:?}",
            path.display()
        );
    }
}

/// With the application's own handler (tokio's, registered before or after the pool was
/// made), the application decides: here it exits with 42, without running destructors. The
/// fifo was already gone when its handler ran.
#[test]
fn an_application_handler_still_decides_and_the_fifo_is_removed() {
    for mode in ["tokio-before", "tokio-after"] {
        for (sig, name) in [(Signal::INT, "SIGINT"), (Signal::TERM, "SIGTERM")] {
            let running = Running::start(server(mode));
            running.signal(sig);
            let (status, rest, path) = running.finish();
            assert_eq!(status.code(), Some(42), "{mode}, {name}: {status}; {rest}");
            assert!(rest.contains(&format!("handled {name}")), "{mode}: {rest}");
            assert!(rest.contains("fifo_exists no"), "{mode}, {name}: {rest}");
            assert!(
                !path.exists(),
                "{} left behind ({mode}, {name})",
                path.display()
            );
        }
    }
}

/// A signal the process inherited as ignored (a shell's background job ignores `SIGINT`)
/// stays ignored: the process lives on with its fifo; `SIGTERM` then ends both.
#[test]
fn an_ignored_signal_stays_ignored() {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "trap '' INT; exec \"$0\" plain", SERVER]);
    let running = Running::start(cmd);
    running.signal(Signal::INT);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        running.path.exists(),
        "the fifo was removed for an ignored SIGINT"
    );
    running.signal(Signal::TERM);
    let (status, _, path) = running.finish();
    assert_eq!(status.signal(), Some(Signal::TERM.as_raw()), "{status}");
    assert!(!path.exists());
}
