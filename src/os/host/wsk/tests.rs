//! Scenarios for the WSK model, driven through the same `Transport` and
//! `SocketEvents` interfaces the data path uses.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::SocketAddr;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::*;
use crate::netcx::mdl::flags;
use crate::netcx::wsk::{AF_INET, AF_INET6, Datagram, WskDatagramIndication, datagrams};
use crate::ntstatus::NtStatus;
use crate::os::{SendSlot, SocketEvents, Transport};

/// What the test driver does with each indication list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Policy {
    /// Copy every datagram and return STATUS_SUCCESS.
    Copy,
    /// Retain every other list (1st, 3rd, ...), copy the rest.
    RetainEveryOther,
    /// Retain every list.
    RetainAll,
}

#[derive(Debug, Default)]
struct Got {
    bytes: Vec<u8>,
    from: Option<SocketAddr>,
    family: u16,
    mdls: usize,
    /// Where the datagram's first byte is (zero-copy pointer).
    at: usize,
}

#[derive(Default)]
struct Seen {
    datagrams: Vec<Got>,
    list_sizes: Vec<usize>,
    retained: Vec<usize>,
    /// Head of every list indicated, retained or not.
    heads: Vec<usize>,
    layout_errors: Vec<&'static str>,
    completions: Vec<(u16, NtStatus, usize)>,
    /// Batch completions: (first slot, status, bytes).
    batch_completions: Vec<(u16, NtStatus, usize)>,
    stream: Vec<u8>,
    chunks: usize,
    connected: Vec<NtStatus>,
    disconnected: Vec<NtStatus>,
}

/// A test driver standing in for the data path's socket events.
struct Recorder {
    policy: Policy,
    lists: AtomicUsize,
    seen: Mutex<Seen>,
    changed: Condvar,
}

impl Recorder {
    fn new(policy: Policy) -> Arc<Self> {
        Arc::new(Self { policy, lists: AtomicUsize::new(0), seen: Mutex::default(), changed: Condvar::new() })
    }

    fn with<R>(&self, f: impl FnOnce(&mut Seen) -> R) -> R {
        let r = f(&mut self.seen.lock().unwrap());
        self.changed.notify_all();
        r
    }

    /// Waits (up to 5 s) until `done` holds.
    fn wait(&self, done: impl Fn(&Seen) -> bool) -> bool {
        let end = Instant::now() + Duration::from_secs(5);
        let mut s = self.seen.lock().unwrap();
        while !done(&s) {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = self.changed.wait_timeout(s, left).unwrap().0;
        }
        true
    }

    fn take_retained(&self) -> Vec<NonNull<WskDatagramIndication>> {
        self.with(|s| core::mem::take(&mut s.retained))
            .into_iter()
            .map(|p| NonNull::new(p as *mut WskDatagramIndication).unwrap())
            .collect()
    }
}

/// Reads a datagram's bytes through its MDL chain, checking each MDL the
/// way the data path relies on (mapped, nonpaged, consistent addresses).
///
/// # Safety
/// The datagram's list is still the caller's (inside the event, or retained).
unsafe fn gather(d: &Datagram, errors: &mut Vec<&'static str>) -> (Vec<u8>, usize, usize) {
    let mut out = Vec::new();
    let mut skip = d.offset as usize;
    let mut mdl = d.mdl.as_ptr();
    let mut count = 0;
    let mut at = 0;
    while !mdl.is_null() && count < 4 {
        // SAFETY: the caller owns the list, so its MDLs are readable.
        let m = unsafe { &*mdl };
        count += 1;
        if m.mdl_flags & flags::SOURCE_IS_NONPAGED_POOL == 0 {
            errors.push("mdl not nonpaged");
        }
        if m.virtual_address() != m.mapped_system_va.cast() {
            errors.push("StartVa + ByteOffset != MappedSystemVa");
        }
        if m.start_va as usize % 4096 != 0 || m.byte_offset >= 4096 {
            errors.push("StartVa not page-aligned");
        }
        let Some(va) = m.system_address() else {
            errors.push("mdl not mapped");
            break;
        };
        let len = m.byte_count as usize;
        if skip >= len {
            skip -= len;
        } else {
            let take = (len - skip).min(d.length - out.len());
            if out.is_empty() {
                at = va as usize + skip;
            }
            // SAFETY: [skip, skip + take) lies inside this MDL's mapped bytes.
            out.extend_from_slice(unsafe { core::slice::from_raw_parts(va.add(skip), take) });
            skip = 0;
        }
        mdl = m.next;
    }
    if out.len() != d.length {
        errors.push("chain shorter than the datagram");
    }
    (out, count, at)
}

impl SocketEvents for Recorder {
    unsafe fn receive_from(&self, list: NonNull<WskDatagramIndication>) -> NtStatus {
        let index = self.lists.fetch_add(1, Ordering::Relaxed);
        let retain = match self.policy {
            Policy::Copy => false,
            Policy::RetainEveryOther => index % 2 == 0,
            Policy::RetainAll => true,
        };
        let mut errors = Vec::new();
        let mut got = Vec::new();
        // SAFETY: inside the receive event the list is ours to read.
        for d in unsafe { datagrams(list.as_ptr()) } {
            let Ok(d) = d else {
                errors.push("bad node");
                continue;
            };
            // SAFETY: as above.
            let (bytes, mdls, at) = unsafe { gather(&d, &mut errors) };
            // SAFETY: RemoteAddress points at a Windows sockaddr WSK owns.
            let (from, family) = unsafe { (sockaddr::decode(d.remote_address), (*d.remote_address).sa_family) };
            got.push(Got { bytes, from, family, mdls, at });
        }
        self.with(|s| {
            s.list_sizes.push(got.len());
            s.datagrams.extend(got);
            s.layout_errors.extend(errors);
            s.heads.push(list.as_ptr() as usize);
            if retain {
                s.retained.push(list.as_ptr() as usize);
            }
        });
        if retain { NtStatus::PENDING } else { NtStatus::SUCCESS }
    }

    fn stream_received(&self, bytes: &[u8]) {
        self.with(|s| {
            s.stream.extend_from_slice(bytes);
            s.chunks += 1;
        });
    }

    fn send_complete(&self, slot: SendSlot, status: NtStatus, bytes_sent: usize) {
        self.with(|s| s.completions.push((slot.0, status, bytes_sent)));
    }

    fn send_batch_complete(&self, first: SendSlot, status: NtStatus, bytes_sent: usize) {
        self.with(|s| s.batch_completions.push((first.0, status, bytes_sent)));
    }

    fn connected(&self, status: NtStatus) {
        self.with(|s| s.connected.push(status));
    }

