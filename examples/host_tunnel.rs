//! The host tunnel: a real point-to-point tunnel on Linux over the driver's
//! own data path (RX zero-copy and TX one-pass through the NetAdapterCx and
//! WSK models), between a TUN device and a UDP socket. Needs root (or
//! CAP_NET_ADMIN) for the TUN device.
//!
//! ```text
//! host_tunnel genkey [CIPHER] > tunnel.key          # AES-256-GCM by default
//! ip tuntap add dev ovpn0 mode tun && ip addr add 10.8.0.1/24 dev ovpn0 && ip link set ovpn0 up
//! host_tunnel run --tun ovpn0 --local 192.0.2.1:1194 --remote 192.0.2.2:1194 \
//!     --key tunnel.key --side a [--proto udp|tcp-client|tcp-server] [--ping 10] [--ping-timeout 60] \
//!     [--mss 1400] [--lean] [--no-offload] [--stats SECS]
//! ```
//!
//! The other end runs the same with `--side b` and the addresses swapped.
//! Over TCP one end is `tcp-client` (it connects to `--remote`, as
//! ovpn-dco-win does) and the other `tcp-server` (it accepts on `--local`
//! and hands the stream to its adapter through a loopback splice, since the
//! adapter itself only connects). `--no-offload` opens the TUN device
//! without TCP segmentation/coalescing (`virtio_net_hdr`), one packet per
//! read and write.
//! SIGINT/SIGTERM stop it; it then prints its counters and whatever the
//! models' verifiers found (and exits 1 if they found anything). `--lean`
//! turns off the WSK model's buffer poisoning and send fingerprints (see
//! `ovpn_dco::os::host::tunnel::Verification`), for benchmarks.
//!
//! An example rather than a `src/bin/` target: the package is a driver
//! (cdylib + rlib, no_std) whose Windows build has no host binary to make,
//! and examples are built only for the host, never packaged.

#[cfg(target_os = "linux")]
mod linux {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use ovpn_dco::os::host::tunnel::keyfile::{self, Side};
    use ovpn_dco::os::host::tunnel::{HostTunnel, TunnelConfig, TunnelProto, Upper, Verification};
    use ovpn_dco::os::host::wsk::Network;
    use ovpn_dco::proto::{KeyId, PeerId};

    static STOP: AtomicBool = AtomicBool::new(false);

    extern "C" fn on_signal(_: libc::c_int) {
        STOP.store(true, Ordering::Relaxed);
    }

    fn usage() -> ! {
        eprintln!(
            "usage: host_tunnel genkey [CIPHER]\n       host_tunnel run --tun NAME --local ADDR:PORT --remote ADDR:PORT \
             --key FILE --side a|b [--proto udp|tcp-client|tcp-server] [--ping SECS] [--ping-timeout SECS] \
             [--mss MSS] [--lean] [--no-offload] [--stats SECS]"
        );
        std::process::exit(2)
    }

    fn genkey(args: &[String]) {
        let cipher = args.first().map_or("AES-256-GCM", String::as_str);
        let mut random = |b: &mut [u8]| {
            use ring::rand::SecureRandom;
            ring::rand::SystemRandom::new().fill(b).expect("the system random generator");
        };
        let (peer, key) = (PeerId::new(1).expect("1 is a peer id"), KeyId::new(0).expect("0 is a key id"));
        match keyfile::generate(cipher, peer, key, &mut random) {
            Some(text) => print!("{text}"),
            None => {
                eprintln!("unknown cipher {cipher}");
                std::process::exit(2)
            }
        }
    }

    fn run(args: &[String]) {
        let mut it = args.iter();
        let (mut tun, mut local, mut remote, mut key, mut side) = (None, None, None, None, None);
        let (mut ping, mut timeout, mut mss, mut lean, mut every) = (10, 60, None, false, None);
        let mut proto = TunnelProto::Udp;
        let mut tun_offload = true;
        while let Some(flag) = it.next() {
            let mut value = || it.next().cloned().unwrap_or_else(|| usage());
            match flag.as_str() {
                "--tun" => tun = Some(value()),
                "--local" => local = value().parse::<SocketAddr>().ok(),
                "--remote" => remote = value().parse::<SocketAddr>().ok(),
                "--key" => key = Some(value()),
                "--side" => {
                    side = match value().as_str() {
                        "a" | "A" => Some(Side::A),
                        "b" | "B" => Some(Side::B),
                        _ => usage(),
                    }
                }
                "--proto" => {
                    proto = match value().as_str() {
                        "udp" => TunnelProto::Udp,
                        "tcp" | "tcp-client" => TunnelProto::TcpClient,
                        "tcp-server" => TunnelProto::TcpServer,
                        _ => usage(),
                    }
                }
                "--ping" => ping = value().parse().unwrap_or_else(|_| usage()),
                "--ping-timeout" => timeout = value().parse().unwrap_or_else(|_| usage()),
                "--mss" => mss = Some(value().parse().unwrap_or_else(|_| usage())),
                "--stats" => every = Some(Duration::from_secs(value().parse().unwrap_or_else(|_| usage()))),
                "--lean" => lean = true,
                "--no-offload" => tun_offload = false,
                _ => usage(),
            }
        }
        let (Some(tun), Some(local), Some(remote), Some(key), Some(side)) = (tun, local, remote, key, side) else {
            usage()
        };
        let text = std::fs::read_to_string(&key).unwrap_or_else(|e| {
            eprintln!("{key}: {e}");
            std::process::exit(1)
        });
        let keys = keyfile::parse(&text, side).unwrap_or_else(|e| {
            eprintln!("{key}: {e}");
            std::process::exit(1)
        });
        let config = TunnelConfig {
            upper: Upper::Tun(tun.clone()),
            proto,
            network: Network::Real,
            local,
            remote,
            keys,
            first_packet_id: 1,
            keepalive_interval: ping,
            keepalive_timeout: timeout,
            mss,
            tun_offload,
            verification: if lean { Verification::Lean } else { Verification::Full },
        };
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        unsafe {
            libc::signal(libc::SIGINT, on_signal as extern "C" fn(libc::c_int) as *const () as libc::sighandler_t);
            libc::signal(libc::SIGTERM, on_signal as extern "C" fn(libc::c_int) as *const () as libc::sighandler_t);
        }
        let tunnel = HostTunnel::start(&config).unwrap_or_else(|e| {
            eprintln!("host_tunnel: {e}");
            std::process::exit(1)
        });
        eprintln!("host_tunnel: {tun} {local} <-> {remote} ({proto:?}) up");
        let mut last = Instant::now();
        while !STOP.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
            if every.is_some_and(|e| last.elapsed() >= e) {
                last = Instant::now();
                eprintln!("host_tunnel: {:?}", tunnel.stats());
            }
        }
        let adapter = tunnel.adapter_stats();
        eprintln!("host_tunnel: drops: {}", tunnel.drop_summary());
        match tunnel.stop() {
            Ok(stats) => {
                eprintln!("host_tunnel: stopped clean: {stats:?}\nhost_tunnel: adapter {adapter:?}");
            }
            Err(e) => {
                eprintln!("host_tunnel: {e}");
                std::process::exit(1)
            }
        }
    }

    pub fn main() {
        let args: Vec<String> = std::env::args().skip(1).collect();
        match args.first().map(String::as_str) {
            Some("genkey") => genkey(&args[1..]),
            Some("run") => run(&args[1..]),
            _ => usage(),
        }
    }
}

#[cfg(target_os = "linux")]
fn main() {
    linux::main();
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("host_tunnel runs on Linux only (TUN device)");
}
