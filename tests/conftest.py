"""Test-session settings: converted pretrained weights go to a temporary cache, not the user's."""

import os
import shutil
import tempfile

_CACHE = tempfile.mkdtemp(prefix="gapscope-test-cache-")


def pytest_configure(config):
    os.environ["GAPSCOPE_CACHE"] = _CACHE


def pytest_unconfigure(config):
    shutil.rmtree(_CACHE, ignore_errors=True)
