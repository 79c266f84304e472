//! One token machine per jobserver per process: every client of the same pool in a process
//! (`from_env` called twice, `Server::client` called twice, clones) shares one implicit slot
//! and one queue, so the process never runs more jobs than its share. Clients of the same
//! pool on different runtimes have a machine each, but the implicit slot is still counted
//! once, and passes to the survivor when the machine that counted it goes away.

use std::any::Any;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use jobserver_io::blocking::ThreadReactor;
use jobserver_io::{Client, Server};
use jobserver_tests::timeline::{clean_env, run, shell_quote, TempDir, Timeline};
use jobserver_tests::{conformance, peers, Driver};
use jobserver_tokio::TokioReactor;

const TWO_CLIENTS: &str = env!("CARGO_BIN_EXE_two-clients");

/// A lookup that finds `server`'s pool in `MAKEFLAGS`, as a child of it would.
fn env_of<R: jobserver_io::Reactor>(
    server: &Server<R>,
) -> impl FnMut(&str) -> Option<Vec<u8>> + Clone {
    let value = OsString::from(server.makeflags()).into_vec();
    move |name| (name == "MAKEFLAGS").then(|| value.clone())
}

/// `from_env` twice on a pool of one job (nothing in the pipe): the second client sees the
/// implicit slot the first one holds.
fn from_env_twice_shares_the_implicit_slot<D: Driver>() {
    let server = Server::<D>::new(1).unwrap();
    D::block_on(async {
        let a = Client::<D>::from_env_with(env_of(&server)).unwrap();
        let b = Client::<D>::from_env_with(env_of(&server)).unwrap();
        let token = a.acquire().await.unwrap();
        assert!(
            b.try_acquire().unwrap().is_none(),
            "the second client had an implicit slot of its own"
        );
        assert_eq!(b.stats().running, 1, "b sees a's token: one machine");
        assert_eq!(b.stats().bytes_read, 0, "the slot is no byte");
        drop(token);
        let again = b.try_acquire().unwrap().expect("the slot is free again");
        assert_eq!(a.stats().running, 1);
        drop(again);
    });
    assert_eq!(server.available().unwrap(), 0);
}

/// `Server::client` twice on a pool of two jobs: one implicit slot and one byte between them,
/// and the bytes are counted back at the end.
fn server_client_twice_shares_the_implicit_slot<D: Driver>() {
    let server = Server::<D>::new(2).unwrap();
    D::block_on(async {
        let a = server.client().unwrap();
        let b = server.client().unwrap();
        let first = a.acquire().await.unwrap();
        let second = b.acquire().await.unwrap();
        assert_eq!(
            server.available().unwrap(),
            0,
            "the second unit is the byte"
        );
        assert!(a.try_acquire().unwrap().is_none(), "two jobs at most");
        assert!(b.try_acquire().unwrap().is_none(), "two jobs at most");
        let stats = a.stats();
        assert_eq!((stats.running, stats.bytes_held), (2, 1));
        assert_eq!(b.stats(), stats, "one machine");
        drop((first, second));
    });
    assert_eq!(server.available().unwrap(), 1);
    let report = server.shutdown().unwrap();
    assert!(report.is_balanced(), "{report:?}");
}

conformance!(
    from_env_twice_shares_the_implicit_slot,
    server_client_twice_shares_the_implicit_slot
);

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A blocking client first, then a tokio client of the same pool of two: the tokio client's
/// first unit is a byte, not a second implicit slot.
#[test]
fn a_second_runtime_gets_no_second_implicit_slot() {
    let server = jobserver_io::blocking::Server::new(2).unwrap();
    let blocking = jobserver_io::blocking::Client::from(server.client().unwrap());
    let rt = tokio_runtime();
    let tokio_client = rt
        .block_on(async { jobserver_tokio::Client::from_env_with(env_of(&server)) })
        .unwrap();
    let held = blocking.acquire().unwrap();
    assert_eq!(blocking.stats().bytes_read, 0, "the implicit slot");
    let t = rt.block_on(tokio_client.acquire()).unwrap();
    assert_eq!(
        tokio_client.stats().bytes_held,
        1,
        "a byte, not an implicit slot"
    );
    assert_eq!(server.available().unwrap(), 0);
    assert!(
        tokio_client.try_acquire().unwrap().is_none(),
        "two jobs at most"
    );
    assert!(
        blocking.try_acquire().unwrap().is_none(),
        "two jobs at most"
    );
    drop((held, t));
    assert_eq!(server.available().unwrap(), 1);
}

