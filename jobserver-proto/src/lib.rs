//! The GNU make jobserver protocol as pure logic: no I/O, no environment, no clock.
//!
//! This crate reads no environment variable, opens no file, makes no system call and never
//! looks at a clock, and it has no `unsafe` code and no dependencies. It turns inputs (a
//! `MAKEFLAGS` value as bytes, "a byte was read", "the read would block", "the holder
//! released") into outputs (a parsed configuration, "read up to 3 bytes", "write back this
//! byte", "wake request 7"). Runtime adapters such as `jobserver-tokio` and `jobserver-smol`
//! own the file descriptors and carry the outputs out.
//!
//! - [`makeflags`]: parse `MAKEFLAGS`-style values ([`makeflags::parse`]), choose among the
//!   environment variables ([`makeflags::from_env`]) and encode values for children
//!   ([`makeflags::encode_pipe`], [`makeflags::encode_fifo`]).
//! - [`Machine`]: the token state machine of one process: the implicit slot, the explicit
//!   bytes held, a FIFO queue of requests.
//! - [`PoolPlan`]: what a server preloads, what its pipe must hold, how it is resized at
//!   run time ([`Resize`]), and its account at shutdown.
//!
//! # Driving the machine
//!
//! The methods of [`Machine`] come in four kinds, called in this order:
//!
//! 1. **commands** from the application: [`Machine::acquire`], [`Machine::cancel`],
//!    [`Machine::take_outcome`], [`Machine::take_partial`], [`Machine::release`],
//!    [`Machine::retry_writes`], [`Machine::set_policy`];
//! 2. **events** from the jobserver, each in answer to an action: [`Machine::handle_read`],
//!    [`Machine::handle_read_drained`], [`Machine::handle_would_block`],
//!    [`Machine::handle_readable`], [`Machine::handle_eof`], [`Machine::handle_read_error`],
//!    [`Machine::handle_write_error`];
//! 3. **output**: after every command or event, drain [`Machine::poll_action`] until it is
//!    `None`, carrying out each [`Action`] before feeding the next input;
//! 4. **getters**: [`Machine::stats`], [`Machine::is_closed`], [`Machine::failure`],
//!    [`Machine::has_pipe`], [`Machine::policy`].
//!
//! This example drives it with an in-memory pipe that holds two tokens, in a plain blocking
//! loop:
//!
//! ```
//! use std::collections::VecDeque;
//! use jobserver_proto::{Action, Machine, Outcome};
//!
//! let mut pipe: VecDeque<u8> = VecDeque::from(b"ab".to_vec());
//! let mut machine = Machine::new();
//!
//! // Carry out every action the machine asks for; return the requests it woke.
//! fn drain(machine: &mut Machine, pipe: &mut VecDeque<u8>) -> Vec<jobserver_proto::WaiterId> {
//!     let mut woken = Vec::new();
//!     while let Some(action) = machine.poll_action() {
//!         match action {
//!             Action::Read { max } => {
//!                 let n = max.min(pipe.len());
//!                 let bytes: Vec<u8> = pipe.drain(..n).collect();
//!                 if bytes.is_empty() {
//!                     // A real adapter now waits for readiness, then calls handle_readable.
//!                     machine.handle_would_block();
//!                 } else {
//!                     machine.handle_read(&bytes);
//!                 }
//!             }
//!             Action::Write(byte) => pipe.push_back(byte),
//!             Action::Grant(id) | Action::Fail(id, _) => woken.push(id),
//!         }
//!     }
//!     woken
//! }
//!
//! // Three jobs: the implicit slot needs no read, the other two each take a byte.
//! let ids: Vec<_> = (0..3).map(|_| machine.acquire(1)).collect();
//! let woken = drain(&mut machine, &mut pipe);
//! assert_eq!(woken, ids);
//! assert!(pipe.is_empty());
//!
//! let mut permits: Vec<_> = ids
//!     .iter()
//!     .map(|&id| match machine.take_outcome(id) {
//!         Outcome::Granted(permit) => permit,
//!         other => panic!("{other:?}"),
//!     })
//!     .collect();
//!
//! // A fourth job must wait: the pipe is empty.
//! let fourth = machine.acquire(1);
//! assert!(drain(&mut machine, &mut pipe).is_empty());
//! assert_eq!(machine.take_outcome(fourth), Outcome::Pending);
//!
//! // Releasing writes a byte back at once; the pipe becomes readable and the fourth job
//! // takes it.
//! machine.release(permits.pop().unwrap());
//! assert!(drain(&mut machine, &mut pipe).is_empty());
//! assert_eq!(pipe.len(), 1);
//! machine.handle_readable();
//! assert_eq!(drain(&mut machine, &mut pipe), vec![fourth]);
//! let Outcome::Granted(fourth) = machine.take_outcome(fourth) else { unreachable!() };
//!
//! // When everything is released, both bytes are back, exactly as they were read.
//! permits.push(fourth);
//! for permit in permits {
//!     machine.release(permit);
//!     drain(&mut machine, &mut pipe);
//! }
//! let mut back: Vec<u8> = pipe.into_iter().collect();
//! back.sort();
//! assert_eq!(back, b"ab");
//! ```
#![forbid(unsafe_code)]
#![doc(test(attr(deny(warnings))))]

mod machine;
pub mod makeflags;
mod server;

pub use machine::{
    Action, Failure, Machine, Outcome, Permit, ReleasePolicy, Stats, WaiterId, DEFAULT_TOKEN_BYTE,
    MAX_UNITS,
};
pub use server::{PlanError, PlanErrorKind, PoolPlan, Report, Resize};
