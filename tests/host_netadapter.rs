//! The NetAdapterCx host model against toy data paths: a correct one runs
//! start / traffic / cancel with buffers outstanding / stop / re-create with
//! no violation, and each deliberately broken one is caught by the rule it
//! breaks. These prove the model's verifier before the real data path is
//! run through it.

#![cfg(not(windows))]

use std::collections::VecDeque;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use ovpn_dco::netcx::extension::{Extension, NetFragmentReturnContext, NetFragmentVirtualAddress};
use ovpn_dco::netcx::ring::{NetRingCollection, QueueRings, advance_index, element_at};
use ovpn_dco::ntstatus::NtStatus;
use ovpn_dco::os::host::netadapter::{Hold, HostNetAdapter, ModelConfig, Notifier, TxPacket};
use ovpn_dco::os::host::verifier::{LoanKind, Rule, Verifier, address_range};
use ovpn_dco::os::{AdapterDatapath, PacketQueue, QueueExtensions};

const WAIT: Duration = Duration::from_secs(10);

/// The one thing a broken toy does wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bug {
    None,
    /// RX: moves the fragment BeginIndex back by one on a later Advance.
    /// (The fragment ring, because the MDL pool keeps it partly offered: on
    /// a ring the driver owns all n − 1 elements of, one back is the same
    /// index as EndIndex, "everything returned", for any OS.)
    BeginBackwards,
    /// RX: writes the packet element at EndIndex, which the OS owns.
    WriteUnownedElement,
    /// RX: indicates every fragment with ReturnContext 1.
    ReuseReturnContext,
    /// RX: releases the indication of a returned buffer twice.
    ReleaseTwice,
    /// RX: forgets buffers queued in the driver when cancelled.
    LeakQueuedOnCancel,
    /// RX: releases the buffer before indicating it.
    IndicateReleasedMemory,
    /// RX: stays armed across Stop and notifies a destroyed queue.
    NotifyAfterStop,
    /// TX: writes into the payload (past the backfill).
    WriteTxPayload,
    /// TX: shortens a fragment's ValidLength.
    ModifyTxValidLength,
    /// TX: completes packets but never moves the fragment BeginIndex.
    NoTxFragmentAdvance,
}

/// A driver-owned RX buffer, standing for a retained WSK indication.
struct RxBuffer {
    bytes: Box<[u8]>,
    indication: usize,
}

/// State shared by the toy adapter and its queues.
struct Toy {
    notifier: Notifier,
    verifier: Arc<Verifier>,
    bug: Bug,
    tx_backfill: usize,
    /// RX packets waiting for Advance: the buffer slots of their fragments.
    pending: Mutex<VecDeque<Vec<usize>>>,
    slots: Mutex<Vec<Option<RxBuffer>>>,
    rx_armed: AtomicBool,
    rx_paused: AtomicBool,
    next_indication: AtomicUsize,
    dropped_on_cancel: AtomicUsize,
    transmitted: Mutex<Vec<Vec<u8>>>,
    tx_armed: AtomicBool,
    tx_done_pending: AtomicBool,
}

impl Toy {
    /// A datagram arrives (in `chunks.len()` buffers): queued for Advance.
    fn inject(&self, chunks: &[&[u8]]) {
        let mut slots = self.slots.lock().unwrap();
        let mut packet = Vec::new();
        for chunk in chunks {
            let indication = self.next_indication.fetch_add(1, Ordering::Relaxed);
            self.verifier.lend(ovpn_dco::os::host::verifier::QueueKind::Adapter, LoanKind::IndicationList, indication);
            let bytes: Box<[u8]> = chunk.to_vec().into_boxed_slice();
            self.verifier.mark_live(address_range(&bytes));
            let buffer = RxBuffer { bytes, indication };
            let slot = match slots.iter().position(Option::is_none) {
                Some(free) => free,
                None => {
                    slots.push(None);
                    slots.len() - 1
                }
            };
            slots[slot] = Some(buffer);
            packet.push(slot);
        }
        drop(slots);
        self.pending.lock().unwrap().push_back(packet);
        if self.rx_armed.swap(false, Ordering::AcqRel) {
            self.notifier.notify_rx();
        }
    }

