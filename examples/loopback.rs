//! The driver's main job on Linux, no root needed: two driver instances in
//! the host model (NetAdapterCx and WSK played in user mode, every
//! ownership rule checked) over real UDP sockets on 127.0.0.1, pushing
//! tunnel traffic both ways.
//!
//! `cargo run --release --example loopback -- [--seconds N] [--size N] [--cipher aes-256-gcm|chacha20-poly1305]`
//!
//! Prints throughput, copies per packet and the verifiers' status every
//! second, then a summary. Exits non-zero if a verifier reports anything or
//! a delivered packet differs from what was sent.

#[cfg(target_os = "linux")]
#[path = "../benches/common/p2p.rs"]
mod p2p;

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("the loopback example runs the Linux host model only");
}

#[cfg(target_os = "linux")]
fn main() {
    std::process::exit(run::main());
}

#[cfg(target_os = "linux")]
mod run {
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    use ovpn_dco::crypto::Cipher;
    use ovpn_dco::os::host::wsk::Network;

    use super::p2p::{Node, Pair, Setup};

    struct Options {
        seconds: u64,
        size: usize,
        cipher: Cipher,
    }

    fn usage() -> ! {
        eprintln!("usage: loopback [--seconds N] [--size 28..=1500] [--cipher aes-256-gcm|chacha20-poly1305]");
        std::process::exit(2);
    }

    fn options() -> Options {
        let mut o = Options { seconds: 5, size: 1400, cipher: Cipher::AesGcm };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut value = || args.next().unwrap_or_else(|| usage());
            match a.as_str() {
                "--seconds" => o.seconds = value().parse().unwrap_or_else(|_| usage()),
                "--size" => o.size = value().parse().unwrap_or_else(|_| usage()),
                "--cipher" => {
                    o.cipher = match value().as_str() {
                        "aes-256-gcm" => Cipher::AesGcm,
                        "chacha20-poly1305" => Cipher::ChaCha20Poly1305,
                        _ => usage(),
                    }
                }
                _ => usage(),
            }
        }
        // An IPv4/UDP packet with an id (28 bytes) up to the adapter's MTU.
        if !(28..=1500).contains(&o.size) {
            usage();
        }
        o
    }

    /// What one direction delivered so far.
    #[derive(Clone, Copy, Default)]
    struct Count {
        packets: u64,
        bytes: u64,
        copied: u64,
    }

    fn count(to: &Node) -> Count {
        Count {
            packets: to.received.packets.load(Ordering::Relaxed),
            bytes: to.received.bytes.load(Ordering::Relaxed),
            copied: to.copied_bytes(),
        }
    }

    /// Violations so far (leaks are only known at teardown) and bad bytes.
    fn trouble(pair: &Pair) -> u64 {
        let mut n = pair.wsk_violations().len() as u64;
        for node in [&pair.a, &pair.b] {
            n += node.violations() as u64;
            n += node.received.mismatched.load(Ordering::Relaxed);
            n += node.received.duplicates.load(Ordering::Relaxed);
        }
        n
    }

    fn rate(packets: u64, bytes: u64, secs: f64) -> String {
        format!("{:>8.0} pkt/s {:>6.3} Gbit/s", packets as f64 / secs, bytes as f64 * 8.0 / secs / 1e9)
    }

    pub fn main() -> i32 {
        let o = options();
        let cipher = match o.cipher {
            Cipher::AesGcm => "AES-256-GCM",
            Cipher::ChaCha20Poly1305 => "ChaCha20-Poly1305",
        };
        let pair = Pair::new(&Setup { network: Network::Real, cipher: o.cipher, size: o.size });
        println!(
            "two driver instances over UDP 127.0.0.1, {cipher}, {}-byte inner packets both ways, {} s",
            o.size, o.seconds
        );
        let start = Instant::now();
        pair.a.start_sending(o.size);
        pair.b.start_sending(o.size);
        let (mut last_ab, mut last_ba, mut last_t) = (Count::default(), Count::default(), start);
        for second in 1..=o.seconds {
            std::thread::sleep((start + Duration::from_secs(second)).saturating_duration_since(Instant::now()));
            let (ab, ba, now) = (count(&pair.b), count(&pair.a), Instant::now());
            let secs = (now - last_t).as_secs_f64();
            let (dp, db) = (ab.packets - last_ab.packets + ba.packets - last_ba.packets, ab.bytes - last_ab.bytes);
            let copies =
                (ab.copied + ba.copied - last_ab.copied - last_ba.copied) as f64 / (dp.max(1) * o.size as u64) as f64;
            println!(
                "{second:>3}s  A->B {}  B->A {}  copies/pkt {copies:.3}  verifier: {}",
                rate(ab.packets - last_ab.packets, db, secs),
                rate(ba.packets - last_ba.packets, ba.bytes - last_ba.bytes, secs),
                match trouble(&pair) {
                    0 => "clean".to_string(),
                    n => format!("{n} problems"),
                }
            );
            (last_ab, last_ba, last_t) = (ab, ba, now);
        }
        pair.a.stop_sending();
        pair.b.stop_sending();
        let elapsed = start.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_millis(200));
        let (ab, ba) = (count(&pair.b), count(&pair.a));
        let (sent_ab, sent_ba) = (pair.a.generated.load(Ordering::Relaxed), pair.b.generated.load(Ordering::Relaxed));
        let copied = ab.copied + ba.copied;
        let drops = format!("A [{}] B [{}]", pair.a.drops(), pair.b.drops());
        let problems = pair.finish();
        println!("summary over {elapsed:.1} s:");
        println!("  A->B {}  delivered {} of {sent_ab}", rate(ab.packets, ab.bytes, elapsed), ab.packets);
        println!("  B->A {}  delivered {} of {sent_ba}", rate(ba.packets, ba.bytes, elapsed), ba.packets);
        println!("  both {}", rate(ab.packets + ba.packets, ab.bytes + ba.bytes, elapsed));
        println!(
            "  copies per packet {:.3} (bytes the data paths copied / delivered bytes); drops {drops}",
            copied as f64 / (ab.bytes + ba.bytes).max(1) as f64
        );
        println!("  every delivered byte checked against what was sent; what was not delivered was lost in");
        println!("  UDP socket or WSK receive buffers (no flow control on UDP), not dropped by a data path");
        if ab.packets == 0 || ba.packets == 0 {
            println!("  FAILED: a direction delivered nothing");
            return 1;
        }
        if problems.is_empty() {
            println!("  verifier: clean (NetAdapterCx and WSK: no violations, no leaks, no byte mismatches)");
            0
        } else {
            println!("  verifier: {} problems", problems.len());
            for p in &problems {
                println!("    {p}");
            }
            1
        }
    }
}
