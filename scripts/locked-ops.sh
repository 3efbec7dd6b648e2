#!/usr/bin/env bash
# Locked (bus-locking) operations and instructions the data path executes per
# packet, counted exactly rather than timed: the direct cell of
# benches/datapath.rs (A's TX queue -> B's RX queue on one thread) under
# valgrind's callgrind, every `lock`-prefixed or `xchg` instruction of the
# binary (objdump) matched against the executed-instruction counts.
#
# A locked read-modify-write costs a few ns even uncontended (the bench
# prints it) and, in the kernel, a spin lock is two of them plus an IRQL
# raise and lower, so this count is the data path's synchronisation cost
# per packet independent of the machine's noise. Valgrind runs the AES-NI
# (not VAES) code of the crypto backend; the crypto's instructions are
# counted apart.
#
# Needs: valgrind, binutils (objdump), python3.
#
# Environment:
#   CIPHER=aes-256-gcm   or chacha20-poly1305
#   SIZE=1400            inner packet bytes
#   SECONDS_RUN=2        measured seconds (under valgrind: a few thousand packets)
#   TOP=25               source locations listed
set -euo pipefail
cd "$(dirname "$0")/.."

CIPHER=${CIPHER:-aes-256-gcm}
SIZE=${SIZE:-1400}
SECONDS_RUN=${SECONDS_RUN:-2}
TOP=${TOP:-25}

for tool in valgrind objdump addr2line python3; do
    command -v "$tool" >/dev/null || { echo "locked-ops: needs $tool" >&2; exit 2; }
done

bench=$(cargo bench --locked --bench datapath --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "datapath" and m.get("executable"):
        print(m["executable"])')
[ -x "$bench" ] || { echo "locked-ops: no bench binary" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

objdump -d --no-show-raw-insn "$bench" |
    awk '$2 == "lock" || $2 ~ /^xchg/ { sub(":", "", $1); print $1 }' >"$work/locked"

valgrind --tool=callgrind --dump-instr=yes --compress-pos=no --compress-strings=no \
    --callgrind-out-file="$work/cg.out" \
    "$bench" --direct-only --no-raw --sizes "$SIZE" --cipher "$CIPHER" \
    --seconds "$SECONDS_RUN" --warmup 0.1 --slices 1 >"$work/bench.log" 2>"$work/valgrind.log"
grep -q '^checks: clean' "$work/bench.log" || { cat "$work/bench.log" >&2; exit 1; }

python3 - "$bench" "$work" "$TOP" "$CIPHER" "$SIZE" "$PWD/" <<'EOF'
import collections, re, subprocess, sys

bench, work, top, cipher, size, root = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
locked = {int(a, 16) for a in open(f"{work}/locked")}

# Cost lines are "0xADDR LINE COUNT" (positions: instr line); the line after
# a calls= line is the call's inclusive cost, not the instruction's own.
per_addr = collections.Counter()
per_fn = collections.Counter()
fn = cfn = ""
packets = 0
after_call = False
for line in open(f"{work}/cg.out"):
    if line.startswith("fn="):
        fn = line[3:].strip()
        continue
    if line.startswith("cfn="):
        cfn = line[4:].strip()
        continue
    if line.startswith("calls="):
        # One seal per packet: TX's, under the data path's own caller.
        if "AeadKey>::seal_in_place" in cfn and "ovpn_dco" in fn:
            packets += int(line.split()[0][6:])
        after_call = True
        continue
    m = re.match(r"^0x([0-9a-f]+) \d+ (\d+)", line)
    if not m:
        after_call = False
        continue
    if after_call:
        after_call = False
        continue
    addr, count = int(m.group(1), 16), int(m.group(2))
    per_fn[fn] += count
    if addr in locked:
        per_addr[(addr, fn)] += count

if packets == 0:
    sys.exit("locked-ops: no packets sealed")

def side(name):
    # The bench's own probe of a locked RMW's cost runs once at start-up.
    if "locked_rmw" in name or name.endswith("datapath::bench::main"):
        return None
    if "ovpn_dco::" in name:
        return "driver"
    if "datapath::" in name:
        return "bench OS"
    return "runtime"

def is_crypto(name):
    return any(k in name for k in ("ring::", "ring_core", "aesni", "ghash", "aes_gcm", "AeadKey", "chacha", "poly1305"))

instructions = collections.Counter()
for f, c in per_fn.items():
    s = side(f)
    if s:
        instructions["crypto backend" if is_crypto(f) else s] += c
locks = collections.Counter()
for (addr, f), c in per_addr.items():
    s = side(f)
    if s:
        locks[s] += c

print(f"# per packet, direct cell, {cipher} {size} B ({packets} packets; set-up and teardown included)")
print(f"{'':>15}  {'locked ops':>10}  {'instructions':>12}")
for s in ("driver", "bench OS", "runtime", "crypto backend"):
    print(f"{s:>15}  {locks[s] / packets:10.2f}  {instructions[s] / packets:12,.0f}")
print("# locked operations by site (per packet)")

def sites(addrs):
    """Each address's site: the innermost function of this repository's
    code (inlined frames included) outside the spin lock itself, with its
    file and line; one addr2line run for all of them."""
    out = subprocess.run(["addr2line", "-a", "-i", "-f", "-C", "-e", bench] + [hex(a) for a in addrs],
                         capture_output=True, text=True).stdout.split("\n")
    frames, named = {}, {}
    current = None
    for line in out:
        if line.startswith("0x"):
            current = int(line, 16)
            frames[current] = []
        elif current is not None and line:
            frames[current].append(line)
    for addr, lines in frames.items():
        pairs = list(zip(lines[0::2], lines[1::2]))
        ours = [(n, w[len(root):]) for n, w in pairs if w.startswith(root)]
        via_lock = any("os/sync.rs" in w for _, w in ours)
        ours = [(n, w) for n, w in ours if "os/sync.rs" not in w]
        if not ours:
            named[addr] = hex(addr)
            continue
        name, where = ours[0]
        name = re.sub(r"<[^<>]*>", "", re.sub(r"<[^<>]*>", "", name)).split("::")[-1]
        named[addr] = f"{name} {where}" + (" (spin lock)" if via_lock else "")
    return named

counted = {(a, f): c for (a, f), c in per_addr.items() if side(f)}
named = sites(sorted({a for a, _ in counted}))
by_site = collections.Counter()
for (a, _), c in counted.items():
    by_site[named.get(a, hex(a))] += c
for where, c in by_site.most_common(top):
    if c / packets >= 0.01:
        print(f"{c / packets:6.2f}  {where}")
EOF
