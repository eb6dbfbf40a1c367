//! The reorder window of a lent TX ring ([`crate::TxRing`]): chains in pop (avail) order,
//! completed in any order, handed to the used ring in pop order.
//!
//! Why in order: after a back-end crash the frontend knows only the used index, and
//! QEMU's vhost-user-net rewinds the ring's last avail index to it on reconnect (it keeps
//! no in-flight record). With used entries in pop order the used index is exactly "every
//! chain before this avail position is done", so the rewind re-offers only chains that
//! were not reported yet (virtio 1.2 §2.7.8 allows any order; this order is the one that
//! survives a restart).
//!
//! One slot per ring entry, allocated when the ring is lent: nothing is allocated per
//! frame, and the window never holds more chains than the ring has entries (the pop
//! stops when it is full, [`Window::room`]). A slot holds the head index (below the
//! queue size, at most 32768, so 15 bits, §2.7) and a done bit.

/// The done bit of a slot; the low 15 bits are the chain's head index.
const DONE: u16 = 0x8000;

/// Chains popped and not yet published, oldest first.
#[derive(Debug)]
pub(crate) struct Window {
    slots: Vec<u16>,
    /// Slot of the oldest chain (the next used entry).
    front: usize,
    /// Chains in the window.
    len: usize,
    /// Sequence number of the oldest chain: chains are numbered in pop order from 0 and
    /// a chain's token is its number, so a stale or repeated token is recognised (a u64
    /// never wraps).
    published: u64,
}

impl Window {
    /// A window for a ring of `size` entries.
    pub(crate) fn new(size: usize) -> Window {
        Window {
            slots: vec![0; size],
            front: 0,
            len: 0,
            published: 0,
        }
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<u16>()
    }

    /// Chains in the window (popped, not yet published).
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Chains that can still be pushed.
    pub(crate) fn room(&self) -> usize {
        self.slots.len() - self.len
    }

    /// Whether `head` can be held in a slot (it leaves the done bit clear).
    pub(crate) fn fits(&self, head: u16) -> bool {
        head & DONE == 0
    }

    fn slot(&self, offset: usize) -> usize {
        // offset < len <= slots.len(), so front + offset < 2 * slots.len().
        let i = self.front + offset;
        if i >= self.slots.len() {
            i - self.slots.len()
        } else {
            i
        }
    }

    /// Appends a chain in flight; returns its token. The caller checked [`room`](Self::room)
    /// and [`fits`](Self::fits); a push into a full window is refused with `u64::MAX`
    /// (a token that never completes anything).
    pub(crate) fn push(&mut self, head: u16) -> u64 {
        if self.room() == 0 || !self.fits(head) {
            return u64::MAX;
        }
        let i = self.slot(self.len);
        self.slots[i] = head;
        let token = self.published + self.len as u64;
        self.len += 1;
        token
    }

    /// Appends a chain that is already done (dropped at pop).
    pub(crate) fn push_done(&mut self, head: u16) {
        let t = self.push(head);
        self.complete(t);
    }

    /// Marks chain `token` done. False for a token that is not in flight (unknown,
    /// published, or completed already).
    pub(crate) fn complete(&mut self, token: u64) -> bool {
        let Some(off) = token.checked_sub(self.published) else {
            return false;
        };
        let Ok(off) = usize::try_from(off) else {
            return false;
        };
        if off >= self.len {
            return false;
        }
        let i = self.slot(off);
        let s = &mut self.slots[i];
        if *s & DONE != 0 {
            return false;
        }
        *s |= DONE;
        true
    }

    /// Whether the oldest chain is done (the next [`pop_done`](Self::pop_done) returns it).
    pub(crate) fn publishable(&self) -> bool {
        self.len > 0 && self.slots[self.front] & DONE != 0
    }

    /// Takes the oldest chain if it is done: its head, for the next used entry.
    pub(crate) fn pop_done(&mut self) -> Option<u16> {
        if !self.publishable() {
            return None;
        }
        let head = self.slots[self.front] & !DONE;
        self.front = self.slot(1);
        self.len -= 1;
        self.published += 1;
        Some(head)
    }

    /// Takes the newest chain, done or not: its head (a packed ring puts its chains
    /// back newest first, [`crate::packed::PackedState::unpop`]).
    pub(crate) fn pop_newest(&mut self) -> Option<u16> {
        if self.len == 0 {
            return None;
        }
        let head = self.slots[self.slot(self.len - 1)] & !DONE;
        self.len -= 1;
        Some(head)
    }

    /// Drops the done chains at the front without publishing them (the ring was re-set).
    pub(crate) fn discard_done(&mut self) {
        while self.pop_done().is_some() {}
    }

