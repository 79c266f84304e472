//! A pool made by a process whose standard streams are closed keeps its descriptors at 3 and
//! above: at 0, 1 or 2 a child's redirected streams would overwrite them (and anything
//! printing to "stdout" would write into the jobserver). Runs `closed-stdio-server`, which
//! closes 0-2 itself and reports what it sees.

use std::process::Command;

use jobserver_tests::timeline::TempDir;
use jobserver_tests::Driver;

const PROBE: &str = env!("CARGO_BIN_EXE_closed-stdio-server");
const WORKER: &str = env!("CARGO_BIN_EXE_jobserver-worker");

jobserver_tests::conformance!(pool_fds_stay_above_stdio);

fn value<'a>(report: &'a str, key: &str) -> Option<&'a str> {
    report
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
}

fn pool_fds_stay_above_stdio<D: Driver>() {
    for kind in ["pipe", "fifo"] {
        let dir = TempDir::new(&format!("closed-stdio-{kind}-{}", D::NAME));
        let report_path = dir.join("report.txt");
        let status = Command::new(PROBE)
            .args([D::NAME, kind])
            .arg(&report_path)
            .arg(WORKER)
            .env_remove("MAKEFLAGS")
            .env_remove("CARGO_MAKEFLAGS")
            .env_remove("MFLAGS")
            .status()
            .expect("running closed-stdio-server");
        let report = std::fs::read_to_string(&report_path).expect("the probe's report");
        assert!(status.success(), "{kind}: {status}; report:\n{report}");
        let what = format!("{} {kind}; report:\n{report}", D::NAME);
        assert_eq!(value(&report, "stdio_closed"), Some("yes"), "{what}");
        assert_eq!(value(&report, "error"), None, "{what}");
        assert_eq!(value(&report, "panic"), None, "{what}");

        // MAKEFLAGS names no standard stream.
        let makeflags = value(&report, "makeflags").expect("makeflags");
        if kind == "pipe" {
            let auth = makeflags
                .split(' ')
                .filter_map(|w| w.strip_prefix("--jobserver-auth="))
                .next_back()
                .expect("--jobserver-auth");
            let (r, w) = auth.split_once(',').expect("R,W");
            for fd in [r, w] {
                let fd: i32 = fd.parse().expect("a number");
                assert!(fd >= 3, "MAKEFLAGS names fd {fd}: {what}");
            }
        }
        // Neither the server's descriptors nor its client's private reopens are at 0-2.
        let pool = value(&report, "pool").expect("pool");
        for line in report.lines().filter_map(|l| l.strip_prefix("low ")) {
            assert!(
                !line.ends_with(&format!(" {pool}")),
                "a descriptor of the pool is at {line}: {what}"
            );
        }
        // A child configured with redirected streams still uses the pool, and every token
        // comes back.
        assert_eq!(value(&report, "worker"), Some("exit status: 0"), "{what}");
        let output = value(&report, "worker_output").unwrap_or("");
        let mode = if kind == "pipe" { "Pipe" } else { "Fifo" };
        assert!(output.contains(&format!("mode={mode}")), "{what}");
        let shutdown = value(&report, "shutdown").expect("shutdown");
        assert_eq!(shutdown, "all 2 jobserver tokens came back", "{what}");
    }
}
