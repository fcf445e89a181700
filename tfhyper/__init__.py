"""tfhyper: Ballé et al. 2018, "Variational image compression with a scale hyperprior", in TensorFlow 2 / Keras 3."""
from tfhyper.errors import BitstreamError, TfhyperError
from tfhyper.models import FactorizedPrior, ScaleHyperprior, load_model, model_for_quality

__all__ = [
    "BitstreamError",
    "FactorizedPrior",
    "ScaleHyperprior",
    "TfhyperError",
    "load_model",
    "model_for_quality",
]
__version__ = "0.1.0"