    fn disconnected(&self, status: NtStatus) {
        self.with(|s| s.disconnected.push(status));
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Fills slot `slot` of `t` with `bytes` (the test owns it: idle, never
/// sent or completed).
fn fill(t: &impl Transport, slot: u16, bytes: &[u8]) -> (SendSlot, usize) {
    // SAFETY: the slot is idle, so the test owns its SEND_SLOT_SIZE-byte
    // buffer and writes only that.
    unsafe { (&mut *t.slot_buffer(SendSlot(slot)).as_ptr())[..bytes.len()].copy_from_slice(bytes) };
    (SendSlot(slot), bytes.len())
}

/// Writes `bytes` into `slot` and sends them.
fn send(t: &impl Transport, slot: u16, bytes: &[u8], to: SocketAddr) -> Result<(), NtStatus> {
    let (slot, len) = fill(t, slot, bytes);
    t.send(slot, len, to)
}

fn payload(i: usize) -> Vec<u8> {
    (0..(40 + i * 13) % 1400 + 1).map(|k| (k as u8) ^ (i as u8).wrapping_mul(31)).collect()
}

fn pump_hub(config: LoopbackConfig) -> (LoopbackHub, Arc<WskVerifier>) {
    (LoopbackHub::new(LoopbackConfig { delivery: Delivery::Pump, ..config }), WskVerifier::new())
}

fn provider(hub: &LoopbackHub, v: &Arc<WskVerifier>, config: WskConfig) -> WskProvider {
    WskProvider::new(Network::Loopback(hub.clone()), config, v.clone())
}

#[test]
fn indication_lists_have_the_wsk_layout_and_the_sender_address() {
    let (hub, v) = pump_hub(LoopbackConfig::default());
    let p = provider(&hub, &v, WskConfig::default());
    let (ra, rb) = (Recorder::new(Policy::Copy), Recorder::new(Policy::Copy));
    let a = p.open_datagram(addr("10.0.0.1:1194"), None, false, ra.clone()).unwrap();
    let b = p.open_datagram(addr("10.0.0.2:5000"), None, false, rb.clone()).unwrap();
    for i in 0..5 {
        send(&a, i as u16, &payload(i), b.local_addr()).unwrap();
    }
    hub.pump();
    rb.with(|s| {
        assert_eq!(s.layout_errors, Vec::<&str>::new());
        assert_eq!(s.datagrams.len(), 5);
        for (i, g) in s.datagrams.iter().enumerate() {
            assert_eq!(g.bytes, payload(i));
            assert_eq!(g.from, Some(addr("10.0.0.1:1194")));
            assert_eq!((g.family, g.mdls), (AF_INET, 1));
        }
        assert_eq!(s.list_sizes, [5], "one receive event carries the whole batch");
    });
    ra.with(|s| {
        let mut c = s.completions.clone();
        c.sort_by_key(|x| x.0);
        assert_eq!(c, (0..5).map(|i| (i as u16, NtStatus::SUCCESS, payload(i).len())).collect::<Vec<_>>());
    });
    let st = b.stats();
    assert_eq!((st.datagrams_indicated, st.lists_indicated, st.lists_reclaimed), (5, 1, 1));
    assert_eq!(st.rx_wire_bytes, (0..5).map(|i| payload(i).len() as u64).sum::<u64>());
    assert_eq!(st.rx_model_copied_bytes, 0);
    assert_eq!((a.stats().sends, a.stats().send_completions), (5, 5));
    a.close();
    b.close();
    v.assert_clean();
}

#[test]
fn ipv6_senders_arrive_as_af_inet6() {
    let (hub, v) = pump_hub(LoopbackConfig::default());
    let p = provider(&hub, &v, WskConfig::default());
    let rb = Recorder::new(Policy::Copy);
    let a = p.open_datagram(addr("[2001:db8::1]:1194"), None, false, Recorder::new(Policy::Copy)).unwrap();
    let b = p.open_datagram(addr("[2001:db8::2]:0"), None, false, rb.clone()).unwrap();
    assert_ne!(b.local_addr().port(), 0, "the hub picks a port for port 0");
    send(&a, 0, b"six", b.local_addr()).unwrap();
    hub.pump();
    rb.with(|s| {
        assert_eq!(s.datagrams.len(), 1);
        assert_eq!(s.datagrams[0].family, AF_INET6);
        assert_eq!(s.datagrams[0].from, Some(addr("[2001:db8::1]:1194")));
    });
    v.assert_clean();
}

#[test]
fn split_datagrams_span_two_chained_mdls_with_a_gap() {
    let (hub, v) = pump_hub(LoopbackConfig::default());
    let config =
        WskConfig { receive: ReceiveConfig { split: Split::Always, ..Default::default() }, ..Default::default() };
    let p = provider(&hub, &v, config);
    let rb = Recorder::new(Policy::Copy);
    let a = p.open_datagram(addr("10.0.0.1:1"), None, false, Recorder::new(Policy::Copy)).unwrap();
    let b = p.open_datagram(addr("10.0.0.2:2"), None, false, rb.clone()).unwrap();
    for i in 0..10 {
        send(&a, i, &payload(i.into()), b.local_addr()).unwrap();
    }
    hub.pump();
    rb.with(|s| {
        assert_eq!(s.layout_errors, Vec::<&str>::new());
        assert_eq!(s.datagrams.len(), 10);
        for (i, g) in s.datagrams.iter().enumerate() {
            assert_eq!(g.bytes, payload(i), "datagram {i} reassembled from both MDLs");
            assert_eq!(g.mdls, 2);
        }
    });
    assert_eq!(b.stats().datagrams_split, 10);
    v.assert_clean();
}

#[test]
fn retained_lists_stay_valid_until_released_from_another_thread_then_are_poisoned() {
    let (hub, v) = pump_hub(LoopbackConfig::default());
    let config =
        WskConfig { receive: ReceiveConfig { list_len: ListLen::UpTo(1), ..Default::default() }, ..Default::default() };
    let p = provider(&hub, &v, config);
    let released = Arc::new(Mutex::new(Vec::new()));
    let r = released.clone();
    v.on_release(move |range| r.lock().unwrap().push(range));
    let rb = Recorder::new(Policy::RetainEveryOther);
    let a = p.open_datagram(addr("10.0.0.1:1"), None, false, Recorder::new(Policy::Copy)).unwrap();
    let b = Arc::new(p.open_datagram(addr("10.0.0.2:2"), None, false, rb.clone()).unwrap());
    for i in 0..6 {
        send(&a, i, &payload(i.into()), b.local_addr()).unwrap();
    }
    hub.pump();
    assert_eq!(b.retained_lists(), 3);
    let st = b.stats();
    assert_eq!((st.lists_indicated, st.lists_reclaimed, st.lists_retained, st.lists_retained_max), (6, 3, 3, 3));
    // The retained datagrams (lists 0, 2, 4) are still intact in WSK's buffers.
    let kept: Vec<(usize, usize)> = rb.with(|s| (0..6).step_by(2).map(|i| (s.datagrams[i].at, i)).collect());
    for &(at, i) in &kept {
        let want = payload(i);
        // SAFETY: the list holding this datagram is retained, not released.
        assert_eq!(unsafe { core::slice::from_raw_parts(at as *const u8, want.len()) }, &want[..]);
    }
    let lists = rb.take_retained();
    let heads: Vec<usize> = lists.iter().map(|l| l.as_ptr() as usize).collect();
    let b2 = b.clone();
    std::thread::spawn(move || {
        for l in heads {
            // SAFETY: each was retained by the receive event and is released once.
            unsafe { b2.release(NonNull::new(l as *mut WskDatagramIndication).unwrap()) };
        }
    })
    .join()
    .unwrap();
    assert_eq!(b.retained_lists(), 0);
    assert_eq!(b.stats().lists_released, 3);
    for &(at, _) in &kept {
        // The model still owns this memory (the pool is alive); reading it
        // shows the poison a late reader of a released list would see.
        // SAFETY: the pool's buffers stay allocated while `b` lives.
        assert_eq!(unsafe { *(at as *const u8) }, POISON_BYTE);
        assert!(released.lock().unwrap().iter().any(|r| r.contains(&at)), "release hook saw {at:#x}");
    }
    b.close();
    v.assert_clean();
}

#[test]
fn double_release_unretained_release_unknown_release_and_leak_are_reported() {
    let (hub, v) = pump_hub(LoopbackConfig::default());
    let config =
        WskConfig { receive: ReceiveConfig { list_len: ListLen::UpTo(1), ..Default::default() }, ..Default::default() };
    let p = provider(&hub, &v, config);
    let rb = Recorder::new(Policy::RetainEveryOther);
    let a = p.open_datagram(addr("10.0.0.1:1"), None, false, Recorder::new(Policy::Copy)).unwrap();
    let b = p.open_datagram(addr("10.0.0.2:2"), None, false, rb.clone()).unwrap();
    // Three lists: 0 retained, 1 given back at once (SUCCESS), 2 retained.
    for i in 0..3u16 {
        send(&a, i, &payload(i.into()), b.local_addr()).unwrap();
    }
    hub.pump();
    let heads: Vec<_> = rb.with(|s| s.heads.clone());
    let retained = rb.take_retained();
    assert_eq!(heads.len(), 3);
    assert_eq!(retained.iter().map(|l| l.as_ptr() as usize).collect::<Vec<_>>(), [heads[0], heads[2]]);
    let id = b.id();
    // SAFETY (every release below): deliberate misuse; the model checks
    // ownership itself and never dereferences a pointer it does not own.
    unsafe {
        b.release(retained[0]);
        b.release(retained[0]);
    }
    assert_eq!(v.take_violations(), [Violation::ReleasedTwice { socket: id, list: heads[0] }]);

    let unretained = NonNull::new(heads[1] as *mut WskDatagramIndication).unwrap();
    // SAFETY: as above.
    unsafe { b.release(unretained) };
    assert_eq!(v.take_violations(), [Violation::ReleasedNotRetained { socket: id, list: heads[1] }]);

    let mut bogus = [0u64; 7];
    let bogus = NonNull::from(&mut bogus).cast::<WskDatagramIndication>();
    // SAFETY: as above.
    unsafe { b.release(bogus) };
    assert_eq!(v.take_violations(), [Violation::ReleasedUnknown { socket: id, list: bogus.as_ptr() as usize }]);

    // retained[1] is never released: closing leaks it.
    b.close();
    assert_eq!(v.take_violations(), [Violation::LeakedLists { socket: id, retained: 1 }]);
    // SAFETY: as above.
    unsafe { b.release(retained[1]) };
    assert_eq!(v.take_violations(), [Violation::ReleasedAfterClose { socket: id, list: heads[2] }]);
    a.close();
    v.assert_clean();
}

/// One datagram socket on a pump-mode hub, with a recording driver, and an
/// address nobody listens on: what the send-misuse tests start from.
struct LoneSender {
    hub: LoopbackHub,
    v: Arc<WskVerifier>,
    ra: Arc<Recorder>,
    a: DatagramSocket,
    to: SocketAddr,
}

fn lone_sender() -> LoneSender {
    let (hub, v) = pump_hub(LoopbackConfig::default());
    let p = provider(&hub, &v, WskConfig::default());
    let ra = Recorder::new(Policy::Copy);
    let a = p.open_datagram(addr("10.0.0.1:1"), None, false, ra.clone()).unwrap();
    LoneSender { hub, v, ra, a, to: addr("10.0.0.2:2") }
}

#[test]
fn send_misuse_is_refused_and_reported() {
    let LoneSender { hub, v, ra, a, to } = lone_sender();
    let id = a.id();
    send(&a, 0, b"first", to).unwrap();
    // A second send on the busy slot is refused (no completion follows).
    assert_eq!(a.send(SendSlot(0), 5, to), Err(NtStatus::INVALID_DEVICE_STATE));
    assert_eq!(a.send(SendSlot(64), 5, to), Err(NtStatus::INVALID_PARAMETER));
    assert_eq!(a.send(SendSlot(1), SEND_SLOT_SIZE + 1, to), Err(NtStatus::INVALID_PARAMETER));
    // Asking for the busy slot's buffer, and writing it, before completion.
    // SAFETY: deliberate misuse; the buffer memory stays valid.
    let buf = unsafe { a.slot_buffer(SendSlot(0)) };
    // SAFETY: as above (no other thread touches the slot in pump mode).
    unsafe { (*buf.as_ptr())[0] = b'F' };
    assert_eq!(
        v.take_violations(),
        [
            Violation::SendOnBusySlot { socket: id, slot: 0 },
            Violation::SlotOutOfRange { socket: id, slot: 64 },
            Violation::SendTooLong { socket: id, slot: 1, len: SEND_SLOT_SIZE + 1 },
            Violation::SlotBufferWhileInFlight { socket: id, slot: 0 },
        ]
    );
    hub.pump();
    assert_eq!(v.take_violations(), [Violation::SlotWrittenWhileInFlight { socket: id, slot: 0 }]);
    ra.with(|s| assert_eq!(s.completions, [(0, NtStatus::SUCCESS, 5)], "exactly one completion"));
    assert_eq!(hub.stats().unroutable, 1);
    // Close with a send still in flight, then send after close.
    send(&a, 1, b"late", to).unwrap();
    a.close();
    assert_eq!(v.take_violations(), [Violation::SendsInFlightAtClose { socket: id, in_flight: 1 }]);
    assert_eq!(send(&a, 2, b"x", to), Err(NtStatus::INVALID_DEVICE_STATE));
    assert_eq!(v.take_violations(), [Violation::SendAfterClose { socket: id, slot: 2 }]);
}

/// Two datagram sockets on a threaded loopback hub, the sender completing
/// in `mode`, each with a recording driver.
struct ThreadedPair {
    hub: LoopbackHub,
    v: Arc<WskVerifier>,
    ra: Arc<Recorder>,
    rb: Arc<Recorder>,
    a: DatagramSocket,
    b: DatagramSocket,
}

fn threaded_pair(mode: CompletionMode) -> ThreadedPair {
    let hub = LoopbackHub::new(LoopbackConfig::default());
    let v = WskVerifier::new();
    let config = WskConfig { send: SendConfig { completion: mode, ..Default::default() }, ..Default::default() };
    let p = provider(&hub, &v, config);
    let (ra, rb) = (Recorder::new(Policy::Copy), Recorder::new(Policy::Copy));
    let a = p.open_datagram(addr("10.0.0.1:1"), None, false, ra.clone()).unwrap();
    let b = p.open_datagram(addr("10.0.0.2:2"), None, false, rb.clone()).unwrap();
    ThreadedPair { hub, v, ra, rb, a, b }
}

#[test]
fn a_send_batch_puts_every_datagram_on_the_wire_and_completes_once_in_every_mode() {
    for mode in [
        CompletionMode::Inline,
        CompletionMode::Immediate,
        CompletionMode::Delayed(Duration::from_millis(10)),
        CompletionMode::Batched(4),
    ] {
        let ThreadedPair { hub: _hub, v, ra, rb, a, b } = threaded_pair(mode);
        // Two batches (slots out of order on purpose) and a single send.
        let first: Vec<_> = [5u16, 2, 9].iter().map(|&k| fill(&a, k, &payload(k.into()))).collect();
        a.send_batch(&first, b.local_addr()).unwrap();
        let second = [fill(&a, 0, &payload(0))];
        a.send_batch(&second, b.local_addr()).unwrap();
        send(&a, 7, &payload(7), b.local_addr()).unwrap();
        assert!(rb.wait(|s| s.datagrams.len() == 5), "{mode:?}");
        assert!(ra.wait(|s| s.batch_completions.len() == 2 && s.completions.len() == 1), "{mode:?}");
        let bytes = |ks: &[u16]| ks.iter().map(|&k| payload(k.into()).len()).sum::<usize>();
        ra.with(|s| {
            let mut got = s.batch_completions.clone();
            got.sort_unstable_by_key(|c| c.0);
            assert_eq!(got, [(0, NtStatus::SUCCESS, bytes(&[0])), (5, NtStatus::SUCCESS, bytes(&[5, 2, 9]))]);
            assert_eq!(s.completions, [(7, NtStatus::SUCCESS, payload(7).len())]);
        });
        // Each datagram arrived whole, the batch's in its order.
        rb.with(|s| {
            let got: Vec<Vec<u8>> = s.datagrams.iter().map(|d| d.bytes.clone()).collect();
            for k in [5u16, 2, 9, 0, 7] {
                assert!(got.contains(&payload(k.into())), "{mode:?}: datagram of slot {k}");
            }
            let at = |k: u16| got.iter().position(|g| *g == payload(k.into())).unwrap();
            assert!(at(5) < at(2) && at(2) < at(9), "{mode:?}: a batch keeps its order");
        });
        // Every slot is the driver's again.
        assert_eq!(a.sends_in_flight(), 0);
        a.close();
        b.close();
        v.assert_clean();
    }
}

#[test]
fn a_bad_send_batch_is_refused_whole_and_reported() {
    let LoneSender { hub, v, ra, a, to } = lone_sender();
    let id = a.id();
    send(&a, 3, b"busy", to).unwrap();
    let ok = fill(&a, 1, b"fine");
    // A busy slot, a slot twice, a slot out of range, too long, empty, too
    // many: nothing of the batch goes in flight.
    assert_eq!(a.send_batch(&[ok, (SendSlot(3), 4)], to), Err(NtStatus::INVALID_DEVICE_STATE));
    assert_eq!(a.send_batch(&[ok, ok], to), Err(NtStatus::INVALID_DEVICE_STATE));
    assert_eq!(a.send_batch(&[ok, (SendSlot(64), 4)], to), Err(NtStatus::INVALID_PARAMETER));
    assert_eq!(a.send_batch(&[ok, (SendSlot(2), SEND_SLOT_SIZE + 1)], to), Err(NtStatus::INVALID_PARAMETER));
    assert_eq!(a.send_batch(&[], to), Err(NtStatus::INVALID_PARAMETER));
    let too_many: Vec<_> = (10..10 + crate::os::SEND_BATCH_MAX as u16 + 1).map(|k| (SendSlot(k), 1)).collect();
    assert_eq!(a.send_batch(&too_many, to), Err(NtStatus::INVALID_PARAMETER));
    assert_eq!(
        v.take_violations(),
        [
            Violation::SendOnBusySlot { socket: id, slot: 3 },
            Violation::SendOnBusySlot { socket: id, slot: 1 },
            Violation::SlotOutOfRange { socket: id, slot: 64 },
            Violation::SendTooLong { socket: id, slot: 2, len: SEND_SLOT_SIZE + 1 },
            Violation::BadSendBatch { socket: id, len: 0 },
            Violation::BadSendBatch { socket: id, len: crate::os::SEND_BATCH_MAX + 1 },
        ]
    );
    assert_eq!(a.sends_in_flight(), 1, "only the single send");
    // The refused batch's slot is still the driver's: it can go now.
    a.send_batch(&[ok], to).unwrap();
    hub.pump();
    ra.with(|s| {
        assert_eq!(s.completions, [(3, NtStatus::SUCCESS, 4)]);
        assert_eq!(s.batch_completions, [(1, NtStatus::SUCCESS, 4)]);
    });
    a.close();
    v.assert_clean();
}

#[test]
fn a_stream_socket_has_no_send_batch() {
    let (hub, v) = pump_hub(LoopbackConfig::default());
    let p = provider(&hub, &v, WskConfig::default());
    let server = addr("10.0.0.9:1194");
    let _peer = hub.listen_stream(server);
    let r = Recorder::new(Policy::Copy);
    let s = p.open_tcp(addr("0.0.0.0:0"), server, r.clone()).unwrap();
    hub.pump();
    r.with(|x| assert_eq!(x.connected, [NtStatus::SUCCESS]));
    assert_eq!(s.send_batch(&[(SendSlot(0), 1)], server), Err(NtStatus::NOT_SUPPORTED));
    assert_eq!(s.sends_in_flight(), 0);
    s.close();
    v.assert_clean();
}

/// A threaded loopback pair whose sender completes in `mode`.
fn completion_scenario(mode: CompletionMode, sends: u16) -> (Arc<Recorder>, Arc<Recorder>, Vec<Duration>) {
    let ThreadedPair { hub: _hub, v, ra, rb, a, b } = threaded_pair(mode);
    let mut before = Vec::new();
    for i in 0..sends {
        let t = Instant::now();
        send(&a, i, &payload(i.into()), b.local_addr()).unwrap();
        before.push((t, ra.with(|s| s.completions.len())));
    }
    assert!(ra.wait(|s| s.completions.len() == usize::from(sends)));
    assert!(rb.wait(|s| s.datagrams.len() == usize::from(sends)));
    let waited = before.iter().map(|(t, _)| t.elapsed()).collect();
    if mode == CompletionMode::Inline {
        for (i, (_, done)) in before.iter().enumerate() {
            assert_eq!(*done, i + 1, "inline: completed before send returned");
        }
    }
    a.close();
    b.close();
    v.assert_clean();
    (ra, rb, waited)
}

#[test]
fn every_completion_mode_completes_each_send_exactly_once() {
    for mode in [
        CompletionMode::Inline,
        CompletionMode::Immediate,
        CompletionMode::Delayed(Duration::from_millis(30)),
        CompletionMode::Batched(4),
    ] {
        let (ra, _, waited) = completion_scenario(mode, 10);
        let mut slots: Vec<u16> = ra.with(|s| s.completions.iter().map(|c| c.0).collect());
        slots.sort_unstable();
        assert_eq!(slots, (0..10).collect::<Vec<_>>(), "{mode:?}");
        if let CompletionMode::Delayed(d) = mode {
            assert!(waited.iter().all(|w| *w >= d), "{mode:?}: no completion before the delay");
        }
    }
}

#[test]
fn loopback_applies_loss_duplication_and_reordering_as_configured() {
    let run = |config: LoopbackConfig, n: u16| -> (Vec<u8>, LoopbackStats) {
        let (hub, v) = pump_hub(config);
        let p = provider(&hub, &v, WskConfig::default());
        let rb = Recorder::new(Policy::Copy);
        let a = p.open_datagram(addr("10.0.0.1:1"), None, false, Recorder::new(Policy::Copy)).unwrap();
        let b = p.open_datagram(addr("10.0.0.2:2"), None, false, rb.clone()).unwrap();
        // Batches of 32 between pumps: a pump lets held-back datagrams go
        // once traffic stops, so reordering shows within a batch.
        for i in 0..n {
            send(&a, i % 64, &[i as u8], b.local_addr()).unwrap();
            if i % 32 == 31 {
                hub.pump();
            }
        }
        hub.pump();
        v.assert_clean();
        (rb.with(|s| s.datagrams.iter().map(|g| g.bytes[0]).collect()), hub.stats())
    };
    let (got, st) = run(LoopbackConfig { loss_ppm: 1_000_000, ..Default::default() }, 20);
    assert!(got.is_empty());
    assert_eq!((st.sent, st.lost), (20, 20));

    let (got, st) = run(LoopbackConfig { duplicate_ppm: 1_000_000, ..Default::default() }, 20);
    assert_eq!(got.len(), 40);
    assert!(got.chunks(2).enumerate().all(|(i, c)| c == [i as u8, i as u8]));
    assert_eq!(st.duplicated, 20);

    let (got, st) = run(LoopbackConfig { seed: 9, loss_ppm: 500_000, ..Default::default() }, 200);
    assert_eq!(got.len() as u64, 200 - st.lost);
    assert!((60..140).contains(&st.lost), "{}", st.lost);
    assert!(got.windows(2).all(|w| w[0] < w[1]), "loss alone keeps order");
    // Same seed, same losses.
    assert_eq!(run(LoopbackConfig { seed: 9, loss_ppm: 500_000, ..Default::default() }, 200).0, got);

    let (got, st) = run(LoopbackConfig { seed: 3, reorder_ppm: 300_000, reorder_depth: 3, ..Default::default() }, 100);
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..100).collect::<Vec<u8>>(), "reordering loses and duplicates nothing");
    assert_ne!(got, sorted, "but changes the order");
    assert!(st.reordered > 10);
    // A datagram falls at most `reorder_depth` places behind.
    for (pos, &x) in got.iter().enumerate() {
        assert!(pos <= usize::from(x) + 3, "{x} at {pos}");
    }
}

#[test]
fn list_sizes_vary_when_asked_and_never_exceed_the_maximum() {
    let (hub, v) = pump_hub(LoopbackConfig::default());
    let config = WskConfig {
        receive: ReceiveConfig { list_len: ListLen::Random { max: 8 }, ..Default::default() },
        ..Default::default()
    };
    let p = provider(&hub, &v, config);
    let rb = Recorder::new(Policy::Copy);
    let a = p.open_datagram(addr("10.0.0.1:1"), None, false, Recorder::new(Policy::Copy)).unwrap();
    let b = p.open_datagram(addr("10.0.0.2:2"), None, false, rb.clone()).unwrap();
    for round in 0..4u16 {
        for i in 0..50 {
            send(&a, i, &[round as u8, i as u8], b.local_addr()).unwrap();
        }
        hub.pump();
    }
    let sizes = rb.with(|s| s.list_sizes.clone());
    assert_eq!(sizes.iter().sum::<usize>(), 200);
    assert!(sizes.iter().all(|&n| (1..=8).contains(&n)));
    assert!(sizes.iter().any(|&n| n < 8) && sizes.iter().any(|&n| n == 8 || n == 7));
    v.assert_clean();
}

#[test]
fn a_fixed_remote_address_filters_other_senders() {
    let (hub, v) = pump_hub(LoopbackConfig::default());
    let p = provider(&hub, &v, WskConfig::default());
    let rb = Recorder::new(Policy::Copy);
    let a = p.open_datagram(addr("10.0.0.1:1"), None, false, Recorder::new(Policy::Copy)).unwrap();
    let c = p.open_datagram(addr("10.0.0.3:3"), None, false, Recorder::new(Policy::Copy)).unwrap();
    let b = p.open_datagram(addr("10.0.0.2:2"), Some(c.local_addr()), false, rb.clone()).unwrap();
    send(&a, 0, b"from a", b.local_addr()).unwrap();
    send(&c, 0, b"from c", b.local_addr()).unwrap();
    hub.pump();
    rb.with(|s| {
        assert_eq!(s.datagrams.len(), 1);
        assert_eq!(s.datagrams[0].bytes, b"from c");
    });
    assert_eq!(b.stats().rx_filtered, 1);
    v.assert_clean();
}

#[test]
fn a_server_socket_hears_several_clients_on_threads_and_retention_throttles() {
    let hub = LoopbackHub::new(LoopbackConfig::default());
    let v = WskVerifier::new();
    let config = WskConfig {
        // Few list records: retention throttles deliveries (datagrams wait in
        // their buffers until the driver releases a list).
        receive: ReceiveConfig { lists: 4, buffers: 256, ..Default::default() },
        ..Default::default()
    };
    let p = provider(&hub, &v, config);
    let rs = Recorder::new(Policy::RetainEveryOther);
    let server = Arc::new(p.open_datagram(addr("[fd00::1]:1194"), None, false, rs.clone()).unwrap());
    // A releaser thread gives retained lists back as the driver would, later.
    let stop = Arc::new(core::sync::atomic::AtomicBool::new(false));
    let (rs2, s2, stop2) = (rs.clone(), server.clone(), stop.clone());
    let releaser = std::thread::spawn(move || {
        while !stop2.load(Ordering::Relaxed) {
            for l in rs2.take_retained() {
                std::thread::sleep(Duration::from_micros(200));
                // SAFETY: retained by the event, released once, here.
                unsafe { s2.release(l) };
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    let clients: Vec<_> = (1..=3)
        .map(|i| {
            p.open_datagram(addr(&std::format!("[fd00::{}]:5000", i + 1)), None, false, Recorder::new(Policy::Copy))
                .unwrap()
        })
        .collect();
    for round in 0..40u16 {
        for (i, c) in clients.iter().enumerate() {
            // 40 rounds on 64 slots: no slot is reused.
            send(c, round, &[i as u8, round as u8], server.local_addr()).unwrap();
        }
    }
    // Every datagram is either indicated or dropped for want of a buffer
    // (the stack's own drop while the driver holds them all).
    let end = Instant::now() + Duration::from_secs(5);
    while rs.with(|s| s.datagrams.len() as u64) + server.stats().rx_dropped_no_buffer < 120 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(2));
    }
    let got = rs.with(|s| s.datagrams.len() as u64);
    let st = server.stats();
    assert_eq!((got, st.rx_dropped_no_buffer), (120, 0));
    assert!(st.lists_retained_max <= 4);
    stop.store(true, Ordering::Relaxed);
    releaser.join().unwrap();
    for l in rs.take_retained() {
        // SAFETY: retained and not yet released.
        unsafe { server.release(l) };
    }
    rs.with(|s| {
        for (i, c) in clients.iter().enumerate() {
            let mine: Vec<_> = s.datagrams.iter().filter(|g| g.from == Some(c.local_addr())).collect();
            assert!(!mine.is_empty());
            assert!(mine.iter().all(|g| g.bytes[0] == i as u8), "sender address matches content");
        }
    });
    for c in &clients {
        let end = Instant::now() + Duration::from_secs(5);
        while c.sends_in_flight() > 0 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(1));
        }
        c.close();
    }
    server.close();
    v.assert_clean();
}

/// Real UDP between two modelled sockets on `ip`, the receiver retaining
/// every other list and splitting some datagrams over two MDLs (scattered
/// by recvmmsg itself).
fn real_udp_round_trip(ip: &str) {
    let v = WskVerifier::new();
    let config = WskConfig {
        receive: ReceiveConfig { split: Split::Random { ppm: 500_000 }, ..Default::default() },
        ..Default::default()
    };
    let p = WskProvider::new(Network::Real, config, v.clone());
    let (ra, rb) = (Recorder::new(Policy::Copy), Recorder::new(Policy::RetainEveryOther));
    let a = p.open_datagram(addr(&std::format!("{ip}:0")), None, true, ra.clone()).unwrap();
    let b = p.open_datagram(addr(&std::format!("{ip}:0")), None, true, rb.clone()).unwrap();
    assert_ne!(b.local_addr().port(), 0);
    for i in 0..20 {
        send(&a, i, &payload(i.into()), b.local_addr()).unwrap();
    }
    assert!(ra.wait(|s| s.completions.len() == 20));
    assert!(rb.wait(|s| s.datagrams.len() == 20), "loopback UDP lost nothing");
    rb.with(|s| {
        assert_eq!(s.layout_errors, Vec::<&str>::new());
        let mut got: Vec<&Vec<u8>> = s.datagrams.iter().map(|g| &g.bytes).collect();
        got.sort();
        let mut want: Vec<Vec<u8>> = (0..20).map(payload).collect();
        want.sort();
        assert_eq!(got, want.iter().collect::<Vec<_>>());
        let family = if a.local_addr().is_ipv4() { AF_INET } else { AF_INET6 };
        assert!(s.datagrams.iter().all(|g| g.from == Some(a.local_addr()) && g.family == family));
    });
    ra.with(|s| assert!(s.completions.iter().all(|c| c.1 == NtStatus::SUCCESS)));
    for l in rb.take_retained() {
        // SAFETY: retained by the event, released once.
        unsafe { b.release(l) };
    }
    assert!(b.stats().datagrams_split > 0, "some datagrams were split");
    a.close();
    b.close();
    v.assert_clean();
}

#[test]
#[cfg_attr(miri, ignore = "real sockets: Miri's isolation has no socket(); in-memory variants run")]
fn real_udp_over_ipv4_loopback() {
    real_udp_round_trip("127.0.0.1");
}

#[test]
#[cfg_attr(miri, ignore = "real sockets: Miri's isolation has no socket(); in-memory variants run")]
fn real_udp_over_ipv6_loopback() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        return; // no IPv6 on this machine
    }
    real_udp_round_trip("[::1]");
}

