//! Every row of the test-vector table in PROTOCOL.md §6, checked against
//! `makeflags::parse`.
//!
//! `R,W` in the table stands for open descriptors and `P` for a fifo path;
//! here they are the concrete numbers 3,4 (or 57,58) and the path
//! `/tmp/GMfifo8634`. Rows whose meaning depends on what is found when
//! connecting (closed descriptors, a regular file) are checked only for what
//! parsing gives.

use std::num::NonZeroUsize;

use jobserver_proto::makeflags::{parse, Auth, Jobs, MakeFlags, ParseErrorKind};

const P: &[u8] = b"/tmp/GMfifo8634";

/// What a row expects from `parse`.
#[derive(Debug)]
enum Expect {
    Ok(MakeFlags),
    Err(ParseErrorKind),
}

/// One input of the table. A table row listing several inputs becomes
/// several of these with the same `row` text.
struct Vector {
    /// The row of PROTOCOL.md §6, as written there.
    row: &'static str,
    input: &'static [u8],
    expect: Expect,
}

fn limited(n: usize) -> Jobs {
    Jobs::Limited(NonZeroUsize::new(n).unwrap())
}

fn fifo() -> Auth {
    Auth::Fifo(P.to_vec())
}

fn pipe(read: i32, write: i32) -> Auth {
    Auth::Pipe { read, write }
}

/// Expected flags: `letters` lists the single-letter flags that must be set
/// (`n`, `k`, `s`, `i`, `d`); every other flag must be clear.
fn ok(auth: Auth, jobs: Jobs, letters: &str) -> Expect {
    let mut flags = MakeFlags::default();
    flags.auth = auth;
    flags.jobs = jobs;
    for letter in letters.chars() {
        match letter {
            'n' => flags.dry_run = true,
            'k' => flags.keep_going = true,
            's' => flags.silent = true,
            'i' => flags.ignore_errors = true,
            'd' => flags.debug = true,
            _ => panic!("unknown flag letter {letter:?}"),
        }
    }
    Expect::Ok(flags)
}

/// `expect` with the variables after `--`, as written.
fn with_variables(expect: Expect, variables: &[u8]) -> Expect {
    match expect {
        Expect::Ok(mut flags) => {
            flags.variables = variables.to_vec();
            Expect::Ok(flags)
        }
        other => other,
    }
}

