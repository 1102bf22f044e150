#!/usr/bin/env bash
# Allure 2 (the `allure` command line, from npm's allure-commandline; needs a
# Java runtime) on the same results as bench/results.sh: N passing test
# results (one failure per 100,000), written as Allure's one
# `<uuid>-result.json` file per test, then `allure generate` to its HTML report.
# Wall time, peak memory (RSS of the JVM) and the report's size.
#
#   bench/allure.sh [N ...]              (default: 100000)
#   ALLURE=/path/to/allure bench/allure.sh 1000000
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(100000)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
if [ -z "${ALLURE:-}" ]; then
  if ! command -v allure >/dev/null; then
    (cd "$WORK" && npm install --silent --no-audit --no-fund allure-commandline@2.46.1 >/dev/null)
    ALLURE="$WORK/node_modules/.bin/allure"
  else
    ALLURE=allure
  fi
fi
[ -x /usr/bin/time ] || apt-get install -y -qq time >/dev/null
echo "allure: $ALLURE ($("$ALLURE" --version)), $(java -version 2>&1 | head -n 1)"
for N in "${SIZES[@]}"; do
  R="$WORK/results-$N"
  python3 - "$R" "$N" <<'PY'
import json, os, sys, uuid
out, n = sys.argv[1], int(sys.argv[2])
os.makedirs(out)
for i in range(1, n + 1):
    u = str(uuid.uuid4())
    r = {"uuid": u, "historyId": "big.t#%d" % i, "name": "case %d" % i,
         "fullName": "big.t.case %d" % i, "status": "passed", "stage": "finished",
         "start": 1700000000000, "stop": 1700000000000,
         "labels": [{"name": "suite", "value": "big.t"}]}
    if i % 100000 == 50000 or (n < 100000 and i == 2):
        r["status"] = "failed"
        r["statusDetails"] = {"message": "case %d failed on purpose" % i}
    with open(os.path.join(out, u + "-result.json"), "w") as f:
        json.dump(r, f)
PY
  echo
  echo "== $N test results ($(du -sm "$R" | cut -f1) MB of result files)"
  rc=0
  /usr/bin/time -f "%e %M" -o "$WORK/time" "$ALLURE" generate "$R" -o "$WORK/report-$N" --clean \
    >"$WORK/out" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "allure generate failed ($rc):"
    tail -n 5 "$WORK/out"
  fi
  printf '%-44s %s\n' "allure generate" "$(tail -n 1 "$WORK/time" | awk '{ printf "%8.2f s %8.1f MB", $1, $2 / 1024 }')"
  [ -d "$WORK/report-$N" ] && printf '  %-42s %s MB\n' "report directory" "$(du -sm "$WORK/report-$N" | cut -f1)"
  rm -rf "$R" "$WORK/report-$N"
done
