#!/usr/bin/env bash
# API-test runners side by side: the same N simple "GET, assert status 200 and
# body" tests as a Testbed YAML suite, a Postman collection run by Newman (and
# by `testbed api run`), and a Hurl file when hurl is installed — one after
# the other against one local server (crates/load/examples/target.rs), ROUNDS
# times in turn; medians of requests per second are reported.
#
#   bash bench/api.sh            # N=2000 ROUNDS=3
#   LIB=lodash N=500 bash bench/api.sh   # each test script also does require('lodash')
#
# LIB names a Postman sandbox library (lodash, ajv, cheerio, moment…) that
# every test script of the collection requires first, to measure what loading
# it costs per script in each runner; the YAML suite and Hurl file are
# unchanged by it. NO_BUILD=1 uses the release binaries already built.
#
# Newman comes from npm (`npm install -g newman`), Hurl from
# `cargo install hurl` (needs libcurl and libxml2 dev packages); a tool that
# is missing is left out and said so.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-2000}
ROUNDS=${ROUNDS:-3}
LIB=${LIB:-}
PORT=${PORT:-18098}
OUT=$(mktemp -d)
URL="http://127.0.0.1:$PORT"

command -v newman >/dev/null || npm install -g newman >/dev/null 2>&1 || true

if [ -z "${NO_BUILD:-}" ]; then
    cargo build --release -q -p testbed-load --example target
    cargo build --release -q -p testbed-cli --bin testbed
fi
TESTBED=target/release/testbed
target/release/examples/target "127.0.0.1:$PORT" --threads 1 >"$OUT/target.log" 2>&1 &
TARGET_PID=$!
trap 'kill $TARGET_PID 2>/dev/null || true; rm -rf "$OUT"' EXIT
for _ in $(seq 50); do curl -fs "$URL/" >/dev/null 2>&1 && break; sleep 0.1; done

python3 - "$N" "$URL" "$OUT" "$LIB" <<'PY'
import json, sys
n, url, out, lib = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
# The library is used (one call), so neither runner can skip loading it.
uses = {"lodash": "lib.isString('x')", "ajv": "new lib()", "cheerio": "lib.load('<p>x</p>')"}
prefix = [f"const lib = require('{lib}'); {uses.get(lib, 'lib')};"] if lib else []
with open(f"{out}/suite.yaml", "w") as f:
    f.write(f"name: bench\nhttp: {{base_url: \"{url}\"}}\ntests:\n")
    for i in range(n):
        f.write(f"  - name: get {i}\n    steps:\n      - request: {{url: /item/{i}}}\n"
                "        assert: [{status: 200}, {body: {equals: \"Hello, World!\"}}]\n")
items = [{"name": f"get {i}",
          "request": {"method": "GET", "url": f"{url}/item/{i}"},
          "event": [{"listen": "test", "script": {"exec": prefix + [
              "pm.test('status', () => pm.response.to.have.status(200));",
              "pm.test('body', () => pm.expect(pm.response.text()).to.equal('Hello, World!'));"]}}]}
         for i in range(n)]
json.dump({"info": {"name": "bench", "schema": "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"},
           "item": items}, open(f"{out}/bench.postman_collection.json", "w"))
with open(f"{out}/bench.hurl", "w") as f:
    for i in range(n):
        f.write(f"GET {url}/item/{i}\nHTTP 200\n[Asserts]\nbody == \"Hello, World!\"\n\n")
PY

declare -A CMDS
CMDS[testbed-yaml]="$TESTBED api run -q $OUT/suite.yaml"
CMDS[testbed-postman]="$TESTBED api run -q $OUT/bench.postman_collection.json"
command -v newman >/dev/null && CMDS[newman]="newman run $OUT/bench.postman_collection.json --reporters cli --reporter-cli-no-success-assertions"
command -v hurl >/dev/null && CMDS[hurl]="hurl --test $OUT/bench.hurl"
for t in newman hurl; do [ -n "${CMDS[$t]:-}" ] || echo "($t not installed: left out)"; done

declare -A RESULTS
for r in $(seq "$ROUNDS"); do
    for t in testbed-yaml testbed-postman newman hurl; do
        [ -n "${CMDS[$t]:-}" ] || continue
        start=$(date +%s.%N)
        /usr/bin/time -f "%M" -o "$OUT/$t.mem" ${CMDS[$t]} >"$OUT/$t.log" 2>&1 || { echo "$t failed:"; tail -20 "$OUT/$t.log"; exit 1; }
        end=$(date +%s.%N)
        RESULTS[$t]+="$(python3 -c "print(f'{$N/($end-$start):.0f}')") "
        RESULTS[$t.mem]="$(cat "$OUT/$t.mem")"
    done
done

echo
echo "$N GET-with-assert tests, $ROUNDS rounds${LIB:+, collection scripts require('$LIB')}, median requests/s and peak RSS:"
for t in testbed-yaml testbed-postman newman hurl; do
    [ -n "${RESULTS[$t]:-}" ] || continue
    med=$(echo "${RESULTS[$t]}" | tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    printf "  %-16s %8s req/s   %6s MiB   (samples: %s)\n" "$t" "$med" "$(( ${RESULTS[$t.mem]} / 1024 ))" "${RESULTS[$t]}"
done
