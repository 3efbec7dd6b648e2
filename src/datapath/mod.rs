//! The data path: RX and TX queue logic over the NetAdapterCx rings, the
//! WSK socket events, `proto` framing and `crypto` key slots.
//!
//! `docs/datapath.md` fixes who calls whom and the ownership rules; every
//! `unsafe` block here names the rule it relies on in those words.
//!
//! - [`Datapath`] is the adapter's data path ([`AdapterDatapath`]): it makes
//!   the RX and TX queues, takes returned RX buffers, opens and closes the
//!   socket, and sends control packets and keepalives for the control plane.
//! - [`socket::Link`] is one socket's [`crate::os::SocketEvents`]: received
//!   datagrams and stream bytes, send completions.
//! - [`rx`]: zero-copy receive (decrypt inside the WSK indication, retain it,
//!   indicate it) with a bounded copy fallback.
//! - [`tx`]: one-pass send (encrypt from the OS's fragment memory into a
//!   send slot) with completion-ordered draining.
//! - [`pools`]: the fixed tables all of it runs on; [`stats`]: counters.
//!
//! The control plane is reached only through [`Peers`], which it implements
//! (through a glue type) over its peer table.

use alloc::sync::Arc;
use core::net::{IpAddr, SocketAddr};
use core::ptr::NonNull;

use crate::control::actions::TransportId;
use crate::control::peers::Peer;
use crate::control::stats::DeviceStats;
use crate::crypto::CryptoProvider;
use crate::netcx::ring::NetRingCollection;
use crate::ntstatus::NtStatus;
use crate::os::sync::SpinLock;
use crate::os::{AdapterDatapath, Os, QueueExtensions, SEND_SLOT_SIZE};
use crate::proto::PeerId;

pub mod ip;
pub mod pools;
pub mod rx;
pub mod socket;
pub mod stats;
pub mod tx;

pub use socket::{CloseProgress, Link};
pub use stats::{CopyStats, DropReason, Drops};
pub use tx::TxError;

/// The key type of `O`'s crypto provider.
pub type KeyOf<O> = <<O as Os>::Crypto as CryptoProvider>::Key;

/// A table's size: `kernel` in every real build; `loom_model` in the loom
/// models, which allocate the tables once per explored interleaving and use
/// only a few entries.
const fn table(kernel: u16, loom_model: u16) -> u16 {
    if cfg!(all(loom, test)) { loom_model } else { kernel }
}

/// Datagrams handled from one WskReceiveFromEvent; the rest of the list is
/// dropped (counted once per list). WSK delivers tens per event; this bounds the time one
/// DPC spends in the driver (docs/datapath.md, RX ownership 1).
pub const RX_INDICATION_BATCH_MAX: usize = 1024;

/// The retained-indication budget: indication lists held at once, each by
/// one record. Retained lists pin the NIC's receive buffers (msquic saw
/// resource exhaustion from holding too many, datapath facts "WSK
/// retention"); past the budget, data packets take the copy path.
///
/// 256 (was 64): WSK indicates short lists when the receive path keeps up
/// (one to a few datagrams each), so 64 lists held only ~100 packets and a
/// TCP burst through the host tunnel overflowed into the copy path and then
/// dropped (`RxCopyPoolEmpty`, thousands per 10 s run; none at 256). What a
/// list pins is still bounded by the RX slots: each retained list holds at
/// least one slot, so at most [`RX_SLOTS_MAX`] lists, and each datagram of
/// a list is at most a 2 KiB receive buffer; records are a few words each.
pub const RX_RETAINED_LISTS_MAX: u16 = table(256, 4);

/// RX slots: packets decrypted and queued for Advance or indicated to the OS
/// and not yet returned. Each indicated packet carries one as its return
/// context. The OS may hold indicated buffers indefinitely (datapath facts,
/// EvtAdapterReturnRxBuffer), so this is the bound on what it can hold.
///
/// 2048 (was 1024), twice [`RX_PENDING_MAX`] so that a full pending queue
/// leaves as many for packets the OS holds. The memory they pin is the
/// datagrams' receive buffers: at most 2048 × 2 KiB = 4 MiB of nonpaged
/// pool (a 1500-byte MTU), the slot table itself 2048 × 32 bytes.
pub const RX_SLOTS_MAX: u16 = table(2048, 8);

