//! One ovpn-dco adapter: the control plane ([`Device`]) and the data path
//! ([`Datapath`]) joined, with the entry points the OS layer maps its
//! callbacks to. The Windows glue (WDF file object, IOCTL queue, timer,
//! NetAdapterCx callbacks) and the host tools drive the same [`Adapter`].
//!
//! # Who calls what
//! - OpenVPN's handle: [`Adapter::ioctl`], [`Adapter::read`],
//!   [`Adapter::write`], [`Adapter::cancel`], [`Adapter::cleanup`]
//!   (PASSIVE_LEVEL).
//! - The timer the adapter asks for with [`Os::schedule_timer`]:
//!   [`Adapter::timer`] (PASSIVE_LEVEL). Keepalive, and socket closes that
//!   had to wait, run from it.
//! - NetAdapterCx: the [`AdapterDatapath`] impl (queue creation, returned
//!   RX buffers), forwarded to the data path.
//! - WSK: the socket events reach the data path, which asks the device
//!   through [`Peers`] (implemented here by [`DevicePeers`]).
//!
//! # Locks
//! The device lives behind one spin lock. The order is: device lock, then a
//! peer's key-slot lock (the device installs and swaps keys under its lock);
//! the data path never holds a peer's slot lock, nor any of its own locks
//! that the device path takes, while it calls [`Peers`]. The adapter never
//! calls the data path (sends, socket open or close) with the device lock
//! held: the device returns [`Actions`] and the adapter executes them after
//! releasing it. The work lock (deferred actions, timer) is never held
//! together with the device lock.
//!
//! # Contexts
//! Socket events arrive at DISPATCH_LEVEL. What the device asks for there
//! (closing a socket after a TCP failure) cannot run there, since closing a
//! socket waits for WSK, so it is deferred to the timer. Opening a socket
//! while the previous one still waits for the OS to give back its buffers
//! is deferred the same way; the IOCTL that asked for it stays parked until
//! then.

use alloc::sync::Arc;
use core::net::{IpAddr, SocketAddr};
use core::ptr::NonNull;
use core::time::Duration;

use crate::control::actions::{Action, Actions, LinkState, TransportId};
use crate::control::device::{Device, DeviceSnapshot, Outcome, ReadOutcome};
use crate::control::peers::Peer;
use crate::control::request::{Request, RequestId};
use crate::control::stats::DeviceStats;
use crate::datapath::{CloseProgress, Datapath, KeyOf, Peers};
use crate::netcx::ring::NetRingCollection;
use crate::ntstatus::NtStatus;
use crate::os::sync::SpinLock;
use crate::os::{AdapterDatapath, Instant, Os, QueueExtensions};
use crate::proto::PeerId;
use crate::uapi::codes::Ioctl;

/// How soon the timer runs again while a socket waits for the OS to give
/// back its receive buffers and send completions. NetAdapterCx returns RX
/// buffers within its poll cycle and WSK completes sends in microseconds,
/// so a few milliseconds keep a DEL_PEER + NEW_PEER from stalling.
pub const CLOSE_POLL_INTERVAL: Duration = Duration::from_millis(5);

/// Ticks one timer run makes when each fills the action list (the device
/// asks to be called again at once then). One tick holds
/// [`crate::control::actions::ACTIONS_MAX`] keepalives, so this handles
/// that many times as many peers per run; the rest follow on the next run,
/// scheduled at once.
pub const TICKS_PER_TIMER_MAX: usize = 64;

/// The control plane as the data path sees it: lookups and events go to the
/// device under its lock.
pub struct DevicePeers<O: Os, R: Request + Send + 'static> {
    inner: Arc<Inner<O, R>>,
}

/// The adapter (one per NetAdapterCx adapter, living as long as it; the
/// device inside is reset by each handle's cleanup).
pub struct Adapter<O: Os, R: Request + Send + 'static> {
    inner: Arc<Inner<O, R>>,
    datapath: Datapath<O, DevicePeers<O, R>>,
}

