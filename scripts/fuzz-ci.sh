#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for a bounded time and fails on any crash
# (panic, failed assertion, arithmetic overflow, ASan report, timeout, OOM).
#
# The targets are built exactly as `cargo fuzz build` builds them (same
# RUSTFLAGS, target triple and profile, into fuzz/target), with plain
# `cargo +nightly`, so CI needs no `cargo install cargo-fuzz`; with
# cargo-fuzz installed, `cargo fuzz run <target>` reuses the same build.
#
# Environment:
#   FUZZ_SECONDS  seconds per target (default 30). Longer runs, e.g. before a
#                 release or after touching a parser:
#                   FUZZ_SECONDS=3600 scripts/fuzz-ci.sh
#   FUZZ_TARGETS  space-separated subset (default: all targets below)
#
# Inputs found along the way accumulate in fuzz/target/corpus/<target>
# (ignored by git), so repeated local runs pick up where the last one ended;
# the committed seeds in fuzz/corpus/<target> are only read. A crashing input
# is saved in fuzz/artifacts/<target>/ and the command to replay it printed.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS=${FUZZ_SECONDS:-30}
read -r -a TARGETS <<<"${FUZZ_TARGETS:-uapi_decode data_packet tcp_stream mss_clamp control_sequence}"

export CARGO_TERM_COLOR=never
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
TRIPLE=$(rustc +nightly -vV | sed -n 's/^host: //p')

# cargo-fuzz 0.13's defaults: libFuzzer coverage instrumentation, ASan, debug
# assertions (and so overflow checks), one codegen unit.
RUSTFLAGS="-Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
--cfg fuzzing \
-Cllvm-args=-simplifycfg-branch-fold-threshold=0 \
-Zsanitizer=address \
-Cllvm-args=-sanitizer-coverage-stack-depth \
-Cdebug-assertions \
-Ccodegen-units=1"
export RUSTFLAGS
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_odr_violation=0

echo "== fuzz: build (nightly, $TRIPLE)"
# --target keeps the sanitizer flags off build scripts and proc macros.
cargo +nightly build --locked --manifest-path fuzz/Cargo.toml --target "$TRIPLE" \
    --release --config 'profile.release.debug="line-tables-only"' --bins

BIN_DIR="${CARGO_TARGET_DIR:-fuzz/target}/$TRIPLE/release"
failed=()
for target in "${TARGETS[@]}"; do
    echo "== fuzz: $target for ${FUZZ_SECONDS}s"
    work="fuzz/target/corpus/$target"
    artifacts="fuzz/artifacts/$target"
    mkdir -p "$work" "$artifacts"
    # -timeout: one input taking 10 s is a hang, not slowness.
    if ! "$BIN_DIR/$target" -max_total_time="$FUZZ_SECONDS" -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$artifacts/" "$work" "fuzz/corpus/$target"; then
        failed+=("$target")
        echo "!! fuzz: $target failed; replay with: $BIN_DIR/$target $artifacts/<crash-file>" >&2
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "!! fuzz: crashes in: ${failed[*]}" >&2
    exit 1
fi
echo "== fuzz: no crashes"
