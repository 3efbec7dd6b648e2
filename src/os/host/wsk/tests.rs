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

/// Writes `bytes` into `slot` and sends them.
fn send(t: &impl Transport, slot: u16, bytes: &[u8], to: SocketAddr) -> Result<(), NtStatus> {
    // SAFETY: the test owns the slot: it is idle (never sent, or completed).
    let buf = unsafe { t.slot_buffer(SendSlot(slot)) };
    // SAFETY: the slot buffer is SEND_SLOT_SIZE bytes and ours while idle.
    unsafe { (&mut *buf.as_ptr())[..bytes.len()].copy_from_slice(bytes) };
    t.send(SendSlot(slot), bytes.len(), to)
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
    let config = WskConfig { receive: ReceiveConfig { split: Split::Always, ..Default::default() }, ..Default::default() };
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
    let config = WskConfig { receive: ReceiveConfig { list_len: ListLen::UpTo(1), ..Default::default() }, ..Default::default() };
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
    let config = WskConfig { receive: ReceiveConfig { list_len: ListLen::UpTo(1), ..Default::default() }, ..Default::default() };
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
