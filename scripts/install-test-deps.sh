#!/usr/bin/env bash
# Installs the Debian packages the real-peer tests (tests/real_openvpn.rs)
# need: Debian's OpenVPN as the peer, iproute2 for namespaces and veth, ping,
# and openssl for the throwaway PKI. Only what is missing; needs root.
set -euo pipefail

PACKAGES=(openvpn iproute2 iputils-ping openssl)

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
