#!/usr/bin/env python3
"""A kit script whose TAP comes from the pytest-tap plugin (PyPI)."""
import sys

import pytest


def test_adds():
    assert 1 + 1 == 2


def test_fails_on_purpose():
    assert "libvirt" == "qemu", "a deliberate failure"


@pytest.mark.skip(reason="needs a spare disk")
def test_needs_disk():
    pass


if __name__ == "__main__":
    sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "--tap-stream", __file__]))
