//! Any IOCTL code with any input bytes through the decoder, and every encoder
//! into output buffers of any size.
//!
//! Input layout (the seeds in corpus/uapi_decode follow it):
//! - byte 0 selects the code: below [`RAW_CODE`] it picks `Ioctl::ALL[b % 19]`,
//!   otherwise the next 4 bytes are a raw control code (little endian), so
//!   that any 32-bit code is reachable;
//! - 2 bytes (little endian): the output buffer size for the encoders, up to
//!   [`MAX_OUTPUT`];
//! - the rest: the IOCTL input buffer, also the source of the values the
//!   encoders write.
//!
//! Properties: nothing panics; a decode error maps to an NTSTATUS of error
//! severity; a too-short buffer is reported with the sizes involved; bytes
//! past the structure never change the result; an encoder writes only inside
//! the structure it reports and never past the buffer, and a decoded
//! MP_START_VPN encodes back to itself.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ovpn_dco::ntstatus::NtStatus;
use ovpn_dco::uapi::codes::Ioctl;
use ovpn_dco::uapi::decode::{self, DecodeError, EncodeError, NotifyEvent, PeerStatsAll, Request};
use ovpn_dco::uapi::types::{OvpnPeerStats, OvpnStats, OvpnVersion};

/// Selector values from here on mean "raw code follows".
const RAW_CODE: u8 = 0xF0;
/// Largest output buffer tried: a few OVPN_PEER_STATS arrays' worth.
const MAX_OUTPUT: usize = 4096;
/// What an untouched output byte holds.
const SENTINEL: u8 = 0xA5;
/// Most peers fed to GET_PEER_STATS for all peers.
const MAX_PEERS: usize = 64;

/// NT_ERROR(): severity bits 11.
fn is_error(status: NtStatus) -> bool {
    status.as_u32() >> 30 == 3
}

/// Reads values for the encoders out of the input, cycling, zeros when empty.
struct Values<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Values<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        if self.bytes.is_empty() {
            return out;
        }
        for b in &mut out {
            *b = self.bytes[self.at % self.bytes.len()];
            self.at = self.at.wrapping_add(1);
        }
        out
    }
    fn i32(&mut self) -> i32 {
        i32::from_le_bytes(self.take())
    }
    fn i64(&mut self) -> i64 {
        i64::from_le_bytes(self.take())
    }
    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
}

fn check_decode(code: u32, input: &[u8]) -> Option<Request> {
    let result = decode::decode_request(code, input);
    match (&result, Ioctl::from_code(code)) {
        (Ok(request), Some(ioctl)) => assert_eq!(request.ioctl(), ioctl),
        (Ok(request), None) => panic!("unknown code {code:#x} decoded as {request:?}"),
        (Err(e), ioctl) => {
            assert!(is_error(e.status()), "{e:?} maps to {:?}", e.status());
            match *e {
                DecodeError::UnknownIoctl(c) => assert!(c == code && ioctl.is_none()),
                DecodeError::InputTooSmall { needed, got } => {
                    let ioctl = ioctl.expect("a known code");
                    assert_eq!(needed, decode::input_size(ioctl));
                    assert_eq!(got, input.len());
                    assert!(got < needed);
                }
                _ => assert!(ioctl.is_some()),
            }
        }
    }
    // Only the structure's prefix is read: trailing bytes change nothing.
    if let Some(prefix) = Ioctl::from_code(code).and_then(|ioctl| input.get(..decode::input_size(ioctl))) {
        assert_eq!(decode::decode_request(code, prefix), result);
    }
    result.ok()
}

/// An encoder's result against the buffer it was given: on success exactly
/// `size` bytes written and nothing after them touched; on failure nothing
/// touched at all.
fn check_encoded(out: &[u8], result: Result<usize, EncodeError>, size: usize) {
    match result {
        Ok(n) => {
            assert_eq!(n, size);
            assert!(n <= out.len());
            assert!(out[n..].iter().all(|&b| b == SENTINEL), "wrote past the structure");
        }
        Err(EncodeError::OutputTooSmall { needed, got }) => {
            assert_eq!((needed, got), (size, out.len()));
            assert!(got < needed);
            assert!(out.iter().all(|&b| b == SENTINEL), "wrote into a buffer it refused");
            assert_eq!(result.unwrap_err().status(), NtStatus::BUFFER_TOO_SMALL);
        }
    }
}

