//! Keepalive timers of one peer (SET_PEER / MP_SET_PEER). Under DCO the
//! driver owns keepalive: OpenVPN clears its own ping timers (init.c) and
//! relies on the driver to ping when idle and to report a silent peer.
//!
//! Both timers measure from the later of the peer's last activity (stamped
//! by the data path) and the moment they were armed: SET_PEER re-arms the
//! one it sets (ovpn-dco-win `OvpnPeerSetDoWork`; its test tool: "MP_SET_PEER
//! restarts the receive timer"), a ping sent re-arms the send timer, and a
//! P2P timeout re-arms the receive timer so it fires once per silent period.

use core::time::Duration;

use crate::os::time::Instant;

/// The timers of one peer. Zero seconds turns a timer off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Keepalive {
    /// Send a ping after this long without sending (KeepaliveInterval).
    interval: Option<Duration>,
    /// The peer is gone after this long without receiving (KeepaliveTimeout).
    timeout: Option<Duration>,
    send_armed: Instant,
    recv_armed: Instant,
}

/// What is due at a tick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Due {
    pub ping: bool,
    pub expired: bool,
}

fn seconds(s: u32) -> Option<Duration> {
    (s != 0).then(|| Duration::from_secs(u64::from(s)))
}

impl Keepalive {
    /// Applies SET_PEER's two fields (`None`: the field was −1, unchanged).
    pub fn configure(&mut self, interval: Option<u32>, timeout: Option<u32>, now: Instant) {
        if let Some(s) = interval {
            self.interval = seconds(s);
            self.send_armed = now;
        }
        if let Some(s) = timeout {
            self.timeout = seconds(s);
            self.recv_armed = now;
        }
    }

    pub fn interval(&self) -> Option<Duration> {
        self.interval
    }

    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    fn ping_at(&self, last_sent: Instant) -> Option<Instant> {
        Some(last_sent.max(self.send_armed).saturating_add(self.interval?))
    }

    fn expiry_at(&self, last_received: Instant) -> Option<Instant> {
        Some(last_received.max(self.recv_armed).saturating_add(self.timeout?))
    }

    /// What is due at `now`. The caller acts on it and then calls
    /// [`Self::pinged`] / [`Self::expired`].
    pub fn due(&self, last_sent: Instant, last_received: Instant, now: Instant) -> Due {
        Due {
            ping: self.ping_at(last_sent).is_some_and(|t| t <= now),
            expired: self.expiry_at(last_received).is_some_and(|t| t <= now),
        }
    }

    /// A ping was handed to the data path at `now`; if it could not be sent
    /// the next one waits a whole interval rather than retrying every tick.
    pub fn pinged(&mut self, now: Instant) {
        self.send_armed = now;
    }

    /// The timeout was reported at `now`; the next report needs another
    /// whole timeout of silence.
    pub fn expired(&mut self, now: Instant) {
        self.recv_armed = now;
    }

    /// When this peer next needs a tick.
    pub fn next_deadline(&self, last_sent: Instant, last_received: Instant) -> Option<Instant> {
        match (self.ping_at(last_sent), self.expiry_at(last_received)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> Instant {
        Instant::from_millis(s * 1000)
    }

    #[test]
    fn pings_when_send_idle_and_expires_when_receive_idle() {
        let mut k = Keepalive::default();
        assert_eq!(k.next_deadline(t(0), t(0)), None, "off until configured");
        k.configure(Some(10), Some(60), t(100));
        // Activity before arming does not count against the peer.
        assert_eq!(k.due(t(0), t(0), t(109)), Due::default());
        assert_eq!(k.due(t(0), t(0), t(110)), Due { ping: true, expired: false });
        k.pinged(t(110));
        assert_eq!(k.next_deadline(t(0), t(0)), Some(t(120)));
        // The data path sent at 115: the next ping waits for 125.
        assert_eq!(k.next_deadline(t(115), t(150)), Some(t(125)));
        assert!(k.due(t(115), t(0), t(160)).expired);
        k.expired(t(160));
        assert!(!k.due(t(115), t(0), t(219)).expired);
        assert!(k.due(t(115), t(0), t(220)).expired);
    }

    #[test]
    fn minus_one_leaves_a_timer_and_zero_turns_it_off() {
        let mut k = Keepalive::default();
        k.configure(Some(10), Some(60), t(0));
        k.configure(None, Some(0), t(5));
        assert_eq!(k.interval(), Some(Duration::from_secs(10)));
        assert_eq!(k.timeout(), None);
        assert_eq!(k.next_deadline(t(0), t(0)), Some(t(10)), "the interval was not re-armed");
        k.configure(Some(0), None, t(6));
        assert_eq!(k.next_deadline(t(0), t(0)), None);
    }
}
