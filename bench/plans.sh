#!/usr/bin/env bash
# Plan engine per step (a wide DAG and a deep chain of no-op steps through the
# real server and local agents) and GET /api/runs over many stored runs, on the
# embedded store and, when etcd is installed, on etcd.
#
#   bench/plans.sh [STEPS] [RUNS]          (defaults 1000 and 10000)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-1000}
RUNS=${2:-10000}
cargo build --release -q -p testbed-bench
export TESTBED_LOG=warn RUST_LOG=warn
target/release/plan --store redb --steps "$STEPS" 2>/dev/null
target/release/runs --store redb --runs "$RUNS" 2>/dev/null

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
  target/release/plan --store etcd://127.0.0.1:$PORT --steps "$STEPS" 2>/dev/null
else
  echo "etcd not installed: skipping the etcd half (apt-get install etcd-server)"
fi
