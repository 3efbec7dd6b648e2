//! Shared by the control-plane scenario and bad-input tests: a `Request`
//! that records its completion, a harness driving one `Device` in virtual
//! time, and builders that lay out IOCTL buffers byte by byte as OpenVPN's
//! dco_win.c fills them on x64 Windows (little-endian integers, ports and
//! addresses in network order, AF_INET = 2, AF_INET6 = 23).

#![allow(dead_code)]

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;

use ovpn_dco::control::actions::{Action, Actions};
use ovpn_dco::control::ctl_queue::put_prefix;
use ovpn_dco::control::device::{Device, Outcome, ReadOutcome};
use ovpn_dco::control::request::{Request, RequestId};
use ovpn_dco::crypto::host::{HostCrypto, HostKey};
use ovpn_dco::crypto::slots::{DirectionKey, KeySlots, NewKey, SlotIndex};
use ovpn_dco::crypto::{Cipher, CryptoProvider};
use ovpn_dco::ntstatus::NtStatus;
use ovpn_dco::os::time::Instant;
use ovpn_dco::proto::aead_frame::Layout;
use ovpn_dco::proto::{KeyId, PeerId};
use ovpn_dco::uapi::Ioctl;

/// One completion the device made through `Request::complete`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    pub id: u64,
    pub status: NtStatus,
    pub output: Vec<u8>,
}

pub type Log = Rc<RefCell<Vec<Completion>>>;

/// A parked WDFREQUEST stand-in.
#[derive(Debug)]
pub struct TestRequest {
    pub id: u64,
    pub out_len: usize,
    log: Log,
}

impl Request for TestRequest {
    fn id(&self) -> RequestId {
        RequestId(self.id)
    }
    fn output_len(&self) -> usize {
        self.out_len
    }
    fn complete(self, status: NtStatus, output: &[u8]) {
        assert!(output.len() <= self.out_len, "request {} completed with more than its buffer", self.id);
        self.log.borrow_mut().push(Completion { id: self.id, status, output: output.to_vec() });
    }
}

/// An IOCTL's immediate result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Io {
    Done(NtStatus, Vec<u8>),
    Parked(u64),
}

impl Io {
    pub fn status(&self) -> Option<NtStatus> {
        match self {
            Io::Done(s, _) => Some(*s),
            Io::Parked(_) => None,
        }
    }
}

pub struct Harness {
    pub dev: Device<HostCrypto, TestRequest>,
    pub log: Log,
    pub actions: Actions,
    pub now: Instant,
    next_id: u64,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    pub fn new() -> Self {
        Self {
            dev: Device::new(),
            log: Log::default(),
            actions: Actions::new(),
            now: Instant::from_millis(1_000_000),
            next_id: 1,
        }
    }

    pub fn request(&mut self, out_len: usize) -> TestRequest {
        let id = self.next_id;
        self.next_id += 1;
        TestRequest { id, out_len, log: self.log.clone() }
    }

    pub fn ioctl_code(&mut self, code: u32, input: &[u8], out_len: usize) -> Io {
        let req = self.request(out_len);
        let id = req.id;
        let mut out = vec![0xCC; out_len];
        match self.dev.ioctl(&HostCrypto, code, input, &mut out, req, self.now, &mut self.actions) {
            Outcome::Complete { request, status, information } => {
                assert_eq!(request.id, id);
                assert!(information <= out_len, "Information {information} past a {out_len}-byte buffer");
                Io::Done(status, out[..information].to_vec())
            }
            Outcome::Parked => Io::Parked(id),
        }
    }

    pub fn ioctl(&mut self, ioctl: Ioctl, input: &[u8], out_len: usize) -> Io {
        self.ioctl_code(ioctl.code(), input, out_len)
    }

    /// An IOCTL that must succeed at once; its output.
    #[track_caller]
    pub fn ok(&mut self, ioctl: Ioctl, input: &[u8], out_len: usize) -> Vec<u8> {
        match self.ioctl(ioctl, input, out_len) {
            Io::Done(NtStatus::SUCCESS, out) => out,
            other => panic!("{ioctl:?}: {other:?}"),
        }
    }

    /// An IOCTL that must fail at once with `status`, changing nothing.
    #[track_caller]
    pub fn fails(&mut self, ioctl: Ioctl, input: &[u8], out_len: usize, status: NtStatus) {
        let before = self.dev.snapshot();
        assert_eq!(self.ioctl(ioctl, input, out_len), Io::Done(status, vec![]), "{ioctl:?}");
        assert_eq!(self.dev.snapshot(), before, "{ioctl:?} failed but changed the device");
    }