    /// WskRelease of a buffer's indication.
    fn release(&self, slot: usize) {
        let Some(buffer) = self.slots.lock().unwrap()[slot].take() else { return };
        self.verifier.mark_released(address_range(&buffer.bytes));
        let kind = ovpn_dco::os::host::verifier::QueueKind::Adapter;
        self.verifier.give_back(kind, LoanKind::IndicationList, buffer.indication);
        if self.bug == Bug::ReleaseTwice {
            self.verifier.give_back(kind, LoanKind::IndicationList, buffer.indication);
        }
    }
}

struct ToyAdapter {
    toy: Arc<Toy>,
}

struct RxState {
    rings: QueueRings,
    va: Extension<NetFragmentVirtualAddress>,
    rc: Extension<NetFragmentReturnContext>,
    indicated: usize,
}

struct ToyRxQueue {
    toy: Arc<Toy>,
    state: Mutex<RxState>,
}

struct TxState {
    rings: QueueRings,
    va: Extension<NetFragmentVirtualAddress>,
}

struct ToyTxQueue {
    toy: Arc<Toy>,
    state: Mutex<TxState>,
}

impl PacketQueue for ToyRxQueue {
    fn start(&self) {}

    fn advance(&self) {
        let toy = &*self.toy;
        let mut guard = self.state.lock().unwrap();
        let RxState { rings, va, rc, indicated } = &mut *guard;
        if toy.bug == Bug::BeginBackwards && *indicated > 0 {
            let mask = rings.fragments.number_of_elements() - 1;
            let back = rings.fragments.begin().wrapping_sub(1) & mask;
            // SAFETY: the ring is live while the queue exists; the store is
            // atomic. Moving BeginIndex backwards is the bug under test.
            unsafe { (*rings.fragments.as_ptr()).begin_index.store(back, Ordering::Release) };
            return;
        }
        let fragment_mask = rings.fragments.number_of_elements() - 1;
        while !toy.rx_paused.load(Ordering::Acquire) {
            let mut pending = toy.pending.lock().unwrap();
            let Some(packet) = pending.front() else { break };
            if rings.packets.owned().is_empty() || (rings.fragments.owned().len() as usize) < packet.len() {
                break;
            }
            let packet = pending.pop_front().unwrap();
            drop(pending);
            let (pk, first) = (rings.packets.begin(), rings.fragments.begin());
            let slots = toy.slots.lock().unwrap();
            for (k, &slot) in packet.iter().enumerate() {
                let fi = advance_index(fragment_mask, first, k as u32);
                let buffer = slots[slot].as_ref().unwrap();
                rings.fragments.get_mut(fi).unwrap().set_rx_payload(buffer.bytes.len() as u32).unwrap();
                rings.fragments.extension_mut(va, fi).unwrap().virtual_address = buffer.bytes.as_ptr() as *mut _;
                let context = if toy.bug == Bug::ReuseReturnContext { 1 } else { slot + 1 };
                rings.fragments.extension_mut(rc, fi).unwrap().handle = context as *mut _;
                if toy.bug == Bug::IndicateReleasedMemory {
                    toy.verifier.mark_released(address_range(&buffer.bytes));
                }
            }
            drop(slots);
            let p = rings.packets.get_mut(pk).unwrap();
            p.fragment_index = first;
            p.fragment_count = packet.len() as u16;
            rings.fragments.set_begin(advance_index(fragment_mask, first, packet.len() as u32)).unwrap();
            let packet_mask = rings.packets.number_of_elements() - 1;
            rings.packets.set_begin(advance_index(packet_mask, pk, 1)).unwrap();
            *indicated += 1;
            if toy.bug == Bug::WriteUnownedElement {
                // SAFETY: element EndIndex lies inside the ring allocation;
                // writing it while the OS owns it is the bug under test.
                unsafe { element_at(rings.packets.as_ptr(), rings.packets.end()).add(4).write(0x77) };
            }
        }
    }

