#!/usr/bin/env bash
# CI step: the real-peer tests (tests/real_openvpn.rs) against Debian's
# OpenVPN in network namespaces. Installs what they need and runs them with
# OVPN_DCO_REQUIRE_REAL_PEER=1, so a missing prerequisite fails the step
# instead of skipping silently. Needs root (namespaces, TUN), as CI runs.
#
# Usage: scripts/ci-real-peer.sh   (from anywhere; extra args go to the test binary)
set -euo pipefail

cd "$(dirname "$0")/.."

scripts/install-test-deps.sh

# The tests bound every wait themselves; this is the outer guard for CI.
start=$(date +%s)
OVPN_DCO_REQUIRE_REAL_PEER=1 timeout 600 cargo test --test real_openvpn -- "$@"
echo "real-peer tests took $(($(date +%s) - start)) s (build included)" >&2
