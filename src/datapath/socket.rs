//! One socket as the data path sees it: the [`SocketEvents`] WSK delivers,
//! the transport it sends on, its send slots and (TCP) its stream state.
//!
//! A [`Link`] is made before the transport (the transport needs the events
//! object) and attached to it right after. It outlives its use: after
//! [`Link::detach`] nothing new is retained or sent on it, and the socket is
//! closed only when every retained indication list was released and every
//! accepted send completed (docs/datapath.md, "The `os` contract").

use crate::os::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use alloc::boxed::Box;
use alloc::sync::{Arc, Weak};
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use core::ptr::NonNull;

use super::{KeyOf, Peers, SEND_SLOTS_MAX, Shared, rx, tx};
use crate::control::actions::TransportId;
use crate::netcx::wsk::{AF_INET, AF_INET6, SockAddr, WskDatagramIndication};
use crate::ntstatus::NtStatus;
use crate::os::sync::SpinLock;
use crate::os::{Os, SendSlot, SocketEvents, Transport};
use crate::proto::tcp_frame::TcpFrameDecoder;

/// The flag [`Link::detach`] sets in both of a link's counters. The counts
/// stay far below it: at most [`super::RX_RETAINED_LISTS_MAX`] lists and
/// [`SEND_SLOTS_MAX`] sends.
const DETACHED: u32 = 1 << 31;

/// Which protocol the socket speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkKind {
    Udp,
    /// OpenVPN's TCP framing: 2-byte length before every packet.
    Tcp,
}

/// Where closing a socket stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseProgress {
    /// Closed (or there was nothing to close).
    Closed,
    /// Still held by the OS: retained indication lists not yet released
    /// (their packets are still up the stack) or sends not yet completed.
    Waiting { retained_lists: u32, sends_in_flight: u32 },
}

/// One socket's events and send state.
pub struct Link<O: Os, P: Peers<KeyOf<O>>> {
    me: Weak<Self>,
    pub(crate) shared: Arc<Shared<O, P>>,
    /// The control plane's name for this socket, on every event.
    id: TransportId,
    kind: LinkKind,
    /// The connected remote (P2P UDP, TCP): the sender of every datagram.
    remote: Option<SocketAddr>,
    transport: SpinLock<Option<Arc<O::Transport>>>,
    pub(crate) send: tx::SendSlots,
    /// TCP: the stream's frame decoder (boxed: it holds a 2 KiB buffer).
    pub(crate) tcp_rx: Option<SpinLock<Box<TcpFrameDecoder>>>,
    /// TCP: sends in stream order, one at a time.
    pub(crate) tcp_tx: Option<SpinLock<tx::TcpSendQueue>>,
    /// Indication lists retained and not yet released (records in use),
    /// plus [`DETACHED`].
    retained_lists: AtomicU32,
    /// Sends accepted (or queued for the TCP stream) and not yet completed,
    /// plus [`DETACHED`].
    pub(crate) sends_in_flight: AtomicU32,
    closed: AtomicBool,
}