    fn set_notification_enabled(&self, enabled: bool) {
        self.toy.rx_armed.store(enabled, Ordering::Release);
        // Work that fits the rings now: notify at once (not just "queued":
        // without room that would spin the poll loop).
        let ready = {
            let state = self.state.lock().unwrap();
            self.toy.pending.lock().unwrap().front().is_some_and(|p| {
                !state.rings.packets.owned().is_empty() && state.rings.fragments.owned().len() as usize >= p.len()
            })
        };
        if enabled && ready && self.toy.rx_armed.swap(false, Ordering::AcqRel) {
            self.toy.notifier.notify_rx();
        }
    }

    fn cancel(&self) {
        let mut guard = self.state.lock().unwrap();
        let rings = &mut guard.rings;
        for index in rings.packets.owned() {
            rings.packets.get_mut(index).unwrap().set_ignore(true);
        }
        let (pe, fe) = (rings.packets.end(), rings.fragments.end());
        rings.fragments.set_begin(fe).unwrap();
        rings.packets.set_begin(pe).unwrap();
        let queued: Vec<_> = self.toy.pending.lock().unwrap().drain(..).collect();
        for packet in queued {
            self.toy.dropped_on_cancel.fetch_add(1, Ordering::Relaxed);
            if self.toy.bug != Bug::LeakQueuedOnCancel {
                packet.into_iter().for_each(|slot| self.toy.release(slot));
            }
        }
    }

    fn stop(&self) {
        if self.toy.bug != Bug::NotifyAfterStop {
            self.toy.rx_armed.store(false, Ordering::Release);
        }
    }
}

impl PacketQueue for ToyTxQueue {
    fn start(&self) {}

    fn advance(&self) {
        let toy = &*self.toy;
        let mut guard = self.state.lock().unwrap();
        let TxState { rings, va } = &mut *guard;
        let (packet_mask, fragment_mask) =
            (rings.packets.number_of_elements() - 1, rings.fragments.number_of_elements() - 1);
        // Drain: leading packets marked sent, in ring order.
        let (mut begin, mut fragment_end) = (rings.packets.begin(), None);
        for index in rings.packets.owned() {
            let p = *rings.packets.get(index).unwrap();
            if !p.scratch() {
                break;
            }
            if p.fragment_count > 0 {
                fragment_end = Some(advance_index(fragment_mask, p.fragment_index, u32::from(p.fragment_count)));
            }
            begin = advance_index(packet_mask, index, 1);
        }
        rings.packets.set_begin(begin).unwrap();
        if let Some(end) = fragment_end.filter(|_| toy.bug != Bug::NoTxFragmentAdvance) {
            rings.fragments.set_begin(end).unwrap();
        }
        // Post: "send" each new packet, mark it sent.
        let new = rings.packets.post_section().unwrap();
        let any = !new.is_empty();
        for index in new {
            let p = *rings.packets.get(index).unwrap();
            if !p.ignore() {
                let mut frame = Vec::new();
                for k in 0..u32::from(p.fragment_count) {
                    let fi = advance_index(fragment_mask, p.fragment_index, k);
                    let f = *rings.fragments.get(fi).unwrap();
                    let base = rings.fragments.extension(va, fi).unwrap().virtual_address as *mut u8;
                    // SAFETY: the OS posted this fragment: VirtualAddress +
                    // Offset holds ValidLength readable bytes while the
                    // driver owns the packet.
                    let data =
                        unsafe { std::slice::from_raw_parts(base.add(f.offset() as usize), f.valid_length() as usize) };
                    frame.extend_from_slice(data);
                    if k == 0 && toy.bug == Bug::WriteTxPayload {
                        // SAFETY: inside the fragment; writing OS-owned
                        // payload is the bug under test.
                        unsafe { base.add(f.offset() as usize + toy.tx_backfill).write(0xFF) };
                    }
                    if toy.bug == Bug::ModifyTxValidLength {
                        let shorter = f.valid_length() - 1;
                        rings.fragments.get_mut(fi).unwrap().set_valid_length(shorter).unwrap();
                    }
                }
                toy.transmitted.lock().unwrap().push(frame[toy.tx_backfill..].to_vec());
            }
            rings.packets.get_mut(index).unwrap().set_scratch(true);
        }
        let end = rings.packets.end();
        rings.packets.set_next(end).unwrap();
        if any {
            toy.tx_done_pending.store(true, Ordering::Release);
        }
    }

