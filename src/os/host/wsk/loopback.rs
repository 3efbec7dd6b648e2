//! An in-memory network for modelled sockets: datagram sockets bound on a
//! hub reach each other by address with no syscalls (a P2P pair, or one
//! server socket and several clients), with seeded loss, duplication and
//! reordering; TCP connects reach stream listeners on the same hub. Tests
//! can also play the network's other actors: capture what crosses it
//! ([`LoopbackHub::capture`]), put datagrams on it from any address
//! ([`LoopbackHub::inject`]), and move a socket behind a NAT mapping
//! ([`LoopbackHub::nat`]), as a NAT rebinding a client's port does.
//!
//! Delivery runs on each socket's own threads ([`Delivery::Threaded`]) or
//! only when the test calls [`LoopbackHub::pump`] ([`Delivery::Pump`]),
//! which makes every event happen on the test's thread in a fixed order.

use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::net::SocketAddr;
use core::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::collections::HashMap;
use std::sync::Mutex;

use super::datagram::DatagramInner;
use super::rng::XorShift;
use super::stream::Pipe;
use super::verifier::{SocketId, lock};
use crate::ntstatus::NtStatus;

/// Who runs a loopback socket's events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Each socket's threads, as soon as there is work.
    Threaded,
    /// The caller of [`LoopbackHub::pump`], synchronously.
    Pump,
}

/// The in-memory network's behaviour.
#[derive(Clone, Copy, Debug)]
pub struct LoopbackConfig {
    pub seed: u64,
    /// Datagrams lost (parts per million).
    pub loss_ppm: u32,
    /// Datagrams delivered twice (parts per million).
    pub duplicate_ppm: u32,
    /// Datagrams overtaken by later ones (parts per million) ...
    pub reorder_ppm: u32,
    /// ... by up to this many.
    pub reorder_depth: usize,
    pub delivery: Delivery,
}

impl Default for LoopbackConfig {
    fn default() -> Self {
        Self { seed: 1, loss_ppm: 0, duplicate_ppm: 0, reorder_ppm: 0, reorder_depth: 3, delivery: Delivery::Threaded }
    }
}

/// What the in-memory network did to the datagrams sent over it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoopbackStats {
    pub sent: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    /// Sent to an address nobody is bound to.
    pub unroutable: u64,
    /// Reached a bound socket that did not take them (closed, not from its
    /// connected remote, too long, or no free receive buffer).
    pub refused: u64,
}

/// One datagram as it crossed the network: source after any NAT mapping,
/// destination as addressed, bytes as sent (before loss or duplication).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Captured {
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

/// What the test asked the hub to do beyond carrying datagrams.
#[derive(Default)]
struct Extras {
    /// (inside, outside): datagrams from `inside` leave as from `outside`,
    /// datagrams to `outside` reach `inside`.
    nat: Vec<(SocketAddr, SocketAddr)>,
    /// Captured datagrams, and how many more may be kept.
    captured: Vec<Captured>,
    capture_room: usize,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    lost: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
    unroutable: AtomicU64,
    refused: AtomicU64,
}

/// Something the pump drives.
pub(crate) trait Pumped: Send + Sync {
    /// One round of this socket's work; how much it did.
    fn pump_once(&self) -> usize;
    /// Releases reordered datagrams still held back.
    fn flush_held(&self) -> usize;
}

impl Pumped for DatagramInner {
    fn pump_once(&self) -> usize {
        DatagramInner::pump_once(self)
    }
    fn flush_held(&self) -> usize {
        DatagramInner::flush_held(self)
    }
}

/// First port the hub hands out for port 0 (the IANA dynamic range).
const FIRST_EPHEMERAL_PORT: u16 = 49152;

/// Bound on the rounds of one `pump` call: a test whose events keep
/// generating traffic forever stops here instead of hanging.
pub const MAX_PUMP_ROUNDS: usize = 100_000;

/// STATUS_ADDRESS_ALREADY_EXISTS (ntstatus.h 0xC000020A): bind to an
/// address in use.
pub const STATUS_ADDRESS_ALREADY_EXISTS: NtStatus = NtStatus(0xC000_020A_u32 as i32);

