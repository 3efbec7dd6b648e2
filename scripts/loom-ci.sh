#!/usr/bin/env bash
# Runs the loom models of the data path's cross-CPU hand-offs
# (src/datapath/loom_models.rs): the crate's unit tests built with
# `--cfg loom`, where every SpinLock is loom's mutex and every hand-off
# atomic loom's (src/os/sync.rs), filtered to the `loom_` models. Loom runs
# each model once per distinct interleaving, up to LOOM_MAX_PREEMPTIONS
# preemptions, and fails on a broken assertion, a deadlock or a race.
#
# A debug build: the models are small (two or three CPUs, a few entries
# per table), so exploring them takes seconds, less than an optimised
# build would. Its own target directory keeps `--cfg loom` from
# invalidating the ordinary build.
#
# Environment:
#   LOOM_MAX_PREEMPTIONS  preemption bound (default 3; unset it in the
#                         environment as LOOM_MAX_PREEMPTIONS= for an
#                         unbounded, exhaustive run, still seconds today)
#   LOOM_FILTER           test-name filter (default: loom_)
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR=never
export RUSTFLAGS="${RUSTFLAGS:-} --cfg loom"
export LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS-3}
[ -n "$LOOM_MAX_PREEMPTIONS" ] || unset LOOM_MAX_PREEMPTIONS

echo "== loom: build"
cargo test --locked --lib --target-dir target/loom --no-run
echo "== loom: models (LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS:-unbounded})"
cargo test --locked --lib --target-dir target/loom -- "${LOOM_FILTER:-loom_}" --test-threads=1 --nocapture
echo "== loom: every interleaving passed"
