//! Hostile input to the device: every IOCTL code with empty, short, long and
//! random buffers in every mode and state, and random sequences of every
//! kind of input. Nothing may panic; an IOCTL that fails must leave the
//! device exactly as it was (snapshot, completions, actions); every request
//! the device parks completes exactly once, at the latest on close.

mod control_common;

use std::collections::BTreeMap;

use control_common::*;
use ovpn_dco::control::actions::{Action, TransportId};
use ovpn_dco::control::device::ReadOutcome;
use ovpn_dco::control::request::RequestId;
use ovpn_dco::ntstatus::NtStatus;
use ovpn_dco::proto::PeerId;
use ovpn_dco::uapi::Ioctl;
use ovpn_dco::uapi::decode::{input_size, output_size};
use proptest::prelude::*;

/// The 19 codes and a few that are not ovpn-dco-win's.
fn codes() -> Vec<u32> {
    let mut c: Vec<u32> = Ioctl::ALL.iter().map(|i| i.code()).collect();
    c.extend([0, 0x0022_0000, 0x0022_0000 | (20 << 2), Ioctl::NewPeer.code() | 3, u32::MAX]);
    c
}

/// Applies one IOCTL and checks the failure rule. Returns the result.
fn checked_ioctl(h: &mut Harness, code: u32, input: &[u8], out_len: usize) -> Io {
    let before = h.dev.snapshot();
    let actions_before = h.actions.len();
    let io = h.ioctl_code(code, input, out_len);
    if let Io::Done(status, out) = &io {
        if !status.is_success() {
            assert_eq!(h.dev.snapshot(), before, "code {code:#x} failed with {status:?} but changed the device");
            assert_eq!(h.actions.len(), actions_before, "code {code:#x} failed but asked for actions");
            assert!(h.log.borrow().is_empty(), "code {code:#x} failed but completed other requests");
            // Only BUFFER_OVERFLOW returns data with a failure (GET_PEER_STATS −1).
            assert!(out.is_empty() || *status == NtStatus::BUFFER_OVERFLOW, "{code:#x}: {status:?} with data");
        }
    }
    io
}

/// Builds a device in one state.
type State = (&'static str, fn() -> Harness);

/// Devices in each state the IOCTLs can meet.
fn states() -> Vec<State> {
    fn fresh() -> Harness {
        Harness::new()
    }
    fn p2p_ready() -> Harness {
        let mut h = Harness::new();
        h.ioctl(Ioctl::NewPeer, &new_peer(sa("0.0.0.0:0"), sa("192.0.2.1:1194"), UDP), 0);
        let t = opened(&mut h);
        h.dev.transport_opened(t, Ok(()), &mut h.actions);
        h.ok(Ioctl::StartVpn, &[], 0);
        h.ok(Ioctl::NewKey, &crypto_data(PRIMARY, AES_GCM, 0, 3), 0);
        h.ok(Ioctl::SetPeer, &set_peer(10, 60, 1400), 0);
        h.dev.control_packet_received(t, sa("192.0.2.1:1194"), &[0x38, 1, 2]);
        h.ioctl(Ioctl::NotifyEvent, &[], 144);
        h.completions();
        h.actions.clear();
        h
    }
    fn p2p_connecting() -> Harness {
        let mut h = Harness::new();
        h.ioctl(Ioctl::NewPeer, &new_peer(sa("[::]:0"), sa("[2001:db8::1]:443"), TCP), 0);
        let t = opened(&mut h);
        h.dev.transport_opened(t, Ok(()), &mut h.actions);
        h.read(100);
        h.actions.clear();
        h
    }
    fn mp_fresh() -> Harness {
        let mut h = Harness::new();
        h.ok(Ioctl::SetMode, &set_mode(1), 0);
        h.actions.clear();
        h
    }
    fn mp_busy() -> Harness {
        let mut h = mp_fresh();
        h.ioctl(Ioctl::MpStartVpn, &mp_start_vpn(sa("[::]:1194"), false), 32);
        let t = opened(&mut h);
        h.dev.transport_opened(t, Ok(()), &mut h.actions);
        for id in 0..3u8 {
            h.ok(
                Ioctl::MpNewPeer,
                &mp_new_peer(sa(&format!("198.51.100.{id}:1000")), [10, 8, 0, 2 + id], [0; 16], id.into()),
                0,
            );
            h.ok(Ioctl::MpSetPeer, &mp_set_peer(id.into(), 10, 60, 0), 0);
            h.ok(Ioctl::NewKeyV2, &crypto_data_v2(PRIMARY, AES_GCM, 0, id.into(), id == 1), 0);
        }
        h.ok(Ioctl::MpAddIroute, &iroute("192.168.0.0".parse().unwrap(), 16, 2), 0);
        h.ok(Ioctl::MpDelPeer, &le(0), 0); // an event waits in the queue
        h.read(2048);
        h.completions();
        h.actions.clear();
        h
    }
    vec![
        ("fresh", fresh),
        ("p2p ready", p2p_ready),
        ("p2p connecting", p2p_connecting),
        ("mp fresh", mp_fresh),
        ("mp busy", mp_busy),
    ]
}

/// The socket of the last Open action.
fn opened(h: &mut Harness) -> TransportId {
    h.actions
        .iter()
        .rev()
        .find_map(|a| match *a {
            Action::OpenUdp { transport, .. } | Action::OpenTcp { transport, .. } => Some(transport),
            _ => None,
        })
        .expect("an open action")
}

#[test]
fn every_code_with_empty_short_long_and_random_buffers_in_every_state() {
    let mut rng = 0x9E37_79B9_7F4A_7C15_u64;
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng as u8
            })
            .collect()
    };
    for (name, make) in states() {
        for code in codes() {
            let size = Ioctl::from_code(code).map_or(16, input_size);
            let out_size = Ioctl::from_code(code).map_or(16, output_size);
            let mut inputs = vec![vec![], vec![0u8; size.saturating_sub(1)], vec![0u8; size], vec![0xFF; size + 16]];
            for n in [1, size, size + 3, 200] {
                inputs.push(random(n));
            }
            let mut h = make();
            for input in &inputs {
                for out_len in [0, 3, out_size.saturating_sub(1), out_size, 4096] {
                    let io = checked_ioctl(&mut h, code, input, out_len);
                    if Ioctl::from_code(code).is_none() {
                        assert_eq!(io, Io::Done(NtStatus::INVALID_DEVICE_REQUEST, vec![]), "{name}: {code:#x}");
                    }
                    h.completions();
                    h.actions.clear();
                }
            }
            // Whatever happened, close completes everything parked.
            h.close();
            assert!(h.dev.snapshot().parked_reads.is_empty(), "{name}");
        }
    }
}

