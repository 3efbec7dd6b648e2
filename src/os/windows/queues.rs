//! The NetAdapterCx queue callbacks, each of which hands off at once to the
//! data path: queue creation to [`AdapterDatapath`], the queue events to the
//! queue's [`PacketQueue`], returned RX buffers to
//! [`AdapterDatapath::return_rx_buffer`].
//!
//! What lives here and not in the data path is the bookkeeping only the
//! kernel needs: where a queue's state is stored (the WDF object context of
//! the NETPACKETQUEUE, reached through [`QueueBinding`], which the WDF glue
//! implements), the ring collection and extensions queried once at creation
//! (facts §2.3: "call it from EvtNetAdapterCreate{Tx,Rx}Queue after queue
//! creation and cache the result"), and which queue handle may be notified.
//!
//! Queue validity: NetAdapterCx tears the data path down and rebuilds it on
//! every pause and D3 transition, and ovpn-dco-win crashed notifying an RX
//! queue that no longer existed (datapath facts, "Stop sequence"). So the
//! handle [`QueueNotifier`] notifies is published in EvtPacketQueueStart and
//! withdrawn in EvtPacketQueueStop, under a lock that the notification holds
//! across its call: once Stop returns, no notification is in flight.

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::ffi::c_void;
use core::marker::PhantomData;
use core::ptr::NonNull;

use crate::netcx::extension::{
    NetExtension, NetExtensionQuery, NetFragmentReturnContext, NetFragmentVirtualAddress, NetPacketChecksum,
};
use crate::netcx::ring::NetRingCollection;
use crate::ntstatus::NtStatus;
use crate::os::sync::SpinLock;
use crate::os::windows::netadaptercx::{
    Boolean, NetAdapter, NetAdapterCx, NetFragmentReturnContextHandle, NetPacketQueue, NetPacketQueueConfig,
    NetRxQueueInit, NetTxQueueInit, PfnWdfObjectContextEvent, WdfObject, WdfObjectAttributes,
};
use crate::os::{AdapterDatapath, PacketQueue, QueueExtensions};

/// How the queue callbacks find the state the glue keeps with WDF objects.
/// The WDF glue implements it over object context space
/// (`WdfObjectGetTypedContextWorker`); this module never calls WDF itself.
pub trait QueueBinding: 'static {
    /// The adapter's data path (the `Adapter`).
    type Datapath: AdapterDatapath + 'static;

    /// The queue state of the NETADAPTER NetAdapterCx passes to a callback.
    ///
    /// # Safety
    /// `adapter` is the NETADAPTER of the running callback (so it is live).
    /// The returned pointer stays valid until that adapter's context is
    /// destroyed, which NetAdapterCx does only after its last callback.
    unsafe fn adapter(adapter: NetAdapter) -> Option<NonNull<AdapterQueues<Self::Datapath>>>;

    /// Object attributes whose context is one pointer-sized slot (the
    /// driver's slot context type), with `destroy` as EvtDestroyCallback.
    fn slot_attributes(destroy: PfnWdfObjectContextEvent) -> WdfObjectAttributes;

    /// The slot of an object created with [`QueueBinding::slot_attributes`].
    /// WDF zeroes context space on creation, so a fresh slot is null.
    ///
    /// # Safety
    /// `object` is live and was created with those attributes.
    unsafe fn slot(object: WdfObject) -> Option<NonNull<*mut c_void>>;
}

/// What the queue callbacks need of one adapter: its data path and the
/// notifier its `Os` shares.
pub struct AdapterQueues<D: AdapterDatapath> {
    pub cx: NetAdapterCx,
    pub datapath: D,
    pub notifier: Arc<QueueNotifier>,
}

/// A queue handle that may be notified, or none.
#[derive(Clone, Copy)]
struct Published(NetPacketQueue);

