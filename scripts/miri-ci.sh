#!/usr/bin/env bash
# Runs the library's unit tests of the modules that hold `unsafe` code under
# Miri (nightly), which fails on undefined behaviour: out-of-bounds or
# misaligned access, use after free, aliasing violations (Stacked Borrows),
# data races, leaks.
#
# Which modules: those whose tests reach `unsafe` in src/ on the host:
#   netcx     ring/fragment/extension/MDL/WSK-indication access through raw
#             pointers
#   os::sync, os::time
#             the lock (std-based on the host; its thread test runs fewer
#             rounds under Miri) and the clock
#   os::host  the NetAdapterCx model's queue memory (memory, netadapter,
#             verifier) and the WSK model's SOCKADDR and send-slot code
#   datapath  the data path over fakes: retained indications, in-place
#             decryption, RX slots and return contexts, TX Scratch bits,
#             send slots, with two threaded scenarios; under Miri its crypto
#             is a toy AEAD (ring cannot run there) and Miri's leak check is
#             on: every scenario ends with the socket closed and all tables
#             empty (the harness asserts it too)
# Not here:
#   os::host::wsk::tests  the WSK model's scenarios. The in-memory ones pass
#             under Miri but take 10-30 s each (delivery threads that poll
#             and sleep), several minutes in all, over the CI budget; run
#             them with MIRI_MODULES="os::host::wsk::tests" (the five that
#             open real sockets are ignored under Miri: its isolation has no
#             socket()). os::host::wsk::rng adds nothing but 30 s of
#             statistics.
#   crypto::host and everything built on it (crypto::slots, crypto::kdf,
#             proto::aead_frame, proto::epoch, and the uapi/proto tests that
#             seal packets) call ring's C and assembly, which Miri cannot
#             execute ("can't call foreign function
#             ring_core_..._OPENSSL_cpuid_setup"); they hold no `unsafe` of
#             this crate. The other pure-Rust modules pass under Miri too but
#             add nothing it can check beyond what `cargo test` does, except
#             time (control::iroute's table-bound test alone runs for
#             minutes).
#
# Environment:
#   MIRI_MODULES  space-separated test-name filters (default: the list
#                 below)
set -euo pipefail
cd "$(dirname "$0")/.."

DEFAULT_MODULES="netcx:: os::sync:: os::time:: os::host::memory os::host::netadapter os::host::verifier \
os::host::wsk::sockaddr os::host::wsk::send datapath::"
read -r -a MODULES <<<"${MIRI_MODULES:-$DEFAULT_MODULES}"

export CARGO_TERM_COLOR=never
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
rustup component add miri rust-src --toolchain nightly

# Proptest under Miri: Miri runs each case
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
