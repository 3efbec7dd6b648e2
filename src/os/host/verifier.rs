//! The host model's verifier: the ownership rules a real kernel punishes
//! (NetAdapterCx's verifier bugchecks, WSK corrupts memory), recorded instead
//! of crashing, so that a test can list every broken rule at the end.
//!
//! One [`Verifier`] is shared (behind an `Arc`) by the NetAdapterCx model,
//! the WSK model and the test. Besides violations it keeps two ledgers:
//! *loans* (something handed to the other side that must come back exactly
//! once: an RX ReturnContext, a retained WSK indication list) and *released
//! memory* (address ranges that nothing may point into any more).

use core::fmt;
use core::hash::{BuildHasherDefault, Hasher};
use core::ops::Range;
use std::collections::{BTreeMap, HashSet};
use std::string::String;
use std::sync::{Arc, Mutex, MutexGuard};
use std::vec::Vec;

/// Violations kept in full; later ones are only counted (a broken driver in
/// a loop would otherwise fill memory).
pub const MAX_RECORDED_VIOLATIONS: usize = 256;

/// Which side of the adapter a violation concerns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QueueKind {
    Rx,
    Tx,
    /// Not a queue: ledgers, the WSK model, the test.
    Adapter,
}

/// The rule that was broken; one meaning each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rule {
    /// A BeginIndex moved backwards.
    IndexBackwards,
    /// A BeginIndex moved past EndIndex, or is not a ring index at all.
    BeginPastEnd,
    /// A BeginIndex moved outside any callback into the driver.
    IndexMovedOutsideCallback,
    /// The driver wrote a ring or extension element it did not own.
    UnownedWrite,
    /// The driver wrote stride padding or the tail of a ring allocation.
    PaddingWrite,
    /// The driver wrote a ring header field other than BeginIndex,
    /// NextIndex and Scratch.
    RingHeaderWrite,
    /// Something was lent again while still outstanding (an RX ReturnContext
    /// indicated twice: it would be returned twice).
    LentTwice,
    /// Something was given back that is no longer outstanding.
    ReturnedTwice,
    /// Something was given back that was never lent.
    ReturnedNotLent,
    /// An indicated RX packet NetAdapterCx drops: FragmentCount 0, Capacity
    /// over MaximumFrameSize, Offset + ValidLength over Capacity, a
    /// non-first fragment with Offset ≠ 0, a null VirtualAddress.
    InvalidRxPacket,
    /// Offset, ValidLength or Capacity still holds the verifier's all-ones
    /// poison: Advance did not write it.
    UnwrittenRxField,
    /// An indicated fragment with a zero ReturnContext.
    ZeroReturnContext,
    /// A packet's fragments are not among those returned in the same
    /// Advance, or overlap or precede the previous packet's.
    RxFragmentOutOfOrder,
    /// A packet marked Ignore was otherwise modified ("don't fill then
    /// ignore": its buffers would never be returned).
    IgnoredPacketModified,
    /// A TX packet or fragment field other than Scratch changed.
    TxFieldModified,
    /// OS-owned TX payload memory changed (before or after completion).
    TxPayloadModified,
    /// The driver gave back fragments of a TX packet it still owns.
    TxFragmentsReturnedEarly,
    /// The driver holds no TX packet but keeps fragments: TX stalls.
    TxFragmentStall,
    /// A fragment points into memory registered as released.
    ReleasedMemory,
    /// A notification of a queue that does not exist (not created yet, or
    /// stopped and destroyed).
    NotifyWithoutQueue,
    /// The upper layer did not return its buffers before the stop timeout.
    UpperLayerTimeout,
    /// Stop could not finish: the rings never emptied, or a callback hung.
    StopTimeout,
}

/// One broken rule, with what and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub rule: Rule,
    pub queue: QueueKind,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:?}] {:?}: {}", self.queue, self.rule, self.message)
    }
}

/// What kind of thing is lent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LoanKind {
    /// An RX fragment's ReturnContext: lent when indicated, back when the
    /// OS calls EvtAdapterReturnRxBuffer.
    RxReturnContext,
    /// A WSK datagram indication list the driver retained (STATUS_PENDING):
    /// back at WskRelease.
    IndicationList,
    /// Anything else a test or model wants to account.
    Other(&'static str),
}

/// Something lent and not given back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Leak {
    pub kind: LoanKind,
    pub id: usize,
}

/// Loan ids are handles and addresses the model itself hands out, not
/// attacker input: a multiply-xor hash instead of SipHash (two lookups per
/// packet).
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
}

type Ids = BuildHasherDefault<IdHasher>;

