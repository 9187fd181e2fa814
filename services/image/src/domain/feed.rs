//! An upload's bytes as they arrive, read by a decoder on the blocking pool.
//!
//! The upload's task sends the chunks it receives into a bounded channel, and
//! [`Fed::End`] once the body is whole; the decoder reads them through [`Feed`],
//! which gives the decoder's [`Slot`] back while it waits for the next chunk. A
//! channel closed without [`Fed::End`] is an upload abandoned: reads fail, and the
//! decoder stops.
//!
//! Until the decoder knows it can inspect the image as it streams, the feed keeps
//! what it read ([`Feed::record`]): an image that needs its whole file after all is
//! spooled to a temporary file ([`Feed::spool`]) and inspected from there.

use std::io::{self, BufRead, Read, Seek, SeekFrom, Write};

use bytes::{Buf, Bytes};
use tokio::sync::mpsc;

use super::gate::Slot;

/// The most bytes kept while a decoder reads an image's header: past that, the
/// image is inspected from a spooled file instead (headers are a few kilobytes;
/// EXIF, ICC profiles and XMP a few hundred).
pub const MAX_RECORD: usize = 8 * 1024 * 1024;

/// What the upload's task sends.
#[derive(Debug)]
pub enum Fed {
    Chunk(Bytes),
    /// The body is whole.
    End,
}

pub struct Feed<'a> {
    chunks: mpsc::Receiver<Fed>,
    current: Bytes,
    ended: bool,
    /// The bytes read so far, while they may be needed again.
    record: Option<Vec<u8>>,
    /// The record outgrew [`MAX_RECORD`].
    overflowed: bool,
    position: u64,
    slot: &'a mut Slot,
}

fn abandoned() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "the upload was abandoned")
}

impl<'a> Feed<'a> {
    /// Reads `chunks`, recording until [`Feed::stop_recording`].
    pub fn new(chunks: mpsc::Receiver<Fed>, slot: &'a mut Slot) -> Self {
        Self {
            chunks,
            current: Bytes::new(),
            ended: false,
            record: Some(Vec::new()),
            overflowed: false,
            position: 0,
            slot,
        }
    }

    /// The decoder streams from here on: what it read is no longer kept.
    pub fn stop_recording(&mut self) {
        self.record = None;
    }

    /// Whether a read failed because the header outgrew [`MAX_RECORD`].
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Writes the whole upload to `out`: what was read (it must have been recorded),
    /// then the rest as it arrives. Holds no decode slot meanwhile.
    pub fn spool(mut self, out: &mut impl Write) -> io::Result<u64> {
        let record = self.record.take().ok_or_else(|| {
            io::Error::other("the feed did not record, so it cannot spool the upload")
        })?;
        self.slot.release();
        out.write_all(&record)?;
        let mut written = record.len() as u64;
        loop {
            if !self.current.is_empty() {
                out.write_all(&self.current)?;
                written += self.current.len() as u64;
                self.current.clear();
            }
            if !self.next_chunk(false)? {
                return Ok(written);
            }
        }
    }

    /// Waits for the next chunk into `current`; `false` at the end of the upload. With
    /// `work`, the decode slot is held when this returns.
    fn next_chunk(&mut self, work: bool) -> io::Result<bool> {
        while self.current.is_empty() {
            if self.ended {
                return Ok(false);
            }
            let next = match self.chunks.try_recv() {
                Ok(fed) => Some(fed),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    self.slot.release();
                    self.chunks.blocking_recv()
                }
            };
            match next {
                Some(Fed::Chunk(chunk)) => self.current = chunk,
                Some(Fed::End) => self.ended = true,
                None => return Err(abandoned()),
            }
        }
        if work {
            self.slot.hold();
        }
        Ok(true)
    }
}

