//! The receive side of a modelled datagram socket: a bounded pool of wire
//! buffers (what the NIC and the stack own) and of indication-list records
//! (nodes, MDLs and sender addresses in the real layouts), and the WSK rule
//! for each list: the receive event returns STATUS_SUCCESS and WSK takes the
//! list back at once, or STATUS_PENDING and the driver owns it until it
//! passes the head to WskRelease, exactly once.
//!
//! A list returning to WSK has its buffers poisoned and its nodes cleared
//! before anything else can reuse them, and the verifier's release
//! listeners are told, so a late access shows up as garbage or a report.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::mem::offset_of;
use core::net::SocketAddr;
use core::ptr::{self, NonNull};
use std::sync::Mutex;

use super::super::wake::Wakeup;
use std::time::Duration;

use super::rng::XorShift;
use super::sockaddr::SockAddrInet;
use super::stats::{SocketCounters, bump};
use super::verifier::{SocketId, Violation, WskVerifier, lock};
use crate::netcx::mdl::{Mdl, flags};
use crate::netcx::wsk::{WskBuf, WskDatagramIndication};
use crate::ntstatus::NtStatus;
use crate::os::SocketEvents;

/// Most datagrams in one indication list. WSK documents no limit; one
/// receive event carries tens of datagrams in practice (see
/// `netcx::wsk::MAX_DATAGRAMS_PER_INDICATION`), so 64 exercises batching.
pub const LIST_LEN_MAX: usize = 64;

/// Bytes between the two parts of a datagram split over two MDLs, filled
/// with [`GUARD_BYTE`]: a reader running past the first MDL reads guard
/// bytes, not the datagram's continuation.
pub const SPLIT_GAP: usize = 64;

/// What a released or reclaimed receive buffer is filled with.
pub const POISON_BYTE: u8 = 0xDB;

/// What the gap between the parts of a split datagram holds.
pub const GUARD_BYTE: u8 = 0xEE;

/// x64 page size (wdk-abi-facts.md §4.1): an MDL's StartVa is page-aligned
/// and ByteOffset the buffer's offset in that page.
const PAGE_SIZE: usize = 4096;

/// Which datagrams arrive spanning two MDLs (as IP-reassembled ones do).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Never,
    /// Every datagram of two bytes or more.
    Always,
    /// Each datagram with this probability (parts per million).
    Random {
        ppm: u32,
    },
}

/// How many datagrams one receive event carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListLen {
    /// As many as are waiting, up to this many (at most [`LIST_LEN_MAX`]).
    UpTo(usize),
    /// A random size in `1..=max` for each list.
    Random { max: usize },
}

/// Receive-side shape of a socket.
#[derive(Clone, Debug)]
pub struct ReceiveConfig {
    /// Receive buffers (the datagrams that can be waiting or retained).
    pub buffers: usize,
    /// List records (the lists that can be indicated or retained at once).
    pub lists: usize,
    pub list_len: ListLen,
    pub split: Split,
    /// Bytes in front of each datagram in its first MDL (`WskBuf.Offset`),
    /// as where WSK leaves the headers it parsed.
    pub header_room: u32,
    /// Largest datagram a buffer holds; longer ones are dropped.
    pub capacity: usize,
    /// Poison buffers when they return to WSK (off only for benchmarks).
    pub poison: bool,
    /// Threads delivering receive events, so that one socket's events run
    /// concurrently with each other as on several CPUs (threaded delivery).
    pub threads: usize,
    /// A real UDP socket's receive and send buffer sizes (SO_RCVBUF /
    /// SO_SNDBUF, forced past the system limit when privileged): room for
    /// bursts while receive events run, as AFD buffers for a WSK socket.
    /// `None`: the system default.
    pub socket_buffer: Option<usize>,
}

impl Default for ReceiveConfig {
    fn default() -> Self {
        Self {
            buffers: 512,
            lists: 128,
            list_len: ListLen::UpTo(32),
            split: Split::Never,
            header_room: 28,
            capacity: 2048,
            poison: true,
            threads: 1,
            socket_buffer: None,
        }
    }
}

/// One datagram the wire wrote into a buffer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Filled {
    pub buffer: u32,
    pub len: usize,
    /// Bytes in the first MDL when the datagram spans two.
    pub split_at: Option<usize>,
    pub from: SocketAddr,
}

