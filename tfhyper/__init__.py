"""tfhyper: Ballé et al. 2018, "Variational image compression with a scale hyperprior", in TensorFlow 2 / Keras 3.

The public names are loaded on first use, so that `import tfhyper` (and `python -m tfhyper --help`) does not
pay for importing TensorFlow until a model is needed.
"""
import importlib

from tfhyper.errors import BitstreamError, TfhyperError

_LAZY = {
    "FactorizedPrior": "tfhyper.models",
    "ScaleHyperprior": "tfhyper.models",
    "load_model": "tfhyper.models",
    "model_for_quality": "tfhyper.models",
    "compress": "tfhyper.codec",
    "decompress": "tfhyper.codec",
}

# Submodules reachable as attributes (`tfhyper.zoo.load(...)` after `import tfhyper`).
_SUBMODULES = ("zoo",)

__all__ = ["BitstreamError", "TfhyperError", *_LAZY, *_SUBMODULES]
__version__ = "0.1.0"


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"tfhyper.{name}")
    raise AttributeError(f"module 'tfhyper' has no attribute {name!r}")
