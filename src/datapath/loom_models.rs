//! Loom models of the data path's cross-CPU hand-offs (docs/datapath.md,
//! "RX ownership" and "TX ownership"), over the real `rx`, `tx` and
//! `socket` code and the fakes of `super::tests`. Under `cfg(loom)` every
//! `SpinLock` is loom's mutex and every hand-off atomic is loom's
//! (`crate::os::sync`), so loom runs each model once per distinct
//! interleaving of them (bounded by LOOM_MAX_PREEMPTIONS) and fails on a
//! broken assertion, a deadlock or an unsynchronised atomic access.
//!
//! Run with `scripts/loom-ci.sh`. The tables are a few entries long under
//! loom (`datapath::table`); the fakes' own bookkeeping uses `std` locks,
//! which never block here (loom runs one thread at a time and never
//! switches inside them).

use super::tests::{FakeOs, FakePeers, Harness, Indication, OsQueue, RING, end_rx, ipv4, rx_queue, tx_queue};
use super::*;
use crate::crypto::slots::SlotIndex;
use crate::os::{PacketQueue, SendSlot, SocketEvents};
use core::ops::Range;
use core::sync::atomic::Ordering;
use loom::thread;
use std::vec::Vec;

/// Stack of every modelled CPU (loom's default of 32 KiB is too small
/// for the crypto and the fakes, at least in a debug build).
const CPU_STACK: usize = 1 << 20;

/// Runs `body` on a CPU with a full-size stack, once per interleaving.
/// Prints how many interleavings it ran.
fn model(body: fn()) {
    let runs = Arc::new(core::sync::atomic::AtomicUsize::new(0));
    let counted = runs.clone();
    loom::model(move || {
        counted.fetch_add(1, Ordering::Relaxed);
        thread::Builder::new().stack_size(CPU_STACK).spawn(body).unwrap().join().unwrap();
    });
    std::println!("{} interleavings", runs.load(Ordering::Relaxed));
}

fn on_another_cpu<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> thread::JoinHandle<T> {
    thread::Builder::new().stack_size(CPU_STACK).spawn(f).unwrap()
}

/// One indication list delivered on a CPU of its own.
struct OnCpu {
    head: usize,
    bytes: Vec<Range<usize>>,
    cpu: thread::JoinHandle<(NtStatus, Indication)>,
}

fn deliver_on_another_cpu(events: &Arc<dyn SocketEvents>, mut list: Indication) -> OnCpu {
    let events = events.clone();
    let (head, bytes) = (list.head().as_ptr() as usize, list.buffers());
    let cpu = on_another_cpu(move || (list.deliver(&events), list));
    OnCpu { head, bytes, cpu }
}

/// NetAdapterCx's side of the RX rings: offers the whole ring, advances,
/// and returns every packet it got. Before each return it checks that the
/// list holding the plaintext was not released while the packet was queued
/// or up the stack. Returns how many packets came.
fn poll_and_return(
    h: &Harness,
    q: &OsQueue,
    rxq: &rx::RxQueue<FakeOs, FakePeers>,
    lists: &[(usize, Vec<Range<usize>>)],
) -> u32 {
    let mask = RING - 1;
    let (pb, fb) = (q.packet_begin(), q.fragment_begin());
    q.packets.set_end((pb + mask) & mask);
    q.fragments.set_end((fb + mask) & mask);
    rxq.advance();
    let n = q.packet_begin().wrapping_sub(pb) & mask;
    for k in 0..n {
        let fragment = q.packet((pb + k) & mask).fragment_index;
        let at = q.fragment_address(fragment);
        let released = h.os.state().released.lock().unwrap().clone();
        for (head, bytes) in lists {
            if bytes.iter().any(|b| b.contains(&at)) {
                assert!(!released.contains(head), "a list was released while its datagram was up the stack");
            }
        }
        h.dp.return_rx_buffer(q.return_context(fragment));
    }
    n
}

/// Each list released once iff its event answered STATUS_PENDING.
fn assert_released_once_iff_retained(h: &Harness, lists: &[(usize, NtStatus)]) {
    let released = h.os.state().released.lock().unwrap().clone();
    for (head, status) in lists {
        let times = released.iter().filter(|r| *r == head).count();
        assert_eq!(times, usize::from(*status == NtStatus::PENDING), "released once iff retained ({status:?})");
    }
    assert_eq!(released.len(), lists.iter().filter(|(_, s)| *s == NtStatus::PENDING).count());
}

