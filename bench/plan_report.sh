#!/usr/bin/env bash
# Results at scale through the platform: a plan whose one `tap` step runs a
# kit of N passing test points (one Perl script, `ok N - case N`) on a
# separate `testbed agent`, against a separate `testbed server` (redb store,
# blobs in a directory). The step's report is too large for the result
# message, so it travels as a compressed blob (docs/plugins.md).
#
#   bench/plan_report.sh [N ...]             (default: 1000000)
#   TESTBED=/path/to/testbed bench/plan_report.sh 250000
#
# Prints per N: the wall time from starting the run to its end (report
# stored), the server's peak RSS and its growth over the run (VmHWM, reset
# through /proc/PID/clear_refs just before), the agent's peak RSS, the size
# of the uploaded report blob and the run report's counts. Figures go in
# docs/benchmarks.md, "Results at scale".
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(1000000)
if [ -z "${TESTBED:-}" ]; then
  cargo build --release -q -p testbed-cli
  TESTBED=target/release/testbed
fi
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

hwm() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL="http://127.0.0.1:$port"
export TESTBED_ADMIN_PASSWORD=bench-admin-1 TESTBED_JOIN_TOKEN=bench-join-token TESTBED_LOG=warn
"$TESTBED" server --listen "127.0.0.1:$port" --store "redb:$WORK/s.redb" --blobs "$WORK/blobs" \
  >"$WORK/server.log" 2>&1 &
SERVER=$!
PIDS+=("$SERVER")
"$TESTBED" agent --server "$URL" --name kit-1 --state-dir "$WORK/agent" \
  --plugins linux_system,tap >"$WORK/agent.log" 2>&1 &
AGENT=$!
PIDS+=("$AGENT")
for _ in $(seq 1 300); do
  TOKEN=$(curl -sf "$URL/api/auth/login" -H 'content-type: application/json' \
    -d "{\"username\":\"admin\",\"password\":\"$TESTBED_ADMIN_PASSWORD\"}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])' 2>/dev/null) && break
  sleep 0.2
done
api() { curl -sf -H "authorization: Bearer $TOKEN" "$@"; }
for _ in $(seq 1 300); do
  api "$URL/api/agents" | grep -q '"online"' && break
  sleep 0.2
done

echo "testbed: $TESTBED ($($TESTBED --version 2>/dev/null || echo '?'))"
printf '%10s %10s %16s %16s %14s %12s  %s\n' cases wall "server peak MB" "server grew MB" "agent peak MB" "blob MB" "report counts"
for N in "${SIZES[@]}"; do
  kit="$WORK/kit-$N.pl"
  printf '#!/usr/bin/perl\nprint "1..%s\\n"; print "ok $_ - case $_\\n" for 1..%s;\n' "$N" "$N" >"$kit"
  plan=$(python3 -c 'import json,sys; print(json.dumps({"plan": "name: big\nsteps:\n  - id: kit\n    plugin: tap\n    method: run\n    params: {path: \"%s\"}\n" % sys.argv[1], "params": {}}))' "$kit")
  echo 5 >"/proc/$SERVER/clear_refs"
  before=$(hwm "$SERVER")
  start=$(date +%s.%N)
  run=$(api "$URL/api/runs" -H 'content-type: application/json' -d "$plan" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  while :; do
    state=$(api "$URL/api/runs/$run")
    echo "$state" | python3 -c 'import json,sys; r=json.load(sys.stdin); sys.exit(0 if r["status"] not in ("pending","running") and r.get("report_id") else 1)' && break
    sleep 0.1
  done
  end=$(date +%s.%N)
  after=$(hwm "$SERVER")
  report=$(echo "$state" | python3 -c 'import json,sys; print(json.load(sys.stdin)["report_id"])')
  counts=$(api "$URL/api/reports?page_size=100" | python3 -c 'import json,sys; r=[r for r in json.load(sys.stdin)["results"] if r["id"] == sys.argv[1]][0]; print(" ".join("%s=%s" % (k, r[k]) for k in ("total","passed","failed","errors","ok")))' "$report")
  blob=$(find "$WORK/blobs/tasks" -name report.json.gz -newer "$kit" -printf '%s\n' | head -n 1)
  awk -v n="$N" -v s="$start" -v e="$end" -v b="$before" -v a="$after" -v ag="$(hwm "$AGENT")" -v bl="${blob:-0}" -v c="$counts" \
    'BEGIN { printf "%10d %9.2fs %16.1f %16.1f %14.1f %12.2f  %s\n", n, e - s, a / 1024, (a - b) / 1024, ag / 1024, bl / 1048576, c }'
done
