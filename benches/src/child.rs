//! What a bench and `bench-child` say to each other.
//!
//! The bench writes control bytes to the child's stdin (one `g` per round; end-of-file means
//! quit). The child writes fixed-size [`Record`]s to its stdout. A record is shorter than
//! `PIPE_BUF`, so records of several children sharing one pipe never interleave.

use std::io::{self, Read};
use std::os::fd::BorrowedFd;

use rustix::time::{clock_gettime, ClockId};

/// Bytes in an encoded [`Record`].
pub const RECORD_LEN: usize = 40;

/// The control byte that starts a round.
pub const GO: u8 = b'g';

/// What a record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    /// The child is waiting for a token (its acquire was polled and is pending).
    Ready,
    /// The child got a token; `values[0]` is `CLOCK_MONOTONIC` in nanoseconds just after.
    Got,
    /// Final counters: readiness wake-ups, would-block reads, reads with bytes, tokens got.
    Counts,
}

impl Tag {
    fn byte(self) -> u8 {
        match self {
            Tag::Ready => 1,
            Tag::Got => 2,
            Tag::Counts => 3,
        }
    }

    fn from_byte(b: u8) -> Option<Tag> {
        match b {
            1 => Some(Tag::Ready),
            2 => Some(Tag::Got),
            3 => Some(Tag::Counts),
            _ => None,
        }
    }
}

/// One message from a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// What it says.
    pub tag: Tag,
    /// Which child (for benches that run several).
    pub id: u8,
    /// The figures; meaning per [`Tag`].
    pub values: [u64; 4],
}

impl Record {
    /// A record with these values.
    pub fn new(tag: Tag, id: u8, values: [u64; 4]) -> Record {
        Record { tag, id, values }
    }

    /// The wire form.
    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let mut out = [0u8; RECORD_LEN];
        out[0] = self.tag.byte();
        out[1] = self.id;
        for (i, v) in self.values.iter().enumerate() {
            out[8 + 8 * i..16 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Parses the wire form.
    ///
    /// # Errors
    ///
    /// An unknown tag.
    pub fn decode(bytes: &[u8; RECORD_LEN]) -> io::Result<Record> {
        let tag = Tag::from_byte(bytes[0]).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad record tag {}", bytes[0]),
            )
        })?;
        let mut values = [0u64; 4];
        for (i, v) in values.iter_mut().enumerate() {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[8 + 8 * i..16 + 8 * i]);
            *v = u64::from_le_bytes(word);
        }
        Ok(Record {
            tag,
            id: bytes[1],
            values,
        })
    }

    /// Sends the record with a single `write` (atomic on a pipe).
    ///
    /// # Errors
    ///
    /// When the write fails.
    pub fn send(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        jobserver_io::sys::write_all(fd, &self.encode())
    }

    /// Reads one record.
    ///
    /// # Errors
    ///
    /// End-of-file (the child died) or a malformed record.
    pub fn receive(reader: &mut impl Read) -> io::Result<Record> {
        let mut bytes = [0u8; RECORD_LEN];
        reader.read_exact(&mut bytes)?;
        Record::decode(&bytes)
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: the same clock in every process of the machine.
pub fn monotonic_ns() -> u64 {
    let t = clock_gettime(ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}
