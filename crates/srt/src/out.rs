//! Datagrams to send, written back to back into one buffer (a driver sends them with
//! one system call when it can).

/// Datagrams to send.
#[derive(Debug, Default)]
pub struct Outgoing {
    buf: Vec<u8>,
    ends: Vec<usize>,
}

impl Outgoing {
    pub fn new() -> Outgoing {
        Outgoing::default()
    }

    /// Adds a datagram: `write` appends its bytes.
    pub fn push(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        write(&mut self.buf);
        self.ends.push(self.buf.len());
    }

    /// Datagrams waiting.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The `i`-th datagram.
    pub fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.buf[start..self.ends[i]]
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len()).map(|i| self.get(i))
    }

    pub fn clear(&mut self) {
        self.buf.clear();
        self.ends.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_come_back_in_order() {
        let mut o = Outgoing::new();
        o.push(|b| b.extend_from_slice(b"one"));
        o.push(|b| b.extend_from_slice(b"three"));
        o.push(|_| {});
        assert_eq!(o.iter().collect::<Vec<_>>(), [&b"one"[..], b"three", b""]);
        o.clear();
        assert!(o.is_empty());
    }
}
