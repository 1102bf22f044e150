#!/bin/sh
# The demo "application": what `make test` checks.
echo "hello from the demo app"
