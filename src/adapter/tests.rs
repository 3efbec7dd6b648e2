//! The adapter's own sequencing over the host model's sockets (no packet
//! queues): a socket open that must wait for the previous socket's close,
//! and what a parked NEW_PEER sees meanwhile.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::vec::Vec;

use super::*;
use crate::control::ctl_queue::put_prefix;
use crate::os::host::netadapter::Notifier;
use crate::os::host::os::{HostOs, TimerThread};
use crate::os::host::verifier::Verifier;
use crate::os::host::wsk::{
    CompletionMode, LoopbackConfig, LoopbackHub, Network, SendConfig, WskConfig, WskProvider, WskVerifier,
};

type Log = Arc<Mutex<Vec<(u64, NtStatus)>>>;

struct Req {
    id: u64,
    log: Log,
}

impl Request for Req {
    fn id(&self) -> RequestId {
        RequestId(self.id)
    }
    fn output_len(&self) -> usize {
        0
    }
    fn complete(self, status: NtStatus, _output: &[u8]) {
        self.log.lock().unwrap().push((self.id, status));
    }
}

/// OVPN_NEW_PEER (UDP): Local @0, Remote @28, Proto @56.
fn new_peer(local: &str, remote: &str) -> Vec<u8> {
    let mut b = std::vec![0u8; 60];
    put_prefix(&mut b[..28], &local.parse().unwrap()).unwrap();
    put_prefix(&mut b[28..56], &remote.parse().unwrap()).unwrap();
    b
}

fn status_of(log: &Log, id: u64) -> Option<NtStatus> {
    log.lock().unwrap().iter().find(|(i, _)| *i == id).map(|(_, s)| *s)
}

/// An adapter over the in-memory loopback whose send completions come
/// `completion_delay` late (so a socket with a send in flight cannot close
/// yet), with a timer thread and a log of request completions.
struct Fixture {
    adapter: Arc<Adapter<HostOs, Req>>,
    os: Arc<HostOs>,
    wv: Arc<WskVerifier>,
    log: Log,
    _timer: TimerThread,
}

impl Fixture {
    fn new(completion_delay: Duration) -> Self {
        let hub = LoopbackHub::new(LoopbackConfig::default());
        let wv = WskVerifier::new();
        let config = WskConfig {
            send: SendConfig { completion: CompletionMode::Delayed(completion_delay), ..Default::default() },
            ..Default::default()
        };
        let wsk = WskProvider::new(Network::Loopback(hub), config, wv.clone());
        let os = Arc::new(HostOs::new(wsk, Notifier::new(Verifier::new())));
        let adapter: Arc<Adapter<HostOs, Req>> = Arc::new(Adapter::new(os.clone()));
        let weak = Arc::downgrade(&adapter);
        let _timer = TimerThread::spawn(&os, move || weak.upgrade().map(|a| a.timer()).is_some());
        Self { adapter, os, wv, log: Log::default(), _timer }
    }

    /// The IOCTL's status if it completed before returning.
    fn ioctl(&self, id: u64, ioctl: Ioctl, input: &[u8]) -> Option<NtStatus> {
        self.adapter.ioctl(ioctl.code(), input, &mut [], Req { id, log: self.log.clone() }).status()
    }
}

#[test]
fn new_peer_waits_for_the_old_socket_to_close_then_completes() {
    let f = Fixture::new(Duration::from_millis(150));
    let (adapter, log, ioctl) = (&f.adapter, &f.log, |id, code, input: &[u8]| f.ioctl(id, code, input));

    assert_eq!(ioctl(1, Ioctl::NewPeer, &new_peer("10.0.0.1:1194", "10.0.0.2:1194")), None);
    assert_eq!(status_of(log, 1), Some(NtStatus::SUCCESS), "a UDP NEW_PEER completes before the IOCTL returns");
    let first = adapter.datapath().transport();
    assert_eq!(adapter.write(&[0x38, 1, 2, 3, 4, 5, 6, 7]), Ok(8));
    assert_eq!(adapter.datapath().occupancy().sends_in_flight, 1);

    // DEL_PEER: the socket is detached at once but waits for its send.
    assert_eq!(ioctl(2, Ioctl::DelPeer, &[]), Some(NtStatus::SUCCESS));
    assert_eq!(adapter.datapath().transport(), None);
    assert!(adapter.datapath().has_transport(), "still closing");
    // NEW_PEER on the same address parks until the old socket is gone.
    assert_eq!(ioctl(3, Ioctl::NewPeer, &new_peer("10.0.0.1:1194", "10.0.0.2:1194")), None);
    assert_eq!(status_of(log, 3), None, "waits for the close");
    assert_eq!(adapter.write(&[0x38, 1, 2, 3, 4, 5, 6, 7]), Err(NtStatus::INVALID_DEVICE_STATE));
    for _ in 0..400 {
        if status_of(log, 3).is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(status_of(log, 3), Some(NtStatus::SUCCESS), "the timer opened the socket after the close");
    let second = adapter.datapath().transport();
    assert!(second.is_some() && second != first);

    assert_eq!(adapter.cleanup(), CloseProgress::Closed);
    assert!(!adapter.datapath().has_transport());
    f.wv.assert_clean();
}

#[test]
fn a_cancelled_new_peer_that_waits_for_a_close_completes_once() {
    let f = Fixture::new(Duration::from_millis(100));
    let (adapter, log, ioctl) = (&f.adapter, &f.log, |id, code, input: &[u8]| f.ioctl(id, code, input));
    ioctl(1, Ioctl::NewPeer, &new_peer("10.0.0.1:1194", "10.0.0.2:1194"));
    adapter.write(&[0x38, 1, 2, 3, 4, 5, 6, 7]).unwrap();
    ioctl(2, Ioctl::DelPeer, &[]);
    ioctl(3, Ioctl::NewPeer, &new_peer("10.0.0.1:1194", "10.0.0.2:1194"));
    // OpenVPN gives up on it (CancelIoEx), then closes the handle.
    assert!(adapter.cancel(RequestId(3)));
    assert_eq!(status_of(log, 3), Some(NtStatus::CANCELLED));
    let mut progress = adapter.cleanup();
    for _ in 0..200 {
        if progress == CloseProgress::Closed && !adapter.datapath().has_transport() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
        progress = adapter.poll_close();
    }
    assert!(!adapter.datapath().has_transport(), "the late open was closed again");
    let completions = log.lock().unwrap().iter().filter(|(i, _)| *i == 3).count();
    assert_eq!(completions, 1, "completed exactly once");
    assert!(!f.os.link_up());
    f.wv.assert_clean();
}
