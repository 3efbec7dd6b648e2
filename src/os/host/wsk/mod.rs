//! The user-mode model of Winsock Kernel: sockets that implement
//! [`Transport`] and deliver [`SocketEvents`] the way WSK does, so the real
//! data path runs unchanged on Linux.
//!
//! - Datagram sockets over real UDP (batched `recvmmsg`/`sendmmsg`) or an
//!   in-memory [`LoopbackHub`] (P2P pairs or a server with many clients,
//!   seeded loss/duplication/reordering, threaded or pumped delivery).
//! - Receive events carry real indication lists: `WskDatagramIndication`
//!   nodes linked by `Next`, each `WskBuf` over a real `Mdl` (nonpaged-pool
//!   flags, `MappedSystemVa` set, optionally a second chained MDL), and a
//!   Windows SOCKADDR_IN/IN6 sender. STATUS_SUCCESS gives the list back at
//!   once; STATUS_PENDING keeps it out until `Transport::release`.
//! - Sends from boxed slot buffers, with exactly one completion each, from
//!   the socket's thread (immediate, delayed or batched) or inline.
//! - Stream sockets over real TCP or an in-memory pipe: asynchronous
//!   connect, partial sends, arbitrary chunkings, disconnect events.
//! - A [`WskVerifier`] that records every broken ownership rule.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::SocketAddr;
use core::ptr::NonNull;
use std::sync::OnceLock;

pub mod datagram;
pub mod loopback;
pub mod rng;
pub mod rx;
pub mod send;
pub mod sockaddr;
pub mod stats;
pub mod stream;
pub mod udp;
pub mod verifier;

#[cfg(test)]
mod tests;

pub use datagram::DatagramSocket;
pub use loopback::{Captured, Delivery, LoopbackConfig, LoopbackHub, LoopbackStats};
pub use rx::{ListLen, POISON_BYTE, ReceiveConfig, Split};
pub use send::{CompletionMode, PartialSends, SendConfig};
pub use stats::SocketStats;
pub use stream::{Chunking, StreamConfig, StreamPeer, StreamSocket, TcpTestPeer};
pub use verifier::{SocketId, Violation, WskVerifier};

use crate::netcx::wsk::WskDatagramIndication;
use crate::ntstatus::NtStatus;
use crate::os::{SEND_SLOT_SIZE, SendSlot, SocketEvents, Transport};
use datagram::{DatagramInner, DatagramWire};
use loopback::Pumped;
use rx::ReceivePool;
use send::{SendSlots, TxEngine};
use stats::SocketCounters;
use stream::{StreamInner, StreamLink, StreamWire};

/// Which network the provider's sockets use.
#[derive(Clone, Debug)]
pub enum Network {
    /// The host's own UDP and TCP.
    Real,
    /// An in-memory network shared by every provider given the same hub.
    Loopback(LoopbackHub),
}

/// Shape of every socket a provider opens.
#[derive(Clone, Debug, Default)]
pub struct WskConfig {
    pub receive: ReceiveConfig,
    pub send: SendConfig,
    pub stream: StreamConfig,
    /// Seeds the per-socket generators (splits, list sizes, chunkings, cuts).
    pub seed: u64,
}

/// The modelled WSK provider: opens sockets on one network, all reporting
/// to one verifier. `Os::open_udp`/`open_tcp` of the host model call it.
#[derive(Debug)]
pub struct WskProvider {
    network: Network,
    config: WskConfig,
    verifier: Arc<WskVerifier>,
}

impl WskProvider {
    pub fn new(network: Network, config: WskConfig, verifier: Arc<WskVerifier>) -> Self {
        Self { network, config, verifier }
    }

    pub fn verifier(&self) -> &Arc<WskVerifier> {
        &self.verifier
    }

    pub fn network(&self) -> &Network {
        &self.network
    }

    /// `Os::open_udp`.
    pub fn open_udp(
        &self,
        local: SocketAddr,
        remote: Option<SocketAddr>,
        ipv6_only: bool,
        events: Arc<dyn SocketEvents>,
    ) -> Result<HostSocket, NtStatus> {
        self.open_datagram(local, remote, ipv6_only, events).map(HostSocket::Datagram)
    }

    /// `Os::open_tcp`.
    pub fn open_tcp(
        &self,
        local: SocketAddr,
        remote: SocketAddr,
        events: Arc<dyn SocketEvents>,
    ) -> Result<HostSocket, NtStatus> {
        self.open_stream(local, remote, events).map(HostSocket::Stream)
    }

    fn parts(&self, events: Arc<dyn SocketEvents>) -> (Common, TxEngine) {
        let id = self.verifier.new_socket();
        let counters = Arc::new(SocketCounters::default());
        let seed = self.config.seed ^ u64::from(id.0).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let slots = SendSlots::new(id, &self.config.send, self.verifier.clone(), counters.clone());
        let tx = TxEngine::new(slots, self.config.send, counters.clone(), events.clone());
        (Common { id, verifier: self.verifier.clone(), counters, events, seed }, tx)
    }

