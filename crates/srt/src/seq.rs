//! Sequence numbers: 31 bits that wrap, compared within half their range.

use std::fmt;

/// The largest sequence number.
pub const SEQ_MAX: u32 = 0x7fff_ffff;

/// A data packet's sequence number (31 bits, wrapping).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeqNo(u32);

impl SeqNo {
    /// The low 31 bits of `v`.
    pub const fn new(v: u32) -> SeqNo {
        SeqNo(v & SEQ_MAX)
    }

    pub const fn get(self) -> u32 {
        self.0
    }

    /// `n` packets later.
    pub const fn add(self, n: u32) -> SeqNo {
        SeqNo(self.0.wrapping_add(n) & SEQ_MAX)
    }

    /// `n` packets earlier.
    pub const fn sub(self, n: u32) -> SeqNo {
        SeqNo(self.0.wrapping_sub(n) & SEQ_MAX)
    }

    /// How many packets `later` comes after `self`: negative when it comes before.
    /// Numbers more than 2^30 apart are taken the short way round the wrap.
    pub const fn offset_to(self, later: SeqNo) -> i32 {
        let d = later.0.wrapping_sub(self.0) & SEQ_MAX;
        if d > 0x3fff_ffff {
            (d as i64 - 0x8000_0000) as i32
        } else {
            d as i32
        }
    }
}

impl fmt::Debug for SeqNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_go_the_short_way_round_the_wrap() {
        let a = SeqNo::new(SEQ_MAX - 1);
        assert_eq!(a.add(3), SeqNo::new(1));
        assert_eq!(a.offset_to(SeqNo::new(1)), 3);
        assert_eq!(SeqNo::new(1).offset_to(a), -3);
        assert_eq!(SeqNo::new(1).sub(3), a);
        assert_eq!(SeqNo::new(5).offset_to(SeqNo::new(5)), 0);
        assert_eq!(
            SeqNo::new(0).offset_to(SeqNo::new(0x3fff_ffff)),
            0x3fff_ffff
        );
        assert_eq!(
            SeqNo::new(0).offset_to(SeqNo::new(0x4000_0000)),
            -0x4000_0000
        );
    }
}
