//! Finding the real peers. A test that needs a peer that is missing fails, with a message
//! that says how to install it; it never passes silently.

use std::path::PathBuf;
use std::process::Command;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn find(env_var: &str, default: PathBuf, version_arg: &str, expect: &str) -> PathBuf {
    let path = std::env::var_os(env_var)
        .map(PathBuf::from)
        .unwrap_or(default);
    let output = Command::new(&path).arg(version_arg).output();
    match output {
        Ok(out) if String::from_utf8_lossy(&out.stdout).contains(expect) => path,
        Ok(out) => panic!(
            "{} is not {expect} (it printed {:?}); set {env_var} or run `bash scripts/install-peers.sh`",
            path.display(),
            String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or("")
        ),
        Err(err) => panic!(
            "peer {expect} not found at {} ({err}); run `bash scripts/install-peers.sh` or set {env_var}",
            path.display()
        ),
    }
}

/// GNU make 4.3: the system `make` (override with `MAKE43`).
pub fn make43() -> PathBuf {
    find("MAKE43", PathBuf::from("make"), "--version", "GNU Make 4.3")
}

/// GNU make 4.4.1 from `.peers/` (override with `MAKE44`).
pub fn make44() -> PathBuf {
    find(
        "MAKE44",
        workspace_root().join(".peers/bin/make-4.4.1"),
        "--version",
        "GNU Make 4.4.1",
    )
}

/// ninja 1.13.2 from `.peers/` (override with `NINJA`).
pub fn ninja() -> PathBuf {
    find(
        "NINJA",
        workspace_root().join(".peers/bin/ninja"),
        "--version",
        "1.13.2",
    )
}
