//! The listening end of a TCP tunnel. ovpn-dco-win only ever connects
//! (NEW_PEER over TCP is a `WskConnect`; OpenVPN's `tcp-server` keeps the
//! socket in user space), and so does the adapter here. For two host
//! tunnels to meet over TCP, the listening one accepts the peer's
//! connection in user space and splices it to a loopback listener that its
//! own adapter connects to:
//!
//! ```text
//! peer ──TCP──▶ accept(local) ◀─ copy ─▶ accept(127.0.0.1:ephemeral) ◀──TCP── adapter (WSK model)
//! ```
//!
//! The splice copies bytes and nothing else: the stream framing, the
//! control and data packets are the adapter's business on both sides.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;
use std::vec::Vec;

/// How long a blocked accept or read waits before looking at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(100);

/// Bytes moved per read: a few full-size TCP frames of the tunnel.
const COPY_BUFFER: usize = 64 << 10;

/// A one-connection splice between a public listener and the adapter.
pub struct Splice {
    /// Where the peer connects.
    public: SocketAddr,
    /// Where the adapter connects (NEW_PEER's remote).
    inner: SocketAddr,
    stop: Arc<AtomicBool>,
    bytes: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Splice {
    /// Listens on `public` for the peer and on an ephemeral loopback port
    /// for the adapter; the splice starts once both connected.
    pub fn listen(public: SocketAddr) -> io::Result<Splice> {
        let outer = TcpListener::bind(public)?;
        let public = outer.local_addr()?;
        let loopback: SocketAddr = if public.is_ipv4() { "127.0.0.1:0" } else { "[::1]:0" }
            .parse()
            .map_err(|_| io::Error::from(ErrorKind::InvalidInput))?;
        let inner_listener = TcpListener::bind(loopback)?;
        let inner = inner_listener.local_addr()?;
        outer.set_nonblocking(true)?;
        inner_listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let bytes = Arc::new(AtomicU64::new(0));
        let (s, b) = (stop.clone(), bytes.clone());
        let thread = std::thread::Builder::new().name("tcp-splice".into()).spawn(move || {
            let Some(adapter) = accept(&inner_listener, &s) else { return };
            let Some(peer) = accept(&outer, &s) else { return };
            splice(peer, adapter, &s, &b);
        })?;
        Ok(Splice { public, inner, stop, bytes, thread: Some(thread) })
    }

    /// The address the peer connects to (the port bound, if 0 was asked).
    pub fn public_side(&self) -> SocketAddr {
        self.public
    }

    /// The loopback address the adapter's NEW_PEER connects to.
    pub fn adapter_side(&self) -> SocketAddr {
        self.inner
    }

    /// Bytes copied, both directions.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

impl Drop for Splice {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept(listener: &TcpListener, stop: &AtomicBool) -> Option<TcpStream> {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let ok = stream.set_nonblocking(false).is_ok()
                    && stream.set_nodelay(true).is_ok()
                    && stream.set_read_timeout(Some(STOP_POLL)).is_ok();
                return ok.then_some(stream);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => std::thread::sleep(STOP_POLL),
        }
    }
    None
}

/// Copies both ways until either side closes or `stop`; then closes both,
/// so the adapter sees the peer's close as a disconnect.
fn splice(a: TcpStream, b: TcpStream, stop: &Arc<AtomicBool>, bytes: &Arc<AtomicU64>) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else { return };
    let done = Arc::new(AtomicBool::new(false));
    let (s, d, n) = (stop.clone(), done.clone(), bytes.clone());
    let back = std::thread::Builder::new().name("tcp-splice-back".into()).spawn(move || copy(b2, a2, &s, &d, &n));
    copy(a, b, stop, &done, bytes);
    if let Ok(t) = back {
        let _ = t.join();
    }
}

fn copy(mut from: TcpStream, mut to: TcpStream, stop: &AtomicBool, done: &AtomicBool, bytes: &AtomicU64) {
    let mut buf: Vec<u8> = std::vec![0u8; COPY_BUFFER];
    while !stop.load(Ordering::Relaxed) && !done.load(Ordering::Relaxed) {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(buf.get(..n).unwrap_or_default()).is_err() {
                    break;
                }
                bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(_) => break,
        }
    }
    done.store(true, Ordering::Relaxed);
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