#[derive(Default)]
struct State {
    violations: Vec<Violation>,
    unrecorded: u64,
    outstanding: HashSet<(LoanKind, usize), Ids>,
    ever_lent: HashSet<(LoanKind, usize), Ids>,
    /// Disjoint released ranges, start → end: every datagram indicated
    /// and released goes through here, so lookups stay logarithmic.
    released: BTreeMap<usize, usize>,
}

/// The shared record of violations, loans and released memory.
#[derive(Default)]
pub struct Verifier {
    state: Mutex<State>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.lock();
        f.debug_struct("Verifier")
            .field("violations", &(s.violations.len() as u64 + s.unrecorded))
            .field("outstanding", &s.outstanding.len())
            .finish()
    }
}

impl Verifier {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the record from the others.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a violation.
    pub fn report(&self, queue: QueueKind, rule: Rule, message: String) {
        let mut s = self.lock();
        if s.violations.len() < MAX_RECORDED_VIOLATIONS {
            s.violations.push(Violation { rule, queue, message });
        } else {
            s.unrecorded += 1;
        }
    }

    /// Every recorded violation, in order.
    pub fn violations(&self) -> Vec<Violation> {
        self.lock().violations.clone()
    }

    /// How many recorded violations broke `rule`.
    pub fn count(&self, rule: Rule) -> usize {
        self.lock().violations.iter().filter(|v| v.rule == rule).count()
    }

    /// Whether `rule` was broken at least once.
    pub fn has(&self, rule: Rule) -> bool {
        self.count(rule) > 0
    }

    /// `id` of `kind` goes to the other side; it must come back exactly once.
    pub fn lend(&self, queue: QueueKind, kind: LoanKind, id: usize) {
        let mut s = self.lock();
        if !s.outstanding.insert((kind, id)) {
            drop(s);
            self.report(queue, Rule::LentTwice, std::format!("{kind:?} {id:#x} lent again while still outstanding"));
            return;
        }
        s.ever_lent.insert((kind, id));
    }

    /// `id` of `kind` comes back.
    pub fn give_back(&self, queue: QueueKind, kind: LoanKind, id: usize) {
        let mut s = self.lock();
        if s.outstanding.remove(&(kind, id)) {
            return;
        }
        let (rule, what) = if s.ever_lent.contains(&(kind, id)) {
            (Rule::ReturnedTwice, "given back twice")
        } else {
            (Rule::ReturnedNotLent, "given back but never lent")
        };
        drop(s);
        self.report(queue, rule, std::format!("{kind:?} {id:#x} {what}"));
    }

    /// [`Verifier::give_back`] of each of `ids`, under one lock (a batch of
    /// returns, as NetAdapterCx makes them).
    pub fn give_back_all(&self, queue: QueueKind, kind: LoanKind, ids: &[usize]) {
        let mut s = self.lock();
        for &id in ids {
            if s.outstanding.remove(&(kind, id)) {
                continue;
            }
            let (rule, what) = if s.ever_lent.contains(&(kind, id)) {
                (Rule::ReturnedTwice, "given back twice")
            } else {
                (Rule::ReturnedNotLent, "given back but never lent")
            };
            if s.violations.len() < MAX_RECORDED_VIOLATIONS {
                s.violations.push(Violation { rule, queue, message: std::format!("{kind:?} {id:#x} {what}") });
            } else {
                s.unrecorded += 1;
            }
        }
    }

    /// Whether `id` of `kind` is lent and not back.
    pub fn is_outstanding(&self, kind: LoanKind, id: usize) -> bool {
        self.lock().outstanding.contains(&(kind, id))
    }

    /// Everything lent and not given back, sorted.
    pub fn leaks(&self) -> Vec<Leak> {
        let mut leaks: Vec<Leak> = self.lock().outstanding.iter().map(|&(kind, id)| Leak { kind, id }).collect();
        leaks.sort();
        leaks
    }

    /// Nothing may point into `range` any more (a WSK list was released, a
    /// buffer freed). A fragment indicated into it is a violation.
    pub fn mark_released(&self, range: Range<usize>) {
        if range.is_empty() {
            return;
        }
        let mut s = self.lock();
        subtract(&mut s.released, &range);
        s.released.insert(range.start, range.end);
    }

    /// `range` is live memory again (reallocated, newly indicated).
    pub fn mark_live(&self, range: Range<usize>) {
        subtract(&mut self.lock().released, &range);
    }