fn stream_config(partial: PartialSends, chunking: Chunking) -> WskConfig {
    WskConfig {
        send: SendConfig { partial, ..Default::default() },
        stream: StreamConfig { chunking, ..Default::default() },
        ..Default::default()
    }
}

#[test]
fn in_memory_tcp_connects_cuts_sends_chunks_bytes_and_sees_close() {
    let (hub, v) = pump_hub(LoopbackConfig::default());
    let p = provider(&hub, &v, stream_config(PartialSends::EveryNth(2), Chunking::Random { max: 7 }));
    let server = addr("10.0.0.9:1194");
    let peer = hub.listen_stream(server);
    let r = Recorder::new(Policy::Copy);
    let s = p.open_tcp(addr("0.0.0.0:0"), server, r.clone()).unwrap();
    assert_eq!(s.send(SendSlot(0), 1, server), Err(NtStatus::INVALID_DEVICE_STATE), "not connected yet");
    hub.pump();
    r.with(|x| assert_eq!(x.connected, [NtStatus::SUCCESS]));

    let frames: Vec<Vec<u8>> = (0..4).map(|i| payload(i + 3)).collect();
    for (i, f) in frames.iter().enumerate() {
        send(&s, i as u16, f, server).unwrap();
    }
    hub.pump();
    let completions = r.with(|x| x.completions.clone());
    assert_eq!(completions.len(), 4);
    let mut expect = Vec::new();
    for (slot, status, sent) in &completions {
        let f = &frames[usize::from(*slot)];
        assert_eq!(*status, NtStatus::SUCCESS);
        if slot % 2 == 1 {
            assert!(*sent >= 1 && *sent < f.len(), "every 2nd send is cut short");
        } else {
            assert_eq!(*sent, f.len());
        }
        expect.extend_from_slice(&f[..*sent]);
    }
    assert_eq!(peer.read(), expect, "the wire carries exactly the bytes reported sent");
    assert_eq!(s.stats().partial_sends, 2);

    let incoming: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
    peer.write(&incoming);
    hub.pump();
    r.with(|x| {
        assert_eq!(x.stream, incoming);
        assert!(x.chunks >= 1000 / 7, "cut into chunks of at most 7: {}", x.chunks);
    });
    peer.close();
    hub.pump();
    r.with(|x| assert_eq!(x.disconnected, [NtStatus::CONNECTION_DISCONNECTED]));
    s.close();
    assert!(peer.socket_closed());
    v.assert_clean();
}