/// (a) WskReceiveFromEvent on two CPUs vs RX Advance vs
/// EvtAdapterReturnRxBuffer, meeting on the indication records' reference
/// counts: every datagram is indicated once, every retained list released
/// exactly once, never while one of its datagrams is out.
#[test]
fn loom_two_receive_events_advance_and_returns_release_each_list_once() {
    model(|| {
        let mut h = Harness::new(2);
        let mut q = OsQueue::new();
        let rxq = rx_queue(&h, &mut q);
        let events = h.os.events();
        let cpus = [
            deliver_on_another_cpu(&events, Indication::single(&[h.seal(&ipv4(40, 1))])),
            deliver_on_another_cpu(&events, Indication::single(&[h.seal(&ipv4(40, 2))])),
        ];
        let spans: Vec<(usize, Vec<Range<usize>>)> = cpus.iter().map(|c| (c.head, c.bytes.clone())).collect();
        // The poll on a third CPU, racing both events.
        let mut indicated = poll_and_return(&h, &q, &rxq, &spans);
        let done: Vec<(usize, NtStatus, Indication)> = cpus
            .into_iter()
            .map(|c| {
                let (status, list) = c.cpu.join().unwrap();
                (c.head, status, list)
            })
            .collect();
        indicated += poll_and_return(&h, &q, &rxq, &spans);
        assert_eq!(indicated, 2, "each datagram indicated once");
        let statuses: Vec<_> = done.iter().map(|(head, status, _)| (*head, *status)).collect();
        assert_released_once_iff_retained(&h, &statuses);
        end_rx(&rxq);
        drop(rxq);
        drop(h);
    });
}

/// (a') A stale EvtAdapterReturnRxBuffer (an OS returning a context a
/// second time) on another CPU races the refill of that slot by the next
/// datagram, its indication and its real return; the driver's side and the
/// stale return meet only on the slot's state. Whichever comes first,
/// exactly one of the two returns is refused and counted, each list is
/// released once, and every slot ends free. Loom's `UnsafeCell` fails the
/// model on any access to the slot's fields the hand-off does not order
/// (a Relaxed publication of INDICATED, say).
#[test]
fn loom_a_stale_return_races_a_refill_of_its_slot() {
    model(|| {
        let mut h = Harness::new(2);
        let mut q = OsQueue::new();
        let rxq = rx_queue(&h, &mut q);
        let events = h.os.events();
        let mut first = Indication::single(&[h.seal(&ipv4(40, 1))]);
        assert_eq!(first.deliver(&events), NtStatus::PENDING);
        let mask = RING - 1;
        q.packets.set_end(mask);
        q.fragments.set_end(mask);
        rxq.advance();
        let context = q.return_context(0);
        h.dp.return_rx_buffer(context);

        let shared = h.dp.shared.clone();
        let stale = on_another_cpu(move || rx::return_buffer(&shared, context));

        let mut second = Indication::single(&[h.seal(&ipv4(40, 2))]);
        assert_eq!(second.deliver(&events), NtStatus::PENDING);
        rxq.advance();
        assert_eq!(q.packet_begin(), 2, "the second datagram indicated");
        let refill = q.return_context(q.packet(1).fragment_index);
        assert_eq!(refill, context, "the next datagram reuses the returned slot");
        h.dp.return_rx_buffer(refill);
        stale.join().unwrap();

        assert_eq!(h.dp.drops().get(DropReason::RxBadReturnContext), 1, "one of the two returns refused");
        let released = h.os.state().released.lock().unwrap().clone();
        let heads = [first.head().as_ptr() as usize, second.head().as_ptr() as usize];
        for head in heads {
            assert_eq!(released.iter().filter(|r| **r == head).count(), 1, "each list released once");
        }
        end_rx(&rxq);
        assert_eq!(h.dp.occupancy(), Occupancy::default());
        drop(rxq);
        drop(h);
    });
}

/// (b) Send completions vs TX Advance's drain, and (c, TX) the one-shot
/// notification: the transport completes two sends in reverse order on its
/// own CPU while the poll drains and, having drained nothing new, arms
/// notification. Scratch set by a completion is what the drain sees: no
/// packet is returned before its own completion, all come back in ring
/// order, each send slot is freed exactly once, and a poll that armed is
/// woken (no lost wake-up).
#[test]
fn loom_send_completions_vs_tx_advance_drain_in_order_and_wake_the_poll() {
    model(|| {
        let h = Harness::new(2);
        let mut q = OsQueue::new();
        let packets = [ipv4(40, 1), ipv4(40, 2)];
        let txq = tx_queue(&h, &mut q);
        q.post_each(&packets);
        txq.advance();
        let state = h.os.state();
        let sent = state.sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 2, "both posted");
        let events = h.os.events();
        let completing = Arc::new(core::sync::atomic::AtomicUsize::new(0));
        let started = completing.clone();
        let transport = on_another_cpu(move || {
            for (slot, wire, _) in sent.iter().rev() {
                started.fetch_add(1, Ordering::SeqCst);
                events.send_complete(SendSlot(*slot), NtStatus::SUCCESS, wire.len());
            }
        });
        // Packet 0's completion is the second one.
        poll_against(&h, &q, &txq, transport, || completing.load(Ordering::SeqCst) == 2);
        drop(txq);
        drop(h);
    });
}

