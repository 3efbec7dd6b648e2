//! A live OpenVPN 2.6 session between two network namespaces: Debian's
//! `openvpn` as server and as client, userspace data channel
//! (`--disable-dco`), TLS with a PKI made for this session only, and the
//! data-channel keys of both directions read from the client's log.
//!
//! What OpenVPN logs and where each value comes from (client log):
//! - `Outgoing/Incoming Data Channel: CIPHER KEY: <hex>` (verb 7): the keys;
//! - `ENCRYPT IV: <packet id 4><implicit IV 8>` and `DECRYPT IV: ...` (verb 9,
//!   one per packet): the implicit IVs, so a packet must have crossed in each
//!   direction before they can be read;
//! - `ENCRYPT AD: <P_DATA_V2 header 4><packet id 4>` (verb 9): key id and peer id;
//! - `Data Channel: cipher '<c>', peer-id: <n>` (verb 2): cross-check.
//!
//! After the keys are read both processes go down to `verb 3` through their
//! management sockets, so later traffic is not slowed by per-packet logging.

use super::capture::{Capture, Direction, udp_datagrams};
use super::netns::{COMMAND_TIMEOUT, NetNs, POLL_INTERVAL, WorkDir, run_bounded, unique_tag, veth_pair};
use ovpn_dco::crypto::Cipher;
use ovpn_dco::os::host::tunnel::TunnelKeys;
use ovpn_dco::os::host::tunnel::keyfile::DirectionSecret;
use ovpn_dco::proto::opcode::{DataHeader, P_DATA_V2};
use ovpn_dco::proto::{KeyId, PeerId};
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Server start-up to "Initialization Sequence Completed".
pub const SERVER_START_TIMEOUT: Duration = Duration::from_secs(20);
/// Client start-up including the TLS handshake.
pub const CLIENT_START_TIMEOUT: Duration = Duration::from_secs(30);
/// One management command's answer.
pub const MANAGEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Lines of each log shown in a failure message.
pub const LOG_TAIL_LINES: usize = 40;
/// Pings sent to make both implicit IVs appear in the client log.
const IV_PROBE_ATTEMPTS: u32 = 5;

/// The data ciphers the driver offloads that these tests run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataCipher {
    Aes128Gcm,
    Aes256Gcm,
    ChaCha20Poly1305,
}

impl DataCipher {
    /// The name `--data-ciphers` takes.
    pub fn openvpn_name(self) -> &'static str {
        match self {
            DataCipher::Aes128Gcm => "AES-128-GCM",
            DataCipher::Aes256Gcm => "AES-256-GCM",
            DataCipher::ChaCha20Poly1305 => "CHACHA20-POLY1305",
        }
    }

    pub fn cipher(self) -> Cipher {
        match self {
            DataCipher::Aes128Gcm | DataCipher::Aes256Gcm => Cipher::AesGcm,
            DataCipher::ChaCha20Poly1305 => Cipher::ChaCha20Poly1305,
        }
    }

    pub fn key_len(self) -> usize {
        match self {
            DataCipher::Aes128Gcm => 16,
            DataCipher::Aes256Gcm | DataCipher::ChaCha20Poly1305 => 32,
        }
    }
}

/// One direction's key as OVPN_KEY_DIRECTION carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectionKeys {
    /// Key bytes, zero-padded to 32; `key_len` of them are the key.
    pub key: [u8; 32],
    pub key_len: usize,
    /// The 8 bytes after the packet id in the nonce.
    pub implicit_iv: [u8; 8],
}

impl DirectionKeys {
    fn secret(&self) -> DirectionSecret {
        DirectionSecret { key: self.key, nonce_tail: self.implicit_iv }
    }
}

/// The data-channel keys of the session, named from the client's side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionKeys {
    pub cipher: DataCipher,
    pub peer_id: PeerId,
    pub key_id: KeyId,
    pub client_to_server: DirectionKeys,
    pub server_to_client: DirectionKeys,
}

impl SessionKeys {
    /// What the client holds, as NEW_KEY gives it (encrypts client to
    /// server).
    pub fn client_keys(&self) -> TunnelKeys {
        self.keys(&self.client_to_server, &self.server_to_client)
    }

    /// What the server holds (decrypts client to server).
    pub fn server_keys(&self) -> TunnelKeys {
        self.keys(&self.server_to_client, &self.client_to_server)
    }