#[test]
fn random_reads_writes_and_packets_never_panic() {
    let mut h = states()[4].1();
    let listener = h.dev.data_transport().unwrap();
    for len in [0usize, 1, 2, 15, 16, 17, 27, 28, 29, 1500, 1529, 2047, 2048, 2049, 5000] {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
        let _ = h.dev.write(&bytes);
        let mut v4 = prefix(sa("192.0.2.5:1"));
        v4.extend_from_slice(&bytes);
        let _ = h.dev.write(&v4);
        h.dev.control_packet_received(listener, sa("[::ffff:192.0.2.5]:1"), &bytes);
        h.dev.control_packet_received(TransportId(9999), sa("192.0.2.5:1"), &bytes);
        h.read(len);
        assert!(h.dev.peer_floated(PeerId::new(1).unwrap(), sa(&format!("203.0.113.{}:{len}", len % 250))));
    }
    h.close();
}

// ---------------------------------------------------------------------------
// Random sequences

#[derive(Clone, Debug)]
enum Op {
    Ioctl { code: usize, kind: u8, seed: u64, random: Vec<u8>, out: usize },
    Read { out: usize },
    Write { seed: u64, len: usize },
    Packet { transport: usize, from: u8, len: usize },
    Tick { secs: u8 },
    Opened { transport: usize, ok: bool },
    Connected { transport: usize, ok: bool },
    Disconnected { transport: usize },
    Cancel { back: usize },
    Float { peer: u8, from: u8 },
    ActivityFrom { peer: u8 },
    Close,
}

const OUT_LENS: [usize; 10] = [0, 3, 4, 12, 32, 40, 64, 80, 144, 2048];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0usize..40, 0u8..8, any::<u64>(), prop::collection::vec(any::<u8>(), 0..120), 0usize..OUT_LENS.len())
            .prop_map(|(code, kind, seed, random, out)| Op::Ioctl { code, kind, seed, random, out: OUT_LENS[out] }),
        2 => (0usize..OUT_LENS.len()).prop_map(|o| Op::Read { out: OUT_LENS[o] }),
        1 => (any::<u64>(), 0usize..40).prop_map(|(seed, len)| Op::Write { seed, len }),
        2 => (0usize..4, any::<u8>(), 0usize..40).prop_map(|(transport, from, len)| Op::Packet { transport, from, len }),
        2 => (0u8..70).prop_map(|secs| Op::Tick { secs }),
        2 => (0usize..4, any::<bool>()).prop_map(|(transport, ok)| Op::Opened { transport, ok }),
        1 => (0usize..4, any::<bool>()).prop_map(|(transport, ok)| Op::Connected { transport, ok }),
        1 => (0usize..4).prop_map(|transport| Op::Disconnected { transport }),
        1 => (0usize..6).prop_map(|back| Op::Cancel { back }),
        1 => (0u8..4, any::<u8>()).prop_map(|(peer, from)| Op::Float { peer, from }),
        1 => (0u8..4).prop_map(|peer| Op::ActivityFrom { peer }),
        1 => Just(Op::Close),
    ]
}

