"""Weight import from CompressAI's models of the same paper (`bmshj2018-factorized`, `bmshj2018-hyperprior`).

CompressAI publishes trained weights for both models in its model zoo as PyTorch checkpoints named

    bmshj2018-factorized-prior-{1..8}-<hash>.pth.tar      FactorizedPrior, MSE
    bmshj2018-factorized-ms-ssim-{1..8}-<hash>.pth.tar    FactorizedPrior, MS-SSIM
    bmshj2018-hyperprior-{1..8}-<hash>.pth.tar            ScaleHyperprior, MSE
    bmshj2018-hyperprior-ms-ssim-{1..8}-<hash>.pth.tar    ScaleHyperprior, MS-SSIM
    mbt2018-mean-{1..8}-<hash>.pth.tar                    MeanScaleHyperprior, MSE (Minnen et al. 2018's mean &
                                                          scale hyperprior without the context model)

with N = 128, M = 192 for qualities 1-5 and N = 192, M = 320 for qualities 6-8 (`paper.QUALITIES`). A checkpoint
converts with

    python -m tfhyper convert bmshj2018-hyperprior-3-<hash>.pth.tar hyperprior-3.keras

which reads the file without PyTorch (`tfhyper.pytorch_checkpoint`, an unpickler that builds numpy arrays and
refuses anything but tensors); `.npz` archives of the same state dict (keys `name` or `param/name`) convert too.

How CompressAI's layout maps onto tfhyper's (the transforms' layer indices are the same on both sides):

- Conv2d weight (out, in, kh, kw) -> Keras Conv2D kernel (kh, kw, in, out). Both compute a cross-correlation.
- ConvTranspose2d weight (in, out, kh, kw) -> Keras Conv2DTranspose kernel (kh, kw, out, in), not flipped: both
  add w[a, b] x[i, j] at output (s i - p + a, s j - p + b) (`layers.deconv` crops Keras' "valid" output to
  PyTorch's placement).
- GDN stores beta and gamma reparameterized, value = max(stored, sqrt(minimum + 2^-36))^2 - 2^-36 (minimum
  1e-6 for beta, 0 for gamma). The values are decoded here and re-encoded with the inverse of tfhyper's own
  reparameterization (`layers.NonNegative`); gamma[i, j] weighs input channel j for output channel i on both sides.
- The entropy bottleneck is the density of appendix 6.1 with filters (3, 3, 3, 3) (K = 5, not the paper's
  K = 4), stored per channel exactly as tfhyper's `NonParametricDensity` stores it: `matrices.k` (C, r_out, r_in)
  before softplus, `biases.k` (C, r_out, 1), `factors.k` (C, r_out, 1) before tanh.
- CompressAI quantizes the bottleneck's latent as round(v - median) + median with `quantiles[:, 0, 1]`, a median
  fitted by an auxiliary loss, which can be off the density's true median by a few hundredths. A converted model
  keeps those medians (`fixed_medians=True`) so that it quantizes exactly as CompressAI does;
  `compressai_medians` returns them.
- CompressAI's integer coding tables (`_quantized_cdf`, `_offset`, `_cdf_length`, `scale_table`) are not carried
  over: tfhyper builds its own from the densities (`update_tables`).

The training trade-off lambda is not part of a state dict; converted models carry `UNKNOWN_LMBDA` (NaN) unless
one is given, so that training one without choosing lambda fails visibly instead of optimizing the wrong loss.
"""
import argparse
import dataclasses
import math
import os
import sys
import tempfile

import keras
import numpy as np

from tfhyper import paper, pytorch_checkpoint
from tfhyper.layers import GDN
from tfhyper.models import model_class

# CompressAI's EntropyBottleneck default: K = 5 layers 1 -> 3 -> 3 -> 3 -> 3 -> 1 per channel.
COMPRESSAI_DENSITY_FILTERS = (3, 3, 3, 3)
UNKNOWN_LMBDA = float("nan")

# Added under the square root of both libraries' non-negative reparameterization (2^-18 squared).
_PEDESTAL = 2.0**-36
# GDN's lower bound on beta in both libraries (gamma's is 0).
_BETA_MIN = 1e-6
# Tolerance for buffers whose value tfhyper assumes: they are float32 copies of the same constants.
_BUFFER_RTOL = 1e-6


