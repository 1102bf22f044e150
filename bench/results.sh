#!/usr/bin/env bash
# Results at scale: one TAP script printing N test points (`ok N - case N`, one
# failure per 100,000 and at least one), run by `testbed tck run` and by Perl's
# `prove` in one run; wall time, peak memory (RSS) and report file sizes.
#
#   bench/results.sh [N ...]                  (default: 100000 1000000)
#   bench/results.sh 100000 1000000 10000000  (10M takes a few minutes)
#   TESTBED=/path/to/testbed bench/results.sh (another build, e.g. an older one)
#   ROWS=run bench/results.sh 10000000       (only `tck run` and `tck run --json`)
#
# Allure, for comparison: bench/allure.sh (its own results format and HTML).
#
# Rows: `tck run` alone; with --json --junit --html; the HTML opened in
# headless Chromium (bench/html_open.py: first paint, list ready, a search) when
# chromium and chromedriver are installed; `tck problems` and `tck compare` (two
# reports of the same size), `report convert` to HTML, and prove. Figures go in
# docs/benchmarks.md, "Results at scale".
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(100000 1000000)
if [ ! -x /usr/bin/time ]; then
  apt-get install -y -qq time >/dev/null
fi
if [ -z "${TESTBED:-}" ]; then
  cargo build --release -q -p testbed-cli
  TESTBED=target/release/testbed
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# "wall s  peak MB" of one command, its output thrown away; exit status 0 or 1
# (a failing test) both count as a run.
measure() {
  local rc=0
  /usr/bin/time -f "%e %M" -o "$WORK/time" "$@" >/dev/null 2>"$WORK/stderr" || rc=$?
  if [ "$rc" -gt 1 ]; then
    echo "failed ($rc): $*" >&2
    cat "$WORK/stderr" >&2
    exit 1
  fi
  tail -n 1 "$WORK/time" | awk '{ printf "%8.2f s %8.1f MB", $1, $2 / 1024 }'
}
size() { awk -v b="$(stat -c %s "$1")" -v n="$2" 'BEGIN { printf "%8.1f MB (%.1f B/case)", b / 1048576, b / n }'; }

echo "testbed: $TESTBED ($($TESTBED --version 2>/dev/null || echo '?'))"
echo "prove:   $(command -v prove) (perl $(perl -e 'print $^V'))"
for N in "${SIZES[@]}"; do
  D="$WORK/$N"
  mkdir -p "$D/kit"
  # A Perl script, so prove and testbed run the very same producer.
  cat >"$D/kit/big.t" <<EOF
#!/usr/bin/perl
\$| = 0;
my \$n = $N;
print "TAP version 13\n1..\$n\n";
for my \$i (1 .. \$n) {
  if (\$i % 100000 == 50000 || (\$n < 100000 && \$i == 2)) {
    print "not ok \$i - case \$i\n  ---\n  message: case \$i failed on purpose\n  ...\n";
  } else {
    print "ok \$i - case \$i\n";
  }
}
exit 0;
EOF
  echo
  echo "== $N test points"
  printf '%-44s %s\n' "testbed tck run" "$(measure "$TESTBED" tck run "$D/kit")"
  if [ "${ROWS:-all}" = run ]; then
    printf '%-44s %s\n' "testbed tck run --json" \
      "$(measure "$TESTBED" tck run "$D/kit" --json "$D/r.json")"
    printf '  %-42s %s\n' "JSON" "$(size "$D/r.json" "$N")"
    rm -rf "$D"
    continue
  fi
  printf '%-44s %s\n' "testbed tck run --json --junit --html" \
    "$(measure "$TESTBED" tck run "$D/kit" --json "$D/r.json" --junit "$D/r.xml" --html "$D/r.html")"
  printf '  %-42s %s\n' "JSON" "$(size "$D/r.json" "$N")"
  printf '  %-42s %s\n' "JUnit" "$(size "$D/r.xml" "$N")"
  printf '  %-42s %s\n' "HTML" "$(size "$D/r.html" "$N")"
  if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    python3 bench/html_open.py "$D/r.html" "case $((N * 7 / 9))" || echo "  (Chromium measurement failed)"
  fi
  gzip -k -6 "$D/r.json"
  printf '  %-42s %s\n' "JSON, gzip -6" "$(size "$D/r.json.gz" "$N")"
  cp "$D/r.json" "$D/r2.json"
  printf '%-44s %s\n' "testbed tck problems r.json" "$(measure "$TESTBED" tck problems "$D/r.json")"
  printf '%-44s %s\n' "testbed tck compare r.json r2.json" "$(measure "$TESTBED" tck compare "$D/r.json" "$D/r2.json")"
  printf '%-44s %s\n' "testbed report convert r.json --to html" \
    "$(measure "$TESTBED" report convert "$D/r.json" --to html -o "$D/c.html")"
  printf '%-44s %s\n' "prove kit/big.t" "$(measure prove "$D/kit/big.t")"
  rm -rf "$D"
done