// SAFETY: a NETPACKETQUEUE is a handle NetAdapterCx lets any thread pass to
// the notify calls (IRQL <= HIGH_LEVEL, facts §3); which value is current is
// guarded by the SpinLock it lives in.
unsafe impl Send for Published {}

/// `Os::notify_rx` / `Os::notify_tx`: notifies the started queue, and does
/// nothing while no queue is started.
pub struct QueueNotifier {
    cx: NetAdapterCx,
    rx: SpinLock<Published>,
    tx: SpinLock<Published>,
}

/// Which of the adapter's two queues.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum QueueKind {
    Rx,
    Tx,
}

impl QueueNotifier {
    pub fn new(cx: NetAdapterCx) -> Self {
        Self {
            cx,
            rx: SpinLock::new(Published(NetPacketQueue::NULL)),
            tx: SpinLock::new(Published(NetPacketQueue::NULL)),
        }
    }

    fn slot(&self, kind: QueueKind) -> &SpinLock<Published> {
        match kind {
            QueueKind::Rx => &self.rx,
            QueueKind::Tx => &self.tx,
        }
    }

    /// `NetRxQueueNotifyMoreReceivedPacketsAvailable` (index 59): any IRQL.
    pub fn notify_rx(&self) {
        let published = self.rx.lock();
        if !published.0.is_null() {
            // SAFETY: the handle is published only between the queue's Start
            // and Stop, and Stop withdraws it under this lock, so the queue is
            // live for the whole call; the notify call allows any IRQL up to
            // HIGH_LEVEL (facts §3), so holding a spin lock is fine.
            unsafe { self.cx.rx_queue_notify_more_received_packets_available(published.0) }
        }
    }

    /// `NetTxQueueNotifyMoreCompletedPacketsAvailable` (index 64): any IRQL.
    pub fn notify_tx(&self) {
        let published = self.tx.lock();
        if !published.0.is_null() {
            // SAFETY: as in notify_rx, for the TX queue.
            unsafe { self.cx.tx_queue_notify_more_completed_packets_available(published.0) }
        }
    }

    fn publish(&self, kind: QueueKind, queue: NetPacketQueue) {
        *self.slot(kind).lock() = Published(queue);
    }

    /// Withdraws `queue` if it is the one published (a later queue of the
    /// same direction may already have replaced it).
    fn withdraw(&self, kind: QueueKind, queue: NetPacketQueue) {
        let mut published = self.slot(kind).lock();
        if published.0 == queue {
            *published = Published(NetPacketQueue::NULL);
        }
    }
}

/// One queue's state, boxed into its NETPACKETQUEUE's slot at creation and
/// dropped by the queue object's EvtDestroyCallback.
struct QueueState<Q> {
    queue: Q,
    handle: NetPacketQueue,
    kind: QueueKind,
    notifier: Arc<QueueNotifier>,
}

/// The queue state a callback was given the NETPACKETQUEUE of.
///
/// # Safety
/// `queue` is the queue of the running callback, created by
/// [`create_queue`] with `Q` as its type.
unsafe fn state<'a, B: QueueBinding, Q>(queue: NetPacketQueue) -> Option<&'a QueueState<Q>> {
    // SAFETY: live queue created with the slot attributes (contract).
    let slot = unsafe { B::slot(WdfObject::from_raw(queue.as_raw())) }?;
    // SAFETY: the slot holds null or the Box written by create_queue for
    // this very queue with type Q; it is freed only by the destroy callback,
    // which NetAdapterCx runs after the queue's last callback.
    let state = unsafe { slot.as_ptr().read() }.cast::<QueueState<Q>>();
    // SAFETY: as above: null or a live QueueState<Q>, shared only by &.
    unsafe { state.as_ref() }
}

/// `EvtPacketQueueStart` (PASSIVE_LEVEL).
unsafe extern "system" fn evt_start<B: QueueBinding, Q: PacketQueue + 'static>(queue: NetPacketQueue) {
    // SAFETY: NetAdapterCx passes the queue this callback was registered on.
    if let Some(s) = unsafe { state::<B, Q>(queue) } {
        s.queue.start();
        s.notifier.publish(s.kind, s.handle);
    }
}