    fn set_notification_enabled(&self, enabled: bool) {
        self.toy.tx_armed.store(enabled, Ordering::Release);
        // Completions are ready at once: notify if armed.
        if enabled
            && self.toy.tx_done_pending.swap(false, Ordering::AcqRel)
            && self.toy.tx_armed.swap(false, Ordering::AcqRel)
        {
            self.toy.notifier.notify_tx();
        }
    }

    fn cancel(&self) {}

    fn stop(&self) {
        self.toy.tx_armed.store(false, Ordering::Release);
    }
}

impl AdapterDatapath for ToyAdapter {
    type RxQueue = ToyRxQueue;
    type TxQueue = ToyTxQueue;

    unsafe fn create_rx_queue(
        &self,
        rings: NonNull<NetRingCollection>,
        extensions: QueueExtensions,
    ) -> Result<ToyRxQueue, NtStatus> {
        // SAFETY: the model hands a live collection and extensions of this
        // queue (create_rx_queue's contract).
        let state = unsafe {
            let rings = QueueRings::from_collection(rings.as_ptr()).map_err(|_| NtStatus::INVALID_PARAMETER)?;
            let va = Extension::from_queried(&extensions.fragment_virtual_address)
                .map_err(|_| NtStatus::INVALID_PARAMETER)?;
            let rc_ext = extensions.fragment_return_context.as_ref().ok_or(NtStatus::INVALID_PARAMETER)?;
            let rc = Extension::from_queried(rc_ext).map_err(|_| NtStatus::INVALID_PARAMETER)?;
            RxState { rings, va, rc, indicated: 0 }
        };
        Ok(ToyRxQueue { toy: self.toy.clone(), state: Mutex::new(state) })
    }

    unsafe fn create_tx_queue(
        &self,
        rings: NonNull<NetRingCollection>,
        extensions: QueueExtensions,
    ) -> Result<ToyTxQueue, NtStatus> {
        // SAFETY: as for the RX queue.
        let state = unsafe {
            let rings = QueueRings::from_collection(rings.as_ptr()).map_err(|_| NtStatus::INVALID_PARAMETER)?;
            let va = Extension::from_queried(&extensions.fragment_virtual_address)
                .map_err(|_| NtStatus::INVALID_PARAMETER)?;
            TxState { rings, va }
        };
        Ok(ToyTxQueue { toy: self.toy.clone(), state: Mutex::new(state) })
    }

    fn return_rx_buffer(&self, return_context: usize) {
        self.toy.release(return_context - 1);
    }
}

fn setup(bug: Bug, config: ModelConfig) -> (Arc<Toy>, HostNetAdapter<ToyAdapter>) {
    let verifier = Verifier::new();
    let notifier = Notifier::new(verifier.clone());
    let toy = Arc::new(Toy {
        notifier: notifier.clone(),
        verifier,
        bug,
        tx_backfill: config.tx_backfill as usize,
        pending: Mutex::default(),
        slots: Mutex::default(),
        rx_armed: AtomicBool::new(false),
        rx_paused: AtomicBool::new(false),
        next_indication: AtomicUsize::new(1),
        dropped_on_cancel: AtomicUsize::new(0),
        transmitted: Mutex::default(),
        tx_armed: AtomicBool::new(false),
        tx_done_pending: AtomicBool::new(false),
    });
    let adapter = HostNetAdapter::new(Arc::new(ToyAdapter { toy: toy.clone() }), notifier, config);
    (toy, adapter)
}

