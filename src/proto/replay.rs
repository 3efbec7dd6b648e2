//! Replay protection on receive: the sliding packet-id window of
//! ovpn-dco-win, for 32-bit ids ([`ReplayWindow`]) and for the 48-bit counter
//! of one epoch key ([`EpochReplayWindow`]).
//!
//! # The rules
//! The algorithm is ovpn-dco-win's `OvpnPktidRecvVerify` (pktid.cpp), itself
//! taken from the out-of-tree Linux ovpn-dco `pktid.c` and kept in the
//! upstream Linux driver as `ovpn_pktid_recv` (drivers/net/ovpn/pktid.c).
//! OpenVPN peers using ovpn-dco-win see exactly this behaviour. State: the
//! highest id accepted so far (`highest`, 0 before the first packet), which
//! ids of the last [`REPLAY_WINDOW`] were accepted, a backtrack floor
//! (`floor`, initially 0) and the time of the last accepted packet.
//!
//! For each packet id, at time `now` (whole seconds, monotonic), in order:
//! 1. **Time rule.** If no packet was accepted in the last
//!    [`TIME_BACKTRACK_SECS`] seconds (`now - last_accept >= 30`, or nothing
//!    was ever accepted), the floor is raised to `highest`. The floor only
//!    changes here; it does not follow `highest` in between. (A clock that
//!    went backwards counts as no time passing.)
//! 2. Id 0 is rejected ([`ReplayError::ZeroId`]).
//! 3. An id above `highest` is accepted and becomes `highest`. The window
//!    slides with it: ids skipped over count as not yet seen; a jump of
//!    [`REPLAY_WINDOW`] or more forgets every earlier id. Forward ids are
//!    never subject to the floor.
//! 4. An id at or below `highest` ("backtrack"):
//!    - `highest - id >= REPLAY_WINDOW` is rejected ([`ReplayError::TooOld`]),
//!      i.e. ids `highest - 2047 ..= highest` are in the window;
//!    - `id <= floor` is rejected ([`ReplayError::BacktrackExpired`]): after
//!      30 s of silence, no packet older than the newest one seen before the
//!      silence is accepted any more, even if it is inside the window and
//!      unseen;
//!    - an id already accepted is rejected ([`ReplayError::Replayed`]);
//!    - otherwise it is accepted and marked as seen.
//! 5. Only an accepted packet restarts the 30-second timer; rejections leave
//!    it alone.
//!
//! So the window never wraps: once `highest` is `u32::MAX` only older ids can
//! be accepted (the sender stops long before, see
//! [`super::packet_id::PACKET_ID_TX_LIMIT`]).
//!
//! Sources and differences:
//! - ovpn-dco-win pktid.h: `REPLAY_WINDOW_ORDER 8` → 256 bytes of history →
//!   2048 ids; pktid.cpp: `PKTID_RECV_EXPIRE` is 30 s in tick counts, the
//!   floor is set when `now - Expire >= 0` and `Expire = now + 30 s` after
//!   each accepted packet. ovpn-dco-win applies the time rule before the
//!   zero check, upstream Linux after; the outcome is the same.
//! - Linux ovpn pktid.h: `PKTID_RECV_EXPIRE (30 * HZ)`, "if no packets
//!   received for this length of time, set a backtrack floor at highest
//!   received packet ID thus far". Linux also takes a packet time for the
//!   long id form, always 0 with AEAD; there is no such field here.
//! - OpenVPN itself (packet_id.c, without DCO) uses a different window:
//!   `--replay-window` default 64 ids (`DEFAULT_SEQ_BACKTRACK`) with per-id
//!   timestamps expired after 15 s (`DEFAULT_TIME_BACKTRACK`). Under DCO the
//!   driver does the check, so the rules above are what a peer meets.
//!
//! Time is whole seconds, so "30 s" is judged at one-second granularity
//! instead of ovpn-dco-win's clock ticks.
//!
//! # Epoch keys
//! OpenVPN 2.7 (crypto_epoch.c) keeps one receive window per epoch key, the
//! current one and the retiring one; `epoch_replace_update_recv_key` moves
//! the current window to the retiring key (`packet_id_move_recv`) and starts
//! the new current key with a fresh one. It uses the same `packet_id_rec`
//! and `--replay-window` settings as for 32-bit ids, time rule included.
//! ovpn-dco-win 2.8 (crypto.cpp `OvpnCryptoCheckReplay`) likewise keeps
//! `Pktid` and `PktidRetiring` per key and checks epoch packets with the same
//! `OvpnPktidRecvVerify`: 2048 ids and the 30 s floor. [`EpochReplayWindow`]
//! therefore applies exactly the rules above to the 48-bit counter of one
//! epoch; the caller routes each packet to its epoch's window and moves a
//! window with its key (the value is moved or copied as a whole).
//!
//! One deliberate difference: ovpn-dco-win checks the whole 64-bit id
//! (epoch ‖ counter), so its zero check can never fire for a valid epoch and
//! counter 0 would be accepted once. OpenVPN masks the id to the counter
//! (`packet_id_read_epoch`) and rejects 0 (`packet_id_test`), and no sender
//! emits it (counters restart at 1). We reject counter 0 as OpenVPN does.
//! Within one epoch every other decision is identical, since all ids a window
//! sees share the same top 16 bits.
//!
//! # Cost
//! The window is a fixed 2048-bit bitmap inside the value (no allocation).
//! A check is O(1); accepting is O(1) except a forward slide, which clears
//! the skipped ids a word at a time (at most 33 words).