fn vectors() -> Vec<Vector> {
    use Expect::Err;
    use ParseErrorKind::*;
    let v = |row, input, expect| Vector { row, input, expect };
    vec![
        v(
            " -j4 --jobserver-auth=3,4 --no-print-directory",
            b" -j4 --jobserver-auth=3,4 --no-print-directory",
            ok(pipe(3, 4), limited(4), ""),
        ),
        v(
            " -j4 --jobserver-auth=fifo:/tmp/GMfifo8634 --no-print-directory",
            b" -j4 --jobserver-auth=fifo:/tmp/GMfifo8634 --no-print-directory",
            ok(fifo(), limited(4), ""),
        ),
        v(
            "iks -j4 --jobserver-auth=fifo:P --no-print-directory",
            b"iks -j4 --jobserver-auth=fifo:/tmp/GMfifo8634 --no-print-directory",
            ok(fifo(), limited(4), "iks"),
        ),
        v(
            "n -j4 --jobserver-auth=fifo:P --no-print-directory",
            b"n -j4 --jobserver-auth=fifo:/tmp/GMfifo8634 --no-print-directory",
            ok(fifo(), limited(4), "n"),
        ),
        v(
            " -j3 --jobserver-auth=fifo:P --no-print-directory -- FOO=bar",
            b" -j3 --jobserver-auth=fifo:/tmp/GMfifo8634 --no-print-directory -- FOO=bar",
            with_variables(ok(fifo(), limited(3), ""), b"FOO=bar"),
        ),
        v(
            r" -j4 --jobserver-auth=fifo:P --no-print-directory -- Y=a\ b X=--jobserver-auth=1,2",
            b" -j4 --jobserver-auth=fifo:/tmp/GMfifo8634 --no-print-directory \
              -- Y=a\\ b X=--jobserver-auth=1,2",
            with_variables(
                ok(fifo(), limited(4), ""),
                b"Y=a\\ b X=--jobserver-auth=1,2",
            ),
        ),
        v(
            " -j4 --jobserver-auth=3,4 --no-print-directory --jobserver-auth=-2,-2",
            b" -j4 --jobserver-auth=3,4 --no-print-directory --jobserver-auth=-2,-2",
            ok(
                Auth::Disabled {
                    read: -2,
                    write: -2,
                },
                limited(4),
                "",
            ),
        ),
        v(
            " -j1 --no-print-directory",
            b" -j1 --no-print-directory",
            ok(Auth::None, limited(1), ""),
        ),
        v(
            " -j --no-print-directory",
            b" -j --no-print-directory",
            ok(Auth::None, Jobs::Unlimited, ""),
        ),
        v(
            "-j --jobserver-fds=3,4 --jobserver-auth=3,4",
            b"-j --jobserver-fds=3,4 --jobserver-auth=3,4",
            ok(pipe(3, 4), Jobs::Unlimited, ""),
        ),
        v(
            " --jobserver-fds=3,4 -j",
            b" --jobserver-fds=3,4 -j",
            ok(pipe(3, 4), Jobs::Unlimited, ""),
        ),
        v(
            "--jobserver-auth=fifo:/dev/steve",
            b"--jobserver-auth=fifo:/dev/steve",
            ok(Auth::Fifo(b"/dev/steve".to_vec()), Jobs::Unspecified, ""),
        ),
        v(
            " -j10 --jobserver-auth=gmake_semaphore_1234",
            b" -j10 --jobserver-auth=gmake_semaphore_1234",
            ok(
                Auth::Semaphore(b"gmake_semaphore_1234".to_vec()),
                limited(10),
                "",
            ),
        ),
        v(
            "`` (empty), `  \\t`",
            b"",
            ok(Auth::None, Jobs::Unspecified, ""),
        ),
        v(
            "`` (empty), `  \\t`",
            b"  \t",
            ok(Auth::None, Jobs::Unspecified, ""),
        ),
        v(
            "\\t-j4\\t--jobserver-auth=fifo:P",
            b"\t-j4\t--jobserver-auth=fifo:/tmp/GMfifo8634",
            ok(fifo(), limited(4), ""),
        ),
        v(
            " -j4 --jobserver-auth=R,W --jobserver-auth=fifo:P",
            b" -j4 --jobserver-auth=3,4 --jobserver-auth=fifo:/tmp/GMfifo8634",
            ok(fifo(), limited(4), ""),
        ),
        v(
            " -j4 --jobserver-auth=-1,W / R,-1",
            b" -j4 --jobserver-auth=-1,4",
            ok(Auth::Disabled { read: -1, write: 4 }, limited(4), ""),
        ),
        v(
            " -j4 --jobserver-auth=-1,W / R,-1",
            b" -j4 --jobserver-auth=3,-1",
            ok(Auth::Disabled { read: 3, write: -1 }, limited(4), ""),
        ),
        v(
            " -j4 --jobserver-auth=57,58 with 57, 58 closed",
            b" -j4 --jobserver-auth=57,58",
            ok(pipe(57, 58), limited(4), ""),
        ),
        v(
            " -j4 --jobserver-auth=7 / 7, / 0x7,8 / (empty)",
            b" -j4 --jobserver-auth=7",
            Err(NotFdPair),
        ),
        v(
            " -j4 --jobserver-auth=7 / 7, / 0x7,8 / (empty)",
            b" -j4 --jobserver-auth=7,",
            Err(NotFdPair),
        ),
        v(
            " -j4 --jobserver-auth=7 / 7, / 0x7,8 / (empty)",
            b" -j4 --jobserver-auth=0x7,8",
            Err(NotFdPair),
        ),
        v(
            " -j4 --jobserver-auth=7 / 7, / 0x7,8 / (empty)",
            b" -j4 --jobserver-auth=",
            Err(Empty),
        ),
        v(
            " -j4 --jobserver-auth=fifo:",
            b" -j4 --jobserver-auth=fifo:",
            Err(EmptyFifoPath),
        ),
        v(
            " -j4 --jobserver-auth=FIFO:P",
            b" -j4 --jobserver-auth=FIFO:/tmp/GMfifo8634",
            ok(
                Auth::Semaphore(b"FIFO:/tmp/GMfifo8634".to_vec()),
                limited(4),
                "",
            ),
        ),
        v(
            "-n -j4 --jobserver-auth=fifo:P",
            b"-n -j4 --jobserver-auth=fifo:/tmp/GMfifo8634",
            ok(fifo(), limited(4), "n"),
        ),
        v(
            "k --jobserver-auth=fifo:P",
            b"k --jobserver-auth=fifo:/tmp/GMfifo8634",
            ok(fifo(), Jobs::Unspecified, "k"),
        ),
        v(
            " -j1 --jobserver-auth=fifo:P",
            b" -j1 --jobserver-auth=fifo:/tmp/GMfifo8634",
            ok(fifo(), limited(1), ""),
        ),
        v(
            " -j4 --jobserver-auth=fifo:P where P is a regular file",
            b" -j4 --jobserver-auth=fifo:/tmp/GMfifo8634",
            ok(fifo(), limited(4), ""),
        ),
        v(
            " --unknown-opt=1 -j2",
            b" --unknown-opt=1 -j2",
            ok(Auth::None, limited(2), ""),
        ),
    ]
}