/// A recognisable datagram: an IPv4-looking first byte, then a counter.
fn datagram(n: usize, len: usize) -> Vec<u8> {
    let mut d: Vec<u8> = (0..len).map(|i| (i * 7 + n) as u8).collect();
    d[0] = 0x45;
    d
}

fn chunks(d: &[u8], parts: usize) -> Vec<&[u8]> {
    let size = d.len().div_ceil(parts);
    d.chunks(size).collect()
}

#[test]
fn a_correct_datapath_survives_traffic_cancel_with_buffers_out_stop_and_recreate() {
    let config = ModelConfig {
        rx_checksum: true,
        rx_mdl_pool: 12,
        hold: Hold::For(Duration::from_millis(20)),
        tx_backfill: 16,
        tx_first_fragment_offset: 3,
        ..ModelConfig::default()
    };
    let (toy, mut adapter) = setup(Bug::None, config);
    let mut injected = 0;
    let mut delivered_before = 0;
    let mut completed_before = 0;
    for generation in 0..2 {
        adapter.start().unwrap();
        // RX from two "WSK" threads at once; 1 to 3 fragments each.
        let expected: Vec<Vec<u8>> = (0..120).map(|n| datagram(n + 1000 * generation, 40 + n * 9)).collect();
        thread::scope(|s| {
            for half in expected.chunks(60) {
                let toy = &toy;
                s.spawn(move || {
                    for (i, d) in half.iter().enumerate() {
                        toy.inject(&chunks(d, 1 + i % 3));
                    }
                });
            }
        });
        injected += expected.len();
        // TX meanwhile: 1 to 4 fragments, every fifth packet ignored.
        let mut sent = Vec::new();
        for n in 0..100 {
            let packet = if n % 5 == 4 {
                TxPacket::ignored()
            } else {
                TxPacket::new(datagram(n, 60 + n * 13)).split(1 + (n % 4) as u16)
            };
            sent.push((adapter.send(packet.clone()), packet));
        }
        assert!(adapter.wait_delivered(delivered_before + expected.len(), WAIT), "RX delivered");
        assert!(adapter.wait_completed(completed_before + sent.len(), WAIT), "TX completed");

        let mut got: Vec<Vec<u8>> = adapter.delivered()[delivered_before..].iter().map(|p| p.bytes.clone()).collect();
        let mut want = expected.clone();
        got.sort();
        want.sort();
        assert_eq!(got, want, "every RX byte arrives, whatever the fragment split");
        assert!(adapter.delivered().iter().all(|p| p.checksum.is_some()));

        let completed = &adapter.completed()[completed_before..];
        let ids: Vec<u64> = completed.iter().map(|c| c.id).collect();
        assert_eq!(ids, sent.iter().map(|(id, _)| *id).collect::<Vec<_>>(), "completions in ring order");
        assert_eq!(completed.iter().filter(|c| c.ignored).count(), 20);
        let transmitted: Vec<Vec<u8>> = toy.transmitted.lock().unwrap().drain(..).collect();
        let wanted: Vec<Vec<u8>> = sent.iter().filter(|(_, p)| !p.ignore).map(|(_, p)| p.payload.clone()).collect();
        assert_eq!(transmitted, wanted, "the driver read each frame after the backfill, honouring Offset");

        // A burst, then stop at once: buffers are held upstream and queued
        // in the driver (the MDL pool is smaller than the burst).
        for n in 0..40 {
            toy.inject(&[&datagram(n, 100)]);
        }
        injected += 40;
        adapter.stop();
        assert!(!adapter.is_running());
        // Stop joins the poll threads: burst packets the driver indicated
        // before the cancel are delivered during it, so count after it.
        delivered_before = adapter.delivered().len();
        completed_before = adapter.completed().len();
    }
    adapter.finish();
    let stats = adapter.stats();
    assert_eq!(adapter.delivered().len() + toy.dropped_on_cancel.load(Ordering::Relaxed), injected);
    assert_eq!(stats.rx_packets_indicated as usize, adapter.delivered().len());
    assert!(stats.rx_max_held_fragments <= 12, "the MDL pool bounds what is held: {stats:?}");
    assert!(stats.rx_notifies > 0, "the RX queue slept and was woken: {stats:?}");
    assert_eq!(stats.unarmed_notifies, 0);
    assert_eq!(stats.tx_packets_completed, 200);
    assert!(adapter.verifier().leaks().is_empty());
    adapter.assert_clean();
}