/// Decrypted packets waiting for the next RX Advance.
///
/// 1024 (was 512): with TCP offloads at the host tunnel's TUN device, the
/// sender's bursts reach ~45 full-size segments per super-packet, and 512
/// dropped tens of thousands per 40 s of iperf3 (`RxQueueFull`, each a TCP
/// loss); 1024 cut single-stream drops to a few hundred and raised its
/// throughput ~10 %. A pending packet pins one receive buffer (2 KiB), so
/// this bound is 2 MiB; the queue itself is 1024 two-byte indices. Bursts
/// beyond it are a link's tail drop, as they should be.
pub const RX_PENDING_MAX: u16 = table(1024, 8);

/// Pooled buffers of the copy path (multi-MDL datagrams, retention budget
/// exhausted, TCP stream frames), [`RX_BUFFER_SIZE`] bytes each.
pub const RX_COPY_BUFFERS: u16 = table(256, 2);

/// Largest datagram the copy path takes: the largest the driver itself
/// sends (a send slot) and the largest TCP frame OpenVPN accepts (2048).
pub const RX_BUFFER_SIZE: usize = SEND_SLOT_SIZE;

/// MDLs followed when copying a datagram out of a chain; a longer chain is
/// corrupt (a datagram of at most 64 KiB spans at most 17 pages).
pub const RX_MDL_CHAIN_MAX: usize = 64;

/// NET_ADAPTER_TX_CAPABILITIES.PayloadBackfill the adapter registers. Zero:
/// the driver encrypts out of place into its own send slot, which already
/// holds the header room, and never writes OS packet memory, so a backfill
/// would only make NetAdapterCx retreat every NET_BUFFER for nothing. The TX
/// path still skips this many bytes of the first fragment (datapath facts,
/// "PayloadBackfill"), so changing it here keeps the code right.
pub const TX_PAYLOAD_BACKFILL: usize = 0;

/// NET_ADAPTER_TX_CAPABILITIES.MaximumNumberOfFragments the adapter
/// registers: more fragments are bounced by NetAdapterCx into one buffer.
/// A full-size packet is rarely split more than a few times.
pub const TX_MAX_FRAGMENTS: u16 = 16;

/// Send slots the data path uses per socket (the transport may offer fewer).
pub const SEND_SLOTS_MAX: u16 = table(1024, 4);

/// Free send slots data packets never take: the last
/// min(this, slots / [`SEND_SLOTS_CONTROL_SHARE`]) of the transport's
/// (none below 16 slots), so that a data stream holding every other slot in
/// flight (a link slower than the offered load) leaves OpenVPN's control
/// WriteFile and the keepalive a slot. Keepalives may use only the upper
/// half of the reserve, so a keepalive tick over many MP peers cannot use
/// up what control writes have.
pub const SEND_SLOTS_CONTROL_RESERVE: u16 = 16;

/// See [`SEND_SLOTS_CONTROL_RESERVE`].
pub const SEND_SLOTS_CONTROL_SHARE: u16 = 16;

/// What the data path needs from the control plane. P2P has one peer; MP
/// looks peers up by id and by inner address (VPN address or iroute).
pub trait Peers<K>: Send + Sync + 'static {
    /// The peer a received P_DATA_V2 packet names (P2P: the one peer).
    fn rx_peer(&self, peer_id: PeerId) -> Option<Arc<Peer<K>>>;

    /// The peer an outgoing packet to `dst` goes to (P2P: the peer; MP:
    /// longest-prefix match over VPN addresses and iroutes).
    fn tx_peer(&self, dst: IpAddr) -> Option<Arc<Peer<K>>>;

    /// MP: whether `inner_src` routes back to `peer` (its VPN address or an
    /// iroute). P2P: always true.
    fn source_allowed(&self, peer: &Peer<K>, inner_src: IpAddr) -> bool;

    /// A control-channel packet (any opcode but P_DATA_V2) from `from`,
    /// received on the socket opened as `transport`. The bytes are only
    /// borrowed for the call: copy them.
    fn control_packet(&self, transport: TransportId, from: SocketAddr, bytes: &[u8]);

    /// An authenticated data packet of `peer` came from a transport address
    /// other than its endpoint's remote: the control plane decides whether
    /// to float (and notify).
    fn float(&self, peer: &Peer<K>, from: SocketAddr);

    /// TCP: the connect of `transport` finished with `status`.
    fn connected(&self, transport: TransportId, status: NtStatus);

    /// TCP: the connection is gone (peer closed or reset, or the stream's
    /// framing broke: [`NtStatus::CONNECTION_ABORTED`]).
    fn disconnected(&self, transport: TransportId, status: NtStatus);
}

