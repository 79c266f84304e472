//! Two `jobrun` processes that both want most of one pool take turns instead of deadlocking,
//! and the pool is whole afterwards.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jobserver_tokio::Server;

fn graph(tag: &str) -> String {
    let mut g = String::new();
    for i in 0..3 {
        g += &format!("[[task]]\nname = \"{tag}-big{i}\"\ncmd = \"sleep 0.3\"\ntokens = 6\n\n");
    }
    for i in 0..4 {
        g += &format!("[[task]]\nname = \"{tag}-small{i}\"\ncmd = \"sleep 0.2\"\n\n");
    }
    g
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn two_runs_wanting_six_of_eight_tokens_both_finish() {
    let dir = std::env::temp_dir().join(format!("jobrun-two-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let server = Server::new(8).unwrap();
    let mut children = Vec::new();
    for tag in ["a", "b"] {
        let file = dir.join(format!("{tag}.toml"));
        std::fs::write(&file, graph(tag)).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_jobrun"));
        cmd.arg("--require-jobserver")
            .arg("--log")
            .arg(dir.join(format!("{tag}.log")))
            .arg("-f")
            .arg(&file)
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env_remove("MAKEFLAGS")
            .env_remove("MFLAGS")
            .env_remove("CARGO_MAKEFLAGS");
        server.configure(&mut cmd);
        children.push(cmd.spawn().unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    for mut child in children {
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("a jobrun did not finish: deadlock between the two processes?");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(status.success(), "{status}: {stderr}");
        assert!(stderr.contains("7 ok"), "{stderr}");
    }
    let report = server.shutdown().unwrap();
    assert!(report.is_balanced(), "{report:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
