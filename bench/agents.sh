#!/usr/bin/env bash
# Server cost of a large fleet: N simulated agents (register + heartbeat only,
# `testbed agent --simulate N`) on one server; reports the server's RSS and
# CPU while the fleet heartbeats.
#
#   bench/agents.sh [N] [SECONDS]        (defaults: 1000 agents, 30 s)
#
# WAIT=SECONDS (default 120) is how long the fleet may take to register.
#
# TESTBED_BIN=path/to/testbed measures that binary instead of building one
# (to compare two builds).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000}
SECS=${2:-30}
if [ -n "${TESTBED_BIN:-}" ]; then
  BIN=$TESTBED_BIN
else
  cargo build --release -q -p testbed-cli
  BIN=target/release/testbed
fi
# A socket per agent on both sides.
ulimit -n 65536 2>/dev/null || true
WORK=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
URL=http://127.0.0.1:$PORT
cleanup() { kill -9 ${SERVER:-} ${AGENTS:-} 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

TESTBED_ADMIN_PASSWORD=bench-pass TESTBED_JOIN_TOKEN=bench TESTBED_LOG=warn \
  $BIN server --listen 127.0.0.1:$PORT --store redb:$WORK/s.redb --blobs $WORK/blobs \
  --max-connections $((N + 100)) --max-connections-per-address $((N + 100)) >$WORK/server.log 2>&1 &
SERVER=$!
for _ in $(seq 100); do curl -sf $URL/healthz >/dev/null && break; sleep 0.2; done
IDLE_RSS=$(awk '/VmRSS/ {print $2}' /proc/$SERVER/status)
TESTBED_JOIN_TOKEN=bench TESTBED_LOG=error $BIN agent --server $URL --name sim --state-dir $WORK/sim --simulate $N >$WORK/agents.log 2>&1 &
AGENTS=$!

TOKEN=$(curl -s $URL/api/auth/login -H 'content-type: application/json' -d '{"username":"admin","password":"bench-pass"}' | python3 -c 'import sys,json; print(json.load(sys.stdin)["token"])')
start=$(date +%s)
while :; do
  # Every simulated agent comes from 127.0.0.1: the per-address limit is
  # raised above, and a busy server's refusal counts as "not yet".
  live=$(curl -s $URL/v2.1/slaves/detail -H "Authorization: Bearer $TOKEN" | python3 -c 'import sys,json
try: print(len(json.load(sys.stdin)))
except Exception: print(0)')
  [ "$live" -ge "$N" ] && break
  [ $(( $(date +%s) - start )) -gt "${WAIT:-120}" ] && { echo "only $live of $N agents registered after ${WAIT:-120} s" >&2; exit 1; }
  sleep 1
done
echo "all $N agents live after $(( $(date +%s) - start )) s"

ticks() { awk '{print $14 + $15}' /proc/$1/stat; }
HZ=$(getconf CLK_TCK)
t0=$(ticks $SERVER); sleep "$SECS"; t1=$(ticks $SERVER)
RSS=$(awk '/VmRSS/ {print $2}' /proc/$SERVER/status)
HWM=$(awk '/VmHWM/ {print $2}' /proc/$SERVER/status)
CPU=$(python3 -c "print(f'{($t1-$t0)/$HZ/$SECS*100:.1f}')")
echo "agents=$N server RSS idle=$((IDLE_RSS/1024)) MB with-fleet=$((RSS/1024)) MB peak=$((HWM/1024)) MB cpu=${CPU}% of one core over ${SECS}s"