use core::fmt;

use super::packet_id::EPOCH_COUNTER_MAX;

/// Ids tracked behind the highest one accepted.
///
/// ovpn-dco-win pktid.h: `REPLAY_WINDOW_SIZE`, 2^`REPLAY_WINDOW_ORDER` (8)
/// bytes of history, 8 ids a byte.
pub const REPLAY_WINDOW: u32 = 2048;

/// Seconds without an accepted packet after which backtracking below the
/// highest id seen so far stops.
///
/// ovpn-dco-win pktid.cpp and Linux drivers/net/ovpn/pktid.h:
/// `PKTID_RECV_EXPIRE`, 30 seconds.
pub const TIME_BACKTRACK_SECS: u64 = 30;

const WORD_BITS: usize = u64::BITS as usize;
const WORDS: usize = REPLAY_WINDOW as usize / WORD_BITS;
const WINDOW: u64 = REPLAY_WINDOW as u64;

const _: () = assert!(REPLAY_WINDOW.is_power_of_two() && WORDS * WORD_BITS == REPLAY_WINDOW as usize);

/// Why a packet id is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayError {
    /// Id 0: no sender ever uses it.
    ZeroId,
    /// The id was already accepted.
    Replayed,
    /// The id is [`REPLAY_WINDOW`] or more behind the highest accepted one.
    TooOld,
    /// An id at or below the backtrack floor, which was raised because no
    /// packet was accepted for [`TIME_BACKTRACK_SECS`].
    BacktrackExpired,
    /// An epoch counter wider than 48 bits (cannot come from an
    /// [`super::packet_id::EpochPacketId`]).
    OutOfRange,
}

/// Replay window over the 32-bit packet ids of one key (standard AEAD
/// layout). See the module documentation for the rules.
#[derive(Clone, PartialEq, Eq)]
pub struct ReplayWindow(Window);

impl ReplayWindow {
    /// The window of a fresh key: nothing seen yet.
    pub const fn new() -> Self {
        Self(Window::new())
    }

    /// Would `id` be accepted at `now_secs`? Changes nothing, so it can run
    /// before decryption; [`Self::accept`] must still follow once the packet
    /// is authenticated.
    pub fn check(&self, id: u32, now_secs: u64) -> Result<(), ReplayError> {
        self.0.check(u64::from(id), now_secs)
    }

    /// Checks `id` as [`Self::check`] does and, if it is acceptable, records
    /// it. Call only for authenticated packets.
    pub fn accept(&mut self, id: u32, now_secs: u64) -> Result<(), ReplayError> {
        self.0.accept(u64::from(id), now_secs)
    }

    /// The highest id accepted so far; 0 before the first.
    pub fn highest(&self) -> u32 {
        // Only u32 ids ever reach the inner window.
        u32::try_from(self.0.highest).unwrap_or(u32::MAX)
    }
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ReplayWindow").field(&self.0).finish()
    }
}

/// Replay window over the 48-bit packet counter of one epoch key. Same rules
/// as [`ReplayWindow`] (see the module documentation), plus counters wider
/// than 48 bits are [`ReplayError::OutOfRange`].
#[derive(Clone, PartialEq, Eq)]
pub struct EpochReplayWindow(Window);