impl Filled {
    /// A placeholder for fixed arrays; never indicated.
    pub const EMPTY: Filled = Filled {
        buffer: 0,
        len: 0,
        split_at: None,
        from: SocketAddr::V4(core::net::SocketAddrV4::new(core::net::Ipv4Addr::UNSPECIFIED, 0)),
    };
}

/// Where the wire writes a datagram: the first part, and the second (empty
/// unless split).
pub(crate) struct Parts {
    pub first: *mut u8,
    pub first_len: usize,
    pub second: *mut u8,
    pub second_len: usize,
}

/// The memory of one indication list, in the layouts WSK uses.
#[repr(C)]
struct ListBlock {
    nodes: [WskDatagramIndication; LIST_LEN_MAX],
    mdls: [[Mdl; 2]; LIST_LEN_MAX],
    addrs: [SockAddrInet; LIST_LEN_MAX],
}

// A list's head is the block's first node, so a head maps back to its block.
const _: () = assert!(offset_of!(ListBlock, nodes) == 0);

fn empty_node() -> WskDatagramIndication {
    WskDatagramIndication {
        next: ptr::null_mut(),
        buffer: WskBuf { mdl: ptr::null_mut(), offset: 0, length: 0 },
        control_info: ptr::null(),
        control_info_length: 0,
        remote_address: ptr::null_mut(),
    }
}

fn empty_mdl() -> Mdl {
    Mdl {
        next: ptr::null_mut(),
        size: 0,
        mdl_flags: 0,
        process: ptr::null_mut(),
        mapped_system_va: ptr::null_mut(),
        start_va: ptr::null_mut(),
        byte_count: 0,
        byte_offset: 0,
    }
}

