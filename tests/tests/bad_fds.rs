//! Connecting to a jobserver that is missing, disabled, closed or not what it claims fails with
//! the right `ErrorKind` and a message that says what to do, and `from_env_or_new` falls back
//! the way make itself does. Every lookup is a closure: the process environment is never
//! touched.

mod fixture;

use std::error::Error as _;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use fixture::{makeflags, TestPipe};
use jobserver_io::{Client, EnvVar, Error, ErrorKind, Mode};
use jobserver_tests::Driver;

jobserver_tests::conformance!(
    closed_fds_are_bad_fds_and_ask_for_plus,
    regular_file_fd_is_bad_fds,
    read_end_passed_as_write_end_is_bad_fds,
    negative_fds_mean_disabled,
    fifo_path_of_a_regular_file_is_refused_and_left_empty,
    fifo_path_that_does_not_exist_is_io,
    windows_semaphore_is_unsupported,
    unparsable_auth_is_invalid_makeflags,
    no_variables_means_no_jobserver,
    from_env_or_new_falls_back_like_make,
    cargo_makeflags_wins_over_makeflags,
);

fn connect_with<D: Driver>(value: &str) -> Result<Client<D>, Error> {
    D::block_on(async { Client::<D>::from_env_with(makeflags(value.to_owned())) })
}

fn expect_error<D: Driver>(value: &str, kind: ErrorKind) -> Error {
    match connect_with::<D>(value) {
        Ok(client) => panic!("{}: {value:?} connected: {client:?}", D::NAME),
        Err(err) => {
            assert_eq!(err.kind(), kind, "{}: {value:?}: {err}", D::NAME);
            err
        }
    }
}

/// A descriptor number that is not open in this process.
fn closed_fd(from: i32) -> i32 {
    (from..from + 100)
        .find(|fd| std::fs::read_link(format!("/proc/self/fd/{fd}")).is_err())
        .expect("a free descriptor number")
}

/// A unique, empty regular file, removed on drop.
struct TempFile(PathBuf, std::fs::File);

