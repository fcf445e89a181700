"""notebooks/latent_exploration.ipynb runs on a fresh kernel, for both models, and reports the real file."""
import json
import pathlib
import re
import sys

import nbformat
import pytest
from nbclient import NotebookClient

import tfhyper
from tfhyper import imageio

NOTEBOOK = pathlib.Path(__file__).resolve().parents[1] / "notebooks" / "latent_exploration.ipynb"
CROP = 128
# Figures: y_hat grid, sigma_hat grid, normalized grid, histogram, bit maps, reconstruction;
# the factorized prior has no sigma_hat, so only the first, the bit maps and the reconstruction.
FIGURES = {"hyperprior": 6, "factorized": 3}


@pytest.fixture
def this_python(tmp_path, monkeypatch):
    """A "python3" kernelspec running this interpreter, found before any user or system one."""
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "Python 3", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))


def with_parameters(notebook, **parameters):
    """The notebook with a cell setting `parameters` right after its `parameters` cell, as papermill does."""
    index = next(i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", []))
    source = "\n".join(f"{name} = {value!r}" for name, value in parameters.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    notebook.cells.insert(index + 1, cell)
    return notebook


def centre_crop(image, side):
    """The notebook's crop, computed here independently."""
    top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
    return image[top : top + side, left : left + side]


def outputs(notebook, output_type):
    """All outputs of one type, over the code cells."""
    cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    return [out for cell in cells for out in cell.outputs if out.output_type == output_type]


def test_the_notebook_is_stored_clean():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.outputs and cell.execution_count is None for cell in notebook.cells if cell.cell_type == "code")


@pytest.mark.parametrize("kind", ["hyperprior", "factorized"])
def test_the_notebook_runs_and_reports_the_real_file(kind, shared_dir, tmp_path, this_python):
    model = {"hyperprior": tfhyper.ScaleHyperprior, "factorized": tfhyper.FactorizedPrior}[kind](16, 24)
    model.build()
    model.save(tmp_path / "m.keras")
    image_path = shared_dir / "data" / "kodak" / "kodim05.png"
    expected_bytes = len(tfhyper.compress(model, centre_crop(imageio.read_image(image_path), CROP)))

    notebook = with_parameters(
        nbformat.read(NOTEBOOK, as_version=4),
        MODEL_PATH=str(tmp_path / "m.keras"),
        IMAGE_PATH=str(image_path),
        CROP=CROP,
    )
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=300,
        startup_timeout=120,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, if any cell fails

    text = "".join(out.text for out in outputs(notebook, "stream") if out.name == "stdout")
    assert re.findall(r"file size: (\d+) bytes", text) == [str(expected_bytes)]
    assert "decoded file equals the reconstruction from explore(): True" in text
    assert f"{CROP}x{CROP} pixels" in text
    assert ("FactorizedPrior: no hyperprior" in text) == (kind == "factorized")
    figures = [out for out in outputs(notebook, "display_data") if "image/png" in out.data]
    assert len(figures) == FIGURES[kind]
    assert not outputs(notebook, "error")
