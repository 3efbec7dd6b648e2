//! Captured datagrams through the driver's own RX: a host tunnel (the
//! adapter configured by IOCTLs, zero-copy RX over the NetAdapterCx model)
//! receives them from the WSK model's in-memory network as real indication
//! lists, sent there raw by a second tunnel's WriteFile (which sends bytes
//! as given).

use ovpn_dco::datapath::DropReason;
use ovpn_dco::os::host::tunnel::{HostTunnel, TunnelConfig, TunnelKeys, TunnelProto, Upper, Verification};
use ovpn_dco::os::host::wsk::{LoopbackConfig, LoopbackHub, Network};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

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

/// One receiving tunnel on the in-memory network, and its injector.
pub struct DatapathReceiver {
    rx: HostTunnel,
    injector: HostTunnel,
    delivered: usize,
}

fn tunnel(network: &Network, keys: TunnelKeys, local: SocketAddr, remote: SocketAddr) -> Result<HostTunnel, String> {
    let config = TunnelConfig {
        upper: Upper::Memory,
        proto: TunnelProto::Udp,
        network: network.clone(),
        local,
        remote,
        keys,
        first_packet_id: 1,
        keepalive_interval: 0,
        keepalive_timeout: 0,
        mss: None,
        tun_offload: false,
        verification: Verification::Full,
    };
    HostTunnel::start(&config).map_err(|e| format!("tunnel on {local}: {e}"))
}

impl DatapathReceiver {
    /// A tunnel holding `keys`, listening on `to` for datagrams from `from`.
    pub fn new(keys: TunnelKeys, from: SocketAddr, to: SocketAddr) -> Result<Self, String> {
        let network = Network::Loopback(LoopbackHub::new(LoopbackConfig::default()));
        let rx = tunnel(&network, keys.clone(), to, from)?;
        // The injector only writes raw bytes; its key is never used.
        let injector = tunnel(&network, keys, from, to)?;
        Ok(Self { rx, injector, delivered: 0 })
    }

    pub fn drops(&self, reason: DropReason) -> u64 {
        self.rx.datapath().drops().get(reason)
    }

    /// Everything the receiver has accounted for: data packets opened,
    /// drops, and control packets (queued or dropped by the device).
    fn accounted(&self) -> u64 {
        let s = self.rx.adapter().stats();
        let get = |c: &std::sync::atomic::AtomicU32| u64::from(c.load(Ordering::Relaxed));
        get(&s.received_data_packets)
            + self.rx.datapath().drops().total()
            + get(&s.received_control_packets)
            + get(&s.lost_in_control_packets)
    }

    /// Sends each datagram (in order, one at a time so the network keeps
    /// it) and waits until the receiver accounted for all of them: opened
    /// and indicated or consumed, refused (a drop), or passed to the
    /// control plane, and nothing left in its RX tables.
    pub fn receive_all(&mut self, datagrams: &[&[u8]]) -> Result<Received, String> {
        let received = |t: &HostTunnel| u64::from(t.adapter().stats().received_data_packets.load(Ordering::Relaxed));
        let received_before = received(&self.rx);
        let target = self.accounted() + datagrams.len() as u64;
        for (i, d) in datagrams.iter().enumerate() {
            let deadline = Instant::now() + WAIT;
            while let Err(e) = self.injector.send_raw(d) {
                // Every send slot busy: wait for completions.
                if Instant::now() >= deadline {
                    return Err(format!("datagram {i} not sent: {e:?}"));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let o = self.rx.datapath().occupancy();
            if self.accounted() >= target && o.rx_pending == 0 && o.rx_slots == 0 {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} of {} datagrams accounted for; occupancy {o:?}",
                    self.accounted() + datagrams.len() as u64 - target,
                    datagrams.len()
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let all = self.rx.delivered();
        let packets: Vec<Vec<u8>> = all[self.delivered..].iter().map(|p| p.bytes.clone()).collect();
        self.delivered = all.len();
        let opened = received(&self.rx) - received_before;
        let keepalives = (opened as usize).saturating_sub(packets.len());
        Ok(Received { packets, keepalives })
    }

    /// Closes both tunnels and fails on anything either model's verifier
    /// found; also asserts RX never copied.
    pub fn finish(self) -> Result<(), String> {
        let copied = self.rx.datapath().copies().rx_copied_bytes.load(Ordering::Relaxed);
        let mut problems = Vec::new();
        for t in [self.rx, self.injector] {
            if let Err(e) = t.stop() {
                problems.push(e.to_string());
            }
        }
        if copied != 0 {
            problems.push(format!("RX copied {copied} bytes: not zero-copy"));
        }
        if problems.is_empty() { Ok(()) } else { Err(problems.join("\n")) }
    }
}