#[test]
fn in_memory_tcp_reset_and_refused_connect() {
    let (hub, v) = pump_hub(LoopbackConfig::default());
    let p = provider(&hub, &v, WskConfig::default());
    let r = Recorder::new(Policy::Copy);
    let refused = p.open_tcp(addr("0.0.0.0:0"), addr("10.0.0.9:1"), r.clone()).unwrap();
    hub.pump();
    r.with(|x| assert_eq!(x.connected, [udp::STATUS_CONNECTION_REFUSED]));
    refused.close();

    let server = addr("10.0.0.9:2");
    let peer = hub.listen_stream(server);
    let r = Recorder::new(Policy::Copy);
    let s = p.open_tcp(addr("0.0.0.0:0"), server, r.clone()).unwrap();
    hub.pump();
    peer.write(b"lost");
    peer.reset();
    hub.pump();
    r.with(|x| {
        assert_eq!(x.connected, [NtStatus::SUCCESS]);
        assert_eq!(x.disconnected, [NtStatus::CONNECTION_RESET]);
        assert!(x.stream.is_empty(), "a reset discards unread bytes");
    });
    assert_eq!(s.send(SendSlot(0), 1, server), Err(NtStatus::INVALID_DEVICE_STATE), "no sends after disconnect");
    s.close();
    v.assert_clean();
}