pub(crate) struct Hub {
    pub config: LoopbackConfig,
    datagram: Mutex<HashMap<SocketAddr, (SocketId, Weak<DatagramInner>)>>,
    listeners: Mutex<HashMap<SocketAddr, Arc<Pipe>>>,
    pumped: Mutex<Vec<Weak<dyn Pumped>>>,
    rng: Mutex<XorShift>,
    next_port: AtomicU16,
    counters: Counters,
    /// Set once a NAT mapping or a capture exists: the common path then
    /// never takes the extras' lock.
    has_extras: AtomicBool,
    extras: Mutex<Extras>,
}

impl Hub {
    /// Picks the port for a bind to `local` (port 0: the next free one).
    pub fn resolve(&self, mut local: SocketAddr) -> SocketAddr {
        if local.port() == 0 {
            let p = self.next_port.fetch_add(1, Ordering::Relaxed);
            local.set_port(p.max(FIRST_EPHEMERAL_PORT));
        }
        local
    }

    pub fn bind(&self, local: SocketAddr, id: SocketId, inner: &Arc<DatagramInner>) -> Result<(), NtStatus> {
        let mut map = lock(&self.datagram);
        if map.get(&local).is_some_and(|(_, w)| w.strong_count() > 0) {
            return Err(STATUS_ADDRESS_ALREADY_EXISTS);
        }
        map.insert(local, (id, Arc::downgrade(inner)));
        drop(map);
        let weak: Weak<dyn Pumped> = Arc::downgrade(inner) as Weak<dyn Pumped>;
        lock(&self.pumped).push(weak);
        Ok(())
    }

    pub fn unbind(&self, local: SocketAddr, id: SocketId) {
        let mut map = lock(&self.datagram);
        if map.get(&local).is_some_and(|(owner, _)| *owner == id) {
            map.remove(&local);
        }
    }

    pub fn add_pumped(&self, p: Weak<dyn Pumped>) {
        lock(&self.pumped).push(p);
    }

    /// Takes the stream listener at `addr`, if any (one connection each).
    pub fn connect_stream(&self, addr: SocketAddr) -> Option<Arc<Pipe>> {
        lock(&self.listeners).remove(&addr)
    }

    /// Carries one datagram from `from` to `to`, applying the configured
    /// loss, duplication and reordering.
    pub fn route(&self, mut from: SocketAddr, mut to: SocketAddr, bytes: &[u8]) {
        self.counters.sent.fetch_add(1, Ordering::Relaxed);
        if self.has_extras.load(Ordering::Acquire) {
            let mut x = lock(&self.extras);
            if let Some(&(_, outside)) = x.nat.iter().find(|(inside, _)| *inside == from) {
                from = outside;
            }
            if x.capture_room > 0 {
                x.capture_room -= 1;
                x.captured.push(Captured { from, to, bytes: bytes.to_vec() });
            }
            if let Some(&(inside, _)) = x.nat.iter().find(|(_, outside)| *outside == to) {
                to = inside;
            }
        }
        let target = lock(&self.datagram).get(&to).and_then(|(_, w)| w.upgrade());
        let Some(target) = target else {
            self.counters.unroutable.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let c = &self.config;
        let impaired = c.loss_ppm > 0 || c.duplicate_ppm > 0 || c.reorder_ppm > 0;
        let (lost, dup, hold) = if !impaired {
            (false, false, None)
        } else {
            let mut r = lock(&self.rng);
            let lost = r.chance(c.loss_ppm);
            let dup = r.chance(c.duplicate_ppm);
            let hold = r.chance(c.reorder_ppm).then(|| r.between(1, c.reorder_depth.max(1)));
            (lost, dup, hold)
        };
        if lost {
            self.counters.lost.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if hold.is_some() {
            self.counters.reordered.fetch_add(1, Ordering::Relaxed);
        }
        let mut refused = u64::from(!target.arrive(bytes, from, hold));
        if dup {
            self.counters.duplicated.fetch_add(1, Ordering::Relaxed);
            refused += u64::from(!target.arrive(bytes, from, None));
        }
        if refused > 0 {
            self.counters.refused.fetch_add(refused, Ordering::Relaxed);
        }
    }
}

/// The in-memory network (cheap to clone: a handle).
#[derive(Clone)]
pub struct LoopbackHub {
    pub(crate) hub: Arc<Hub>,
}

impl core::fmt::Debug for LoopbackHub {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LoopbackHub").field("config", &self.hub.config).finish_non_exhaustive()
    }
}

impl LoopbackHub {
    pub fn new(config: LoopbackConfig) -> Self {
        Self {
            hub: Arc::new(Hub {
                config,
                datagram: Mutex::new(HashMap::new()),
                listeners: Mutex::new(HashMap::new()),
                pumped: Mutex::new(Vec::new()),
                rng: Mutex::new(XorShift::new(config.seed)),
                next_port: AtomicU16::new(FIRST_EPHEMERAL_PORT),
                counters: Counters::default(),
                has_extras: AtomicBool::new(false),
                extras: Mutex::new(Extras::default()),
            }),
        }
    }