/// (b') The same with a transport that batches (WskSendMessages): one
/// completion for both packets, on the transport's CPU, against the poll's
/// drain and arming. No packet comes back before the batch's completion
/// began; both come back, in order; both slots are freed once; no lost
/// wake-up.
#[test]
fn loom_a_batch_completion_vs_tx_advance_drains_both_and_wakes_the_poll() {
    model(|| {
        let h = Harness::new(2);
        let mut q = OsQueue::new();
        let packets = [ipv4(40, 1), ipv4(40, 2)];
        let txq = tx_queue(&h, &mut q);
        let state = h.os.state();
        state.batching.store(true, Ordering::SeqCst);
        q.post_each(&packets);
        txq.advance();
        let batches = state.batches.lock().unwrap().clone();
        assert_eq!(batches.iter().map(|b| b.len()).collect::<std::vec::Vec<_>>(), [2], "one batch of both");
        let bytes: usize = state.sent.lock().unwrap().iter().map(|(_, w, _)| w.len()).sum();
        let events = h.os.events();
        let completing = Arc::new(core::sync::atomic::AtomicBool::new(false));
        let started = completing.clone();
        let first = batches[0][0];
        let transport = on_another_cpu(move || {
            started.store(true, Ordering::SeqCst);
            events.send_batch_complete(SendSlot(first), NtStatus::SUCCESS, bytes);
        });
        // The completion marks the batch's packets one by one: the drain may
        // catch it between them, never before it began.
        poll_against(&h, &q, &txq, transport, || completing.load(Ordering::SeqCst));
        drop(txq);
        drop(h);
    });
}

/// The poll's side of both TX models, against the completions running on
/// `transport`'s CPU: an Advance that drains what it may, never a packet
/// whose completion had not begun (`began`: packet 0's has), arming
/// notification if it did not drain both; then, with the transport's CPU
/// done, a poll that armed was woken, and the end below.
fn poll_against(
    h: &Harness,
    q: &OsQueue,
    txq: &tx::TxQueue<FakeOs, FakePeers>,
    transport: thread::JoinHandle<()>,
    began: impl Fn() -> bool,
) {
    txq.advance();
    let drained = q.packet_begin();
    assert!(drained == 0 || began(), "packet 0 drained before its completion began");
    if drained != 2 {
        txq.set_notification_enabled(true);
    }
    transport.join().unwrap();
    assert!(drained == 2 || h.os.tx_notified.load(Ordering::SeqCst) > 0, "an armed poll was not woken");
    both_sent_back_and_both_slots_free_once(h, q, txq);
}

/// The end of both TX models, after the completions: one more Advance
/// returns both packets in ring order with nothing in flight or dropped,
/// and both send slots are free, each only once (two control packets fit,
/// a third does not).
fn both_sent_back_and_both_slots_free_once(h: &Harness, q: &OsQueue, txq: &tx::TxQueue<FakeOs, FakePeers>) {
    txq.advance();
    assert_eq!((q.packet_begin(), q.fragment_begin()), (2, 2), "every packet back, in order");
    assert_eq!((txq.in_flight(), h.dp.drops().total()), (0, 0));
    assert_eq!(h.dp.stats().snapshot().sent_data_packets, 2);
    tests::control_fills_every_slot(h, 2);
}

