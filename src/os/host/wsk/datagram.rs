//! A modelled WSK datagram socket: receive pool + send engine + a wire
//! (a real UDP socket, or the in-memory [`LoopbackHub`](super::loopback::LoopbackHub)).

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::SocketAddr;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::super::wake::Wakeup;
use std::thread::JoinHandle;

use super::Common;
use super::loopback::Hub;
use super::rx::{Filled, LIST_LEN_MAX, ReceivePool};
use super::send::{Outgoing, POLL_INTERVAL, TxEngine, Wire, WireResult};
use super::stats::{SocketCounters, SocketStats, bump};
use super::udp::UdpWire;
use super::verifier::{SocketId, Violation, WskVerifier, lock};
use crate::netcx::wsk::WskDatagramIndication;
use crate::ntstatus::NtStatus;
use crate::os::{SEND_SLOT_SIZE, SendSlot, SocketEvents, Transport};

/// Where a datagram socket's sends go.
pub(crate) enum DatagramWire {
    Udp(UdpWire),
    Loopback { hub: Arc<Hub>, local: SocketAddr },
}

impl Wire for DatagramWire {
    fn transmit(&self, batch: &[Outgoing], results: &mut [WireResult]) {
        match self {
            Self::Udp(w) => w.transmit(batch, results),
            Self::Loopback { hub, local } => {
                for (o, r) in batch.iter().zip(results.iter_mut()) {
                    // SAFETY: the send is in flight until its completion,
                    // which comes after this returns.
                    hub.route(*local, o.remote, unsafe { o.bytes() });
                    *r = (NtStatus::SUCCESS, o.len);
                }
            }
        }
    }
}

/// Datagrams written into receive buffers, waiting for a receive event.
#[derive(Default)]
struct Arrivals {
    ready: VecDeque<Filled>,
    /// Reordered datagrams: each waits for this many later arrivals.
    held: VecDeque<(usize, Filled)>,
}

/// The shared state of one datagram socket (its threads hold it too).
pub(crate) struct DatagramInner {
    pub id: SocketId,
    pub verifier: Arc<WskVerifier>,
    pub counters: Arc<SocketCounters>,
    pub events: Arc<dyn SocketEvents>,
    pub rx: ReceivePool,
    pub tx: TxEngine,
    pub wire: DatagramWire,
    pub local: SocketAddr,
    /// SIO_WSK_SET_REMOTE_ADDRESS: only datagrams from here are indicated.
    pub remote_filter: Option<SocketAddr>,
    pub closed: AtomicBool,
    arrivals: Mutex<Arrivals>,
    arrived: Wakeup,
}

impl DatagramInner {
    pub fn new(
        common: Common,
        rx: ReceivePool,
        tx: TxEngine,
        wire: DatagramWire,
        local: SocketAddr,
        remote_filter: Option<SocketAddr>,
    ) -> Self {
        Self {
            id: common.id,
            verifier: common.verifier,
            counters: common.counters,
            events: common.events,
            rx,
            tx,
            wire,
            local,
            remote_filter,
            closed: AtomicBool::new(false),
            arrivals: Mutex::new(Arrivals::default()),
            arrived: Wakeup::new(),
        }
    }

    /// Whether a datagram from `from` passes the remote-address filter.
    pub fn accepts(&self, from: SocketAddr) -> bool {
        // A dual-stack socket sees IPv4 peers as IPv4-mapped IPv6 addresses.
        let canon = |a: SocketAddr| (a.ip().to_canonical(), a.port());
        let ok = self.remote_filter.is_none_or(|r| canon(r) == canon(from));
        if !ok {
            bump(&self.counters.rx_filtered, 1);
        }
        ok
    }

    /// The loopback wire writes a datagram into one of this socket's
    /// receive buffers (the one copy a NIC makes); `hold` delays it behind
    /// that many later arrivals (reordering). False if the socket did not
    /// take it (closed, filtered, too long, no free receive buffer).
    pub fn arrive(&self, bytes: &[u8], from: SocketAddr, hold: Option<usize>) -> bool {
        if self.closed.load(Ordering::Acquire) || !self.accepts(from) {
            return false;
        }
        let len = bytes.len();
        if len > self.rx.capacity() {
            bump(&self.counters.rx_truncated, 1);
            return false;
        }
        let Some(buffer) = self.rx.take_buffer() else {
            bump(&self.counters.rx_dropped_no_buffer, 1);
            return false;
        };
        let split_at = self.rx.split_point(Some(len));
        let parts = self.rx.parts(buffer, Some(len), split_at);
        let (first, second) = bytes.split_at(parts.first_len.min(len));
        // SAFETY: the buffer came off the free list, so it is the model's
        // (no list holds it); `parts` lies inside it and fits `len` bytes.
        unsafe {
            core::ptr::copy_nonoverlapping(first.as_ptr(), parts.first, first.len());
            if !second.is_empty() {
                core::ptr::copy_nonoverlapping(second.as_ptr(), parts.second, second.len());
            }
        }
        let filled = Filled { buffer, len, split_at: split_at.filter(|&k| k < len), from };
        let mut a = lock(&self.arrivals);
        match hold {
            Some(n) => a.held.push_back((n, filled)),
            None => {
                a.ready.push_back(filled);
                // Held datagrams fall one arrival further behind; those whose
                // wait is over follow the one that just overtook them.
                for h in a.held.iter_mut() {
                    h.0 = h.0.saturating_sub(1);
                }
                while let Some(pos) = a.held.iter().position(|h| h.0 == 0) {
                    if let Some((_, f)) = a.held.remove(pos) {
                        a.ready.push_back(f);
                    }
                }
            }
        }
        drop(a);
        self.arrived.notify_all();
        true
    }