#[test]
fn buffers_held_upstream_shrink_the_fragments_offered() {
    let config = ModelConfig { rx_mdl_pool: 4, hold: Hold::UntilReleased, ..ModelConfig::default() };
    let (toy, mut adapter) = setup(Bug::None, config);
    adapter.start().unwrap();
    for n in 0..10 {
        toy.inject(&[&datagram(n, 64)]);
    }
    assert!(adapter.wait_delivered(4, WAIT));
    thread::sleep(Duration::from_millis(50));
    assert_eq!(adapter.delivered().len(), 4, "no fragment slot while four are held upstream");
    adapter.release_held();
    assert!(adapter.wait_delivered(8, WAIT));
    adapter.release_held();
    assert!(adapter.wait_delivered(10, WAIT));
    adapter.release_held();
    adapter.assert_clean();
}

#[test]
fn an_upper_layer_that_never_returns_fails_the_stop() {
    let config = ModelConfig {
        hold: Hold::UntilReleased,
        upper_layer_timeout: Duration::from_millis(100),
        ..ModelConfig::default()
    };
    let (toy, mut adapter) = setup(Bug::None, config);
    adapter.start().unwrap();
    toy.inject(&[&datagram(1, 64)]);
    assert!(adapter.wait_delivered(1, WAIT));
    adapter.finish();
    let v = adapter.verifier();
    assert_eq!(v.count(Rule::UpperLayerTimeout), 1, "{:?}", v.violations());
    // The buffer is still returned before Stop, never after.
    assert!(v.leaks().is_empty());
}

/// Runs `scenario` on a toy with `bug` and returns the verifier.
fn caught(bug: Bug, config: ModelConfig, scenario: impl FnOnce(&Toy, &HostNetAdapter<ToyAdapter>)) -> Arc<Verifier> {
    let (toy, mut adapter) = setup(bug, config);
    adapter.start().unwrap();
    scenario(&toy, &adapter);
    adapter.finish();
    adapter.verifier().clone()
}

#[test]
fn an_index_moving_backwards_is_caught() {
    let v = caught(Bug::BeginBackwards, ModelConfig::default(), |toy, adapter| {
        toy.inject(&[&datagram(1, 64)]);
        assert!(adapter.wait_delivered(1, WAIT));
        toy.inject(&[&datagram(2, 64)]);
        thread::sleep(Duration::from_millis(50));
    });
    assert!(v.has(Rule::IndexBackwards), "{:?}", v.violations());
}

#[test]
fn writing_an_element_the_driver_does_not_own_is_caught() {
    let v = caught(Bug::WriteUnownedElement, ModelConfig::default(), |toy, adapter| {
        toy.inject(&[&datagram(1, 64)]);
        assert!(adapter.wait_delivered(1, WAIT));
    });
    let hits: Vec<_> = v.violations().into_iter().filter(|x| x.rule == Rule::UnownedWrite).collect();
    assert!(!hits.is_empty() && hits[0].message.contains("packet ring element"), "{:?}", v.violations());
}

#[test]
fn a_return_context_indicated_twice_is_returned_twice_and_caught() {
    let config = ModelConfig { hold: Hold::UntilReleased, ..ModelConfig::default() };
    let v = caught(Bug::ReuseReturnContext, config, |toy, adapter| {
        toy.inject(&[&datagram(1, 64)]);
        toy.inject(&[&datagram(2, 64)]);
        assert!(adapter.wait_delivered(2, WAIT));
        adapter.release_held();
    });
    assert!(v.has(Rule::LentTwice), "{:?}", v.violations());
    assert!(v.has(Rule::ReturnedTwice), "{:?}", v.violations());
}

