#!/bin/sh
# Outlives any sensible --timeout; its child must die with it.
echo "1..1"
sleep 30 &
sleep 30
echo "ok 1"