/// What the data path's callbacks and the adapter's entry points share.
struct Inner<O: Os, R: Request + Send + 'static> {
    os: Arc<O>,
    core: SpinLock<Core<O, R>>,
    work: SpinLock<Work>,
}

struct Core<O: Os, R: Request + Send + 'static> {
    device: Device<O::Crypto, R>,
    /// The socket being opened: events that arrive before the device
    /// learned it exists (a connect can complete before `Os::open_tcp`
    /// returns) wait here and are applied right after.
    opening: Option<Opening>,
}

#[derive(Clone, Copy)]
struct Opening {
    transport: TransportId,
    connected: Option<NtStatus>,
    disconnected: bool,
}

/// Work that waits for PASSIVE_LEVEL or for a socket to finish closing.
struct Work {
    /// Actions not yet executed, in the order the device gave them.
    deferred: Actions,
    /// A closed socket still waits for its buffers and sends.
    closing: bool,
    /// When the timer is due, as last given to [`Os::schedule_timer`].
    timer_due: Option<Instant>,
}

/// The IRQL an entry point runs at: what may be done right away.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    /// IOCTL, read, write, cleanup, timer: sockets may be opened and closed.
    Passive,
    /// Socket events: only what never waits.
    Dispatch,
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl<O: Os, R: Request + Send + 'static> Inner<O, R> {
    /// Asks for the timer at `due` unless it is already due earlier. The
    /// work lock is held across the call so that two callers cannot
    /// reorder their due times.
    fn schedule(&self, due: Instant) {
        let mut work = self.work.lock();
        if work.timer_due.is_none_or(|d| due < d) {
            work.timer_due = Some(due);
            self.os.schedule_timer(due);
        }
    }

    /// Queues actions for the timer, keeping their order. A full queue
    /// cannot lose a socket close: the device issues at most two actions
    /// per socket, and sockets are opened one at a time; should it fill
    /// anyway, the action is run as far as this context allows (see
    /// [`Adapter::overflow`]) by the caller.
    fn defer(&self, action: Action) -> Result<(), Action> {
        let pushed = self.work.lock().deferred.push(action);
        match pushed {
            Ok(()) => {
                self.schedule(self.os.now());
                Ok(())
            }
            Err(_) => Err(action),
        }
    }

    fn has_deferred(&self) -> bool {
        !self.work.lock().deferred.is_empty()
    }

    /// Device actions raised by a socket event (DISPATCH_LEVEL): all of
    /// them wait for the timer. Only socket closes arise there.
    fn defer_all(&self, actions: &mut Actions) {
        for action in actions.drain() {
            // A full queue here would need more than ACTIONS_MAX socket
            // closes outstanding; the device never has more than two
            // sockets, so this cannot fail, and if it did the socket stays
            // open until the handle's cleanup closes it.
            let _ = self.defer(action);
        }
    }
}

impl<O: Os, R: Request + Send + 'static> Peers<KeyOf<O>> for DevicePeers<O, R> {
    fn rx_peer(&self, peer_id: PeerId) -> Option<Arc<Peer<KeyOf<O>>>> {
        self.inner.core.lock().device.rx_peer(peer_id)
    }

    fn tx_peer(&self, dst: IpAddr) -> Option<Arc<Peer<KeyOf<O>>>> {
        self.inner.core.lock().device.tx_peer(dst)
    }

    fn source_allowed(&self, peer: &Peer<KeyOf<O>>, inner_src: IpAddr) -> bool {
        self.inner.core.lock().device.source_allowed(peer, inner_src)
    }

    fn control_packet(&self, transport: TransportId, from: SocketAddr, bytes: &[u8]) {
        self.inner.core.lock().device.control_packet_received(transport, from, bytes);
    }

    fn float(&self, peer: &Peer<KeyOf<O>>, from: SocketAddr) {
        self.inner.core.lock().device.peer_floated_from(peer, from);
    }

    fn connected(&self, transport: TransportId, status: NtStatus) {
        let mut actions = Actions::new();
        {
            let mut core = self.inner.core.lock();
            match core.opening.as_mut().filter(|o| o.transport == transport) {
                Some(opening) => opening.connected = Some(status),
                None => core.device.tcp_connected(transport, status, &mut actions),
            }
        }
        self.inner.defer_all(&mut actions);
    }

    fn disconnected(&self, transport: TransportId, _status: NtStatus) {
        let mut actions = Actions::new();
        {
            let mut core = self.inner.core.lock();
            match core.opening.as_mut().filter(|o| o.transport == transport) {
                Some(opening) => opening.disconnected = true,
                None => core.device.transport_disconnected(transport, &mut actions),
            }
        }
        self.inner.defer_all(&mut actions);
    }
}