    fn keys(&self, encrypt: &DirectionKeys, decrypt: &DirectionKeys) -> TunnelKeys {
        TunnelKeys {
            cipher: self.cipher.cipher(),
            key_len: self.cipher.key_len(),
            peer_id: self.peer_id,
            key_id: self.key_id,
            encrypt: encrypt.secret(),
            decrypt: decrypt.secret(),
        }
    }
}

/// Addresses of the session; the same in every session (each has its own
/// namespaces).
#[derive(Clone, Debug)]
pub struct Addresses {
    pub server_link: SocketAddrV4,
    pub client_link: SocketAddrV4,
    pub server_tun: Ipv4Addr,
    pub client_tun: Ipv4Addr,
    pub tun_prefix: u8,
}

impl Default for Addresses {
    fn default() -> Self {
        Addresses {
            server_link: SocketAddrV4::new(Ipv4Addr::new(10, 231, 0, 1), 1194),
            client_link: SocketAddrV4::new(Ipv4Addr::new(10, 231, 0, 2), 1195),
            server_tun: Ipv4Addr::new(10, 232, 0, 1),
            client_tun: Ipv4Addr::new(10, 232, 0, 2),
            tun_prefix: 24,
        }
    }
}

/// A running openvpn process with its log and management socket; killed on
/// drop.
pub struct OpenVpnProcess {
    role: &'static str,
    child: Option<Child>,
    log: PathBuf,
    management: PathBuf,
}

impl OpenVpnProcess {
    fn spawn(role: &'static str, ns: &NetNs, work: &Path, args: &[String]) -> Result<Self, String> {
        let log = work.join(format!("{role}.log"));
        let management = work.join(format!("{role}.mgmt"));
        let mut cmd = ns.command("openvpn");
        cmd.args(args)
            .arg("--log")
            .arg(&log)
            .arg("--management")
            .arg(&management)
            .arg("unix")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().map_err(|e| format!("cannot start openvpn {role}: {e}"))?;
        Ok(OpenVpnProcess { role, child: Some(child), log, management })
    }

    pub fn role(&self) -> &'static str {
        self.role
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn log(&self) -> String {
        std::fs::read(&self.log).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// The last lines of the log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        let tail = all[all.len().saturating_sub(lines)..].join("\n");
        format!(
            "--- last {} lines of the openvpn {} log ({}; OVPN_DCO_KEEP_WORK=1 keeps it) ---\n{tail}\n---",
            lines,
            self.role,
            self.log.display()
        )
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits until the log has a line containing `needle`; fails early if the
    /// process exits.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<(), String> {
        self.wait_for_log_after(0, needle, timeout)
    }

    /// As [`Self::wait_for_log`], looking only at log bytes from `offset` on
    /// (see [`Self::log_len`]).
    pub fn wait_for_log_after(&mut self, offset: usize, needle: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().get(offset..).is_some_and(|s| s.contains(needle)) {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!(
                    "openvpn {} exited ({status}) before logging {needle:?}\n{}",
                    self.role,
                    self.log_tail(LOG_TAIL_LINES)
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "openvpn {} did not log {needle:?} within {timeout:?}\n{}",
                    self.role,
                    self.log_tail(LOG_TAIL_LINES)
                ));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Current log length, a mark for [`Self::wait_for_log_after`].
    pub fn log_len(&self) -> usize {
        self.log().len()
    }

    /// Sends one management command and returns its answer lines.
    pub fn management(&self, command: &str) -> Result<Vec<String>, String> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            format!("management of openvpn {} ({}): {what}: {e}", self.role, self.management.display())
        };
        let stream = UnixStream::connect(&self.management).map_err(|e| fail("connect", &e))?;
        stream.set_read_timeout(Some(MANAGEMENT_TIMEOUT)).map_err(|e| fail("timeout", &e))?;
        let mut writer = stream.try_clone().map_err(|e| fail("clone", &e))?;
        let mut reader = BufReader::new(stream);
        writeln!(writer, "{command}").map_err(|e| fail("write", &e))?;
        let mut answer = Vec::new();
        // Bounded by the read timeout per line and by this many lines.
        for _ in 0..10_000 {
            let mut line = String::new();
            if reader.read_line(&mut line).map_err(|e| fail(&format!("reading answer to {command:?}"), &e))? == 0 {
                return Err(fail("closed", &command));
            }
            let line = line.trim_end().to_owned();
            if line.starts_with(">INFO:") || line.starts_with(">LOG:") {
                continue; // banner and asynchronous notifications
            }
            let done = line.starts_with("SUCCESS:") || line.starts_with("ERROR:") || line == "END";
            let error = line.starts_with("ERROR:");
            answer.push(line);
            if error {
                return Err(fail(&format!("command {command:?}"), &answer.join("\n")));
            }
            if done {
                let _ = writeln!(writer, "quit");
                return Ok(answer);
            }
        }
        Err(fail("answer too long", &command))
    }

    /// Sets the log verbosity through the management socket.
    pub fn set_verb(&self, level: u8) -> Result<(), String> {
        self.management(&format!("verb {level}")).map(drop)
    }

    /// Kills the process (SIGKILL: no exit notification reaches the peer)
    /// and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OpenVpnProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Client and server OpenVPN in their namespaces, keys known, verbosity