#[test]
#[cfg_attr(miri, ignore = "real sockets: Miri's isolation has no socket(); in-memory variants run")]
fn real_tcp_partial_sends_chunked_receive_and_peer_close() {
    let v = WskVerifier::new();
    let p = WskProvider::new(Network::Real, stream_config(PartialSends::EveryNth(1), Chunking::Fixed(3)), v.clone());
    let mut peer = TcpTestPeer::listen(addr("127.0.0.1:0")).unwrap();
    let r = Recorder::new(Policy::Copy);
    let s = p.open_tcp(addr("0.0.0.0:0"), peer.local_addr(), r.clone()).unwrap();
    peer.accept().unwrap();
    assert!(r.wait(|x| x.connected == [NtStatus::SUCCESS]));
    let frame = payload(50);
    send(&s, 0, &frame, peer.local_addr()).unwrap();
    assert!(r.wait(|x| x.completions.len() == 1));
    let (_, status, sent) = r.with(|x| x.completions[0]);
    assert_eq!(status, NtStatus::SUCCESS);
    assert!(sent >= 1 && sent < frame.len(), "the send was cut: {sent}");
    assert_eq!(peer.read_exact(sent).unwrap(), &frame[..sent]);
    // The rest, as the data path would resend it, from the slot's start.
    send(&s, 0, &frame[sent..], peer.local_addr()).unwrap();
    assert!(r.wait(|x| x.completions.len() == 2));
    let sent2 = r.with(|x| x.completions[1].2);
    assert_eq!(peer.read_exact(sent2).unwrap(), &frame[sent..sent + sent2]);

    peer.write(b"hello, driver").unwrap();
    assert!(r.wait(|x| x.stream.len() == 13));
    r.with(|x| {
        assert_eq!(x.stream, b"hello, driver");
        assert_eq!(x.chunks, 5, "chunks of at most 3");
    });
    peer.close();
    assert!(r.wait(|x| x.disconnected == [NtStatus::CONNECTION_DISCONNECTED]));
    s.close();
    v.assert_clean();
}

