#!/usr/bin/env bash
# Runs the library's unit tests of the modules that hold `unsafe` code under
# Miri (nightly), which fails on undefined behaviour: out-of-bounds or
# misaligned access, use after free, aliasing violations (Stacked Borrows),
# data races, leaks.
#
# Which modules: those whose tests reach `unsafe` in src/ on the host:
#   netcx   ring/fragment/extension/MDL/WSK-indication access through raw pointers
#   os      the kernel services contract and the lock (std-based on the host;
#           its thread test runs fewer rounds under Miri)
# Not here: crypto::host and everything built on it (crypto::slots,
# crypto::kdf, proto::aead_frame, proto::epoch, and the uapi/proto tests that
# seal packets) call ring's C and assembly, which Miri cannot execute ("can't
# call foreign function ring_core_..._OPENSSL_cpuid_setup"); they hold no
# `unsafe` of this crate. The other pure-Rust modules pass under Miri too but
# add nothing it can check beyond what `cargo test` does, except time
# (control::iroute's table-bound test alone runs for minutes).
# When modules with `unsafe` land (datapath, os::host), add them to
# MIRI_MODULES' default.
#
# Environment:
#   MIRI_MODULES  space-separated test-name filters (default: "netcx:: os::")
set -euo pipefail
cd "$(dirname "$0")/.."

read -r -a MODULES <<<"${MIRI_MODULES:-netcx:: os::}"

export CARGO_TERM_COLOR=never
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
rustup component add miri rust-src --toolchain nightly

# Proptest under Miri (for modules added later): Miri runs each case
# thousands of times slower, so a few cases, and its isolation forbids the
# file system that proptest's failure persistence wants.
export MIRIFLAGS="${MIRIFLAGS:-} -Zmiri-env-set=PROPTEST_CASES=4 -Zmiri-env-set=PROPTEST_DISABLE_FAILURE_PERSISTENCE=true"

echo "== miri: setup"
cargo +nightly miri setup

# One run per filter (libtest takes a single filter unless --exact), so a
# failure names its module; the test binary is built once.
for module in "${MODULES[@]}"; do
    echo "== miri: $module"
    cargo +nightly miri test --locked --lib -- "$module"
done
echo "== miri: no undefined behaviour found"