/// lowered. Dropping it kills both, deletes the namespaces and the temporary
/// directory.
pub struct Session {
    // Drop order is field order: processes, capture, namespaces, files.
    client: OpenVpnProcess,
    server: OpenVpnProcess,
    transport: Capture,
    client_ns: NetNs,
    server_ns: NetNs,
    work: WorkDir,
    tag: String,
    tun: String,
    server_veth: String,
    pub addresses: Addresses,
    pub keys: SessionKeys,
}

impl Session {
    /// Starts a session with `cipher` and returns once the keys are known.
    pub fn start(cipher: DataCipher) -> Result<Session, String> {
        let tag = unique_tag();
        let addresses = Addresses::default();
        let work = WorkDir::create(&tag)?;
        make_pki(work.path(), &tag)?;
        let server_ns = NetNs::create(&format!("{tag}-srv"))?;
        let client_ns = NetNs::create(&format!("{tag}-cli"))?;
        let (server_veth, client_veth) = (format!("{tag}s"), format!("{tag}c"));
        let with_prefix = |a: Ipv4Addr| format!("{a}/24");
        veth_pair(
            (&server_ns, &server_veth, &with_prefix(*addresses.server_link.ip())),
            (&client_ns, &client_veth, &with_prefix(*addresses.client_link.ip())),
        )?;
        // Every datagram of the session, the handshake included.
        let transport = Capture::start(&server_ns, &server_veth)?;
        // The client's tun is made persistent beforehand so that it outlives
        // a killed client (the takeover test attaches to it).
        let tun = format!("{tag}t");
        client_ns.ip(&["tuntap", "add", "dev", &tun, "mode", "tun"])?;

        let pki = work.path();
        let file = |name: &str| pki.join(name).display().to_string();
        let common = |extra: &[String]| -> Vec<String> {
            let mut v: Vec<String> = [
                "--dev",
                &tun,
                "--dev-type",
                "tun",
                "--proto",
                "udp",
                "--data-ciphers",
                cipher.openvpn_name(),
                "--disable-dco",
                "--verb",
                "9",
                "--ca",
                &file("ca.crt"),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            v.extend_from_slice(extra);
            v
        };
        let s = |x: &str| x.to_owned();
        let server_args = common(&[
            s("--server"),
            s("10.232.0.0"),
            s("255.255.255.0"),
            s("--topology"),
            s("subnet"),
            s("--local"),
            addresses.server_link.ip().to_string(),
            s("--port"),
            addresses.server_link.port().to_string(),
            s("--dh"),
            s("none"),
            s("--cert"),
            file("server.crt"),
            s("--key"),
            file("server.key"),
            // Pushed to the client as "ping 2, ping-restart 30": keepalives
            // show up within a short test.
            s("--keepalive"),
            s("2"),
            s("30"),
        ]);
        let mut server = OpenVpnProcess::spawn("server", &server_ns, work.path(), &server_args)?;
        server.wait_for_log("Initialization Sequence Completed", SERVER_START_TIMEOUT)?;

        let client_args = common(&[
            s("--client"),
            s("--remote"),
            addresses.server_link.ip().to_string(),
            addresses.server_link.port().to_string(),
            // A fixed local port, so a takeover can send from the same address.
            s("--local"),
            addresses.client_link.ip().to_string(),
            s("--lport"),
            addresses.client_link.port().to_string(),
            s("--remote-cert-tls"),
            s("server"),
            s("--cert"),
            file("client.crt"),
            s("--key"),
            file("client.key"),
        ]);
        let mut client = OpenVpnProcess::spawn("client", &client_ns, work.path(), &client_args)?;
        let both_tails = |e: String, server: &OpenVpnProcess| format!("{e}\n{}", server.log_tail(LOG_TAIL_LINES));
        client
            .wait_for_log("Initialization Sequence Completed", CLIENT_START_TIMEOUT)
            .map_err(|e| both_tails(e, &server))?;

        // The implicit IVs are only logged with a packet: one ping each way.
        let server_tun = addresses.server_tun.to_string();
        let mut probe = Ok(String::new());
        for _ in 0..IV_PROBE_ATTEMPTS {
            let log = client.log();
            if log.contains("ENCRYPT IV: ") && log.contains("DECRYPT IV: ") {
                break;
            }
            probe = run_bounded(client_ns.command("ping").args(["-c", "1", "-W", "2", &server_tun]), COMMAND_TIMEOUT);
        }
        let keys = parse_client_log(&client.log(), cipher).map_err(|e| {
            format!(
                "{e}\nlast probe ping: {probe:?}\n{}\n{}",
                client.log_tail(LOG_TAIL_LINES),
                server.log_tail(LOG_TAIL_LINES)
            )
        })?;
        server.set_verb(3)?;
        client.set_verb(3)?;
        Ok(Session { client, server, transport, client_ns, server_ns, work, tag, tun, server_veth, addresses, keys })
    }

    /// The unique tag all names of this session start with.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    pub fn client_ns(&self) -> &NetNs {
        &self.client_ns
    }