impl EpochReplayWindow {
    /// The window of a fresh epoch key: nothing seen yet.
    pub const fn new() -> Self {
        Self(Window::new())
    }

    /// Would `counter` be accepted at `now_secs`? Changes nothing.
    pub fn check(&self, counter: u64, now_secs: u64) -> Result<(), ReplayError> {
        if counter > EPOCH_COUNTER_MAX {
            return Err(ReplayError::OutOfRange);
        }
        self.0.check(counter, now_secs)
    }

    /// Checks `counter` as [`Self::check`] does and, if it is acceptable,
    /// records it. Call only for authenticated packets.
    pub fn accept(&mut self, counter: u64, now_secs: u64) -> Result<(), ReplayError> {
        if counter > EPOCH_COUNTER_MAX {
            return Err(ReplayError::OutOfRange);
        }
        self.0.accept(counter, now_secs)
    }

    /// The highest counter accepted so far; 0 before the first.
    pub fn highest(&self) -> u64 {
        self.0.highest
    }
}

impl Default for EpochReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for EpochReplayWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("EpochReplayWindow").field(&self.0).finish()
    }
}

/// The rules over ids of up to 48 bits held in a u64, so no arithmetic here
/// can overflow (`highest + 1` included).
#[derive(Clone, PartialEq, Eq)]
struct Window {
    /// Bit `id % REPLAY_WINDOW`: whether `id` was accepted, for the ids
    /// `highest - (REPLAY_WINDOW - 1) ..= highest`. Bits of ids outside that
    /// range are stale and never read.
    seen: [u64; WORDS],
    highest: u64,
    /// Backtracked ids must be above this to be accepted.
    floor: u64,
    /// When the last packet was accepted; `None` before the first.
    last_accept: Option<u64>,
}

/// How an acceptable id changes the window.
enum Accepted {
    /// Above `highest`: the window slides.
    Ahead,
    /// Inside the window and not seen yet.
    Backfill,
}

impl Window {
    const fn new() -> Self {
        Self { seen: [0; WORDS], highest: 0, floor: 0, last_accept: None }
    }

    /// The floor in force at `now`: rule 1.
    fn floor_at(&self, now: u64) -> u64 {
        let silent = match self.last_accept {
            None => true,
            // A clock that went backwards counts as no time passed.
            Some(last) => now.saturating_sub(last) >= TIME_BACKTRACK_SECS,
        };
        if silent { self.highest } else { self.floor }
    }

    /// Rules 2 to 4.
    fn judge(&self, id: u64, floor: u64) -> Result<Accepted, ReplayError> {
        if id == 0 {
            return Err(ReplayError::ZeroId);
        }
        if id > self.highest {
            return Ok(Accepted::Ahead);
        }
        if self.highest - id >= WINDOW {
            return Err(ReplayError::TooOld);
        }
        if id <= floor {
            return Err(ReplayError::BacktrackExpired);
        }
        if self.is_seen(id) {
            return Err(ReplayError::Replayed);
        }
        Ok(Accepted::Backfill)
    }

    fn check(&self, id: u64, now: u64) -> Result<(), ReplayError> {
        self.judge(id, self.floor_at(now)).map(|_| ())
    }

    fn accept(&mut self, id: u64, now: u64) -> Result<(), ReplayError> {
        // As in ovpn-dco-win, the floor is raised even if the packet is then
        // refused.
        self.floor = self.floor_at(now);
        match self.judge(id, self.floor)? {
            Accepted::Ahead => self.slide_to(id),
            Accepted::Backfill => self.mark(id),
        }
        self.last_accept = Some(now);
        Ok(())
    }

    /// Makes `id` (above `highest`) the new highest, forgetting what fell out
    /// of the window and marking the ids skipped over as unseen.
    fn slide_to(&mut self, id: u64) {
        let ahead = id - self.highest;
        if ahead >= WINDOW {
            self.seen = [0; WORDS];
        } else {
            // ahead - 1 < REPLAY_WINDOW ids: highest + 1 ..= id - 1.
            self.clear_from(slot(self.highest + 1), (ahead - 1) as usize);
        }
        self.highest = id;
        self.mark(id);
    }