impl<O: Os, R: Request + Send + 'static> Adapter<O, R> {
    /// Adapter creation (PASSIVE_LEVEL): a fresh device and the data path's
    /// tables, sharing the device's counters.
    pub fn new(os: Arc<O>) -> Self {
        let device = Device::new();
        let stats = device.stats().clone();
        let inner = Arc::new(Inner {
            os: os.clone(),
            core: SpinLock::new(Core { device, opening: None }),
            work: SpinLock::new(Work { deferred: Actions::new(), closing: false, timer_due: None }),
        });
        let datapath = Datapath::new(os, DevicePeers { inner: inner.clone() }, stats);
        Self { inner, datapath }
    }

    /// The data path (counters, drops, occupancy).
    pub fn datapath(&self) -> &Datapath<O, DevicePeers<O, R>> {
        &self.datapath
    }

    /// The OVPN_STATS counters (GET_STATS reads the same).
    pub fn stats(&self) -> Arc<DeviceStats> {
        self.datapath.stats().clone()
    }

    /// Everything observable about the device (allocates; tests and
    /// diagnostics).
    pub fn snapshot(&self) -> DeviceSnapshot {
        self.inner.core.lock().device.snapshot()
    }

    // -----------------------------------------------------------------
    // OpenVPN's handle (PASSIVE_LEVEL)

    /// EvtIoDeviceControl. `input` and `output` are the request's buffers
    /// (the same system buffer with METHOD_BUFFERED: the device reads the
    /// input before it writes the output). On [`Outcome::Complete`] the
    /// caller completes the request with the status and Information; on
    /// [`Outcome::Parked`] the adapter owns it and completes it through
    /// [`Request::complete`], possibly before this returns (a UDP NEW_PEER
    /// does).
    pub fn ioctl(&self, code: u32, input: &[u8], output: &mut [u8], request: R) -> Outcome<R> {
        self.run_deferred();
        let now = self.inner.os.now();
        let mut actions = Actions::new();
        let outcome = self.inner.core.lock().device.ioctl(
            self.inner.os.crypto(),
            code,
            input,
            output,
            request,
            now,
            &mut actions,
        );
        self.run(&mut actions, Context::Passive);
        // A keepalive configuration moves the deadlines: let the timer
        // compute them.
        let configured = matches!(Ioctl::from_code(code), Some(Ioctl::SetPeer | Ioctl::MpSetPeer));
        if configured && outcome.status() == Some(NtStatus::SUCCESS) {
            self.inner.schedule(now);
        }
        outcome
    }

    /// EvtIoRead: the next control packet, now or when one arrives.
    pub fn read(&self, request: R) -> ReadOutcome {
        self.inner.core.lock().device.read(request)
    }

    /// EvtIoWrite: one control packet to send. `Ok(n)`: complete the write
    /// with STATUS_SUCCESS and Information = n (the whole input).
    pub fn write(&self, input: &[u8]) -> Result<usize, NtStatus> {
        let send = self.inner.core.lock().device.write(input)?;
        if self.datapath.transport() != Some(send.transport) {
            // The socket the device names is not open (yet, or any more).
            return Err(NtStatus::INVALID_DEVICE_STATE);
        }
        self.datapath.send_control(send.to, send.bytes.as_slice()).map_err(|e| e.status())?;
        Ok(input.len())
    }

    /// EvtRequestCancel of a request the adapter parked: completes it with
    /// STATUS_CANCELLED. False if it was already completed.
    pub fn cancel(&self, id: RequestId) -> bool {
        self.inner.core.lock().device.cancel(id)
    }

    /// EvtFileCleanup: the handle is closing. Every parked request is
    /// completed, the sockets are closed, the link goes down, and the device
    /// is ready for the next handle. Returns whether the socket is closed;
    /// while it is [`CloseProgress::Waiting`], the glue calls
    /// [`Adapter::poll_close`] (PASSIVE_LEVEL, after a short sleep, bounded)
    /// or leaves it to the timer.
    pub fn cleanup(&self) -> CloseProgress {
        let mut actions = Actions::new();
        self.inner.core.lock().device.close(&mut actions);
        self.run(&mut actions, Context::Passive);
        self.poll_close()
    }

    /// Moves deferred work on (PASSIVE_LEVEL) and reports whether a closed
    /// socket is still held by the OS.
    pub fn poll_close(&self) -> CloseProgress {
        self.run_deferred();
        let progress = self.datapath.poll_close();
        if progress == CloseProgress::Closed && !self.inner.has_deferred() {
            self.inner.work.lock().closing = false;
        }
        progress
    }

    // -----------------------------------------------------------------
    // The timer (PASSIVE_LEVEL)

    /// The timer [`Os::schedule_timer`] asked for: keepalive pings and
    /// timeouts, and socket work that waited. Returns when it should run
    /// next (it has already asked the OS for that).
    pub fn timer(&self) -> Option<Instant> {
        self.inner.work.lock().timer_due = None;
        self.run_deferred();
        let mut next = None;
        for _ in 0..TICKS_PER_TIMER_MAX {
            let now = self.inner.os.now();
            let mut actions = Actions::new();
            next = self.inner.core.lock().device.tick(now, &mut actions);
            self.run(&mut actions, Context::Passive);
            if next != Some(now) {
                break;
            }
        }
        let now = self.inner.os.now();
        let waiting = {
            let work = self.inner.work.lock();
            work.closing || !work.deferred.is_empty()
        };
        if waiting {
            next = earliest(next, Some(now.saturating_add(CLOSE_POLL_INTERVAL)));
        }
        if let Some(due) = next {
            self.inner.schedule(due);
        }
        next
    }

    // -----------------------------------------------------------------
    // Executing the device's actions

    /// Runs deferred actions that can run now (PASSIVE_LEVEL).
    fn run_deferred(&self) {
        if self.inner.work.lock().closing {
            if self.datapath.poll_close() == CloseProgress::Closed {
                self.inner.work.lock().closing = false;
            } else {
                return;
            }
        }
        let mut deferred = core::mem::take(&mut self.inner.work.lock().deferred);
        if !deferred.is_empty() {
            self.run(&mut deferred, Context::Passive);
        }
    }

    /// Executes `actions` in order; what cannot run in `context` (or must
    /// wait for a socket to close) is deferred, and so is everything after
    /// it, to keep the order.
    fn run(&self, actions: &mut Actions, context: Context) {
        let mut deferring = self.inner.has_deferred();
        for action in actions.drain() {
            if !deferring && self.can_run(&action, context) {
                self.execute(action);
                continue;
            }
            deferring = true;
            if let Err(action) = self.inner.defer(action) {
                self.overflow(action, context);
            }
        }
    }

    fn can_run(&self, action: &Action, context: Context) -> bool {
        match action {
            Action::Link(_) | Action::SendKeepalive { .. } => true,
            Action::CloseTransport(_) => context == Context::Passive,
            Action::OpenUdp { .. } | Action::OpenTcp { .. } => {
                context == Context::Passive && !self.inner.work.lock().closing && !self.datapath.has_transport()
            }
        }
    }

    /// The deferred queue is full (the device never gets there; see
    /// [`Inner::defer`]): a socket that cannot be opened now fails its
    /// IOCTL; anything else runs as far as it can.
    fn overflow(&self, action: Action, context: Context) {
        match action {
            Action::OpenUdp { transport, .. } | Action::OpenTcp { transport, .. } => {
                let mut follow = Actions::new();
                self.inner.core.lock().device.transport_opened(
                    transport,
                    Err(NtStatus::INSUFFICIENT_RESOURCES),
                    &mut follow,
                );
                self.inner.defer_all(&mut follow);
            }
            Action::CloseTransport(_) if context == Context::Dispatch => {}
            other => self.execute(other),
        }
    }

    fn execute(&self, action: Action) {
        match action {
            Action::Link(state) => self.inner.os.set_link_state(state == LinkState::Up),
            Action::SendKeepalive { peer } => {
                let peer = self.inner.core.lock().device.rx_peer(peer);
                if let Some(peer) = peer {
                    // A failure is counted by the data path (no key, no slot).
                    let _ = self.datapath.send_keepalive(&peer);
                }
            }
            Action::CloseTransport(transport) => {
                if self.datapath.transport() == Some(transport)
                    && self.datapath.close_transport() != CloseProgress::Closed
                {
                    self.inner.work.lock().closing = true;
                    self.inner.schedule(self.inner.os.now().saturating_add(CLOSE_POLL_INTERVAL));
                }
            }
            Action::OpenUdp { transport, local, remote, ipv6_only } => {
                self.open(transport, |dp| dp.open_udp(transport, local, remote, ipv6_only));
            }
            Action::OpenTcp { transport, local, remote } => {
                self.open(transport, |dp| dp.open_tcp(transport, local, remote));
            }
        }
    }

    /// Opens a socket and tells the device, applying any event the socket
    /// raised before the device knew of it.
    fn open(&self, transport: TransportId, open: impl FnOnce(&Datapath<O, DevicePeers<O, R>>) -> Result<(), NtStatus>) {
        self.inner.core.lock().opening = Some(Opening { transport, connected: None, disconnected: false });
        let result = open(&self.datapath);
        let mut follow = Actions::new();
        {
            let mut core = self.inner.core.lock();
            let early = core.opening.take().filter(|o| o.transport == transport);
            core.device.transport_opened(transport, result, &mut follow);
            if let Some(early) = early {
                if let Some(status) = early.connected {
                    core.device.tcp_connected(transport, status, &mut follow);
                }
                if early.disconnected {
                    core.device.transport_disconnected(transport, &mut follow);
                }
            }
        }
        // Only socket closes and the link state follow; both run here.
        self.run(&mut follow, Context::Passive);
    }
}

impl<O: Os, R: Request + Send + 'static> AdapterDatapath for Adapter<O, R> {
    type RxQueue = <Datapath<O, DevicePeers<O, R>> as AdapterDatapath>::RxQueue;
    type TxQueue = <Datapath<O, DevicePeers<O, R>> as AdapterDatapath>::TxQueue;

    unsafe fn create_rx_queue(
        &self,
        rings: NonNull<NetRingCollection>,
        extensions: QueueExtensions,
    ) -> Result<Self::RxQueue, NtStatus> {
        // SAFETY: the caller's contract, passed on unchanged: `rings` is this
        // queue's collection, live until the queue is destroyed.
        unsafe { self.datapath.create_rx_queue(rings, extensions) }
    }

    unsafe fn create_tx_queue(
        &self,
        rings: NonNull<NetRingCollection>,
        extensions: QueueExtensions,
    ) -> Result<Self::TxQueue, NtStatus> {
        // SAFETY: as for create_rx_queue.
        unsafe { self.datapath.create_tx_queue(rings, extensions) }
    }

    fn return_rx_buffer(&self, return_context: usize) {
        self.datapath.return_rx_buffer(return_context);
    }
}

#[cfg(test)]
mod tests;