impl<O: Os, P: Peers<KeyOf<O>>> Link<O, P> {
    /// Allocates the socket's tables (PASSIVE_LEVEL, at NEW_PEER).
    pub(crate) fn new(
        shared: Arc<Shared<O, P>>,
        id: TransportId,
        kind: LinkKind,
        remote: Option<SocketAddr>,
    ) -> Arc<Self> {
        let tcp = kind == LinkKind::Tcp;
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            shared,
            id,
            kind,
            remote,
            transport: SpinLock::new(None),
            send: tx::SendSlots::new(SEND_SLOTS_MAX),
            tcp_rx: tcp.then(|| SpinLock::new(Box::new(TcpFrameDecoder::new()))),
            tcp_tx: tcp.then(|| SpinLock::new(tx::TcpSendQueue::new(SEND_SLOTS_MAX))),
            retained_lists: AtomicU32::new(0),
            sends_in_flight: AtomicU32::new(0),
            closed: AtomicBool::new(false),
        })
    }

    pub(crate) fn attach(&self, transport: O::Transport) {
        self.send.fill(transport.send_slots().min(SEND_SLOTS_MAX));
        *self.transport.lock() = Some(Arc::new(transport));
    }

    pub fn id(&self) -> TransportId {
        self.id
    }

    pub fn kind(&self) -> LinkKind {
        self.kind
    }

    pub fn remote(&self) -> Option<SocketAddr> {
        self.remote
    }

    pub(crate) fn me(&self) -> Option<Arc<Self>> {
        self.me.upgrade()
    }

    pub(crate) fn transport(&self) -> Option<Arc<O::Transport>> {
        self.transport.lock().clone()
    }

    /// Stops retaining and sending on this socket.
    pub(crate) fn detach(&self) {
        self.retained_lists.fetch_or(DETACHED, Ordering::AcqRel);
        self.sends_in_flight.fetch_or(DETACHED, Ordering::AcqRel);
    }

    pub(crate) fn is_detached(&self) -> bool {
        self.retained_lists.load(Ordering::Acquire) & DETACHED != 0
    }

    /// Counts a retained list, unless the socket is detached. Count and
    /// flag share one word, so counting and reading the flag are one
    /// atomic step: a detach either comes first (refused here) or after
    /// (and the close that follows it sees the count).
    pub(crate) fn begin_retain(&self) -> bool {
        if self.retained_lists.fetch_add(1, Ordering::AcqRel) & DETACHED != 0 {
            self.end_retain();
            return false;
        }
        true
    }

    pub(crate) fn end_retain(&self) {
        self.retained_lists.fetch_sub(1, Ordering::AcqRel);
    }

    /// Counts a send about to be submitted, unless detached (as
    /// [`Link::begin_retain`]).
    pub(crate) fn begin_send(&self) -> bool {
        if self.sends_in_flight.fetch_add(1, Ordering::AcqRel) & DETACHED != 0 {
            self.end_send();
            return false;
        }
        true
    }

    pub(crate) fn sends_in_flight(&self) -> u32 {
        self.sends_in_flight.load(Ordering::Acquire) & !DETACHED
    }

    pub(crate) fn end_send(&self) {
        self.sends_in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// Closes the transport once nothing of it is held any more.
    pub(crate) fn try_close(&self) -> CloseProgress {
        if self.closed.load(Ordering::SeqCst) {
            return CloseProgress::Closed;
        }
        let retained_lists = self.retained_lists.load(Ordering::Acquire) & !DETACHED;
        let sends_in_flight = self.sends_in_flight();
        if retained_lists != 0 || sends_in_flight != 0 {
            return CloseProgress::Waiting { retained_lists, sends_in_flight };
        }
        if !self.closed.swap(true, Ordering::SeqCst) {
            let transport = self.transport.lock().take();
            if let Some(t) = transport {
                t.close();
            }
        }
        CloseProgress::Closed
    }

    /// The sender of a datagram: its indicated address, or the connected
    /// remote when WSK gave none.
    pub(crate) fn source_of(&self, remote_address: *const SockAddr) -> Option<SocketAddr> {
        // SAFETY: WSK owns the indication list, and the address it points
        // to, until the callback returns or the list is released; the walk
        // runs inside the callback (wsk::datagrams' contract).
        unsafe { read_sockaddr(remote_address) }.or(self.remote)
    }
}

impl<O: Os, P: Peers<KeyOf<O>>> SocketEvents for Link<O, P> {
    unsafe fn receive_from(&self, list: NonNull<WskDatagramIndication>) -> NtStatus {
        // SAFETY: the caller's contract: `list` is valid until this returns
        // or, if retained, until released.
        unsafe { rx::receive_indication(self, list) }
    }

    fn stream_received(&self, bytes: &[u8]) {
        rx::receive_stream(self, bytes);
    }

    fn send_complete(&self, slot: SendSlot, status: NtStatus, bytes_sent: usize) {
        tx::send_complete(self, slot, status, bytes_sent);
    }

