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

/// The lines a kernel build compiles, without `//` comments, with line
/// numbers: all but each `#[cfg(test)] mod tests { … }` block (up to its
/// closing brace at the block's own indentation, as rustfmt writes it) and
/// the two lines of a `#[cfg(test)] mod tests;`.
fn kernel_lines(src: &str) -> Vec<(usize, &str)> {
    let lines: Vec<&str> = src.lines().collect();
    let mut kept = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let next = lines.get(i + 1).map(|l| l.trim_start());
        if lines[i].trim() == "#[cfg(test)]" && next.is_some_and(|l| l.starts_with("mod tests")) {
            let indent = lines[i + 1].len() - lines[i + 1].trim_start().len();
            let block = next.is_some_and(|l| l.trim_end().ends_with('{'));
            i += 2;
            if block {
                while i < lines.len() && lines[i].get(indent..) != Some("}") {
                    i += 1;
                }
                i += 1;
            }
            continue;
        }
        let code = lines[i].split("//").next().unwrap_or("");
        if !code.trim().is_empty() {
            kept.push((i + 1, code));
        }
        i += 1;
    }
    kept
}

/// The module path of a source file under `src/`: `control/peers.rs` is
/// `["control", "peers"]`, `control/mod.rs` is `["control"]`.
fn module_of(name: &str) -> Vec<String> {
    let mut parts: Vec<String> = name.trim_end_matches(".rs").split('/').map(str::to_owned).collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

/// A `use` tree's leaves as full paths: `a::{b, c::{d, e as f}}` gives
/// `a::b`, `a::c::d`, `a::c::e`.
fn expand_use(tree: &str) -> Vec<String> {
    let tree: String = tree.replace(" as ", "@").chars().filter(|c| !c.is_whitespace()).collect();
    let mut out = Vec::new();
    expand_into(&tree, &mut out);
    out
}

fn expand_into(tree: &str, out: &mut Vec<String>) {
    let Some(open) = tree.find('{') else {
        out.push(tree.split('@').next().unwrap_or("").to_owned());
        return;
    };
    let prefix = &tree[..open];
    let (mut depth, mut start) = (0usize, open + 1);
    for (i, c) in tree.char_indices().skip(open + 1) {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                let item = &tree[start..i];
                if !item.is_empty() {
                    expand_into(&format!("{prefix}{item}"), out);
                }
                return;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                expand_into(&format!("{prefix}{}", &tree[start..i]), out);
                start = i + 1;
            }
            _ => {}
        }
    }
}

/// `path` with a leading `self::`/`super::` chain made absolute
/// (`crate::…`) from `module`; other paths as they are.
fn resolve(module: &[String], path: &str) -> String {
    let mut base: Vec<&str> = module.iter().map(String::as_str).collect();
    let mut segments = path.split("::").peekable();
    let relative = matches!(segments.peek(), Some(&"self") | Some(&"super"));
    if !relative {
        return path.to_owned();
    }
    while let Some(&s) = segments.peek() {
        match s {
            "self" => {}
            "super" => {
                base.pop();
            }
            _ => break,
        }
        segments.next();
    }
    let rest: Vec<&str> = segments.collect();
    std::iter::once("crate").chain(base).chain(rest).collect::<Vec<_>>().join("::")
}

/// Every `use` declaration of the kernel lines (`pub`, `pub(crate)` …
/// included, however many lines rustfmt spread it over): the line it
/// starts on and each path it imports, made absolute.
fn use_paths(module: &[String], lines: &[(usize, &str)]) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let (mut statement, mut start) = (String::new(), 0);
    for &(n, line) in lines {
        let text = line.trim();
        if statement.is_empty() {
            // Attributes on the same line (`#[cfg(..)] use ..`) go first.
            let mut text = text;
            while let Some(rest) = text.strip_prefix("#[") {
                text = rest.split_once(']').map_or("", |(_, after)| after).trim_start();
            }
            let body = match text.strip_prefix("pub(") {
                Some(rest) => rest.split_once(')').map_or(rest, |(_, after)| after).trim_start(),
                None => text.strip_prefix("pub ").unwrap_or(text),
            };
            let Some(tree) = body.strip_prefix("use ") else { continue };
            statement.push_str(tree);
            start = n;
        } else {
            statement.push(' ');
            statement.push_str(text);
        }
        if let Some(end) = statement.find(';') {
            for path in expand_use(&statement[..end]) {
                out.push((start, resolve(module, &path)));
            }
            statement.clear();
        }
    }
    out
}

/// The `crate::…` and `super::…` paths written in a line of code.
fn code_paths(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = line.as_bytes();
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(at) = line[from..].find(start).map(|a| a + from) {
            // Only where a path begins: not inside `a::super::` or `xcrate::`.
            let before = at.checked_sub(1).map(|b| bytes[b]);
            let begins = !before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':');
            let path: String =
                line[at..].chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
            from = at + path.len().max(1);
            if begins {
                out.push(path.trim_end_matches(':').to_owned());
            }
        }
    }
    out
}