#[test]
#[cfg_attr(miri, ignore = "real sockets: Miri's isolation has no socket(); in-memory variants run")]
fn real_tcp_connect_refused_and_reset() {
    let v = WskVerifier::new();
    let p = WskProvider::new(Network::Real, WskConfig::default(), v.clone());
    // A port nobody listens on: bind one, note it, drop it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let r = Recorder::new(Policy::Copy);
    let s = p.open_tcp(addr("0.0.0.0:0"), port, r.clone()).unwrap();
    assert!(r.wait(|x| x.connected == [udp::STATUS_CONNECTION_REFUSED]));
    s.close();

    let mut peer = TcpTestPeer::listen(addr("127.0.0.1:0")).unwrap();
    let r = Recorder::new(Policy::Copy);
    let s = p.open_tcp(addr("0.0.0.0:0"), peer.local_addr(), r.clone()).unwrap();
    peer.accept().unwrap();
    assert!(r.wait(|x| x.connected == [NtStatus::SUCCESS]));
    peer.reset();
    assert!(r.wait(|x| x.disconnected == [NtStatus::CONNECTION_RESET]));
    s.close();
    v.assert_clean();
}

#[test]
fn a_driver_holding_every_buffer_makes_the_stack_drop_and_count() {
    let (hub, v) = pump_hub(LoopbackConfig::default());
    let config = WskConfig {
        receive: ReceiveConfig { buffers: 8, list_len: ListLen::UpTo(4), ..Default::default() },
        ..Default::default()
    };
    let p = provider(&hub, &v, config);
    let rb = Recorder::new(Policy::RetainAll);
    let a = p.open_datagram(addr("10.0.0.1:1"), None, false, Recorder::new(Policy::Copy)).unwrap();
    let b = p.open_datagram(addr("10.0.0.2:2"), None, false, rb.clone()).unwrap();
    for i in 0..12 {
        send(&a, i, &[i as u8], b.local_addr()).unwrap();
    }
    hub.pump();
    let st = b.stats();
    assert_eq!((st.datagrams_indicated, st.rx_dropped_no_buffer), (8, 4));
    assert_eq!((st.lists_indicated, st.lists_retained, st.lists_retained_max), (2, 2, 2));
    for l in rb.take_retained() {
        // SAFETY: retained by the event, released once.
        unsafe { b.release(l) };
    }
    // Buffers are back: traffic flows again.
    send(&a, 12, b"again", b.local_addr()).unwrap();
    hub.pump();
    assert_eq!(b.stats().datagrams_indicated, 9);
    for l in rb.take_retained() {
        // SAFETY: as above.
        unsafe { b.release(l) };
    }
    b.close();
    v.assert_clean();
}

