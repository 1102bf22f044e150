#!/usr/bin/env python3
"""TAP as tap.py writes it (TAP version 13, plan at the end), with plain prints
so it runs where tap.py is not installed."""
import sys

print("TAP version 13")
print("ok 1 test_basic.TestBasic.test_connect")
print("not ok 2 test_basic.TestBasic.test_state")
print("# Traceback (most recent call last):")
print("# AssertionError: 'running' != 'shutoff'")
print("ok 3 test_basic.TestBasic.test_skip # SKIP no spare disk")
print("not ok 4 test_basic.TestBasic.test_todo # TODO expected failure")
print("ok 5 interpreter " + ("python3" if sys.version_info[0] == 3 else "python2"))
print("1..5")
