"""Shared test configuration.

Data comes from `../shared` beside the repository (override with TFHYPER_SHARED), never from an absolute path.
"""
import os
import pathlib

import pytest
from hypothesis import HealthCheck, settings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# No test may fail on how fast the machine is: Hypothesis' per-example deadline and its "too slow" health check
# both measure wall-clock time, so both are off for every test (a test's own settings inherit this profile).
settings.register_profile("machine-independent", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("machine-independent")

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("TFHYPER_SHARED", REPO.parent / "shared"))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running; excluded by default (run with -m slow)")


@pytest.fixture(scope="session")
def shared_dir():
    if not SHARED.is_dir():
        pytest.fail(f"shared data not found at {SHARED}; set TFHYPER_SHARED")
    return SHARED


# MS-SSIM's five scales need 161 pixels; 192 halves evenly down to 12.
KODAK_CROP_SIDE = 192


@pytest.fixture(scope="session")
def crops(shared_dir):
    """Two 192x192 uint8 crops of Kodak images, for tests that measure codecs on real content."""
    from PIL import Image
    import numpy as np

    images = {}
    for name, (top, left) in {"kodim05": (100, 300), "kodim23": (150, 250)}.items():
        with Image.open(shared_dir / "data" / "kodak" / f"{name}.png") as image:
            side = KODAK_CROP_SIDE
            images[name] = np.asarray(image.convert("RGB"))[top : top + side, left : left + side].copy()
    return images
