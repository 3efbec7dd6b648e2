//! A modelled WSK stream (TCP) socket: asynchronous connect, sends that may
//! complete partially (as WskSend may), received bytes in arbitrary
//! chunkings, and a disconnect event when the peer closes or resets. The
//! wire is a real TCP connection or an in-memory [`Pipe`] whose far end the
//! test plays through a [`StreamPeer`].

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::SocketAddr;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Common;
use super::loopback::Pumped;
use super::rng::XorShift;
use super::send::{Outgoing, POLL_INTERVAL, PartialSends, TxEngine, Wire, WireResult};
use super::stats::{SocketCounters, SocketStats, bump};
use super::udp::{STATUS_CONNECTION_REFUSED, status_of};
use super::verifier::{SocketId, Violation, WskVerifier, lock};
use crate::netcx::wsk::WskDatagramIndication;
use crate::ntstatus::NtStatus;
use crate::os::{SEND_SLOT_SIZE, SendSlot, SocketEvents, Transport};

/// How received stream bytes are cut into `stream_received` calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunking {
    /// As the wire read them.
    AsRead,
    /// At most this many bytes per call.
    Fixed(usize),
    /// A random size in `1..=max` per call.
    Random { max: usize },
}

/// Stream-side shape of a socket.
#[derive(Clone, Copy, Debug)]
pub struct StreamConfig {
    pub chunking: Chunking,
    pub connect_timeout: Duration,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self { chunking: Chunking::AsRead, connect_timeout: Duration::from_secs(5) }
    }
}

/// Bytes one wire read takes from a real TCP connection.
const READ_CHUNK: usize = 64 * 1024;

/// The in-memory connection between a modelled stream socket and a
/// [`StreamPeer`].
#[derive(Default)]
pub(crate) struct Pipe {
    state: Mutex<PipeState>,
    changed: Condvar,
}

#[derive(Default)]
struct PipeState {
    to_peer: Vec<u8>,
    to_socket: VecDeque<u8>,
    peer_closed: bool,
    peer_reset: bool,
    socket_closed: bool,
}

/// The test's end of an in-memory TCP connection.
#[derive(Clone)]
pub struct StreamPeer {
    pub(crate) pipe: Arc<Pipe>,
}

impl core::fmt::Debug for StreamPeer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("StreamPeer")
    }
}

impl StreamPeer {
    /// Sends bytes to the socket.
    pub fn write(&self, bytes: &[u8]) {
        lock(&self.pipe.state).to_socket.extend(bytes);
        self.pipe.changed.notify_all();
    }

    /// Everything the socket sent that was not read yet.
    pub fn read(&self) -> Vec<u8> {
        core::mem::take(&mut lock(&self.pipe.state).to_peer)
    }

