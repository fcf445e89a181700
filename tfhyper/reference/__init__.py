"""Published Kodak rate-distortion curves (paper Figure 5, appendix 6.4 Figures 10 and 11), carried as data.

Source: the rate-distortion data published with the tensorflow/compression repository,
results/image_compression/kodak (see README.md in this folder for the names and the citation).

Each curve is one file `kodak/NAME.METRIC.csv` with a header line and one point per line, every point an
average over the 24 Kodak images: `bpp,psnr_db` for METRIC = psnr (PSNR of 8-bit sRGB, dB) and `bpp,ms_ssim`
for METRIC = msssim (raw MS-SSIM in [0, 1]; the paper plots -10 log10(1 - MS-SSIM), `tfhyper.losses.ms_ssim_db`).
"""
import importlib.resources
import io

import numpy as np

# The file's second column, per metric; the header is checked so a mislabelled file cannot pass as another metric.
COLUMNS = {"psnr": "psnr_db", "msssim": "ms_ssim"}


def _kodak_dir():
    return importlib.resources.files(__name__) / "kodak"


def available(metric=None):
    """Sorted names of the published curves, optionally only those that have `metric` ("psnr" or "msssim")."""
    metrics = [_check_metric(metric)] if metric is not None else list(COLUMNS)
    names = set()
    for entry in _kodak_dir().iterdir():
        name, _, suffix = entry.name.rpartition(".")
        if suffix != "csv":
            continue
        name, _, file_metric = name.rpartition(".")
        if file_metric in metrics:
            names.add(name)
    return sorted(names)


def load_curve(name, metric="psnr"):
    """The published curve `name` as `(bpp, values)`, two float64 arrays in file order (increasing bpp).

    `values` is PSNR in dB for metric "psnr" and raw MS-SSIM for metric "msssim".
    """
    metric = _check_metric(metric)
    path = _kodak_dir() / f"{name}.{metric}.csv"
    if not path.is_file():
        raise ValueError(
            f"no published {metric} curve named {name!r}; available: {', '.join(available(metric))}"
        )
    text = path.read_text(encoding="ascii")
    header = text.split("\n", 1)[0].strip()
    if header != f"bpp,{COLUMNS[metric]}":
        raise ValueError(f"{path.name}: expected header 'bpp,{COLUMNS[metric]}', found {header!r}")
    table = np.loadtxt(io.StringIO(text), delimiter=",", skiprows=1, ndmin=2, dtype=np.float64)
    return table[:, 0], table[:, 1]


def _check_metric(metric):
    if metric not in COLUMNS:
        raise ValueError(f"metric must be one of {sorted(COLUMNS)}, got {metric!r}")
    return metric
