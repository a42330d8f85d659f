//! A bounds-checked cursor over received bytes.
//!
//! Every read returns `Option`, so a truncated or lying packet can only ever produce a decode
//! error, never an out-of-bounds panic (the shape of rustls's `msgs/codec.rs`).

/// Reads big-endian values from a borrowed buffer, front to back.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, offset: 0 }
    }

    /// Bytes already consumed.
    pub fn offset(&self) -> usize {
        self.offset
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.offset
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Takes the next `len` bytes, or nothing if fewer remain.
    pub fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let end = self.offset.checked_add(len)?;
        let slice = self.buf.get(self.offset..end)?;
        self.offset = end;
        Some(slice)
    }

    pub fn rest(&mut self) -> &'a [u8] {
        let slice = self.buf.get(self.offset..).unwrap_or_default();
        self.offset = self.buf.len();
        slice
    }

    pub fn u8(&mut self) -> Option<u8> {
        self.take(1).and_then(|b| b.first().copied())
    }

    pub fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([*b.first()?, *b.get(1)?]))
    }

    pub fn u32(&mut self) -> Option<u32> {
        let b: [u8; 4] = self.take(4)?.try_into().ok()?;
        Some(u32::from_be_bytes(b))
    }

    pub fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stop_at_the_end_without_panicking() {
        let mut r = Reader::new(&[1, 0, 2, 0xde, 0xad]);
        assert_eq!(r.u8(), Some(1));
        assert_eq!(r.u16(), Some(2));
        assert_eq!(r.u32(), None, "only two bytes remain");
        assert_eq!(r.remaining(), 2, "a failed read consumes nothing");
        assert_eq!(r.take(usize::MAX), None);
        assert_eq!(r.rest(), &[0xde, 0xad]);
        assert!(r.is_empty());
        assert_eq!(r.u8(), None);
    }
}
