#!/usr/bin/env bash
# TAP parsing: Testbed's harness against Perl's `prove` on the same
# 1,000,000-line stream, in one run.
#   bench/tap.sh
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
python3 - "$WORK/big.tap" <<'PY'
import sys
with open(sys.argv[1], "w") as f:
    f.write("TAP version 13\n1..1000000\n")
    for i in range(1, 1000001):
        f.write(f"ok {i} - case {i}\n")
PY
printf '#!/bin/sh\ncat %s\n' "$WORK/big.tap" > "$WORK/big.t"
chmod +x "$WORK/big.t"
cargo build --release -q -p testbed-cli
echo "== testbed tck run (1,000,000 lines)"
/usr/bin/time -f "%e s, %M KB max RSS" target/release/testbed tck run "$WORK/big.t" >/dev/null
echo "== prove (same script)"
/usr/bin/time -f "%e s, %M KB max RSS" prove -e sh "$WORK/big.t" >/dev/null