@dataclasses.dataclass(frozen=True)
class _Entry:
    """What a state-dict key must hold: a shape (None = any size), whether it may be absent, whether an empty
    array is allowed (CompressAI's coding buffers before `update()`), and a value tfhyper assumes."""

    shape: tuple
    required: bool = True
    may_be_empty: bool = False
    value: float | None = None


def _conv(name, out_channels, in_channels, kernel_size):
    return {
        f"{name}.weight": _Entry((out_channels, in_channels, kernel_size, kernel_size)),
        f"{name}.bias": _Entry((out_channels,)),
    }


def _deconv(name, in_channels, out_channels, kernel_size):
    return {
        f"{name}.weight": _Entry((in_channels, out_channels, kernel_size, kernel_size)),
        f"{name}.bias": _Entry((out_channels,)),
    }


def _gdn(name, channels):
    """GDN parameters, and the reparameterization's buffers that some CompressAI versions save."""
    entries = {f"{name}.beta": _Entry((channels,)), f"{name}.gamma": _Entry((channels, channels))}
    for param, minimum in (("beta", _BETA_MIN), ("gamma", 0.0)):
        entries[f"{name}.{param}_reparam.pedestal"] = _Entry((1,), required=False, value=_PEDESTAL)
        entries[f"{name}.{param}_reparam.lower_bound.bound"] = _Entry(
            (1,), required=False, value=math.sqrt(minimum + _PEDESTAL)
        )
    return entries


def _entropy_bottleneck(channels):
    dims = (1,) + COMPRESSAI_DENSITY_FILTERS + (1,)
    entries = {}
    for k in range(len(dims) - 1):
        entries[f"entropy_bottleneck.matrices.{k}"] = _Entry((channels, dims[k + 1], dims[k]))
        entries[f"entropy_bottleneck.biases.{k}"] = _Entry((channels, dims[k + 1], 1))
        if k < len(dims) - 2:
            entries[f"entropy_bottleneck.factors.{k}"] = _Entry((channels, dims[k + 1], 1))
    entries["entropy_bottleneck.quantiles"] = _Entry((channels, 1, 3))
    entries.update(_coding_buffers("entropy_bottleneck", channels))
    entries["entropy_bottleneck.target"] = _Entry((3,), required=False)
    return entries


def _gaussian_conditional():
    entries = _coding_buffers("gaussian_conditional", None)
    entries["gaussian_conditional.scale_table"] = _Entry((None,), required=False, may_be_empty=True)
    for name in ("scale_bound", "lower_bound_scale.bound"):
        entries[f"gaussian_conditional.{name}"] = _Entry((1,), required=False, value=paper.SCALE_BOUND)
    return entries


def _coding_buffers(module, rows):
    """CompressAI's own integer coding tables (ignored) and likelihood bound (checked)."""
    return {
        f"{module}._offset": _Entry((rows,), required=False, may_be_empty=True),
        f"{module}._quantized_cdf": _Entry((rows, None), required=False, may_be_empty=True),
        f"{module}._cdf_length": _Entry((rows,), required=False, may_be_empty=True),
        f"{module}.likelihood_lower_bound.bound": _Entry((1,), required=False, value=paper.LIKELIHOOD_BOUND),
    }