    /// Waits until at least `n` unread bytes arrived (or `timeout`), then
    /// returns all unread bytes.
    pub fn read_at_least(&self, n: usize, timeout: Duration) -> Vec<u8> {
        let end = Instant::now() + timeout;
        let mut st = lock(&self.pipe.state);
        while st.to_peer.len() < n {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            st = self.pipe.changed.wait_timeout(st, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        core::mem::take(&mut st.to_peer)
    }

    /// Graceful close (FIN) after the bytes already written.
    pub fn close(&self) {
        lock(&self.pipe.state).peer_closed = true;
        self.pipe.changed.notify_all();
    }

    /// Abortive close (RST): pending bytes are discarded.
    pub fn reset(&self) {
        let mut st = lock(&self.pipe.state);
        st.peer_reset = true;
        st.to_socket.clear();
        drop(st);
        self.pipe.changed.notify_all();
    }

    /// Whether the socket side was closed.
    pub fn socket_closed(&self) -> bool {
        lock(&self.pipe.state).socket_closed
    }
}

pub(crate) enum StreamLink {
    Tcp(OnceLock<TcpStream>),
    Memory(Option<Arc<Pipe>>),
}

/// A stream socket's wire, with the model's partial-send policy.
pub(crate) struct StreamWire {
    pub link: StreamLink,
    partial: PartialSends,
    cut: Mutex<(XorShift, u32)>,
}

impl StreamWire {
    pub fn new(link: StreamLink, partial: PartialSends, seed: u64) -> Self {
        Self { link, partial, cut: Mutex::new((XorShift::new(seed), 0)) }
    }

    /// How many bytes of a `len`-byte send the wire takes this time.
    fn take(&self, len: usize) -> usize {
        if len < 2 {
            return len;
        }
        let mut c = lock(&self.cut);
        let cut = match self.partial {
            PartialSends::Never => false,
            PartialSends::EveryNth(n) => {
                c.1 = c.1.wrapping_add(1);
                c.1 % n.max(1) == 0
            }
            PartialSends::Random { ppm } => c.0.chance(ppm),
        };
        if cut { c.0.between(1, len - 1) } else { len }
    }
}

impl Wire for StreamWire {
    fn transmit(&self, batch: &[Outgoing], results: &mut [WireResult]) {
        for (o, r) in batch.iter().zip(results.iter_mut()) {
            // SAFETY: the send is in flight until its completion, which
            // comes after this returns.
            let bytes = unsafe { o.bytes() };
            let n = self.take(bytes.len());
            *r = match &self.link {
                StreamLink::Tcp(s) => match s.get() {
                    None => (NtStatus::INVALID_DEVICE_STATE, 0),
                    Some(mut s) => match s.write_all(&bytes[..n]) {
                        Ok(()) => (NtStatus::SUCCESS, n),
                        Err(e) => (status_of(&e), 0),
                    },
                },
                StreamLink::Memory(None) => (NtStatus::INVALID_DEVICE_STATE, 0),
                StreamLink::Memory(Some(p)) => {
                    let mut st = lock(&p.state);
                    if st.peer_reset {
                        (NtStatus::CONNECTION_RESET, 0)
                    } else {
                        st.to_peer.extend_from_slice(&bytes[..n]);
                        drop(st);
                        p.changed.notify_all();
                        (NtStatus::SUCCESS, n)
                    }
                }
            };
        }
    }
}

#[derive(Default)]
struct Conn {
    connect_reported: bool,
    connected: bool,
    disconnect_reported: bool,
}

pub(crate) struct StreamInner {
    pub id: SocketId,
    pub verifier: Arc<WskVerifier>,
    pub counters: Arc<SocketCounters>,
    pub events: Arc<dyn SocketEvents>,
    pub tx: TxEngine,
    pub wire: StreamWire,
    pub remote: SocketAddr,
    config: StreamConfig,
    closed: AtomicBool,
    conn: Mutex<Conn>,
    rng: Mutex<XorShift>,
}

impl StreamInner {
    pub fn new(common: Common, tx: TxEngine, wire: StreamWire, remote: SocketAddr, config: StreamConfig) -> Self {
        let seed = common.seed;
        Self {
            id: common.id,
            verifier: common.verifier,
            counters: common.counters,
            events: common.events,
            tx,
            wire,
            remote,
            config,
            closed: AtomicBool::new(false),
            conn: Mutex::new(Conn::default()),
            rng: Mutex::new(XorShift::new(seed)),
        }
    }

    fn report_connected(&self, status: NtStatus) {
        {
            let mut c = lock(&self.conn);
            if c.connect_reported {
                return;
            }
            c.connect_reported = true;
            c.connected = status.is_success();
        }
        self.events.connected(status);
    }

    fn report_disconnected(&self, status: NtStatus) {
        {
            let mut c = lock(&self.conn);
            if c.disconnect_reported || !c.connected {
                return;
            }
            c.disconnect_reported = true;
            c.connected = false;
        }
        self.events.disconnected(status);
    }

    /// Hands received bytes to the driver in the configured chunking.
    fn deliver(&self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let n = match self.config.chunking {
                Chunking::AsRead => bytes.len(),
                Chunking::Fixed(n) => n.clamp(1, bytes.len()),
                Chunking::Random { max } => lock(&self.rng).between(1, max.clamp(1, bytes.len())),
            };
            let (chunk, rest) = bytes.split_at(n);
            bump(&self.counters.stream_chunks, 1);
            bump(&self.counters.stream_bytes_received, n as u64);
            self.events.stream_received(chunk);
            bytes = rest;
        }
    }

    /// Real TCP: connect, then read until the peer goes away or close.
    fn run_tcp(&self) {
        let StreamLink::Tcp(slot) = &self.wire.link else { return };
        let stream = match TcpStream::connect_timeout(&self.remote, self.config.connect_timeout) {
            Ok(s) => s,
            Err(e) => return self.report_connected(status_of(&e)),
        };
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(POLL_INTERVAL));
        let reader = stream.try_clone();
        let _ = slot.set(stream);
        let Ok(mut reader) = reader else {
            return self.report_connected(NtStatus::INSUFFICIENT_RESOURCES);
        };
        self.report_connected(NtStatus::SUCCESS);
        let mut buf = alloc::vec![0u8; READ_CHUNK];
        while !self.closed.load(Ordering::Acquire) {
            match reader.read(&mut buf) {
                Ok(0) => return self.report_disconnected(NtStatus::CONNECTION_DISCONNECTED),
                Ok(n) => self.deliver(&buf[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return self.report_disconnected(status_of(&e)),
            }
        }
    }

    /// In-memory: one step of receiving. `wait` blocks briefly for bytes.
    /// Returns how many bytes (or events) it handled, `None` once the
    /// connection is over.
    fn memory_step(&self, wait: bool) -> Option<usize> {
        let StreamLink::Memory(pipe) = &self.wire.link else { return None };
        let Some(pipe) = pipe else {
            self.report_connected(STATUS_CONNECTION_REFUSED);
            return None;
        };
        let mut handled = 0;
        if !lock(&self.conn).connect_reported {
            self.report_connected(NtStatus::SUCCESS);
            handled += 1;
        }
        let (bytes, closed, reset) = {
            let mut st = lock(&pipe.state);
            if wait && st.to_socket.is_empty() && !st.peer_closed && !st.peer_reset {
                st = pipe.changed.wait_timeout(st, POLL_INTERVAL).unwrap_or_else(|p| p.into_inner()).0;
            }
            let bytes: Vec<u8> = st.to_socket.drain(..).collect();
            (bytes, st.peer_closed, st.peer_reset)
        };
        handled += bytes.len();
        self.deliver(&bytes);
        if reset {
            self.report_disconnected(NtStatus::CONNECTION_RESET);
            return None;
        }
        if closed {
            self.report_disconnected(NtStatus::CONNECTION_DISCONNECTED);
            return None;
        }
        Some(handled)
    }

    fn run_memory(&self) {
        while !self.closed.load(Ordering::Acquire) {
            if self.memory_step(true).is_none() {
                return;
            }
        }
    }
}

impl Pumped for StreamInner {
    fn pump_once(&self) -> usize {
        if self.closed.load(Ordering::Acquire) {
            return 0;
        }
        let over = {
            let c = lock(&self.conn);
            c.disconnect_reported || (c.connect_reported && !c.connected)
        };
        let received = if over { 0 } else { self.memory_step(false).unwrap_or(0) };
        received + self.tx.round(&self.wire, true, true)
    }

    fn flush_held(&self) -> usize {
        0
    }
}

/// A modelled WSK stream socket; implements [`Transport`] (with
/// `release` never legitimately called: streams indicate no lists).
pub struct StreamSocket {
    pub(crate) inner: Arc<StreamInner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl core::fmt::Debug for StreamSocket {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StreamSocket").field("id", &self.inner.id).field("remote", &self.inner.remote).finish()
    }
}

impl StreamSocket {
    /// Starts the socket's threads (none in pump mode).
    pub(crate) fn start(inner: Arc<StreamInner>, pump: bool) -> Self {
        let mut threads = Vec::new();
        if !pump {
            let tx = inner.clone();
            threads.push(std::thread::spawn(move || tx.tx.run(&tx.wire)));
            let rx = inner.clone();
            threads.push(std::thread::spawn(move || match rx.wire.link {
                StreamLink::Tcp(_) => rx.run_tcp(),
                StreamLink::Memory(_) => rx.run_memory(),
            }));
        }
        Self { inner, threads: Mutex::new(threads) }
    }

    pub fn id(&self) -> SocketId {
        self.inner.id
    }

    pub fn stats(&self) -> SocketStats {
        self.inner.counters.snapshot()
    }

    pub fn sends_in_flight(&self) -> usize {
        self.inner.tx.slots.in_flight()
    }
}

impl Transport for StreamSocket {
    fn send_slots(&self) -> u16 {
        self.inner.tx.slots.count()
    }

    unsafe fn slot_buffer(&self, slot: SendSlot) -> NonNull<[u8; SEND_SLOT_SIZE]> {
        self.inner.tx.slots.buffer(slot)
    }

    fn send(&self, slot: SendSlot, len: usize, remote: SocketAddr) -> Result<(), NtStatus> {
        if !lock(&self.inner.conn).connected {
            // WskSend before the connect completed (or after a disconnect).
            return Err(NtStatus::INVALID_DEVICE_STATE);
        }
        self.inner.tx.send(&self.inner.wire, slot, len, remote)
    }

    /// A stream has no datagrams to batch (WskSendMessages is a datagram
    /// socket's call): the caller sends slot by slot.
    fn send_batch(&self, _batch: &[(SendSlot, usize)], _remote: SocketAddr) -> Result<(), NtStatus> {
        Err(NtStatus::NOT_SUPPORTED)
    }

    unsafe fn release(&self, list: NonNull<WskDatagramIndication>) {
        self.inner.verifier.report(Violation::ReleasedUnknown { socket: self.inner.id, list: list.as_ptr() as usize });
    }

    fn close(&self) {
        let inner = &self.inner;
        if inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        inner.tx.stop();
        match &inner.wire.link {
            StreamLink::Tcp(s) => {
                if let Some(s) = s.get() {
                    let _ = s.shutdown(Shutdown::Both);
                }
            }
            StreamLink::Memory(Some(p)) => {
                lock(&p.state).socket_closed = true;
                p.changed.notify_all();
            }
            StreamLink::Memory(None) => {}
        }
        let me = std::thread::current().id();
        for t in core::mem::take(&mut *lock(&self.threads)) {
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
        inner.tx.slots.close();
    }
}

impl Drop for StreamSocket {
    fn drop(&mut self) {
        self.close();
    }
}

/// A real TCP server for tests: accepts one connection and lets the test
/// read, write, close or reset it.
#[derive(Debug)]
pub struct TcpTestPeer {
    listener: TcpListener,
    conn: Option<TcpStream>,
}

impl TcpTestPeer {
    /// Listens on `addr` (port 0: an ephemeral port; see `local_addr`).
    pub fn listen(addr: SocketAddr) -> std::io::Result<Self> {
        Ok(Self { listener: TcpListener::bind(addr)?, conn: None })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Waits for the connection.
    pub fn accept(&mut self) -> std::io::Result<()> {
        let (s, _) = self.listener.accept()?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        self.conn = Some(s);
        Ok(())
    }

    fn conn(&mut self) -> std::io::Result<&mut TcpStream> {
        self.conn.as_mut().ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotConnected))
    }

    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let c = self.conn()?;
        c.write_all(bytes)?;
        c.flush()
    }

    /// Reads exactly `n` bytes (5 s timeout).
    pub fn read_exact(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        let mut v = alloc::vec![0u8; n];
        self.conn()?.read_exact(&mut v)?;
        Ok(v)
    }

    /// Graceful close (FIN).
    pub fn close(&mut self) {
        if let Some(c) = self.conn.take() {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// Abortive close (RST): SO_LINGER with a zero timeout, then close.
    pub fn reset(&mut self) {
        if let Some(c) = self.conn.take() {
            use std::os::fd::AsRawFd;
            let l = libc::linger { l_onoff: 1, l_linger: 0 };
            // SAFETY: a valid fd and a linger value of the right size.
            unsafe {
                libc::setsockopt(
                    c.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&l as *const libc::linger).cast(),
                    size_of::<libc::linger>() as libc::socklen_t,
                );
            }
            drop(c);
        }
    }
}
