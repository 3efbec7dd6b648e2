//! Data-path throughput against the raw AEAD it is built on.
//!
//! `cargo bench --bench datapath [-- --seconds S --warmup S --sizes 64,512,1400 --no-udp --direct-only
//! --batch N --full-check --cipher aes-256-gcm|chacha20-poly1305 --repeat N --slices N]`
//!
//! For each cipher (AES-256-GCM, ChaCha20-Poly1305) and inner packet size:
//! - raw: `HostKey::seal_in_place` + `open_in_place` of one packet-sized
//!   buffer, with the data channel's nonce (packet id ‖ 8-byte implicit IV)
//!   and additional data (4-byte P_DATA_V2 header ‖ packet id), in a loop;
//! - raw, same buffers (a second baseline, printed beside the first): the
//!   same, but per round of `--batch` packets an out-of-place `seal` (as TX
//!   calls it) from that many inner packets into send-slot-sized buffers,
//!   then `open_in_place` of each there (as RX does);
//! - floor (a third): raw, same buffers plus the wire's copy of each sealed
//!   datagram into a receive buffer where it is opened: what any data path
//!   over this backend and this wire must do; path minus floor is the
//!   driver's own cost per packet (at most: the direct cell's minimal OS,
//!   its ring and indication bookkeeping and the upper layer's sampled
//!   check, counts there too);
//! - direct: the data path's own code alone: two data-path instances driven
//!   on this thread by a minimal OS that checks nothing (rings with the real
//!   layout, a transport of preallocated send slots, one memcpy per datagram
//!   onto the wire), A's TX queue to B's RX queue in batches, B's upper
//!   layer checking what arrives (`common/direct.rs`);
//! - loopback: two data-path instances (the NetAdapterCx model over the
//!   in-memory WSK loopback, no syscalls), node A sending to node B as fast
//!   as its TX ring takes packets, B's upper layer checking every byte;
//! - udp: the same over real UDP sockets on 127.0.0.1.
//!
//! The whole process is pinned to one CPU before any thread starts, so
//! every figure is one core's. Each cell warms up, then counts delivered
//! packets over a fixed time; the raw baselines and the direct cell take
//! that time in turns, in `--slices` slices each (default 20), so the
//! ratios compare cells that ran under the same conditions of a shared
//! machine. CPU time (getrusage) is reported beside wall
//! time because the model's threads share that core with whatever else the
//! machine runs. Every verifier check of the model cells stays on; the run
//! ends with both verifiers' status (and the direct cells' own checks) and
//! fails if anything was found.

#[cfg(target_os = "linux")]
#[path = "common/p2p.rs"]
mod p2p;

#[cfg(target_os = "linux")]
#[path = "common/direct.rs"]
mod direct;

/// Counts allocations per thread, so the direct cells can show that their
/// timed loop allocates nothing.
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: direct::Counting = direct::Counting;

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("the data-path benchmark runs the Linux host model only");
}

#[cfg(target_os = "linux")]
fn main() {
    bench::main();
}

#[cfg(target_os = "linux")]
mod bench {
    use std::hint::black_box;
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    use ovpn_dco::crypto::host::HostCrypto;
    use ovpn_dco::crypto::{AeadKey, Cipher, CryptoProvider};
    use ovpn_dco::os::SEND_SLOT_SIZE;
    use ovpn_dco::os::host::wsk::Network;

    use super::direct::{self, Check, DirectCell, DirectSetup};
    use super::p2p::{self, Pair, Setup};

    struct Options {
        seconds: f64,
        warmup: f64,
        sizes: Vec<usize>,
        udp: bool,
        /// Skip the raw AEAD cells (for profiling the path alone).
        raw: bool,
        /// Only the direct cells (and raw, their baseline): no model.
        direct_only: bool,
        /// Packets per direct round.
        batch: usize,
        check: Check,
        ciphers: Vec<Cipher>,
        /// Repetitions of every cell, reported as medians.
        repeat: usize,
        /// Slices each raw/direct cell's measured time is cut into, taken
        /// in turns.
        slices: u32,
    }