impl BufRead for Feed<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.current.is_empty() {
            self.next_chunk(true)?;
        }
        if let Some(record) = &self.record
            && record.len() + self.current.len() > MAX_RECORD
        {
            self.overflowed = true;
            return Err(io::Error::other("the image's header is too long to stream"));
        }
        Ok(&self.current)
    }

    fn consume(&mut self, amount: usize) {
        let amount = amount.min(self.current.len());
        if let Some(record) = &mut self.record {
            record.extend_from_slice(&self.current[..amount]);
        }
        self.current.advance(amount);
        self.position += amount as u64;
    }
}

impl Read for Feed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // The common case first: JPEG decoders read a byte at a time.
        if self.record.is_none() && buf.len() <= self.current.len() {
            let amount = buf.len();
            buf.copy_from_slice(&self.current[..amount]);
            self.current.advance(amount);
            self.position += amount as u64;
            return Ok(amount);
        }
        let available = self.fill_buf()?;
        let amount = available.len().min(buf.len());
        buf[..amount].copy_from_slice(&available[..amount]);
        self.consume(amount);
        Ok(amount)
    }
}

/// Streams cannot go back: only the position can be asked (`png` wants `Seek` but
/// does not seek).
impl Seek for Feed<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        match to {
            SeekFrom::Current(0) => Ok(self.position),
            SeekFrom::Start(at) if at == self.position => Ok(self.position),
            _ => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "an upload being received cannot be read out of order",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::gate::DecodeGate;

    fn chunks(parts: &[&[u8]], end: bool) -> mpsc::Receiver<Fed> {
        let (sender, receiver) = mpsc::channel(parts.len() + 1);
        for part in parts {
            sender
                .try_send(Fed::Chunk(Bytes::copy_from_slice(part)))
                .expect("room");
        }
        if end {
            sender.try_send(Fed::End).expect("room");
        }
        receiver
    }

    #[tokio::test]
    async fn reads_chunks_in_order_and_spools_what_it_read_and_the_rest() {
        let gate = DecodeGate::new(1);
        let receiver = chunks(&[b"abc", b"", b"defg", b"hij"], true);
        let spooled = gate
            .spawn(move |slot| {
                let mut feed = Feed::new(receiver, slot);
                let mut head = [0u8; 5];
                feed.read_exact(&mut head).expect("read");
                assert_eq!(&head, b"abcde");
                assert_eq!(feed.stream_position().expect("position"), 5);
                let mut out = Vec::new();
                feed.spool(&mut out).expect("spool");
                out
            })
            .await
            .expect("decode");
        assert_eq!(spooled, b"abcdefghij");
    }

    #[tokio::test]
    async fn an_abandoned_upload_fails_reads_and_an_ended_one_reads_to_its_end() {
        let gate = DecodeGate::new(1);
        let abandoned = chunks(&[b"abc"], false);
        let ended = chunks(&[b"abc"], true);
        let (abandoned, ended) = gate
            .spawn(move |slot| {
                let mut all = Vec::new();
                let abandoned = Feed::new(abandoned, slot).read_to_end(&mut all).err();
                let mut all = Vec::new();
                let ended = Feed::new(ended, slot).read_to_end(&mut all).map(|_| all);
                (abandoned.map(|err| err.kind()), ended.ok())
            })
            .await
            .expect("decode");
        assert_eq!(abandoned, Some(io::ErrorKind::UnexpectedEof));
        assert_eq!(ended.as_deref(), Some(&b"abc"[..]));
    }

    #[tokio::test]
    async fn a_header_past_the_record_limit_stops_the_stream() {
        let gate = DecodeGate::new(1);
        let big = vec![7u8; MAX_RECORD / 2 + 1];
        let receiver = chunks(&[&big, &big], true);
        let (overflowed, stopped) = gate
            .spawn(move |slot| {
                let mut feed = Feed::new(receiver, slot);
                let mut all = Vec::new();
                let failed = feed.read_to_end(&mut all).is_err();
                (feed.overflowed(), failed)
            })
            .await
            .expect("decode");
        assert!(overflowed && stopped);
    }
}
