//! Longest-prefix match from an inner destination address to a peer: the
//! VPN addresses (host routes) and iroutes (MP_ADD_IROUTE) of an MP server.
//!
//! One binary trie per address family, nodes in an arena. Inserting may
//! allocate (control path, bounded by [`MAX_ROUTES`]); a lookup walks at
//! most 32 or 128 nodes and never allocates, so TX can call it per packet.

use alloc::vec::Vec;
use core::net::IpAddr;

/// Most routes (host routes and iroutes together, both families) one table
/// holds. A server with this many clients and iroutes is far past what one
/// adapter is tuned for; past it MP_ADD_IROUTE fails instead of growing
/// without bound.
pub const MAX_ROUTES: usize = 65_536;

/// Why a route was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteError {
    /// netbits above 32 (IPv4) or 128 (IPv6).
    BadPrefixLength,
    /// [`MAX_ROUTES`] reached.
    TableFull,
}

const NONE: u32 = u32::MAX;

#[derive(Clone, Copy)]
struct Node<V> {
    child: [u32; 2],
    value: Option<V>,
}

/// A binary trie over keys of `BITS` bits held in the high bits of a u128.
struct Trie<V> {
    nodes: Vec<Node<V>>,
    routes: usize,
}

impl<V: Copy + PartialEq> Trie<V> {
    const fn new() -> Self {
        Self { nodes: Vec::new(), routes: 0 }
    }

    fn bit(key: u128, depth: u32) -> usize {
        ((key >> (127 - depth)) & 1) as usize
    }

    fn root(&mut self) -> u32 {
        if self.nodes.is_empty() {
            self.nodes.push(Node { child: [NONE; 2], value: None });
        }
        0
    }

    /// Inserts or replaces; returns the value it replaced.
    fn insert(&mut self, key: u128, bits: u32, value: V, room: bool) -> Result<Option<V>, RouteError> {
        // Node count is bounded by routes × depth; refuse before allocating.
        let mut node = self.root();
        for depth in 0..bits {
            let b = Self::bit(key, depth);
            let next = self.nodes[node as usize].child[b];
            node = if next == NONE {
                if !room {
                    return Err(RouteError::TableFull);
                }
                let idx = self.nodes.len() as u32;
                self.nodes.push(Node { child: [NONE; 2], value: None });
                self.nodes[node as usize].child[b] = idx;
                idx
            } else {
                next
            };
        }
        let old = self.nodes[node as usize].value.replace(value);
        if old.is_none() {
            if !room {
                self.nodes[node as usize].value = None;
                return Err(RouteError::TableFull);
            }
            self.routes += 1;
        }
        Ok(old)
    }

    fn find_exact(&self, key: u128, bits: u32) -> Option<usize> {
        let mut node = 0u32;
        if self.nodes.is_empty() {
            return None;
        }
        for depth in 0..bits {
            node = self.nodes[node as usize].child[Self::bit(key, depth)];
            if node == NONE {
                return None;
            }
        }
        Some(node as usize)
    }

    fn remove(&mut self, key: u128, bits: u32) -> Option<V> {
        let node = self.find_exact(key, bits)?;
        let old = self.nodes[node].value.take();
        if old.is_some() {
            self.routes -= 1;
        }
        if self.routes == 0 {
            // Nodes are only reclaimed when the table empties; removal of
            // single routes leaves interior nodes for later reuse.
            self.nodes.clear();
        }
        old
    }

    fn lookup(&self, key: u128, max_depth: u32) -> Option<V> {
        let mut node = 0u32;
        let mut best = self.nodes.first()?.value;
        for depth in 0..max_depth {
            node = self.nodes[node as usize].child[Self::bit(key, depth)];
            if node == NONE {
                break;
            }
            if let Some(v) = self.nodes[node as usize].value {
                best = Some(v);
            }
        }
        best
    }

    /// Every route as (key, bits, value), depth first. The explicit stack
    /// holds at most one pending sibling per level, so `MAX_DEPTH + 1`.
    fn for_each(&self, mut f: impl FnMut(u128, u32, V)) {
        const MAX_DEPTH: usize = 128;
        let mut stack = [(0u32, 0u32, 0u128); MAX_DEPTH + 1];
        let mut len = usize::from(!self.nodes.is_empty());
        while len > 0 {
            len -= 1;
            let (node, depth, key) = stack[len];
            let Some(n) = self.nodes.get(node as usize) else { continue };
            if let Some(v) = n.value {
                f(key, depth, v);
            }
            for (b, &child) in n.child.iter().enumerate().rev() {
                if child != NONE && len < stack.len() && depth < 128 {
                    stack[len] = (child, depth + 1, key | ((b as u128) << (127 - depth)));
                    len += 1;
                }
            }
        }
    }

