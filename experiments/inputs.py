"""What the programs read besides results: trained models (files, run directories, the zoo) and image folders.

`experiments.evaluate`, `experiments.figures` and `experiments.baselines` name and check their inputs the same way
through these, so that a model or an image has one name in every results file.
"""
import pathlib

import numpy as np

from tfhyper import zoo
from tfhyper.imageio import read_image
from tfhyper.losses import MS_SSIM_MIN_SIDE
from tfhyper.models import CompressionModel, IncompatibleModelError, load_model

MODEL_FILE = "model.keras"  # what `tfhyper.training.train` leaves in a finished run directory
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".bmp", ".tif", ".tiff")


def load_models(paths):
    """name -> model for saved `.keras` files (named by file stem), run directories (named by directory) and zoo
    models `zoo:NAME` (named NAME; downloaded and converted once, see `tfhyper.zoo`)."""
    models = {}
    for given in paths:
        path = zoo.resolve(given)
        name = zoo.model_name(given) or (path.name if path.is_dir() else path.stem)
        file = path / MODEL_FILE if path.is_dir() else path
        if not file.is_file():
            if path.is_dir():
                raise ValueError(f"model {path} has no {MODEL_FILE} (has its training finished?)")
            raise ValueError(f"model {path} not found")
        if name in models:
            raise ValueError(f"two models are named {name!r}; rename one of them")
        try:
            model = load_model(file)
        except IncompatibleModelError:
            raise
        except (ValueError, OSError, TypeError, KeyError):
            raise ValueError(f"{file} is not a saved tfhyper model") from None
        if not isinstance(model, CompressionModel):
            raise ValueError(f"{file} holds a {type(model).__name__}, not a tfhyper model")
        models[name] = model
    return models


# --- images ------------------------------------------------------------------------------------------------


def load_images(directory, limit=None):
    """The images of `directory` (sorted by file name) as name -> uint8 RGB array, at most `limit` of them."""
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        raise ValueError(f"image folder not found: {directory}")
    paths = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not paths:
        raise ValueError(f"no images in {directory}")
    return {path.stem: read_image(path) for path in paths}


def check_images(images):
    """Refuse what is not a non-empty mapping of uint8 RGB images large enough for MS-SSIM."""
    if not images:
        raise ValueError("no images given")
    for name, image in images.items():
        if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3):
            raise ValueError(f"image {name!r} must be a uint8 array of shape (H, W, 3)")
        if min(image.shape[:2]) < MS_SSIM_MIN_SIDE:
            raise ValueError(f"image {name!r} is {image.shape[0]}x{image.shape[1]}; MS-SSIM needs at least "
                             f"{MS_SSIM_MIN_SIDE} pixels per side")