/// A nonpaged-pool MDL over `len` bytes at `va`, chained to `next`.
fn mdl_over(va: *mut u8, len: usize, next: *mut Mdl) -> Mdl {
    let in_page = va as usize % PAGE_SIZE;
    // One page array entry per page touched (MmSizeOfMdl).
    let pages = (in_page + len).div_ceil(PAGE_SIZE);
    Mdl {
        next,
        size: (size_of::<Mdl>() + pages * 8) as i16,
        mdl_flags: flags::SOURCE_IS_NONPAGED_POOL | flags::ALLOCATED_FIXED_SIZE,
        process: ptr::null_mut(),
        mapped_system_va: va.cast(),
        start_va: va.wrapping_sub(in_page).cast(),
        byte_count: len as u32,
        byte_offset: in_page as u32,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LastEnd {
    Never,
    Reclaimed,
    Released,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Free(LastEnd),
    /// Out with the receive event; `released` if the driver's last
    /// reference already dropped (and released it) before the event returned.
    Indicating {
        released: bool,
    },
    Retained,
}

struct ListRecord {
    phase: Phase,
    buffers: [u32; LIST_LEN_MAX],
    count: usize,
}

struct PoolState {
    free_buffers: VecDeque<u32>,
    free_lists: VecDeque<u32>,
    lists: Vec<ListRecord>,
    retained: usize,
    closed: bool,
    rng: XorShift,
}

/// Receive buffers and list records of one socket.
pub(crate) struct ReceivePool {
    socket: SocketId,
    config: ReceiveConfig,
    verifier: Arc<WskVerifier>,
    counters: Arc<SocketCounters>,
    /// `config.buffers * stride` bytes (a leaked boxed slice).
    data: NonNull<u8>,
    stride: usize,
    /// `config.lists` blocks (a leaked boxed slice).
    blocks: NonNull<ListBlock>,
    state: Mutex<PoolState>,
    freed: Wakeup,
}

// SAFETY: the raw memory is only written by whoever owns it under the WSK
// rules tracked in `state` (free: the model; indicated or retained: the
// driver, read-mostly), and `state` is behind a mutex.
unsafe impl Send for ReceivePool {}
// SAFETY: as for Send.
unsafe impl Sync for ReceivePool {}

impl ReceivePool {
    pub fn new(
        socket: SocketId,
        mut config: ReceiveConfig,
        seed: u64,
        verifier: Arc<WskVerifier>,
        counters: Arc<SocketCounters>,
    ) -> Self {
        config.buffers = config.buffers.clamp(1, u32::MAX as usize);
        config.lists = config.lists.clamp(1, u32::MAX as usize);
        config.capacity = config.capacity.max(1);
        config.list_len = match config.list_len {
            ListLen::UpTo(n) => ListLen::UpTo(n.clamp(1, LIST_LEN_MAX)),
            ListLen::Random { max } => ListLen::Random { max: max.clamp(1, LIST_LEN_MAX) },
        };
        let stride = (config.header_room as usize + config.capacity + SPLIT_GAP).next_multiple_of(64);
        let data = NonNull::from(Box::leak(alloc::vec![POISON_BYTE; config.buffers * stride].into_boxed_slice()));
        let blocks: Box<[ListBlock]> = (0..config.lists)
            .map(|_| ListBlock {
                nodes: core::array::from_fn(|_| empty_node()),
                mdls: core::array::from_fn(|_| [empty_mdl(), empty_mdl()]),
                addrs: [SockAddrInet::zeroed(); LIST_LEN_MAX],
            })
            .collect();
        let blocks = NonNull::from(Box::leak(blocks));
        let lists = (0..config.lists)
            .map(|_| ListRecord { phase: Phase::Free(LastEnd::Never), buffers: [0; LIST_LEN_MAX], count: 0 })
            .collect();
        let state = PoolState {
            free_buffers: (0..config.buffers as u32).collect(),
            free_lists: (0..config.lists as u32).collect(),
            lists,
            retained: 0,
            closed: false,
            rng: XorShift::new(seed ^ u64::from(socket.0).rotate_left(32)),
        };
        Self {
            socket,
            config,
            verifier,
            counters,
            data: data.cast::<u8>(),
            stride,
            blocks: blocks.cast::<ListBlock>(),
            state: Mutex::new(state),
            freed: Wakeup::new(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.config.capacity
    }

    /// How many datagrams the next list should carry.
    pub fn next_list_len(&self) -> usize {
        match self.config.list_len {
            ListLen::UpTo(n) => n,
            ListLen::Random { max } => lock(&self.state).rng.between(1, max),
        }
    }

    /// Where to split a datagram of `len` bytes (`None`: length not known
    /// yet, any split point inside the buffer).
    pub fn split_point(&self, len: Option<usize>) -> Option<usize> {
        let max = len.unwrap_or(self.config.capacity);
        if max < 2 {
            return None;
        }
        let mut st = lock(&self.state);
        let split = match self.config.split {
            Split::Never => false,
            Split::Always => true,
            Split::Random { ppm } => st.rng.chance(ppm),
        };
        if !split {
            return None;
        }
        // Length unknown (a receive posted before the datagram arrives): a
        // split point from a log-uniform range, so short datagrams split too.
        let hi = match len {
            Some(_) => max - 1,
            None => (1usize << st.rng.between(1, 11)).min(max - 1),
        };
        Some(st.rng.between(1, hi))
    }

    pub fn take_buffer(&self) -> Option<u32> {
        lock(&self.state).free_buffers.pop_front()
    }

    /// A buffer the wire did not fill (or whose datagram was dropped).
    pub fn put_buffer(&self, buffer: u32) {
        lock(&self.state).free_buffers.push_back(buffer);
        self.freed.notify_all();
    }

    pub fn take_list(&self) -> Option<u32> {
        lock(&self.state).free_lists.pop_front()
    }

    pub fn put_list(&self, list: u32) {
        lock(&self.state).free_lists.push_back(list);
        self.freed.notify_all();
    }

    /// Waits (briefly) for a buffer or list to come back.
    pub fn wait_freed(&self, timeout: Duration) {
        let st = lock(&self.state);
        let _ = self.freed.wait_timeout(st, timeout);
    }

    fn region(&self, buffer: u32) -> *mut u8 {
        // In bounds: buffer < config.buffers (only indices from the free list).
        self.data.as_ptr().wrapping_add(buffer as usize * self.stride)
    }

    /// Where the wire writes into `buffer`: `len` bytes (the whole capacity
    /// if unknown), split at `split_at` if given.
    pub fn parts(&self, buffer: u32, len: Option<usize>, split_at: Option<usize>) -> Parts {
        let len = len.unwrap_or(self.config.capacity).min(self.config.capacity);
        let start = self.region(buffer).wrapping_add(self.config.header_room as usize);
        match split_at.filter(|&k| k > 0 && k < len) {
            None => Parts { first: start, first_len: len, second: ptr::null_mut(), second_len: 0 },
            Some(k) => {
                Parts { first: start, first_len: k, second: start.wrapping_add(k + SPLIT_GAP), second_len: len - k }
            }
        }
    }

    /// Builds the list in record `list` from `datagrams` (at most
    /// [`LIST_LEN_MAX`]; extra ones have their buffers returned), delivers
    /// it with `receive_from`, and applies the WSK rule to the answer.
    pub fn indicate(&self, list: u32, datagrams: &[Filled], events: &dyn SocketEvents) {
        let (datagrams, extra) = datagrams.split_at(datagrams.len().min(LIST_LEN_MAX));
        for d in extra {
            self.put_buffer(d.buffer);
        }
        if datagrams.is_empty() {
            self.put_list(list);
            return;
        }
        let block = self.blocks.as_ptr().wrapping_add(list as usize);
        // Derive every node/MDL/address pointer from `block` itself so the
        // list's internal links share one provenance.
        let nodes = block.cast::<WskDatagramIndication>();
        // SAFETY: `list` came off the free list, so the model owns the block
        // (no indication of it is out); these only compute field addresses.
        let (mdls, addrs) = unsafe {
            (
                ptr::addr_of_mut!((*block).mdls).cast::<[Mdl; 2]>(),
                ptr::addr_of_mut!((*block).addrs).cast::<SockAddrInet>(),
            )
        };
        let mut split = 0;
        let mut wire = 0;
        for (i, d) in datagrams.iter().enumerate() {
            let parts = self.parts(d.buffer, Some(d.len), d.split_at);
            let mdl_pair = mdls.wrapping_add(i).cast::<Mdl>();
            let header_room = self.config.header_room as usize;
            let region = self.region(d.buffer);
            let second = if parts.second_len > 0 {
                split += 1;
                // SAFETY: the model owns the block (free record) and the
                // buffer (filled, not yet indicated); the gap lies inside the
                // buffer's stride.
                unsafe {
                    ptr::write_bytes(parts.first.wrapping_add(parts.first_len), GUARD_BYTE, SPLIT_GAP);
                    mdl_pair.add(1).write(mdl_over(parts.second, parts.second_len, ptr::null_mut()));
                }
                mdl_pair.wrapping_add(1)
            } else {
                ptr::null_mut()
            };
            let next = if i + 1 < datagrams.len() { nodes.wrapping_add(i + 1) } else { ptr::null_mut() };
            // SAFETY: as above, the model owns the free block it is filling.
            unsafe {
                mdl_pair.write(mdl_over(region, header_room + parts.first_len, second));
                let addr = addrs.add(i);
                addr.write(SockAddrInet::new(d.from));
                nodes.add(i).write(WskDatagramIndication {
                    next,
                    buffer: WskBuf { mdl: mdl_pair, offset: header_room as u32, length: d.len },
                    control_info: ptr::null(),
                    control_info_length: 0,
                    remote_address: (*addr).as_sockaddr(),
                });
            }
            wire += d.len as u64;
        }
        {
            let mut st = lock(&self.state);
            let rec = &mut st.lists[list as usize];
            for (slot, d) in rec.buffers.iter_mut().zip(datagrams) {
                *slot = d.buffer;
            }
            rec.count = datagrams.len();
            rec.phase = Phase::Indicating { released: false };
        }
        for d in datagrams {
            let region = self.region(d.buffer) as usize;
            self.verifier.indicated(region..region + self.stride);
        }
        bump(&self.counters.datagrams_indicated, datagrams.len() as u64);
        bump(&self.counters.datagrams_split, split);
        bump(&self.counters.lists_indicated, 1);
        bump(&self.counters.rx_wire_bytes, wire);

        // SAFETY: the list is fully built and stays valid until this returns
        // or, if retained, until released: the record is `Indicating`, so the
        // model will not touch it until the event's answer says so.
        let status = unsafe { events.receive_from(NonNull::new_unchecked(nodes)) };

        let mut st = lock(&self.state);
        let Phase::Indicating { released } = st.lists[list as usize].phase else {
            return; // unreachable: only this function leaves Indicating
        };
        match (status, released) {
            (NtStatus::PENDING, false) => {
                st.lists[list as usize].phase = Phase::Retained;
                st.retained += 1;
                bump(&self.counters.lists_retained, 1);
                self.counters.lists_retained_max.fetch_max(st.retained as u64, core::sync::atomic::Ordering::Relaxed);
            }
            (NtStatus::PENDING, true) => {
                bump(&self.counters.lists_released, 1);
                self.give_back(&mut st, list, LastEnd::Released);
            }
            (NtStatus::SUCCESS, _) => {
                if released {
                    self.verifier.report(Violation::ReleasedNotRetained { socket: self.socket, list: nodes as usize });
                }
                bump(&self.counters.lists_reclaimed, 1);
                self.give_back(&mut st, list, LastEnd::Reclaimed);
            }
            (status, _) => {
                self.verifier.report(Violation::BadReceiveStatus { socket: self.socket, status });
                bump(&self.counters.lists_reclaimed, 1);
                self.give_back(&mut st, list, LastEnd::Reclaimed);
            }
        }
    }

    /// Poisons the list's buffers, clears its nodes, tells the release
    /// listeners and frees buffers and record (caller holds the state lock).
    fn give_back(&self, st: &mut PoolState, list: u32, how: LastEnd) {
        let nodes = self.blocks.as_ptr().wrapping_add(list as usize).cast::<WskDatagramIndication>();
        let count = st.lists[list as usize].count;
        for i in 0..count {
            let buffer = st.lists[list as usize].buffers[i];
            let region = self.region(buffer);
            if self.config.poison {
                // SAFETY: the list just returned to WSK (event answered
                // SUCCESS, or WskRelease), so its buffers are the model's again.
                unsafe { ptr::write_bytes(region, POISON_BYTE, self.stride) };
            }
            // SAFETY: as above, the record's nodes are the model's again.
            unsafe { nodes.add(i).write(empty_node()) };
            self.verifier.released(region as usize..region as usize + self.stride);
            st.free_buffers.push_back(buffer);
        }
        let rec = &mut st.lists[list as usize];
        rec.count = 0;
        rec.phase = Phase::Free(how);
        st.free_lists.push_back(list);
        self.freed.notify_all();
    }

    /// The record whose head node is at `head`, if it is one.
    fn record_of(&self, head: usize) -> Option<u32> {
        let base = self.blocks.as_ptr() as usize;
        let off = head.checked_sub(base)?;
        let size = size_of::<ListBlock>();
        let index = off / size;
        (off % size == 0 && index < self.config.lists).then_some(index as u32)
    }

    /// WskRelease.
    pub fn release(&self, head: NonNull<WskDatagramIndication>) {
        let at = head.as_ptr() as usize;
        let socket = self.socket;
        let Some(list) = self.record_of(at) else {
            self.verifier.report(Violation::ReleasedUnknown { socket, list: at });
            return;
        };
        let mut st = lock(&self.state);
        if st.closed {
            self.verifier.report(Violation::ReleasedAfterClose { socket, list: at });
            return;
        }
        match st.lists[list as usize].phase {
            Phase::Retained => {
                st.retained -= 1;
                self.counters.lists_retained.fetch_sub(1, core::sync::atomic::Ordering::Relaxed);
                bump(&self.counters.lists_released, 1);
                self.give_back(&mut st, list, LastEnd::Released);
            }
            Phase::Indicating { released: false } => {
                // The driver's last reference dropped before its receive
                // event returned; the event must now answer PENDING.
                st.lists[list as usize].phase = Phase::Indicating { released: true };
            }
            Phase::Indicating { released: true } | Phase::Free(LastEnd::Released) => {
                self.verifier.report(Violation::ReleasedTwice { socket, list: at });
            }
            Phase::Free(LastEnd::Reclaimed) => {
                self.verifier.report(Violation::ReleasedNotRetained { socket, list: at });
            }
            Phase::Free(LastEnd::Never) => {
                self.verifier.report(Violation::ReleasedUnknown { socket, list: at });
            }
        }
    }

    pub fn retained(&self) -> usize {
        lock(&self.state).retained
    }

    /// WskCloseSocket: no release is accepted afterwards. Returns how many
    /// lists were still retained (leaked).
    pub fn close(&self) -> usize {
        let mut st = lock(&self.state);
        st.closed = true;
        self.freed.notify_all();
        st.retained
    }
}

impl Drop for ReceivePool {
    fn drop(&mut self) {
        let leaked = self.state.get_mut().map(|s| s.retained).unwrap_or(1);
        if leaked > 0 {
            // The driver still holds pointers into retained lists (already
            // reported as a leak): keep the memory rather than free it under it.
            return;
        }
        // SAFETY: both slices came from Box::leak in `new` with these
        // lengths, nothing is retained, and the pool is going away, so no
        // pointer into them is used again.
        unsafe {
            drop(Box::from_raw(ptr::slice_from_raw_parts_mut(self.data.as_ptr(), self.config.buffers * self.stride)));
            drop(Box::from_raw(ptr::slice_from_raw_parts_mut(self.blocks.as_ptr(), self.config.lists)));
        }
    }
}
