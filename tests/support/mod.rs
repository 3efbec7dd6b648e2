//! Support for tests against a real OpenVPN peer (tests/real_openvpn.rs).
//!
//! - [`netns`]: namespaces, veth pairs, bounded commands, the skip rule
//! - [`openvpn`]: a live client/server session and its data-channel keys
//! - [`capture`]: AF_PACKET capture of one interface
//! - [`datapath_rx`]: captured datagrams through the data path's RX

// A support library: each test crate uses part of it.
#![allow(dead_code)]

pub mod capture;
pub mod datapath_rx;
pub mod netns;
pub mod openvpn;

/// A real-peer session for `test`, or `None` (after saying why) when this
/// machine cannot run one and `OVPN_DCO_REQUIRE_REAL_PEER` is not `1`.
/// Failing to start on a capable machine always fails the test.
pub fn session_or_skip(test: &str, cipher: openvpn::DataCipher) -> Option<openvpn::Session> {
    if let Some(reason) = netns::missing_prerequisite() {
        netns::skip(test, &reason);
        return None;
    }
    match openvpn::Session::start(cipher) {
        Ok(session) => Some(session),
        Err(e) => panic!("{test}: starting OpenVPN ({}) failed: {e}", cipher.openvpn_name()),
    }
}
