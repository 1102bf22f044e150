#!/bin/sh
# Node's runner is the TAP producer; the harness only sees this script's stdout.
cd "$(dirname "$0")" || exit 2
exec node --test --test-reporter=tap sample.test.mjs