impl TempFile {
    fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "jobserver-tests-bad-fds-{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let file = std::fs::File::create(&path).expect("creating a temp file");
        TempFile(path, file)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn closed_fds_are_bad_fds_and_ask_for_plus<D: Driver>() {
    let read = closed_fd(900);
    let write = closed_fd(read + 1);
    let err = expect_error::<D>(
        &format!(" -j4 --jobserver-auth={read},{write}"),
        ErrorKind::BadFds,
    );
    let msg = err.to_string();
    assert!(msg.contains('+'), "the message must ask for `+`: {msg}");
    assert!(msg.contains(&format!("{read},{write}")), "{msg}");
    assert!(msg.contains("not open"), "{msg}");
    let source = std::error::Error::source(&err).expect("EBADF is the source");
    let os = source
        .downcast_ref::<std::io::Error>()
        .expect("an io::Error");
    assert_eq!(
        os.raw_os_error(),
        Some(rustix::io::Errno::BADF.raw_os_error())
    );
}

fn regular_file_fd_is_bad_fds<D: Driver>() {
    let file = TempFile::new("fd");
    let pipe = TestPipe::new();
    let value = format!(
        "-j4 --jobserver-auth={},{}",
        file.1.as_raw_fd(),
        pipe.write_fd().as_raw_fd()
    );
    let err = expect_error::<D>(&value, ErrorKind::BadFds);
    assert!(err.to_string().contains("not a pipe"), "{err}");
    // Nothing was written to the file.
    assert_eq!(std::fs::metadata(&file.0).expect("stat").len(), 0);
}

fn read_end_passed_as_write_end_is_bad_fds<D: Driver>() {
    let pipe = TestPipe::new();
    let read = pipe.read_fd().as_raw_fd();
    let err = expect_error::<D>(
        &format!("-j4 --jobserver-auth={read},{read}"),
        ErrorKind::BadFds,
    );
    assert!(err.to_string().contains("wrong direction"), "{err}");
    let write = pipe.write_fd().as_raw_fd();
    let err = expect_error::<D>(
        &format!("-j4 --jobserver-auth={write},{write}"),
        ErrorKind::BadFds,
    );
    assert!(err.to_string().contains("wrong direction"), "{err}");
}

fn negative_fds_mean_disabled<D: Driver>() {
    let pipe = TestPipe::new();
    for value in [
        " -j4 --jobserver-auth=-2,-2".to_owned(),
        // make 4.4 appends it after the real one for commands it does not treat as recursive.
        format!(
            " -j4 --jobserver-auth={} --no-print-directory --jobserver-auth=-2,-2",
            pipe.auth()
        ),
        format!(" -j4 --jobserver-auth=-1,{}", pipe.write_fd().as_raw_fd()),
    ] {
        let err = expect_error::<D>(&value, ErrorKind::Disabled);
        assert!(err.to_string().contains('+'), "{err}");
    }
}

fn fifo_path_of_a_regular_file_is_refused_and_left_empty<D: Driver>() {
    let file = TempFile::new("fifo");
    let value = format!("-j4 --jobserver-auth=fifo:{}", file.0.display());
    let err = expect_error::<D>(&value, ErrorKind::NotAFifo);
    assert!(err.to_string().contains("regular file"), "{err}");
    assert!(
        err.to_string().contains("Check the --jobserver-auth"),
        "{err}"
    );
    assert_eq!(
        std::fs::metadata(&file.0).expect("stat").len(),
        0,
        "no token may be written into a regular file"
    );
}

fn fifo_path_that_does_not_exist_is_io<D: Driver>() {
    let path = std::env::temp_dir().join(format!(
        "jobserver-tests-no-such-fifo-{}",
        std::process::id()
    ));
    let err = expect_error::<D>(
        &format!("-j4 --jobserver-auth=fifo:{}", path.display()),
        ErrorKind::Io,
    );
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    let source = err.source().expect("the OS error is the source");
    let io = source
        .downcast_ref::<std::io::Error>()
        .expect("an io::Error");
    assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
}

fn windows_semaphore_is_unsupported<D: Driver>() {
    let err = expect_error::<D>(
        " -j10 --jobserver-auth=gmake_semaphore_1",
        ErrorKind::Unsupported,
    );
    assert!(err.to_string().contains("gmake_semaphore_1"), "{err}");
}

fn unparsable_auth_is_invalid_makeflags<D: Driver>() {
    for value in [
        " -j4 --jobserver-auth=0x7,8",
        " -j4 --jobserver-auth=7",
        " -j4 --jobserver-auth=fifo:",
    ] {
        let err = expect_error::<D>(value, ErrorKind::InvalidMakeflags);
        let msg = err.to_string();
        assert!(msg.contains("MAKEFLAGS"), "names the variable: {msg}");
        assert!(msg.contains("fix or unset"), "says what to do: {msg}");
        assert!(err.source().is_some(), "the parse error is the source");
    }
}

fn no_variables_means_no_jobserver<D: Driver>() {
    for value in ["", " -j1 --no-print-directory", " --unknown-opt=1 -j2"] {
        let err = expect_error::<D>(value, ErrorKind::NoJobserver);
        assert!(err.to_string().contains("from_env_or_new"), "{err}");
    }
    let err = D::block_on(async { Client::<D>::from_env_with(|_| None) })
        .expect_err("no variables at all");
    assert_eq!(err.kind(), ErrorKind::NoJobserver);
}

fn from_env_or_new_falls_back_like_make<D: Driver>() {
    let read = closed_fd(900);
    let write = closed_fd(read + 1);
    for (value, kind) in [
        (
            " -j4 --jobserver-auth=-2,-2".to_owned(),
            ErrorKind::Disabled,
        ),
        (
            format!(" -j4 --jobserver-auth={read},{write}"),
            ErrorKind::BadFds,
        ),
    ] {
        D::block_on(async {
            let client = Client::<D>::from_env_or_new_with(4, makeflags(value.clone()))
                .unwrap_or_else(|e| panic!("{value:?}: {e}"));
            assert_eq!(client.mode(), Mode::ImplicitOnly, "{value:?}");
            let reason = client.degraded().expect("says why it degraded");
            assert_eq!(reason.kind(), kind, "{reason}");
            assert!(client.makeflags().is_none());
            // One job at a time.
            let token = client.acquire().await.expect("the implicit slot");
            assert!(client.try_acquire().expect("try").is_none());
            assert!(client.acquire_many(2).await.is_err(), "no jobserver for 2");
            drop(token);
        });
    }

    for jobs in [1, 3, 8] {
        D::block_on(async {
            let client = Client::<D>::from_env_or_new_with(jobs, makeflags(" -j1".into()))
                .expect("an own pool");
            assert_eq!(client.mode(), Mode::Pipe);
            assert_eq!(client.var(), None);
            assert!(client.degraded().is_none());
            let flags = client.makeflags().expect("children get the pool");
            assert!(
                flags.to_str().unwrap().starts_with(&format!("-j{jobs} ")),
                "{flags:?}"
            );
            assert_eq!(client.available().unwrap(), Some(jobs - 1));
            let all = client
                .try_acquire_up_to(jobs + 5)
                .expect("try")
                .expect("tokens");
            assert_eq!(all.units(), jobs, "the pool holds exactly {jobs}");
            assert!(client.try_acquire().expect("try").is_none());
            drop(all);
            assert_eq!(client.available().unwrap(), Some(jobs - 1));
        });
    }

    // Other errors are not papered over.
    let result = D::block_on(async {
        Client::<D>::from_env_or_new_with(4, makeflags(" --jobserver-auth=0x7,8".into()))
    });
    assert_eq!(
        result.expect_err("invalid").kind(),
        ErrorKind::InvalidMakeflags
    );
}

fn cargo_makeflags_wins_over_makeflags<D: Driver>() {
    let pipe = TestPipe::new();
    let read = closed_fd(900);
    let write = closed_fd(read + 1);
    let good = format!("-j3 --jobserver-auth={}", pipe.auth());
    let bad = format!("-j9 --jobserver-auth={read},{write}");
    D::block_on(async {
        let client = Client::<D>::from_env_with(|name| match name {
            "CARGO_MAKEFLAGS" => Some(good.clone().into_bytes()),
            "MAKEFLAGS" => Some(bad.clone().into_bytes()),
            _ => None,
        })
        .expect("CARGO_MAKEFLAGS is used, the stale MAKEFLAGS ignored");
        assert_eq!(client.var(), Some(EnvVar::CargoMakeflags));
        assert_eq!(client.mode(), Mode::Pipe);

        // And the other way round: MAKEFLAGS alone is reported as such.
        let client = Client::<D>::from_env_with(|name| {
            (name == "MAKEFLAGS").then(|| good.clone().into_bytes())
        })
        .expect("MAKEFLAGS");
        assert_eq!(client.var(), Some(EnvVar::Makeflags));

        // A CARGO_MAKEFLAGS without a jobserver does not hide MAKEFLAGS's.
        let client = Client::<D>::from_env_with(|name| match name {
            "CARGO_MAKEFLAGS" => Some(b"-j2".to_vec()),
            "MAKEFLAGS" => Some(good.clone().into_bytes()),
            _ => None,
        })
        .expect("MAKEFLAGS");
        assert_eq!(client.var(), Some(EnvVar::Makeflags));
    });
    let err = D::block_on(async {
        Client::<D>::from_env_with(|name| {
            (name == "CARGO_MAKEFLAGS").then(|| bad.clone().into_bytes())
        })
    })
    .expect_err("closed fds");
    assert!(
        err.to_string().contains("CARGO_MAKEFLAGS"),
        "names the variable: {err}"
    );
}
