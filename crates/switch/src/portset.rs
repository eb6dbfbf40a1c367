//! A fixed-size set of ports: flooding and multicast fan-out without allocation.

use crate::port::{PortId, MAX_PORTS};

const WORDS: usize = MAX_PORTS / 64;

/// A set of [`PortId`]s as a `MAX_PORTS`-bit bitmap (32 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct PortSet([u64; WORDS]);

impl PortSet {
    pub const EMPTY: PortSet = PortSet([0; WORDS]);

    /// A set with the one port `p`.
    #[inline]
    pub fn single(p: PortId) -> PortSet {
        let mut s = PortSet::EMPTY;
        s.insert(p);
        s
    }

    /// Adds `p`; ids at or above `MAX_PORTS` are ignored (they are never allocated).
    #[inline]
    pub fn insert(&mut self, p: PortId) {
        let i = p.index();
        if i < MAX_PORTS {
            self.0[i >> 6] |= 1 << (i & 63);
        }
    }

    #[inline]
    pub fn remove(&mut self, p: PortId) {
        let i = p.index();
        if i < MAX_PORTS {
            self.0[i >> 6] &= !(1 << (i & 63));
        }
    }

    #[inline]
    pub fn contains(&self, p: PortId) -> bool {
        let i = p.index();
        i < MAX_PORTS && self.0[i >> 6] & (1 << (i & 63)) != 0
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    #[inline]
    pub fn len(&self) -> usize {
        // Ports are allocated lowest id first, so sets of < 64 ports are the usual case.
        if self.0[1..].iter().all(|w| *w == 0) {
            word_len(self.0[0])
        } else {
            self.0.iter().map(|w| word_len(*w)).sum()
        }
    }

    /// Ports in both sets.
    #[inline]
    pub fn intersection(&self, other: &PortSet) -> PortSet {
        let mut out = *self;
        for (a, b) in out.0.iter_mut().zip(other.0.iter()) {
            *a &= *b;
        }
        out
    }

    /// Ports in either set.
    #[inline]
    pub fn union(&self, other: &PortSet) -> PortSet {
        let mut out = *self;
        for (a, b) in out.0.iter_mut().zip(other.0.iter()) {
            *a |= *b;
        }
        out
    }

    /// The only member, if the set has exactly one.
    #[inline]
    pub fn only(&self) -> Option<PortId> {
        if self.len() == 1 {
            self.iter().next()
        } else {
            None
        }
    }

    /// Members in ascending order.
    #[inline]
    pub fn iter(&self) -> PortSetIter {
        PortSetIter {
            words: self.0,
            word: 0,
        }
    }
}

impl core::fmt::Debug for PortSet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_set().entries(self.iter().map(|p| p.0)).finish()
    }
}

impl FromIterator<PortId> for PortSet {
    fn from_iter<I: IntoIterator<Item = PortId>>(iter: I) -> Self {
        let mut s = PortSet::EMPTY;
        for p in iter {
            s.insert(p);
        }
        s
    }
}

/// Members in one word. Baseline x86_64 has no POPCNT, so `count_ones` is a ~12
/// instruction bit-twiddle per word; the sets a decision makes are mostly empty words or
/// single ports (unicast), which this answers with a compare or two.
#[inline]
fn word_len(w: u64) -> usize {
    if w & w.wrapping_sub(1) == 0 {
        usize::from(w != 0)
    } else {
        w.count_ones() as usize
    }
}

/// Iterator over a [`PortSet`], lowest id first.
pub struct PortSetIter {
    words: [u64; WORDS],
    word: usize,
}

impl Iterator for PortSetIter {
    type Item = PortId;
    #[inline]
    // word < WORDS and bit < 64: the index is below MAX_PORTS, which fits a u16.
    #[allow(clippy::cast_possible_truncation)]
    fn next(&mut self) -> Option<PortId> {
        while self.word < WORDS {
            let w = self.words[self.word];
            if w != 0 {
                let bit = w.trailing_zeros() as usize;
                self.words[self.word] &= w - 1;
                return Some(PortId((self.word * 64 + bit) as u16));
            }
            self.word += 1;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_ops() {
        let mut s = PortSet::EMPTY;
        assert!(s.is_empty());
        for p in [0u16, 63, 64, 200, 255] {
            s.insert(PortId(p));
        }
        s.insert(PortId(256)); // out of range: ignored
        assert_eq!(s.len(), 5);
        assert_eq!(
            s.iter().map(|p| p.0).collect::<Vec<_>>(),
            vec![0, 63, 64, 200, 255]
        );
        s.remove(PortId(63));
        assert!(!s.contains(PortId(63)) && s.contains(PortId(64)));
        let t: PortSet = [PortId(64), PortId(1)].into_iter().collect();
        assert_eq!(s.intersection(&t).only(), Some(PortId(64)));
        assert_eq!(s.union(&t).len(), 5);
    }
}
