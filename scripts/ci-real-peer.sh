#!/usr/bin/env bash
# CI step: the real-peer tests (tests/real_openvpn.rs) against Debian's
# OpenVPN in network namespaces. Installs what they need and runs them with
# OVPN_DCO_REQUIRE_REAL_PEER=1, so a missing prerequisite fails the step
# instead of skipping silently. Needs root (namespaces, TUN), as CI runs.
#
# Usage: scripts/ci-real-peer.sh   (from anywhere; extra args go to the test binary)
set -euo pipefail

cd "$(dirname "$0")/.."

PACKAGES=(openvpn iproute2 tcpdump iputils-ping openssl netcat-openbsd)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The tests bound every wait themselves; this is the outer guard for CI.
start=$(date +%s)
OVPN_DCO_REQUIRE_REAL_PEER=1 timeout 600 cargo test --test real_openvpn -- "$@"
echo "real-peer tests took $(($(date +%s) - start)) s (build included)" >&2
