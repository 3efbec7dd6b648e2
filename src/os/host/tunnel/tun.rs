//! A Linux TUN device (`/dev/net/tun`, IFF_TUN | IFF_NO_PI: one raw IP
//! packet per read and per write): the host tunnel's stand-in for the
//! Windows network stack above the adapter.

use std::fs::File;
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::string::{String, ToString};
use std::time::Duration;
use std::vec::Vec;

/// IFNAMSIZ (linux/if.h) including the terminating NUL.
const IFNAMSIZ: usize = 16;

/// An attached TUN device, nonblocking.
#[derive(Debug)]
pub struct Tun {
    file: File,
    name: String,
    /// Every read and write carries a `virtio_net_hdr` and the kernel
    /// segments and coalesces TCP ([`super::offload`]).
    offload: bool,
}

/// Why a TUN device could not be attached.
#[derive(Debug)]
pub enum TunError {
    /// Longer than IFNAMSIZ − 1 bytes, or empty.
    BadName,
    /// /dev/net/tun could not be opened (no module, no permission).
    Open(io::Error),
    /// TUNSETIFF refused the name or the flags.
    SetIff(io::Error),
    /// O_NONBLOCK could not be set.
    Fcntl(io::Error),
}

impl core::fmt::Display for TunError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            TunError::BadName => write!(f, "TUN name must be 1 to {} bytes", IFNAMSIZ - 1),
            TunError::Open(e) => write!(f, "/dev/net/tun: {e}"),
            TunError::SetIff(e) => write!(f, "TUNSETIFF: {e}"),
            TunError::Fcntl(e) => write!(f, "O_NONBLOCK: {e}"),
        }
    }
}

impl Tun {
    /// Attaches to TUN device `name` in the calling thread's network
    /// namespace, creating it if it does not exist (it then disappears
    /// with the last descriptor unless made persistent elsewhere). With
    /// `offload`, asks for `virtio_net_hdr` and TCP segmentation offload
    /// (TSO4/TSO6 with partial checksums); a kernel that refuses the
    /// offloads leaves the device without them.
    pub fn open(name: &str, offload: bool) -> Result<Tun, TunError> {
        match Self::attach(name, offload) {
            Ok(t) => Ok(t),
            Err(TunError::SetIff(_)) if offload => Self::attach(name, false),
            Err(e) => Err(e),
        }
    }

    fn attach(name: &str, offload: bool) -> Result<Tun, TunError> {
        if name.is_empty() || name.len() >= IFNAMSIZ {
            return Err(TunError::BadName);
        }
        let file = File::options().read(true).write(true).open("/dev/net/tun").map_err(TunError::Open)?;
        // SAFETY: ifreq is plain data; all-zero is a valid value.
        let mut req: libc::ifreq = unsafe { core::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        let vnet = if offload { libc::IFF_VNET_HDR } else { 0 };
        req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI | vnet) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes one ifreq, which `req` is, for
        // the duration of the call on a descriptor `file` owns.
        if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &raw mut req) } != 0 {
            return Err(TunError::SetIff(io::Error::last_os_error()));
        }
        // SAFETY: fcntl on a descriptor `file` owns.
        let r = unsafe {
            let flags = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK)
        };
        if r < 0 {
            return Err(TunError::Fcntl(io::Error::last_os_error()));
        }
        if offload {
            let features = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;
            // SAFETY: TUNSETOFFLOAD takes its argument by value, on a
            // descriptor `file` owns.
            if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETOFFLOAD, features as libc::c_ulong) } != 0 {
                // Headers without offloads would be dead weight: reattach
                // without them (the descriptor is closed on return).
                return Err(TunError::SetIff(io::Error::last_os_error()));
            }
        }
        Ok(Tun { file, name: name.to_string(), offload })
    }

    /// Whether reads and writes carry a `virtio_net_hdr`.
    pub fn offload(&self) -> bool {
        self.offload
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits until a packet can be read or `timeout` passed; true if one can.
    pub fn wait_readable(&self, timeout: Duration) -> io::Result<bool> {
        let mut fd = libc::pollfd { fd: self.file.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one pollfd that lives across the call.
        let r = unsafe { libc::poll(&raw mut fd, 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == ErrorKind::Interrupted { Ok(false) } else { Err(e) };
        }
        Ok(r > 0 && fd.revents & libc::POLLIN != 0)
    }

    /// One packet into `buf`; `Ok(None)` when none is waiting.
    pub fn read_packet(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match (&self.file).read(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One packet into `buf`'s spare capacity (its length becomes the
    /// packet's; no zero-fill first); `Ok(None)` when none is waiting.
    pub fn read_into(&self, buf: &mut Vec<u8>) -> io::Result<Option<usize>> {
        buf.clear();
        let spare = buf.spare_capacity_mut();
        // SAFETY: read(2) writes at most `spare.len()` bytes into the
        // spare capacity, which `buf` owns and nothing else aliases.
        let n = unsafe { libc::read(self.file.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                ErrorKind::WouldBlock | ErrorKind::Interrupted => Ok(None),
                _ => Err(e),
            };
        }
        let n = n as usize;
        // SAFETY: the kernel initialised the first `n` bytes (n ≤ capacity).
        unsafe { buf.set_len(n) };
        Ok(Some(n))
    }

    /// One packet to the stack; `Ok(false)` when the device's queue is
    /// full (the packet is dropped, as by a NIC whose host is slow).
    pub fn write_packet(&self, packet: &[u8]) -> io::Result<bool> {
        self.write_packet_parts(&[packet])
    }

    /// One packet given in pieces (one `writev`: TUN takes one packet per
    /// write call, whatever its iovecs); `Ok(false)` as for
    /// [`Tun::write_packet`].
    pub fn write_packet_parts(&self, parts: &[&[u8]]) -> io::Result<bool> {
        let written = match parts {
            [one] => (&self.file).write(one),
            _ => {
                let slices: Vec<io::IoSlice<'_>> = parts.iter().map(|p| io::IoSlice::new(p)).collect();
                (&self.file).write_vectored(&slices)
            }
        };
        match written {
            Ok(_) => Ok(true),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
