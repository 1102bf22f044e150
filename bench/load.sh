#!/usr/bin/env bash
# Load generators side by side on loopback: wrk, oha and `testbed load`
# against the same target (crates/load/examples/target.rs, a minimal hyper
# server), CONNS connections for DUR seconds each, one after the other in
# one run; then the memory of 1,000 idle virtual users.
#
#   bash bench/load.sh            # CONNS=64 DUR=10 by default
#
# Needs wrk (Debian package) and oha (`cargo install oha --locked`); both
# are installed if missing and possible.
set -euo pipefail
cd "$(dirname "$0")/.."

CONNS=${CONNS:-64}
DUR=${DUR:-10}
PORT=${PORT:-18099}
THREADS=${THREADS:-$(nproc)}
OUT=$(mktemp -d)

if ! command -v wrk >/dev/null; then
    if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq wrk >/dev/null; fi
fi
if ! command -v oha >/dev/null; then
    cargo install oha --locked
fi
command -v wrk >/dev/null || { echo "wrk is missing (apt-get install wrk)"; exit 2; }

cargo build --release -q -p testbed-load --example target
cargo build --release -q -p testbed-cli --bin testbed
TARGET=target/release/examples/target
TESTBED=target/release/testbed
URL="http://127.0.0.1:$PORT/"

"$TARGET" "127.0.0.1:$PORT" --threads "$THREADS" >"$OUT/target.log" 2>&1 &
TARGET_PID=$!
cleanup() { kill "$TARGET_PID" 2>/dev/null || true; rm -rf "$OUT"; }
trap cleanup EXIT
for _ in $(seq 50); do
    grep -q listening "$OUT/target.log" 2>/dev/null && break
    sleep 0.1
done

echo "target: $TARGET ($THREADS threads), $CONNS connections, ${DUR}s each, $(nproc) CPUs"
echo "warm-up…"
wrk -t "$THREADS" -c "$CONNS" -d 2s "$URL" >/dev/null

wrk -t "$THREADS" -c "$CONNS" -d "${DUR}s" --latency "$URL" >"$OUT/wrk.txt"
sleep 1
oha -z "${DUR}s" -c "$CONNS" --no-tui --output-format json "$URL" >"$OUT/oha.json"
sleep 1
"$TESTBED" load "$URL" -c "$CONNS" -d "${DUR}s" --json >"$OUT/ours.json"

# Idle users: each holds a connection to an endpoint that answers after a minute.
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
idle_rss() {
    "$TESTBED" load "http://127.0.0.1:$PORT/slow?ms=60000" -c "$1" -d 30s --timeout 60s --json >/dev/null 2>&1 &
    local pid=$!
    sleep 4
    local kb
    kb=$(rss_kb "$pid")
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    echo "$kb"
}
RSS1=$(idle_rss 1)
RSS1000=$(idle_rss 1000)

python3 - "$OUT" "$RSS1" "$RSS1000" <<'PY'
import json, re, sys
out, rss1, rss1000 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
wrk = open(f"{out}/wrk.txt").read()
wrk_rps = float(re.search(r"Requests/sec:\s+([\d.]+)", wrk).group(1))
def wrk_pct(p):
    m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", wrk, re.M)
    v, u = float(m.group(1)), m.group(2)
    return v / 1000 if u == "us" else v * 1000 if u == "s" else v
oha = json.load(open(f"{out}/oha.json"))
oha_rps = oha["summary"]["requestsPerSec"]
oha_p = {k: v * 1000 for k, v in oha["latencyPercentiles"].items()}
ours = json.load(open(f"{out}/ours.json"))["summary"]
print()
print(f"{'tool':<14}{'req/s':>12}{'p50 ms':>10}{'p99 ms':>10}")
print(f"{'wrk':<14}{wrk_rps:>12.0f}{wrk_pct(50):>10.3f}{wrk_pct(99):>10.3f}")
print(f"{'oha':<14}{oha_rps:>12.0f}{oha_p['p50']:>10.3f}{oha_p['p99']:>10.3f}")
print(f"{'testbed load':<14}{ours['rps']:>12.0f}{ours['p50_ms']:>10.3f}{ours['p99_ms']:>10.3f}")
print()
print(f"testbed/wrk: {ours['rps'] / wrk_rps:.2f}x   testbed/oha: {ours['rps'] / oha_rps:.2f}x")
print(f"errors: testbed {ours['errors']}")
print(f"p50 testbed vs oha: {(ours['p50_ms'] / oha_p['p50'] - 1) * 100:+.1f}%   "
      f"p99: {(ours['p99_ms'] / oha_p['p99'] - 1) * 100:+.1f}%")
print()
print(f"RSS with 1 idle user: {rss1 / 1024:.1f} MiB, with 1000: {rss1000 / 1024:.1f} MiB "
      f"-> {(rss1000 - rss1) / 1024:.1f} MiB per 1,000 idle virtual users")
PY