    /// Releases every held (reordered) datagram: nothing more is coming.
    pub fn flush_held(&self) -> usize {
        let mut a = lock(&self.arrivals);
        let n = a.held.len();
        while let Some((_, f)) = a.held.pop_front() {
            a.ready.push_back(f);
        }
        n
    }

    /// One receive event with up to a list's worth of waiting datagrams.
    /// Returns how many it indicated (0: none waiting, or no list record).
    pub fn deliver(&self) -> usize {
        if lock(&self.arrivals).ready.is_empty() {
            return 0;
        }
        let Some(list) = self.rx.take_list() else { return 0 };
        let want = self.rx.next_list_len().min(LIST_LEN_MAX);
        // On the stack: one receive event, no allocation.
        let mut batch = [Filled::EMPTY; LIST_LEN_MAX];
        let n = {
            let mut a = lock(&self.arrivals);
            let n = want.min(a.ready.len());
            for (slot, f) in batch.iter_mut().zip(a.ready.drain(..n)) {
                *slot = f;
            }
            n
        };
        self.rx.indicate(list, &batch[..n], &*self.events);
        n
    }

    /// Loopback receive thread: waits for arrivals and indicates them.
    pub fn run_deliveries(&self) {
        while !self.closed.load(Ordering::Acquire) {
            if self.deliver() > 0 {
                continue;
            }
            let a = lock(&self.arrivals);
            if a.ready.is_empty() {
                let (a, t) = self.arrived.wait_timeout(a, POLL_INTERVAL).unwrap_or_else(|p| p.into_inner());
                let stalled = t.timed_out() && a.ready.is_empty() && !a.held.is_empty();
                drop(a);
                if stalled {
                    self.flush_held();
                }
            } else {
                // Waiting datagrams but no list record: the driver holds them all.
                drop(a);
                self.rx.wait_freed(POLL_INTERVAL);
            }
        }
    }

    /// Pump mode: one round of sends, completions and deliveries.
    pub fn pump_once(&self) -> usize {
        if self.closed.load(Ordering::Acquire) {
            return 0;
        }
        let mut n = self.tx.round(&self.wire, true, true);
        while self.deliver() > 0 {
            n += 1;
        }
        n
    }

    fn drop_arrivals(&self) {
        let mut a = lock(&self.arrivals);
        let a = &mut *a;
        let waiting: Vec<u32> =
            a.ready.drain(..).map(|f| f.buffer).chain(a.held.drain(..).map(|(_, f)| f.buffer)).collect();
        for b in waiting {
            self.rx.put_buffer(b);
        }
    }
}

/// A modelled WSK datagram socket; implements [`Transport`].
pub struct DatagramSocket {
    pub(crate) inner: Arc<DatagramInner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    hub: Option<Arc<Hub>>,
}

impl core::fmt::Debug for DatagramSocket {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DatagramSocket").field("id", &self.inner.id).field("local", &self.inner.local).finish()
    }
}

impl DatagramSocket {
    pub(crate) fn new(inner: Arc<DatagramInner>, threads: Vec<JoinHandle<()>>, hub: Option<Arc<Hub>>) -> Self {
        Self { inner, threads: Mutex::new(threads), hub }
    }

    pub fn id(&self) -> SocketId {
        self.inner.id
    }

    /// The bound address (the port the system or the hub chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local
    }

    pub fn stats(&self) -> SocketStats {
        self.inner.counters.snapshot()
    }

    /// Lists the driver holds now.
    pub fn retained_lists(&self) -> usize {
        self.inner.rx.retained()
    }

    /// Sends not yet completed.
    pub fn sends_in_flight(&self) -> usize {
        self.inner.tx.slots.in_flight()
    }
}

impl Transport for DatagramSocket {
    fn send_slots(&self) -> u16 {
        self.inner.tx.slots.count()
    }

    unsafe fn slot_buffer(&self, slot: SendSlot) -> NonNull<[u8; SEND_SLOT_SIZE]> {
        self.inner.tx.slots.buffer(slot)
    }

    fn send(&self, slot: SendSlot, len: usize, remote: SocketAddr) -> Result<(), NtStatus> {
        self.inner.tx.send(&self.inner.wire, slot, len, remote)
    }

    fn send_batch(&self, batch: &[(SendSlot, usize)], remote: SocketAddr) -> Result<(), NtStatus> {
        self.inner.tx.send_batch(&self.inner.wire, batch, remote)
    }

    unsafe fn release(&self, list: NonNull<WskDatagramIndication>) {
        self.inner.rx.release(list);
    }

    fn close(&self) {
        let inner = &self.inner;
        if inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(hub) = &self.hub {
            hub.unbind(inner.local, inner.id);
        }
        inner.tx.stop();
        inner.arrived.notify_all();
        let me = std::thread::current().id();
        for t in core::mem::take(&mut *lock(&self.threads)) {
            // A close from inside one of this socket's own events cannot
            // wait for its own thread; that thread ends right after.
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
        inner.drop_arrivals();
        let retained = inner.rx.close();
        if retained > 0 {
            inner.verifier.report(Violation::LeakedLists { socket: inner.id, retained });
        }
        inner.tx.slots.close();
    }
}

impl Drop for DatagramSocket {
    fn drop(&mut self) {
        self.close();
    }
}