#[test]
#[cfg_attr(miri, ignore = "real sockets: Miri's isolation has no socket(); in-memory variants run")]
fn a_dual_stack_socket_hears_ipv4_peers_as_mapped_addresses() {
    if std::net::UdpSocket::bind("[::]:0").is_err() {
        return; // no IPv6 on this machine
    }
    let v = WskVerifier::new();
    let p = WskProvider::new(Network::Real, WskConfig::default(), v.clone());
    let rb = Recorder::new(Policy::Copy);
    let a = p.open_datagram(addr("127.0.0.1:0"), None, false, Recorder::new(Policy::Copy)).unwrap();
    // P2P-style fixed remote given as plain IPv4: still matches the mapped sender.
    let b = p.open_datagram(addr("[::]:0"), Some(a.local_addr()), false, rb.clone()).unwrap();
    let to = addr(&std::format!("127.0.0.1:{}", b.local_addr().port()));
    send(&a, 0, b"v4 to dual stack", to).unwrap();
    assert!(rb.wait(|s| s.datagrams.len() == 1));
    rb.with(|s| {
        let g = &s.datagrams[0];
        assert_eq!(g.family, AF_INET6);
        let from = g.from.unwrap();
        assert_eq!((from.ip().to_canonical(), from.port()), (a.local_addr().ip(), a.local_addr().port()));
    });
    // And back: the dual-stack socket sends to a plain IPv4 address.
    let ra = Recorder::new(Policy::Copy);
    let c = p.open_datagram(addr("127.0.0.1:0"), None, false, ra.clone()).unwrap();
    send(&b, 0, b"reply", c.local_addr()).unwrap();
    assert!(ra.wait(|s| s.datagrams.len() == 1));
    a.close();
    b.close();
    c.close();
    v.assert_clean();
}

