//! Prints what a client would make of this process's environment, then walks through the
//! token machine with an in-memory pipe of two tokens.
//!
//! ```text
//! cargo run -p jobserver-proto --example inspect
//! MAKEFLAGS='-j4 --jobserver-auth=fifo:/tmp/GMfifo1' cargo run -p jobserver-proto --example inspect
//! ```

use std::collections::VecDeque;

use jobserver_proto::makeflags::{self, Auth};
use jobserver_proto::{Action, Machine, Outcome};

fn main() {
    match makeflags::from_env(|name| std::env::var_os(name).map(|v| v.into_encoded_bytes())) {
        Ok(found) => {
            let var = found.var.map_or("none", |v| v.name());
            let auth = match &found.flags.auth {
                Auth::None => "no jobserver".to_string(),
                Auth::Pipe { read, write } => format!("pipe, fds {read},{write}"),
                Auth::Disabled { .. } => "disabled by make (the make rule needs `+`)".to_string(),
                Auth::Fifo(path) => format!("fifo {}", String::from_utf8_lossy(path)),
                Auth::Semaphore(name) => format!("semaphore {}", String::from_utf8_lossy(name)),
                other => format!("{other:?}"),
            };
            println!(
                "variable: {var}\njobserver: {auth}\njobs hint: {:?}",
                found.flags.jobs
            );
        }
        Err(err) => println!("error: {err}"),
    }

    println!("\nfour jobs against a pipe holding two tokens:");
    let mut pipe: VecDeque<u8> = VecDeque::from(b"ab".to_vec());
    let mut machine = Machine::new();
    let ids: Vec<_> = (0..4).map(|_| machine.acquire(1)).collect();
    while let Some(action) = machine.poll_action() {
        println!("  action: {action:?}");
        if let Action::Read { max } = action {
            let bytes: Vec<u8> = pipe.drain(..max.min(pipe.len())).collect();
            if bytes.is_empty() {
                machine.handle_would_block();
            } else {
                machine.handle_read(&bytes);
            }
        }
    }
    for id in ids {
        let state = match machine.take_outcome(id) {
            Outcome::Granted(permit) => {
                machine.release(permit);
                "granted, then released"
            }
            Outcome::Pending => "still waiting",
            _ => "failed",
        };
        println!("  request {}: {state}", id.index());
        while let Some(action) = machine.poll_action() {
            println!("    action: {action:?}");
        }
    }
}
