//! The host model as one adapter's [`Os`]: sockets from the WSK model,
//! queue notifications to the NetAdapterCx model, a clock that tests can
//! move forward (virtual time on top of real time), the link state the
//! adapter reports, and the passive-level timer it asks for.
//!
//! The timer is played by [`TimerThread`]: it waits until the due time the
//! adapter last gave to [`Os::schedule_timer`] and then runs the callback
//! the test or tool supplies (normally `Adapter::timer`), as the kernel's
//! passive-level WDFTIMER would.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::Duration;
use std::vec::Vec;

use super::netadapter::Notifier;
use super::wsk::{HostSocket, WskProvider};
use crate::crypto::host::HostCrypto;
use crate::ntstatus::NtStatus;
use crate::os::time::Instant;
use crate::os::{Os, SocketEvents};

static CRYPTO: HostCrypto = HostCrypto;

/// Longest the timer thread sleeps before looking again: bounds the delay
/// of a due time set without a wake-up (none is) and of the stop flag.
const TIMER_POLL: Duration = Duration::from_millis(50);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Default)]
struct TimerState {
    due: Option<Instant>,
    /// Times [`Os::schedule_timer`] was called.
    requests: u64,
}

/// One adapter's kernel services in the host model.
pub struct HostOs {
    wsk: WskProvider,
    notifier: Notifier,
    start: std::time::Instant,
    /// Virtual time added to the real clock, in milliseconds.
    skew_ms: AtomicU64,
    link_up: AtomicBool,
    link_changes: Mutex<Vec<bool>>,
    timer: Mutex<TimerState>,
    timer_changed: Condvar,
}

impl HostOs {
    pub fn new(wsk: WskProvider, notifier: Notifier) -> Self {
        Self {
            wsk,
            notifier,
            start: std::time::Instant::now(),
            // Far from zero, as KeQueryInterruptTime is after boot: a zero
            // "last received" must look long ago, not now.
            skew_ms: AtomicU64::new(1_000_000),
            link_up: AtomicBool::new(false),
            link_changes: Mutex::new(Vec::new()),
            timer: Mutex::new(TimerState::default()),
            timer_changed: Condvar::new(),
        }
    }

    pub fn wsk(&self) -> &WskProvider {
        &self.wsk
    }

    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    /// Moves this adapter's clock forward by `d` (virtual time) and wakes
    /// the timer thread.
    pub fn advance(&self, d: Duration) {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.skew_ms.fetch_add(ms, Ordering::SeqCst);
        self.timer_changed.notify_all();
    }

    /// The media state last reported with `set_link_state`.
    pub fn link_up(&self) -> bool {
        self.link_up.load(Ordering::SeqCst)
    }

    /// Every `set_link_state` call so far, in order.
    pub fn link_changes(&self) -> Vec<bool> {
        lock(&self.link_changes).clone()
    }

    /// When the adapter wants its timer, if at all.
    pub fn timer_due(&self) -> Option<Instant> {
        lock(&self.timer).due
    }

    /// How often the adapter asked for its timer.
    pub fn timer_requests(&self) -> u64 {
        lock(&self.timer).requests
    }

    /// Waits until the timer is due (or `limit` passed, or `stop` is set);
    /// true if it is due, and then it is disarmed (the caller runs it).
    fn wait_due(&self, limit: Duration, stop: &AtomicBool) -> bool {
        let mut t = lock(&self.timer);
        let deadline = std::time::Instant::now() + limit;
        loop {
            if stop.load(Ordering::SeqCst) {
                return false;
            }
            let now = self.now();
            match t.due {
                Some(due) if due <= now => {
                    t.due = None;
                    return true;
                }
                _ => {}
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            let wait = match t.due {
                Some(due) => Duration::from_millis(due.as_millis().saturating_sub(now.as_millis())).min(left),
                None => left,
            }
            .min(TIMER_POLL);
            t = self.timer_changed.wait_timeout(t, wait).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

impl Os for HostOs {
    type Crypto = HostCrypto;
    type Transport = HostSocket;

    fn crypto(&self) -> &HostCrypto {
        &CRYPTO
    }

    fn now(&self) -> Instant {
        let real = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        Instant::from_millis(real.saturating_add(self.skew_ms.load(Ordering::SeqCst)))
    }

    fn notify_rx(&self) {
        self.notifier.notify_rx();
    }

    fn notify_tx(&self) {
        self.notifier.notify_tx();
    }

    fn set_link_state(&self, up: bool) {
        self.link_up.store(up, Ordering::SeqCst);
        lock(&self.link_changes).push(up);
    }

    fn schedule_timer(&self, due: Instant) {
        let mut t = lock(&self.timer);
        t.due = Some(due);
        t.requests += 1;
        drop(t);
        self.timer_changed.notify_all();
    }

    fn open_udp(
        &self,
        local: SocketAddr,
        remote: Option<SocketAddr>,
        ipv6_only: bool,
        events: Arc<dyn SocketEvents>,
    ) -> Result<HostSocket, NtStatus> {
        self.wsk.open_udp(local, remote, ipv6_only, events)
    }

    fn open_tcp(
        &self,
        local: SocketAddr,
        remote: SocketAddr,
        events: Arc<dyn SocketEvents>,
    ) -> Result<HostSocket, NtStatus> {
        self.wsk.open_tcp(local, remote, events)
    }
}

/// The passive-level timer of one [`HostOs`]: a thread that runs `fire`
/// whenever the due time is reached. Stops (and joins) on drop.
pub struct TimerThread {
    stop: Arc<AtomicBool>,
    os: Weak<HostOs>,
    handle: Option<JoinHandle<()>>,
}

impl TimerThread {
    /// Starts the thread. `fire` returns false once its target is gone
    /// (for instance a `Weak` adapter that no longer upgrades).
    pub fn spawn(os: &Arc<HostOs>, fire: impl Fn() -> bool + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, weak) = (stop.clone(), Arc::downgrade(os));
        let handle = std::thread::Builder::new()
            .name("host-timer".into())
            .spawn(move || {
                while !s.load(Ordering::SeqCst) {
                    let Some(os) = weak.upgrade() else { return };
                    let due = os.wait_due(TIMER_POLL, &s);
                    drop(os);
                    if due && !fire() {
                        return;
                    }
                }
            })
            .ok();
        Self { stop, os: Arc::downgrade(os), handle }
    }
}

impl Drop for TimerThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(os) = self.os.upgrade() {
            os.timer_changed.notify_all();
        }
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
