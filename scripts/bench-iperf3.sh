#!/usr/bin/env bash
# iperf3 through the host tunnel (the driver's data path over the NetAdapterCx
# and WSK models, examples/host_tunnel.rs) and, in the same run, through
# Debian's userspace OpenVPN 2.6 (AES-256-GCM, --disable-dco), between the same
# two network namespaces joined by a veth pair, with the same CPU pinning.
# Prints both and the ratio for: single-stream TCP, TCP -P 4, TCP -R, UDP.
#
# Needs root and: iperf3 openvpn openssl iproute2 taskset python3, and a
# release build of the example (built here if missing).
#
# Environment:
#   DURATION=10      seconds per iperf3 run
#   CPU_A=0 CPU_B=1  taskset CPU lists for everything in namespace A / B
#   LEAN=1           run the tunnel with --lean (no WSK poisoning/fingerprints)
#   OFFLOAD=1        TUN offloads (IFF_VNET_HDR: TCP super-packets cut into MTU
#                    segments before the adapter); 0 runs with --no-offload
#   ONLY=tunnel|openvpn  run one side only
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN="$ROOT/target/release/examples/host_tunnel"
DURATION=${DURATION:-10}
CPU_A=${CPU_A:-0}
CPU_B=${CPU_B:-1}
LEAN=${LEAN:-1}
OFFLOAD=${OFFLOAD:-1}
ONLY=${ONLY:-}

[ "$(id -u)" -eq 0 ] || { echo "needs root (network namespaces, TUN)" >&2; exit 1; }
for tool in iperf3 openvpn openssl ip taskset python3; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
if [ ! -x "$BIN" ]; then
    (cd "$ROOT" && cargo build --release --example host_tunnel)
fi

TAG="ovb$$"
NS_A="$TAG-a"
NS_B="$TAG-b"
WORK=$(mktemp -d "/tmp/$TAG.XXXXXX")
PIDS=()
TUNNEL_PIDS=()

cleanup() {
    local rc=$? pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    ip netns del "$NS_A" 2>/dev/null || true
    ip netns del "$NS_B" 2>/dev/null || true
    if [ "${KEEP_WORK:-0}" = 1 ]; then echo "work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
    return $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Command prefixes (not functions: `ip netns exec` and taskset exec the
# command, so `$!` of a background job is the tunnel's or openvpn's own PID).
IN_A=(ip netns exec "$NS_A" taskset -c "$CPU_A")
IN_B=(ip netns exec "$NS_B" taskset -c "$CPU_B")

# --- namespaces: 10.76.0.1 (A) -- veth -- 10.76.0.2 (B) ------------------------
ip netns add "$NS_A"
ip netns add "$NS_B"
ip link add "${TAG}a" type veth peer name "${TAG}b"
ip link set "${TAG}a" netns "$NS_A"
ip link set "${TAG}b" netns "$NS_B"
ip -n "$NS_A" addr add 10.76.0.1/24 dev "${TAG}a"
ip -n "$NS_B" addr add 10.76.0.2/24 dev "${TAG}b"
for ns in "$NS_A" "$NS_B"; do ip -n "$ns" link set lo up; done
ip -n "$NS_A" link set "${TAG}a" up
ip -n "$NS_B" link set "${TAG}b" up

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

# iperf3 client in A against a server in B at $1; prints Gbit/s received.
measure() { # server-address args...
    local server=$1
    shift
    local out="$WORK/iperf-$RANDOM.json"
    "${IN_A[@]}" iperf3 -c "$server" -t "$DURATION" -J "$@" >"$out" || { cat "$out" >&2; return 1; }
    python3 - "$out" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
end = r["end"]
if "sum_received" in end:
    bps = end["sum_received"]["bits_per_second"]
else:  # UDP on older iperf3: what the server received
    s = end["sum"]
    bps = s["bits_per_second"] * (1 - s.get("lost_percent", 0) / 100)
print(f"{bps / 1e9:.3f}")
PY
}

TESTS=("tcp" "tcp-P4" "tcp-R" "udp")
args_of() {
    case $1 in
        tcp) echo "" ;;
        tcp-P4) echo "-P 4" ;;
        tcp-R) echo "-R" ;;
        udp) echo "-u -b 0 -l 1380" ;;
    esac
}

run_suite() { # label server-address
    local t
    "${IN_B[@]}" iperf3 -s -B "$2" >"$WORK/iperf-server-$1.log" 2>&1 &
    PIDS+=($!)
    sleep 0.5
    for t in "${TESTS[@]}"; do
        # shellcheck disable=SC2046
        echo "$t $(measure "$2" $(args_of "$t"))" >>"$WORK/result-$1"
        sleep 1
    done
}