    /// An IOCTL that must park; its request id.
    #[track_caller]
    pub fn parks(&mut self, ioctl: Ioctl, input: &[u8], out_len: usize) -> u64 {
        match self.ioctl(ioctl, input, out_len) {
            Io::Parked(id) => id,
            other => panic!("{ioctl:?} should park: {other:?}"),
        }
    }

    pub fn read(&mut self, out_len: usize) -> (u64, ReadOutcome) {
        let req = self.request(out_len);
        let id = req.id;
        (id, self.dev.read(req))
    }

    pub fn take_actions(&mut self) -> Vec<Action> {
        self.actions.drain().collect()
    }

    pub fn completions(&mut self) -> Vec<Completion> {
        std::mem::take(&mut *self.log.borrow_mut())
    }

    /// The one completion that must have happened since the last look.
    #[track_caller]
    pub fn completed(&mut self) -> Completion {
        let mut c = self.completions();
        assert_eq!(c.len(), 1, "expected one completion: {c:?}");
        c.remove(0)
    }

    pub fn advance_secs(&mut self, secs: u64) {
        self.now = self.now.saturating_add(std::time::Duration::from_secs(secs));
    }

    pub fn tick(&mut self) -> Option<Instant> {
        self.dev.tick(self.now, &mut self.actions)
    }

    pub fn close(&mut self) {
        self.dev.close(&mut self.actions);
    }
}

// ---------------------------------------------------------------------------
// Buffers

pub fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub fn le(v: i32) -> [u8; 4] {
    v.to_le_bytes()
}

/// SOCKADDR_IN or SOCKADDR_IN6 in the 28-byte address union.
pub fn addr_union(addr: SocketAddr) -> [u8; 28] {
    let mut b = [0u8; 28];
    put_prefix(&mut b, &addr).unwrap();
    b
}

/// The bare sockaddr OpenVPN prepends to MP writes (16 or 28 bytes).
pub fn prefix(addr: SocketAddr) -> Vec<u8> {
    let mut b = [0u8; 28];
    let n = put_prefix(&mut b, &addr).unwrap();
    b[..n].to_vec()
}

pub const UDP: i32 = 0;
pub const TCP: i32 = 1;

/// OVPN_NEW_PEER: Local @0, Remote @28, Proto @56.
pub fn new_peer(local: SocketAddr, remote: SocketAddr, proto: i32) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&addr_union(local));
    b.extend_from_slice(&addr_union(remote));
    b.extend_from_slice(&le(proto));
    assert_eq!(b.len(), 60);
    b
}

/// OVPN_MP_NEW_PEER as dco_win.c fills it: Local has only the family.
pub fn mp_new_peer(remote: SocketAddr, vpn4: [u8; 4], vpn6: [u8; 16], peer_id: i32) -> Vec<u8> {
    let local = if remote.is_ipv4() { sa("0.0.0.0:0") } else { sa("[::]:0") };
    let mut b = Vec::new();
    b.extend_from_slice(&addr_union(local));
    b.extend_from_slice(&addr_union(remote));
    b.extend_from_slice(&vpn4);
    b.extend_from_slice(&vpn6);
    b.extend_from_slice(&le(peer_id));
    assert_eq!(b.len(), 80);
    b
}

pub const PRIMARY: i32 = 0;
pub const SECONDARY: i32 = 1;
pub const AES_GCM: i32 = 1;
pub const CHACHA: i32 = 2;

/// Deterministic key material for key id `key_id`: what this side uses to
/// encrypt (`out`) and decrypt (`inn`).
pub struct KeyMaterial {
    pub out: [u8; 32],
    pub out_tail: [u8; 8],
    pub inn: [u8; 32],
    pub inn_tail: [u8; 8],
}

pub fn material(key_id: u8) -> KeyMaterial {
    KeyMaterial {
        out: [0x10 + key_id; 32],
        out_tail: [0x30 + key_id; 8],
        inn: [0x50 + key_id; 32],
        inn_tail: [0x70 + key_id; 8],
    }
}