    /// A datagram socket bound to `local` (port 0: any); with `remote`,
    /// only datagrams from it are indicated.
    pub fn open_datagram(
        &self,
        local: SocketAddr,
        remote: Option<SocketAddr>,
        ipv6_only: bool,
        events: Arc<dyn SocketEvents>,
    ) -> Result<DatagramSocket, NtStatus> {
        let (common, tx) = self.parts(events);
        let rx = ReceivePool::new(
            common.id,
            self.config.receive.clone(),
            common.seed,
            self.verifier.clone(),
            common.counters.clone(),
        );
        match &self.network {
            Network::Real => {
                let sock = udp::bind_udp(local, ipv6_only, self.config.receive.socket_buffer)?;
                let local = sock.local_addr().map_err(|e| udp::status_of(&e))?;
                let rx_sock = sock.try_clone().map_err(|e| udp::status_of(&e))?;
                let wire = DatagramWire::Udp(udp::UdpWire::new(sock));
                let inner = Arc::new(DatagramInner::new(common, rx, tx, wire, local, remote));
                let mut threads = Vec::new();
                for _ in 0..self.config.receive.threads.max(1) {
                    let a = inner.clone();
                    let rx_sock = rx_sock.try_clone().map_err(|e| udp::status_of(&e))?;
                    threads.push(std::thread::spawn(move || udp::receive_loop(&a, &rx_sock)));
                }
                let b = inner.clone();
                threads.push(std::thread::spawn(move || b.tx.run(&b.wire)));
                Ok(DatagramSocket::new(inner, threads, None))
            }
            Network::Loopback(h) => {
                let hub = h.hub.clone();
                let local = hub.resolve(local);
                let wire = DatagramWire::Loopback { hub: hub.clone(), local };
                let inner = Arc::new(DatagramInner::new(common, rx, tx, wire, local, remote));
                hub.bind(local, inner.id, &inner)?;
                let mut threads = Vec::new();
                if hub.config.delivery == Delivery::Threaded {
                    for _ in 0..self.config.receive.threads.max(1) {
                        let a = inner.clone();
                        threads.push(std::thread::spawn(move || a.run_deliveries()));
                    }
                    let b = inner.clone();
                    threads.push(std::thread::spawn(move || b.tx.run(&b.wire)));
                }
                Ok(DatagramSocket::new(inner, threads, Some(hub)))
            }
        }
    }

    /// A stream socket connecting to `remote`; [`SocketEvents::connected`]
    /// reports the outcome. On the real network `local` is not bound (the
    /// system picks the source address and port).
    pub fn open_stream(
        &self,
        _local: SocketAddr,
        remote: SocketAddr,
        events: Arc<dyn SocketEvents>,
    ) -> Result<StreamSocket, NtStatus> {
        let (common, tx) = self.parts(events);
        let seed = common.seed;
        let partial = self.config.send.partial;
        let stream = self.config.stream;
        match &self.network {
            Network::Real => {
                let wire = StreamWire::new(StreamLink::Tcp(OnceLock::new()), partial, seed);
                let inner = Arc::new(StreamInner::new(common, tx, wire, remote, stream));
                Ok(StreamSocket::start(inner, false))
            }
            Network::Loopback(h) => {
                let pipe = h.hub.connect_stream(remote);
                let wire = StreamWire::new(StreamLink::Memory(pipe), partial, seed);
                let inner = Arc::new(StreamInner::new(common, tx, wire, remote, stream));
                let pump = h.hub.config.delivery == Delivery::Pump;
                if pump {
                    h.hub.add_pumped(Arc::downgrade(&inner) as alloc::sync::Weak<dyn Pumped>);
                }
                Ok(StreamSocket::start(inner, pump))
            }
        }
    }
}

/// What every modelled socket starts from.
pub(crate) struct Common {
    pub id: SocketId,
    pub verifier: Arc<WskVerifier>,
    pub counters: Arc<SocketCounters>,
    pub events: Arc<dyn SocketEvents>,
    pub seed: u64,
}

/// Either kind of modelled socket: the host `Os`'s `Transport` type.
#[derive(Debug)]
pub enum HostSocket {
    Datagram(DatagramSocket),
    Stream(StreamSocket),
}

impl HostSocket {
    pub fn id(&self) -> SocketId {
        match self {
            Self::Datagram(s) => s.id(),
            Self::Stream(s) => s.id(),
        }
    }

    pub fn stats(&self) -> SocketStats {
        match self {
            Self::Datagram(s) => s.stats(),
            Self::Stream(s) => s.stats(),
        }
    }

    /// Lists the driver holds now (0 for streams).
    pub fn retained_lists(&self) -> usize {
        match self {
            Self::Datagram(s) => s.retained_lists(),
            Self::Stream(_) => 0,
        }
    }

    pub fn sends_in_flight(&self) -> usize {
        match self {
            Self::Datagram(s) => s.sends_in_flight(),
            Self::Stream(s) => s.sends_in_flight(),
        }
    }

    fn transport(&self) -> &dyn Transport {
        match self {
            Self::Datagram(s) => s,
            Self::Stream(s) => s,
        }
    }
}

impl Transport for HostSocket {
    fn send_slots(&self) -> u16 {
        self.transport().send_slots()
    }

    unsafe fn slot_buffer(&self, slot: SendSlot) -> NonNull<[u8; SEND_SLOT_SIZE]> {
        // SAFETY: the caller's guarantee, passed on unchanged.
        unsafe { self.transport().slot_buffer(slot) }
    }

    fn send(&self, slot: SendSlot, len: usize, remote: SocketAddr) -> Result<(), NtStatus> {
        self.transport().send(slot, len, remote)
    }

    fn send_batch(&self, batch: &[(SendSlot, usize)], remote: SocketAddr) -> Result<(), NtStatus> {
        self.transport().send_batch(batch, remote)
    }

    unsafe fn release(&self, list: NonNull<WskDatagramIndication>) {
        // SAFETY: the caller's guarantee, passed on unchanged.
        unsafe { self.transport().release(list) }
    }

    fn close(&self) {
        self.transport().close();
    }
}