/// What is wrong with an absolute path a file of `layer` imports, if
/// anything.
fn path_violation(layer: &str, forbidden: &[&str], path: &str) -> Option<String> {
    if path == "crate" {
        return Some("the crate root imported whole".into());
    }
    let mut segments = path.strip_prefix("crate::")?.split("::");
    let top = segments.next()?;
    if top == "*" {
        return Some("a glob of the crate root".into());
    }
    if forbidden.contains(&top) {
        return Some(format!("`{layer}` may not use `{top}`"));
    }
    if top == "os" {
        let service = segments.next().unwrap_or("");
        if !OS_INTERFACE.contains(&service) {
            return Some(format!("`os::{service}` is not the os interface"));
        }
    }
    None
}

/// One file's scan: every violation, and how many `crate::` paths its
/// `use` declarations import (the proof that the parser read them).
struct Scan {
    found: Vec<String>,
    crate_imports: usize,
}

/// Scans one file's text; `name` is its path under `src/`.
fn scan(layer: &str, forbidden: &[&str], name: &str, src: &str) -> Scan {
    let mut found = Vec::new();
    let lines = kernel_lines(src);
    let module = module_of(name);
    let imports = use_paths(&module, &lines);
    let crate_imports = imports.iter().filter(|(_, p)| p.starts_with("crate::")).count();
    let mut in_use = std::collections::BTreeSet::new();
    for (n, path) in imports {
        in_use.insert(n);
        if let Some(why) = path_violation(layer, forbidden, &path) {
            found.push(format!("{name}:{n}: {why}: use {path}"));
        }
    }
    for &(n, line) in &lines {
        for host in HOST_ONLY {
            if line.contains(host) {
                found.push(format!("{name}:{n}: host-only `{host}`: {}", line.trim()));
            }
        }
        if in_use.contains(&n) {
            continue;
        }
        // Paths written out in the code rather than imported: each
        // `crate::…` or `super::…` (`self::…` names the file's own items).
        for path in code_paths(line) {
            if let Some(why) = path_violation(layer, forbidden, &resolve(&module, &path)) {
                found.push(format!("{name}:{n}: {why}: {}", line.trim()));
            }
        }
    }
    found.sort_by_key(|f| f.split(':').nth(1).and_then(|n| n.parse::<usize>().ok()));
    Scan { found, crate_imports }
}

#[test]
fn kernel_layers_use_no_host_model_and_no_layer_above_them() {
    let mut found = Vec::new();
    let (mut checked, mut imports) = (0, 0);
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
            let file = scan(layer, forbidden, &name, &src);
            found.extend(file.found);
            imports += file.crate_imports;
            checked += 1;
        }
    }
    assert!(checked >= 25, "only {checked} files checked");
    assert!(imports >= 100, "only {imports} crate paths imported: is the `use` parser reading them?");
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
               pub(crate) use crate::{\n\
                   os::time::Instant,\n\
                   netcx::ring::NetRing as Ring,\n\
               };\n\
               use super::super::adapter::Adapter;\n\
               use super::peers::Peer;\n\
               fn g() { crate::os::host::now(); crate::os::time::now(); }\n\
               #[cfg(test)]\n\
               mod tests {\n    use crate::os::host::Model;\n}\n\
               #[cfg(feature = \"x\")] use crate::netcx::X;\n\
               fn h() { super::super::datapath::x(); super::peers::y(); }\n\
               use crate::*;\n\
               use crate as root;\n";
    let found = scan("control", &["netcx", "datapath", "adapter"], "control/x.rs", src).found;
    let lines: Vec<&str> = found.iter().map(|f| f.split(": ").next().unwrap()).collect();
    // Line 2 twice (host-only, and not the interface), 3 twice (two
    // host-only names), 4, 5, 7 (`host` in a group), 9
    // (`netcx` in a group over several lines), 13 (`super::super::` is the
    // crate), 15 (a path in the code); not 1, 6 (a group naming only sync),
    // 8 (a comment), 14 (`super::` is `control`) or the test module
    // (16-19); 20 (an attribute before the `use`), 21 (`super::super::` in
    // code), 22 (a glob of the root) and 23 (the root imported whole).
    let want = [
        "x.rs:2", "x.rs:2", "x.rs:3", "x.rs:3", "x.rs:4", "x.rs:5", "x.rs:7", "x.rs:9", "x.rs:13", "x.rs:15",
        "x.rs:15", "x.rs:20", "x.rs:21", "x.rs:22", "x.rs:23",
    ];
    let want: Vec<String> = want.iter().map(|w| format!("control/{w}")).collect();
    assert_eq!(lines, want, "{found:#?}");
}

#[test]
fn use_trees_expand_to_absolute_paths() {
    let module = module_of("control/peers.rs");
    assert_eq!(module, ["control", "peers"]);
    assert_eq!(module_of("control/mod.rs"), ["control"]);
    assert_eq!(
        expand_use("crate::{os::{sync::{A, B}, time::C as D}, proto}"),
        ["crate::os::sync::A", "crate::os::sync::B", "crate::os::time::C", "crate::proto"]
    );
    assert_eq!(resolve(&module, "super::iroute::Table"), "crate::control::iroute::Table");
    assert_eq!(resolve(&module, "super::super::os::host"), "crate::os::host");
    assert_eq!(resolve(&module, "self::Inner"), "crate::control::peers::Inner");
    assert_eq!(resolve(&module, "core::mem"), "core::mem");
}