    pub fn server_ns(&self) -> &NetNs {
        &self.server_ns
    }

    /// The client's tun device (persistent: it outlives the client process).
    pub fn client_tun(&self) -> &str {
        &self.tun
    }

    pub fn client(&mut self) -> &mut OpenVpnProcess {
        &mut self.client
    }

    pub fn server(&mut self) -> &mut OpenVpnProcess {
        &mut self.server
    }

    pub fn work_dir(&self) -> &Path {
        self.work.path()
    }

    /// The server-side veth, where [`Self::transport`] captures.
    pub fn server_veth(&self) -> &str {
        &self.server_veth
    }

    /// Every UDP datagram between client and server since before the
    /// handshake, drained up to now.
    pub fn transport(&mut self) -> &mut Capture {
        self.transport.drain();
        &mut self.transport
    }

    /// The highest packet id in any P_DATA_V2 datagram the client sent so
    /// far (0 if none).
    pub fn highest_client_packet_id(&mut self) -> u32 {
        let server = self.addresses.server_link;
        udp_datagrams(self.transport().packets())
            .iter()
            .filter(|d| d.direction == Direction::Incoming && d.dst == server)
            .filter(|d| d.payload.first().is_some_and(|b| b >> 3 == P_DATA_V2))
            .filter_map(|d| d.payload.get(4..8).map(|id| u32::from_be_bytes([id[0], id[1], id[2], id[3]])))
            .max()
            .unwrap_or(0)
    }

    /// The server log's tail, for failure messages.
    pub fn server_log_tail(&self) -> String {
        self.server.log_tail(LOG_TAIL_LINES)
    }

    /// Both logs' tails, for failure messages.
    pub fn log_tails(&self) -> String {
        format!("{}\n{}", self.client.log_tail(LOG_TAIL_LINES), self.server.log_tail(LOG_TAIL_LINES))
    }
}

/// A CA, a server and a client certificate (EC P-256, valid one day), made
/// with the `openssl` command in `dir`.
fn make_pki(dir: &Path, tag: &str) -> Result<(), String> {
    let openssl =
        |args: &[&str]| run_bounded(Command::new("openssl").current_dir(dir).args(args), COMMAND_TIMEOUT).map(drop);
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let ca_subject = format!("/CN={tag}-ca");
    openssl(
        &[&["req", "-x509"][..], &ec, &["-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", &ca_subject]]
            .concat(),
    )?;
    for (who, usage) in [("server", "serverAuth"), ("client", "clientAuth")] {
        let subject = format!("/CN={tag}-{who}");
        let (key, csr, crt, ext) =
            (format!("{who}.key"), format!("{who}.csr"), format!("{who}.crt"), format!("{who}.ext"));
        openssl(&[&["req"][..], &ec, &["-keyout", &key, "-out", &csr, "-subj", &subject]].concat())?;
        std::fs::write(
            dir.join(&ext),
            format!("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage={usage}\n"),
        )
        .map_err(|e| format!("write {ext}: {e}"))?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &ext,
            "-out",
            &crt,
        ])?;
    }
    Ok(())
}