/// The machine that counts the implicit slot goes away while the other one holds a byte for
/// its only unit: the slot passes to the survivor, whose byte goes back to the pool at once.
#[test]
fn the_implicit_slot_passes_to_the_surviving_runtime() {
    for tokio_first in [true, false] {
        let server = Server::<TokioReactor>::new(2).unwrap();
        let rt = tokio_runtime();
        let lookup = env_of(&server);
        let (tokio_client, blocking) = if tokio_first {
            let t = rt
                .block_on(async { jobserver_tokio::Client::from_env_with(lookup.clone()) })
                .unwrap();
            let b = jobserver_io::blocking::Client::from_env_with(lookup).unwrap();
            (t, b)
        } else {
            let b = jobserver_io::blocking::Client::from_env_with(lookup.clone()).unwrap();
            let t = rt
                .block_on(async { jobserver_tokio::Client::from_env_with(lookup) })
                .unwrap();
            (t, b)
        };
        // Whoever came second holds its first unit with a byte.
        let (holder_token, other_token): (Box<dyn Any>, Box<dyn Any>);
        if tokio_first {
            holder_token = Box::new(rt.block_on(tokio_client.acquire()).unwrap());
            other_token = Box::new(blocking.acquire().unwrap());
            assert_eq!(blocking.stats().bytes_held, 1);
        } else {
            holder_token = Box::new(blocking.acquire().unwrap());
            other_token = Box::new(rt.block_on(tokio_client.acquire()).unwrap());
            assert_eq!(tokio_client.stats().bytes_held, 1);
        }
        assert_eq!(server.available().unwrap(), 0);
        // The holder of the slot goes away, with its token.
        drop(holder_token);
        let survivor_stats = if tokio_first {
            drop(tokio_client);
            let stats = blocking.stats();
            assert!(
                blocking.try_acquire().unwrap().is_some(),
                "room for a second job"
            );
            stats
        } else {
            drop(blocking);
            let stats = tokio_client.stats();
            let again = rt.block_on(async { tokio_client.try_acquire() }).unwrap();
            assert!(again.is_some(), "room for a second job");
            stats
        };
        assert_eq!(
            (survivor_stats.running, survivor_stats.bytes_held),
            (1, 0),
            "the survivor's job now runs on the implicit slot (tokio first: {tokio_first})"
        );
        drop(other_token);
        assert_eq!(server.available().unwrap(), 1);
    }
}

/// Clients without any jobserver share nothing: each is a semaphore of one of its own.
#[test]
fn implicit_only_clients_are_independent() {
    let a = jobserver_io::blocking::Client::from(Client::<ThreadReactor>::implicit_only(None));
    let b = jobserver_io::blocking::Client::from(Client::<ThreadReactor>::implicit_only(None));
    let _held = a.acquire().unwrap();
    assert!(b.try_acquire().unwrap().is_some());
}

/// Runs `two-clients FIRST SECOND` as the only recipe (`+`) of a `make -j2`, and checks that
/// the process never held more than two units at once, and did reach two.
fn two_clients_under_make(make: &std::path::Path, first: &str, second: &str, mode: &str) {
    let dir = TempDir::new(&format!("two-clients-{first}-{second}"));
    let log = dir.join("units.log");
    let line = [TWO_CLIENTS, first, second, "3", "150"]
        .iter()
        .map(|w| shell_quote(std::ffi::OsStr::new(w)))
        .chain([shell_quote(log.as_os_str())])
        .collect::<Vec<_>>()
        .join(" ");
    std::fs::write(
        dir.join("Makefile"),
        format!("all:\n\t+@{}\n", line.replace('$', "$$")),
    )
    .unwrap();
    let mut cmd = std::process::Command::new(make);
    clean_env(&mut cmd).args(["-f", "Makefile", "-j2"]);
    let out = run(&mut cmd, dir.path());
    out.assert_success("make");
    out.assert_no_internal();
    assert!(
        out.output
            .contains(&format!("connected first={mode} second={mode}")),
        "output:\n{}",
        out.output
    );
    let timeline = Timeline::read(&log);
    timeline.assert_balanced();
    assert_eq!(timeline.acquisitions(), 6);
    // make -j2 started this recipe as one job (the process's implicit slot) and left one token
    // in its pipe: two units, whichever client asks.
    assert_eq!(
        timeline.max_concurrency(),
        2,
        "units held at once by one process with two clients ({first}, {second}) under make -j2"
    );
}

fn pairs() -> [(&'static str, &'static str); 5] {
    [
        ("tokio", "tokio"),
        ("smol", "smol"),
        ("blocking", "blocking"),
        ("tokio", "blocking"),
        ("blocking", "smol"),
    ]
}

#[test]
fn two_clients_under_make43_pipe_hold_at_most_two() {
    let make = peers::make43();
    for (first, second) in pairs() {
        two_clients_under_make(&make, first, second, "Pipe");
    }
}

#[test]
fn two_clients_under_make44_fifo_hold_at_most_two() {
    let make = peers::make44();
    for (first, second) in pairs() {
        two_clients_under_make(&make, first, second, "Fifo");
    }
}