def _expected_entries(kind, num_filters, latent_filters):
    """Every key of CompressAI's `kind` ("factorized", "hyperprior" or "meanscale") state dict, in its order, with
    its layout."""
    n, m = num_filters, latent_filters
    entries = {}
    for i, (cin, cout) in enumerate(((3, n), (n, n), (n, n), (n, m))):
        entries.update(_conv(f"g_a.{2 * i}", cout, cin, 5))
        if i < 3:
            entries.update(_gdn(f"g_a.{2 * i + 1}", cout))
    for i, (cin, cout) in enumerate(((m, n), (n, n), (n, n), (n, 3))):
        entries.update(_deconv(f"g_s.{2 * i}", cin, cout, 5))
        if i < 3:
            entries.update(_gdn(f"g_s.{2 * i + 1}", cout))
    if kind == "factorized":
        entries.update(_entropy_bottleneck(m))
        return entries
    entries.update(_conv("h_a.0", n, m, 3))
    entries.update(_conv("h_a.2", n, n, 5))
    entries.update(_conv("h_a.4", n, n, 5))
    if kind == "meanscale":  # mbt2018-mean: h_s widens to 3M/2, then 2M channels (scales, then means)
        entries.update(_deconv("h_s.0", n, m, 5))
        entries.update(_deconv("h_s.2", m, m * 3 // 2, 5))
        entries.update(_conv("h_s.4", 2 * m, m * 3 // 2, 3))
    else:
        entries.update(_deconv("h_s.0", n, n, 5))
        entries.update(_deconv("h_s.2", n, n, 5))
        entries.update(_conv("h_s.4", m, n, 3))
    entries.update(_entropy_bottleneck(n))
    entries.update(_gaussian_conditional())
    return entries


def parameter_count(kind, num_filters, latent_filters):
    """Numbers in a CompressAI bmshj2018 state dict of `kind` with N, M (its required entries): the model's size."""
    entries = _expected_entries(kind, num_filters, latent_filters)
    return sum(math.prod(entry.shape) for entry in entries.values() if entry.required)


# -- reading and checking a state dict ------------------------------------------------------------------


def _canonical_key(key):
    """Older CompressAI releases named the density's parameters `_matrices.k` or `_matrix{k}` (and so on)."""
    prefix = "entropy_bottleneck."
    if not key.startswith(prefix):
        return key
    name = key[len(prefix) :]
    for new, old_list, old_flat in (
        ("matrices", "_matrices.", "_matrix"),
        ("biases", "_biases.", "_bias"),
        ("factors", "_factors.", "_factor"),
    ):
        for old in (old_list, old_flat):
            if name.startswith(old) and name[len(old) :].isdigit():
                return f"{prefix}{new}.{name[len(old):]}"
    return key


def _as_arrays(state_dict):
    arrays = {}
    for key, value in state_dict.items():
        name = _canonical_key(str(key))
        if name in arrays:
            raise ValueError(f"state dict has {key!r} twice (under two spellings)")
        arrays[name] = np.asarray(value)
    return arrays


def _model_kind(state_dict):
    """"factorized" without any hyperprior part (h_a, h_s, gaussian_conditional); with one, "meanscale" if h_s's
    last layer has twice as many outputs as y has channels (scales and means), else "hyperprior"."""
    hyper = ("h_a.", "h_s.", "gaussian_conditional.")
    if not any(str(key).startswith(hyper) for key in state_dict):
        return "factorized"
    last, latent = state_dict.get("h_s.4.weight"), state_dict.get("g_a.6.weight")
    if last is not None and latent is not None and last.ndim == 4 and latent.ndim == 4:
        return "meanscale" if last.shape[0] == 2 * latent.shape[0] else "hyperprior"
    return "hyperprior"


def _filter_counts(arrays):
    """N and M: the output channels of the first and of the last analysis convolution."""
    counts = []
    for key in ("g_a.0.weight", "g_a.6.weight"):
        if key not in arrays:
            raise ValueError(f"missing key {key}")
        if arrays[key].ndim != 4:
            raise ValueError(f"{key} has shape {arrays[key].shape}, expected a convolution weight (out, in, kh, kw)")
        counts.append(int(arrays[key].shape[0]))
    return counts


def _check_entry(key, array, entry):
    if entry.may_be_empty and array.size == 0:
        return
    expected = entry.shape
    if array.ndim != len(expected) or any(e is not None and e != s for e, s in zip(expected, array.shape)):
        shown = tuple("*" if e is None else e for e in expected)
        raise ValueError(f"{key} has shape {array.shape}, expected {shown}")
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{key} has dtype {array.dtype}, expected numbers")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{key} has non-finite values")
    if entry.value is not None and not np.allclose(array, entry.value, rtol=_BUFFER_RTOL, atol=0):
        raise ValueError(f"{key} is {array.ravel().tolist()}, tfhyper assumes {entry.value:.9g}")


def check_state_dict(state_dict):
    """Returns (kind, N, M, arrays) for a valid state dict; ValueError naming the first offending key otherwise."""
    arrays = _as_arrays(state_dict)
    kind = _model_kind(arrays)
    num_filters, latent_filters = _filter_counts(arrays)
    entries = _expected_entries(kind, num_filters, latent_filters)
    for key, array in arrays.items():
        if key not in entries:
            raise ValueError(f"unexpected key {key} for a CompressAI bmshj2018-{kind} model")
        _check_entry(key, array, entries[key])
    for key, entry in entries.items():
        if entry.required and key not in arrays:
            raise ValueError(f"missing key {key} for a CompressAI bmshj2018-{kind} model")
    return kind, num_filters, latent_filters, arrays


# -- building the tfhyper model -----------------------------------------------------------------------------


def _gdn_values(stored, minimum):
    """CompressAI's GDN reparameterization, decoded: max(stored, sqrt(minimum + 2^-36))^2 - 2^-36 (float64)."""
    bound = np.sqrt(np.float64(minimum) + _PEDESTAL)
    return np.square(np.maximum(np.asarray(stored, np.float64), bound)) - _PEDESTAL


def _gdn_param(values):
    """The inverse of tfhyper's `layers.NonNegative`: the parameter whose reparameterized value is `values`."""
    return np.sqrt(values + _PEDESTAL).astype(np.float32)


def _keras_kernel(weight):
    """Conv2d (out, in, kh, kw) -> Conv2D (kh, kw, in, out); ConvTranspose2d (in, out, kh, kw) -> Conv2DTranspose
    (kh, kw, out, in): the same axis permutation for both, and no spatial flip (see the module docstring)."""
    return np.transpose(weight, (2, 3, 1, 0)).astype(np.float32)


def _set_transform(transform, prefix, arrays):
    """Copies `prefix`.i.* (CompressAI's nn.Sequential indices) into the same indices of a tfhyper transform."""
    convolutions = (keras.layers.Conv2D, keras.layers.Conv2DTranspose)  # siblings, not subclasses, in Keras 3
    for index, block in enumerate(transform.layers):
        name = f"{prefix}.{index}"
        if isinstance(block, GDN):
            block.beta_param.assign(_gdn_param(_gdn_values(arrays[f"{name}.beta"], _BETA_MIN)))
            block.gamma_param.assign(_gdn_param(_gdn_values(arrays[f"{name}.gamma"], 0.0)))
        elif isinstance(block, keras.Sequential):  # conv / deconv: one convolution (after a padding for conv)
            (layer,) = [layer for layer in block.layers if isinstance(layer, convolutions)]
            layer.kernel.assign(_keras_kernel(arrays[f"{name}.weight"]))
            layer.bias.assign(arrays[f"{name}.bias"].astype(np.float32))


def _set_density(density, arrays):
    for name, variables in (("matrices", density.matrices), ("biases", density.biases), ("factors", density.factors)):
        for k, variable in enumerate(variables):
            variable.assign(arrays[f"entropy_bottleneck.{name}.{k}"].astype(np.float32))


def compressai_medians(state_dict):
    """CompressAI's median of each channel of the factorized density, `quantiles[:, 0, 1]` (float32, (C,)).

    CompressAI quantizes v_hat = round(v - median) + median with these; they come from its auxiliary quantile fit,
    so they can differ from the exact medians tfhyper computes (`EntropyBottleneck.medians()`).
    """
    arrays = check_state_dict(state_dict)[3]
    return arrays["entropy_bottleneck.quantiles"][:, 0, 1].astype(np.float32)


def from_compressai(state_dict, lmbda=None, distortion="mse"):
    """A tfhyper `FactorizedPrior`, `ScaleHyperprior` or `MeanScaleHyperprior` with the weights of a CompressAI
    bmshj2018 (or mbt2018-mean) state dict.

    `state_dict` maps CompressAI's key names to arrays (numpy, or anything `np.asarray` accepts). The kind of model
    and N, M are read from the keys and shapes; a key that is unexpected, missing or of the wrong shape raises
    ValueError naming it. Returns the built model with its integer coding tables, `distortion` and `lmbda`
    (default `UNKNOWN_LMBDA`, a NaN placeholder: a state dict does not say which lambda or distortion it was trained
    for; both only matter for training).
    """
    kind, num_filters, latent_filters, arrays = check_state_dict(state_dict)
    model = model_class(kind)(
        num_filters,
        latent_filters,
        lmbda=UNKNOWN_LMBDA if lmbda is None else lmbda,
        distortion=distortion,
        density_filters=COMPRESSAI_DENSITY_FILTERS,
        fixed_medians=True,
    )
    model.build()
    model.entropy_bottleneck.stored_medians.assign(compressai_medians(arrays))
    _set_transform(model.g_a, "g_a", arrays)
    _set_transform(model.g_s, "g_s", arrays)
    for prefix in ("h_a", "h_s"):  # the hyperpriors' transforms, under the same names in both libraries
        if hasattr(model, prefix):
            _set_transform(getattr(model, prefix), prefix, arrays)
    _set_density(model.entropy_bottleneck.density, arrays)
    model.update_tables()
    return model


# -- files and the command line ---------------------------------------------------------------------------------


def state_dict_from_checkpoint(checkpoint):
    """{name: numpy array} from a loaded file's content: a raw state dict, or a training checkpoint's "state_dict"
    entry; "module." prefixes (left by torch.nn.DataParallel) are removed and tensors become numpy arrays."""
    if not isinstance(checkpoint, dict):
        raise ValueError(f"expected a state dict (a mapping of names to arrays), got {type(checkpoint).__name__}")
    state_dict = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state_dict, dict):
        raise ValueError(f"the checkpoint's state_dict is a {type(state_dict).__name__}, not a mapping")
    arrays = {}
    for key, value in state_dict.items():
        key = str(key)
        name = key[len("module.") :] if key.startswith("module.") else key
        arrays[name] = _to_numpy(key, value)
    return arrays


def _to_numpy(key, value):
    if hasattr(value, "detach"):  # a torch.Tensor, read without importing torch here
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    raise ValueError(f"{key} holds a {type(value).__name__}, not an array")


def load_state_dict_file(path):
    """A CompressAI `.pth.tar` file as {name: numpy array}, read without PyTorch (`pytorch_checkpoint`), so that
    nothing in a downloaded pickle can run."""
    return state_dict_from_checkpoint(pytorch_checkpoint.read_checkpoint(path))


def load_npz(path):
    """An `.npz` of a state dict: keys `param/<name>` (as in the test fixtures; other keys are ignored) or `<name>`."""
    prefix = "param/"
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    if any(name.startswith(prefix) for name in arrays):
        arrays = {name[len(prefix) :]: value for name, value in arrays.items() if name.startswith(prefix)}
    return state_dict_from_checkpoint(arrays)


def read_state_dict(path):
    """A state dict from `.npz` (numpy only) or a PyTorch checkpoint (`.pth.tar`, `.pth`, `.pt`)."""
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a directory, not a file")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    return load_npz(path) if str(path).endswith(".npz") else load_state_dict_file(path)


def convert_file(input_path, output_path, force=False):
    """Converts a CompressAI checkpoint (or .npz) into a tfhyper `.keras` model file; returns the model.

    The output is written to a temporary file beside it and renamed into place, so that an interrupted run never
    leaves a partial model; an existing output is only replaced with `force`.
    """
    output_path = os.fspath(output_path)
    if not output_path.endswith(".keras"):
        raise ValueError(f"{output_path}: the output must be a .keras file")
    if os.path.isdir(output_path):
        raise IsADirectoryError(f"{output_path} is a directory; give a file name")
    if os.path.exists(output_path) and not force:
        raise FileExistsError(f"{output_path} exists; use --force to overwrite it")
    directory = os.path.dirname(os.path.abspath(output_path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"no such directory: {directory}")
    model = from_compressai(read_state_dict(input_path))
    save_atomically(model, output_path)
    return model


def save_atomically(model, path):
    """`model.save(path)` through a temporary file beside it, renamed into place: never a partial `.keras`."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(suffix=".keras", prefix=".converting-", dir=directory)
    os.close(fd)
    try:
        model.save(temporary)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m tfhyper convert",
        description="Convert CompressAI bmshj2018-factorized / -hyperprior weights into a tfhyper .keras model.",
    )
    parser.add_argument("input", help="CompressAI checkpoint (.pth.tar; read without PyTorch) or .npz of a state dict")
    parser.add_argument("output", help="the .keras model file to write")
    parser.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    return parser


def main(argv=None):
    """`python -m tfhyper convert INPUT OUTPUT.keras [--force]` (argv: the arguments after "convert")."""
    args = _parser().parse_args(argv)
    try:
        model = convert_file(args.input, args.output, force=args.force)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{args.input} -> {args.output}: {type(model).__name__} N={model.num_filters} M={model.latent_filters}")
    return 0