    fn options() -> Options {
        let mut o = Options {
            seconds: 2.0,
            warmup: 0.5,
            sizes: vec![64, 512, 1400],
            udp: true,
            raw: true,
            direct_only: false,
            batch: 64,
            check: Check::Sampled,
            ciphers: vec![Cipher::AesGcm, Cipher::ChaCha20Poly1305],
            repeat: 1,
            slices: 20,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            match a.as_str() {
                "--seconds" => o.seconds = args.next().and_then(|v| v.parse().ok()).expect("--seconds S"),
                "--warmup" => o.warmup = args.next().and_then(|v| v.parse().ok()).expect("--warmup S"),
                "--sizes" => {
                    o.sizes = args
                        .next()
                        .map(|v| v.split(',').map(|s| s.parse().expect("--sizes 64,512,1400")).collect())
                        .expect("--sizes 64,512,1400")
                }
                "--no-udp" => o.udp = false,
                "--no-raw" => o.raw = false,
                "--direct-only" => o.direct_only = true,
                "--batch" => {
                    o.batch = args.next().and_then(|v| v.parse().ok()).filter(|&b| b > 0).expect("--batch N (N > 0)")
                }
                "--full-check" => o.check = Check::Full,
                "--slices" => {
                    o.slices = args.next().and_then(|v| v.parse().ok()).filter(|&n| n > 0).expect("--slices N (N > 0)")
                }
                "--repeat" => {
                    o.repeat = args.next().and_then(|v| v.parse().ok()).filter(|&n| n > 0).expect("--repeat N (N > 0)")
                }
                "--cipher" => {
                    o.ciphers = match args.next().as_deref() {
                        Some("aes-256-gcm") => vec![Cipher::AesGcm],
                        Some("chacha20-poly1305") => vec![Cipher::ChaCha20Poly1305],
                        _ => panic!("--cipher aes-256-gcm|chacha20-poly1305"),
                    }
                }
                // cargo bench passes --bench; filters are not supported.
                _ => {}
            }
        }
        o
    }

    /// Packets per second over wall time and over CPU time.
    #[derive(Clone, Copy, Default)]
    struct Rate {
        packets: u64,
        wall: Duration,
        cpu: Duration,
    }

    impl Rate {
        fn pps(&self) -> f64 {
            self.packets as f64 / self.wall.as_secs_f64()
        }
        fn pps_cpu(&self) -> f64 {
            self.packets as f64 / self.cpu.as_secs_f64().max(1e-9)
        }
    }