#[test]
fn several_delivery_threads_indicate_one_socket_concurrently() {
    let hub = LoopbackHub::new(LoopbackConfig::default());
    let v = WskVerifier::new();
    let config = WskConfig {
        receive: ReceiveConfig { threads: 3, list_len: ListLen::Random { max: 4 }, ..Default::default() },
        ..Default::default()
    };
    let p = provider(&hub, &v, config);
    let rb = Recorder::new(Policy::RetainEveryOther);
    let a = p.open_datagram(addr("10.0.0.1:1"), None, false, Recorder::new(Policy::Copy)).unwrap();
    let b = p.open_datagram(addr("10.0.0.2:2"), None, false, rb.clone()).unwrap();
    for i in 0..60 {
        send(&a, i, &[i as u8], b.local_addr()).unwrap();
    }
    assert!(rb.wait(|s| s.datagrams.len() == 60));
    let mut got: Vec<u8> = rb.with(|s| s.datagrams.iter().map(|g| g.bytes[0]).collect());
    got.sort_unstable();
    assert_eq!(got, (0..60).collect::<Vec<u8>>());
    for l in rb.take_retained() {
        // SAFETY: retained by the event, released once.
        unsafe { b.release(l) };
    }
    assert_eq!(b.retained_lists(), 0);
    a.close();
    b.close();
    v.assert_clean();
}

/// Releases each list from inside its own receive event (the driver's last
/// reference dropping before the event returns), then answers `answer`.
struct ReleaseInside {
    socket: Mutex<alloc::sync::Weak<DatagramSocket>>,
    answer: NtStatus,
    lists: AtomicUsize,
}

impl SocketEvents for ReleaseInside {
    unsafe fn receive_from(&self, list: NonNull<WskDatagramIndication>) -> NtStatus {
        if let Some(s) = self.socket.lock().unwrap().upgrade() {
            // SAFETY: the list is this event's; released once, then not touched.
            unsafe { s.release(list) };
        }
        self.lists.fetch_add(1, Ordering::Relaxed);
        self.answer
    }
    fn stream_received(&self, _: &[u8]) {}
    fn send_complete(&self, _: SendSlot, _: NtStatus, _: usize) {}
    fn send_batch_complete(&self, _: SendSlot, _: NtStatus, _: usize) {}
    fn connected(&self, _: NtStatus) {}
    fn disconnected(&self, _: NtStatus) {}
}

#[test]
fn a_release_inside_the_event_is_fine_with_pending_and_reported_with_success() {
    for (answer, want) in [(NtStatus::PENDING, None), (NtStatus::SUCCESS, Some(()))] {
        let (hub, v) = pump_hub(LoopbackConfig::default());
        let p = provider(&hub, &v, WskConfig::default());
        let events = Arc::new(ReleaseInside { socket: Mutex::default(), answer, lists: AtomicUsize::new(0) });
        let a = p.open_datagram(addr("10.0.0.1:1"), None, false, Recorder::new(Policy::Copy)).unwrap();
        let b = Arc::new(p.open_datagram(addr("10.0.0.2:2"), None, false, events.clone()).unwrap());
        *events.socket.lock().unwrap() = Arc::downgrade(&b);
        send(&a, 0, b"x", b.local_addr()).unwrap();
        hub.pump();
        assert_eq!(events.lists.load(Ordering::Relaxed), 1);
        assert_eq!(b.retained_lists(), 0);
        let violations = v.take_violations();
        match want {
            None => assert_eq!(violations, []),
            Some(()) => assert!(matches!(violations[..], [Violation::ReleasedNotRetained { .. }])),
        }
        b.close();
        v.assert_clean();
    }
}