#[test]
fn every_protocol_vector_parses_as_specified() {
    let mut failures = Vec::new();
    let vectors = vectors();
    for vector in &vectors {
        let got = parse(vector.input);
        let passed = match (&vector.expect, &got) {
            (Expect::Ok(want), Ok(got)) => want == got,
            (Expect::Err(kind), Err(error)) => {
                // The error must name the option and the value it rejects.
                *kind == error.kind()
                    && error.option() == "--jobserver-auth"
                    && vector.input.ends_with(error.value())
                    && error
                        .to_string()
                        .contains(&*String::from_utf8_lossy(error.value()))
            }
            _ => false,
        };
        if !passed {
            failures.push(format!(
                "row `{}`, input {:?}: expected {:?}, got {:?}",
                vector.row,
                String::from_utf8_lossy(vector.input),
                vector.expect,
                got,
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The table in PROTOCOL.md §6 has 26 rows; some list several inputs.
    let rows: std::collections::BTreeSet<_> = vectors.iter().map(|v| v.row).collect();
    assert_eq!(rows.len(), 26, "a row of PROTOCOL.md §6 is missing");
}

#[test]
fn has_jobserver_matches_the_table() {
    for vector in vectors() {
        if let Expect::Ok(want) = &vector.expect {
            let got = parse(vector.input).unwrap();
            assert_eq!(
                got.has_jobserver(),
                want.auth != Auth::None,
                "row `{}`",
                vector.row
            );
        }
    }
}

/// What GNU make 4.4.1 exports in `MAKEFLAGS` for its debug options, observed
/// by running `.peers/bin/make-4.4.1 ARGS` on a rule that prints
/// `$$MAKEFLAGS` (the fifo number varies from run to run; it is `P` here).
/// Each entry is the command line, the observed value and whether make's
/// debug output was on.
const MAKE_4_4_1_DEBUG: &[(&str, &[u8], &str)] = &[
    ("-d", b"d", "d"),
    ("-kd", b"dk", "dk"),
    ("-snkid", b"dikns", "dikns"),
    ("-d -S", b"dS", "d"),
    ("--debug", b" --debug=basic", "d"),
    ("--debug=b", b" --debug=b", "d"),
    ("--debug=v,j", b" --debug=v,j", "d"),
    ("--debug=a", b" --debug=a", "d"),
    ("-d --debug=b", b"d --debug=b", "d"),
    // `n` (none) clears every level, `-d` included; make then drops the `d`.
    ("--debug=n", b" --debug=n", ""),
    ("-d --debug=n", b" --debug=n", ""),
    ("--debug=n -d", b" --debug=n", ""),
    ("--debug=b,n", b" --debug=b,n", ""),
    ("--debug=basic,none", b" --debug=basic,none", ""),
    ("--debug=b --debug=n", b" --debug=b --debug=n", ""),
    // make printed "Reading makefiles..." here: the last level decides.
    ("--debug=n,b", b" --debug=n,b", "d"),
    (
        "-d -j4",
        b"d -j4 --jobserver-auth=fifo:/tmp/GMfifo8634",
        "d",
    ),
    (
        "-dk -j4",
        b"dk -j4 --jobserver-auth=fifo:/tmp/GMfifo8634",
        "dk",
    ),
    (
        "--debug=b -j4",
        b" -j4 --debug=b --jobserver-auth=fifo:/tmp/GMfifo8634",
        "d",
    ),
];

#[test]
fn make_4_4_1_debug_values_parse_as_make_reads_them() {
    for &(args, value, letters) in MAKE_4_4_1_DEBUG {
        let got = parse(value).unwrap();
        let (auth, jobs) = if value.ends_with(P) {
            (fifo(), limited(4))
        } else {
            (Auth::None, Jobs::Unspecified)
        };
        let Expect::Ok(want) = ok(auth, jobs, letters) else {
            unreachable!()
        };
        assert_eq!(
            got,
            want,
            "`make {args}` exports {:?}",
            String::from_utf8_lossy(value)
        );
    }
}

/// make writes `d` first in its flag cluster and the cluster before `-jN`;
/// the encoders do the same, so a child make reads what its parent would
/// have written.
#[test]
fn encoders_write_the_debug_flag_where_make_does() {
    use jobserver_proto::makeflags::{encode_fifo_with_flags, encode_flags};
    for &(args, value, _) in MAKE_4_4_1_DEBUG {
        let flags = parse(value).unwrap();
        let cluster = encode_flags(&flags);
        if value.first().is_some_and(|&b| b != b' ') && !value.starts_with(b"dS") {
            // make's cluster, when it wrote one we can represent exactly.
            let first = value.split(|&b| b == b' ').next().unwrap();
            assert_eq!(cluster, first, "`make {args}`");
        }
        if value.ends_with(P) && value.starts_with(b"d") {
            let encoded = encode_fifo_with_flags(&flags, NonZeroUsize::new(4).unwrap(), P);
            assert_eq!(encoded, value, "`make {args}`");
        }
        assert_eq!(cluster.contains(&b'd'), flags.debug, "`make {args}`");
    }
}
