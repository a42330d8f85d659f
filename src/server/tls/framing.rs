//! RFC 6614 §3.4 framing: RADIUS packets back to back in the TLS stream, each as long as its
//! Length field says. The reader keeps what it has read between calls, so a read cancelled by
//! the idle timer or a shutdown loses nothing, and a slow sender's partial packet waits in the
//! buffer (never more than one packet's worth beyond it).

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

impl FrameError {
    /// Whether the peer sent what is not RADIUS, rather than the connection breaking.
    pub fn is_bad_packet(&self) -> bool {
        matches!(self, Self::BadLength(_))
    }
}

/// The bytes read so far and the packets in them: the framing without the reading, so that it
/// can be tested and fuzzed on its own.
#[derive(Debug, Default)]
pub struct Frames {
    buffer: Vec<u8>,
}

impl Frames {
    /// Octets to read next: the rest of the packet under way (its header, until its Length is in).
    pub fn wanted(&self) -> usize {
        let whole = match self.buffer.get(2..4) {
            Some(length) => usize::from(u16::from_be_bytes([length[0], length[1]])),
            None => HEADER_LEN,
        };
        whole.saturating_sub(self.buffer.len()).clamp(1, MAX_PACKET_LEN)
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Whether octets of a packet not yet whole are held.
    pub fn is_empty(&self) -> bool {
        self.buffer.is_empty()
    }

    /// The next whole packet, if one is in; an error when the Length field is out of bounds.
    pub fn next_packet(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let Some(length) = self.buffer.get(2..4) else { return Ok(None) };
        let length = usize::from(u16::from_be_bytes([length[0], length[1]]));
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

pub struct FrameReader<R> {
    stream: R,
    frames: Frames,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(stream: R) -> Self {
        Self { stream, frames: Frames::default() }
    }

    /// The next packet's bytes; `None` when the peer closed the stream between packets.
    /// Cancel-safe: only the read is awaited, and what it read is kept only once it is done.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        loop {
            if let Some(packet) = self.frames.next_packet()? {
                return Ok(Some(packet));
            }
            // No further than the rest of this packet: what follows stays in the TLS layer.
            let mut chunk = [0u8; MAX_PACKET_LEN];
            let want = self.frames.wanted();
            let n = self.stream.read(&mut chunk[..want]).await?;
            if n == 0 {
                return if self.frames.is_empty() { Ok(None) } else { Err(FrameError::Truncated) };
            }
            self.frames.push(&chunk[..n]);
        }
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

    /// A reader that has 2 octets ready, then makes its caller wait for ever.
    struct Stalls(bool);

    impl AsyncRead for Stalls {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            if self.0 {
                return std::task::Poll::Pending;
            }
            self.0 = true;
            buf.put_slice(&[1, 0]);
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_read_cancelled_while_it_waits_leaves_nothing_behind() {
        let mut reader = FrameReader::new(Stalls(false));
        for _ in 0..3 {
            let waited = tokio::time::timeout(std::time::Duration::from_millis(10), reader.next()).await;
            assert!(waited.is_err(), "nothing complete to return");
        }
        assert_eq!(reader.frames.buffer, [1, 0], "only what was read");
    }

    #[tokio::test]
    async fn a_bad_length_or_a_cut_packet_is_an_error() {
        for (bytes, bad) in [(packet(20, 0)[..10].to_vec(), "cut"), (vec![1, 0, 0, 19], "short"), (vec![1, 0, 0x10, 1], "long")] {
            let mut stream = tokio_test_stream(&bytes);
            let mut reader = FrameReader::new(&mut stream);
            assert!(reader.next().await.is_err(), "{bad}");
        }
    }

    fn tokio_test_stream(bytes: &[u8]) -> std::io::Cursor<Vec<u8>> {
        std::io::Cursor::new(bytes.to_vec())
    }
}
