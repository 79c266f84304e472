//! Planning a token pool for a server: what to preload, what the pipe must hold, and the
//! account at shutdown.

use std::fmt;
use std::num::NonZeroUsize;

use crate::machine::DEFAULT_TOKEN_BYTE;

/// The plan for a pool of `jobs` concurrent jobs.
///
/// The server's own process has an implicit slot like every client, so the pipe is preloaded
/// with `jobs - 1` bytes. The pipe must be able to hold all of them at once, or the preload
/// (and every later release) could block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolPlan {
    jobs: NonZeroUsize,
}

impl PoolPlan {
    /// Plans a pool of `jobs` for a pipe that can hold `capacity` bytes.
    ///
    /// # Errors
    ///
    /// [`PlanErrorKind::ZeroJobs`] for `jobs == 0`, and [`PlanErrorKind::ExceedsCapacity`]
    /// when `jobs - 1` bytes do not fit (the adapter should try to grow the pipe first and
    /// pass the capacity it got).
    pub fn new(jobs: usize, capacity: usize) -> Result<Self, PlanError> {
        let Some(jobs) = NonZeroUsize::new(jobs) else {
            return Err(PlanError {
                kind: PlanErrorKind::ZeroJobs,
                jobs: 0,
                capacity,
            });
        };
        if jobs.get() - 1 > capacity {
            return Err(PlanError {
                kind: PlanErrorKind::ExceedsCapacity,
                jobs: jobs.get(),
                capacity,
            });
        }
        Ok(PoolPlan { jobs })
    }

    /// The number of concurrent jobs, the `N` in `-jN`.
    pub fn jobs(&self) -> NonZeroUsize {
        self.jobs
    }

    /// How many token bytes to write into the pipe before any child starts.
    pub fn preload(&self) -> usize {
        self.jobs.get() - 1
    }

    /// The bytes to preload: [`PoolPlan::preload`] times `+`, the byte GNU make uses.
    pub fn preload_bytes(&self) -> Vec<u8> {
        vec![DEFAULT_TOKEN_BYTE; self.preload()]
    }

    /// Compares the tokens found in the pipe at shutdown with the preload.
    pub fn account(&self, returned: usize) -> Report {
        Report {
            expected: self.preload(),
            returned,
        }
    }
}

/// What kind of plan was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlanErrorKind {
    /// A pool needs at least one job.
    ZeroJobs,
    /// The pipe cannot hold `jobs - 1` bytes.
    ExceedsCapacity,
}

/// A refused [`PoolPlan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError {
    kind: PlanErrorKind,
    jobs: usize,
    capacity: usize,
}

impl PlanError {
    /// What was wrong.
    pub fn kind(&self) -> PlanErrorKind {
        self.kind
    }
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            PlanErrorKind::ZeroJobs => f.write_str("a jobserver pool needs at least 1 job; ask for -j1 or more"),
            PlanErrorKind::ExceedsCapacity => write!(
                f,
                "a pool of {} jobs needs {} token bytes in the pipe, but the pipe holds at most {}; \
                 ask for fewer jobs or raise /proc/sys/fs/pipe-max-size",
                self.jobs,
                self.jobs - 1,
                self.capacity
            ),
        }
    }
}

impl std::error::Error for PlanError {}

/// The account of a pool at shutdown: tokens expected back against tokens found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Tokens that should be in the pipe (the preload).
    pub expected: usize,
    /// Tokens found in the pipe.
    pub returned: usize,
}

impl Report {
    /// Tokens missing: taken by someone and never written back.
    pub fn lost(&self) -> usize {
        self.expected.saturating_sub(self.returned)
    }

    /// Tokens found beyond the preload: written by someone who never read them.
    pub fn extra(&self) -> usize {
        self.returned.saturating_sub(self.expected)
    }

    /// True when every token came back and none was added.
    pub fn is_balanced(&self) -> bool {
        self.expected == self.returned
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_balanced() {
            write!(f, "all {} jobserver tokens came back", self.expected)
        } else if self.lost() > 0 {
            write!(
                f,
                "{} of {} jobserver tokens were not returned (a child kept them or exited without writing them back)",
                self.lost(),
                self.expected
            )
        } else {
            write!(
                f,
                "{} jobserver tokens more than the {} handed out came back (a child wrote tokens it never read)",
                self.extra(),
                self.expected
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preload_is_jobs_minus_one() {
        let plan = PoolPlan::new(4, 65536).unwrap();
        assert_eq!(plan.preload(), 3);
        assert_eq!(plan.preload_bytes(), b"+++");
        assert_eq!(PoolPlan::new(1, 0).unwrap().preload(), 0);
    }

    #[test]
    fn refuses_what_the_pipe_cannot_hold() {
        assert_eq!(PoolPlan::new(65537, 65536).unwrap().preload(), 65536);
        let err = PoolPlan::new(65538, 65536).unwrap_err();
        assert_eq!(err.kind(), PlanErrorKind::ExceedsCapacity);
        assert!(err.to_string().contains("65537 token bytes"), "{err}");
        assert_eq!(
            PoolPlan::new(0, 10).unwrap_err().kind(),
            PlanErrorKind::ZeroJobs
        );
    }

    #[test]
    fn accounting() {
        let plan = PoolPlan::new(8, 100).unwrap();
        assert!(plan.account(7).is_balanced());
        assert_eq!(plan.account(5).lost(), 2);
        assert_eq!(plan.account(9).extra(), 2);
        assert!(plan.account(5).to_string().contains("2 of 7"));
    }
}