fn check_encoders(out_len: usize, values: &mut Values<'_>, request: Option<&Request>) {
    let mut out = vec![SENTINEL; out_len];

    let stats = OvpnStats {
        lost_in_control_packets: values.i32(),
        lost_out_control_packets: values.i32(),
        lost_in_data_packets: values.i32(),
        lost_out_data_packets: values.i32(),
        received_data_packets: values.i32(),
        received_control_packets: values.i32(),
        sent_control_packets: values.i32(),
        sent_data_packets: values.i32(),
        transport_bytes_sent: values.i64(),
        transport_bytes_received: values.i64(),
        tun_bytes_sent: values.i64(),
        tun_bytes_received: values.i64(),
    };
    let r = decode::encode_stats(&mut out, &stats);
    check_encoded(&out, r, decode::output_size(Ioctl::GetStats));

    let peer = |v: &mut Values<'_>| OvpnPeerStats {
        peer_id: v.i32(),
        link_rx_bytes: v.i64(),
        link_tx_bytes: v.i64(),
        vpn_rx_bytes: v.i64(),
        vpn_tx_bytes: v.i64(),
    };
    out.fill(SENTINEL);
    let one = peer(values);
    let r = decode::encode_peer_stats(&mut out, &one);
    check_encoded(&out, r, decode::output_size(Ioctl::GetPeerStats));

    out.fill(SENTINEL);
    let version = OvpnVersion { major: values.i32(), minor: values.i32(), patch: values.i32() };
    let r = decode::encode_version(&mut out, &version);
    check_encoded(&out, r, decode::output_size(Ioctl::GetVersion));

    // GET_PEER_STATS for all peers.
    out.fill(SENTINEL);
    let count = usize::from(values.u8()) % (MAX_PEERS + 1);
    let peers: Vec<OvpnPeerStats> = (0..count).map(|_| peer(values)).collect();
    let entry = core::mem::size_of::<OvpnPeerStats>();
    match decode::encode_peer_stats_all(&mut out, peers.iter().copied()) {
        Ok(all @ PeerStatsAll::Written(n)) => {
            assert_eq!(n, count * entry);
            assert!(all.information() <= out.len());
            assert!(out[n..].iter().all(|&b| b == SENTINEL));
        }
        Ok(all @ PeerStatsAll::Overflow { required }) => {
            assert_eq!(required as usize, count * entry);
            assert!(out.len() < count * entry);
            assert_eq!(out[..4], required.to_le_bytes());
            assert!(out[4..].iter().all(|&b| b == SENTINEL));
            assert_eq!(all.information(), 4);
            assert_eq!(all.status(), NtStatus::BUFFER_OVERFLOW);
        }
        Err(EncodeError::OutputTooSmall { needed, got }) => {
            assert!(got < 4 && needed == 4 && got == out.len());
            assert!(out.iter().all(|&b| b == SENTINEL));
        }
    }

    // MP_START_VPN and NOTIFY_EVENT with addresses from decoded requests, or
    // a fixed one.
    let (start, address) = match request {
        Some(Request::MpStartVpn(s)) => (*s, s.listen),
        Some(Request::NewPeer(p)) => (decode::MpStartVpn { listen: p.remote, ipv6_only: false }, p.remote),
        Some(Request::MpNewPeer(p)) => (decode::MpStartVpn { listen: p.local, ipv6_only: true }, p.remote),
        _ => {
            let a = "192.0.2.1:1194".parse().unwrap();
            (decode::MpStartVpn { listen: a, ipv6_only: values.u8() & 1 == 1 }, a)
        }
    };
    out.fill(SENTINEL);
    let r = decode::encode_mp_start_vpn(&mut out, &start);
    check_encoded(&out, r, decode::output_size(Ioctl::MpStartVpn));
    if let Ok(n) = r {
        // OpenVPN reads the bound address back from the same structure.
        assert_eq!(decode::mp_start_vpn(&out[..n]), Ok(start));
    }

    let peer_id = ovpn_dco::proto::PeerId::new(u32::from_le_bytes(values.take()) & ovpn_dco::proto::PeerId::MAX)
        .expect("masked to 24 bits");
    let reasons = [
        decode::DelPeerReason::Teardown,
        decode::DelPeerReason::Userspace,
        decode::DelPeerReason::Expired,
        decode::DelPeerReason::TransportError,
        decode::DelPeerReason::TransportDisconnect,
    ];
    let event = match values.u8() % 3 {
        0 => NotifyEvent::DelPeer { peer_id, reason: reasons[usize::from(values.u8()) % reasons.len()] },
        1 => NotifyEvent::SwapKeys { peer_id },
        _ => NotifyEvent::FloatPeer { peer_id, address },
    };
    out.fill(SENTINEL);
    let r = decode::encode_notify_event(&mut out, &event);
    check_encoded(&out, r, decode::output_size(Ioctl::NotifyEvent));
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let (code, rest) = if selector < RAW_CODE {
        (Ioctl::ALL[usize::from(selector) % Ioctl::ALL.len()].code(), rest)
    } else {
        match rest.split_first_chunk::<4>() {
            Some((raw, rest)) => (u32::from_le_bytes(*raw), rest),
            None => return,
        }
    };
    let Some((out_len, input)) = rest.split_first_chunk::<2>() else { return };
    let out_len = usize::from(u16::from_le_bytes(*out_len)) % (MAX_OUTPUT + 1);

    let request = check_decode(code, input);
    check_encoders(out_len, &mut Values { bytes: input, at: 0 }, request.as_ref());
});
