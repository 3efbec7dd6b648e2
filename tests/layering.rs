//! The layering of design.md, checked on the source: `proto`, `crypto`,
//! `uapi` and `control` are the same code in the kernel and on Linux, so
//! outside their `#[cfg(test)]` modules they may not reach the host model
//! (`os::host`, `crypto::host`), `std`, or a layer above them. The control
//! plane takes its kernel services only through the `os` interface
//! (`os::sync`, `os::time`).
//!
//! The Windows-target clippy of `.ci/run` proves the same by compiling
//! without `os::host`; this test says it on every `cargo test`, with the
//! offending line.

use std::path::{Path, PathBuf};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// (layer directory, modules of the crate it may not name). `proto` and
/// `crypto` are one level: the framing calls the CNG-shaped AEAD trait and
/// the key slots call the framing.
const LAYERS: [(&str, &[&str]); 4] = [
    ("proto", &["uapi", "control", "netcx", "datapath", "adapter", "os"]),
    ("crypto", &["uapi", "control", "netcx", "datapath", "adapter", "os"]),
    ("uapi", &["control", "netcx", "datapath", "adapter", "os"]),
    ("control", &["netcx", "datapath", "adapter"]),
];

/// The host-only parts no kernel layer may use.
const HOST_ONLY: [&str; 6] = ["os::host", "crypto::host", "HostCrypto", "HostKey", "std::", "extern crate std"];

/// What the control plane may use of `os`: the services interface.
const OS_INTERFACE: [&str; 2] = ["sync", "time"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The lines a kernel build compiles: everything before the trailing
/// `#[cfg(test)] mod tests`, without `//` comments, with line numbers.
fn kernel_lines(src: &str) -> Vec<(usize, &str)> {
    let lines: Vec<&str> = src.lines().collect();
    let end = (0..lines.len())
        .find(|&i| lines[i].trim() == "#[cfg(test)]" && lines.get(i + 1).is_some_and(|l| l.starts_with("mod tests")))
        .unwrap_or(lines.len());
    lines[..end]
        .iter()
        .enumerate()
        .map(|(i, l)| (i + 1, l.split("//").next().unwrap_or("")))
        .filter(|(_, l)| !l.trim().is_empty())
        .collect()
}

/// The start of each top-level item of a `use` group, `group` being the
/// text after its `{`: `sync::{A, B}, time::C}` gives `sync::{A, B}` and
/// `time::C}`.
fn group_names(group: &str) -> Vec<&str> {
    let (mut names, mut depth, mut start) = (Vec::new(), 0usize, 0);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                names.push(group[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    names.push(group[start..].trim());
    names
}

/// Every violation in one file's text.
fn violations(layer: &str, forbidden: &[&str], name: &str, src: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (n, line) in kernel_lines(src) {
        for host in HOST_ONLY {
            if line.contains(host) {
                found.push(format!("{name}:{n}: host-only `{host}`: {}", line.trim()));
            }
        }
        for module in forbidden {
            for path in [format!("crate::{module}::"), format!("crate::{module};"), format!("crate::{module}}}")] {
                if line.contains(&path) {
                    found.push(format!("{name}:{n}: `{layer}` may not use `{module}`: {}", line.trim()));
                }
            }
        }
        // `crate::os::X` or `crate::os::{X::.., Y}`: only the services
        // interface. A group is read on its own line (rustfmt splits a long
        // one over several; their first names are then not checked here).
        let mut rest = line;
        while let Some(at) = rest.find("crate::os::") {
            rest = &rest[at + "crate::os::".len()..];
            let items = match rest.strip_prefix('{') {
                Some(group) => group_names(group),
                None => std::vec![rest],
            };
            for item in items {
                let item: String = item.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !item.is_empty() && !OS_INTERFACE.contains(&item.as_str()) {
                    found.push(format!("{name}:{n}: `os::{item}` is not the os interface: {}", line.trim()));
                }
            }
        }
    }
    found
}

#[test]
fn kernel_layers_use_no_host_model_and_no_layer_above_them() {
    let mut found = Vec::new();
    let mut checked = 0;
    for (layer, forbidden) in LAYERS {
        let mut files = Vec::new();
        rust_files(&Path::new(SRC).join(layer), &mut files);
        assert!(!files.is_empty(), "no sources in src/{layer}");
        for path in files {
            // The ring backend is the host model's CNG stand-in.
            if path.ends_with("crypto/host.rs") {
                continue;
            }
            let src = std::fs::read_to_string(&path).unwrap();
            let name = path.strip_prefix(SRC).unwrap().display().to_string();
            found.extend(violations(layer, forbidden, &name, &src));
            checked += 1;
        }
    }
    assert!(checked >= 25, "only {checked} files checked");
    assert!(found.is_empty(), "layering violations:\n{}", found.join("\n"));
}

#[test]
fn the_scanner_finds_each_kind_of_violation() {
    let src = "use crate::os::time::Instant;\n\
               use crate::os::host::wsk::Loopback;\n\
               use crate::crypto::host::HostCrypto;\n\
               use crate::datapath::rx;\n\
               fn f() { let v = std::vec::Vec::new(); }\n\
               use crate::os::{sync::SpinLock};\n\
               use crate::os::{sync::{SpinLock, SpinGuard}, time::Instant, host::wsk};\n\
               // use crate::os::host::x; in a comment is fine\n\
               #[cfg(test)]\n\
               mod tests {\n    use crate::os::host::Model;\n}\n";
    let found = violations("control", &["netcx", "datapath", "adapter"], "x.rs", src);
    let lines: Vec<&str> = found.iter().map(|f| f.split(": ").next().unwrap()).collect();
    // Line 2 twice (host-only and not the interface), 3 twice (two names),
    // 4, 5, 7 (`host` in a group); not line 1, 6 (a group naming only
    // sync), 8 (comment) or the test module.
    assert_eq!(lines, ["x.rs:2", "x.rs:2", "x.rs:3", "x.rs:3", "x.rs:4", "x.rs:5", "x.rs:7"], "{found:#?}");
}
