//! A child spawned with a token holds it until it is reaped: after a normal exit, after a
//! kill, and when the handle is dropped while the child runs. The bytes in the pipe
//! (FIONREAD) are counted at each step.

mod fixture;

use std::process::Command;
use std::time::{Duration, Instant};

use fixture::within;
use jobserver_io::Server;
use jobserver_tests::Driver;

jobserver_tests::conformance!(
    token_is_held_until_the_child_is_reaped,
    a_killed_child_gives_its_token_back_when_reaped,
    dropping_the_handle_keeps_the_token_until_the_child_exits,
    a_failed_spawn_gives_the_token_back,
);

/// A pool of 3 (2 bytes), with the implicit slot taken so that the next token is a byte.
async fn pool<D: Driver>() -> (Server<D>, jobserver_io::Client<D>, jobserver_io::Token<D>) {
    let server = Server::<D>::new(3).expect("server");
    let client = server.client().expect("client");
    let implicit = within("implicit", client.acquire())
        .await
        .expect("implicit");
    assert_eq!(server.available().unwrap(), 2);
    (server, client, implicit)
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn token_is_held_until_the_child_is_reaped<D: Driver>() {
    D::block_on(async {
        let (server, client, _implicit) = pool::<D>().await;
        let token = within("token", client.acquire()).await.expect("token");
        assert_eq!(server.available().unwrap(), 1);
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 0.2; test -n \"$MAKEFLAGS\""]);
        let mut child = client.spawn_with_token(token, &mut cmd).expect("spawn");
        assert!(child.token().is_some());
        assert_eq!(child.try_wait().expect("try_wait"), None);
        assert_eq!(
            server.available().unwrap(),
            1,
            "released while the child runs"
        );
        let status = child.wait().expect("wait");
        assert!(
            status.success(),
            "the child did not see MAKEFLAGS: {status}"
        );
        assert_eq!(server.available().unwrap(), 2);
    });
}

fn a_killed_child_gives_its_token_back_when_reaped<D: Driver>() {
    D::block_on(async {
        let (server, client, _implicit) = pool::<D>().await;
        let token = within("token", client.acquire()).await.expect("token");
        let mut child = client
            .spawn_with_token(token, Command::new("sleep").arg("100"))
            .expect("spawn");
        child.kill().expect("kill");
        assert!(child.token().is_some(), "the token must wait for the reap");
        let status = child.wait().expect("wait");
        assert!(!status.success());
        assert_eq!(server.available().unwrap(), 2);
    });
}

fn dropping_the_handle_keeps_the_token_until_the_child_exits<D: Driver>() {
    D::block_on(async {
        let (server, client, _implicit) = pool::<D>().await;
        let token = within("token", client.acquire()).await.expect("token");
        let child = client
            .spawn_with_token(token, Command::new("sleep").arg("0.4"))
            .expect("spawn");
        let pid = child.id();
        drop(child);
        assert_eq!(
            server.available().unwrap(),
            1,
            "released before the child exited"
        );
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        wait_for("the token after the child's exit", || {
            server.available().unwrap() == 2
        });
        // The reaper reaped it: no zombie is left.
        wait_for("the child to be reaped", || {
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
        });
    });
}

fn a_failed_spawn_gives_the_token_back<D: Driver>() {
    D::block_on(async {
        let (server, client, _implicit) = pool::<D>().await;
        let token = within("token", client.acquire()).await.expect("token");
        assert_eq!(server.available().unwrap(), 1);
        let err = client
            .spawn_with_token(token, &mut Command::new("/nonexistent/program"))
            .expect_err("no such program");
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
        assert_eq!(server.available().unwrap(), 2);
    });
}

/// The tokio flavour: `tokio::process`, with a cancel-safe `wait`.
#[test]
fn tokio_child_holds_its_token_and_wait_is_cancel_safe() {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let server = jobserver_tokio::Server::new(3).expect("server");
            let client = server.client().expect("client");
            let _implicit = client.acquire().await.expect("implicit");
            let token = client.acquire().await.expect("token");
            let mut cmd = tokio::process::Command::new("sleep");
            cmd.arg("0.3");
            let mut child =
                jobserver_tokio::spawn_with_token(&client, token, &mut cmd).expect("spawn");
            // A wait cut short keeps the child and the token.
            let cut = tokio::time::timeout(Duration::from_millis(50), child.wait()).await;
            assert!(cut.is_err());
            assert!(child.token().is_some());
            assert_eq!(server.available().unwrap(), 1);
            assert!(child.wait().await.expect("wait").success());
            assert_eq!(server.available().unwrap(), 2);

            // Dropped while running: a task waits for the exit, then gives the token back.
            let token = client.acquire().await.expect("token");
            let mut cmd = tokio::process::Command::new("sleep");
            cmd.arg("0.3");
            let child = jobserver_tokio::spawn_with_token(&client, token, &mut cmd).expect("spawn");
            drop(child);
            assert_eq!(server.available().unwrap(), 1);
            let deadline = Instant::now() + Duration::from_secs(20);
            while server.available().unwrap() != 2 {
                assert!(Instant::now() < deadline, "the token never came back");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
}

/// The smol flavour: `async_process`, with a cancel-safe `status`.
#[test]
fn smol_child_holds_its_token_until_reaped() {
    smol::block_on(async {
        let server = jobserver_smol::Server::new(3).expect("server");
        let client = server.client().expect("client");
        let _implicit = client.acquire().await.expect("implicit");
        let token = client.acquire().await.expect("token");
        let mut cmd = jobserver_smol::command(&client, "sleep");
        cmd.arg("0.3");
        let mut child = jobserver_smol::spawn_with_token(token, &mut cmd).expect("spawn");
        assert_eq!(server.available().unwrap(), 1);
        assert!(child.status().await.expect("status").success());
        assert_eq!(server.available().unwrap(), 2);
        // Dropped while running: a thread waits for the exit, then gives the token back.
        let token = client.acquire().await.expect("token");
        let mut cmd = jobserver_smol::command(&client, "sleep");
        cmd.arg("0.3");
        drop(jobserver_smol::spawn_with_token(token, &mut cmd).expect("spawn"));
        assert_eq!(server.available().unwrap(), 1);
        let deadline = Instant::now() + Duration::from_secs(20);
        while server.available().unwrap() != 2 {
            assert!(Instant::now() < deadline, "the token never came back");
            smol::Timer::after(Duration::from_millis(10)).await;
        }
    });
}