/// Hex bytes of a log field such as `d1f9f02f 135e2d07`; `None` if OpenVPN
/// cut it (`[more...]`) or it is not hex.
fn log_hex(field: &str) -> Option<Vec<u8>> {
    if field.contains("[more") {
        return None;
    }
    let digits: String = field.chars().filter(|c| !c.is_whitespace()).collect();
    if digits.len() % 2 != 0 {
        return None;
    }
    (0..digits.len()).step_by(2).map(|i| u8::from_str_radix(digits.get(i..i + 2)?, 16).ok()).collect()
}

/// The values of every log line containing `marker`, after it.
fn log_fields<'a>(log: &'a str, marker: &'a str) -> impl Iterator<Item = &'a str> {
    log.lines().filter_map(move |l| l.find(marker).map(|at| l[at + marker.len()..].trim()))
}

/// The one value of `marker` in the log (an error if absent or repeated,
/// e.g. after a renegotiation).
fn single_hex(log: &str, marker: &str) -> Result<Vec<u8>, String> {
    let values: Vec<&str> = log_fields(log, marker).collect();
    match values.as_slice() {
        [one] => log_hex(one).ok_or_else(|| format!("client log: {marker:?} is not whole hex: {one}")),
        [] => Err(format!("client log has no {marker:?} line (is --verb at least 7?)")),
        more => Err(format!("client log has {} {marker:?} lines (renegotiated?)", more.len())),
    }
}

/// The implicit IV of every `marker` line (`<packet id 4><IV 8>`), which
/// must be one value for the whole log.
fn implicit_iv(log: &str, marker: &str) -> Result<[u8; 8], String> {
    let mut ivs = log_fields(log, marker).map(|f| {
        log_hex(f)
            .and_then(|b| <[u8; 12]>::try_from(b).ok())
            .map(|nonce| <[u8; 8]>::try_from(&nonce[4..]).expect("8 of 12 bytes"))
            .ok_or_else(|| format!("client log: {marker:?} is not a 12-byte nonce: {f}"))
    });
    let first = ivs.next().ok_or_else(|| format!("client log has no {marker:?} line (is --verb 9?)"))??;
    for iv in ivs {
        if iv? != first {
            return Err(format!("client log: the implicit IV of {marker:?} changed within the session"));
        }
    }
    Ok(first)
}

/// Reads the session keys from a client log written at `--verb 9`.
pub fn parse_client_log(log: &str, cipher: DataCipher) -> Result<SessionKeys, String> {
    let direction = |key_marker: &str, iv_marker: &str| -> Result<DirectionKeys, String> {
        let bytes = single_hex(log, key_marker)?;
        if bytes.len() != cipher.key_len() {
            return Err(format!(
                "{key_marker:?} has {} bytes; {} needs {}",
                bytes.len(),
                cipher.openvpn_name(),
                cipher.key_len()
            ));
        }
        let mut key = [0u8; 32];
        key[..bytes.len()].copy_from_slice(&bytes);
        Ok(DirectionKeys { key, key_len: bytes.len(), implicit_iv: implicit_iv(log, iv_marker)? })
    };
    let client_to_server = direction("Outgoing Data Channel: CIPHER KEY: ", "ENCRYPT IV: ")?;
    let server_to_client = direction("Incoming Data Channel: CIPHER KEY: ", "DECRYPT IV: ")?;

    let ad = log_fields(log, "ENCRYPT AD: ")
        .next()
        .and_then(log_hex)
        .ok_or("client log has no whole \"ENCRYPT AD: \" line (is --verb 9?)")?;
    let header = DataHeader::parse(&ad).map_err(|e| format!("ENCRYPT AD {ad:02x?} is no P_DATA_V2 header: {e:?}"))?;
    let announced = format!("Data Channel: cipher '{}', peer-id: {}", cipher.openvpn_name(), header.peer_id.get());
    if !log.contains(&announced) {
        return Err(format!("client log lacks {announced:?}: cipher or peer id disagree with the packets"));
    }
    Ok(SessionKeys { cipher, peer_id: header.peer_id, key_id: header.key_id, client_to_server, server_to_client })
}