    /// The median of `values` (the mean of the middle two if even).
    fn median(mut values: Vec<f64>) -> f64 {
        values.sort_by(f64::total_cmp);
        match values.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => values[n / 2],
            n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
        }
    }

    /// The nonce (packet id ‖ 8-byte implicit IV) and additional data
    /// (P_DATA_V2 header ‖ packet id) of data-channel packet `id`.
    fn frame(id: u32, tail: &[u8; 8]) -> ([u8; 12], [u8; 8]) {
        let mut nonce = [0u8; 12];
        nonce[..4].copy_from_slice(&id.to_be_bytes());
        nonce[4..].copy_from_slice(tail);
        let mut ad = [0x48, 0, 0, 1, 0, 0, 0, 0];
        ad[4..].copy_from_slice(&id.to_be_bytes());
        (nonce, ad)
    }

    /// A cell the bench can measure in turns with others: one round at a
    /// time, each returning the packets it carried.
    trait Cell {
        fn round(&mut self) -> u64;
    }

    /// Runs every cell's rounds for `warmup` each.
    fn warm(cells: &mut [&mut dyn Cell], warmup: Duration) {
        for cell in cells.iter_mut() {
            let until = Instant::now() + warmup;
            while Instant::now() < until {
                cell.round();
            }
        }
    }

    /// Measures the cells in turns: `run` each, cut into `slices` slices
    /// taken round-robin, so that a slow spell of a shared machine falls
    /// on every cell alike instead of on whichever ran then. Adds to
    /// `rates` (one per cell); allocates nothing.
    fn measure(cells: &mut [&mut dyn Cell], run: Duration, slices: u32, rates: &mut [Rate]) {
        let slice = run / slices.max(1);
        for _ in 0..slices.max(1) {
            for (cell, rate) in cells.iter_mut().zip(rates.iter_mut()) {
                let (start, cpu0) = (Instant::now(), p2p::cpu_time());
                let mut packets = 0u64;
                while start.elapsed() < slice {
                    packets += cell.round();
                }
                rate.packets += packets;
                rate.wall += start.elapsed();
                rate.cpu += p2p::cpu_time() - cpu0;
            }
        }
    }

    /// Nanoseconds per uncontended locked read-modify-write on this thread
    /// (the unit of the data path's per-packet bookkeeping: every counter
    /// bump, reference count, flag swap, and two per spin lock), measured
    /// as a chain of `fetch_add`s on one cache line.
    fn locked_rmw_ns() -> f64 {
        const OPS: u32 = 20_000_000;
        let counter = std::sync::atomic::AtomicU64::new(0);
        let chain = |ops: u32| {
            for _ in 0..ops {
                black_box(&counter).fetch_add(1, Ordering::AcqRel);
            }
        };
        chain(OPS / 10); // warm-up: clock up, line in the cache
        let start = Instant::now();
        chain(OPS);
        let ns = start.elapsed().as_nanos() as f64 / f64::from(OPS);
        assert_eq!(counter.load(Ordering::Relaxed), u64::from(OPS + OPS / 10));
        ns
    }

    /// Seal + open of one packet, as the data channel frames it, in a loop.
    struct RawCell {
        key: <HostCrypto as CryptoProvider>::Key,
        data: Vec<u8>,
        tag: [u8; 16],
        id: u32,
    }

    impl RawCell {
        fn new(cipher: Cipher, size: usize) -> Self {
            let key = HostCrypto.new_key(cipher, &[0x5a; 32]).expect("key");
            Self { key, data: p2p::template(size), tag: [0; 16], id: 0 }
        }
    }

    impl Cell for RawCell {
        fn round(&mut self) -> u64 {
            const BATCH: u32 = 256;
            let tail = [0xa5u8; 8];
            for _ in 0..BATCH {
                self.id = self.id.wrapping_add(1);
                let (nonce, ad) = frame(self.id, &tail);
                self.key.seal_in_place(&nonce, &ad, &mut self.data, &mut self.tag).expect("seal");
                self.key.open_in_place(&nonce, &ad, black_box(&mut self.data), &self.tag).expect("open");
            }
            u64::from(BATCH)
        }
    }

    /// The second baseline, "raw, same buffers": the same backend and frame
    /// shapes, but called the way the data path calls it and over as much
    /// memory as the direct cell touches. Each round seals `batch` packets
    /// out of place (`seal`, as TX does) from `batch` separate inner packets
    /// into `batch` send-slot-sized buffers, after the 24 bytes of header,
    /// packet id and tag, then opens each of them in place (`open_in_place`,
    /// as RX does).
    ///
    /// With `wire`, the third baseline, "floor": between the two, each sealed
    /// datagram is copied into its own receive buffer (as the direct cell's
    /// wire does) and opened there. That is all the work the direct cell
    /// must do whatever the driver does, so path minus floor is what the
    /// driver's own code costs per packet, with the direct cell's minimal
    /// OS (rings, indications, the sampled check) on top.
    struct SameCell {
        key: <HostCrypto as CryptoProvider>::Key,
        inner: Vec<Vec<u8>>,
        slots: Vec<[u8; SEND_SLOT_SIZE]>,
        received: Vec<[u8; SEND_SLOT_SIZE]>,
        tags: Vec<[u8; 16]>,
        size: usize,
        wire: bool,
        id: u32,
    }

    /// Header, packet id and tag in front of the ciphertext.
    const HEAD: usize = 24;

    impl SameCell {
        fn new(cipher: Cipher, size: usize, batch: usize, wire: bool) -> Self {
            assert!(HEAD + size <= SEND_SLOT_SIZE, "a packet fits a send slot");
            let inner = (0..batch)
                .map(|k| {
                    let mut p = p2p::template(size);
                    p2p::stamp(&mut p, k as u32);
                    p
                })
                .collect();
            Self {
                key: HostCrypto.new_key(cipher, &[0x5a; 32]).expect("key"),
                inner,
                slots: vec![[0u8; SEND_SLOT_SIZE]; batch],
                received: vec![[0u8; SEND_SLOT_SIZE]; if wire { batch } else { 0 }],
                tags: vec![[0u8; 16]; batch],
                size,
                wire,
                id: 0,
            }
        }

        /// Every byte of the last round came back as it was sent.
        fn check(&self) {
            let (size, opened) = (self.size, if self.wire { &self.received } else { &self.slots });
            for (packet, buffer) in self.inner.iter().zip(opened.iter()) {
                assert_eq!(&buffer[HEAD..HEAD + size], &packet[..], "raw, same buffers: a packet did not round-trip");
            }
        }
    }

    impl Cell for SameCell {
        fn round(&mut self) -> u64 {
            let (tail, size) = ([0xa5u8; 8], self.size);
            let first = self.id;
            for ((packet, slot), tag) in self.inner.iter().zip(self.slots.iter_mut()).zip(self.tags.iter_mut()) {
                self.id = self.id.wrapping_add(1);
                let (nonce, ad) = frame(self.id, &tail);
                self.key.seal(&nonce, &ad, packet, &mut slot[HEAD..HEAD + size], tag).expect("seal");
            }
            let opened = if self.wire {
                for (slot, buffer) in self.slots.iter().zip(self.received.iter_mut()) {
                    buffer[..HEAD + size].copy_from_slice(black_box(&slot[..HEAD + size]));
                }
                &mut self.received
            } else {
                &mut self.slots
            };
            let mut at = first;
            for (buffer, tag) in opened.iter_mut().zip(self.tags.iter()) {
                at = at.wrapping_add(1);
                let (nonce, ad) = frame(at, &tail);
                self.key.open_in_place(&nonce, &ad, black_box(&mut buffer[HEAD..HEAD + size]), tag).expect("open");
            }
            self.inner.len() as u64
        }
    }

    impl Cell for DirectCell {
        fn round(&mut self) -> u64 {
            DirectCell::round(self)
        }
    }

    /// One direction through both data paths.
    struct PathResult {
        rate: Rate,
        /// Bytes the data paths copied per delivered inner byte.
        copies_per_byte: f64,
        /// Sent but not delivered, over the whole run.
        lost: u64,
        sent: u64,
        /// Drop counters of both data paths, where the losses went.
        drops: String,
        problems: Vec<String>,
    }

    fn full_path(network: Network, cipher: Cipher, size: usize, warmup: Duration, run: Duration) -> PathResult {
        let pair = Pair::new(&Setup { network, cipher, size });
        let rx = &pair.b.received;
        pair.a.start_sending(size);
        std::thread::sleep(warmup);
        let (p0, b0, c0) =
            (rx.packets.load(Ordering::Relaxed), rx.bytes.load(Ordering::Relaxed), pair.b.copied_bytes());
        let (start, cpu0) = (Instant::now(), p2p::cpu_time());
        std::thread::sleep(run);
        let (p1, b1, c1) =
            (rx.packets.load(Ordering::Relaxed), rx.bytes.load(Ordering::Relaxed), pair.b.copied_bytes());
        let rate = Rate { packets: p1 - p0, wall: start.elapsed(), cpu: p2p::cpu_time() - cpu0 };
        let copied = (c1 - c0) + pair.a.copied_bytes();
        pair.a.stop_sending();
        // Let what is in flight arrive before counting losses.
        std::thread::sleep(Duration::from_millis(200));
        let sent = pair.a.generated.load(Ordering::Relaxed);
        let lost = sent.saturating_sub(rx.packets.load(Ordering::Relaxed));
        let drops = format!("A [{}] B [{}]", pair.a.drops(), pair.b.drops());
        let mut problems = pair.finish();
        if p1 == p0 {
            problems.push("nothing delivered".into());
        }
        PathResult { rate, copies_per_byte: copied as f64 / (b1 - b0).max(1) as f64, lost, sent, drops, problems }
    }

    fn name(c: Cipher) -> &'static str {
        match c {
            Cipher::AesGcm => "AES-256-GCM",
            Cipher::ChaCha20Poly1305 => "ChaCha20-Poly1305",
        }
    }

    fn cpu_model() -> String {
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
            })
            .unwrap_or_else(|| "unknown CPU".into())
    }

    /// One row of the table: a path measured against the raw AEAD.
    struct Row {
        path: &'static str,
        rate: Rate,
        copies_per_byte: f64,
        lost: u64,
        sent: u64,
    }

    /// The raw baselines and the direct cell, measured in turns (`measure`);
    /// without `raw`, the direct cell alone.
    fn interleaved_cells(o: &Options, cipher: Cipher, size: usize, warmup: Duration, run: Duration) -> Interleaved {
        let setup = DirectSetup { cipher, size, batch: o.batch, check: o.check };
        let mut direct = DirectCell::new(&setup);
        let (mut raw, mut same, mut floor) = (
            RawCell::new(cipher, size),
            SameCell::new(cipher, size, o.batch, false),
            SameCell::new(cipher, size, o.batch, true),
        );
        // The baselines (if asked for) first, the direct cell last.
        fn cells<'a>(
            with_raw: bool,
            raw: &'a mut RawCell,
            same: &'a mut SameCell,
            floor: &'a mut SameCell,
            direct: &'a mut DirectCell,
        ) -> Vec<&'a mut dyn Cell> {
            let mut v: Vec<&mut dyn Cell> = Vec::new();
            if with_raw {
                v.extend([raw as &mut dyn Cell, same, floor]);
            }
            v.push(direct);
            v
        }
        warm(&mut cells(o.raw, &mut raw, &mut same, &mut floor, &mut direct), warmup);
        // No cell allocates in its rounds: the direct cell's data paths, in
        // particular, allocate nothing per packet.
        let allocations;
        let mut rates = vec![Rate::default(); if o.raw { 4 } else { 1 }];
        let copied0 = direct.copied_bytes();
        {
            let mut list = cells(o.raw, &mut raw, &mut same, &mut floor, &mut direct);
            let allocations0 = direct::allocations();
            measure(&mut list, run, o.slices, &mut rates);
            allocations = direct::allocations() - allocations0;
        }
        let copied = direct.copied_bytes() - copied0;
        let path = rates.pop().unwrap_or_default();
        if o.raw {
            same.check();
            floor.check();
        }
        let r = direct.finish(path.packets, copied, allocations);
        let baseline = |k: usize| rates.get(k).copied().unwrap_or_default();
        Interleaved {
            raw: baseline(0),
            same: baseline(1),
            floor: baseline(2),
            direct: Row { path: "direct", rate: path, copies_per_byte: r.copies_per_byte, lost: 0, sent: path.packets },
            problems: r.problems,
        }
    }

    /// What the cells measured in turns found.
    struct Interleaved {
        raw: Rate,
        same: Rate,
        floor: Rate,
        direct: Row,
        problems: Vec<String>,
    }

    pub fn main() {
        let o = options();
        let cpu = p2p::pin_to_one_cpu();
        let (warmup, run) = (Duration::from_secs_f64(o.warmup), Duration::from_secs_f64(o.seconds));
        println!("# data path vs raw AEAD, one core");
        println!(
            "# {} ; process pinned to CPU {} (all threads); warm-up {:.1} s, then {:.1} s per cell",
            cpu_model(),
            cpu.map_or("none (sched_setaffinity refused)".to_string(), |c| c.to_string()),
            o.warmup,
            o.seconds
        );
        println!("# one uncontended locked read-modify-write on this CPU: {:.2} ns", locked_rmw_ns());
        println!("# raw: seal_in_place + open_in_place, 12-byte nonce (id || implicit IV), 8-byte AD, on this thread.");
        println!(
            "# raw same-buf: the same key, nonce and AD, but per round {} out-of-place seals (as TX calls it) from {}",
            o.batch, o.batch
        );
        println!("#   inner packets into send-slot-sized buffers, then open_in_place of each there (as RX does).");
        println!(
            "# direct: A's TX queue -> B's RX queue on this thread, {} packets per round, minimal OS (no checks",
            o.batch
        );
        println!(
            "#   but the upper layer's: {}); no allocation in the timed loop.",
            match o.check {
                Check::Sampled => "length, first and last 16 bytes of every packet, every byte of one per round",
                Check::Full => "every byte of every packet",
            }
        );
        if !o.direct_only {
            println!("# loopback/udp: node A -> node B through the host model, every delivered byte checked.");
            println!("#   Threads per node: NetAdapterCx RX poll + TX poll; WSK delivery + send (loopback) or");
            println!("#   recvmmsg + sendmmsg (udp); 8 threads time-share the one CPU; the main thread sleeps.");
        }
        println!(
            "# raw, same-buf, floor and direct are measured in turns: {} s each, cut into {} slices taken",
            o.seconds, o.slices
        );
        println!("#   round-robin, so a slow spell of the machine falls on all four alike.");
        if o.repeat > 1 {
            println!(
                "# {} repetitions, each measuring every baseline and path in turn; every column is the median,",
                o.repeat
            );
            println!("#   ratios paired within a repetition; lost/sent summed.");
        }
        println!("# pps/Gbit/s over wall time; 'cpu' columns over CPU time (getrusage, user+sys);");
        println!("# ratio = path pps / raw pps (wall), ratio cpu = the same per CPU-second (the headline);");
        println!("# same-buf µs/pkt, ratio cpu same-buf: the same against the 'raw, same buffers' baseline.");
        println!("# floor: 'raw, same buffers' plus the wire's copy of each datagram into a receive buffer, opened");
        println!("#   there: the work any data path over this backend and wire does. driver = path - floor");
        println!("#   (an upper bound: the direct cell's minimal OS and its check count there too).");
        println!("# µs/pkt = CPU time per packet (raw: one seal + one open; path: one packet A -> B).");
        println!();
        println!(
            "| cipher | size | raw pps | raw Gbit/s | raw µs/pkt | path | pps | Gbit/s | µs/pkt | cpu/wall | ratio | ratio cpu | same-buf µs/pkt | ratio cpu same-buf | floor µs/pkt | driver µs/pkt | copies/B | lost |"
        );
        println!("|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let mut problems = Vec::new();
        let mut notes = Vec::new();
        for &cipher in &o.ciphers {
            for &size in &o.sizes {
                // Each repetition measures every baseline and path once, in
                // turn, so a slow spell of the machine hits all of them.
                let mut reps = Vec::new();
                for _ in 0..o.repeat {
                    let Interleaved { raw, same, floor, direct, problems: found } =
                        interleaved_cells(&o, cipher, size, warmup, run);
                    problems.extend(found.into_iter().map(|p| format!("{} {size} direct: {p}", name(cipher))));
                    let mut rows = std::vec![direct];
                    let mut paths = Vec::new();
                    if !o.direct_only {
                        paths.push(("loopback", p2p::loopback()));
                        if o.udp {
                            paths.push(("udp", Network::Real));
                        }
                    }
                    for (path, network) in paths {
                        let r = full_path(network, cipher, size, warmup, run);
                        if r.lost > 0 {
                            notes.push(format!(
                                "{} {size} {path}: lost {} of {}; drops {}",
                                name(cipher),
                                r.lost,
                                r.sent,
                                r.drops
                            ));
                        }
                        problems.extend(r.problems.into_iter().map(|p| format!("{} {size} {path}: {p}", name(cipher))));
                        rows.push(Row {
                            path,
                            rate: r.rate,
                            copies_per_byte: r.copies_per_byte,
                            lost: r.lost,
                            sent: r.sent,
                        });
                    }
                    reps.push((raw, same, floor, rows));
                }
                let paths = reps.first().map_or(0, |r| r.3.len());
                for j in 0..paths {
                    // Every column is the median over the repetitions; the
                    // ratios pair each path with the baselines of its own
                    // repetition.
                    let m = |f: &dyn Fn(&Rate, &Rate, &Rate, &Row) -> f64| {
                        median(reps.iter().map(|(raw, same, floor, rows)| f(raw, same, floor, &rows[j])).collect())
                    };
                    let us = |r: &Rate| 1e6 / r.pps_cpu();
                    let path = reps[0].3[j].path;
                    let raw_pps = m(&|raw, _, _, _| raw.pps());
                    let pps = m(&|_, _, _, r| r.rate.pps());
                    println!(
                        "| {} | {size} | {:.0} | {:.2} | {:.3} | {} | {:.0} | {:.2} | {:.3} | {:.2} | {:.1}% | {:.1}% | {:.3} | {:.1}% | {:.3} | {:.3} | {:.3} | {}/{} |",
                        name(cipher),
                        raw_pps,
                        raw_pps * size as f64 * 8.0 / 1e9,
                        m(&|raw, _, _, _| us(raw)),
                        path,
                        pps,
                        pps * size as f64 * 8.0 / 1e9,
                        m(&|_, _, _, r| us(&r.rate)),
                        m(&|_, _, _, r| r.rate.cpu.as_secs_f64() / r.rate.wall.as_secs_f64()),
                        m(&|raw, _, _, r| 100.0 * r.rate.pps() / raw.pps()),
                        m(&|raw, _, _, r| 100.0 * r.rate.pps_cpu() / raw.pps_cpu()),
                        m(&|_, same, _, _| us(same)),
                        m(&|_, same, _, r| 100.0 * r.rate.pps_cpu() / same.pps_cpu()),
                        m(&|_, _, floor, _| us(floor)),
                        m(&|_, _, floor, r| us(&r.rate) - us(floor)),
                        m(&|_, _, _, r| r.copies_per_byte),
                        reps.iter().map(|r| r.3[j].lost).sum::<u64>(),
                        reps.iter().map(|r| r.3[j].sent).sum::<u64>(),
                    );
                }
            }
        }
        println!();
        for n in &notes {
            println!("{n}");
        }
        println!("copies/B: bytes the data paths copied (RX copy path + TX gathers) per delivered inner byte.");
        println!("Not counted: the wire's one write into the receive buffer (a NIC's DMA), and the host");
        println!("backend's copy inside seal() (ring has no out-of-place AEAD; CNG encrypts in one pass).");
        if problems.is_empty() {
            if o.direct_only {
                println!(
                    "checks: clean (direct: every round delivered its batch, matched, released; no drops, no leaks)"
                );
            } else {
                println!("verifier: clean (NetAdapterCx and WSK: no violations, no leaks; every byte matched)");
            }
        } else {
            println!("problems: {}", problems.len());
            for p in &problems {
                println!("  {p}");
            }
            std::process::exit(1);
        }
    }
}
