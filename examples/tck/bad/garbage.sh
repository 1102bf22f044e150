#!/bin/sh
# 50 MB of binary garbage must be parsed as it streams, not buffered.
echo "1..1"
echo "ok 1 - before the garbage"
head -c 50000000 /dev/urandom
