//! `from_env` duplicates the inherited descriptors first and validates the duplicates, so
//! what it checked is what it uses. Here another thread keeps switching the inherited read
//! number between the pool's pipe and a regular file (as a number closed and reused by
//! another thread would): every attempt must either connect to the pipe or fail with
//! `BadFds`, never connect to the file nor fail some other way.

mod fixture;

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fixture::{makeflags, TestPipe};
use jobserver_io::{Client, ErrorKind};
use jobserver_tests::Driver;
use rustix::io::DupFlags;

jobserver_tests::conformance!(validation_happens_on_the_duplicate);

/// Tokens in the pipe, so a client on it sees exactly this many.
const TOKENS: usize = 5;
/// How long to keep trying: a race, so the longer the likelier a bad order shows up (before
/// the fix, one in a few thousand attempts went wrong here).
const DURATION: Duration = Duration::from_secs(2);

fn validation_happens_on_the_duplicate<D: Driver>() {
    let pipe = TestPipe::new();
    fixture::put(pipe.write_fd(), &[b'+'; TOKENS]);
    let path = std::env::temp_dir().join(format!(
        "jobserver-tests-fd-reuse-{}-{}",
        std::process::id(),
        D::NAME
    ));
    let file = std::fs::File::create(&path).expect("a regular file");
    let _ = std::fs::remove_file(&path);
    let file = OwnedFd::from(file);
    // A free number of our own (each driver's test runs in this binary; take the first free
    // number from 700 up, which nothing else here uses).
    let target = rustix::io::fcntl_dupfd_cloexec(pipe.read_fd(), 700).expect("dup");
    let number = target.as_raw_fd();
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let stop = stop.clone();
        let pipe_read = pipe.read_fd().try_clone_to_owned().expect("dup");
        std::thread::spawn(move || {
            let mut target = target;
            while !stop.load(Ordering::Relaxed) {
                for src in [&file, &pipe_read] {
                    rustix::io::dup3(src.as_fd(), &mut target, DupFlags::CLOEXEC).expect("dup3");
                }
            }
            // Leaves the number on the pipe, then closes it.
            drop(target);
        })
    };
    let value = format!(
        "-j4 --jobserver-auth={number},{}",
        pipe.write_fd().as_raw_fd()
    );
    let (mut connected, mut refused) = (0usize, 0usize);
    D::block_on(async {
        let start = Instant::now();
        for attempt in 0.. {
            if start.elapsed() > DURATION {
                break;
            }
            match Client::<D>::from_env_with(makeflags(value.clone())) {
                Ok(client) => {
                    assert_eq!(
                        client.available().expect("FIONREAD"),
                        Some(TOKENS),
                        "{} attempt {attempt}: connected to something else than the pipe",
                        D::NAME
                    );
                    connected += 1;
                }
                Err(err) => {
                    assert_eq!(
                        err.kind(),
                        ErrorKind::BadFds,
                        "{} attempt {attempt}: {err}",
                        D::NAME
                    );
                    assert!(err.to_string().contains("not a pipe"), "{err}");
                    refused += 1;
                }
            }
        }
    });
    stop.store(true, Ordering::Relaxed);
    swapper.join().expect("the swapper");
    eprintln!("{}: {connected} connected, {refused} refused", D::NAME);
    assert!(connected + refused > 0);
    // The pipe is untouched.
    assert_eq!(fixture::count(pipe.read_fd()), TOKENS);
}