    /// Clears `count` (< REPLAY_WINDOW) bits starting at bit position `start`,
    /// wrapping around the ring, one word at a time.
    fn clear_from(&mut self, start: usize, count: usize) {
        let mut pos = start;
        let mut left = count;
        // Each round clears to the end of a word or finishes: at most
        // WORDS + 1 rounds.
        while left > 0 {
            let bit = pos % WORD_BITS;
            let n = left.min(WORD_BITS - bit);
            let mask = if n == WORD_BITS { u64::MAX } else { ((1u64 << n) - 1) << bit };
            self.seen[(pos / WORD_BITS) % WORDS] &= !mask;
            left -= n;
            pos = (pos + n) % REPLAY_WINDOW as usize;
        }
    }

    fn is_seen(&self, id: u64) -> bool {
        let pos = slot(id);
        self.seen[pos / WORD_BITS] & (1 << (pos % WORD_BITS)) != 0
    }

    fn mark(&mut self, id: u64) {
        let pos = slot(id);
        self.seen[pos / WORD_BITS] |= 1 << (pos % WORD_BITS);
    }
}

/// Bit position of `id` in the ring; below REPLAY_WINDOW, so every index
/// derived from it is in bounds.
fn slot(id: u64) -> usize {
    (id % WINDOW) as usize
}

