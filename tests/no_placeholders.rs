//! The Windows layer is complete: no `todo!`, `unimplemented!`, bare
//! `unreachable!()`, or `extern "system"`/`extern "C"` callback with an empty body
//! anywhere under `src/os/windows` (the "no placeholder" check; most
//! of that code cannot be compiled or run here, so the check reads it).

use std::fs;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir).expect("read src/os/windows").flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a line: what precedes a `//` comment (string literals in
/// this layer never contain `//`).
fn code(line: &str) -> &str {
    line.find("//").map_or(line, |at| &line[..at])
}

/// Offsets of empty `extern "system"`/`extern "C"` fn bodies in `src`: the first
/// `{` after the signature, followed only by whitespace up to its `}`.
fn empty_extern_bodies(src: &str) -> Vec<usize> {
    let mut found = Vec::new();
    let mut starts: Vec<usize> = ["extern \"system\" fn", "extern \"C\" fn"]
        .iter()
        .flat_map(|pat| src.match_indices(pat).map(|(at, _)| at))
        .collect();
    starts.sort_unstable();
    for start in starts {
        let rest = &src[start..];
        // A declaration inside `extern "system" { … }` ends with `;`, and a
        // function-pointer type in a struct field meets the struct's `}` or
        // a `;` before any `{`: neither has a body.
        let Some(open) = rest.find('{') else { continue };
        if rest[..open].contains([';', '}']) {
            continue;
        }
        let after = &rest[open + 1..];
        let close = after.find('}').unwrap_or(after.len());
        if after[..close].trim().is_empty() {
            found.push(start);
        }
    }
    found
}

fn line_of(src: &str, offset: usize) -> usize {
    src[..offset].matches('\n').count() + 1
}

fn placeholders(path: &Path, src: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (n, line) in src.lines().enumerate() {
        let c = code(line);
        for bad in ["todo!", "unimplemented!", "unreachable!()"] {
            if c.contains(bad) {
                found.push(format!("{}:{}: {bad}", path.display(), n + 1));
            }
        }
    }
    // Comments out first so that a doc example cannot trip the body check.
    let stripped: String = src.lines().map(|l| format!("{}\n", code(l))).collect();
    for at in empty_extern_bodies(&stripped) {
        found.push(format!("{}:{}: empty extern fn body", path.display(), line_of(&stripped, at)));
    }
    found
}

#[test]
fn the_windows_layer_has_no_placeholders() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/os/windows");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(files.len() >= 10, "src/os/windows should hold the whole layer, found {files:?}");
    let found: Vec<String> =
        files.iter().flat_map(|path| placeholders(path, &fs::read_to_string(path).expect("read source"))).collect();
    assert!(found.is_empty(), "placeholders in os::windows:\n{}", found.join("\n"));
}

#[test]
fn the_scanner_finds_each_kind_of_placeholder() {
    let src = "fn a() { todo!() }\nfn b() { unimplemented!(\"x\") }\nfn c() { unreachable!() }\n\
               unsafe extern \"system\" fn d(x: u32) {}\nunsafe extern \"system\" fn e() {\n    \n}\n\
               unsafe extern \"C\" fn f(t: *mut u8) {}\n";
    let found = placeholders(Path::new("t.rs"), src);
    assert_eq!(found.len(), 6, "{found:?}");
    assert!(found[3].contains("t.rs:4") && found[4].contains("t.rs:5"), "{found:?}");
}

#[test]
fn the_scanner_accepts_real_code_comments_and_declarations() {
    let src = "// todo!() in a comment\nfn a() { unreachable!(\"a reason\") }\n\
               unsafe extern \"system\" { fn f(x: u32); }\n\
               type P = Option<unsafe extern \"system\" fn(u32)>;\nstruct S { p: P }\n\
               struct T {\n    f: Option<unsafe extern \"system\" fn(u32)>,\n}\nimpl T {}\n\
               unsafe extern \"system\" fn g(x: u32) -> u32 { x }\n";
    assert!(placeholders(Path::new("t.rs"), src).is_empty());
}
