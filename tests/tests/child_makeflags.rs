//! What a configured child is told: make's one-letter flags, the jobs hint and make's
//! command-line variables from the inherited `MAKEFLAGS` travel on with the jobserver, and
//! `MFLAGS` is set to match (a stale inherited one would name make's descriptors, not ours).
//! A real child make (4.3 on a pipe, 4.4.1 on a fifo) reads the value back: it sees the
//! variables and the flags, joins the jobserver and does not warn.

mod fixture;

use std::path::Path;
use std::process::Command;

use fixture::TestPipe;
use jobserver_io::blocking::{Client, Server};
use jobserver_tests::peers;
use jobserver_tests::timeline::{clean_env, TempDir};

/// The inherited flags: debug and keep going (not `n`, which would make the child make only
/// print its recipe).
const FLAGS: &str = "dk";
const VARIABLES: &str = r"Y=a\ b FOO=bar";

fn inherited(auth: &str) -> String {
    format!("{FLAGS} -j4 --jobserver-auth={auth} --no-print-directory -- {VARIABLES}")
}

fn lookup(value: String) -> impl FnMut(&str) -> Option<Vec<u8>> {
    move |name| (name == "MAKEFLAGS").then(|| value.clone().into_bytes())
}

/// Runs `sh -c` printing the three variables, configured by `client`, with a stale `MFLAGS`.
fn seen_by_a_child(client: &Client) -> (String, String, String) {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"printf '%s\n' "$MAKEFLAGS" "$CARGO_MAKEFLAGS" "$MFLAGS""#);
    clean_env(&mut cmd).env("MFLAGS", "-j9 --jobserver-auth=57,58");
    let out = client.configure(&mut cmd).output().expect("running sh");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines().map(str::to_owned);
    (
        lines.next().unwrap(),
        lines.next().unwrap(),
        lines.next().unwrap(),
    )
}

#[test]
fn pipe_client_passes_flags_and_variables_and_sets_mflags() {
    let pipe = TestPipe::new();
    let client = Client::from_env_with(lookup(inherited(&pipe.auth()))).expect("connecting");
    let (makeflags, cargo, mflags) = seen_by_a_child(&client);
    assert_eq!(makeflags, cargo);
    assert_eq!(Some(makeflags.as_ref()), client.makeflags());
    // Our own descriptors, not the inherited numbers.
    let ours = makeflags
        .split(' ')
        .find_map(|w| w.strip_prefix("--jobserver-auth="))
        .expect("a jobserver")
        .to_owned();
    assert_ne!(ours, pipe.auth());
    assert_eq!(
        makeflags,
        format!("{FLAGS} -j4 --jobserver-fds={ours} --jobserver-auth={ours} -- {VARIABLES}")
    );
    assert_eq!(
        mflags,
        format!("-{FLAGS} -j4 --jobserver-fds={ours} --jobserver-auth={ours}"),
        "MFLAGS as make sets it: a dash on the flags, no variables"
    );
}

#[test]
fn own_pool_sets_mflags_too() {
    let server = Server::new(3).expect("a pool");
    let client = Client::from(server.client().expect("a client"));
    let (makeflags, _, mflags) = seen_by_a_child(&client);
    assert!(makeflags.starts_with("-j3 --jobserver-fds="), "{makeflags}");
    assert_eq!(
        mflags, makeflags,
        "without flags or variables they are equal"
    );
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"printf '%s' "$MFLAGS""#)
        .env("MFLAGS", "stale");
    let out = server.configure(&mut cmd).output().expect("running sh");
    assert_eq!(String::from_utf8(out.stdout).unwrap(), makeflags);
}

/// A child make run by `client` sees the variables and the keep-going flag and uses the
/// jobserver without a warning.
fn child_make_reads_it_back(make: &Path, client: &Client) {
    let dir = TempDir::new("child-makeflags");
    std::fs::write(
        dir.join("Makefile"),
        "all:\n\t@echo \"FOO=[$(FOO)] Y=[$(Y)] first=[$(firstword $(MAKEFLAGS))]\"\n",
    )
    .unwrap();
    let mut cmd = Command::new(make);
    clean_env(&mut cmd).arg("-s").current_dir(dir.path());
    let out = client.configure(&mut cmd).output().expect("running make");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        !stderr.to_ascii_lowercase().contains("jobserver"),
        "make warned about the jobserver: {stderr}"
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("FOO="))
        .unwrap_or_else(|| panic!("no output line: {stdout}{stderr}"));
    assert!(line.starts_with("FOO=[bar] Y=[a b] first=["), "{line}");
    // make writes its own flag cluster from the flags it got (`dk`, plus `s` from `-s`).
    let first = line
        .split_once("first=[")
        .and_then(|(_, rest)| rest.strip_suffix(']'))
        .unwrap();
    assert!(first.contains('d') && first.contains('k'), "{line}");
}

#[test]
fn make43_child_of_a_pipe_client_reads_flags_and_variables() {
    let pipe = TestPipe::new();
    fixture::put(pipe.write_fd(), b"+++");
    let client = Client::from_env_with(lookup(inherited(&pipe.auth()))).expect("connecting");
    child_make_reads_it_back(&peers::make43(), &client);
    assert_eq!(
        fixture::count(pipe.read_fd()),
        3,
        "the child make took nothing for good"
    );
}

#[test]
fn make44_child_of_a_fifo_client_reads_flags_and_variables() {
    let pool = Server::new_fifo(4).expect("a fifo pool");
    let path = pool
        .fifo_path()
        .expect("a path")
        .to_str()
        .unwrap()
        .to_owned();
    let client =
        Client::from_env_with(lookup(inherited(&format!("fifo:{path}")))).expect("connecting");
    child_make_reads_it_back(&peers::make44(), &client);
    let value = client.makeflags().unwrap().to_str().unwrap();
    assert_eq!(
        value,
        format!("{FLAGS} -j4 --jobserver-auth=fifo:{path} -- {VARIABLES}")
    );
}

#[test]
fn without_a_jobs_hint_none_is_invented() {
    let pool = Server::new_fifo(2).expect("a fifo pool");
    let path = pool
        .fifo_path()
        .expect("a path")
        .to_str()
        .unwrap()
        .to_owned();
    let value = format!("k --jobserver-auth=fifo:{path} -- A=1");
    let client = Client::from_env_with(lookup(value.clone())).expect("connecting");
    let (makeflags, _, mflags) = seen_by_a_child(&client);
    assert_eq!(makeflags, value);
    assert_eq!(mflags, format!("-k --jobserver-auth=fifo:{path}"));
}
