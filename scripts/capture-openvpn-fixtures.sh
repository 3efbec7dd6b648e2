#!/usr/bin/env bash
# Records one real P_DATA_V2 packet per AEAD data cipher from a live OpenVPN
# 2.6 session (Debian's openvpn, userspace data channel) and writes
# tests/fixtures/openvpn-2.6/<CIPHER>.txt with everything needed to decrypt it
# and to re-create it bit-exactly.
#
# Two network namespaces joined by a veth pair; a throwaway PKI generated in a
# temporary directory per run; server and client at --verb 9 so that the
# data-channel key and the per-packet nonce/AD/plaintext are logged; tcpdump on
# the veth records the datagrams. Everything (processes, namespaces, the
# temporary directory with its private keys) is removed on exit, also on
# failure. Needs root and: openvpn tcpdump iproute2 openssl iputils-ping python3.
#
# Usage: scripts/capture-openvpn-fixtures.sh [CIPHER...]
#   KEEP_WORK=1 keeps the temporary directory (logs, pcaps) for inspection.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT="$ROOT/tests/fixtures/openvpn-2.6"
CIPHERS=("$@")
[ ${#CIPHERS[@]} -gt 0 ] || CIPHERS=(AES-128-GCM AES-192-GCM AES-256-GCM CHACHA20-POLY1305)

[ "$(id -u)" -eq 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
for tool in openvpn tcpdump ip openssl python3 ping; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done

TAG="ovpncap-$$"
NS_S="$TAG-srv"
NS_C="$TAG-cli"
VETH_S="ovc${$}s"   # interface names: at most 15 characters
VETH_C="ovc${$}c"
TUN="ovctun$$"
WORK=$(mktemp -d "/tmp/$TAG.XXXXXX")
PIDS=()

cleanup() {
    local rc=$?
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
    ip netns del "$NS_S" 2>/dev/null || true
    ip netns del "$NS_C" 2>/dev/null || true
    if [ "${KEEP_WORK:-0}" = 1 ]; then
        echo "work directory kept: $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    return $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- throwaway PKI (EC P-256, valid one day) ---------------------------------
pki() {
    local d="$WORK/pki"
    mkdir -p "$d"
    cd "$d"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout ca.key -out ca.crt -days 1 -subj "/CN=$TAG-ca" 2>/dev/null
    for who in server client; do
        local eku=clientAuth
        [ $who = server ] && eku=serverAuth
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout $who.key -out $who.csr -subj "/CN=$TAG-$who" 2>/dev/null
        printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=%s\n' $eku >$who.ext
        openssl x509 -req -in $who.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
            -days 1 -extfile $who.ext -out $who.crt 2>/dev/null
    done
    cd - >/dev/null
}

# --- one session --------------------------------------------------------------
wait_for() { # file pattern seconds
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "timeout waiting for '$2' in $1" >&2
    tail -20 "$1" >&2 || true
    return 1
}

session() {
    local cipher=$1 dir="$WORK/$1"
    mkdir -p "$dir"
    ip netns add "$NS_S"
    ip netns add "$NS_C"
    ip link add "$VETH_S" type veth peer name "$VETH_C"
    ip link set "$VETH_S" netns "$NS_S"
    ip link set "$VETH_C" netns "$NS_C"
    ip -n "$NS_S" addr add 10.231.0.1/24 dev "$VETH_S"
    ip -n "$NS_C" addr add 10.231.0.2/24 dev "$VETH_C"
    for ns in "$NS_S" "$NS_C"; do ip -n "$ns" link set lo up; done
    ip -n "$NS_S" link set "$VETH_S" up
    ip -n "$NS_C" link set "$VETH_C" up

    ip netns exec "$NS_S" tcpdump -i "$VETH_S" -U -n -s 0 -w "$dir/veth.pcap" udp port 1194 \
        2>"$dir/tcpdump-veth.err" &
    PIDS+=($!)

    local pki="$WORK/pki"
    local common=(--dev "$TUN" --dev-type tun --proto udp --data-ciphers "$cipher"
        --disable-dco --verb 9 --ca "$pki/ca.crt" --persist-tun)
    ip netns exec "$NS_S" openvpn "${common[@]}" --server 10.232.0.0 255.255.255.0 \
        --topology subnet --local 10.231.0.1 --port 1194 --dh none \
        --cert "$pki/server.crt" --key "$pki/server.key" --keepalive 2 30 \
        --log "$dir/server.log" &
    PIDS+=($!)
    wait_for "$dir/server.log" "Initialization Sequence Completed" 20
    ip netns exec "$NS_C" openvpn "${common[@]}" --client --remote 10.231.0.1 1194 \
        --nobind --remote-cert-tls server \
        --cert "$pki/client.crt" --key "$pki/client.key" \
        --log "$dir/client.log" &
    PIDS+=($!)
    wait_for "$dir/client.log" "Initialization Sequence Completed" 30

    ip netns exec "$NS_C" tcpdump -i "$TUN" -U -n -s 0 -w "$dir/tun.pcap" \
        2>"$dir/tcpdump-tun.err" &
    PIDS+=($!)
    sleep 1
    # Small echo requests keep the whole inner packet inside the 80 bytes that
    # OpenVPN's "ENCRYPT FROM" log line shows.
    ip netns exec "$NS_C" ping -c 3 -i 0.3 -s 16 -W 2 10.232.0.1 >"$dir/ping.txt"
    # Silence for longer than --keepalive's 2 s lets both sides send a keepalive ping.
    sleep 5
    ip netns exec "$NS_C" ping -c 1 -s 16 -W 2 10.232.0.1 >>"$dir/ping.txt"
    sleep 1

    cleanup_session
}

cleanup_session() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
    ip netns del "$NS_S"
    ip netns del "$NS_C"
}

pki
VERSION=$(openvpn --version | head -1)
DEB_VERSION=$(dpkg-query -W -f '${Version}' openvpn 2>/dev/null || echo unknown)
mkdir -p "$OUT"
for cipher in "${CIPHERS[@]}"; do
    echo "== $cipher" >&2
    session "$cipher"
    python3 "$ROOT/scripts/openvpn_fixture.py" \
        --cipher "$cipher" --dir "$WORK/$cipher" \
        --version "$VERSION (Debian package $DEB_VERSION)" \
        --command "scripts/capture-openvpn-fixtures.sh ${CIPHERS[*]}" \
        --out "$OUT/$cipher.txt"
done