    pub fn config(&self) -> LoopbackConfig {
        self.hub.config
    }

    /// Pump mode: runs every socket's pending sends, completions and
    /// receive events on this thread until nothing is left (reordered
    /// datagrams still held back are let go once traffic stops). Returns
    /// how much work it did. In threaded mode it only helps along.
    pub fn pump(&self) -> usize {
        let mut total = 0;
        for _ in 0..MAX_PUMP_ROUNDS {
            let live: Vec<Arc<dyn Pumped>> = {
                let mut p = lock(&self.hub.pumped);
                p.retain(|w| w.strong_count() > 0);
                p.iter().filter_map(Weak::upgrade).collect()
            };
            let mut progress: usize = live.iter().map(|p| p.pump_once()).sum();
            if progress == 0 {
                progress = live.iter().map(|p| p.flush_held()).sum();
                if progress == 0 {
                    break;
                }
            }
            total += progress;
        }
        total
    }

    /// Starts listening for one in-memory TCP connection at `addr`; the test
    /// plays the server through the returned peer.
    pub fn listen_stream(&self, addr: SocketAddr) -> super::stream::StreamPeer {
        let pipe = Arc::new(Pipe::default());
        lock(&self.hub.listeners).insert(addr, pipe.clone());
        super::stream::StreamPeer { pipe }
    }

    pub fn stats(&self) -> LoopbackStats {
        let c = &self.hub.counters;
        LoopbackStats {
            sent: c.sent.load(Ordering::Relaxed),
            lost: c.lost.load(Ordering::Relaxed),
            duplicated: c.duplicated.load(Ordering::Relaxed),
            reordered: c.reordered.load(Ordering::Relaxed),
            unroutable: c.unroutable.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
        }
    }

    /// Puts `bytes` on the network as a datagram from `from` to `to`, as
    /// any host on it could: `from` need not be bound (a spoofed source),
    /// and the datagram is routed, impaired and counted like any other.
    pub fn inject(&self, from: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        self.hub.route(from, to, bytes);
    }

    /// Keeps a copy of the next `limit` datagrams that cross the network
    /// (in addition to what is kept already); [`LoopbackHub::captured`]
    /// hands them over.
    pub fn capture(&self, limit: usize) {
        lock(&self.hub.extras).capture_room += limit;
        self.hub.has_extras.store(true, Ordering::Release);
    }

    /// The datagrams captured so far, forgetting them.
    pub fn captured(&self) -> Vec<Captured> {
        core::mem::take(&mut lock(&self.hub.extras).captured)
    }

    /// A NAT in front of `inside`: its datagrams leave with `outside` as
    /// their source, and datagrams sent to `outside` reach it. A second
    /// mapping for the same `inside` replaces the first (a rebinding).
    pub fn nat(&self, inside: SocketAddr, outside: SocketAddr) {
        let mut x = lock(&self.hub.extras);
        x.nat.retain(|(i, _)| *i != inside);
        x.nat.push((inside, outside));
        drop(x);
        self.hub.has_extras.store(true, Ordering::Release);
    }
}