/// State every part of the data path shares: OS services, the control
/// plane, counters, RX tables and the current socket.
pub(crate) struct Shared<O: Os, P: Peers<KeyOf<O>>> {
    pub os: Arc<O>,
    pub peers: P,
    /// OVPN_STATS, the control plane's (NEW_PEER resets them).
    pub stats: Arc<DeviceStats>,
    pub copies: CopyStats,
    pub drops: Drops,
    pub rx: rx::RxState<O, P>,
    pub tx_notify: tx::TxNotify,
    /// The socket in use: TX sends on it.
    pub link: SpinLock<Option<Arc<Link<O, P>>>>,
    /// A socket being closed: waiting for retained lists and sends.
    pub closing: SpinLock<Option<Arc<Link<O, P>>>>,
}

impl<O: Os, P: Peers<KeyOf<O>>> Shared<O, P> {
    pub fn current_link(&self) -> Option<Arc<Link<O, P>>> {
        self.link.lock().clone()
    }

    pub fn drop_packet(&self, reason: DropReason) {
        self.drops.count(reason);
    }

    pub fn drop_packets(&self, reason: DropReason, n: u64) {
        self.drops.count_n(reason, n);
    }
}

/// The adapter's data path.
pub struct Datapath<O: Os, P: Peers<KeyOf<O>>> {
    shared: Arc<Shared<O, P>>,
}

impl<O: Os, P: Peers<KeyOf<O>>> Datapath<O, P> {
    /// Allocates every RX table and pool (adapter creation, PASSIVE_LEVEL).
    /// `stats` are the device's OVPN_STATS counters, which the data path
    /// feeds per packet.
    pub fn new(os: Arc<O>, peers: P, stats: Arc<DeviceStats>) -> Self {
        let shared = Arc::new(Shared {
            os,
            peers,
            stats,
            copies: CopyStats::default(),
            drops: Drops::default(),
            rx: rx::RxState::new(),
            tx_notify: tx::TxNotify::default(),
            link: SpinLock::new(None),
            closing: SpinLock::new(None),
        });
        Self { shared }
    }

    /// The control plane, as given to [`Datapath::new`].
    pub fn peers(&self) -> &P {
        &self.shared.peers
    }

    /// The OVPN_STATS counters, as given to [`Datapath::new`].
    pub fn stats(&self) -> &Arc<DeviceStats> {
        &self.shared.stats
    }

    /// Bytes copied on receive and send.
    pub fn copies(&self) -> &CopyStats {
        &self.shared.copies
    }

    /// Drop counters by reason.
    pub fn drops(&self) -> &Drops {
        &self.shared.drops
    }

    /// Pool occupancy, for tests and diagnostics.
    pub fn occupancy(&self) -> Occupancy {
        let rx = &self.shared.rx;
        Occupancy {
            retained_lists: usize::from(RX_RETAINED_LISTS_MAX) - rx.records_free(),
            rx_slots: usize::from(RX_SLOTS_MAX) - rx.slots_free(),
            rx_copy_buffers: usize::from(RX_COPY_BUFFERS) - rx.buffers_free(),
            rx_pending: rx.pending_len(),
            sends_in_flight: self.shared.current_link().map_or(0, |l| l.sends_in_flight()),
        }
    }

    /// Whether an RX queue is started (received data can be indicated);
    /// until then, and after a cancel, received data is dropped
    /// ([`DropReason::RxQueueStopped`]).
    pub fn rx_started(&self) -> bool {
        self.shared.rx.accepting()
    }

    /// NEW_PEER (UDP): opens the socket bound to `local`; with `remote`
    /// (P2P) only its datagrams are accepted. Its events reach [`Peers`]
    /// tagged `transport`.
    pub fn open_udp(
        &self,
        transport: TransportId,
        local: SocketAddr,
        remote: Option<SocketAddr>,
        ipv6_only: bool,
    ) -> Result<(), NtStatus> {
        self.open(transport, socket::LinkKind::Udp, remote, |events| {
            self.shared.os.open_udp(local, remote, ipv6_only, events)
        })
    }

    /// NEW_PEER (TCP): starts connecting to `remote`; completion is
    /// reported through [`Peers::connected`] (possibly before this returns).
    pub fn open_tcp(&self, transport: TransportId, local: SocketAddr, remote: SocketAddr) -> Result<(), NtStatus> {
        self.open(transport, socket::LinkKind::Tcp, Some(remote), |events| {
            self.shared.os.open_tcp(local, remote, events)
        })
    }

    /// Whether a socket is open or still closing.
    pub fn has_transport(&self) -> bool {
        self.shared.link.lock().is_some() || self.shared.closing.lock().is_some()
    }