    /// Forgets every chain (the ring was rewound over them).
    pub(crate) fn clear(&mut self) {
        self.published += self.len as u64;
        self.front = 0;
        self.len = 0;
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test code: small literal sizes
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Pushes `n` chains with heads `100 + i`, completes them in `order`, publishing
    /// after each completion; returns the published heads.
    fn run(n: usize, order: &[usize]) -> Vec<u16> {
        let mut w = Window::new(n);
        let heads: Vec<u16> = (0..n).map(|i| 100 + i as u16).collect();
        let tokens: Vec<u64> = heads.iter().map(|&h| w.push(h)).collect();
        assert_eq!(w.room(), 0);
        let mut out = Vec::new();
        for (k, &i) in order.iter().enumerate() {
            assert!(w.complete(tokens[i]));
            assert!(!w.complete(tokens[i]), "a second completion is ignored");
            while let Some(h) = w.pop_done() {
                out.push(h);
            }
            // Published = the longest completed prefix of the pop order.
            let mut done: Vec<usize> = order[..=k].to_vec();
            done.sort_unstable();
            let prefix = done.iter().enumerate().take_while(|(a, b)| a == *b).count();
            assert_eq!(out.len(), prefix);
        }
        assert_eq!(w.len(), 0);
        out
    }

    #[test]
    fn reverse_completions_publish_in_pop_order() {
        let order: Vec<usize> = (0..8).rev().collect();
        assert_eq!(run(8, &order), (100..108).collect::<Vec<u16>>());
    }

    #[test]
    fn the_window_wraps_and_stale_tokens_complete_nothing() {
        let mut w = Window::new(4);
        let mut next = 0u64;
        for round in 0..10u16 {
            let a = w.push(round);
            let b = w.push(round + 1000);
            assert_eq!((a, b), (next, next + 1));
            next += 2;
            assert!(w.complete(b));
            assert_eq!(w.pop_done(), None, "b waits for a");
            assert!(w.complete(a));
            assert_eq!(w.pop_done(), Some(round));
            assert_eq!(w.pop_done(), Some(round + 1000));
            assert!(!w.complete(a) && !w.complete(b) && !w.complete(next + 5));
        }
        assert!(!w.complete(u64::MAX));
    }

    #[test]
    fn a_full_window_refuses_more_and_a_drop_is_done_at_once() {
        let mut w = Window::new(2);
        w.push_done(7);
        let t = w.push(8);
        assert_eq!(w.push(9), u64::MAX);
        assert_eq!(w.pop_done(), Some(7));
        assert_eq!(w.pop_done(), None);
        assert!(w.complete(t));
        assert_eq!(w.pop_done(), Some(8));
        assert!(!w.fits(DONE) && w.fits(DONE - 1));
    }

    #[test]
    fn clear_forgets_chains_and_their_tokens() {
        let mut w = Window::new(4);
        let t = w.push(1);
        w.push_done(2);
        w.clear();
        assert_eq!((w.len(), w.room()), (0, 4));
        assert!(!w.complete(t));
        let u = w.push(3);
        assert_eq!(u, 2, "numbering continues");
        assert!(w.complete(u));
        assert_eq!(w.pop_done(), Some(3));
    }

    proptest! {
        /// Any completion order publishes every chain once, in pop order.
        #[test]
        fn any_completion_order_publishes_in_pop_order(
            order in (1usize..64).prop_flat_map(|n| Just((0..n).collect::<Vec<_>>()).prop_shuffle())
        ) {
            let n = order.len();
            prop_assert_eq!(run(n, &order), (100..100 + n as u16).collect::<Vec<u16>>());
        }

        /// Interleaved pushes and completions on a small window that wraps many times.
        #[test]
        fn interleaved_pushes_and_completions_keep_pop_order(
            ops in proptest::collection::vec((any::<bool>(), any::<u8>()), 1..400)
        ) {
            let mut w = Window::new(8);
            let mut pushed: Vec<(u64, u16)> = Vec::new();
            let mut live: Vec<u64> = Vec::new();
            let mut out = Vec::new();
            let mut head = 0u16;
            for (push, pick) in ops {
                if push && w.room() > 0 {
                    let t = w.push(head);
                    pushed.push((t, head));
                    live.push(t);
                    head = (head + 1) & (DONE - 1);
                } else if !live.is_empty() {
                    let t = live.swap_remove(usize::from(pick) % live.len());
                    prop_assert!(w.complete(t));
                }
                while let Some(h) = w.pop_done() {
                    out.push(h);
                }
                prop_assert!(w.len() <= 8);
            }
            let expect: Vec<u16> = pushed.iter().map(|&(_, h)| h).take(out.len()).collect();
            prop_assert_eq!(out, expect);
        }
    }
}
