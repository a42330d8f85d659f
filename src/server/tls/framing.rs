//! RFC 6614 §3.4 framing: RADIUS packets back to back in the TLS stream, each as long as its
//! Length field says. The reader keeps what it has read between calls, so a read cancelled by
//! the idle timer or a shutdown loses nothing and adds nothing, and a slow sender's partial
//! packet waits in the buffer (never more than one packet's worth beyond it).

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::radius::MAX_PACKET_LEN;
use crate::radius::packet::HEADER_LEN;

/// Why the stream cannot be read as RADIUS packets any more.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// RFC 6613 §2.6.4: a Length under 20 or over 4096 leaves no packet boundary to trust.
    #[error("a packet's Length field says {0} (20 to 4096 allowed)")]
    BadLength(usize),
    #[error("the connection ended inside a packet")]
    Truncated,
    #[error("reading failed: {0}")]
    Io(#[from] std::io::Error),
}

pub struct FrameReader<R> {
    stream: R,
    buffer: Vec<u8>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(stream: R) -> Self {
        Self { stream, buffer: Vec::with_capacity(2 * MAX_PACKET_LEN) }
    }

    /// The next packet's bytes; `None` when the peer closed the stream between packets.
    /// Cancel-safe: only the read into the buffer is awaited.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        loop {
            if let Some(packet) = self.take_packet()? {
                return Ok(Some(packet));
            }
            // Read no further than the rest of this packet (or its header): what follows
            // stays in the TLS layer until asked for. `read_buf` appends only what it read,
            // when it read it: a read dropped while waiting leaves the buffer untouched (a
            // buffer grown first and filled by the read would keep the growth as zeros).
            let want = self.wanted().saturating_sub(self.buffer.len()).max(1);
            let n = (&mut self.stream).take(want as u64).read_buf(&mut self.buffer).await?;
            if n == 0 {
                return if self.buffer.is_empty() { Ok(None) } else { Err(FrameError::Truncated) };
            }
        }
    }

    /// How many octets the packet being read needs in all (its header's, until the Length is in).
    fn wanted(&self) -> usize {
        match self.buffer.get(2..4) {
            Some(length) => usize::from(u16::from_be_bytes([length[0], length[1]])),
            None => HEADER_LEN,
        }
    }

    fn take_packet(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        if self.buffer.len() < 4 {
            return Ok(None);
        }
        let length = self.wanted();
        if !(HEADER_LEN..=MAX_PACKET_LEN).contains(&length) {
            return Err(FrameError::BadLength(length));
        }
        if self.buffer.len() < length {
            return Ok(None);
        }
        let rest = self.buffer.split_off(length);
        Ok(Some(std::mem::replace(&mut self.buffer, rest)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(len: u16, fill: u8) -> Vec<u8> {
        let mut p = vec![fill; usize::from(len)];
        p[2..4].copy_from_slice(&len.to_be_bytes());
        p
    }

    #[tokio::test]
    async fn packets_back_to_back_and_split_across_reads_come_out_whole() {
        let (a, b) = (packet(20, 1), packet(300, 2));
        let mut stream = tokio_test_stream(&[&a[..3], &a[3..], &b[..100], &b[100..]].concat());
        let mut reader = FrameReader::new(&mut stream);
        assert_eq!(reader.next().await.unwrap().unwrap(), a);
        assert_eq!(reader.next().await.unwrap().unwrap(), b);
        assert!(reader.next().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_bad_length_or_a_cut_packet_is_an_error() {
        for (bytes, bad) in [(packet(20, 0)[..10].to_vec(), "cut"), (vec![1, 0, 0, 19], "short"), (vec![1, 0, 0x10, 1], "long")] {
            let mut stream = tokio_test_stream(&bytes);
            let mut reader = FrameReader::new(&mut stream);
            assert!(reader.next().await.is_err(), "{bad}");
        }
    }

    /// A read dropped while waiting (the connection's `select!` picked another branch: a
    /// request finished, the idle timer) must leave the buffer as it was: the next packet
    /// still comes out whole, with nothing in front of it.
    #[tokio::test]
    async fn a_read_cancelled_while_waiting_leaves_nothing_behind() {
        use tokio::io::AsyncWriteExt;
        let (mut client, server) = tokio::io::duplex(8192);
        let mut reader = FrameReader::new(server);
        let (a, b) = (packet(20, 1), packet(40, 2));
        for (cut, whole) in [(0, &a), (3, &b), (10, &a)] {
            client.write_all(&whole[..cut]).await.unwrap();
            let waited = tokio::time::timeout(std::time::Duration::from_millis(20), reader.next()).await;
            assert!(waited.is_err(), "nothing whole to read yet");
            client.write_all(&whole[cut..]).await.unwrap();
            assert_eq!(&reader.next().await.unwrap().unwrap(), whole, "cut at {cut}");
        }
    }

    fn tokio_test_stream(bytes: &[u8]) -> std::io::Cursor<Vec<u8>> {
        std::io::Cursor::new(bytes.to_vec())
    }
}