    /// The first released range that `range` overlaps, if any.
    pub fn released_overlap(&self, range: Range<usize>) -> Option<Range<usize>> {
        let s = self.lock();
        if range.is_empty() {
            // An empty fragment still points somewhere: into a range that
            // strictly contains its position.
            let around = s.released.range(..range.start).next_back().filter(|(_, end)| **end > range.start);
            return around.map(|(&start, &end)| start..end);
        }
        // The range starting at or before `range` may reach into it; else
        // the first one starting inside it.
        let before = s.released.range(..=range.start).next_back().filter(|(_, end)| **end > range.start);
        let inside = || s.released.range(range.start..range.end).next();
        before.or_else(inside).map(|(&start, &end)| start..end)
    }

    /// Panics listing every violation and every leak, if there are any.
    pub fn assert_clean(&self) {
        let s = self.lock();
        if s.violations.is_empty() && s.outstanding.is_empty() {
            return;
        }
        let mut text = String::new();
        for v in &s.violations {
            text.push_str(&std::format!("  {v}\n"));
        }
        if s.unrecorded > 0 {
            text.push_str(&std::format!("  ... and {} more violations\n", s.unrecorded));
        }
        let mut leaks: Vec<_> = s.outstanding.iter().collect();
        leaks.sort();
        for (kind, id) in leaks {
            text.push_str(&std::format!("  leak: {kind:?} {id:#x} never given back\n"));
        }
        drop(s);
        panic!("host model verifier found problems:\n{text}");
    }
}

/// Removes `cut` from the disjoint `ranges`, splitting where needed.
fn subtract(ranges: &mut BTreeMap<usize, usize>, cut: &Range<usize>) {
    if cut.is_empty() {
        return;
    }
    // The usual case: a whole receive buffer, released before, live again.
    // Ranges are disjoint, so nothing else overlaps it.
    if ranges.get(&cut.start) == Some(&cut.end) {
        ranges.remove(&cut.start);
        return;
    }
    // Each round takes the last range starting before cut.end; once it ends
    // at or before cut.start, no earlier one can overlap (they are
    // disjoint). Each round removes one overlapping range: bounded by their
    // number.
    while let Some((&start, &end)) = ranges.range(..cut.end).next_back() {
        if end <= cut.start {
            break;
        }
        ranges.remove(&start);
        if cut.end < end {
            ranges.insert(cut.end, end);
        }
        if start < cut.start {
            ranges.insert(start, cut.start);
            break;
        }
    }
}

/// The address range of a slice, for [`Verifier::mark_released`] and
/// [`Verifier::mark_live`].
pub fn address_range<T>(slice: &[T]) -> Range<usize> {
    let start = slice.as_ptr() as usize;
    start..start + core::mem::size_of_val(slice)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loans_come_back_exactly_once() {
        let v = Verifier::new();
        v.lend(QueueKind::Rx, LoanKind::RxReturnContext, 7);
        v.lend(QueueKind::Rx, LoanKind::RxReturnContext, 7);
        v.give_back(QueueKind::Rx, LoanKind::RxReturnContext, 7);
        v.give_back(QueueKind::Rx, LoanKind::RxReturnContext, 7);
        v.give_back(QueueKind::Rx, LoanKind::RxReturnContext, 9);
        let rules: Vec<_> = v.violations().iter().map(|x| x.rule).collect();
        assert_eq!(rules, [Rule::LentTwice, Rule::ReturnedTwice, Rule::ReturnedNotLent]);
        v.lend(QueueKind::Adapter, LoanKind::IndicationList, 1);
        assert_eq!(v.leaks(), [Leak { kind: LoanKind::IndicationList, id: 1 }]);
        // Re-lending after a give-back is fine.
        v.give_back(QueueKind::Adapter, LoanKind::IndicationList, 1);
        v.lend(QueueKind::Adapter, LoanKind::IndicationList, 1);
        v.give_back(QueueKind::Adapter, LoanKind::IndicationList, 1);
        assert!(v.leaks().is_empty());
        assert_eq!(v.violations().len(), 3);
    }

    #[test]
    fn released_ranges_split_and_heal() {
        let v = Verifier::new();
        v.mark_released(100..200);
        assert_eq!(v.released_overlap(150..151), Some(100..200));
        assert_eq!(v.released_overlap(200..300), None);
        v.mark_live(120..130);
        assert_eq!(v.released_overlap(121..129), None);
        assert_eq!(v.released_overlap(129..131), Some(130..200));
        assert_eq!(v.released_overlap(90..101), Some(100..120));
        v.mark_live(0..1000);
        assert_eq!(v.released_overlap(0..1000), None);
    }

    #[test]
    #[should_panic(expected = "leak: RxReturnContext 0x5")]
    fn assert_clean_lists_leaks() {
        let v = Verifier::new();
        v.lend(QueueKind::Rx, LoanKind::RxReturnContext, 5);
        v.assert_clean();
    }
}
