//! Network namespaces, veth pairs and bounded external commands for the
//! real-peer tests, plus the rule for when those tests skip.
//!
//! Everything created here is named from [`unique_tag`] so that parallel tests
//! and concurrent runs never collide, and is removed in `Drop` (also while a
//! failed test unwinds).

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Set to `1` (CI does) to turn every skip into a failure.
pub const REQUIRE_REAL_PEER: &str = "OVPN_DCO_REQUIRE_REAL_PEER";

/// Upper bound for one short administrative command (`ip`, `openssl`).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

/// How often bounded waits look again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Why this machine cannot run the real-peer tests, or `None` if it can.
pub fn missing_prerequisite() -> Option<String> {
    // SAFETY: geteuid has no preconditions and touches no memory of ours.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root (network namespaces and TUN need it)".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun is missing".into());
    }
    for (tool, args) in [
        ("ip", &["netns", "list"][..]),
        ("openvpn", &["--version"][..]),
        ("openssl", &["version"][..]),
        ("ping", &["-V"][..]),
    ] {
        let mut cmd = Command::new(tool);
        cmd.args(args);
        // `openvpn --version` exits with status 1 by design: only a failure to
        // start at all means the tool is missing.
        if let Err(e) = run_bounded(&mut cmd, COMMAND_TIMEOUT) {
            if e.starts_with("cannot start") || e.contains("timed out") {
                return Some(format!("`{tool}` is not usable: {e}"));
            }
            if tool == "ip" {
                return Some(format!("`ip netns` does not work: {e}"));
            }
        }
    }
    // `ip netns list` works unprivileged; creating one is the real test.
    let probe = format!("{}p", unique_tag());
    if let Err(e) = NetNs::create(&probe) {
        return Some(format!("cannot create a network namespace: {e}"));
    }
    if let Err(e) = File::options().read(true).write(true).open("/dev/net/tun") {
        return Some(format!("cannot open /dev/net/tun: {e}"));
    }
    None
}

/// Whether a missing prerequisite must fail the test instead of skipping it.
pub fn real_peer_required() -> bool {
    std::env::var(REQUIRE_REAL_PEER).is_ok_and(|v| v == "1")
}

/// Reports a skip, or panics when [`REQUIRE_REAL_PEER`] is set.
pub fn skip(test: &str, reason: &str) {
    if real_peer_required() {
        panic!("{test}: cannot run against real OpenVPN ({reason}) and {REQUIRE_REAL_PEER}=1 forbids skipping");
    }
    eprintln!("SKIP {test}: {reason} (set {REQUIRE_REAL_PEER}=1 to make this a failure)");
}

/// A short name unique to this process and call: `ovd<pid><n>`, at most 13
/// characters so that suffixed interface names stay within IFNAMSIZ - 1 (15).
pub fn unique_tag() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // pid_max is at most 2^22 (7 digits); two digits of counter keep it short.
    format!("ovd{}{}", std::process::id() % 10_000_000, n % 100)
}

/// Runs a command to completion within `timeout`; stdout on success, a
/// message with the command line, status and stderr otherwise.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Result<String, String> {
    let line = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {line}: {e}"))?;
    // Readers on their own threads so a chatty command cannot block on a full pipe.
    let mut out = child.stdout.take().expect("stdout is piped");
    let mut err = child.stderr.take().expect("stderr is piped");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(POLL_INTERVAL),
            Err(e) => return Err(format!("waiting for {line}: {e}")),
        }
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    match status {
        Some(s) if s.success() => Ok(stdout),
        Some(s) => Err(format!("{line} failed ({s}):\n{stderr}{stdout}")),
        None => Err(format!("{line} timed out after {timeout:?}:\n{stderr}{stdout}")),
    }
}

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates the namespace with its loopback up and IPv6 off, so that the
    /// only traffic in it is what a test sends (no router solicitations or
    /// MLD reports from link-local addresses).
    pub fn create(name: &str) -> Result<NetNs, String> {
        run_bounded(Command::new("ip").args(["netns", "add", name]), COMMAND_TIMEOUT)?;
        let ns = NetNs { name: name.to_owned() };
        ns.ip(&["link", "set", "lo", "up"])?;
        ns.run(|| {
            for conf in ["all", "default"] {
                // Absent without IPv6 support, which is just as quiet.
                let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6"), "1");
            }
        })?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <ns> <args>`.
    pub fn ip(&self, args: &[&str]) -> Result<String, String> {
        run_bounded(Command::new("ip").arg("-n").arg(&self.name).args(args), COMMAND_TIMEOUT)
    }

    /// A command that runs `program` inside the namespace (`ip netns exec`
    /// execs it, so the child's pid is the program's).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs `f` on a fresh thread that has entered the namespace: sockets and
    /// TUN devices it opens belong to the namespace and keep working from any
    /// thread afterwards.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, String> {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).map_err(|e| format!("open {path}: {e}"))?;
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: `file` is an open namespace file for the duration of
                // the call; setns changes only this thread's network namespace,
                // and the thread ends when `f` returns.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(format!("setns({path}): {}", std::io::Error::last_os_error()));
                }
                Ok(f())
            })
            .join()
            .map_err(|_| format!("thread in namespace {} panicked", self.name))?
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(e) = run_bounded(Command::new("ip").args(["netns", "del", &self.name]), COMMAND_TIMEOUT) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// Joins two namespaces with a veth pair and gives each end an IPv4
/// address (`addr/prefix`). The pair disappears with either namespace.
pub fn veth_pair(a: (&NetNs, &str, &str), b: (&NetNs, &str, &str)) -> Result<(), String> {
    let ((a_ns, a_if, a_addr), (b_ns, b_if, b_addr)) = (a, b);
    run_bounded(
        Command::new("ip").args([
            "link",
            "add",
            a_if,
            "netns",
            a_ns.name(),
            "type",
            "veth",
            "peer",
            "name",
            b_if,
            "netns",
            b_ns.name(),
        ]),
        COMMAND_TIMEOUT,
    )?;
    for (ns, dev, addr) in [(a_ns, a_if, a_addr), (b_ns, b_if, b_addr)] {
        ns.ip(&["addr", "add", addr, "dev", dev])?;
        ns.ip(&["link", "set", dev, "up"])?;
    }
    Ok(())
}

/// A private temporary directory (mode 0700: it holds private keys), removed
/// on drop unless `OVPN_DCO_KEEP_WORK=1`.
pub struct WorkDir {
    path: std::path::PathBuf,
}

impl WorkDir {
    pub fn create(tag: &str) -> Result<WorkDir, String> {
        use std::os::unix::fs::DirBuilderExt;
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!("ovpn-dco-{tag}-{nanos:08x}"));
        std::fs::DirBuilder::new().mode(0o700).create(&path).map_err(|e| format!("mkdir {}: {e}", path.display()))?;
        Ok(WorkDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if std::env::var("OVPN_DCO_KEEP_WORK").is_ok_and(|v| v == "1") {
            eprintln!("kept work directory {}", self.path.display());
        } else if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("cleanup: rm -r {}: {e}", self.path.display());
        }
    }
}
