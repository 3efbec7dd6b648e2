//! Kernel services the layers above need, in two implementations: `windows`
//! (the real kernel glue) and `host` (the user-mode model).
//!
//! The traits here are the whole contract between the data path and the
//! kernel; `docs/datapath.md` gives the ownership rules behind each method,
//! which the host model enforces.

use core::net::SocketAddr;
use core::ptr::NonNull;

use crate::crypto::CryptoProvider;
use crate::netcx::extension::NetExtension;
use crate::netcx::ring::NetRingCollection;
use crate::netcx::wsk::WskDatagramIndication;
use crate::ntstatus::NtStatus;

pub mod sync;
pub mod time;

#[cfg(not(windows))]
pub mod host;
#[cfg(windows)]
pub mod windows;

pub use time::Instant;

/// Bytes in one send slot: the largest datagram the driver sends (a full
/// 1500-byte inner packet plus epoch overhead and the TCP length prefix,
/// rounded up), and the largest TCP frame OpenVPN accepts (2048).
pub const SEND_SLOT_SIZE: usize = 2048;

/// Datagrams in one [`Transport::send_batch`] (one `WskSendMessages`
/// request, one IRP): a TX Advance run's worth, so one completion covers
/// that many packets.
pub const SEND_BATCH_MAX: usize = 32;

/// A send slot of a transport: its buffer, and in the kernel its MDL and IRP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SendSlot(pub u16);

/// Services of the kernel (or the host model) for one adapter.
pub trait Os: Send + Sync + 'static {
    type Crypto: CryptoProvider;
    type Transport: Transport;

    /// The CNG providers (opened once at driver load).
    fn crypto(&self) -> &Self::Crypto;

    /// `KeQueryInterruptTime`, in milliseconds.
    fn now(&self) -> Instant;

    /// `NetRxQueueNotifyMoreReceivedPacketsAvailable`: any context.
    fn notify_rx(&self);

    /// `NetTxQueueNotifyMoreCompletedPacketsAvailable`: any context.
    fn notify_tx(&self);

    /// `NetAdapterSetLinkState`: reports the adapter's media connect state
    /// (OpenVPN's START_VPN connects it, handle close disconnects it). Any
    /// context up to DISPATCH_LEVEL.
    fn set_link_state(&self, up: bool);

    /// Runs the adapter's timer (`Adapter::timer`) at PASSIVE_LEVEL at
    /// `due` or soon after; a later call replaces the due time (a WDFTIMER
    /// with passive execution level, restarted by `WdfTimerStart`). Any
    /// context. Keepalive and socket-close work run from it.
    fn schedule_timer(&self, due: Instant);

    /// Creates a UDP socket bound to `local` (port 0 = any), delivering its
    /// events to `events`. With `remote`, only datagrams from it are
    /// accepted (P2P: `SIO_WSK_SET_REMOTE_ADDRESS`); without, any (MP,
    /// dual stack when `local` is IPv6 unspecified and `ipv6_only` is false).
    fn open_udp(
        &self,
        local: SocketAddr,
        remote: Option<SocketAddr>,
        ipv6_only: bool,
        events: alloc::sync::Arc<dyn SocketEvents>,
    ) -> Result<Self::Transport, NtStatus>;

    /// Starts connecting a TCP socket; completion arrives as
    /// [`SocketEvents::connected`]. Never blocks.
    fn open_tcp(
        &self,
        local: SocketAddr,
        remote: SocketAddr,
        events: alloc::sync::Arc<dyn SocketEvents>,
    ) -> Result<Self::Transport, NtStatus>;
}

/// One kernel socket as the data path uses it. Send slots belong to the
/// transport (buffer, MDL and IRP made once at creation); which slots are
/// free is the data path's business.
pub trait Transport: Send + Sync {
    /// How many send slots this transport has (each [`SEND_SLOT_SIZE`] bytes).
    fn send_slots(&self) -> u16;

    /// The buffer of `slot`.
    ///
    /// # Safety
    /// The caller owns `slot`: it took it from its free list and has not
    /// passed it to [`Transport::send`] since, or its completion arrived.
    /// Only then may it write the buffer.
    unsafe fn slot_buffer(&self, slot: SendSlot) -> NonNull<[u8; SEND_SLOT_SIZE]>;

    /// `WskSendTo` (UDP, to `remote`) or `WskSend` (TCP, `remote` ignored)
    /// of the first `len` bytes of `slot`. On `Ok` exactly one
    /// [`SocketEvents::send_complete`] follows for `slot`, on any thread,
    /// possibly before this returns; the slot is the transport's until then.
    /// On `Err` no completion follows and the slot stays the caller's.
    fn send(&self, slot: SendSlot, len: usize, remote: SocketAddr) -> Result<(), NtStatus>;

