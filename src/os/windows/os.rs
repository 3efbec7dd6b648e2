//! The Windows [`Os`]: one adapter's kernel services, each a thin call into
//! the module that owns it (clock and link state: `time`; notifications:
//! `queues`; timer: `timer`; sockets: `wsk_transport`; crypto: the CNG
//! providers opened once in `DriverEntry`).

use alloc::sync::Arc;
use core::net::SocketAddr;

use crate::ntstatus::NtStatus;
use crate::os::windows::cng::CngCrypto;
use crate::os::windows::netadaptercx::{NetAdapter, NetAdapterCx};
use crate::os::windows::queues::QueueNotifier;
use crate::os::windows::time;
use crate::os::windows::timer::AdapterTimer;
use crate::os::windows::wsk_transport::{self, WskTransport};
use crate::os::{Instant, Os, SocketEvents};

/// A NETADAPTER handle shared with the `Os` (link state calls).
#[derive(Clone, Copy)]
struct AdapterHandle(NetAdapter);

// SAFETY: NetAdapterSetLinkState may be called with the handle from any
// thread at IRQL <= DISPATCH_LEVEL (facts §3); the handle itself is a value.
unsafe impl Send for AdapterHandle {}
// SAFETY: as for Send; the handle is never written after construction.
unsafe impl Sync for AdapterHandle {}

/// One adapter's kernel services.
pub struct WindowsOs {
    cx: NetAdapterCx,
    adapter: AdapterHandle,
    crypto: &'static CngCrypto,
    notifier: Arc<QueueNotifier>,
    timer: AdapterTimer,
}

impl WindowsOs {
    /// For the NETADAPTER `adapter` (created, not yet started) and its
    /// device's timer.
    pub fn new(
        cx: NetAdapterCx,
        adapter: NetAdapter,
        crypto: &'static CngCrypto,
        notifier: Arc<QueueNotifier>,
        timer: AdapterTimer,
    ) -> Self {
        Self { cx, adapter: AdapterHandle(adapter), crypto, notifier, timer }
    }

    pub fn timer(&self) -> &AdapterTimer {
        &self.timer
    }
}

impl Os for WindowsOs {
    type Crypto = CngCrypto;
    type Transport = WskTransport;

    fn crypto(&self) -> &CngCrypto {
        self.crypto
    }

    fn now(&self) -> Instant {
        time::now()
    }

    fn notify_rx(&self) {
        self.notifier.notify_rx();
    }

    fn notify_tx(&self) {
        self.notifier.notify_tx();
    }

    fn set_link_state(&self, up: bool) {
        // SAFETY: the NETADAPTER lives as long as its device context, which
        // owns the adapter and with it this Os; the adapter calls this at
        // IRQL <= DISPATCH_LEVEL (Os::set_link_state's contract).
        unsafe { time::set_link_state(&self.cx, self.adapter.0, up) }
    }

    fn schedule_timer(&self, due: Instant) {
        self.timer.start_at(due);
    }

    fn open_udp(
        &self,
        local: SocketAddr,
        remote: Option<SocketAddr>,
        ipv6_only: bool,
        events: Arc<dyn SocketEvents>,
    ) -> Result<WskTransport, NtStatus> {
        wsk_transport::open_udp(local, remote, ipv6_only, events)
    }

    fn open_tcp(
        &self,
        local: SocketAddr,
        remote: SocketAddr,
        events: Arc<dyn SocketEvents>,
    ) -> Result<WskTransport, NtStatus> {
        wsk_transport::open_tcp(local, remote, events)
    }
}