/// `EvtPacketQueueAdvance` (<= DISPATCH_LEVEL, serialized per queue).
unsafe extern "system" fn evt_advance<B: QueueBinding, Q: PacketQueue + 'static>(queue: NetPacketQueue) {
    // SAFETY: as in evt_start.
    if let Some(s) = unsafe { state::<B, Q>(queue) } {
        s.queue.advance();
    }
}

/// `EvtPacketQueueSetNotificationEnabled`.
unsafe extern "system" fn evt_set_notification_enabled<B: QueueBinding, Q: PacketQueue + 'static>(
    queue: NetPacketQueue,
    enabled: Boolean,
) {
    // SAFETY: as in evt_start.
    if let Some(s) = unsafe { state::<B, Q>(queue) } {
        s.queue.set_notification_enabled(enabled != 0);
    }
}

/// `EvtPacketQueueCancel`: the data path returns everything; Advance keeps
/// being called until both rings are empty.
unsafe extern "system" fn evt_cancel<B: QueueBinding, Q: PacketQueue + 'static>(queue: NetPacketQueue) {
    // SAFETY: as in evt_start.
    if let Some(s) = unsafe { state::<B, Q>(queue) } {
        s.queue.cancel();
    }
}

/// `EvtPacketQueueStop`: the data path first (it disarms notification),
/// then the handle is withdrawn, waiting out a notification in flight.
unsafe extern "system" fn evt_stop<B: QueueBinding, Q: PacketQueue + 'static>(queue: NetPacketQueue) {
    // SAFETY: as in evt_start.
    if let Some(s) = unsafe { state::<B, Q>(queue) } {
        s.queue.stop();
        s.notifier.withdraw(s.kind, s.handle);
    }
}

/// EvtDestroyCallback of a queue object: frees its state.
unsafe extern "system" fn evt_queue_destroy<B: QueueBinding, Q: PacketQueue + 'static>(object: WdfObject) {
    // SAFETY: WDF passes the object being destroyed, created with the slot
    // attributes; its context is still valid inside EvtDestroyCallback.
    let Some(slot) = (unsafe { B::slot(object) }) else { return };
    // SAFETY: the slot is ours; no queue callback runs any more (destroy is
    // the object's last callback), so taking the value out is exclusive.
    let raw = unsafe { slot.as_ptr().replace(core::ptr::null_mut()) }.cast::<QueueState<Q>>();
    if !raw.is_null() {
        // SAFETY: `raw` came from Box::into_raw in create_queue and the slot
        // was just cleared, so it is freed exactly once. NetAdapterCx stops
        // a started queue before deleting it; withdrawing again is for a
        // queue whose Stop never came, so no dangling handle stays published.
        let state = unsafe { Box::from_raw(raw) };
        state.notifier.withdraw(state.kind, state.handle);
    }
}

/// The queue callbacks of a `Q` queue, with Start and Stop set (the
/// `NET_PACKET_QUEUE_CONFIG_INIT` helper leaves them unset).
fn queue_config<B: QueueBinding, Q: PacketQueue + 'static>() -> NetPacketQueueConfig {
    let mut config = NetPacketQueueConfig::init(
        Some(evt_advance::<B, Q>),
        Some(evt_set_notification_enabled::<B, Q>),
        Some(evt_cancel::<B, Q>),
    );
    config.evt_start = Some(evt_start::<B, Q>);
    config.evt_stop = Some(evt_stop::<B, Q>);
    config
}

/// One extension of a queue, through `Net{Rx,Tx}QueueGetExtension`.
type GetExtension = unsafe fn(&NetAdapterCx, NetPacketQueue, *const c_void, *mut c_void);