    fn open(
        &self,
        id: TransportId,
        kind: socket::LinkKind,
        remote: Option<SocketAddr>,
        open: impl FnOnce(Arc<dyn crate::os::SocketEvents>) -> Result<O::Transport, NtStatus>,
    ) -> Result<(), NtStatus> {
        if self.shared.link.lock().is_some() || self.shared.closing.lock().is_some() {
            return Err(NtStatus::INVALID_DEVICE_STATE);
        }
        let link = Link::new(self.shared.clone(), id, kind, remote);
        let transport = open(link.clone())?;
        link.attach(transport);
        let mut current = self.shared.link.lock();
        if current.is_some() {
            // Another open raced this one: keep the first.
            drop(current);
            link.detach();
            let _ = link.try_close();
            return Err(NtStatus::INVALID_DEVICE_STATE);
        }
        *current = Some(link);
        Ok(())
    }

    /// Closes the socket: stops using it at once, then closes it when every
    /// retained indication was released and every send completed. Call
    /// again (PASSIVE_LEVEL, after a short wait) while it returns
    /// [`CloseProgress::Waiting`]; the RX queue's returns and the send
    /// completions are what it waits for.
    pub fn close_transport(&self) -> CloseProgress {
        if let Some(link) = self.shared.link.lock().take() {
            link.detach();
            *self.shared.closing.lock() = Some(link);
        }
        self.poll_close()
    }

    /// Closes the socket [`Datapath::close_transport`] left waiting, if
    /// nothing holds it any more; leaves the current socket alone.
    pub fn poll_close(&self) -> CloseProgress {
        let closing = self.shared.closing.lock().clone();
        let Some(link) = closing else {
            return CloseProgress::Closed;
        };
        match link.try_close() {
            CloseProgress::Closed => {
                let mut slot = self.shared.closing.lock();
                if slot.as_ref().is_some_and(|l| Arc::ptr_eq(l, &link)) {
                    *slot = None;
                }
                CloseProgress::Closed
            }
            waiting => waiting,
        }
    }

    /// The control plane's id of the socket in use, if any.
    pub fn transport(&self) -> Option<TransportId> {
        self.shared.link.lock().as_ref().map(|l| l.id())
    }

    /// A control-channel packet from OpenVPN (WriteFile) to `to`.
    pub fn send_control(&self, to: SocketAddr, bytes: &[u8]) -> Result<(), TxError> {
        tx::send_control(&self.shared, to, bytes)
    }

    /// The keepalive ping to `peer`, encrypted with its primary key.
    pub fn send_keepalive(&self, peer: &Peer<KeyOf<O>>) -> Result<(), TxError> {
        tx::send_keepalive(&self.shared, peer)
    }
}

impl<O: Os, P: Peers<KeyOf<O>>> Drop for Datapath<O, P> {
    /// The glue closes the socket before it drops the data path; if it did
    /// not, the socket is detached here (and closed if nothing holds it),
    /// which also breaks the data path ↔ socket reference cycle.
    fn drop(&mut self) {
        if self.close_transport() != CloseProgress::Closed {
            // Still held by the OS: what holds it keeps the socket alive;
            // the data path lets go of it.
            self.shared.closing.lock().take();
        }
    }
}

/// How full the data path's tables are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Occupancy {
    pub retained_lists: usize,
    pub rx_slots: usize,
    pub rx_copy_buffers: usize,
    pub rx_pending: usize,
    /// Sends of the current socket not yet completed.
    pub sends_in_flight: u32,
}

impl<O: Os, P: Peers<KeyOf<O>>> AdapterDatapath for Datapath<O, P> {
    type RxQueue = rx::RxQueue<O, P>;
    type TxQueue = tx::TxQueue<O, P>;

    unsafe fn create_rx_queue(
        &self,
        rings: NonNull<NetRingCollection>,
        extensions: QueueExtensions,
    ) -> Result<Self::RxQueue, NtStatus> {
        // SAFETY: the caller's contract: `rings` is this queue's collection,
        // live until the queue is destroyed, and the extensions were queried
        // on it.
        unsafe { rx::RxQueue::new(self.shared.clone(), rings, &extensions) }
    }

    unsafe fn create_tx_queue(
        &self,
        rings: NonNull<NetRingCollection>,
        extensions: QueueExtensions,
    ) -> Result<Self::TxQueue, NtStatus> {
        // SAFETY: as for create_rx_queue.
        unsafe { tx::TxQueue::new(self.shared.clone(), rings, &extensions) }
    }

    fn return_rx_buffer(&self, return_context: usize) {
        rx::return_buffer(&self.shared, return_context);
    }
}

#[cfg(test)]
mod tests;

#[cfg(all(test, loom))]
mod loom_models;