fn client(n: u8) -> std::net::SocketAddr {
    match n % 3 {
        0 => sa(&format!("198.51.100.{}:{}", n % 5, 1000 + u16::from(n % 3))),
        1 => sa(&format!("[::ffff:198.51.100.{}]:1000", n % 5)),
        _ => sa(&format!("[2001:db8::{}]:2000", n % 5)),
    }
}

/// A buffer OpenVPN could plausibly send for `ioctl`, varied by `seed`,
/// with small peer ids so that sequences meet existing peers.
fn plausible(ioctl: Ioctl, seed: u64) -> Vec<u8> {
    let b = |shift: u32, n: u64| ((seed >> shift) % n) as i32;
    let id = b(0, 2);
    match ioctl {
        Ioctl::NewPeer => {
            let v6 = b(8, 2) == 1;
            let (local, remote) =
                if v6 { (sa("[::]:0"), sa("[2001:db8::1]:1194")) } else { (sa("0.0.0.0:0"), sa("192.0.2.1:1194")) };
            new_peer(local, remote, b(9, 2))
        }
        Ioctl::NewKey => crypto_data(b(8, 2), 1 + b(9, 2), b(10, 4) as u8, id),
        Ioctl::NewKeyV2 => crypto_data_v2(b(8, 2), 1 + b(9, 2), b(10, 4) as u8, id, b(12, 2) == 1),
        Ioctl::SetPeer => set_peer(b(8, 4) * 5 - 1, b(12, 4) * 20 - 1, [-1, 0, 1300][b(16, 3) as usize]),
        Ioctl::SetMode => set_mode(b(8, 2)),
        Ioctl::MpStartVpn => {
            mp_start_vpn(if b(8, 2) == 0 { sa("0.0.0.0:1194") } else { sa("[::]:1194") }, b(9, 2) == 1)
        }
        Ioctl::MpNewPeer => mp_new_peer(client(b(8, 256) as u8), [10, 8, 0, 2 + b(16, 4) as u8], [0; 16], id),
        Ioctl::MpSetPeer => mp_set_peer(id, b(8, 4) * 5 - 1, b(12, 4) * 20 - 1, -1),
        Ioctl::MpDelPeer | Ioctl::MpSwapKeys => le(id).to_vec(),
        Ioctl::MpAddIroute | Ioctl::MpDelIroute => {
            iroute(format!("10.{}.0.0", b(8, 3)).parse().unwrap(), [8, 16, 24, 33][b(10, 4) as usize], id)
        }
        Ioctl::GetPeerStats => le(if b(8, 2) == 0 { -1 } else { id }).to_vec(),
        _ => vec![],
    }
}

struct Run {
    h: Harness,
    transports: Vec<TransportId>,
    /// Request id → completions seen.
    parked: BTreeMap<u64, usize>,
    requests: Vec<u64>,
}

impl Run {
    fn transport(&self, pick: usize) -> TransportId {
        self.transports.iter().rev().nth(pick).copied().unwrap_or(TransportId(12345))
    }

    /// Collects completions and actions; each request completes once.
    fn settle(&mut self) {
        for c in self.h.completions() {
            let n = self.parked.get_mut(&c.id).unwrap_or_else(|| panic!("request {} completed but never parked", c.id));
            *n += 1;
            assert_eq!(*n, 1, "request {} completed twice", c.id);
        }
        for a in self.h.take_actions() {
            if let Action::OpenUdp { transport, .. } | Action::OpenTcp { transport, .. } = a {
                self.transports.push(transport);
            }
        }
        let snap = self.h.dev.snapshot();
        assert!(
            snap.parked_reads.is_empty() || (snap.control_queue.is_empty() && snap.read_signal.is_none()),
            "a read waits while a packet or signal is ready"
        );
        assert!(
            snap.parked_notify.is_empty() || snap.events.is_empty(),
            "a NOTIFY_EVENT waits while an event is queued"
        );
    }

    fn park(&mut self, id: u64) {
        self.parked.insert(id, 0);
        self.requests.push(id);
    }

