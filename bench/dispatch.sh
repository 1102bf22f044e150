#!/usr/bin/env bash
# Dispatch round trip and throughput of no-op tasks, embedded store and etcd,
# in one run. Needs Debian's etcd-server for the etcd half (scripts/test
# installs it).
#
#   bench/dispatch.sh [TASKS]          (default 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
TASKS=${1:-1000}
cargo build --release -q -p testbed-bench
B=target/release/dispatch
export TESTBED_LOG=warn RUST_LOG=warn
$B --store redb --tasks "$TASKS" 2>/dev/null

if command -v etcd >/dev/null; then
  WORK=$(mktemp -d)
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  PEER=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  etcd --data-dir "$WORK/etcd" --listen-client-urls http://127.0.0.1:$PORT --advertise-client-urls http://127.0.0.1:$PORT \
    --listen-peer-urls http://127.0.0.1:$PEER --initial-advertise-peer-urls http://127.0.0.1:$PEER \
    --initial-cluster default=http://127.0.0.1:$PEER --log-level error >"$WORK/etcd.log" 2>&1 &
  ETCD=$!
  trap 'kill -9 $ETCD 2>/dev/null; rm -rf "$WORK"' EXIT
  for _ in $(seq 50); do curl -sf http://127.0.0.1:$PORT/health >/dev/null && break; sleep 0.1; done
  $B --store etcd://127.0.0.1:$PORT --tasks "$TASKS" 2>/dev/null
else
  echo "etcd not installed: skipping the etcd half (apt-get install etcd-server)"
fi