/// OVPN_CRYPTO_DATA: Encrypt @0, Decrypt @41, KeySlot @84, CipherAlg @88,
/// KeyId @92, PeerId @96; 32-byte keys (AES-256-GCM or ChaCha20-Poly1305).
pub fn crypto_data(slot: i32, cipher: i32, key_id: u8, peer_id: i32) -> Vec<u8> {
    let m = material(key_id);
    let mut b = vec![0u8; 100];
    b[0..32].copy_from_slice(&m.out);
    b[32] = 32;
    b[33..41].copy_from_slice(&m.out_tail);
    b[41..73].copy_from_slice(&m.inn);
    b[73] = 32;
    b[74..82].copy_from_slice(&m.inn_tail);
    b[84..88].copy_from_slice(&le(slot));
    b[88..92].copy_from_slice(&le(cipher));
    b[92] = key_id;
    b[96..100].copy_from_slice(&le(peer_id));
    b
}

/// OVPN_CRYPTO_DATA_V2: V1 then CryptoOptions @100 (bit 1 = EPOCH).
pub fn crypto_data_v2(slot: i32, cipher: i32, key_id: u8, peer_id: i32, epoch: bool) -> Vec<u8> {
    let mut b = crypto_data(slot, cipher, key_id, peer_id);
    b.extend_from_slice(&(if epoch { 2u32 } else { 0 }).to_le_bytes());
    b
}

pub fn set_peer(interval: i32, timeout: i32, mss: i32) -> Vec<u8> {
    [le(interval), le(timeout), le(mss)].concat()
}

pub fn mp_set_peer(peer_id: i32, interval: i32, timeout: i32, mss: i32) -> Vec<u8> {
    [le(peer_id), le(interval), le(timeout), le(mss)].concat()
}

pub fn set_mode(mode: i32) -> Vec<u8> {
    le(mode).to_vec()
}

pub fn mp_start_vpn(listen: SocketAddr, ipv6_only: bool) -> Vec<u8> {
    let mut b = addr_union(listen).to_vec();
    b.extend_from_slice(&le(i32::from(ipv6_only)));
    b
}

/// OVPN_MP_IROUTE: address union @0 (IN_ADDR or IN6_ADDR), Netbits @16,
/// PeerId @20, IPv6 @24.
pub fn iroute(prefix: std::net::IpAddr, netbits: i32, peer_id: i32) -> Vec<u8> {
    let mut b = vec![0u8; 28];
    let v6 = match prefix {
        std::net::IpAddr::V4(a) => {
            b[..4].copy_from_slice(&a.octets());
            0
        }
        std::net::IpAddr::V6(a) => {
            b[..16].copy_from_slice(&a.octets());
            1
        }
    };
    b[16..20].copy_from_slice(&le(netbits));
    b[20..24].copy_from_slice(&le(peer_id));
    b[24..28].copy_from_slice(&le(v6));
    b
}

// ---------------------------------------------------------------------------
// The other end of the tunnel

/// The remote side's slots for key `key_id`: it encrypts with what the
/// device decrypts with, and the reverse.
pub fn remote_slots(cipher: Cipher, layout: Layout, key_id: u8) -> KeySlots<HostKey> {
    let m = material(key_id);
    let mut slots = KeySlots::new();
    let new = NewKey {
        key_id: KeyId::new(key_id).unwrap(),
        cipher,
        layout,
        encrypt: DirectionKey { key: &m.inn, key_len: 32, nonce_tail: m.inn_tail },
        decrypt: DirectionKey { key: &m.out, key_len: 32, nonce_tail: m.out_tail },
    };
    slots.install(&HostCrypto, SlotIndex::Primary, &new).unwrap();
    slots
}

/// One data packet from the remote side.
pub fn remote_packet<P: CryptoProvider<Key = HostKey>>(
    p: &P,
    slots: &mut KeySlots<HostKey>,
    peer_id: u32,
    payload: &[u8],
) -> Vec<u8> {
    let mut buf = vec![0u8; payload.len() + 64];
    let n = slots.tx.encrypt_from(p, PeerId::new(peer_id).unwrap(), payload, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

/// A NOTIFY_EVENT output: (Cmd, PeerId, DelPeerReason, FloatAddress bytes).
pub fn parse_event(out: &[u8]) -> (i32, i32, i32, Vec<u8>) {
    assert_eq!(out.len(), 144);
    let i = |at: usize| i32::from_le_bytes(out[at..at + 4].try_into().unwrap());
    assert_eq!(&out[12..16], [0; 4], "padding is zeroed");
    (i(0), i(4), i(8), out[16..144].to_vec())
}
