#!/usr/bin/env bash
# Load generators side by side on loopback: wrk, oha and `testbed load`
# against the same target (crates/load/examples/target.rs, a minimal hyper
# server), CONNS connections for DUR seconds each, one after the other in
# one run; then the memory of 1,000 idle virtual users.
#
#   bash bench/load.sh            # CONNS=64 DUR=10 ROUNDS=3 by default
#
# The tools run in turn ROUNDS times (wrk, oha, testbed, wrk, …) and the
# medians are reported, so a burst of other work on the machine skews one
# sample rather than one tool.
#
# Needs wrk (Debian package) and oha (`cargo install oha --locked`); both
# are installed if missing and possible.
set -euo pipefail
cd "$(dirname "$0")/.."

CONNS=${CONNS:-64}
DUR=${DUR:-10}
ROUNDS=${ROUNDS:-3}
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

for r in $(seq "$ROUNDS"); do
    echo "round $r/$ROUNDS: wrk"
    wrk -t "$THREADS" -c "$CONNS" -d "${DUR}s" --latency "$URL" >"$OUT/wrk.$r.txt"
    sleep 1
    echo "round $r/$ROUNDS: oha"
    oha -z "${DUR}s" -c "$CONNS" --no-tui --output-format json "$URL" >"$OUT/oha.$r.json"
    sleep 1
    echo "round $r/$ROUNDS: testbed load"
    "$TESTBED" load "$URL" -c "$CONNS" -d "${DUR}s" --json >"$OUT/ours.$r.json"
    sleep 1
done

# Same load for both: the target (2 ms per request) is the bottleneck, so
# oha and testbed drive the same throughput and should see the same latencies.
SLOW="http://127.0.0.1:$PORT/slow?ms=2"
echo "same load: wrk, oha and testbed load on /slow?ms=2"
wrk -t "$THREADS" -c "$CONNS" -d "${DUR}s" --latency "$SLOW" >"$OUT/wrk.slow.txt"
sleep 1
oha -z "${DUR}s" -c "$CONNS" --no-tui --output-format json "$SLOW" >"$OUT/oha.slow.json"
sleep 1
"$TESTBED" load "$SLOW" -c "$CONNS" -d "${DUR}s" --json >"$OUT/ours.slow.json"

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

python3 - "$OUT" "$ROUNDS" "$RSS1" "$RSS1000" <<'PY'
import json, re, statistics, sys
out, rounds, rss1, rss1000 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])

def wrk(r):
    t = open(f"{out}/wrk.{r}.txt").read()
    return wrk_text(t)

def wrk_text(t):
    def pct(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", t, re.M)
        v, u = float(m.group(1)), m.group(2)
        return v / 1000 if u == "us" else v * 1000 if u == "s" else v
    return float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1)), pct(50), pct(99)

def oha(r):
    d = json.load(open(f"{out}/oha.{r}.json"))
    p = d["latencyPercentiles"]
    return d["summary"]["requestsPerSec"], p["p50"] * 1000, p["p99"] * 1000

def ours(r):
    s = json.load(open(f"{out}/ours.{r}.json"))["summary"]
    return s["rps"], s["p50_ms"], s["p99_ms"]

rows = {}
for name, f in (("wrk", wrk), ("oha", oha), ("testbed load", ours)):
    samples = [f(r) for r in range(1, rounds + 1)]
    rows[name] = [statistics.median(x) for x in zip(*samples)]
    print(f"{name:<14} req/s per round: " + ", ".join(f"{s[0]:.0f}" for s in samples))
print()
print(f"{'median of ' + str(rounds):<14}{'req/s':>12}{'p50 ms':>10}{'p99 ms':>10}")
for name, (rps, p50, p99) in rows.items():
    print(f"{name:<14}{rps:>12.0f}{p50:>10.3f}{p99:>10.3f}")
t, w, o = rows["testbed load"], rows["wrk"], rows["oha"]
print()
print(f"testbed/wrk: {t[0] / w[0]:.2f}x   testbed/oha: {t[0] / o[0]:.2f}x")
print(f"p50 testbed vs oha: {(t[1] / o[1] - 1) * 100:+.1f}%   p99: {(t[2] / o[2] - 1) * 100:+.1f}%")
print()
w = wrk_text(open(f"{out}/wrk.slow.txt").read())
o = json.load(open(f"{out}/oha.slow.json"))
t = json.load(open(f"{out}/ours.slow.json"))["summary"]
op = {k: o["latencyPercentiles"][k] * 1000 for k in ("p50", "p90", "p99")}
tp = {"p50": t["p50_ms"], "p90": t["p90_ms"], "p99": t["p99_ms"]}
print(f"same load (/slow?ms=2): wrk {w[0]:.0f}, oha {o['summary']['requestsPerSec']:.0f}, "
      f"testbed {t['rps']:.0f} req/s")
wp = {"p50": w[1], "p99": w[2]}
for k in ("p50", "p90", "p99"):
    wk = f"wrk {wp[k]:.3f} ms  " if k in wp else ""
    print(f"  {k}: {wk}oha {op[k]:.3f} ms  testbed {tp[k]:.3f} ms  (testbed vs oha {(tp[k] / op[k] - 1) * 100:+.1f}%)")
print()
print(f"RSS with 1 idle user: {rss1 / 1024:.1f} MiB, with 1000: {rss1000 / 1024:.1f} MiB "
      f"-> {(rss1000 - rss1) / 1024:.1f} MiB per 1,000 idle virtual users")
PY
