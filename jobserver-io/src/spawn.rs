//! Children that hold a token until they are reaped: libjobserver's "launch a job".

use std::io;
use std::process::{Child, Command, ExitStatus};

use crate::client::Client;
use crate::driver::{Reactor, Token};

/// A child process that holds a jobserver [`Token`] until it is reaped.
///
/// Made by [`Client::spawn_with_token`]. The token goes back when [`TokenChild::wait`]
/// returns, or when [`TokenChild::try_wait`] reports the exit; never while the child runs.
///
/// Dropping a `TokenChild` whose child still runs kills nothing and loses no token: a
/// detached thread waits for the child, reaps it and then gives the token back. (If that
/// thread cannot be started, the token goes back at once and the child is left to run.)
pub struct TokenChild<R: Reactor> {
    child: Option<Child>,
    token: Option<Token<R>>,
}

impl<R: Reactor> std::fmt::Debug for TokenChild<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenChild")
            .field("child", &self.child)
            .field("token", &self.token)
            .finish()
    }
}

impl<R: Reactor> Client<R> {
    /// Configures `cmd` to share this jobserver ([`Client::configure`]), spawns it, and ties
    /// `token` to the child: the token is held until the child is reaped.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = jobserver_io::blocking::Client::from_env_or_new(2)?;
    /// let token = client.acquire()?;
    /// let child = client.spawn_with_token(token, &mut std::process::Command::new("true"))?;
    /// assert!(child.wait()?.success()); // the token went back after the reap
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// When the spawn fails; the token is given back then.
    pub fn spawn_with_token(
        &self,
        token: Token<R>,
        cmd: &mut Command,
    ) -> io::Result<TokenChild<R>> {
        self.configure(cmd);
        let child = cmd.spawn()?;
        Ok(TokenChild {
            child: Some(child),
            token: Some(token),
        })
    }
}

impl<R: Reactor> TokenChild<R> {
    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child().id()
    }

    /// The child, for its pipes (`stdin`, `stdout`, `stderr`). Reaping it through this
    /// reference (its own `wait`) is allowed; the token then goes back when this value is
    /// dropped.
    pub fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("present until consumed")
    }

    fn child(&self) -> &Child {
        self.child.as_ref().expect("present until consumed")
    }

    /// The token the child holds, until it is reaped.
    pub fn token(&self) -> Option<&Token<R>> {
        self.token.as_ref()
    }

    /// Sends `SIGKILL` to the child. The token stays held until it is reaped.
    ///
    /// # Errors
    ///
    /// As [`Child::kill`].
    pub fn kill(&mut self) -> io::Result<()> {
        self.child_mut().kill()
    }

    /// Waits for the child to exit, reaps it, then gives the token back.
    ///
    /// # Errors
    ///
    /// As [`Child::wait`]; the token is given back either way.
    pub fn wait(mut self) -> io::Result<ExitStatus> {
        let status = self.child_mut().wait();
        drop(self.token.take());
        status
    }

    /// Reaps the child if it has exited, giving the token back then.
    ///
    /// # Errors
    ///
    /// As [`Child::try_wait`]; after an error the token is given back.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        match self.child_mut().try_wait() {
            Ok(None) => Ok(None),
            other => {
                drop(self.token.take());
                other
            }
        }
    }

    /// Takes the child and the token apart, ending the tie: the caller gives the token back.
    pub fn into_parts(mut self) -> (Child, Option<Token<R>>) {
        (
            self.child.take().expect("present until consumed"),
            self.token.take(),
        )
    }
}

impl<R: Reactor> Drop for TokenChild<R> {
    fn drop(&mut self) {
        let (Some(mut child), Some(token)) = (self.child.take(), self.token.take()) else {
            return;
        };
        if !matches!(child.try_wait(), Ok(None)) {
            return; // exited (or cannot be waited for): the token goes back now
        }
        let spawned = std::thread::Builder::new()
            .name("jobserver-reaper".into())
            .spawn(move || {
                let _ = child.wait();
                drop(token);
            });
        // If the thread could not start, its closure (and the token) is dropped here.
        drop(spawned);
    }
}