#[test]
fn an_indication_released_twice_is_caught() {
    let v = caught(Bug::ReleaseTwice, ModelConfig::default(), |toy, adapter| {
        toy.inject(&[&datagram(1, 64)]);
        assert!(adapter.wait_delivered(1, WAIT));
    });
    let twice: Vec<_> = v.violations().into_iter().filter(|x| x.rule == Rule::ReturnedTwice).collect();
    assert!(!twice.is_empty() && twice[0].message.contains("IndicationList"), "{:?}", v.violations());
}

#[test]
fn an_indication_never_released_is_a_leak() {
    let v = caught(Bug::LeakQueuedOnCancel, ModelConfig::default(), |toy, _| {
        toy.rx_paused.store(true, Ordering::Release);
        for n in 0..3 {
            toy.inject(&[&datagram(n, 64)]);
        }
    });
    assert!(v.violations().is_empty(), "{:?}", v.violations());
    let leaks = v.leaks();
    assert_eq!(leaks.len(), 3);
    assert!(leaks.iter().all(|l| l.kind == LoanKind::IndicationList));
    let panic = std::panic::catch_unwind(|| v.assert_clean()).unwrap_err();
    assert!(panic.downcast_ref::<String>().unwrap().contains("never given back"));
}

#[test]
fn a_fragment_pointing_into_released_memory_is_caught() {
    let v = caught(Bug::IndicateReleasedMemory, ModelConfig::default(), |toy, _| {
        toy.inject(&[&datagram(1, 64)]);
        thread::sleep(Duration::from_millis(50));
    });
    assert_eq!(v.count(Rule::ReleasedMemory), 1, "{:?}", v.violations());
}

#[test]
fn notifying_a_stopped_queue_is_caught() {
    let (toy, mut adapter) = setup(Bug::NotifyAfterStop, ModelConfig::default());
    adapter.start().unwrap();
    toy.inject(&[&datagram(1, 64)]);
    assert!(adapter.wait_delivered(1, WAIT));
    thread::sleep(Duration::from_millis(20));
    adapter.stop();
    toy.inject(&[&datagram(2, 64)]);
    assert!(adapter.verifier().has(Rule::NotifyWithoutQueue), "{:?}", adapter.verifier().violations());
}

#[test]
fn writing_tx_payload_is_caught() {
    let config = ModelConfig { tx_backfill: 8, ..ModelConfig::default() };
    let v = caught(Bug::WriteTxPayload, config, |_, adapter| {
        adapter.send(TxPacket::new(datagram(1, 100)));
        assert!(adapter.wait_completed(1, WAIT));
    });
    assert_eq!(v.count(Rule::TxPayloadModified), 1, "{:?}", v.violations());
    assert!(!v.has(Rule::TxFieldModified));
}

#[test]
fn modifying_a_tx_fragment_valid_length_is_caught() {
    let v = caught(Bug::ModifyTxValidLength, ModelConfig::default(), |_, adapter| {
        adapter.send(TxPacket::new(datagram(1, 100)).split(2));
        assert!(adapter.wait_completed(1, WAIT));
    });
    assert_eq!(v.count(Rule::TxFieldModified), 2, "{:?}", v.violations());
}

#[test]
fn never_advancing_the_tx_fragment_ring_stalls_and_is_caught() {
    let config = ModelConfig { stop_timeout: Duration::from_millis(200), ..ModelConfig::default() };
    let v = caught(Bug::NoTxFragmentAdvance, config, |_, adapter| {
        for n in 0..40 {
            adapter.send(TxPacket::new(datagram(n, 100)).split(2));
        }
        thread::sleep(Duration::from_millis(200));
        // 31 fragment slots hold at most 15 two-fragment packets.
        assert!(adapter.completed().len() < 40);
    });
    assert!(v.has(Rule::TxFragmentStall), "{:?}", v.violations());
    assert!(v.has(Rule::StopTimeout), "{:?}", v.violations());
}
