//! Bounded capture of one output stream: the first `head` bytes, a ring of
//! the last `tail` bytes after them, and the total count. Memory never grows
//! past `head + tail`, whatever the worker writes.

use std::collections::VecDeque;

#[derive(Debug)]
pub struct HeadTail {
    head_cap: usize,
    tail_cap: usize,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: u64,
}

impl HeadTail {
    pub fn new(head_cap: usize, tail_cap: usize) -> HeadTail {
        HeadTail {
            head_cap,
            tail_cap,
            head: Vec::new(),
            // Taken once, at its final size, when the first byte reaches it:
            // grown by doubling it would settle at twice `tail` (a ring that
            // never fills keeps its pages untouched: only what is written
            // counts in the shim's RSS).
            tail: VecDeque::new(),
            total: 0,
        }
    }

    pub fn push(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len() as u64;
        if self.head.len() < self.head_cap {
            let take = bytes.len().min(self.head_cap - self.head.len());
            self.head.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        }
        if self.tail_cap == 0 || bytes.is_empty() {
            return;
        }
        if self.tail.capacity() < self.tail_cap {
            self.tail.reserve_exact(self.tail_cap - self.tail.len());
        }
        if bytes.len() >= self.tail_cap {
            self.tail.clear();
            self.tail.extend(&bytes[bytes.len() - self.tail_cap..]);
            return;
        }
        let overflow = (self.tail.len() + bytes.len()).saturating_sub(self.tail_cap);
        self.tail.drain(..overflow);
        self.tail.extend(bytes);
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn head(&self) -> &[u8] {
        &self.head
    }

    /// The tail in order, made contiguous in place (no copy is kept).
    pub fn tail(&mut self) -> &[u8] {
        self.tail.make_contiguous()
    }

    /// True when bytes between the head and the tail were dropped.
    pub fn truncated(&self) -> bool {
        self.total > (self.head.len() + self.tail.len()) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(cap: &mut HeadTail, data: &[u8], chunk: usize) {
        for c in data.chunks(chunk.max(1)) {
            cap.push(c);
        }
    }

    #[test]
    fn small_streams_are_kept_whole() {
        let mut c = HeadTail::new(8, 8);
        feed(&mut c, b"0123456789", 3);
        assert_eq!(c.head(), b"01234567");
        assert_eq!(c.tail(), b"89");
        assert!(!c.truncated());
        assert_eq!(c.total(), 10);
    }

    #[test]
    fn large_streams_keep_first_and_last_bytes_whatever_the_chunking() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        for chunk in [1, 7, 64, 4096, 20_000] {
            let mut c = HeadTail::new(100, 300);
            feed(&mut c, &data, chunk);
            assert_eq!(c.head(), &data[..100]);
            assert_eq!(c.tail(), &data[data.len() - 300..]);
            assert!(c.truncated());
            assert_eq!(c.total(), 10_000);
        }
    }

    #[test]
    fn zero_caps_count_only() {
        let mut c = HeadTail::new(0, 0);
        feed(&mut c, b"abc", 1);
        assert!(c.head().is_empty() && c.tail().is_empty());
        assert_eq!(c.total(), 3);
        assert!(c.truncated());
    }
}