impl fmt::Debug for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Window")
            .field("highest", &self.highest)
            .field("floor", &self.floor)
            .field("last_accept", &self.last_accept)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeSet;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    use ReplayError::*;

    const W: u32 = REPLAY_WINDOW;

    fn accept_all(w: &mut ReplayWindow, ids: impl IntoIterator<Item = u32>, now: u64) {
        for id in ids {
            assert_eq!(w.accept(id, now), Ok(()), "id {id}");
        }
    }

    #[test]
    fn zero_id_is_refused() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.check(0, 0), Err(ZeroId));
        assert_eq!(w.accept(0, 0), Err(ZeroId));
        accept_all(&mut w, 1..=10, 0);
        assert_eq!(w.accept(0, 0), Err(ZeroId));
        assert_eq!(w.highest(), 10);
    }

    #[test]
    fn in_order_ids_are_accepted_once() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.highest(), 0);
        accept_all(&mut w, 1..=5000, 7);
        assert_eq!(w.highest(), 5000);
        assert_eq!(w.accept(5000, 7), Err(Replayed));
        assert_eq!(w.accept(4000, 7), Err(Replayed));
        assert_eq!(w.accept(5000 - (W - 1), 7), Err(Replayed));
        assert_eq!(w.accept(5000 - W, 7), Err(TooOld));
        assert_eq!(w.accept(1, 7), Err(TooOld));
    }

    #[test]
    fn reordered_ids_inside_the_window_are_accepted_once() {
        let mut w = ReplayWindow::new();
        accept_all(&mut w, [3000, 2999, 1000, 2500, 953], 0);
        // 953 = 3000 - 2047 is the oldest id the window still covers.
        assert_eq!(w.accept(952, 0), Err(TooOld));
        for id in [3000, 2999, 1000, 2500, 953] {
            assert_eq!(w.accept(id, 0), Err(Replayed));
        }
        accept_all(&mut w, [954, 2998], 0);
        assert_eq!(w.accept(1, 0), Err(TooOld));
    }

    #[test]
    fn a_first_id_above_one_leaves_the_earlier_ids_acceptable() {
        let mut w = ReplayWindow::new();
        accept_all(&mut w, [5, 2, 4, 1, 3], 0);
        for id in 1..=5 {
            assert_eq!(w.accept(id, 0), Err(Replayed));
        }
    }

    #[test]
    fn sliding_forgets_ids_that_left_the_window() {
        let mut w = ReplayWindow::new();
        accept_all(&mut w, 1..=W, 0);
        // The skipped ids 2049..=2057 reuse the bits of 1..=9, which were set.
        accept_all(&mut w, [W + 10], 0);
        accept_all(&mut w, (W + 1)..(W + 10), 0);
        // The window is now 11 ..= 2058.
        assert_eq!(w.accept(11, 0), Err(Replayed), "still inside the window");
        assert_eq!(w.accept(12, 0), Err(Replayed));
        assert_eq!(w.accept(10, 0), Err(TooOld));
        // A slide of exactly REPLAY_WINDOW - 1 keeps only the old highest.
        let mut w = ReplayWindow::new();
        accept_all(&mut w, 1..=100, 0);
        accept_all(&mut w, [100 + W - 1], 0);
        assert_eq!(w.accept(100, 0), Err(Replayed));
        accept_all(&mut w, 101..(100 + W - 1), 0);
        assert_eq!(w.accept(99, 0), Err(TooOld));
    }

    #[test]
    fn far_ahead_jump_clears_the_window() {
        let mut w = ReplayWindow::new();
        accept_all(&mut w, 1..=100, 0);
        accept_all(&mut w, [100 + W], 0);
        assert_eq!(w.accept(100, 0), Err(TooOld));
        accept_all(&mut w, 101..(100 + W), 0);
        let mut w = ReplayWindow::new();
        accept_all(&mut w, 1..=3000, 0);
        accept_all(&mut w, [1_000_000], 0);
        accept_all(&mut w, (1_000_000 - (W - 1))..1_000_000, 0);
        assert_eq!(w.accept(1_000_000 - W, 0), Err(TooOld));
        assert_eq!(w.accept(3000, 0), Err(TooOld));
    }

    #[test]
    fn ids_near_u32_max_do_not_wrap() {
        let mut w = ReplayWindow::new();
        accept_all(&mut w, [1, u32::MAX - 1, u32::MAX], 0);
        assert_eq!(w.highest(), u32::MAX);
        assert_eq!(w.accept(u32::MAX, 0), Err(Replayed));
        assert_eq!(w.accept(u32::MAX - 1, 0), Err(Replayed));
        // The "next" id after u32::MAX would be 0 on the wire, and 1 is far
        // behind: no wrap-around path exists.
        assert_eq!(w.accept(0, 0), Err(ZeroId));
        assert_eq!(w.accept(1, 0), Err(TooOld));
        assert_eq!(w.accept(2, 0), Err(TooOld));
        accept_all(&mut w, [u32::MAX - (W - 1)], 0);
        assert_eq!(w.accept(u32::MAX - W, 0), Err(TooOld));
    }

    #[test]
    fn backtrack_stops_after_thirty_seconds_without_an_accepted_packet() {
        let mut w = ReplayWindow::new();
        accept_all(&mut w, [10], 100);
        // 29 s later the gap below 10 is still open.
        accept_all(&mut w, [5], 129);
        // Last acceptance at 129: at 158 still open, at 159 the floor is 10.
        accept_all(&mut w, [6], 158);
        assert_eq!(w.check(7, 188), Err(BacktrackExpired));
        assert_eq!(w.check(10, 188), Err(BacktrackExpired), "floor beats replay");
        assert_eq!(w.check(11, 188), Ok(()));
        assert_eq!(w.accept(7, 188), Err(BacktrackExpired));
        // Forward ids are never subject to the floor.
        accept_all(&mut w, [12], 188);
        assert_eq!(w.accept(9, 188), Err(BacktrackExpired));
        assert_eq!(w.accept(10, 188), Err(BacktrackExpired));
        // Above the floor, backtracking works again and the floor stays put.
        accept_all(&mut w, [11, 20, 13], 190);
        assert_eq!(w.accept(8, 200), Err(BacktrackExpired));
        // The next silence moves the floor up to the new highest (20).
        assert_eq!(w.accept(19, 220), Err(BacktrackExpired));
        accept_all(&mut w, [21], 220);
        assert_eq!(w.accept(14, 221), Err(BacktrackExpired));
    }

    #[test]
    fn refused_packets_do_not_restart_the_timer() {
        let mut w = ReplayWindow::new();
        accept_all(&mut w, [10], 0);
        assert_eq!(w.accept(10, 20), Err(Replayed));
        assert_eq!(w.accept(0, 25), Err(ZeroId));
        assert_eq!(w.check(9, TIME_BACKTRACK_SECS - 1), Ok(()));
        assert_eq!(w.accept(9, TIME_BACKTRACK_SECS), Err(BacktrackExpired));
    }

    #[test]
    fn check_changes_nothing() {
        let mut w = ReplayWindow::new();
        accept_all(&mut w, [10, 12], 0);
        let before = w.clone();
        assert_eq!(w.check(11, 0), Ok(()));
        assert_eq!(w.check(13, 0), Ok(()));
        assert_eq!(w.check(11, 1000), Err(BacktrackExpired));
        assert_eq!(w, before);
        // And accept agrees with it afterwards.
        assert_eq!(w.accept(11, 0), Ok(()));
    }

    #[test]
    fn extreme_clock_values_do_not_overflow() {
        let mut w = ReplayWindow::new();
        accept_all(&mut w, [5, 3], u64::MAX - 1);
        accept_all(&mut w, [4], u64::MAX);
        // A clock that jumps back is treated as no time passing...
        accept_all(&mut w, [2], 0);
        // ...and the next jump forward is a long silence.
        assert_eq!(w.accept(1, u64::MAX), Err(BacktrackExpired));
    }

    #[test]
    fn epoch_window_applies_the_same_rules_to_48_bit_counters() {
        let max = EPOCH_COUNTER_MAX;
        let mut w = EpochReplayWindow::new();
        assert_eq!(w.accept(0, 0), Err(ZeroId));
        assert_eq!(w.accept(max + 1, 0), Err(OutOfRange));
        assert_eq!(w.check(u64::MAX, 0), Err(OutOfRange));
        assert_eq!(w.accept(1, 0), Ok(()));
        assert_eq!(w.accept(1, 0), Err(Replayed));
        assert_eq!(w.accept(max - 1, 0), Ok(()));
        assert_eq!(w.accept(max, 0), Ok(()));
        assert_eq!(w.highest(), max);
        assert_eq!(w.accept(max, 0), Err(Replayed));
        assert_eq!(w.accept(1, 0), Err(TooOld));
        assert_eq!(w.accept(max - u64::from(W - 1), 0), Ok(()));
        assert_eq!(w.accept(max - u64::from(W), 0), Err(TooOld));
        assert_eq!(w.accept(max - 2, TIME_BACKTRACK_SECS), Err(BacktrackExpired));
        assert_eq!(w.accept(max + 1, 0), Err(OutOfRange));
    }

    #[test]
    fn windows_are_fixed_size_values() {
        // No heap behind them: everything is inline.
        // 2048 bits of history, highest, floor, last acceptance time.
        assert_eq!(core::mem::size_of::<ReplayWindow>(), 256 + 8 + 8 + 16);
        assert_eq!(core::mem::size_of::<EpochReplayWindow>(), 256 + 8 + 8 + 16);
    }

    // --- Property tests against a literal model of the rules ---

    /// The module-level rules, applied as written, over the set of every id
    /// ever accepted.
    struct Model {
        accepted: BTreeSet<u64>,
        highest: u64,
        floor: u64,
        last_accept: Option<u64>,
        max: u64,
    }

    impl Model {
        fn new(max: u64) -> Self {
            Self { accepted: BTreeSet::new(), highest: 0, floor: 0, last_accept: None, max }
        }

        fn accept(&mut self, id: u64, now: u64) -> Result<(), ReplayError> {
            if id > self.max {
                return Err(OutOfRange);
            }
            let silent = match self.last_accept {
                None => true,
                Some(t) => now >= t + TIME_BACKTRACK_SECS,
            };
            if silent {
                self.floor = self.highest;
            }
            if id == 0 {
                return Err(ZeroId);
            }
            if id > self.highest {
                self.highest = id;
            } else if self.highest - id >= u64::from(REPLAY_WINDOW) {
                return Err(TooOld);
            } else if id <= self.floor {
                return Err(BacktrackExpired);
            } else if self.accepted.contains(&id) {
                return Err(Replayed);
            }
            self.accepted.insert(id);
            self.last_accept = Some(now);
            Ok(())
        }
    }

    /// How the next id relates to the state so far.
    #[derive(Clone, Debug)]
    enum Next {
        InOrder,
        Ahead(u64),
        FarAhead(u64),
        Behind(u64),
        Zero,
        /// Counting down from the largest id.
        NearTop(u64),
        /// Counting up from the largest valid id (out of range for epochs).
        PastTop(u64),
        /// A previously sent id, sent again.
        Duplicate(prop::sample::Index),
        /// One of the last few ids sent, sent again.
        RecentDuplicate(prop::sample::Index),
        Anywhere(u64),
    }

    /// Ids for one sequence; `near_top` sequences also jump to the top of
    /// the id space (after which nothing new can be accepted, so they are a
    /// minority).
    fn next_strategy(near_top: bool) -> BoxedStrategy<Next> {
        let common = prop_oneof![
            80 => Just(Next::InOrder),
            30 => (2u64..40).prop_map(Next::Ahead),
            10 => (40u64..2100).prop_map(Next::Ahead),
            10 => (2040u64..200_000).prop_map(Next::FarAhead),
            50 => (0u64..60).prop_map(Next::Behind),
            20 => (2030u64..2070).prop_map(Next::Behind),
            5 => Just(Next::Zero),
            10 => any::<prop::sample::Index>().prop_map(Next::Duplicate),
            20 => any::<prop::sample::Index>().prop_map(Next::RecentDuplicate),
            3 => any::<u64>().prop_map(Next::Anywhere),
        ];
        if near_top {
            prop_oneof![
                100 => common,
                1 => prop_oneof![0u64..2100, 2100u64..20_000].prop_map(Next::NearTop),
                1 => (1u64..3).prop_map(Next::PastTop),
            ]
            .boxed()
        } else {
            common.boxed()
        }
    }

    fn time_step_strategy() -> impl Strategy<Value = u64> {
        prop_oneof![
            60 => Just(0u64),
            20 => 0u64..4,
            2 => 28u64..33,
            1 => Just(1000u64),
        ]
    }

    fn steps() -> impl Strategy<Value = Vec<(Next, u64)>> {
        let sequence = |near_top| prop::collection::vec((next_strategy(near_top), time_step_strategy()), 1..400);
        prop_oneof![3 => sequence(false), 1 => sequence(true)]
    }

    /// How far back `RecentDuplicate` looks.
    const RECENT: usize = 50;

    /// Picks the id for `next`: valid ids are `0..=top`, the window's
    /// argument type holds `0..=wire_max`, and `Anywhere` draws from the
    /// bits of `anywhere_mask`.
    fn pick(next: &Next, highest: u64, top: u64, wire_max: u64, anywhere_mask: u64, sent: &[u64]) -> u64 {
        let id = match next {
            Next::InOrder => highest.saturating_add(1).min(top),
            Next::Ahead(d) | Next::FarAhead(d) => highest.saturating_add(*d).min(top),
            Next::Behind(d) => highest.saturating_sub(*d),
            Next::Zero => 0,
            Next::NearTop(d) => top - d,
            Next::Duplicate(i) if !sent.is_empty() => *i.get(sent),
            Next::RecentDuplicate(i) if !sent.is_empty() => *i.get(&sent[sent.len().saturating_sub(RECENT)..]),
            Next::Duplicate(_) | Next::RecentDuplicate(_) => 1,
            Next::PastTop(d) => top.saturating_add(*d),
            Next::Anywhere(v) => v & anywhere_mask,
        };
        id.min(wire_max)
    }

    /// Runs `steps` through a window (via `check`/`accept`) and the model,
    /// which must agree on every verdict.
    fn run(
        steps: &[(Next, u64)],
        top: u64,
        wire_max: u64,
        anywhere_mask: u64,
        mut check: impl FnMut(u64, u64) -> Result<(), ReplayError>,
        mut accept: impl FnMut(u64, u64) -> Result<(), ReplayError>,
    ) -> Result<(), TestCaseError> {
        let mut model = Model::new(top);
        let mut sent = Vec::new();
        let mut now = 0u64;
        for (i, (next, dt)) in steps.iter().enumerate() {
            now += dt;
            let id = pick(next, model.highest, top, wire_max, anywhere_mask, &sent);
            let pre = check(id, now);
            let got = accept(id, now);
            let want = model.accept(id, now);
            prop_assert_eq!(pre, got, "check disagrees with accept at step {} id {}", i, id);
            prop_assert_eq!(got, want, "step {} id {} now {}", i, id, now);
            sent.push(id);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn replay_window_matches_the_model(steps in steps()) {
            let w = core::cell::RefCell::new(ReplayWindow::new());
            let narrow = |id: u64| u32::try_from(id).unwrap_or(u32::MAX);
            let top = u64::from(u32::MAX);
            run(
                &steps,
                top,
                top,
                top,
                |id, now| w.borrow().check(narrow(id), now),
                |id, now| w.borrow_mut().accept(narrow(id), now),
            )?;
        }

        #[test]
        fn epoch_replay_window_matches_the_model(steps in steps()) {
            let w = core::cell::RefCell::new(EpochReplayWindow::new());
            run(
                &steps,
                EPOCH_COUNTER_MAX,
                u64::MAX,
                // Half of these are wider than 48 bits.
                (EPOCH_COUNTER_MAX << 1) | 1,
                |id, now| w.borrow().check(id, now),
                |id, now| w.borrow_mut().accept(id, now),
            )?;
        }
    }
}
