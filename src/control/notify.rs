//! NOTIFY_EVENT: events for OpenVPN's MP server (peer deleted, peer
//! floated, swap keys) and the requests waiting for them.
//!
//! OpenVPN keeps exactly one NOTIFY_EVENT pending (dco_win.c
//! `dco_event_set`). An event completes the oldest parked request at once;
//! with none parked it waits in a bounded queue for the next request.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::mem::size_of;

use super::request::{Parked, QueueFull, Request, RequestId};
use crate::ntstatus::NtStatus;
use crate::uapi::decode::{NotifyEvent, encode_notify_event};
use crate::uapi::types::OvpnNotifyEvent;

/// Bytes of one completed NOTIFY_EVENT.
pub const NOTIFY_EVENT_LEN: usize = size_of::<OvpnNotifyEvent>();

/// NOTIFY_EVENT requests that may wait at once. OpenVPN keeps one; a few
/// more tolerate a client that re-arms before its previous one completes.
pub const PARKED_NOTIFY_MAX: usize = 4;

/// Events that may wait for a request. Each peer produces at most one
/// DEL_PEER and, coalesced, one pending FLOAT_PEER, so this covers a large
/// server whose OpenVPN stalls briefly; past it the newest event is dropped
/// and counted ([`Notifications::lost`]).
pub const NOTIFY_QUEUE_MAX: usize = 4096;

/// Queued events and parked NOTIFY_EVENT requests. Invariant: at most one
/// of the two is non-empty.
pub struct Notifications<R> {
    events: VecDeque<NotifyEvent>,
    parked: Parked<R>,
    lost: u64,
}

impl<R: Request> Default for Notifications<R> {
    fn default() -> Self {
        Self::new()
    }
}

impl<R: Request> Notifications<R> {
    pub fn new() -> Self {
        Self { events: VecDeque::new(), parked: Parked::new(PARKED_NOTIFY_MAX), lost: 0 }
    }

    /// Events dropped because the queue was full.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    pub fn can_park(&self) -> bool {
        !self.parked.is_full()
    }

    /// Delivers `event` to a waiting request or queues it.
    pub fn post(&mut self, event: NotifyEvent) {
        while let Some(request) = self.parked.pop() {
            let mut buf = [0u8; NOTIFY_EVENT_LEN];
            if request.output_len() < NOTIFY_EVENT_LEN {
                // Refused at park time; kept for a request type that lies.
                request.complete(NtStatus::BUFFER_TOO_SMALL, &[]);
                continue;
            }
            match encode_notify_event(&mut buf, &event) {
                Ok(n) => request.complete(NtStatus::SUCCESS, buf.get(..n).unwrap_or(&buf)),
                Err(e) => request.complete(e.status(), &[]),
            }
            return;
        }
        // A peer that floats again before OpenVPN heard of the first float
        // only needs its latest address reported.
        if let NotifyEvent::FloatPeer { peer_id, address } = event {
            let queued = self.events.iter_mut().find_map(|e| match e {
                NotifyEvent::FloatPeer { peer_id: p, address: a } if *p == peer_id => Some(a),
                _ => None,
            });
            if let Some(a) = queued {
                *a = address;
                return;
            }
        }
        if self.events.len() >= NOTIFY_QUEUE_MAX {
            self.lost = self.lost.saturating_add(1);
            return;
        }
        self.events.push_back(event);
    }

    /// The oldest queued event, written into `out` (at least
    /// [`NOTIFY_EVENT_LEN`] bytes, checked by the caller): its length.
    pub fn take_into(&mut self, out: &mut [u8]) -> Option<usize> {
        let event = self.events.front()?;
        let n = encode_notify_event(out, event).ok()?;
        self.events.pop_front();
        Some(n)
    }

    pub fn park(&mut self, request: R) -> Result<(), QueueFull<R>> {
        self.parked.park(request)
    }

    pub fn take_parked(&mut self, id: RequestId) -> Option<R> {
        self.parked.take(id)
    }

    /// Teardown: parked requests complete with STATUS_CANCELLED and queued
    /// events are forgotten (ovpn-dco-win `OvpnStopVPN`).
    pub fn cancel_all(&mut self) {
        self.parked.complete_all(NtStatus::CANCELLED);
        self.events.clear();
    }

    pub fn events(&self) -> Vec<NotifyEvent> {
        self.events.iter().copied().collect()
    }

    pub fn parked_ids(&self) -> Vec<RequestId> {
        self.parked.ids()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::PeerId;
    use crate::uapi::decode::DelPeerReason;
    use core::cell::RefCell;
    use std::rc::Rc;
    use std::vec;

    type Log = Rc<RefCell<Vec<(u64, NtStatus, Vec<u8>)>>>;

    struct Req(u64, usize, Log);

    impl Request for Req {
        fn id(&self) -> RequestId {
            RequestId(self.0)
        }
        fn output_len(&self) -> usize {
            self.1
        }
        fn complete(self, status: NtStatus, output: &[u8]) {
            self.2.borrow_mut().push((self.0, status, output.to_vec()));
        }
    }

    fn del(id: u32) -> NotifyEvent {
        NotifyEvent::DelPeer { peer_id: PeerId::new(id).unwrap(), reason: DelPeerReason::Expired }
    }

    #[test]
    fn an_event_completes_the_oldest_parked_request() {
        let log: Log = Rc::default();
        let mut n = Notifications::new();
        n.park(Req(1, 144, log.clone())).unwrap();
        n.park(Req(2, 144, log.clone())).unwrap();
        n.post(del(7));
        let done = log.borrow();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].0, 1);
        assert_eq!(done[0].1, NtStatus::SUCCESS);
        // Cmd DEL_PEER (0), PeerId 7, reason EXPIRED (2), rest zero.
        let mut want = vec![0u8; 144];
        want[4] = 7;
        want[8] = 2;
        assert_eq!(done[0].2, want);
    }

    #[test]
    fn events_queue_in_order_floats_coalesce_and_the_queue_is_bounded() {
        let mut n = Notifications::<Req>::new();
        let p = PeerId::new(3).unwrap();
        n.post(NotifyEvent::FloatPeer { peer_id: p, address: "192.0.2.1:1".parse().unwrap() });
        n.post(del(4));
        n.post(NotifyEvent::FloatPeer { peer_id: p, address: "192.0.2.2:2".parse().unwrap() });
        assert_eq!(
            n.events(),
            [NotifyEvent::FloatPeer { peer_id: p, address: "192.0.2.2:2".parse().unwrap() }, del(4)]
        );
        let mut out = [0xFFu8; 200];
        assert_eq!(n.take_into(&mut out), Some(144));
        assert_eq!(out[0], 2, "FLOAT_PEER first");
        assert_eq!(out[144], 0xFF, "nothing written past the structure");
        for i in 0..NOTIFY_QUEUE_MAX as u32 + 5 {
            n.post(del(i % 1000));
        }
        assert_eq!(n.events().len(), NOTIFY_QUEUE_MAX);
        assert_eq!(n.lost(), 6);
        n.cancel_all();
        assert!(n.events().is_empty());
    }
}
