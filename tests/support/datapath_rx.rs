//! Captured datagrams through the driver's own RX: the data path (zero-copy
//! RX over the NetAdapterCx model) receives them from the WSK model's
//! in-memory network as real indication lists, sent there raw by a second
//! data path's socket (the WriteFile path, which sends bytes as given).

use ovpn_dco::control::actions::TransportId;
use ovpn_dco::control::peers::{Endpoint, Peer};
use ovpn_dco::crypto::host::HostKey;
use ovpn_dco::crypto::slots::{Slot, SlotIndex};
use ovpn_dco::datapath::{CloseProgress, Datapath, DropReason};
use ovpn_dco::os::Os;
use ovpn_dco::os::host::netadapter::{HostNetAdapter, ModelConfig, Notifier};
use ovpn_dco::os::host::tunnel::{OnePeer, TunnelOs};
use ovpn_dco::os::host::verifier::Verifier;
use ovpn_dco::os::host::wsk::{LoopbackConfig, LoopbackHub, Network, WskConfig, WskProvider, WskVerifier};
use ovpn_dco::proto::PeerId;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

type Dp = Datapath<TunnelOs, OnePeer>;

/// Bound on the wait for a batch of datagrams to be accounted for.
const WAIT: Duration = Duration::from_secs(10);

/// What a batch of datagrams came to.
#[derive(Debug, Default)]
pub struct Received {
    /// Inner packets the RX queue indicated, in order.
    pub packets: Vec<Vec<u8>>,
    /// Authenticated data packets consumed without an indication: keepalives.
    pub keepalives: usize,
}

/// One receiving data path on the in-memory network, and its injector.
pub struct DatapathReceiver {
    dp: Arc<Dp>,
    nx: HostNetAdapter<Dp>,
    injector: Arc<Dp>,
    wsk: Arc<WskVerifier>,
    to: SocketAddr,
    delivered: usize,
}

fn os(network: &Network, wsk: &Arc<WskVerifier>, nx: Arc<Verifier>) -> (Arc<TunnelOs>, Notifier) {
    let notifier = Notifier::new(nx);
    let provider = WskProvider::new(network.clone(), WskConfig::default(), wsk.clone());
    (Arc::new(TunnelOs::new(provider, notifier.clone())), notifier)
}

impl DatapathReceiver {
    /// A data path holding `slot` as its primary key, listening on `to` for
    /// datagrams from `from`.
    pub fn new(slot: Slot<HostKey>, from: SocketAddr, to: SocketAddr) -> Result<Self, String> {
        let network = Network::Loopback(LoopbackHub::new(LoopbackConfig::default()));
        let wsk = WskVerifier::new();
        let nx_verifier = Verifier::new();
        let v = nx_verifier.clone();
        wsk.on_release(move |r| v.mark_released(r));
        let v = nx_verifier.clone();
        wsk.on_indicate(move |r| v.mark_live(r));

        let (os_rx, notifier) = os(&network, &wsk, nx_verifier);
        let endpoint = Endpoint { local: to, remote: from };
        let peer = Arc::new(Peer::new(PeerId::new(0).expect("peer id 0"), endpoint, None, None, os_rx.now()));
        peer.tx.lock().install(SlotIndex::Primary, slot.tx);
        peer.rx.lock().install(SlotIndex::Primary, slot.rx);
        let dp = Arc::new(Datapath::new(os_rx, OnePeer::new(peer), Arc::default()));
        let mut nx = HostNetAdapter::new(dp.clone(), notifier, ModelConfig::default());
        nx.start().map_err(|s| format!("queues: {s:?}"))?;
        let deadline = Instant::now() + WAIT;
        while !dp.rx_started() {
            if Instant::now() >= deadline {
                return Err("the RX queue never started".into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        dp.open_udp(TransportId(1), to, Some(from), false).map_err(|s| format!("receiver socket: {s:?}"))?;

        // The injector only sends: its own key slots stay empty.
        let (os_tx, _) = os(&network, &wsk, Verifier::new());
        let endpoint = Endpoint { local: from, remote: to };
        let idle = Arc::new(Peer::new(PeerId::new(0).expect("peer id 0"), endpoint, None, None, os_tx.now()));
        let injector = Arc::new(Datapath::new(os_tx, OnePeer::new(idle), Arc::default()));
        injector.open_udp(TransportId(1), from, Some(to), false).map_err(|s| format!("injector socket: {s:?}"))?;
        Ok(Self { dp, nx, injector, wsk, to, delivered: 0 })
    }

    pub fn drops(&self, reason: DropReason) -> u64 {
        self.dp.drops().get(reason)
    }

    /// Sends each datagram (in order, one at a time so the network keeps
    /// it) and waits until the data path accounted for all of them: opened
    /// and indicated or consumed, refused (a drop), or passed to the
    /// control plane, and nothing left in its RX tables.
    pub fn receive_all(&mut self, datagrams: &[&[u8]]) -> Result<Received, String> {
        let accounted = |dp: &Dp| {
            u64::from(dp.stats().received_data_packets.load(Ordering::Relaxed))
                + dp.drops().total()
                + dp.peers().control_packets()
        };
        let received_before = self.dp.stats().received_data_packets.load(Ordering::Relaxed);
        let target = accounted(&self.dp) + datagrams.len() as u64;
        for (i, d) in datagrams.iter().enumerate() {
            let deadline = Instant::now() + WAIT;
            while let Err(e) = self.injector.send_control(self.to, d) {
                // Every send slot busy: wait for completions.
                if Instant::now() >= deadline {
                    return Err(format!("datagram {i} not sent: {e:?}"));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let o = self.dp.occupancy();
            if accounted(&self.dp) >= target && o.rx_pending == 0 && o.rx_slots == 0 {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} of {} datagrams accounted for; occupancy {o:?}",
                    accounted(&self.dp) + datagrams.len() as u64 - target,
                    datagrams.len()
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let all = self.nx.delivered();
        let packets: Vec<Vec<u8>> = all[self.delivered..].iter().map(|p| p.bytes.clone()).collect();
        self.delivered = all.len();
        let received = self.dp.stats().received_data_packets.load(Ordering::Relaxed) - received_before;
        let keepalives = (received as usize).saturating_sub(packets.len());
        Ok(Received { packets, keepalives })
    }

    /// Stops the queues, closes both sockets, and fails on anything either
    /// model's verifier found; also asserts RX never copied.
    pub fn finish(mut self) -> Result<(), String> {
        let copied = self.dp.copies().rx_copied_bytes.load(Ordering::Relaxed);
        self.nx.finish();
        let v = self.nx.verifier();
        let mut problems: Vec<String> = v.violations().iter().map(|x| format!("{x:?}")).collect();
        problems.extend(v.leaks().iter().map(|l| format!("leak {l:?}")));
        for dp in [&self.dp, &self.injector] {
            let deadline = Instant::now() + WAIT;
            while dp.close_transport() != CloseProgress::Closed {
                if Instant::now() >= deadline {
                    problems.push(format!("socket not closed: {:?}", dp.occupancy()));
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        problems.extend(self.wsk.violations().iter().map(|x| format!("WSK {x:?}")));
        if copied != 0 {
            problems.push(format!("RX copied {copied} bytes: not zero-copy"));
        }
        if problems.is_empty() { Ok(()) } else { Err(problems.join("\n")) }
    }
}
