#!/bin/sh
# Malformed TAP: unknown lines, a numbering gap and a broken YAML block.
echo "TAP version 13"
echo "1..3"
echo "ok 1 - fine"
echo "this is not TAP"
echo "ok 3 - skipped a number"
echo "  ---"
echo "  message: [unclosed"
echo "  ..."
echo "ok 4 - one too many"
