//! Property tests for `makeflags`: parsing never panics and keeps its
//! promises on any input, and what the encoders write parses back unchanged.

use std::num::NonZeroUsize;

use jobserver_proto::makeflags::{
    encode_fifo, encode_fifo_with_flags, encode_flags, encode_pipe, encode_pipe_with_flags,
    from_env, parse, Auth, EnvVar, Jobs, MakeFlags, ParseErrorKind,
};
use proptest::prelude::*;

/// Words that exercise the parser's rules: options with and without
/// arguments, the `--` separator, flag clusters, variables, escapes and tabs.
fn plausible_word() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("-j".to_owned()),
        "-j[0-9]{0,25}",
        "[0-9]{1,22}",
        "--jobs(=[0-9a-z]{0,4})?",
        "--jobserver-(auth|fds)(=[-+ 0-9,x]{0,24})?",
        "--jobserver-(auth|fds)=fifo:[ -~]{0,20}",
        "--jobserver-auth=[-+]?[0-9]{1,12},[-+]?[0-9]{1,12}",
        Just("--".to_owned()),
        Just("-".to_owned()),
        "-[nksiSdjCfIoWElO]{1,5}[0-9]{0,3}",
        "[nksiSdj]{1,4}",
        "--debug(=[abijmnpvwxAN,]{0,6})?",
        "[A-Z]{1,3}=[a-z-]{0,6}",
        "--(dry-run|keep-going|stop|silent|directory|eval|no-print-directory|unknown-opt)(=x)?",
        "[a-z\\\\ \t]{1,6}",
        Just("\\".to_owned()),
        Just("\t".to_owned()),
    ]
}

/// A value built from plausible words with blanks of varying kind and length
/// between them.
fn plausible_value() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((plausible_word(), "[ \t]{1,3}"), 0..12).prop_map(|words| {
        let mut value = String::new();
        for (word, blank) in words {
            value.push_str(&blank);
            value.push_str(&word);
        }
        value.into_bytes()
    })
}

/// Checks what `parse` promises about any input, and that `from_env` agrees
/// with it when the value is in the only variable set.
fn check_promises(value: &[u8]) -> Result<(), TestCaseError> {
    let parsed = parse(value);
    match &parsed {
        Ok(flags) => {
            match &flags.auth {
                Auth::Pipe { read, write } => prop_assert!(*read >= 0 && *write >= 0),
                Auth::Disabled { read, write } => prop_assert!(*read < 0 || *write < 0),
                Auth::Fifo(path) => prop_assert!(!path.is_empty()),
                Auth::Semaphore(name) => prop_assert!(!name.is_empty()),
                _ => {}
            }
            prop_assert_eq!(flags.has_jobserver(), flags.auth != Auth::None);
        }
        Err(error) => {
            prop_assert!(
                error.option() == "--jobserver-auth" || error.option() == "--jobserver-fds"
            );
            if error.kind() == ParseErrorKind::EmptyFifoPath {
                prop_assert_eq!(error.value(), b"fifo:");
            }
            prop_assert!(!error.to_string().is_empty());
        }
    }
    let from_makeflags = from_env(|name| (name == "MAKEFLAGS").then(|| value.to_vec()));
    match (from_makeflags, parsed) {
        (Ok(env), Ok(flags)) => {
            prop_assert_eq!(env.var, Some(EnvVar::Makeflags));
            prop_assert_eq!(env.flags, flags);
        }
        (Err(env), Err(error)) => {
            prop_assert_eq!(env.var(), EnvVar::Makeflags);
            prop_assert_eq!(env.error(), &error);
        }
        (env, flags) => prop_assert!(false, "from_env {:?} but parse {:?}", env, flags),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn parse_never_panics_on_arbitrary_bytes(value in prop::collection::vec(any::<u8>(), 0..200)) {
        check_promises(&value)?;
    }

    #[test]
    fn parse_never_panics_on_plausible_words(value in plausible_value()) {
        check_promises(&value)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn pipe_encoding_round_trips(
        jobs in 1usize..=100_000,
        read in 0..=i32::MAX,
        write in 0..=i32::MAX,
    ) {
        let jobs = NonZeroUsize::new(jobs).unwrap();
        let flags = parse(&encode_pipe(jobs, read, write)).unwrap();
        prop_assert_eq!(flags.auth, Auth::Pipe { read, write });
        prop_assert_eq!(flags.jobs, Jobs::Limited(jobs));
    }

    #[test]
    fn fifo_encoding_round_trips(
        jobs in 1usize..=100_000,
        path in prop::collection::vec(
            prop_oneof![
                // Bias towards the bytes that need escaping or look like syntax.
                3 => prop::sample::select(&b" \t\\=-,:\n"[..]),
                7 => 1u8..=255,
            ],
            1..64,
        ),
    ) {
        let jobs = NonZeroUsize::new(jobs).unwrap();
        let flags = parse(&encode_fifo(jobs, &path)).unwrap();
        prop_assert_eq!(flags.auth, Auth::Fifo(path));
        prop_assert_eq!(flags.jobs, Jobs::Limited(jobs));
    }
}

/// Any combination of the one-letter flags the encoders write.
fn any_flags() -> impl Strategy<Value = MakeFlags> {
    any::<[bool; 5]>().prop_map(|[debug, ignore_errors, keep_going, dry_run, silent]| {
        let mut flags = MakeFlags::default();
        flags.debug = debug;
        flags.ignore_errors = ignore_errors;
        flags.keep_going = keep_going;
        flags.dry_run = dry_run;
        flags.silent = silent;
        flags
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn flag_encoding_round_trips(
        flags in any_flags(),
        jobs in 1usize..=100_000,
        read in 0..=i32::MAX,
        write in 0..=i32::MAX,
        path in "/[ -~]{1,30}",
    ) {
        let jobs = NonZeroUsize::new(jobs).unwrap();
        let mut want = flags.clone();
        want.jobs = Jobs::Limited(jobs);

        want.auth = Auth::Pipe { read, write };
        let value = encode_pipe_with_flags(&flags, jobs, read, write);
        prop_assert_eq!(parse(&value).unwrap(), want.clone());

        want.auth = Auth::Fifo(path.clone().into_bytes());
        let value = encode_fifo_with_flags(&flags, jobs, path.as_bytes());
        prop_assert_eq!(parse(&value).unwrap(), want);

        // The cluster alone, as the whole value, reads back as the same flags.
        let cluster = encode_flags(&flags);
        prop_assert_eq!(parse(&cluster).unwrap(), flags);
    }
}