    fn apply(&mut self, op: &Op) {
        let codes = codes();
        // Past the plain list, the IOCTLs that build state come up again.
        const BUILDERS: [Ioctl; 16] = [
            Ioctl::NewPeer,
            Ioctl::NewKey,
            Ioctl::NewKeyV2,
            Ioctl::SetPeer,
            Ioctl::SwapKeys,
            Ioctl::StartVpn,
            Ioctl::SetMode,
            Ioctl::MpNewPeer,
            Ioctl::MpNewPeer,
            Ioctl::MpSetPeer,
            Ioctl::MpSwapKeys,
            Ioctl::MpAddIroute,
            Ioctl::MpDelPeer,
            Ioctl::NotifyEvent,
            Ioctl::GetPeerStats,
            Ioctl::NewKey,
        ];
        match op {
            Op::Ioctl { code, kind, seed, random, out } => {
                let code =
                    codes.get(*code).copied().unwrap_or_else(|| BUILDERS[(code - codes.len()) % BUILDERS.len()].code());
                let valid = Ioctl::from_code(code).map_or_else(Vec::new, |i| plausible(i, *seed));
                // Mostly plausible buffers, so that sequences get somewhere.
                let input = match kind {
                    0..=4 => valid,
                    5 => random.clone(),
                    6 => valid[..valid.len().saturating_sub(1 + (*seed as usize % 4))].to_vec(),
                    _ => {
                        let mut v = valid;
                        if !v.is_empty() {
                            let at = (*seed as usize >> 8) % v.len();
                            v[at] ^= (*seed as u8) | 1;
                        }
                        v
                    }
                };
                if let Io::Parked(id) = checked_ioctl(&mut self.h, code, &input, *out) {
                    self.park(id);
                }
            }
            Op::Read { out } => {
                let (id, r) = self.h.read(*out);
                self.parked.insert(id, 0);
                if r == ReadOutcome::Parked {
                    self.requests.push(id);
                } else {
                    // Completed at once through the request itself.
                    self.requests.push(id);
                }
            }
            Op::Write { seed, len } => {
                let mut bytes = prefix(client(*seed as u8));
                bytes.extend((0..*len).map(|i| (seed >> (i % 8)) as u8));
                let cut = (*seed as usize >> 16) % (bytes.len() + 1);
                let _ = self.h.dev.write(&bytes[cut..]);
            }
            Op::Packet { transport, from, len } => {
                let t = self.transport(*transport);
                let bytes: Vec<u8> = (0..*len).map(|i| i as u8 ^ from).collect();
                self.h.dev.control_packet_received(t, client(*from), &bytes);
            }
            Op::Tick { secs } => {
                self.h.advance_secs(u64::from(*secs));
                if let Some(next) = self.h.tick() {
                    assert!(next > self.h.now || self.h.actions.room() == 0, "the next deadline is in the future");
                }
            }
            Op::Opened { transport, ok } => {
                let t = self.transport(*transport);
                let result = if *ok { Ok(()) } else { Err(NtStatus::INSUFFICIENT_RESOURCES) };
                self.h.dev.transport_opened(t, result, &mut self.h.actions);
            }
            Op::Connected { transport, ok } => {
                let t = self.transport(*transport);
                let status = if *ok { NtStatus::SUCCESS } else { NtStatus::CONNECTION_ABORTED };
                self.h.dev.tcp_connected(t, status, &mut self.h.actions);
            }
            Op::Disconnected { transport } => {
                let t = self.transport(*transport);
                self.h.dev.transport_disconnected(t, &mut self.h.actions);
            }
            Op::Cancel { back } => {
                if let Some(id) = self.requests.iter().rev().nth(*back) {
                    self.h.dev.cancel(RequestId(*id));
                }
            }
            Op::Float { peer, from } => {
                self.h.dev.peer_floated(PeerId::new(u32::from(*peer)).unwrap(), client(*from));
            }
            Op::ActivityFrom { peer } => {
                if let Some(p) = self.h.dev.rx_peer(PeerId::new(u32::from(*peer)).unwrap()) {
                    p.mark_received(self.h.now);
                    p.mark_sent(self.h.now);
                }
            }
            Op::Close => self.h.close(),
        }
        self.settle();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_sequences_keep_every_rule(server in any::<bool>(), ops in prop::collection::vec(op(), 1..80)) {
        let mut run = Run { h: Harness::new(), transports: vec![], parked: BTreeMap::new(), requests: vec![] };
        if server {
            // Half the runs start as a listening server, the rest as a client.
            run.h.ok(Ioctl::SetMode, &set_mode(1), 0);
            let start = checked_ioctl(&mut run.h, Ioctl::MpStartVpn.code(), &mp_start_vpn(sa("[::]:1194"), false), 32);
            let Io::Parked(id) = start else { panic!("{start:?}") };
            run.park(id);
            run.settle();
            run.h.dev.transport_opened(run.transport(0), Ok(()), &mut run.h.actions);
            run.settle();
        }
        for op in &ops {
            run.apply(op);
        }
        run.h.close();
        run.settle();
        for (id, n) in &run.parked {
            prop_assert_eq!(*n, 1, "request {} completed {} times", id, n);
        }
        let snap = run.h.dev.snapshot();
        prop_assert!(snap.p2p.is_none() && snap.listener.is_none() && snap.mp_peers.is_empty() && !snap.link_up);
    }
}
