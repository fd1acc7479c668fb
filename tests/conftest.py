"""Test-session settings: converted pretrained weights go to a temporary cache, not the user's, and
Hugging Face never goes online (a Hub id is read from the local cache or refused)."""

import os
import shutil
import tempfile

_CACHE = tempfile.mkdtemp(prefix="gapscope-test-cache-")


def pytest_configure(config):
    os.environ["GAPSCOPE_CACHE"] = _CACHE
    os.environ["HF_HUB_OFFLINE"] = "1"


def pytest_unconfigure(config):
    shutil.rmtree(_CACHE, ignore_errors=True)
