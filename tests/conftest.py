"""Shared test configuration.

Data comes from `../shared` beside the repository (override with TFHYPER_SHARED), never from an absolute path.
"""
import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("TFHYPER_SHARED", REPO.parent / "shared"))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running; excluded by default (run with -m slow)")


@pytest.fixture(scope="session")
def shared_dir():
    if not SHARED.is_dir():
        pytest.fail(f"shared data not found at {SHARED}; set TFHYPER_SHARED")
    return SHARED