    fn remove_value(&mut self, value: V) -> usize {
        let mut removed = 0;
        for n in &mut self.nodes {
            if n.value == Some(value) {
                n.value = None;
                removed += 1;
            }
        }
        self.routes -= removed;
        if self.routes == 0 {
            self.nodes.clear();
        }
        removed
    }
}

/// Routes from IPv4 and IPv6 prefixes to values (peer ids).
pub struct RouteTable<V> {
    v4: Trie<V>,
    v6: Trie<V>,
}

impl<V: Copy + PartialEq> Default for RouteTable<V> {
    fn default() -> Self {
        Self::new()
    }
}

fn key_of(addr: IpAddr) -> (u128, u32) {
    match addr {
        IpAddr::V4(a) => ((u32::from(a) as u128) << 96, 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    }
}

impl<V: Copy + PartialEq> RouteTable<V> {
    pub const fn new() -> Self {
        Self { v4: Trie::new(), v6: Trie::new() }
    }

    /// Number of routes held.
    pub fn len(&self) -> usize {
        self.v4.routes + self.v6.routes
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn trie(&mut self, addr: IpAddr) -> &mut Trie<V> {
        match addr {
            IpAddr::V4(_) => &mut self.v4,
            IpAddr::V6(_) => &mut self.v6,
        }
    }

    /// Adds (or re-points) the route `prefix/netbits`. Host bits past
    /// `netbits` are ignored, as a router would. Returns the value the route
    /// pointed to before, if any.
    pub fn insert(&mut self, prefix: IpAddr, netbits: u8, value: V) -> Result<Option<V>, RouteError> {
        let (key, width) = key_of(prefix);
        let bits = u32::from(netbits);
        if bits > width {
            return Err(RouteError::BadPrefixLength);
        }
        let room = self.len() < MAX_ROUTES;
        self.trie(prefix).insert(key, bits, value, room)
    }

    /// Removes the route `prefix/netbits`, returning where it pointed.
    pub fn remove(&mut self, prefix: IpAddr, netbits: u8) -> Result<Option<V>, RouteError> {
        let (key, width) = key_of(prefix);
        let bits = u32::from(netbits);
        if bits > width {
            return Err(RouteError::BadPrefixLength);
        }
        Ok(self.trie(prefix).remove(key, bits))
    }

    /// The value of the longest prefix containing `addr`.
    pub fn lookup(&self, addr: IpAddr) -> Option<V> {
        let (key, width) = key_of(addr);
        match addr {
            IpAddr::V4(_) => self.v4.lookup(key, width),
            IpAddr::V6(_) => self.v6.lookup(key, width),
        }
    }

    /// Every route as (prefix, netbits, value): IPv4 first, each family in
    /// address order. Allocates; for snapshots and diagnostics, not per packet.
    pub fn routes(&self) -> Vec<(IpAddr, u8, V)> {
        let mut out = Vec::with_capacity(self.len());
        self.v4.for_each(|key, bits, v| {
            out.push((IpAddr::V4(core::net::Ipv4Addr::from((key >> 96) as u32)), bits as u8, v));
        });
        self.v6.for_each(|key, bits, v| out.push((IpAddr::V6(core::net::Ipv6Addr::from(key)), bits as u8, v)));
        out
    }

    /// Removes every route pointing at `value` (a deleted peer); returns how many.
    pub fn remove_value(&mut self, value: V) -> usize {
        self.v4.remove_value(value) + self.v6.remove_value(value)
    }

    /// Removes everything.
    pub fn clear(&mut self) {
        self.v4 = Trie::new();
        self.v6 = Trie::new();
    }
}

/// Convenience for the common host route of a VPN address.
pub fn host_bits(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;
    use proptest::prelude::*;
    use std::vec::Vec;

    fn v4(s: &str) -> IpAddr {
        IpAddr::V4(s.parse().unwrap())
    }
    fn v6(s: &str) -> IpAddr {
        IpAddr::V6(s.parse().unwrap())
    }

    #[test]
    fn longest_prefix_wins_in_both_families() {
        let mut t = RouteTable::new();
        t.insert(v4("10.8.0.0"), 16, 1).unwrap();
        t.insert(v4("10.8.5.0"), 24, 2).unwrap();
        t.insert(v4("10.8.5.7"), 32, 3).unwrap();
        t.insert(v6("fd00::"), 64, 4).unwrap();
        t.insert(v6("fd00::1"), 128, 5).unwrap();
        assert_eq!(t.lookup(v4("10.8.1.1")), Some(1));
        assert_eq!(t.lookup(v4("10.8.5.1")), Some(2));
        assert_eq!(t.lookup(v4("10.8.5.7")), Some(3));
        assert_eq!(t.lookup(v4("10.9.0.1")), None);
        assert_eq!(t.lookup(v6("fd00::2")), Some(4));
        assert_eq!(t.lookup(v6("fd00::1")), Some(5));
        assert_eq!(t.lookup(v6("fd01::1")), None);
        // An IPv4 route never answers for IPv6 and vice versa.
        assert_eq!(t.lookup(v6("::a08:501")), None);
    }

    #[test]
    fn default_route_and_removal() {
        let mut t = RouteTable::new();
        t.insert(v4("0.0.0.0"), 0, 9).unwrap();
        assert_eq!(t.lookup(v4("1.2.3.4")), Some(9));
        t.insert(v4("1.2.3.0"), 24, 7).unwrap();
        assert_eq!(t.remove(v4("1.2.3.99"), 24), Ok(Some(7)), "host bits are ignored");
        assert_eq!(t.lookup(v4("1.2.3.4")), Some(9));
        assert_eq!(t.remove(v4("0.0.0.0"), 0), Ok(Some(9)));
        assert!(t.is_empty());
        assert_eq!(t.lookup(v4("1.2.3.4")), None);
    }

    #[test]
    fn bad_prefix_lengths_are_refused() {
        let mut t = RouteTable::<u32>::new();
        assert_eq!(t.insert(v4("1.0.0.0"), 33, 1), Err(RouteError::BadPrefixLength));
        assert_eq!(t.insert(v6("::"), 129, 1), Err(RouteError::BadPrefixLength));
        assert_eq!(t.remove(v4("1.0.0.0"), 40), Err(RouteError::BadPrefixLength));
        assert!(t.insert(v6("::"), 128, 1).is_ok());
    }

    #[test]
    fn deleting_a_peer_drops_all_its_routes() {
        let mut t = RouteTable::new();
        t.insert(v4("10.0.0.2"), 32, 1).unwrap();
        t.insert(v4("192.168.1.0"), 24, 1).unwrap();
        t.insert(v4("10.0.0.3"), 32, 2).unwrap();
        assert_eq!(t.remove_value(1), 2);
        assert_eq!(t.lookup(v4("192.168.1.5")), None);
        assert_eq!(t.lookup(v4("10.0.0.3")), Some(2));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn routes_lists_every_prefix_with_host_bits_cleared() {
        let mut t = RouteTable::new();
        t.insert(v4("10.8.5.99"), 24, 2).unwrap();
        t.insert(v4("0.0.0.0"), 0, 9).unwrap();
        t.insert(v6("fd00::1"), 128, 5).unwrap();
        t.insert(v4("10.8.5.7"), 32, 3).unwrap();
        assert_eq!(
            t.routes(),
            [(v4("0.0.0.0"), 0, 9), (v4("10.8.5.0"), 24, 2), (v4("10.8.5.7"), 32, 3), (v6("fd00::1"), 128, 5)]
        );
    }

    #[test]
    fn the_table_is_bounded() {
        let mut t = RouteTable::new();
        for i in 0..MAX_ROUTES as u32 {
            t.insert(IpAddr::V4(Ipv4Addr::from(i)), 32, i).unwrap();
        }
        assert_eq!(t.insert(v4("255.0.0.1"), 32, 0), Err(RouteError::TableFull));
        // Re-pointing an existing route needs no room.
        assert_eq!(t.insert(v4("0.0.0.5"), 32, 1), Ok(Some(5)));
        assert_eq!(t.len(), MAX_ROUTES);
    }

    fn reference_lookup(routes: &[(u32, u8, u32)], addr: u32) -> Option<u32> {
        // Last insert of a prefix wins; among matches, the longest prefix.
        let mut best: Option<(u8, u32)> = None;
        for &(p, bits, v) in routes {
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
            if addr & mask == p & mask && best.is_none_or(|(b, _)| bits >= b) {
                best = Some((bits, v));
            }
        }
        best.map(|(_, v)| v)
    }

    proptest! {
        #[test]
        fn matches_a_linear_scan(routes in proptest::collection::vec((any::<u32>(), 0u8..=32, any::<u32>()), 0..40),
                                 probes in proptest::collection::vec(any::<u32>(), 1..40)) {
            let mut t = RouteTable::new();
            for &(p, bits, v) in &routes {
                t.insert(IpAddr::V4(Ipv4Addr::from(p)), bits, v).unwrap();
            }
            let mut probes: Vec<u32> = probes;
            probes.extend(routes.iter().map(|r| r.0));
            for a in probes {
                prop_assert_eq!(t.lookup(IpAddr::V4(Ipv4Addr::from(a))), reference_lookup(&routes, a));
            }
        }
    }
}
