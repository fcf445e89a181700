"""The results files that `experiments.evaluate`, `experiments.sweep` and `experiments.baselines` write and
`experiments.figures`, `experiments.report` and `experiments.quickstart` read.

An evaluation is a per-image CSV (one row per model and image) with a JSON beside it (same stem, suffix .json)
holding each model's settings and means; the codecs' results are a per-image CSV of the same kind.
"""
import csv
import json
import pathlib


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