    fn send_batch_complete(&self, first: SendSlot, status: NtStatus, bytes_sent: usize) {
        tx::send_batch_complete(self, first, status, bytes_sent);
    }

    fn connected(&self, status: NtStatus) {
        self.shared.peers.connected(self.id, status);
    }

    fn disconnected(&self, status: NtStatus) {
        self.shared.peers.disconnected(self.id, status);
    }
}

const SOCKADDR_IN_LEN: usize = 16;
const SOCKADDR_IN6_LEN: usize = 28;

/// A SOCKADDR_IN or SOCKADDR_IN6 (chosen by family) at `p`, if any.
///
/// # Safety
/// `p` is null or points to a SOCKADDR whose storage is as long as its
/// family's structure (16 or 28 bytes), readable for the call.
pub(crate) unsafe fn read_sockaddr(p: *const SockAddr) -> Option<SocketAddr> {
    if p.is_null() {
        return None;
    }
    let base = p.cast::<u8>();
    // SAFETY: the caller's contract; the family is the first 2 bytes of
    // every SOCKADDR, read unaligned to assume nothing of the storage.
    let family = unsafe { base.cast::<u16>().read_unaligned() };
    match family {
        AF_INET => {
            // SAFETY: a SOCKADDR_IN is 16 bytes (caller's contract).
            let b = unsafe { base.cast::<[u8; SOCKADDR_IN_LEN]>().read_unaligned() };
            let port = u16::from_be_bytes([b[2], b[3]]);
            Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(b[4], b[5], b[6], b[7]), port)))
        }
        AF_INET6 => {
            // SAFETY: a SOCKADDR_IN6 is 28 bytes (caller's contract).
            let b = unsafe { base.cast::<[u8; SOCKADDR_IN6_LEN]>().read_unaligned() };
            let port = u16::from_be_bytes([b[2], b[3]]);
            let flowinfo = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
            let ip: [u8; 16] = b[8..24].try_into().ok()?;
            let scope_id = u32::from_le_bytes([b[24], b[25], b[26], b[27]]);
            Some(SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, flowinfo, scope_id)))
        }
        _ => None,
    }
}

/// Whether two transport addresses are the same endpoint (address and port;
/// IPv6 flow labels do not make another endpoint).
pub(crate) fn same_endpoint(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.ip() == b.ip() && a.port() == b.port()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddrs_of_both_families_are_read() {
        let mut v4 = [0u8; 16];
        v4[..2].copy_from_slice(&AF_INET.to_le_bytes());
        v4[2..4].copy_from_slice(&1194u16.to_be_bytes());
        v4[4..8].copy_from_slice(&[192, 0, 2, 1]);
        // SAFETY: a 16-byte SOCKADDR_IN on this frame.
        let a = unsafe { read_sockaddr(v4.as_ptr().cast()) };
        assert_eq!(a, Some("192.0.2.1:1194".parse().unwrap()));

        let mut v6 = [0u8; 28];
        v6[..2].copy_from_slice(&AF_INET6.to_le_bytes());
        v6[2..4].copy_from_slice(&443u16.to_be_bytes());
        v6[8] = 0x20;
        v6[9] = 0x01;
        v6[23] = 7;
        v6[24] = 3;
        // SAFETY: a 28-byte SOCKADDR_IN6 on this frame.
        let a = unsafe { read_sockaddr(v6.as_ptr().cast()) }.unwrap();
        assert_eq!(a, SocketAddr::V6(SocketAddrV6::new("2001::7".parse().unwrap(), 443, 0, 3)));
        assert!(same_endpoint(&a, &"[2001::7]:443".parse().unwrap()));

        let unknown = [0u8; 16];
        // SAFETY: 16 readable bytes, family 0.
        assert_eq!(unsafe { read_sockaddr(unknown.as_ptr().cast()) }, None);
        // SAFETY: null is never read.
        assert_eq!(unsafe { read_sockaddr(core::ptr::null()) }, None);
    }
}