/// Queries the extension `query` on `queue`.
///
/// # Safety
/// PASSIVE_LEVEL, inside the queue's creation callback; `get` matches the
/// queue's direction.
unsafe fn query(cx: &NetAdapterCx, queue: NetPacketQueue, get: GetExtension, query: NetExtensionQuery) -> NetExtension {
    let mut extension = NetExtension::zeroed();
    // SAFETY: the query is a valid NET_EXTENSION_QUERY (netcx's mirror,
    // facts §2.3) and `extension` writable NET_EXTENSION storage (40 bytes);
    // the caller's contract gives the queue and the IRQL.
    unsafe { get(cx, queue, core::ptr::from_ref(&query).cast(), core::ptr::from_mut(&mut extension).cast()) };
    extension
}

/// `Net{Rx,Tx}QueueCreate`.
type CreateQueue<I> = unsafe fn(
    &NetAdapterCx,
    NonNull<I>,
    Option<&WdfObjectAttributes>,
    &NetPacketQueueConfig,
) -> Result<NetPacketQueue, NtStatus>;

/// The direction-specific parts of queue creation.
struct Direction<I> {
    kind: QueueKind,
    create: CreateQueue<I>,
    rings: unsafe fn(&NetAdapterCx, NetPacketQueue) -> *const c_void,
    get_extension: GetExtension,
    _init: PhantomData<I>,
}

const RX: Direction<NetRxQueueInit> = Direction {
    kind: QueueKind::Rx,
    create: NetAdapterCx::rx_queue_create,
    rings: NetAdapterCx::rx_queue_get_ring_collection,
    get_extension: NetAdapterCx::rx_queue_get_extension,
    _init: PhantomData,
};

const TX: Direction<NetTxQueueInit> = Direction {
    kind: QueueKind::Tx,
    create: NetAdapterCx::tx_queue_create,
    rings: NetAdapterCx::tx_queue_get_ring_collection,
    get_extension: NetAdapterCx::tx_queue_get_extension,
    _init: PhantomData,
};

/// `EvtAdapterCreate{Rx,Tx}Queue` (PASSIVE_LEVEL): `Net{Rx,Tx}QueueCreate`
/// with this module's callbacks, the ring collection and extensions, then
/// the data path's queue, boxed into the queue object's slot.
///
/// # Safety
/// `adapter` and `init` are the arguments of the running creation callback.
unsafe fn create_queue<B: QueueBinding, I, Q: PacketQueue + 'static>(
    adapter: NetAdapter,
    init: *mut I,
    dir: &Direction<I>,
    make: impl FnOnce(&B::Datapath, NonNull<NetRingCollection>, QueueExtensions) -> Result<Q, NtStatus>,
) -> NtStatus {
    let Some(init) = NonNull::new(init) else { return NtStatus::INVALID_PARAMETER };
    // SAFETY: the adapter of the running callback (contract).
    let Some(queues) = (unsafe { B::adapter(adapter) }) else { return NtStatus::INVALID_DEVICE_STATE };
    // SAFETY: valid until the adapter's context is destroyed, after this
    // callback (QueueBinding::adapter's contract).
    let queues = unsafe { queues.as_ref() };
    let cx = &queues.cx;
    let attributes = B::slot_attributes(Some(evt_queue_destroy::<B, Q>));
    let config = queue_config::<B, Q>();
    // SAFETY: PASSIVE_LEVEL inside the creation callback with its init
    // object; the callbacks are monomorphic functions, valid forever.
    let queue = match unsafe { (dir.create)(cx, init, Some(&attributes), &config) } {
        Ok(queue) => queue,
        Err(status) => return status,
    };
    // SAFETY: the queue was just created; PASSIVE_LEVEL.
    let Some(rings) = NonNull::new(unsafe { (dir.rings)(cx, queue) }.cast_mut().cast::<NetRingCollection>()) else {
        return NtStatus::INSUFFICIENT_RESOURCES;
    };
    // SAFETY (three queries): the queue was just created, PASSIVE_LEVEL, and
    // the getter matches its direction.
    let virtual_address =
        unsafe { query(cx, queue, dir.get_extension, NetExtensionQuery::of::<NetFragmentVirtualAddress>()) };
    let (return_context, checksum) = match dir.kind {
        QueueKind::Rx => {
            // SAFETY: as above.
            let rc =
                unsafe { query(cx, queue, dir.get_extension, NetExtensionQuery::of::<NetFragmentReturnContext>()) };
            // SAFETY: as above.
            let ck = unsafe { query(cx, queue, dir.get_extension, NetExtensionQuery::of::<NetPacketChecksum>()) };
            (Some(rc), (ck.enabled != 0).then_some(ck))
        }
        QueueKind::Tx => (None, None),
    };
    let extensions = QueueExtensions {
        fragment_virtual_address: virtual_address,
        fragment_return_context: return_context,
        packet_checksum: checksum,
    };
    let q = match make(&queues.datapath, rings, extensions) {
        Ok(q) => q,
        // NetAdapterCx deletes the queue object when creation fails; its
        // slot is still null, so the destroy callback has nothing to free.
        Err(status) => return status,
    };
    let state = Box::new(QueueState { queue: q, handle: queue, kind: dir.kind, notifier: queues.notifier.clone() });
    // SAFETY: the queue object was created with the slot attributes above.
    match unsafe { B::slot(WdfObject::from_raw(queue.as_raw())) } {
        Some(slot) => {
            // SAFETY: the fresh slot is ours and no callback of this queue
            // runs before its creation callback returns.
            unsafe { slot.as_ptr().write(Box::into_raw(state).cast()) };
            NtStatus::SUCCESS
        }
        None => NtStatus::INSUFFICIENT_RESOURCES,
    }
}

