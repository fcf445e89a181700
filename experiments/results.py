"""The results files that `experiments.evaluate`, `experiments.sweep` and `experiments.baselines` write and
`experiments.figures`, `experiments.report` and `experiments.quickstart` read.

An evaluation is a per-image CSV (one row per model and image) with a JSON beside it (same stem, suffix .json)
holding each model's settings and means; the codecs' results are a per-image CSV of the same kind.
"""
import csv
import io
import json
import pathlib

from tfhyper.imageio import OutputExistsError, atomic_write_bytes

# The per-image evaluation CSV, one row per model and image (`experiments.evaluate` describes each column).
EVALUATION_COLUMNS = ("model", "image", "height", "width", "bytes", "bpp", "bpp_y", "bpp_z", "bpp_estimated", "psnr",
                      "ms_ssim", "ms_ssim_db", "encode_s", "decode_s")


# --- reading -----------------------------------------------------------------------------------------------


def read_rows(path):
    """The rows of a CSV as dicts; numeric fields become floats so they can be averaged."""
    with open(path, newline="", encoding="utf-8") as handle:
        return [{key: _number(value) for key, value in row.items()} for row in csv.DictReader(handle)]


def _number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return text


def read_settings(evaluation_path):
    """model -> settings (class, N, M, lambda, distortion) from the JSON `evaluate` writes beside its CSV, or {}."""
    path = pathlib.Path(evaluation_path).with_suffix(".json")
    if not path.is_file():
        return {}
    models = json.loads(path.read_text(encoding="utf-8")).get("models", {})
    return {name: entry.get("settings", {}) for name, entry in models.items()}


# Settings written before they named the kind carry only the class.
_KIND_OF_CLASS = {"FactorizedPrior": "factorized", "ScaleHyperprior": "hyperprior"}


def model_kind(entry):
    """The model kind (`tfhyper.models.MODELS`) of one model's settings, or None if they do not say."""
    return entry.get("kind") or _KIND_OF_CLASS.get(entry.get("class"))


def read_evaluations(paths):
    """Rows and settings of one or more evaluation CSVs (e.g. the results of several sweep roots).

    A model name already read from an earlier file is prefixed with its file's folder name
    ("runs-n16/factorized-mse-q1"), so that models of the same name in different roots stay apart.
    """
    rows, settings, seen = [], {}, set()
    for path in paths:
        path = pathlib.Path(path)
        own_rows, own_settings = read_rows(path), read_settings(path)
        names = {row["model"] for row in own_rows}
        rename = {name: f"{path.parent.name}/{name}" if name in seen else name for name in names}
        for row in own_rows:
            row["model"] = rename[row["model"]]
        rows += own_rows
        settings.update({rename[name]: entry for name, entry in own_settings.items() if name in rename})
        seen |= set(rename.values())
    return rows, settings


# --- writing -----------------------------------------------------------------------------------------------


def write_csv(path, rows, columns):
    """Write rows to a CSV file atomically (`tfhyper.imageio.atomic_write_bytes`), replacing an older one."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, text.getvalue().encode("utf-8"), force=True)


def json_path(output):
    """The JSON of settings and means beside the per-image CSV `output`."""
    return pathlib.Path(output).with_suffix(".json")


def check_outputs(output, overwrite):
    """Refuse, before any work, to replace existing result files unless asked to."""
    for path in (pathlib.Path(output), json_path(output)):
        if path.exists() and not overwrite:
            raise OutputExistsError(f"{path} exists; pass --overwrite to replace it")


def write_results(output, rows, summary, overwrite=False, **extra):
    """The per-image CSV at `output` and the JSON beside it (settings, aggregates, `extra`), each atomically."""
    check_outputs(output, overwrite)
    document = {
        "aggregation": "mean over the images per model, i.e. per lambda (appendix 6.4)",
        "bpp_split": "file bits shared between y and z in proportion to their estimated bits",
        "images": list(dict.fromkeys(row["image"] for row in rows)),
        "models": summary,
        **extra,
    }
    write_csv(output, rows, EVALUATION_COLUMNS)
    atomic_write_bytes(json_path(output), json.dumps(document, indent=2).encode("utf-8"), force=True)