    /// `WskSendMessages` (UDP): each `(slot, len)` of `batch` one datagram
    /// of the slot's first `len` bytes, all to `remote`, in one request. On
    /// `Ok` exactly one [`SocketEvents::send_batch_complete`] follows, naming
    /// the batch's first slot, on any thread, possibly before this returns;
    /// every slot of the batch is the transport's until then. On `Err` no
    /// completion follows and every slot stays the caller's; a transport
    /// that cannot batch (a stream socket) answers `NOT_SUPPORTED` and the
    /// caller sends the slots one by one. `batch` holds 1 to
    /// [`SEND_BATCH_MAX`] distinct slots.
    fn send_batch(&self, batch: &[(SendSlot, usize)], remote: SocketAddr) -> Result<(), NtStatus>;

    /// `WskRelease` of a datagram indication list.
    ///
    /// # Safety
    /// `list` is the head of a list that [`SocketEvents::receive_from`]
    /// retained by returning `STATUS_PENDING`; each such list is released
    /// exactly once, and nothing in it is touched afterwards.
    unsafe fn release(&self, list: NonNull<WskDatagramIndication>);

    /// `WskCloseSocket`. Events stop before this returns. Only after every
    /// retained list was released and every accepted send completed.
    fn close(&self);
}

/// Events a socket delivers to the driver.
pub trait SocketEvents: Send + Sync {
    /// `WskReceiveFromEvent`: any CPU, concurrently with itself and with the
    /// queues. Returns `STATUS_PENDING` iff at least one datagram of the list
    /// was retained (to be given back with [`Transport::release`]), else
    /// `STATUS_SUCCESS` and WSK keeps the list.
    ///
    /// # Safety
    /// `list` is a valid indication list that stays valid until this returns
    /// or, if retained, until released.
    unsafe fn receive_from(&self, list: NonNull<WskDatagramIndication>) -> NtStatus;

    /// TCP: bytes of the stream, in order. All are consumed.
    fn stream_received(&self, bytes: &[u8]);

    /// The completion of an accepted send: status and bytes actually sent
    /// (a TCP send may be partial).
    fn send_complete(&self, slot: SendSlot, status: NtStatus, bytes_sent: usize);

    /// The completion of an accepted [`Transport::send_batch`], named by the
    /// batch's first slot: success if every datagram went, and the bytes
    /// sent in all (WSK reports one status for the whole request).
    fn send_batch_complete(&self, first: SendSlot, status: NtStatus, bytes_sent: usize);

    /// TCP: the connect started by [`Os::open_tcp`] finished.
    fn connected(&self, status: NtStatus);

    /// TCP: the peer closed or reset the connection.
    fn disconnected(&self, status: NtStatus);
}

/// The extensions a queue queried at creation (`Net{Rx,Tx}QueueGetExtension`),
/// cached for its lifetime. A disabled one has `enabled == 0`.
#[derive(Debug)]
pub struct QueueExtensions {
    pub fragment_virtual_address: NetExtension,
    /// RX only (driver-managed buffers).
    pub fragment_return_context: Option<NetExtension>,
    /// RX only, when checksum offload capabilities are registered.
    pub packet_checksum: Option<NetExtension>,
}

/// A NetAdapterCx packet queue's callbacks (`NET_PACKET_QUEUE_CONFIG`): what
/// the data path implements for each of its RX and TX queues.
pub trait PacketQueue: Send + Sync {
    /// `EvtPacketQueueStart`.
    fn start(&self);
    /// `EvtPacketQueueAdvance`: the poll context, serialized per queue.
    fn advance(&self);
    /// `EvtPacketQueueSetNotificationEnabled`.
    fn set_notification_enabled(&self, enabled: bool);
    /// `EvtPacketQueueCancel`: return everything soon; Advance keeps being
    /// called until both rings are empty.
    fn cancel(&self);
    /// `EvtPacketQueueStop`: both rings are empty.
    fn stop(&self);
}

/// The adapter's data-path entry points that NetAdapterCx calls outside a
/// queue: queue creation and returned RX buffers.
pub trait AdapterDatapath: Send + Sync {
    type RxQueue: PacketQueue;
    type TxQueue: PacketQueue;

    /// `EvtAdapterCreateRxQueue`, after `NetRxQueueCreate` and the extension
    /// queries.
    ///
    /// # Safety
    /// `rings` is the queue's collection, valid until the queue is destroyed.
    unsafe fn create_rx_queue(
        &self,
        rings: NonNull<NetRingCollection>,
        extensions: QueueExtensions,
    ) -> Result<Self::RxQueue, NtStatus>;

    /// `EvtAdapterCreateTxQueue`.
    ///
    /// # Safety
    /// As for [`AdapterDatapath::create_rx_queue`].
    unsafe fn create_tx_queue(
        &self,
        rings: NonNull<NetRingCollection>,
        extensions: QueueExtensions,
    ) -> Result<Self::TxQueue, NtStatus>;

    /// `EvtAdapterReturnRxBuffer`: once per fragment of every indicated,
    /// non-Ignore packet, with the ReturnContext the driver wrote.
    fn return_rx_buffer(&self, return_context: usize);
}