/// (c, RX) The one-shot RX notification: a datagram arrives on another CPU
/// while the poll finds nothing and arms. Either the poll got it or the
/// queue is notified.
#[test]
fn loom_rx_notification_armed_against_a_receive_is_never_lost() {
    model(|| {
        let mut h = Harness::new(2);
        let mut q = OsQueue::new();
        let rxq = rx_queue(&h, &mut q);
        let events = h.os.events();
        let cpu = deliver_on_another_cpu(&events, Indication::single(&[h.seal(&ipv4(40, 1))]));
        let spans = std::vec![(cpu.head, cpu.bytes.clone())];
        let got = poll_and_return(&h, &q, &rxq, &spans);
        if got == 0 {
            rxq.set_notification_enabled(true);
        }
        let (status, _list) = cpu.cpu.join().unwrap();
        assert!(
            got == 1 || h.os.rx_notified.load(Ordering::SeqCst) > 0,
            "an armed poll was not woken: {:?} {:?} {}",
            status,
            h.dp.occupancy(),
            h.dp.drops().total()
        );
        let got = got + poll_and_return(&h, &q, &rxq, &spans);
        assert_eq!(got, 1);
        assert_released_once_iff_retained(&h, &[(cpu.head, status)]);
        end_rx(&rxq);
        drop(rxq);
        drop(h);
    });
}

/// (d) NEW_KEY / SWAP_KEYS vs a packet in flight: while a datagram sealed
/// with key 1 is received on another CPU, the control plane makes key 2
/// primary and then replaces key 1. The RX key slots are lock-based, so
/// the packet is either decrypted with key 1 and delivered intact, or
/// dropped and counted once; its list is released either way.
#[test]
fn loom_key_swap_vs_a_packet_in_flight_delivers_or_counts_it_once() {
    model(|| {
        let mut h = Harness::new(2);
        let mut q = OsQueue::new();
        let rxq = rx_queue(&h, &mut q);
        let plain = ipv4(40, 7);
        let events = h.os.events();
        let cpu = deliver_on_another_cpu(&events, Indication::single(&[h.seal(&plain)]));
        tests::install_rx_key(&h.peer, SlotIndex::Secondary, 2);
        h.peer.rx.lock().swap();
        tests::install_rx_key(&h.peer, SlotIndex::Secondary, 3);
        let (status, _list) = cpu.cpu.join().unwrap();
        let mask = RING - 1;
        q.packets.set_end(mask);
        q.fragments.set_end(mask);
        rxq.advance();
        let delivered = q.packet_begin();
        if delivered == 1 {
            assert_eq!(q.fragment_bytes(0), plain);
            h.dp.return_rx_buffer(q.return_context(0));
        }
        assert_eq!(u64::from(delivered) + h.dp.drops().total(), 1, "delivered or counted, once");
        assert_released_once_iff_retained(&h, &[(cpu.head, status)]);
        end_rx(&rxq);
        drop(rxq);
        drop(h);
    });
}

/// Teardown vs a receive: the glue closes the socket (DELETE_PEER) while a
/// datagram is being received on another CPU, then stops the RX queue and
/// closes again. The close waits for a list retained concurrently (the
/// count is raised before the detach is checked), the list is released
/// before WskCloseSocket (the fake fails a release after close), and the
/// second close completes.
#[test]
fn loom_close_vs_a_receive_releases_before_closing() {
    model(|| {
        let mut h = Harness::new(2);
        let mut q = OsQueue::new();
        let rxq = rx_queue(&h, &mut q);
        let events = h.os.events();
        let cpu = deliver_on_another_cpu(&events, Indication::single(&[h.seal(&ipv4(40, 1))]));
        let first = h.dp.close_transport();
        let (status, _list) = cpu.cpu.join().unwrap();
        end_rx(&rxq);
        assert_eq!(h.dp.close_transport(), CloseProgress::Closed, "after {first:?}");
        assert_released_once_iff_retained(&h, &[(cpu.head, status)]);
        drop(rxq);
        drop(h);
    });
}

/// Teardown vs a send completion: the socket is closed while the last
/// send completes on the transport's CPU; the close waits for it and then
/// completes, and the slot is freed once.
#[test]
fn loom_close_vs_a_send_completion_waits_for_it() {
    model(|| {
        let h = Harness::new(1);
        h.dp.send_control(tests::remote(), &[0x38, 1]).unwrap();
        let (slot, wire, _) = h.os.state().sent.lock().unwrap()[0].clone();
        let events = h.os.events();
        let transport = on_another_cpu(move || events.send_complete(SendSlot(slot), NtStatus::SUCCESS, wire.len()));
        let first = h.dp.close_transport();
        transport.join().unwrap();
        assert_eq!(h.dp.close_transport(), CloseProgress::Closed, "after {first:?}");
        // The send counted as sent (the device counts WriteFile; the data
        // path counts only failures) and nothing is left in flight.
        assert_eq!(h.dp.stats().snapshot().lost_out_control_packets, 0);
        assert_eq!(h.dp.occupancy().sends_in_flight, 0);
        drop(h);
    });
}