# --- host tunnel: ovpn-dco's data path, 10.77.0.1 -- 10.77.0.2 -----------------
tunnel() {
    "$BIN" genkey AES-256-GCM >"$WORK/tunnel.key"
    local flags=()
    [ "$LEAN" = 1 ] && flags+=(--lean)
    [ "$OFFLOAD" = 1 ] || flags+=(--no-offload)
    for side in a b; do
        local ns=$NS_A addr=10.77.0.1/24 local=10.76.0.1:1194 remote=10.76.0.2:1194 run=("${IN_A[@]}")
        if [ $side = b ]; then
            ns=$NS_B addr=10.77.0.2/24 local=10.76.0.2:1194 remote=10.76.0.1:1194 run=("${IN_B[@]}")
        fi
        ip -n "$ns" tuntap add dev ovpnt0 mode tun
        ip -n "$ns" addr add "$addr" dev ovpnt0
        ip -n "$ns" link set ovpnt0 up
        "${run[@]}" "$BIN" run --tun ovpnt0 --local $local --remote $remote --key "$WORK/tunnel.key" \
            --side $side --mss 1400 "${flags[@]}" >"$WORK/tunnel-$side.log" 2>&1 &
        PIDS+=($!)
        TUNNEL_PIDS+=($!)
        wait_for "$WORK/tunnel-$side.log" " up" 10
    done
    "${IN_A[@]}" ping -c 2 -i 0.2 -W 2 10.77.0.2 >/dev/null
    run_suite tunnel 10.77.0.2
}

# --- userspace OpenVPN 2.6, p2p TLS, 10.78.0.1 -- 10.78.0.2 ---------------------
openvpn_p2p() {
    local d="$WORK/pki"
    mkdir -p "$d"
    (
        cd "$d"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout ca.key -out ca.crt -days 1 -subj "/CN=$TAG-ca" 2>/dev/null
        for who in server client; do
            eku=clientAuth
            [ $who = server ] && eku=serverAuth
            openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
                -keyout $who.key -out $who.csr -subj "/CN=$TAG-$who" 2>/dev/null
            printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=%s\n' $eku >$who.ext
            openssl x509 -req -in $who.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
                -days 1 -extfile $who.ext -out $who.crt 2>/dev/null
        done
    )
    local common=(--dev ovpnu0 --dev-type tun --proto udp --data-ciphers AES-256-GCM
        --disable-dco --verb 1 --ca "$d/ca.crt" --ping 10 --ping-restart 60)
    "${IN_A[@]}" openvpn "${common[@]}" --tls-server --dh none --cert "$d/server.crt" --key "$d/server.key" \
        --local 10.76.0.1 --lport 1195 --remote 10.76.0.2 1195 \
        --ifconfig 10.78.0.1 10.78.0.2 --log "$WORK/openvpn-a.log" &
    PIDS+=($!)
    "${IN_B[@]}" openvpn "${common[@]}" --tls-client --remote-cert-tls server \
        --cert "$d/client.crt" --key "$d/client.key" \
        --local 10.76.0.2 --lport 1195 --remote 10.76.0.1 1195 \
        --ifconfig 10.78.0.2 10.78.0.1 --log "$WORK/openvpn-b.log" &
    PIDS+=($!)
    wait_for "$WORK/openvpn-a.log" "Initialization Sequence Completed" 30
    wait_for "$WORK/openvpn-b.log" "Initialization Sequence Completed" 30
    "${IN_A[@]}" ping -c 2 -i 0.2 -W 2 10.78.0.2 >/dev/null
    run_suite openvpn 10.78.0.2
}

echo "iperf3 ${DURATION}s per run; namespace A on CPU $CPU_A, B on CPU $CPU_B; $(nproc) CPUs; $(openvpn --version | head -1 | cut -d' ' -f1-2)"
[ "$ONLY" = openvpn ] || tunnel
[ "$ONLY" = tunnel ] || openvpn_p2p

python3 - "$WORK" "${TESTS[@]}" <<'PY'
import os, sys
work, tests = sys.argv[1], sys.argv[2:]
def load(label):
    path = os.path.join(work, f"result-{label}")
    if not os.path.exists(path):
        return {}
    return {l.split()[0]: float(l.split()[1]) for l in open(path) if l.strip()}
t, o = load("tunnel"), load("openvpn")
print(f"{'test':<8} {'host tunnel':>14} {'openvpn 2.6':>14} {'ratio':>7}")
for name in tests:
    a, b = t.get(name), o.get(name)
    fa = f"{a:.3f} Gbit/s" if a is not None else "-"
    fb = f"{b:.3f} Gbit/s" if b is not None else "-"
    ratio = f"{a / b:.2f}x" if a and b else "-"
    print(f"{name:<8} {fa:>14} {fb:>14} {ratio:>7}")
PY
cpu_seconds() { # pid...: user+system CPU seconds of the processes so far
    local pid total=0
    for pid in "$@"; do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
    done
    python3 -c "print(f'{$total / $(getconf CLK_TCK):.1f}')"
}
if [ "$ONLY" != openvpn ]; then
    # CPU per byte is steadier than throughput on a shared machine: other
    # jobs take CPU time from the tunnels, not CPU time per byte.
    python3 - "$WORK" "$DURATION" "$(cpu_seconds "${TUNNEL_PIDS[@]}")" <<'PY'
import os, sys
work, duration, cpu = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
path = os.path.join(work, "result-tunnel")
gbit = sum(float(l.split()[1]) for l in open(path) if l.strip()) * duration if os.path.exists(path) else 0
print(f"host tunnel CPU: {cpu:.1f} s (both ends) for {gbit / 8:.2f} GB through it: {cpu / (gbit / 8):.1f} s/GB" if gbit else "")
PY
    # The tunnels stop, then say what they counted and what the verifiers found.
    kill -TERM "${TUNNEL_PIDS[@]}" 2>/dev/null || true
    wait "${TUNNEL_PIDS[@]}" 2>/dev/null || true
    grep -h "drops\|stopped\|violations" "$WORK"/tunnel-*.log | cut -c1-300 || true
fi
