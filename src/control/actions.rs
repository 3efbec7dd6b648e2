//! What the caller must do after the device returns: kernel services the
//! pure state machine cannot call itself (it runs under the device spin lock
//! and owns no sockets). The adapter glue executes each [`Action`] in order
//! after releasing the lock.

use core::net::SocketAddr;

use crate::proto::PeerId;

/// Most actions one call produces. The largest batch is handle close
/// (close the P2P socket, close the MP listener, link down) or one tick,
/// which stops early and asks to be called again when this fills (see
/// [`crate::control::device::Device::tick`]).
pub const ACTIONS_MAX: usize = 32;

/// Names a socket the device asked for, so that events of a socket the
/// device has since replaced (NEW_PEER again, DEL_PEER, close) are ignored
/// rather than applied to its successor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TransportId(pub u64);

/// The NDIS media connect state of the adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    Up,
    Down,
}

/// One thing for the caller to do.
///
/// Addresses are canonical: an IPv4 peer is always `SocketAddr::V4`, even
/// when it reached a dual-stack socket as a v4-mapped IPv6 address; the glue
/// maps to the socket's family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create a UDP socket bound to `local` and report the result with
    /// `Device::transport_opened`. P2P gives the peer as `remote` (accept
    /// only its datagrams); MP gives none (listen; dual stack unless
    /// `ipv6_only`).
    OpenUdp { transport: TransportId, local: SocketAddr, remote: Option<SocketAddr>, ipv6_only: bool },
    /// Create a TCP socket and start connecting; report creation with
    /// `Device::transport_opened`, the connect with `Device::tcp_connected`.
    OpenTcp { transport: TransportId, local: SocketAddr, remote: SocketAddr },
    /// Close the socket (after its retained receives and sends drain).
    CloseTransport(TransportId),
    /// Send one keepalive ping to the peer as ordinary data with its primary
    /// key (dropped by the data path if it has none).
    SendKeepalive { peer: PeerId },
    /// Report the adapter's media state to NDIS.
    Link(LinkState),
}

/// The list was full; the device checks for room before it changes state,
/// so this only reaches a caller that passed a list that was not empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActionsFull;

/// A bounded list of actions, filled by the device and drained by the
/// caller. Kept small (no packet bytes) so it can live on a kernel stack.
#[derive(Clone, Debug, Default)]
pub struct Actions {
    items: [Option<Action>; ACTIONS_MAX],
    len: usize,
}

impl Actions {
    pub const fn new() -> Self {
        Self { items: [None; ACTIONS_MAX], len: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many more actions fit.
    pub fn room(&self) -> usize {
        ACTIONS_MAX - self.len
    }

    pub fn push(&mut self, action: Action) -> Result<(), ActionsFull> {
        let slot = self.items.get_mut(self.len).ok_or(ActionsFull)?;
        *slot = Some(action);
        self.len += 1;
        Ok(())
    }

    /// The actions in the order they must run.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Action> + '_ {
        self.items.iter().take(self.len).flatten()
    }

    /// Empties the list, yielding each action in order.
    pub fn drain(&mut self) -> impl Iterator<Item = Action> + '_ {
        let len = core::mem::take(&mut self.len);
        self.items.iter_mut().take(len).filter_map(Option::take)
    }

    pub fn clear(&mut self) {
        self.drain().for_each(drop);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn actions_keep_order_and_refuse_past_the_bound() {
        let mut a = Actions::new();
        for i in 0..ACTIONS_MAX {
            a.push(Action::CloseTransport(TransportId(i as u64))).unwrap();
        }
        assert_eq!(a.room(), 0);
        assert_eq!(a.push(Action::Link(LinkState::Up)), Err(ActionsFull));
        let got: Vec<Action> = a.drain().collect();
        assert_eq!(got.len(), ACTIONS_MAX);
        assert_eq!(got[3], Action::CloseTransport(TransportId(3)));
        assert!(a.is_empty());
        a.push(Action::Link(LinkState::Down)).unwrap();
        assert_eq!(a.iter().copied().collect::<Vec<_>>(), [Action::Link(LinkState::Down)]);
    }
}