/// `EvtAdapterCreateRxQueue`: register in `NET_ADAPTER_DATAPATH_CALLBACKS`.
///
/// # Safety
/// Called by NetAdapterCx only.
pub unsafe extern "system" fn evt_create_rx_queue<B: QueueBinding>(
    adapter: NetAdapter,
    init: *mut NetRxQueueInit,
) -> NtStatus {
    // SAFETY: the arguments of this creation callback; the rings and
    // extensions handed on belong to the queue just created, live until it
    // is destroyed, which is AdapterDatapath::create_rx_queue's contract.
    unsafe {
        create_queue::<B, _, <B::Datapath as AdapterDatapath>::RxQueue>(adapter, init, &RX, |d, rings, ext| {
            d.create_rx_queue(rings, ext)
        })
    }
}

/// `EvtAdapterCreateTxQueue`: register in `NET_ADAPTER_DATAPATH_CALLBACKS`.
///
/// # Safety
/// Called by NetAdapterCx only.
pub unsafe extern "system" fn evt_create_tx_queue<B: QueueBinding>(
    adapter: NetAdapter,
    init: *mut NetTxQueueInit,
) -> NtStatus {
    // SAFETY: as for evt_create_rx_queue, with the TX queue.
    unsafe {
        create_queue::<B, _, <B::Datapath as AdapterDatapath>::TxQueue>(adapter, init, &TX, |d, rings, ext| {
            d.create_tx_queue(rings, ext)
        })
    }
}

/// `EvtAdapterReturnRxBuffer`: once per fragment of every indicated packet,
/// with the ReturnContext the data path wrote (datapath facts).
///
/// # Safety
/// Called by NetAdapterCx only.
pub unsafe extern "system" fn evt_return_rx_buffer<B: QueueBinding>(
    adapter: NetAdapter,
    context: NetFragmentReturnContextHandle,
) {
    // SAFETY: NetAdapterCx passes the adapter the RX capabilities belong to.
    if let Some(queues) = unsafe { B::adapter(adapter) } {
        // SAFETY: live for the adapter's callbacks (QueueBinding contract).
        let queues = unsafe { queues.as_ref() };
        queues.datapath.return_rx_buffer(context.as_raw() as usize);
    }
}
